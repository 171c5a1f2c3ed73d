//! The storefront's server-side GTM container, through one of its two clients:
//! - `ga4`: the Measurement Protocol client, `POST {sgtm_url}/mp/collect?measurement_id=…&api_secret=…`
//!   with an MP body (`client_id`, `timestamp_micros`, `events[{name, params}]`);
//! - `custom`: a data client, `POST {sgtm_url}{custom_endpoint_path}` with the event as raw JSON
//!   (every payload field) and the configured headers.
//! One event per request (the sGTM tags forward one event per request). `event_id` and
//! `event_time` are always sent: without them sGTM tags substitute a random id and the receive
//! time, which breaks deduplication. A 2xx only means sGTM claimed the request ("handed off"):
//! whether the platforms behind it accepted the event is not visible from here.

use serde_json::{json, Value};

use super::{ga4, payload, Destination, Request, Settings};
use crate::relay::delivery::Delivery;

pub struct Sgtm;

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
                    let body = ga4::body(&[e], |e| super::currency(s, &payload(e)));
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
