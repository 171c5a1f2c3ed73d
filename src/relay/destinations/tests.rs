//! Each adapter's request format and response judgement, against the platforms' documented
//! shapes (`../shared/notes/relay-platforms.md`).

use serde_json::{json, Value};

use super::*;
use crate::relay::crypto::Secret;
use crate::relay::delivery::Delivery;

const NOW_MS: i64 = 1_768_500_000_000; // 2026-01-15T18:00:00Z

fn event(n: usize, payload: Value) -> Delivery {
    Delivery {
        event_pk: n as i64,
        storefront_code: "bosley".into(),
        storefront_id: Some(1),
        event_type: "purchase_completed".into(),
        event_id: format!("purchase_completed_{n}"),
        event_time_us: 1_768_472_700_000_000, // 2026-01-15T10:25:00Z
        payload: payload.to_string(),
        source_system: "oms".into(),
        destination: "x".into(),
        config_id: 1,
        planned: 1,
        attempt: 1,
        not_before_ms: 0,
        replay: 0,
        note: None,
        attempts: vec![],
    }
}

fn buyer(n: usize) -> Delivery {
    event(n, json!({"order_id": format!("O{n}"), "order_revenue": 80.79, "email": " Ana@Example.com ", "phone": "+1 (650) 555-1212", "customer_id": "c-1", "client_ip_address": "203.0.113.7", "client_user_agent": "UA/1", "session_id": "s1"}))
}

fn settings(config: Value, secret: &str) -> Settings {
    Settings { config: config.as_object().unwrap().clone(), secret: Some(Secret::new(secret)), headers: vec![] }
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn answer(status: u16, body: &str) -> Response<'_> {
    Response { status, retry_after: None, body }
}

