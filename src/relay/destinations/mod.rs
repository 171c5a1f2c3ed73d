//! The relay's destinations: the storefront's sGTM container (primary) and the ad platforms'
//! APIs, one module per destination behind one small trait, as Vector's sinks and RudderStack's
//! destinations are built: build the requests for a batch of events, judge each response by
//! that destination's rules (a body code, per-event statuses), not by HTTP status alone.
//! Adding a platform is adding one file and one line in `adapter`.

pub mod sgtm;

use std::time::Duration;

use serde_json::{Map, Value};

use super::crypto::Secret;
use super::delivery::Delivery;

/// Platform code → settings every credential must carry in `config` (the secret part — access
/// token, api_secret — goes in `secret`, encrypted).
pub const PLATFORMS: &[(&str, &[&str])] = &[
    ("meta_capi", &["pixel_id"]),
    ("ga4", &["measurement_id"]),
    ("tiktok", &["pixel_code"]),
    ("snapchat", &["pixel_id"]),
    ("pinterest", &["ad_account_id"]),
];

/// The platform code of the storefront's sGTM route: its global switch is this platform's
/// `is_active`; its settings live in `storefront_sgtm_config`, not in a credential.
pub const SGTM: &str = "sgtm";

pub fn required_config(platform: &str) -> Option<&'static [&'static str]> {
    PLATFORMS.iter().find(|(p, _)| *p == platform).map(|(_, keys)| *keys)
}

pub fn known_platforms() -> String {
    PLATFORMS.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
}

/// What a destination is configured with at send time, secrets decrypted (never logged:
/// `Secret` prints a placeholder).
#[derive(Debug, Default)]
pub struct Settings {
    /// Non-secret settings: a credential's `config`, or the sGTM config's columns.
    pub config: Map<String, Value>,
    /// The access token / api_secret.
    pub secret: Option<Secret>,
    /// Extra headers (sGTM custom client), values secret.
    pub headers: Vec<(String, Secret)>,
}

impl Settings {
    pub fn text(&self, key: &str) -> Option<&str> {
        self.config.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
    }

    /// Every secret value, to scrub from anything recorded.
    pub fn secrets(&self) -> Vec<&str> {
        self.secret.iter().map(Secret::expose).chain(self.headers.iter().map(|(_, v)| v.expose())).filter(|s| !s.is_empty()).collect()
    }
}

/// One HTTP request covering some events of a batch.
pub struct Request {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Indexes (into the batch given to `build`) of the events this request carries, in body order.
    pub events: Vec<usize>,
}

/// The judgement of one event's attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Transient: try again, not before `after` when the destination said so.
    Retry { class: &'static str, after: Option<Duration> },
    /// The destination will never take it as it is.
    Permanent { class: &'static str },
}

/// What came back for one request.
pub struct Response<'a> {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: &'a str,
}

pub trait Destination: Send + Sync {
    /// The platform code (`sgtm`, `meta_capi`, …).
    fn name(&self) -> &'static str;

    /// A reason the event can never be delivered here, decided before any request (an event
    /// older than the platform accepts): a permanent failure after zero requests.
    fn precheck(&self, _event: &Delivery, _now_ms: i64) -> Option<String> {
        None
    }

    /// The requests for `events` (all of one storefront and destination), batched up to the
    /// platform's limits. `Err` is a configuration problem (a missing setting): permanent.
    fn build(&self, settings: &Settings, events: &[&Delivery]) -> Result<Vec<Request>, String>;

    /// The verdict for each of the request's `n` events.
    fn classify(&self, response: &Response<'_>, n: usize) -> Vec<Verdict> {
        vec![by_status(response); n]
    }
}

/// The common rule (RudderStack's, Segment's): 2xx delivered; 408, 429 and 5xx (but 501)
/// retried, honouring Retry-After; any other status permanent.
pub fn by_status(r: &Response<'_>) -> Verdict {
    match r.status {
        200..=299 => Verdict::Delivered,
        429 => Verdict::Retry { class: "throttled", after: r.retry_after },
        408 => Verdict::Retry { class: "timeout", after: r.retry_after },
        501 => Verdict::Permanent { class: "rejected" },
        500..=599 => Verdict::Retry { class: "http_5xx", after: r.retry_after },
        _ => Verdict::Permanent { class: "rejected" },
    }
}

/// The adapter of a destination code.
pub fn adapter(code: &str) -> Option<Box<dyn Destination>> {
    match code {
        SGTM => Some(Box::new(sgtm::Sgtm)),
        _ => None,
    }
}

/// The payload of an event as a JSON object (the inbox guarantees it parses).
pub fn payload(e: &Delivery) -> Map<String, Value> {
    serde_json::from_str(&e.payload).unwrap_or_default()
}

/// `text` with every secret replaced by `****`, cut to `max` characters (for the audit).
pub fn redact(text: &str, secrets: &[&str], max: usize) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "****");
        }
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect::<String>() + "…";
    }
    out
}
