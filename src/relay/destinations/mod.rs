//! The relay's destinations: the storefront's sGTM container (primary) and the ad platforms'
//! APIs, one module per destination behind one small trait, as Vector's sinks and RudderStack's
//! destinations are built: build the requests for a batch of events, judge each response by
//! that destination's rules (a body code, per-event statuses), not by HTTP status alone.
//! Adding a platform is adding one file and one line in `adapter`.

pub mod ga4;
pub mod identity;
pub mod meta;
pub mod pinterest;
pub mod sgtm;
pub mod snapchat;
pub mod tiktok;

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

pub use crate::retry::Verdict;

/// What came back for one request.
pub struct Response<'a> {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: &'a str,
}

pub trait Destination: Send + Sync {
    /// The platform code (`sgtm`, `meta_capi`, …).
    fn name(&self) -> &'static str;

    /// Why the event can never be delivered here, decided before any request (an event older
    /// than the platform accepts, no identifier it requires): (error class, reason), a
    /// permanent failure after zero requests — one bad event must not sink a whole batch.
    fn precheck(&self, _event: &Delivery, _now_ms: i64) -> Option<(&'static str, String)> {
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
        "meta_capi" => Some(Box::new(meta::Meta)),
        "ga4" => Some(Box::new(ga4::Ga4)),
        "tiktok" => Some(Box::new(tiktok::TikTok)),
        "snapchat" => Some(Box::new(snapchat::Snapchat)),
        "pinterest" => Some(Box::new(pinterest::Pinterest)),
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

/// The API's base URL: the credential's `api_base_url` (a gateway, a test server) or the
/// platform's own.
pub fn base_url<'a>(s: &'a Settings, default: &'a str) -> &'a str {
    s.text("api_base_url").unwrap_or(default).trim_end_matches('/')
}

/// The currency of a value: the event's, else the credential's `currency`, else USD.
pub fn currency(s: &Settings, p: &Map<String, Value>) -> String {
    p.get("currency").and_then(Value::as_str).or(s.text("currency")).unwrap_or("USD").to_uppercase()
}

/// The event's time in Unix seconds, a future time clamped to now (platforms reject the future).
pub fn unix_seconds(e: &Delivery, now_ms: i64) -> i64 {
    (e.event_time_us / 1_000_000).min(now_ms / 1000)
}

/// `Some((too_old, reason))` when the event is older than `max_secs`.
pub fn too_old(e: &Delivery, now_ms: i64, max_secs: i64, platform: &str, limit: &str) -> Option<(&'static str, String)> {
    let age = now_ms / 1000 - e.event_time_us / 1_000_000;
    (age > max_secs).then(|| ("too_old", format!("{platform} takes events at most {limit} old; this one is {} h old", age / 3600)))
}

/// The secret, or the configuration error naming it.
pub fn secret<'a>(s: &'a Settings, platform: &str) -> Result<&'a str, String> {
    s.secret.as_ref().map(Secret::expose).filter(|x| !x.is_empty()).ok_or_else(|| format!("{platform}: the credential has no secret"))
}

/// A setting the credential must have.
pub fn setting<'a>(s: &'a Settings, key: &str, platform: &str) -> Result<&'a str, String> {
    s.text(key).ok_or_else(|| format!("{platform}: the credential has no config.{key}"))
}

/// Consecutive chunks of at most `max` events, as (indexes into the batch) lists.
pub fn chunks(n: usize, max: usize) -> Vec<Vec<usize>> {
    (0..n).collect::<Vec<_>>().chunks(max.max(1)).map(<[usize]>::to_vec).collect()
}

/// The order fields every platform's custom data takes: `value` (as a string where the
/// platform wants one) with its `currency`, and `order_id`.
pub fn order_data(s: &Settings, p: &Map<String, Value>, value_as_text: bool) -> Map<String, Value> {
    let mut custom = Map::new();
    if let Some(v) = p.get("order_revenue").and_then(Value::as_f64) {
        custom.insert("value".into(), if value_as_text { Value::String(v.to_string()) } else { serde_json::json!(v) });
        custom.insert("currency".into(), Value::String(currency(s, p)));
    }
    if let Some(o) = p.get("order_id").and_then(Value::as_str) {
        custom.insert("order_id".into(), Value::String(o.to_string()));
    }
    custom
}

/// A user-data object from (name, value, as a one-element list) entries, absent values left out.
pub fn user_data<const N: usize>(entries: [(&str, Option<String>, bool); N]) -> Map<String, Value> {
    let mut user = Map::new();
    for (k, v, list) in entries {
        if let Some(v) = v {
            user.insert(k.into(), if list { Value::Array(vec![Value::String(v)]) } else { Value::String(v) });
        }
    }
    user
}

/// A JSON POST.
pub fn json_request(url: String, mut headers: Vec<(String, String)>, body: &Value, events: Vec<usize>) -> Request {
    headers.push(("content-type".into(), "application/json".into()));
    Request { url, headers, body: body.to_string().into_bytes(), events }
}

#[cfg(test)]
mod tests;
