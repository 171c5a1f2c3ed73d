//! A local stand-in for the relay's destinations: sGTM containers (ga4 and custom clients), Meta
//! CAPI, GA4 MP, TikTok, Snapchat and Pinterest on one port, by path prefix. Every request is
//! checked against its platform's documented format and credentials (a violation is recorded and
//! answered 400); a share of requests fails the way each platform fails (5xx, 429, Meta error
//! codes, TikTok's 40100 inside a 200), some answer slowly. Each received event id is recorded
//! with the time and the answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

#[derive(Clone, Debug)]
pub struct Receipt {
    pub platform: String,
    pub event_id: String,
    pub ok: bool,
    pub at: Instant,
}

#[derive(Default)]
pub struct SinkState {
    pub receipts: Vec<Receipt>,
    pub requests: u64,
    pub failed_requests: u64,
    pub violations: Vec<String>,
    fails: HashMap<(String, String), u32>,
    rng: u64,
}

#[derive(Clone)]
pub struct SinkConfig {
    /// Share of requests answered with a failure (0.0–1.0); an event never fails more than
    /// `max_fails` times in all, so every event gets through within that many retries. In
    /// all, not in a row: a success whose answer a kill of the relay lost is sent again, and
    /// counting only failures in a row would let such an event fail again from zero, past
    /// the relay's retry budget (seen: 26 of 100 000 events exhausted 5 attempts).
    pub fail_share: f64,
    pub max_fails: u32,
    pub slow_share: f64,
    pub slow: Duration,
    /// The secret each platform must be sent (by platform name).
    pub secrets: HashMap<String, String>,
}

pub struct Sink {
    pub url: String,
    pub state: Arc<Mutex<SinkState>>,
}

fn ids(v: &Json, path: &[&str], at: &str) -> Vec<String> {
    let mut list = v;
    for p in path {
        list = &list[*p];
    }
    list.as_array().map(|a| a.iter().map(|e| e.pointer(at).and_then(Json::as_str).unwrap_or_default().to_string()).collect()).unwrap_or_default()
}

/// The platform of a request, the event ids it carries, and the first format violation.
fn check(path: &str, query: &HashMap<String, String>, headers: &axum::http::HeaderMap, body: &Json, secrets: &HashMap<String, String>) -> (String, Vec<String>, Option<String>) {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let q = |k: &str| query.get(k).cloned().unwrap_or_default();
    let secret = |p: &str| secrets.get(p).cloned().unwrap_or_default();
    let hex = |v: &Json| v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|x| x.as_str().is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))));
    let every = |list: &str, f: &dyn Fn(&Json) -> bool| body[list].as_array().is_some_and(|a| a.iter().all(f));
    let (platform, events, problem): (&str, Vec<String>, Option<String>) = if path.starts_with("/sgtm-ga4/") {
        let ok = path.ends_with("/mp/collect") && q("api_secret") == secret("sgtm-ga4") && !q("measurement_id").is_empty() && body["client_id"].is_string() && body["timestamp_micros"].is_i64();
        ("sgtm-ga4", ids(body, &["events"], "/params/event_id"), (!ok).then(|| format!("sgtm ga4 request malformed: {path} {body}")))
    } else if path.starts_with("/sgtm-custom/") {
        let ok = path.ends_with("/events") && h("x-api-key") == secret("sgtm-custom") && body["event_id"].is_string() && body["event_name"].is_string() && body["event_time"].is_string();
        ("sgtm-custom", vec![body["event_id"].as_str().unwrap_or_default().to_string()], (!ok).then(|| format!("sgtm custom request malformed: {path} {body}")))
    } else if path.starts_with("/meta/") {
        let ok = path.ends_with("/events")
            && q("access_token") == secret("meta")
            && body["data"].as_array().is_some_and(|a| (1..=1000).contains(&a.len()))
            && every("data", &|e| e["event_name"].is_string() && e["event_time"].is_i64() && e["event_id"].is_string() && e["action_source"].is_string() && hex(&e["user_data"]["em"]));
        ("meta", ids(body, &["data"], "/event_id"), (!ok).then(|| format!("meta request malformed: {path}")))
    } else if path.starts_with("/ga4/") {
        let ok = path == "/ga4/mp/collect" && q("api_secret") == secret("ga4") && body["events"].as_array().is_some_and(|a| (1..=25).contains(&a.len())) && body["client_id"].is_string();
        ("ga4", ids(body, &["events"], "/params/event_id"), (!ok).then(|| format!("ga4 request malformed: {path}")))
    } else if path.starts_with("/tiktok/") {
        let ok = path == "/tiktok/open_api/v1.3/event/track/"
            && h("access-token") == secret("tiktok")
            && body["event_source_id"].is_string()
            && body["data"].as_array().is_some_and(|a| (1..=1000).contains(&a.len()))
            && every("data", &|e| e["event"].is_string() && e["event_time"].is_i64() && e["event_id"].is_string());
        ("tiktok", ids(body, &["data"], "/event_id"), (!ok).then(|| format!("tiktok request malformed: {path}")))
    } else if path.starts_with("/snap/") {
        let ok = path.ends_with("/events")
            && q("access_token") == secret("snapchat")
            && body["data"].as_array().is_some_and(|a| (1..=2000).contains(&a.len()))
            && every("data", &|e| e["event_name"].is_string() && e["event_time"].is_i64() && e["event_id"].is_string() && e["action_source"].is_string());
        ("snapchat", ids(body, &["data"], "/event_id"), (!ok).then(|| format!("snapchat request malformed: {path}")))
    } else if path.starts_with("/pin/") {
        let ok = path.contains("/v5/ad_accounts/")
            && h("authorization") == format!("Bearer {}", secret("pinterest"))
            && body["data"].as_array().is_some_and(|a| (1..=1000).contains(&a.len()))
            && every("data", &|e| e["event_name"].is_string() && e["event_time"].is_i64() && e["event_id"].is_string() && hex(&e["user_data"]["em"]));
        ("pinterest", ids(body, &["data"], "/event_id"), (!ok).then(|| format!("pinterest request malformed: {path}")))
    } else {
        ("unknown", vec![], Some(format!("no platform at {path}")))
    };
    (platform.to_string(), events, problem)
}

