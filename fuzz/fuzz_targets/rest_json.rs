//! `POST /topics/{topic}` bodies: JSON parsed and every record resolved against the topic's
//! schemas (here the customer profile's) and framed, as `funnel serve` does before producing.
#![no_main]
use std::sync::LazyLock;

use apache_avro::Schema;
use libfuzzer_sys::fuzz_target;

static SCHEMAS: LazyLock<(Schema, Schema)> = LazyLock::new(|| {
    let s = |t: &str| Schema::parse_str(t).expect("committed schema parses");
    (s(funnel::domain::schemas::PROFILE_KEY), s(funnel::domain::schemas::PROFILE_VALUE))
});

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Some(records) = body.get("records").and_then(serde_json::Value::as_array) else { return };
    let (key, value) = &*SCHEMAS;
    for compacted in [true, false] {
        let _ = funnel::serve::produce::records_from_json("dom.customer.profile.upsert.v1", records, (1, key), (2, value), compacted);
    }
});
