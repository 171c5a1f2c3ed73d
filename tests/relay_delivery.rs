//! The relay end to end on the local stack: OMS events posted and inserted directly reach a
//! local sGTM stand-in through CDC, the router and the delivery workers, in the exact request
//! format of each sGTM client; 5xx answers are retried after the backoff, a 400 is dead-lettered
//! after one try, a kill switch stops delivery at its level, every attempt is audited.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value as Json};

#[derive(Clone, Debug)]
struct Received {
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Json,
    answered: u16,
}

/// A stand-in for the storefronts' sGTM containers: records every request; answers 503 to the
/// first request of each event id, 200 after, and 400 to order BAD1 until `fixed` is set.
async fn sink() -> (String, Arc<Mutex<Vec<Received>>>, Arc<AtomicBool>) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let fixed = Arc::new(AtomicBool::new(false));
    let log = seen.clone();
    let repaired = fixed.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
        let log = log.clone();
        let repaired = repaired.clone();
        async move {
            let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
            let id_of = |b: &Json| b["event_id"].as_str().or(b["events"][0]["params"]["event_id"].as_str()).or(b["data"][0]["event_id"].as_str()).unwrap_or_default().to_string();
            let event_id = id_of(&body);
            let mut log = log.lock().unwrap();
            let before = log.iter().filter(|r| id_of(&r.body) == event_id).count();
            let status = if event_id.ends_with("BAD1") && !repaired.load(Ordering::SeqCst) {
                400
            } else if before == 0 {
                503
            } else {
                200
            };
            log.push(Received {
                path: uri.path().to_string(),
                query: url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect(),
                headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string())).collect(),
                body,
                answered: status,
            });
            (axum::http::StatusCode::from_u16(status).unwrap(), "{\"ok\":true}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen, fixed)
}

