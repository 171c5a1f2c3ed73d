//! Per-processor health as the processors report it, served at `/health`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct ProcessorHealth {
    pub state: String,
    pub detail: String,
    pub updated_ms: u128,
}

fn table() -> &'static Mutex<BTreeMap<String, ProcessorHealth>> {
    static T: OnceLock<Mutex<BTreeMap<String, ProcessorHealth>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Record a processor's state (`starting`, `snapshot`, `streaming`, `failed`, …).
pub fn report(processor: &str, state: &str, detail: impl Into<String>) {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    if let Ok(mut t) = table().lock() {
        t.insert(processor.to_string(), ProcessorHealth { state: state.to_string(), detail: detail.into(), updated_ms: now });
    }
}

pub fn snapshot() -> BTreeMap<String, ProcessorHealth> {
    table().lock().map(|t| t.clone()).unwrap_or_default()
}

pub fn all_healthy() -> bool {
    snapshot().values().all(|h| h.state != "failed")
}
