//! Meta Conversions API: `POST {base}/{version}/{pixel_id}/events?access_token=…` with
//! `{"data": [...], "partner_agent": "funnel"}` (`test_event_code` from the credential's config:
//! Meta still counts test events, so it is only sent when configured). Up to 1000 events per
//! request, and one invalid event rejects the whole request, so events older than 7 days
//! (62 for physical_store) are failed before sending. `event_time` in Unix seconds, `event_id`
//! + `event_name` are Meta's deduplication key. Errors are judged by Meta's `error.code`:
//! 1, 2, 368 and `is_transient` retried; 4, 17, 341, 80003 throttled (retried); 190 an expired
//! or invalid token, 10 and 200–299 permissions, 100 and the rest invalid — permanent.

use serde_json::{json, Value};

use super::identity::{self, Identity};
use super::{base_url, by_status, chunks, json_request, order_data, user_data, payload, secret, setting, too_old, unix_seconds, Destination, Request, Response, Settings, Verdict};
use crate::relay::delivery::Delivery;

pub struct Meta;

const MAX_EVENTS: usize = 1000;
pub const DEFAULT_VERSION: &str = "v21.0";

pub fn event_name(event_type: &str) -> String {
    match event_type {
        "purchase_completed" | "purchase" | "order_completed" => "Purchase".into(),
        "add_to_cart" => "AddToCart".into(),
        "checkout_started" | "begin_checkout" => "InitiateCheckout".into(),
        "lead" | "lead_created" => "Lead".into(),
        "page_view" => "PageView".into(),
        "view_content" | "product_viewed" => "ViewContent".into(),
        "sign_up" | "registration_completed" => "CompleteRegistration".into(),
        other => other.to_string(),
    }
}

fn action_source(s: &Settings) -> &str {
    s.text("action_source").unwrap_or("system_generated")
}

pub fn event(e: &Delivery, s: &Settings, now_ms: i64) -> Value {
    let p = payload(e);
    let id = Identity::of(&p);
    let user = user_data([
        ("em", id.email.as_deref().and_then(identity::email), true),
        ("ph", id.phone.as_deref().and_then(identity::phone_digits), true),
        ("external_id", id.external_id.as_deref().and_then(identity::external_id), true),
        ("client_ip_address", id.ip.clone(), false),
        ("client_user_agent", id.user_agent.clone(), false),
        ("fbc", identity::field(&p, "fbc"), false),
        ("fbp", identity::field(&p, "fbp"), false),
    ]);
    let custom = order_data(s, &p, false);
    let mut ev = json!({
        "event_name": event_name(&e.event_type),
        "event_time": unix_seconds(e, now_ms),
        "event_id": e.event_id,
        "action_source": action_source(s),
        "user_data": user,
        "custom_data": custom,
    });
    if let Some(url) = identity::field(&p, "event_source_url") {
        ev["event_source_url"] = json!(url);
    }
    ev
}

impl Destination for Meta {
    fn name(&self) -> &'static str {
        "meta_capi"
    }

    fn precheck(&self, e: &Delivery, now_ms: i64) -> Option<(&'static str, String)> {
        // Only physical_store events may be 62 days old; any other event over 7 days makes
        // Meta reject the whole request.
        too_old(e, now_ms, 7 * 86_400, "Meta Conversions API", "7 days")
    }

    fn build(&self, s: &Settings, events: &[&Delivery]) -> Result<Vec<Request>, String> {
        let pixel = setting(s, "pixel_id", "meta_capi")?;
        let token = secret(s, "meta_capi")?;
        let version = s.text("api_version").unwrap_or(DEFAULT_VERSION);
        let mut url = url::Url::parse(&format!("{}/{version}/{pixel}/events", base_url(s, "https://graph.facebook.com"))).map_err(|e| format!("meta_capi api_base_url: {e}"))?;
        url.query_pairs_mut().append_pair("access_token", token);
        let now = chrono::Utc::now().timestamp_millis();
        Ok(chunks(events.len(), MAX_EVENTS)
            .into_iter()
            .map(|idx| {
                let mut body = json!({"data": idx.iter().map(|i| event(events[*i], s, now)).collect::<Vec<_>>(), "partner_agent": "funnel"});
                if let Some(code) = s.text("test_event_code") {
                    body["test_event_code"] = json!(code);
                }
                json_request(url.to_string(), vec![], &body, idx)
            })
            .collect())
    }

    fn classify(&self, r: &Response<'_>, n: usize) -> Vec<Verdict> {
        if (200..300).contains(&r.status) {
            return vec![Verdict::Delivered; n];
        }
        let err = serde_json::from_str::<Value>(r.body).ok().and_then(|b| b.get("error").cloned());
        let verdict = match err {
            None => by_status(r),
            Some(e) => {
                let code = e.get("code").and_then(Value::as_i64).unwrap_or(-1);
                let transient = e.get("is_transient").and_then(Value::as_bool) == Some(true);
                match code {
                    4 | 17 | 341 | 80003 => Verdict::Retry { class: "throttled", after: r.retry_after },
                    1 | 2 | 368 => Verdict::Retry { class: "platform_transient", after: r.retry_after },
                    _ if transient => Verdict::Retry { class: "platform_transient", after: r.retry_after },
                    190 => Verdict::Permanent { class: "auth" },
                    10 | 200..=299 => Verdict::Permanent { class: "permission" },
                    100 | 3 | 105 => Verdict::Permanent { class: "invalid" },
                    _ => by_status(r),
                }
            }
        };
        vec![verdict; n]
    }
}
