//! Snapchat Conversions API v3: `POST {base}/v3/{pixel_id}/events?access_token=…` (the
//! `/events/validate` endpoint with `config.validate`: checked, not recorded) with
//! `{"data": [...]}`. Up to 2000 events per request; each carries `integration: "funnel"`.
//! Times in Unix seconds; Snap reports events up to 37 days back, older ones are failed before
//! sending. Judged by HTTP status; a 2xx whose body says `"status": "INVALID"` is permanent.

use serde_json::{json, Value};

use super::identity::{self, Identity};
use super::{base_url, by_status, chunks, json_request, order_data, user_data, payload, secret, setting, too_old, unix_seconds, Destination, Request, Response, Settings, Verdict};
use crate::relay::delivery::Delivery;

pub struct Snapchat;

const MAX_EVENTS: usize = 2000;

pub fn event_name(event_type: &str) -> String {
    match event_type {
        "purchase_completed" | "purchase" | "order_completed" => "PURCHASE".into(),
        "add_to_cart" => "ADD_CART".into(),
        "checkout_started" | "begin_checkout" => "START_CHECKOUT".into(),
        "page_view" => "PAGE_VIEW".into(),
        "view_content" | "product_viewed" => "VIEW_CONTENT".into(),
        "sign_up" | "registration_completed" => "SIGN_UP".into(),
        other => other.to_uppercase(),
    }
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
        ("sc_click_id", identity::field(&p, "sc_click_id"), false),
    ]);
    let custom = order_data(s, &p, false);
    json!({
        "event_name": event_name(&e.event_type),
        "event_time": unix_seconds(e, now_ms),
        "event_id": e.event_id,
        "action_source": s.text("action_source").unwrap_or("WEB"),
        "user_data": user,
        "custom_data": custom,
        "integration": "funnel",
    })
}

impl Destination for Snapchat {
    fn name(&self) -> &'static str {
        "snapchat"
    }

    fn precheck(&self, e: &Delivery, now_ms: i64) -> Option<(&'static str, String)> {
        too_old(e, now_ms, 37 * 86_400, "Snapchat Conversions API", "37 days")
    }

    fn build(&self, s: &Settings, events: &[&Delivery]) -> Result<Vec<Request>, String> {
        let pixel = setting(s, "pixel_id", "snapchat")?;
        let token = secret(s, "snapchat")?;
        let suffix = if s.config.get("validate").and_then(Value::as_bool) == Some(true) { "/validate" } else { "" };
        let mut url = url::Url::parse(&format!("{}/v3/{pixel}/events{suffix}", base_url(s, "https://tr.snapchat.com"))).map_err(|e| format!("snapchat api_base_url: {e}"))?;
        url.query_pairs_mut().append_pair("access_token", token);
        let now = chrono::Utc::now().timestamp_millis();
        Ok(chunks(events.len(), MAX_EVENTS)
            .into_iter()
            .map(|idx| json_request(url.to_string(), vec![], &json!({"data": idx.iter().map(|i| event(events[*i], s, now)).collect::<Vec<_>>()}), idx))
            .collect())
    }

    fn classify(&self, r: &Response<'_>, n: usize) -> Vec<Verdict> {
        let invalid = serde_json::from_str::<Value>(r.body).ok().and_then(|b| b.get("status").and_then(Value::as_str).map(|s| s.eq_ignore_ascii_case("INVALID"))) == Some(true);
        if (200..300).contains(&r.status) && invalid {
            return vec![Verdict::Permanent { class: "invalid" }; n];
        }
        vec![by_status(r); n]
    }
}