/// The platform's success and failure answers (status, body, headers).
fn answer(platform: &str, n: usize, fail: bool, coin: u64) -> (u16, String, Option<&'static str>) {
    match (platform, fail) {
        ("meta", false) => (200, json!({"events_received": n, "fbtrace_id": "trace"}).to_string(), None),
        ("meta", true) if coin % 2 == 0 => (500, json!({"error": {"code": 2, "is_transient": true, "message": "temporary"}}).to_string(), None),
        ("meta", true) => (400, json!({"error": {"code": 17, "message": "User request limit reached"}}).to_string(), None),
        ("tiktok", false) => (200, json!({"code": 0, "message": "OK"}).to_string(), None),
        ("tiktok", true) if coin % 2 == 0 => (200, json!({"code": 40100, "message": "Too many requests"}).to_string(), None),
        ("tiktok", true) => (503, "busy".into(), None),
        ("pinterest", false) => (200, json!({"num_events_received": n, "num_events_processed": n, "events": vec![json!({"status": "processed"}); n]}).to_string(), None),
        ("pinterest", true) if coin % 2 == 0 => (429, json!({"code": 8, "message": "rate limit"}).to_string(), Some("0")),
        ("snapchat", false) => (200, json!({"status": "VALID"}).to_string(), None),
        ("ga4", false) => (204, String::new(), None),
        (_, false) => (200, "{}".into(), None),
        (_, true) if coin % 2 == 0 => (429, "slow down".into(), Some("0")),
        (_, true) => (503, "unavailable".into(), None),
    }
}

impl Sink {
    pub async fn start(cfg: SinkConfig) -> Sink {
        let state: Arc<Mutex<SinkState>> = Arc::new(Mutex::new(SinkState { rng: 0x9E37_79B9_7F4A_7C15, ..Default::default() }));
        let st = state.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (st, cfg) = (st.clone(), cfg.clone());
            async move {
                let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
                let query: HashMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
                let (platform, events, problem) = check(uri.path(), &query, &headers, &body, &cfg.secrets);
                let (fail, slow, coin) = {
                    let mut s = st.lock().unwrap();
                    s.requests += 1;
                    // xorshift: deterministic per run, no dependency.
                    let mut next = || {
                        s.rng ^= s.rng << 13;
                        s.rng ^= s.rng >> 7;
                        s.rng ^= s.rng << 17;
                        s.rng
                    };
                    let (a, b, c) = (next(), next(), next());
                    let exhausted = events.iter().any(|e| s.fails.get(&(platform.clone(), e.clone())).copied().unwrap_or(0) >= cfg.max_fails);
                    let fail = problem.is_none() && !exhausted && (a % 10_000) as f64 / 10_000.0 < cfg.fail_share;
                    (fail, (b % 10_000) as f64 / 10_000.0 < cfg.slow_share, c)
                };
                if slow {
                    tokio::time::sleep(cfg.slow).await;
                }
                let mut s = st.lock().unwrap();
                if let Some(p) = problem {
                    s.violations.push(p);
                    return (axum::http::StatusCode::BAD_REQUEST, [("retry-after", "0")], "format violation".to_string());
                }
                if fail {
                    s.failed_requests += 1;
                }
                let now = Instant::now();
                for e in &events {
                    if fail {
                        *s.fails.entry((platform.clone(), e.clone())).or_insert(0) += 1;
                    }
                    s.receipts.push(Receipt { platform: platform.clone(), event_id: e.clone(), ok: !fail, at: now });
                }
                let (status, text, retry_after) = answer(&platform, events.len(), fail, coin);
                (axum::http::StatusCode::from_u16(status).unwrap(), [("retry-after", retry_after.unwrap_or(""))], text)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { url, state }
    }
}
