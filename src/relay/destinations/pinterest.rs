//! Pinterest Conversions API v5: `POST {base}/v5/ad_accounts/{ad_account_id}/events` with
//! `Authorization: Bearer <conversion token>` and `{"data": [...]}` (`?test=true` with
//! `config.test`). Up to 1000 events per request. Every event needs `event_id` and a
//! `user_data` with an email, or the client's IP and user agent together (phone alone is not
//! enough): an event without is failed before sending. Hashed fields are arrays; `value` is a
//! string. Pinterest answers per event (`events[i].status` processed / failed, in request
//! order) in a 200 or a 422, so each event is judged alone; 429 (code 8) is retried, 503 too.

use serde_json::{json, Value};

use super::identity::{self, Identity};
use super::{base_url, by_status, chunks, json_request, order_data, user_data, payload, secret, setting, unix_seconds, Destination, Request, Response, Settings, Verdict};
use crate::relay::delivery::Delivery;

pub struct Pinterest;

const MAX_EVENTS: usize = 1000;

pub fn event_name(event_type: &str) -> String {
    match event_type {
        "purchase_completed" | "purchase" | "order_completed" => "checkout".into(),
        "add_to_cart" => "add_to_cart".into(),
        "page_view" => "page_visit".into(),
        "sign_up" | "registration_completed" => "signup".into(),
        "lead" | "lead_created" => "lead".into(),
        "search" => "search".into(),
        _ => "custom".into(),
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
        ("click_id", identity::field(&p, "epik").or_else(|| identity::field(&p, "click_id")), false),
    ]);
    let custom = order_data(s, &p, true);
    let mut ev = json!({
        "event_name": event_name(&e.event_type),
        "action_source": s.text("action_source").unwrap_or("web"),
        "event_time": unix_seconds(e, now_ms),
        "event_id": e.event_id,
        "user_data": user,
        "custom_data": custom,
        "partner_name": "ss-funnel",
    });
    if ev["event_name"] == "custom" {
        ev["custom_data"]["event_type"] = json!(e.event_type);
    }
    ev
}

impl Destination for Pinterest {
    fn name(&self) -> &'static str {
        "pinterest"
    }

    fn precheck(&self, e: &Delivery, _now_ms: i64) -> Option<(&'static str, String)> {
        let id = Identity::of(&payload(e));
        let enough = id.email.as_deref().and_then(identity::email).is_some() || (id.ip.is_some() && id.user_agent.is_some());
        (!enough).then(|| ("no_identifier", "Pinterest needs an email, or the client's IP address and user agent together".to_string()))
    }

    fn build(&self, s: &Settings, events: &[&Delivery]) -> Result<Vec<Request>, String> {
        let account = setting(s, "ad_account_id", "pinterest")?;
        let token = secret(s, "pinterest")?;
        let test = if s.config.get("test").and_then(Value::as_bool) == Some(true) { "?test=true" } else { "" };
        let url = format!("{}/v5/ad_accounts/{account}/events{test}", base_url(s, "https://api.pinterest.com"));
        let now = chrono::Utc::now().timestamp_millis();
        Ok(chunks(events.len(), MAX_EVENTS)
            .into_iter()
            .map(|idx| json_request(url.clone(), vec![("Authorization".into(), format!("Bearer {token}"))], &json!({"data": idx.iter().map(|i| event(events[*i], s, now)).collect::<Vec<_>>()}), idx))
            .collect())
    }

    fn classify(&self, r: &Response<'_>, n: usize) -> Vec<Verdict> {
        if r.status == 200 || r.status == 422 {
            let statuses: Option<Vec<String>> = serde_json::from_str::<Value>(r.body)
                .ok()
                .and_then(|b| b.get("events").and_then(Value::as_array).map(|a| a.iter().map(|e| e.get("status").and_then(Value::as_str).unwrap_or_default().to_string()).collect()));
            if let Some(st) = statuses.filter(|st| st.len() == n) {
                return st.iter().map(|s| if s == "processed" { Verdict::Delivered } else { Verdict::Permanent { class: "invalid" } }).collect();
            }
            if r.status == 200 {
                return vec![Verdict::Delivered; n];
            }
        }
        vec![by_status(r); n]
    }
}
