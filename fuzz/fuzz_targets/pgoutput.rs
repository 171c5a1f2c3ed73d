//! Postgres logical replication messages (pgoutput) as CDC reads them off the wire: any bytes
//! decode to a message or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = funnel::cdc::pgoutput::decode(data);
});
