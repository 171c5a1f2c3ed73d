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

/// Dependencies each processor is waiting for: (processor, dependency) → what failed.
fn outages() -> &'static Mutex<BTreeMap<(String, String), String>> {
    static T: OnceLock<Mutex<BTreeMap<(String, String), String>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// A dependency of `processor` is down (`Some(error)`: the processor retries and shows as
/// `waiting`, unhealthy) or back (`None`: its own state shows again).
pub fn dependency(processor: &str, dependency: &str, outage: Option<String>) {
    let Ok(mut o) = outages().lock() else { return };
    let key = (processor.to_string(), dependency.to_string());
    match outage {
        Some(e) => {
            o.insert(key, e);
        }
        None => {
            o.remove(&key);
        }
    }
}

/// Each processor's state; one waiting for a dependency shows `waiting` and what it waits for.
pub fn snapshot() -> BTreeMap<String, ProcessorHealth> {
    let mut t = table().lock().map(|t| t.clone()).unwrap_or_default();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    for ((processor, dependency), error) in outages().lock().map(|o| o.clone()).unwrap_or_default() {
        let h = t.entry(processor).or_insert(ProcessorHealth { state: String::new(), detail: String::new(), updated_ms: now });
        h.state = "waiting".into();
        h.detail = format!("waiting for {dependency}: {error}");
    }
    t
}

/// Healthy = no processor failed and none is waiting for a dependency.
pub fn all_healthy() -> bool {
    snapshot().values().all(|h| h.state != "failed" && h.state != "waiting")
}
