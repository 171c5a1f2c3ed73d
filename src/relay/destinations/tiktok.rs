//! TikTok Events API 2.0: `POST {base}/open_api/v1.3/event/track/` with the `Access-Token`
//! header and `{event_source, event_source_id: pixel_code, partner_name, data: [...]}`. Up to
//! 1000 events per request; with a `test_event_code` one event per request (TikTok does not
//! batch test events). `event_id` is always a string (a number gets 40002). TikTok reports
//! failures inside HTTP 200, so the body's `code` decides: 0 and 20001 delivered, 40100
//! throttled (retried), 40001/40002 and other 4xxxx permanent, 5xxxx retried; a non-JSON body
//! falls back to the HTTP status. Events older than 28 days (TikTok's attribution window) are
//! failed before sending.

use serde_json::{json, Value};

use super::identity::{self, Identity};
use super::{base_url, by_status, chunks, json_request, order_data, user_data, payload, secret, setting, too_old, unix_seconds, Destination, Request, Response, Settings, Verdict};
use crate::relay::delivery::Delivery;

pub struct TikTok;

const MAX_EVENTS: usize = 1000;

pub fn event_name(event_type: &str) -> String {
    match event_type {
        "purchase_completed" | "purchase" | "order_completed" => "CompletePayment".into(),
        "order_placed" => "PlaceAnOrder".into(),
        "add_to_cart" => "AddToCart".into(),
        "checkout_started" | "begin_checkout" => "InitiateCheckout".into(),
        "view_content" | "product_viewed" => "ViewContent".into(),
        "sign_up" | "registration_completed" => "CompleteRegistration".into(),
        other => other.to_string(),
    }
}

pub fn event(e: &Delivery, s: &Settings, now_ms: i64) -> Value {
    let p = payload(e);
    let id = Identity::of(&p);
    let user = user_data([
        ("email", id.email.as_deref().and_then(identity::email), false),
        ("phone", id.phone.as_deref().and_then(identity::phone_e164), false),
        ("external_id", id.external_id.as_deref().and_then(identity::external_id), false),
        ("ip", id.ip.clone(), false),
        ("user_agent", id.user_agent.clone(), false),
        ("ttclid", identity::field(&p, "ttclid"), false),
        ("ttp", identity::field(&p, "ttp"), false),
    ]);
    let props = order_data(s, &p, false);
    json!({"event": event_name(&e.event_type), "event_time": unix_seconds(e, now_ms), "event_id": e.event_id.to_string(), "user": user, "properties": props})
}

impl Destination for TikTok {
    fn name(&self) -> &'static str {
        "tiktok"
    }

    fn precheck(&self, e: &Delivery, now_ms: i64) -> Option<(&'static str, String)> {
        too_old(e, now_ms, 28 * 86_400, "TikTok Events API", "28 days")
    }

    fn build(&self, s: &Settings, events: &[&Delivery]) -> Result<Vec<Request>, String> {
        let pixel = setting(s, "pixel_code", "tiktok")?;
        let token = secret(s, "tiktok")?;
        let url = format!("{}/open_api/v1.3/event/track/", base_url(s, "https://business-api.tiktok.com"));
        let test = s.text("test_event_code");
        let now = chrono::Utc::now().timestamp_millis();
        let per = if test.is_some() { 1 } else { MAX_EVENTS };
        Ok(chunks(events.len(), per)
            .into_iter()
            .map(|idx| {
                let mut body = json!({
                    "event_source": s.text("event_source").unwrap_or("web"),
                    "event_source_id": pixel,
                    "partner_name": "funnel",
                    "data": idx.iter().map(|i| event(events[*i], s, now)).collect::<Vec<_>>(),
                });
                if let Some(code) = test {
                    body["test_event_code"] = json!(code);
                }
                json_request(url.clone(), vec![("Access-Token".into(), token.to_string())], &body, idx)
            })
            .collect())
    }

    fn classify(&self, r: &Response<'_>, n: usize) -> Vec<Verdict> {
        let code = serde_json::from_str::<Value>(r.body).ok().and_then(|b| b.get("code").and_then(Value::as_i64));
        let verdict = match (r.status, code) {
            (200..=299, Some(0 | 20001)) => Verdict::Delivered,
            (_, Some(40100)) => Verdict::Retry { class: "throttled", after: r.retry_after },
            (_, Some(c)) if (40000..50000).contains(&c) => Verdict::Permanent { class: "invalid" },
            (_, Some(c)) if (50000..60000).contains(&c) => Verdict::Retry { class: "platform_transient", after: r.retry_after },
            (200..=299, Some(_)) => Verdict::Retry { class: "platform_error", after: r.retry_after },
            (200..=299, None) => Verdict::Retry { class: "unreadable_answer", after: r.retry_after },
            _ => by_status(r),
        };
        vec![verdict; n]
    }
}
