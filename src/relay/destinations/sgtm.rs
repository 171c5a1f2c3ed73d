//! The storefront's server-side GTM container, through one of its two clients:
//! - `ga4`: the Measurement Protocol client, `POST {sgtm_url}/mp/collect?measurement_id=…&api_secret=…`
//!   with an MP body (`client_id`, `timestamp_micros`, `events[{name, params}]`);
//! - `custom`: a data client, `POST {sgtm_url}{custom_endpoint_path}` with the event as raw JSON
//!   (every payload field) and the configured headers.
//! One event per request (the sGTM tags forward one event per request). `event_id` and
//! `event_time` are always sent: without them sGTM tags substitute a random id and the receive
//! time, which breaks deduplication. A 2xx only means sGTM claimed the request ("handed off"):
//! whether the platforms behind it accepted the event is not visible from here.

use serde_json::{json, Map, Value};

use super::{payload, Destination, Request, Settings};
use crate::relay::delivery::Delivery;

pub struct Sgtm;

/// A GA4 event name: `purchase_completed` is GA4's `purchase`; others keep their name, cut to
/// GA4's rules (letters, digits and _, starting with a letter, at most 40).
pub fn ga4_event_name(event_type: &str) -> String {
    match event_type {
        "purchase_completed" | "purchase" | "order_completed" => "purchase".into(),
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
pub fn ga4_params(e: &Delivery, currency_default: &str) -> Map<String, Value> {
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
        params.insert("currency".into(), json!(p.get("currency").and_then(Value::as_str).unwrap_or(currency_default)));
    }
    for (utm, param) in [("utm_source", "source"), ("utm_medium", "medium"), ("utm_campaign", "campaign"), ("utm_term", "term"), ("utm_content", "content")] {
        if let Some(v) = p.get(utm).and_then(Value::as_str) {
            params.insert(param.into(), json!(v));
        }
    }
    for (k, v) in &p {
        if params.len() >= 25 {
            break;
        }
        let name: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
        let reserved = name.starts_with("google_") || name.starts_with("ga_") || name.starts_with("firebase_") || !name.starts_with(|c: char| c.is_ascii_alphabetic());
        if reserved || params.contains_key(&name) || k.starts_with("utm_") || ["order_revenue", "order_id", "currency"].contains(&k.as_str()) {
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

/// The GA4 client id: the payload's (`client_id`, `ga_client_id`), else one stable per
/// session or order, so that retries and re-sends carry the same.
pub fn ga4_client_id(e: &Delivery) -> String {
    let p = payload(e);
    ["client_id", "ga_client_id", "session_id"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("{}.{}", e.storefront_code, p.get("order_id").and_then(Value::as_str).unwrap_or(&e.event_id)))
}

impl Destination for Sgtm {
    fn name(&self) -> &'static str {
        super::SGTM
    }

    fn build(&self, s: &Settings, events: &[&Delivery]) -> Result<Vec<Request>, String> {
        let base = s.text("sgtm_url").ok_or("the sgtm config has no sgtm_url")?.trim_end_matches('/');
        let mut out = vec![];
        for (i, e) in events.iter().enumerate() {
            let req = match s.text("client_type") {
                Some("ga4") => {
                    let mid = s.text("measurement_id").ok_or("the ga4 sgtm config has no measurement_id")?;
                    let secret = s.secret.as_ref().ok_or("the ga4 sgtm config has no api_secret")?;
                    let mut url = url::Url::parse(&format!("{base}/mp/collect")).map_err(|e| format!("sgtm_url: {e}"))?;
                    url.query_pairs_mut().append_pair("measurement_id", mid).append_pair("api_secret", secret.expose());
                    let p = payload(e);
                    let mut body = json!({
                        "client_id": ga4_client_id(e),
                        "timestamp_micros": e.event_time_us,
                        "events": [{"name": ga4_event_name(&e.event_type), "params": ga4_params(e, s.text("currency").unwrap_or("USD"))}],
                    });
                    if let Some(uid) = p.get("user_id").and_then(Value::as_str) {
                        body["user_id"] = json!(uid);
                    }
                    Request { url: url.to_string(), headers: vec![("content-type".into(), "application/json".into())], body: body.to_string().into_bytes(), events: vec![i] }
                }
                Some("custom") => {
                    let path = s.text("endpoint_path").unwrap_or("/collect");
                    let mut body = payload(e);
                    body.insert("event_name".into(), json!(e.event_type));
                    body.insert("event_id".into(), json!(e.event_id));
                    body.insert("event_time".into(), json!(chrono::DateTime::from_timestamp_micros(e.event_time_us).map(|t| t.to_rfc3339()).unwrap_or_default()));
                    body.insert("storefront".into(), json!(e.storefront_code));
                    let mut headers: Vec<(String, String)> = s.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_string())).collect();
                    headers.push(("content-type".into(), "application/json".into()));
                    Request { url: format!("{base}{path}"), headers, body: Value::Object(body).to_string().into_bytes(), events: vec![i] }
                }
                other => return Err(format!("unknown sgtm client_type {other:?}")),
            };
            out.push(req);
        }
        Ok(out)
    }
}