#[test]
fn meta_sends_hashed_user_data_in_batches_of_1000_and_reads_error_codes() {
    let s = settings(json!({"pixel_id": "123", "api_base_url": "http://sink/meta"}), "EAAB-token");
    let evs: Vec<Delivery> = (0..1500).map(buyer).collect();
    let refs: Vec<&Delivery> = evs.iter().collect();
    let reqs = meta::Meta.build(&s, &refs).unwrap();
    assert_eq!(reqs.iter().map(|r| r.events.len()).collect::<Vec<_>>(), vec![1000, 500]);
    assert_eq!(reqs[0].url, "http://sink/meta/v21.0/123/events?access_token=EAAB-token");
    let b = body(&reqs[0]);
    assert_eq!(b["partner_agent"], "funnel");
    assert!(b.get("test_event_code").is_none(), "no test code unless configured");
    let e = &b["data"][0];
    assert_eq!((e["event_name"].as_str(), e["event_time"].as_i64(), e["event_id"].as_str(), e["action_source"].as_str()), (Some("Purchase"), Some(1_768_472_700), Some("purchase_completed_0"), Some("system_generated")));
    assert_eq!(e["user_data"]["em"], json!([identity::sha256_hex("ana@example.com")]));
    assert_eq!(e["user_data"]["ph"], json!([identity::sha256_hex("16505551212")]));
    assert_eq!(e["user_data"]["client_ip_address"], "203.0.113.7", "IP and user agent are not hashed");
    assert_eq!(e["custom_data"], json!({"value": 80.79, "currency": "USD", "order_id": "O0"}));
    let m = meta::Meta;
    assert_eq!(m.classify(&answer(200, r#"{"events_received": 2}"#), 2), vec![Verdict::Delivered; 2]);
    assert_eq!(m.classify(&answer(400, r#"{"error": {"code": 190, "error_subcode": 463}}"#), 1), vec![Verdict::Permanent { class: "auth" }]);
    assert_eq!(m.classify(&answer(400, r#"{"error": {"code": 17}}"#), 1), vec![Verdict::Retry { class: "throttled", after: None }]);
    assert_eq!(m.classify(&answer(500, r#"{"error": {"code": 2, "is_transient": true}}"#), 1), vec![Verdict::Retry { class: "platform_transient", after: None }]);
    assert_eq!(m.classify(&answer(400, r#"{"error": {"code": 100, "error_subcode": 2804003}}"#), 1), vec![Verdict::Permanent { class: "invalid" }]);
    assert_eq!(m.classify(&answer(502, "<html>bad gateway</html>"), 1), vec![Verdict::Retry { class: "http_5xx", after: None }]);
    let old = Delivery { event_time_us: (NOW_MS - 8 * 86_400_000) * 1000, ..buyer(1) };
    assert_eq!(m.precheck(&old, NOW_MS).map(|p| p.0), Some("too_old"));
    assert_eq!(m.precheck(&buyer(1), NOW_MS), None);
}

#[test]
fn tiktok_judges_the_body_code_not_the_http_status() {
    let s = settings(json!({"pixel_code": "CPIX", "api_base_url": "http://sink/tt"}), "tt-token");
    let evs: Vec<Delivery> = (0..3).map(buyer).collect();
    let refs: Vec<&Delivery> = evs.iter().collect();
    let reqs = tiktok::TikTok.build(&s, &refs).unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].url, "http://sink/tt/open_api/v1.3/event/track/");
    assert_eq!(header(&reqs[0], "Access-Token"), Some("tt-token"));
    let b = body(&reqs[0]);
    assert_eq!((b["event_source"].as_str(), b["event_source_id"].as_str(), b["partner_name"].as_str()), (Some("web"), Some("CPIX"), Some("funnel")));
    let e = &b["data"][1];
    assert_eq!((e["event"].as_str(), e["event_id"].as_str(), e["event_time"].as_i64()), (Some("CompletePayment"), Some("purchase_completed_1"), Some(1_768_472_700)));
    assert_eq!(e["user"]["phone"], json!(identity::sha256_hex("+16505551212")), "E.164 for TikTok");
    assert_eq!(e["properties"]["currency"], "USD");
    let t = tiktok::TikTok;
    assert_eq!(t.classify(&answer(200, r#"{"code": 0, "message": "OK"}"#), 3), vec![Verdict::Delivered; 3]);
    assert_eq!(t.classify(&answer(200, r#"{"code": 40100, "message": "too many"}"#), 1), vec![Verdict::Retry { class: "throttled", after: None }]);
    assert_eq!(t.classify(&answer(200, r#"{"code": 40002, "message": "Invalid value for event_id"}"#), 1), vec![Verdict::Permanent { class: "invalid" }]);
    assert_eq!(t.classify(&answer(503, "unavailable"), 1), vec![Verdict::Retry { class: "http_5xx", after: None }]);
    // A test code: one event per request.
    let s = settings(json!({"pixel_code": "CPIX", "test_event_code": "TEST1"}), "tt-token");
    let reqs = tiktok::TikTok.build(&s, &refs).unwrap();
    assert_eq!(reqs.len(), 3);
    assert_eq!(body(&reqs[0])["test_event_code"], "TEST1");
    assert_eq!(reqs[0].url, "https://business-api.tiktok.com/open_api/v1.3/event/track/");
}

#[test]
fn pinterest_judges_each_event_and_needs_an_identifier() {
    let s = settings(json!({"ad_account_id": "549755885175", "api_base_url": "http://sink/pin"}), "pin-token");
    let evs: Vec<Delivery> = (0..2).map(buyer).collect();
    let refs: Vec<&Delivery> = evs.iter().collect();
    let reqs = pinterest::Pinterest.build(&s, &refs).unwrap();
    assert_eq!(reqs[0].url, "http://sink/pin/v5/ad_accounts/549755885175/events");
    assert_eq!(header(&reqs[0], "authorization"), Some("Bearer pin-token"));
    let e = &body(&reqs[0])["data"][0];
    assert_eq!((e["event_name"].as_str(), e["action_source"].as_str(), e["partner_name"].as_str()), (Some("checkout"), Some("web"), Some("ss-funnel")));
    assert_eq!(e["custom_data"]["value"], "80.79", "Pinterest wants the value as a string");
    assert_eq!(e["user_data"]["em"], json!([identity::sha256_hex("ana@example.com")]));
    let p = pinterest::Pinterest;
    let mixed = r#"{"num_events_received": 2, "num_events_processed": 1, "events": [{"status": "processed"}, {"status": "failed", "error_message": "bad"}]}"#;
    assert_eq!(p.classify(&answer(200, mixed), 2), vec![Verdict::Delivered, Verdict::Permanent { class: "invalid" }]);
    assert_eq!(p.classify(&answer(422, mixed), 2), vec![Verdict::Delivered, Verdict::Permanent { class: "invalid" }]);
    assert_eq!(p.classify(&answer(429, r#"{"code": 8}"#), 2), vec![Verdict::Retry { class: "throttled", after: None }; 2]);
    let phone_only = event(9, json!({"order_id": "O9", "phone": "+16505551212"}));
    assert_eq!(p.precheck(&phone_only, NOW_MS).map(|x| x.0), Some("no_identifier"));
    let test = settings(json!({"ad_account_id": "1", "test": true}), "t");
    assert_eq!(pinterest::Pinterest.build(&test, &refs).unwrap()[0].url, "https://api.pinterest.com/v5/ad_accounts/1/events?test=true");
}

#[test]
fn snapchat_batches_2000_and_refuses_invalid_answers() {
    let s = settings(json!({"pixel_id": "snap-px", "api_base_url": "http://sink/snap"}), "snap-token");
    let evs: Vec<Delivery> = (0..2500).map(buyer).collect();
    let refs: Vec<&Delivery> = evs.iter().collect();
    let reqs = snapchat::Snapchat.build(&s, &refs).unwrap();
    assert_eq!(reqs.iter().map(|r| r.events.len()).collect::<Vec<_>>(), vec![2000, 500]);
    assert_eq!(reqs[0].url, "http://sink/snap/v3/snap-px/events?access_token=snap-token");
    let e = &body(&reqs[0])["data"][0];
    assert_eq!((e["event_name"].as_str(), e["action_source"].as_str(), e["integration"].as_str()), (Some("PURCHASE"), Some("WEB"), Some("funnel")));
    let sc = snapchat::Snapchat;
    assert_eq!(sc.classify(&answer(200, r#"{"status": "VALID"}"#), 1), vec![Verdict::Delivered]);
    assert_eq!(sc.classify(&answer(200, r#"{"status": "INVALID", "reason": "x"}"#), 1), vec![Verdict::Permanent { class: "invalid" }]);
    let old = Delivery { event_time_us: (NOW_MS - 38 * 86_400_000) * 1000, ..buyer(1) };
    assert_eq!(sc.precheck(&old, NOW_MS).map(|p| p.0), Some("too_old"));
}

#[test]
fn ga4_sends_25_events_per_client_in_microseconds_and_refuses_events_over_72_hours() {
    let s = settings(json!({"measurement_id": "G-1", "api_base_url": "http://sink/ga4"}), "mp-secret");
    let mut evs: Vec<Delivery> = (0..30).map(buyer).collect(); // one session: one client
    evs.push(event(99, json!({"order_id": "O99", "session_id": "other"})));
    let refs: Vec<&Delivery> = evs.iter().collect();
    let reqs = ga4::Ga4.build(&s, &refs).unwrap();
    assert_eq!(reqs.iter().map(|r| r.events.len()).collect::<Vec<_>>(), vec![25, 5, 1]);
    assert_eq!(reqs[0].url, "http://sink/ga4/mp/collect?measurement_id=G-1&api_secret=mp-secret");
    let b = body(&reqs[2]);
    assert_eq!((b["client_id"].as_str(), b["timestamp_micros"].as_i64()), (Some("other"), Some(1_768_472_700_000_000)));
    let e = &body(&reqs[0])["events"][0];
    assert_eq!(e["name"], "purchase");
    assert_eq!((e["params"]["transaction_id"].as_str(), e["params"]["currency"].as_str(), e["params"]["engagement_time_msec"].as_i64()), (Some("O0"), Some("USD"), Some(1)));
    assert!(e["params"].get("email").is_none(), "no personal data in GA4 params");
    let old = Delivery { event_time_us: (NOW_MS - 73 * 3_600_000) * 1000, ..buyer(1) };
    assert_eq!(ga4::Ga4.precheck(&old, NOW_MS).map(|p| p.0), Some("too_old"));
    let debug = settings(json!({"measurement_id": "G-1", "debug": true}), "mp-secret");
    assert!(ga4::Ga4.build(&debug, &refs).unwrap()[0].url.starts_with("https://www.google-analytics.com/debug/mp/collect?"));
    assert_eq!(by_status(&answer(204, "")), Verdict::Delivered);
}
