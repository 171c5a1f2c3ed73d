//! GA4 Measurement Protocol, direct: `POST {base}/mp/collect?measurement_id=…&api_secret=…`
//! (`/debug/mp/collect` with `config.debug`). Up to 25 events per request, all of one client id
//! (and user id). Timestamps in microseconds, at most 72 h back. GA4 answers 2xx even to a
//! malformed payload, so the body is built to its rules here (names, 25 params, reserved
//! prefixes, currency whenever there is a value); non-2xx is judged by status.

use serde_json::{json, Map, Value};

use super::{base_url, chunks, json_request, payload, secret, setting, too_old, Destination, Request, Settings};
use crate::relay::delivery::Delivery;

pub struct Ga4;

const MAX_EVENTS: usize = 25;
const MAX_AGE_SECS: i64 = 72 * 3600;

/// A GA4 event name: `purchase_completed` is GA4's `purchase`; others keep their name, cut to
/// GA4's rules (letters, digits and _, starting with a letter, at most 40).
pub fn event_name(event_type: &str) -> String {
    match event_type {
        "purchase_completed" | "purchase" | "order_completed" => "purchase".into(),
        "add_to_cart" => "add_to_cart".into(),
        "checkout_started" | "begin_checkout" => "begin_checkout".into(),
        other => {
            let mut name: String = other.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
            if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                name = format!("e_{name}").chars().take(40).collect();
            }
            name
        }
    }
}

/// GA4 params of an event: the ecommerce fields GA4 knows, the session fields its reports need,
/// then the payload's other scalar fields, to GA4's limit of 25.
pub fn params(e: &Delivery, currency: &str) -> Map<String, Value> {
    let p = payload(e);
    let mut params = Map::new();
    params.insert("event_id".into(), json!(e.event_id));
    params.insert("engagement_time_msec".into(), json!(1));
    if let Some(s) = p.get("session_id").and_then(Value::as_str) {
        params.insert("session_id".into(), json!(s));
    }
    if let Some(order) = p.get("order_id").and_then(Value::as_str) {
        params.insert("transaction_id".into(), json!(order));
    }
    if let Some(v) = p.get("order_revenue").and_then(Value::as_f64) {
        params.insert("value".into(), json!(v));
        params.insert("currency".into(), json!(currency));
    }
    for (utm, param) in [("utm_source", "source"), ("utm_medium", "medium"), ("utm_campaign", "campaign"), ("utm_term", "term"), ("utm_content", "content")] {
        if let Some(v) = p.get(utm).and_then(Value::as_str) {
            params.insert(param.into(), json!(v));
        }
    }
    const SKIP: &[&str] = &["order_revenue", "order_id", "currency", "email", "phone", "customer_email", "customer_phone", "client_id", "ga_client_id", "user_id", "event_id"];
    for (k, v) in &p {
        if params.len() >= 25 {
            break;
        }
        let name: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
        let reserved = name.starts_with("google_") || name.starts_with("ga_") || name.starts_with("firebase_") || !name.starts_with(|c: char| c.is_ascii_alphabetic());
        if reserved || params.contains_key(&name) || k.starts_with("utm_") || SKIP.contains(&k.as_str()) {
            continue;
        }
        match v {
            Value::String(s) => params.insert(name, json!(s.chars().take(100).collect::<String>())),
            Value::Number(_) | Value::Bool(_) => params.insert(name, v.clone()),
            _ => None,
        };
    }
    params
}

/// The GA4 client id: the payload's (`client_id`, `ga_client_id`), else one stable per session
/// or order, so retries and re-sends carry the same.
pub fn client_id(e: &Delivery) -> String {
    let p = payload(e);
    ["client_id", "ga_client_id", "session_id"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("{}.{}", e.storefront_code, p.get("order_id").and_then(Value::as_str).unwrap_or(&e.event_id)))
}

/// The MP body of events sharing one client id (and user id): the request's time is the
/// first event's, each event carries its own (`timestamp_micros` may be set per event).
pub fn body(events: &[&Delivery], currency: impl Fn(&Delivery) -> String) -> Value {
    let first = events[0];
    let mut body = json!({
        "client_id": client_id(first),
        "timestamp_micros": first.event_time_us,
        "events": events.iter().map(|e| json!({"name": event_name(&e.event_type), "params": params(e, &currency(e)), "timestamp_micros": e.event_time_us})).collect::<Vec<_>>(),
    });
    if let Some(uid) = payload(first).get("user_id").and_then(Value::as_str) {
        body["user_id"] = json!(uid);
    }
    body
}

impl Destination for Ga4 {
    fn name(&self) -> &'static str {
        "ga4"
    }

    fn precheck(&self, e: &Delivery, now_ms: i64) -> Option<(&'static str, String)> {
        too_old(e, now_ms, MAX_AGE_SECS, "GA4 Measurement Protocol", "72 h")
    }

    fn build(&self, s: &Settings, events: &[&Delivery]) -> Result<Vec<Request>, String> {
        let mid = setting(s, "measurement_id", "ga4")?;
        let secret = secret(s, "ga4")?;
        let path = if s.config.get("debug").and_then(Value::as_bool) == Some(true) { "/debug/mp/collect" } else { "/mp/collect" };
        let mut url = url::Url::parse(&format!("{}{path}", base_url(s, "https://www.google-analytics.com"))).map_err(|e| format!("ga4 api_base_url: {e}"))?;
        url.query_pairs_mut().append_pair("measurement_id", mid).append_pair("api_secret", secret);
        // Group by client id and user id (one request carries one user), then cut at 25.
        let mut groups: Vec<((String, Option<String>), Vec<usize>)> = vec![];
        for (i, e) in events.iter().enumerate() {
            let who = (client_id(e), payload(e).get("user_id").and_then(Value::as_str).map(str::to_string));
            match groups.iter_mut().find(|(k, _)| *k == who) {
                Some((_, v)) => v.push(i),
                None => groups.push((who, vec![i])),
            }
        }
        let mut out = vec![];
        for (_, idx) in groups {
            for chunk in chunks(idx.len(), MAX_EVENTS) {
                let members: Vec<usize> = chunk.iter().map(|c| idx[*c]).collect();
                let evs: Vec<&Delivery> = members.iter().map(|i| events[*i]).collect();
                let b = body(&evs, |e| super::currency(s, &payload(e)));
                out.push(json_request(url.to_string(), vec![], &b, members));
            }
        }
        Ok(out)
    }
}
