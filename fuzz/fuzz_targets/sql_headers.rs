//! The ksql-style headers of customer 360's SQL definitions (`CREATE TABLE|STREAM … WITH (…)
//! AS SELECT …`), as `c360::definitions` reads files from sql/c360/.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = funnel::c360::definitions::parse("fuzz.sql", text) {
        let _ = d.recompute_at();
        for option in ["kafka_topic", "key", "nulls", "reemit_on_table_change"] {
            let _ = d.option(option);
            let _ = d.flag(option);
        }
    }
});