async fn statuses(pg: &tokio_postgres::Client) -> HashMap<String, String> {
    let rows = pg.query("SELECT storefront_code || '/' || event_type || '/' || event_id, status FROM relay.marketing_events", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn wait_final(pg: &tokio_postgres::Client, n: usize, timeout: Duration, case: &Case) -> HashMap<String, String> {
    let t0 = Instant::now();
    loop {
        let s = statuses(pg).await;
        if s.len() >= n && s.values().all(|v| v != "pending") {
            return s;
        }
        if t0.elapsed() > timeout {
            panic!("events not final after {timeout:?}: {s:?}\n{}", case.log("relay"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_and_inserted_events_reach_sgtm_once_with_retries_switches_and_an_audit() {
    let mut case = Case::new("relayflow").await;
    let (sink_url, received, fixed) = sink().await;
    let port = free_port();
    case.spawn(&["relay", "serve", "--port", &port.to_string()].map(String::from), "relay-serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = case.basic_http();
    wait_for(Duration::from_secs(60), "relay serve", || async { matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200) }).await;
    let admin = |p: &str| format!("{base}/admin/v1/{p}");
    for (code, body) in [
        ("bosley", json!({"sgtm_url": format!("{sink_url}/bosley"), "client_type": "ga4", "measurement_id": "G-BOSLEY", "api_secret": "ga4-secret-bosley-77"})),
        ("pfizer", json!({"sgtm_url": format!("{sink_url}/pfizer"), "client_type": "custom", "custom_endpoint_path": "/events", "custom_headers": {"X-Stape-Key": "stape-key-pfizer-88"}})),
    ] {
        let r = http.post(admin("storefronts")).json(&json!({"code": code, "name": code})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let mut b = body;
        b["storefront_code"] = json!(code);
        let r = http.post(admin("sgtm-configs")).json(&b).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    let ns = case.prefix.clone();
    let args: Vec<String> = ["run", "relay", "--http-port", "0", "--relay-cdc-name", &case.name, "--relay-cdc-prefix", &case.prefix, "--namespace", &ns, "--retry-backoff-base", "300ms", "--max-retry-attempts", "3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    case.spawn(&args, "relay");

    // Posted: the documented sample (bosley ×2, pfizer ×1) and an event the sink refuses.
    let sample: Json = serde_json::from_str(include_str!("fixtures/relay/oms-batch-sample.json")).unwrap();
    let r: Json = http.post(format!("{base}/v1/events")).json(&sample).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["accepted"], 3, "{r}");
    let bad = json!({"count": 1, "data": [{"storefront_id": "pfizer", "event_name": "rx_issued", "event_time": "2026-01-15T11:00:00Z", "order_id": "BAD1"}]});
    assert_eq!(http.post(format!("{base}/v1/events")).json(&bad).send().await.unwrap().status(), 200);
    // Inserted directly, by storefront code and by id, as the OMS's documented SQL does.
    let pg = case.pg().await;
    pg.batch_execute(
        "INSERT INTO relay.marketing_events (event_id, storefront_code, event_type, event_payload, source_system, status) \
           VALUES ('D100', 'bosley', 'purchase_completed', '{\"order_id\": \"D100\", \"order_revenue\": 80.79, \"utm_source\": \"google\"}', 'oms_direct', 'pending'); \
         INSERT INTO relay.marketing_events (event_id, storefront_id, event_type, event_payload, source_system, status) \
           SELECT 'D200', id, 'consult_started', '{\"order_id\": \"D200\"}', 'oms_direct', 'pending' FROM relay.storefronts WHERE code = 'pfizer';",
    )
    .await
    .unwrap();

    // The same event posted after its direct insert is a duplicate: one row, one delivery.
    let again = json!({"count": 1, "data": [{"storefront_id": "bosley", "event_name": "purchase_completed", "event_time": "2026-01-15T11:00:00Z", "order_id": "D100", "order_revenue": 80.79}]});
    let a: Json = http.post(format!("{base}/v1/events")).json(&again).send().await.unwrap().json().await.unwrap();
    assert_eq!((a["accepted"].as_u64(), a["duplicates"].as_u64()), (Some(0), Some(1)), "{a}");

    let s = wait_final(&pg, 6, Duration::from_secs(120), &case).await;
    let want: HashMap<String, String> = [
        ("bosley/consult_started/2025010100001111", "delivered"),
        ("pfizer/rx_issued/2025010100002222", "delivered"),
        ("bosley/purchase_completed/2025020100003333", "delivered"),
        ("pfizer/rx_issued/BAD1", "failed"),
        ("bosley/purchase_completed/D100", "delivered"),
        ("pfizer/consult_started/D200", "delivered"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(s, want);

    // Each delivered event reached its container exactly once with a 200 (after one 503), in
    // its client's format.
    let got = received.lock().unwrap().clone();
    let ok_per_id = |id: &str| got.iter().filter(|r| r.answered == 200 && (r.body["event_id"] == id || r.body["events"][0]["params"]["event_id"] == id)).count();
    for id in ["consult_started_2025010100001111", "rx_issued_2025010100002222", "purchase_completed_2025020100003333", "purchase_completed_D100", "consult_started_D200"] {
        assert_eq!(ok_per_id(id), 1, "{id} delivered once: {got:#?}");
    }
    let purchase = got.iter().find(|r| r.answered == 200 && r.body["events"][0]["params"]["event_id"] == "purchase_completed_2025020100003333").unwrap();
    assert_eq!(purchase.path, "/bosley/mp/collect");
    assert_eq!((purchase.query["measurement_id"].as_str(), purchase.query["api_secret"].as_str()), ("G-BOSLEY", "ga4-secret-bosley-77"));
    let ev = &purchase.body["events"][0];
    assert_eq!(ev["name"], "purchase");
    assert_eq!((ev["params"]["transaction_id"].as_str(), ev["params"]["value"].as_f64(), ev["params"]["currency"].as_str()), (Some("2025020100003333"), Some(80.79), Some("USD")));
    assert_eq!((ev["params"]["session_id"].as_str(), ev["params"]["source"].as_str()), (Some("sess_456"), Some("google")));
    assert_eq!(purchase.body["timestamp_micros"], 1_768_472_700_000_000i64, "the order's time, in microseconds");
    assert_eq!(purchase.body["client_id"], "sess_456");
    let custom = got.iter().find(|r| r.answered == 200 && r.body["event_id"] == "rx_issued_2025010100002222").unwrap();
    assert_eq!(custom.path, "/pfizer/events");
    assert_eq!(custom.headers.get("x-stape-key").map(String::as_str), Some("stape-key-pfizer-88"));
    assert_eq!((custom.body["t-value"].as_str(), custom.body["event_name"].as_str(), custom.body["storefront"].as_str()), (Some("pfizeraffiliate_0123"), Some("rx_issued"), Some("pfizer")));
    assert_eq!(custom.body["event_time"], "2026-01-15T10:20:30+00:00");
    assert_eq!(got.iter().filter(|r| r.body["event_id"] == "rx_issued_BAD1").count(), 1, "a 400 is not retried");

    // The audit: a retrying attempt then a delivered one, at least the backoff apart.
    let rows = pg
        .query(
            "SELECT a.attempt_number, a.status, a.status_code, a.error_class, a.attempted_at FROM relay.event_attempts a JOIN relay.marketing_events m ON m.id = a.marketing_event_id \
             WHERE m.event_id = '2025020100003333' ORDER BY a.attempt_number",
            &[],
        )
        .await
        .unwrap();
    let audit: Vec<(i32, String, Option<i32>, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(audit, vec![(1, "retrying".into(), Some(503), Some("http_5xx".into())), (2, "delivered".into(), Some(200), None)]);
    let gap = rows[1].get::<_, chrono::DateTime<chrono::Utc>>(4) - rows[0].get::<_, chrono::DateTime<chrono::Utc>>(4);
    assert!(gap.num_milliseconds() >= 300, "the retry waited the backoff: {gap}");
    // …and came due by itself: the worker did not fail and restart to re-read it (a batch of
    // records all not yet due once failed its offset commit, and only the restart retried).
    let log = case.log("relay");
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("processor failed")).collect();
    assert!(!failures.iter().any(|l| l.contains("relay-deliver") && l.contains("committing offsets")), "the delivery worker failed its commit:\n{failures:#?}");
    let failed: Vec<(i32, String, Option<i32>, Option<String>)> = pg
        .query("SELECT a.attempt_number, a.status, a.status_code, a.error_class FROM relay.event_attempts a JOIN relay.marketing_events m ON m.id = a.marketing_event_id WHERE m.event_id = 'BAD1'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(failed, vec![(1, "failed".into(), Some(400), Some("rejected".into()))]);
    let dlq = case.topic_json(&format!("{ns}.relay.delivery.dlq.v1")).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!((dlq[0]["event_id"].as_str(), dlq[0]["attempts"].as_array().map(Vec::len)), (Some("rx_issued_BAD1"), Some(1)));

    // Once the sink is fixed, replay-dlq sends the dead letter again and it is delivered.
    fixed.store(true, Ordering::SeqCst);
    let out = case.run_ok(&["relay", "replay-dlq", "--relay-cdc-prefix", &case.prefix, "--namespace", &ns]);
    assert!(out.contains("1 dead-lettered deliveries sent again"), "{out}");
    let t0 = Instant::now();
    while statuses(&pg).await["pfizer/rx_issued/BAD1"] != "delivered" {
        assert!(t0.elapsed() < Duration::from_secs(60), "the replayed dead letter was not delivered: {:?}", statuses(&pg).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = case.run_ok(&["relay", "replay-dlq", "--relay-cdc-prefix", &case.prefix, "--namespace", &ns]);
    assert!(again.contains("0 dead-lettered deliveries sent again"), "a dead letter is replayed once: {again}");
    let bad_ok = received.lock().unwrap().iter().filter(|r| r.body["event_id"] == "rx_issued_BAD1" && r.answered == 200).count();
    assert_eq!(bad_ok, 1);

    // The four kill switches. Bosley also gets a Meta credential (events from now on carry
    // the current time: Meta takes events at most 7 days old). Each switch off → the next event
    // is skipped at that level for the destinations below it, within 5 s; back on → delivered.
    let r = http.post(admin("credentials")).json(&json!({"storefront_code": "bosley", "platform": "meta_capi", "config": {"pixel_id": "777", "api_base_url": format!("{sink_url}/meta")}, "secret": "EAAB-meta-secret-99"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let cred_id = r.json::<Json>().await.unwrap()["id"].as_i64().unwrap();
    let cfg_id = http.get(admin("sgtm-configs")).send().await.unwrap().json::<Json>().await.unwrap()["sgtm_configs"][0]["id"].as_i64().unwrap();
    let platforms: Json = http.get(admin("platforms")).send().await.unwrap().json().await.unwrap();
    let meta_id = platforms["platforms"].as_array().unwrap().iter().find(|p| p["code"] == "meta_capi").unwrap()["id"].as_i64().unwrap();
    let bosley_id = http.get(admin("storefronts")).send().await.unwrap().json::<Json>().await.unwrap()["storefronts"][0]["id"].as_i64().unwrap();
    let mut expected = 6;
    let attempts_of = |order: String| {
        let pg = &pg;
        async move {
            let rows = pg
                .query("SELECT a.destination, a.status, a.skipped_level FROM relay.event_attempts a JOIN relay.marketing_events m ON m.id = a.marketing_event_id WHERE m.event_id = $1 AND a.status <> 'retrying' ORDER BY a.destination", &[&order])
                .await
                .unwrap();
            rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, Option<String>>(2))).collect::<Vec<_>>()
        }
    };
    let skip = |d: &str, level: &str| (d.to_string(), "skipped".to_string(), Some(level.to_string()));
    let delivered = |d: &str| (d.to_string(), "delivered".to_string(), None::<String>);
    for (level, path, want_off) in [
        ("sgtm_config", format!("sgtm-configs/{cfg_id}"), vec![delivered("meta_capi"), skip("sgtm", "sgtm_config")]),
        ("credential", format!("credentials/{cred_id}"), vec![skip("meta_capi", "credential"), delivered("sgtm")]),
        ("platform", format!("platforms/{meta_id}"), vec![skip("meta_capi", "platform"), delivered("sgtm")]),
        ("storefront", format!("storefronts/{bosley_id}"), vec![skip("meta_capi", "storefront"), skip("sgtm", "storefront")]),
    ] {
        for (on, order) in [(false, format!("SW-{level}-off")), (true, format!("SW-{level}-on"))] {
            let t = Instant::now();
            assert_eq!(http.patch(admin(&path)).json(&json!({"is_active": on})).send().await.unwrap().status(), 200, "{level} {on}");
            if on {
                tokio::time::sleep(Duration::from_secs(1)).await; // the switch's CDC change lands first
            }
            let now = chrono::Utc::now().to_rfc3339();
            if level == "storefront" && !on {
                // An inactive storefront's posts are rejected at the door; a direct insert still arrives.
                pg.execute(
                    "INSERT INTO relay.marketing_events (event_id, storefront_code, event_type, event_payload, source_system, status) VALUES ($1, 'bosley', 'page_view', $2, 'oms_direct', 'pending')",
                    &[&order, &json!({"order_id": order, "email": "a@example.com"}).to_string()],
                )
                .await
                .unwrap();
            } else {
                let body = json!({"count": 1, "data": [{"storefront_id": "bosley", "event_name": "page_view", "event_time": now, "order_id": order, "email": "a@example.com"}]});
                let a: Json = http.post(format!("{base}/v1/events")).json(&body).send().await.unwrap().json().await.unwrap();
                assert_eq!(a["accepted"], 1, "{level} {on}: {a}");
            }
            expected += 1;
            let s = wait_final(&pg, expected, Duration::from_secs(60), &case).await;
            let got = attempts_of(order.clone()).await;
            if on {
                assert_eq!(got, vec![delivered("meta_capi"), delivered("sgtm")], "{level} back on");
                assert_eq!(s[&format!("bosley/page_view/{order}")], "delivered");
            } else {
                println!("{level} switched off → next event skipped and audited in {:?}", t.elapsed());
                assert!(t.elapsed() < Duration::from_secs(5), "{level}: {:?}\n{}", t.elapsed(), case.log("relay"));
                assert_eq!(got, want_off, "{level} off");
                let status = if level == "storefront" { "skipped" } else { "delivered" };
                assert_eq!(s[&format!("bosley/page_view/{order}")], status, "{level} off");
            }
        }
    }
    // An event older than Meta takes (7 days) is dead-lettered for Meta before any request,
    // with its one attempt; sGTM, which has no such limit, gets it.
    let old_time = (chrono::Utc::now() - chrono::Duration::days(10)).to_rfc3339();
    let body = json!({"count": 1, "data": [{"storefront_id": "bosley", "event_name": "purchase_completed", "event_time": old_time, "order_id": "OLD1", "order_revenue": 5.0, "email": "a@example.com"}]});
    http.post(format!("{base}/v1/events")).json(&body).send().await.unwrap();
    expected += 1;
    let s = wait_final(&pg, expected, Duration::from_secs(60), &case).await;
    assert_eq!(s["bosley/purchase_completed/OLD1"], "failed");
    let got = attempts_of("OLD1".into()).await;
    assert_eq!(got, vec![("meta_capi".to_string(), "failed".to_string(), None), delivered("sgtm")]);
    let class: Option<String> = pg.query_one("SELECT a.error_class FROM relay.event_attempts a JOIN relay.marketing_events m ON m.id = a.marketing_event_id WHERE m.event_id = 'OLD1' AND a.destination = 'meta_capi'", &[]).await.unwrap().get(0);
    assert_eq!(class.as_deref(), Some("too_old"));
    let dlq = case.topic_json(&format!("{ns}.relay.delivery.dlq.v1")).await;
    let old = dlq.iter().find(|d| d["event_id"] == "purchase_completed_OLD1").expect("the too-old event in the dead-letter topic");
    assert_eq!((old["destination"].as_str(), old["attempts"].as_array().map(Vec::len)), (Some("meta_capi"), Some(1)));

    let got = received.lock().unwrap().clone();
    assert!(!got.iter().any(|r| r.path.starts_with("/meta") && r.body["data"][0]["event_id"] == "purchase_completed_OLD1"), "no request to Meta for the too-old event");
    for (path, stopped) in [("/bosley/mp/collect", ["sgtm_config", "storefront"]), ("/meta/v21.0/777/events", ["credential", "platform"])] {
        for level in stopped.iter().chain(["storefront"].iter()) {
            let id = format!("page_view_SW-{level}-off");
            let hits = got.iter().filter(|r| r.path == path && (r.body["events"][0]["params"]["event_id"] == id || r.body["data"][0]["event_id"] == id)).count();
            assert_eq!(hits, 0, "{path} got {id} though its {level} switch was off");
        }
    }
    assert!(got.iter().any(|r| r.path == "/meta/v21.0/777/events" && r.body["data"][0]["event_id"] == "page_view_SW-sgtm_config-off" && r.answered == 200), "meta still got the event whose sGTM config was off");
    // No secret in the logs, the audit or the topics.
    let audit_text: String = pg.query("SELECT coalesce(string_agg(coalesce(response_excerpt, '') || coalesce(error_class, ''), ' '), '') FROM relay.event_attempts", &[]).await.unwrap()[0].get(0);
    let mut topics_text = format!("{dlq:?}");
    for t in [format!("{ns}.relay.attempt.v1"), format!("{ns}.relay.event.received.v1"), format!("{ns}.relay.delivery.requested.v1"), format!("{}.relay.storefront_sgtm_config", case.prefix)] {
        topics_text.push_str(&format!("{:?}", case.topic_json(&t).await));
    }
    assert!(topics_text.contains("gAAAAA"), "the sGTM config's CDC carries the Fernet tokens");
    for secret in ["ga4-secret-bosley-77", "stape-key-pfizer-88", "EAAB-meta-secret-99"] {
        for (what, text) in [("relay log", case.log("relay")), ("serve log", case.log("relay-serve")), ("audit", audit_text.clone()), ("topics", topics_text.clone())] {
            assert!(!text.contains(secret), "{secret} in the {what}");
        }
    }
}
