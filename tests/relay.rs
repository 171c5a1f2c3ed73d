//! The relay's HTTP side against a real Postgres: credentials on every route but health, the
//! admin API's JSON errors and write-only secrets, OMS batches recorded once with a reason per
//! rejected item, nothing half-written, and Fernet tokens shared with Python's `cryptography`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value as Json};

async fn spawn_relay(case: &mut Case, extra: &[&str]) -> String {
    let port = free_port();
    let mut args: Vec<String> = ["relay", "serve", "--port", &port.to_string()].iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    case.spawn(&args, "relay-serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(60), "funnel relay serve", || async { matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200) }).await;
    base
}

async fn post(http: &reqwest::Client, url: String, body: Json) -> (u16, Json) {
    let r = http.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Json::Null))
}

async fn count(pg: &tokio_postgres::Client, sql: &str) -> i64 {
    pg.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_relay_route_but_health_needs_credentials() {
    let mut case = Case::new("relayauth").await;
    let base = spawn_relay(&mut case, &[]).await;
    let anonymous = reqwest::Client::new();
    let mut routes = vec![("POST", "/v1/events".to_string())];
    for r in ["storefronts", "sgtm-configs", "platforms", "credentials"] {
        routes.extend([("GET", format!("/admin/v1/{r}")), ("POST", format!("/admin/v1/{r}"))]);
        for m in ["GET", "PUT", "PATCH", "DELETE"] {
            routes.push((m, format!("/admin/v1/{r}/1")));
        }
    }
    for (method, path) in &routes {
        let url = format!("{base}{path}");
        let none = anonymous.request(method.parse().unwrap(), &url).json(&json!({"data": []})).send().await.unwrap();
        json_error(none, 401, &format!("{method} {path} without credentials")).await;
        let wrong = anonymous.request(method.parse().unwrap(), &url).basic_auth("funnel", Some("a-wrong-password-long-enough")).json(&json!({})).send().await.unwrap();
        let message = json_error(wrong, 401, &format!("{method} {path} with a wrong password")).await;
        assert!(!message.contains(&case.token));
    }
    for open in ["/health", "/health/ready", "/metrics"] {
        assert_eq!(anonymous.get(format!("{base}{open}")).send().await.unwrap().status(), 200, "{open} answers without credentials");
    }
    // The right credentials pass (Basic as the OMS sends them, and a bearer token).
    assert_eq!(case.basic_http().get(format!("{base}/admin/v1/platforms")).send().await.unwrap().status(), 200);
    assert_eq!(case.http().get(format!("{base}/admin/v1/platforms")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_answers_json_errors_and_never_returns_a_secret() {
    let mut case = Case::new("relayadmin").await;
    let base = spawn_relay(&mut case, &[]).await;
    let http = case.basic_http();
    let pg = case.pg().await;
    let url = |p: &str| format!("{base}/admin/v1/{p}");

    // The platforms are seeded by the migration.
    let platforms: Json = http.get(url("platforms")).send().await.unwrap().json().await.unwrap();
    let codes: Vec<&str> = platforms["platforms"].as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["sgtm", "meta_capi", "ga4", "tiktok", "snapchat", "pinterest"]);

    let (status, shop) = post(&http, url("storefronts"), json!({"code": "bosley", "name": "Bosley"})).await;
    assert_eq!(status, 201, "{shop}");
    let id = shop["id"].as_i64().unwrap();
    assert_eq!(shop["is_active"], true);
    let dup = http.post(url("storefronts")).json(&json!({"code": "bosley", "name": "Again"})).send().await.unwrap();
    json_error(dup, 409, "a duplicate storefront code").await;
    let bad = http.post(url("storefronts")).json(&json!({"code": "Bad Code", "name": "x"})).send().await.unwrap();
    assert!(json_error(bad, 422, "a code with spaces").await.contains("lowercase"));
    let unknown_field = http.post(url("storefronts")).json(&json!({"code": "x", "name": "x", "colour": "red"})).send().await.unwrap();
    assert!(json_error(unknown_field, 422, "an unknown field").await.contains("colour"));
    let malformed = http.post(url("storefronts")).header("content-type", "application/json").body("{\"code\":").send().await.unwrap();
    json_error(malformed, 400, "malformed JSON").await;
    json_error(http.get(url("storefronts/999999")).send().await.unwrap(), 404, "an unknown storefront").await;
    json_error(http.get(url("storefronts/abc")).send().await.unwrap(), 404, "a non-integer id").await;
    let renamed: Json = http.patch(url(&format!("storefronts/{id}"))).json(&json!({"name": "Bosley Inc"})).send().await.unwrap().json().await.unwrap();
    assert_eq!((renamed["name"].as_str(), renamed["code"].as_str()), (Some("Bosley Inc"), Some("bosley")));

    // sGTM config: ga4 needs its measurement id and secret; the secret is write-only.
    let incomplete = http.post(url("sgtm-configs")).json(&json!({"storefront_code": "bosley", "sgtm_url": "https://sgtm.example.com", "client_type": "ga4"})).send().await.unwrap();
    assert!(json_error(incomplete, 422, "ga4 without its secret").await.contains("api_secret"));
    let bad_url = http.post(url("sgtm-configs")).json(&json!({"storefront_code": "bosley", "sgtm_url": "ftp://x", "client_type": "custom"})).send().await.unwrap();
    json_error(bad_url, 422, "an ftp URL").await;
    let (status, sgtm) = post(
        &http,
        url("sgtm-configs"),
        json!({"storefront_code": "bosley", "sgtm_url": "https://sgtm.example.com", "client_type": "ga4", "measurement_id": "G-TEST1",
               "api_secret": "sgtm-api-secret-value-1", "custom_headers": {"X-Stape-Key": "stape-header-secret-1"}}),
    )
    .await;
    assert_eq!(status, 201, "{sgtm}");
    assert_eq!(sgtm["api_secret"], "********");
    assert_eq!(sgtm["custom_headers"], json!({"X-Stape-Key": "********"}));
    assert_eq!(sgtm["custom_endpoint_path"], "/collect");
    let second = http.post(url("sgtm-configs")).json(&json!({"storefront_id": id, "sgtm_url": "https://other.example.com", "client_type": "custom"})).send().await.unwrap();
    json_error(second, 409, "a second sgtm config for one storefront").await;

    // Credentials: settings per platform, secrets only in `secret`.
    let secret_in_config = http.post(url("credentials")).json(&json!({"storefront_code": "bosley", "platform": "meta_capi", "config": {"pixel_id": "1", "access_token": "EAAB-leak"}, "secret": "x"})).send().await.unwrap();
    assert!(json_error(secret_in_config, 422, "a token in config").await.contains("looks like a secret"));
    let no_pixel = http.post(url("credentials")).json(&json!({"storefront_code": "bosley", "platform": "meta_capi", "config": {}, "secret": "x"})).send().await.unwrap();
    assert!(json_error(no_pixel, 422, "meta without pixel_id").await.contains("pixel_id"));
    let no_platform = http.post(url("credentials")).json(&json!({"storefront_code": "bosley", "platform": "myspace", "config": {}, "secret": "x"})).send().await.unwrap();
    json_error(no_platform, 422, "an unknown platform").await;
    let (status, cred) = post(&http, url("credentials"), json!({"storefront_code": "bosley", "platform": "meta_capi", "config": {"pixel_id": "123456"}, "secret": "EAAB-meta-access-token-1"})).await;
    assert_eq!(status, 201, "{cred}");
    assert_eq!((cred["secret"].as_str(), cred["platform"].as_str(), cred["config"]["pixel_id"].as_str()), (Some("********"), Some("meta_capi"), Some("123456")));
    let cred_id = cred["id"].as_i64().unwrap();
    let off: Json = http.put(url(&format!("credentials/{cred_id}"))).json(&json!({"is_active": false, "secret": "EAAB-meta-access-token-2"})).send().await.unwrap().json().await.unwrap();
    assert_eq!((off["is_active"].as_bool(), off["secret"].as_str()), (Some(false), Some("********")));

    // Nothing the API answers carries a secret; the database holds Fernet tokens only, and the
    // Python service's library reads them with the same key.
    let everything = format!(
        "{}{}{}",
        http.get(url("sgtm-configs")).send().await.unwrap().text().await.unwrap(),
        http.get(url("credentials")).send().await.unwrap().text().await.unwrap(),
        http.get(url(&format!("credentials/{cred_id}"))).send().await.unwrap().text().await.unwrap()
    );
    for secret in ["sgtm-api-secret-value-1", "stape-header-secret-1", "EAAB-meta-access-token"] {
        assert!(!everything.contains(secret), "{secret} in an answer");
    }
    let token: String = pg.query_one("SELECT secret_encrypted FROM relay.platform_credentials WHERE id = $1", &[&(cred_id as i32)]).await.unwrap().get(0);
    assert!(token.starts_with("gAAAAA") && !token.contains("EAAB"), "a Fernet token is stored: {token}");
    let py = std::process::Command::new(&case.stack.python)
        .args(["-c", "import sys; from cryptography.fernet import Fernet; print(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).decode())", &case.encryption_key, &token])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "EAAB-meta-access-token-2", "{}", String::from_utf8_lossy(&py.stderr));

    // Key rotation: with ENCRYPTION_KEY="new,old", `funnel relay rekey` moves every stored
    // secret to the new key; the old key alone no longer reads it, the new one does.
    let new_key = fernet::Fernet::generate_key();
    let out = case.funnel().env("ENCRYPTION_KEY", format!("{new_key},{}", case.encryption_key)).args(["relay", "rekey"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-encrypted 3 stored secret(s)"), "{}", String::from_utf8_lossy(&out.stdout));
    let rotated: String = pg.query_one("SELECT secret_encrypted FROM relay.platform_credentials WHERE id = $1", &[&(cred_id as i32)]).await.unwrap().get(0);
    assert_ne!(rotated, token);
    assert!(funnel::relay::crypto::Keyring::parse(&case.encryption_key, "old").unwrap().decrypt(&rotated).is_err());
    assert_eq!(funnel::relay::crypto::Keyring::parse(&new_key, "new").unwrap().decrypt(&rotated).unwrap().expose(), "EAAB-meta-access-token-2");

    // A platform in use cannot be deleted; deleting the credential frees it.
    let meta = platforms["platforms"].as_array().unwrap().iter().find(|p| p["code"] == "meta_capi").unwrap()["id"].as_i64().unwrap();
    json_error(http.delete(url(&format!("platforms/{meta}"))).send().await.unwrap(), 409, "deleting a platform in use").await;
    assert_eq!(http.delete(url(&format!("credentials/{cred_id}"))).send().await.unwrap().status(), 204);
    json_error(http.get(url(&format!("credentials/{cred_id}"))).send().await.unwrap(), 404, "a deleted credential").await;
    json_error(http.delete(url(&format!("credentials/{cred_id}"))).send().await.unwrap(), 404, "deleting twice").await;
    assert!(!case.log("relay-serve").contains("EAAB-meta"), "a secret reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oms_batches_are_recorded_once_with_a_reason_per_rejected_item_and_nothing_half_written() {
    let mut case = Case::new("relayingest").await;
    let base = spawn_relay(&mut case, &["--max-body-bytes", "200000"]).await;
    let http = case.basic_http();
    let pg = case.pg().await;
    for (code, active) in [("bosley", true), ("pfizer", true), ("dormant", false)] {
        let (s, b) = post(&http, format!("{base}/admin/v1/storefronts"), json!({"code": code, "name": code, "is_active": active})).await;
        assert_eq!(s, 201, "{b}");
    }
    let events = format!("{base}/v1/events");

    // The documented sample: all three accepted; `count` is the sender's total, not len(data).
    let sample: Json = serde_json::from_str(include_str!("fixtures/relay/oms-batch-sample.json")).unwrap();
    let (status, answer) = post(&http, events.clone(), sample.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"received": 3, "count": 4000, "accepted": 3, "duplicates": 0, "rejected": []}));
    let rows = pg.query("SELECT storefront_code, storefront_id IS NOT NULL, event_type, event_id, source_system, status, event_payload FROM relay.marketing_events ORDER BY id", &[]).await.unwrap();
    let got: Vec<(String, bool, String, String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
    let row = |s: &str, t: &str, e: &str| (s.to_string(), true, t.to_string(), e.to_string(), "oms".to_string(), "pending".to_string());
    assert_eq!(got, vec![row("bosley", "consult_started", "2025010100001111"), row("pfizer", "rx_issued", "2025010100002222"), row("bosley", "purchase_completed", "2025020100003333")]);
    let payload: Json = serde_json::from_str(rows[2].get::<_, &str>(6)).unwrap();
    assert_eq!(payload, sample["data"][2], "the payload is kept as sent, every field passed through");

    // The same batch again: three duplicates, no new row. A direct insert of a recorded event
    // is refused by the identity index (it would be a second delivery).
    let (_, again) = post(&http, events.clone(), sample.clone()).await;
    assert_eq!((again["accepted"].as_u64(), again["duplicates"].as_u64()), (Some(0), Some(3)), "{again}");
    let direct = pg
        .execute("INSERT INTO relay.marketing_events (event_id, storefront_code, event_type, event_payload, source_system, status) VALUES ('2025020100003333', 'bosley', 'purchase_completed', '{}', 'oms_direct', 'pending')", &[])
        .await;
    assert!(direct.is_err(), "the same event written directly must not make a second row");
    assert_eq!(count(&pg, "SELECT count(*) FROM relay.marketing_events").await, 3);

    // A mixed batch: each bad item rejected alone, with its index and reason.
    let t = "2026-01-15T10:00:00Z";
    let mixed = json!({"count": 7, "data": [
        {"storefront_id": "bosley", "event_name": "purchase_completed", "event_time": t, "order_id": "A1", "order_revenue": 10.5, "currency": "USD"},
        {"storefront_id": "nowhere", "event_name": "purchase_completed", "event_time": t, "order_id": "A2"},
        {"storefront_id": "dormant", "event_name": "purchase_completed", "event_time": t, "order_id": "A3"},
        {"storefront_id": "bosley", "event_name": "purchase_completed", "event_time": "15/01/2026", "order_id": "A4"},
        {"storefront_id": "bosley", "event_name": "purchase_completed", "event_time": t},
        {"storefront_id": "pfizer", "event_name": "RX_Issued", "event_time": t, "order_id": "A6", "custom_field": {"nested": [1, 2]}},
        {"storefront_id": "bosley", "event_name": "purchase_completed", "event_time": t, "order_id": "A1"},
    ], "next_index": 7, "next_url": "https://oms.example.com/page/2", "previous_index": "", "previous_url": "", "error": ""});
    let (status, answer) = post(&http, events.clone(), mixed).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["duplicates"].as_u64(), answer["received"].as_u64()), (Some(2), Some(1), Some(7)), "{answer}");
    let rejected: Vec<(u64, String)> = answer["rejected"].as_array().unwrap().iter().map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_string())).collect();
    assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4], "{answer}");
    assert_eq!(rejected[0].1, "unknown storefront \"nowhere\"");
    assert_eq!(rejected[1].1, "storefront \"dormant\" is inactive");
    assert!(rejected[2].1.starts_with("bad time"), "{}", rejected[2].1);
    assert_eq!(rejected[3].1, "missing field order_id (or event_id)");
    assert_eq!(count(&pg, "SELECT count(*) FROM relay.marketing_events WHERE event_type = 'rx_issued' AND event_id = 'A6'").await, 1, "event names are lowercased");

    // Bodies of the wrong shape: a JSON 4xx naming the problem, and not one row written.
    let before = count(&pg, "SELECT count(*) FROM relay.marketing_events").await;
    let good_item = json!({"storefront_id": "bosley", "event_name": "page_view", "event_time": t, "order_id": "B1"});
    for (body, status, want) in [
        (json!({"count": 1, "data": {"0": good_item.clone()}}), 422, "data must be a list"),
        (json!({"count": 2, "data": [good_item.clone(), {"storefront_id": "bosley", "event_name": "x", "event_time": t, "order_id": "B2", "order_revenue": "12.00"}]}), 422, "data[1].order_revenue must be a number"),
        (json!({"count": 2, "data": [good_item.clone(), {"storefront_id": 7, "event_name": "x", "event_time": t, "order_id": "B3"}]}), 422, "data[1].storefront_id must be a string"),
        (json!({"count": "two", "data": [good_item.clone()]}), 422, "count must be a non-negative integer"),
        (json!([good_item.clone()]), 422, "the body must be a JSON object"),
    ] {
        let r = http.post(events.clone()).json(&body).send().await.unwrap();
        assert!(json_error(r, status, want).await.starts_with(want), "{body}");
    }
    let malformed = http.post(events.clone()).header("content-type", "application/json").body(r#"{"count": 1, "data": [{"storefront_id": "bosley""#).send().await.unwrap();
    json_error(malformed, 400, "malformed JSON").await;
    let not_json = http.post(events.clone()).header("content-type", "text/plain").body("hello").send().await.unwrap();
    json_error(not_json, 415, "a body that is not JSON").await;
    let big: Vec<Json> = (0..2000).map(|i| json!({"storefront_id": "bosley", "event_name": "page_view", "event_time": t, "order_id": format!("C{i}"), "padding": "x".repeat(100)})).collect();
    let too_big = http.post(events.clone()).json(&json!({"count": 2000, "data": big})).send().await.unwrap();
    json_error(too_big, 413, "a body over --max-body-bytes").await;
    assert_eq!(count(&pg, "SELECT count(*) FROM relay.marketing_events").await, before, "a refused request wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fernet_tokens_made_by_python_decrypt_in_funnel_and_the_reverse() {
    let stack = Stack::from_env();
    let key = fernet::Fernet::generate_key();
    let keys = funnel::relay::crypto::Keyring::parse(&key, "test").unwrap();
    let py = |code: &str, arg: &str| {
        let out = std::process::Command::new(&stack.python).args(["-c", code, &key, arg]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let from_python = py("import sys; from cryptography.fernet import Fernet; print(Fernet(sys.argv[1].encode()).encrypt(sys.argv[2].encode()).decode())", "tok-EAAB-ümlaut-1");
    assert_eq!(keys.decrypt(&from_python).unwrap().expose(), "tok-EAAB-ümlaut-1");
    let from_funnel = keys.encrypt("tok-EAAB-ümlaut-2");
    assert_eq!(py("import sys; from cryptography.fernet import Fernet; print(Fernet(sys.argv[1].encode()).decrypt(sys.argv[2].encode()).decode())", &from_funnel), "tok-EAAB-ümlaut-2");
    // Rotation as Python's MultiFernet does it: a token under the old key still decrypts.
    let rotated = funnel::relay::crypto::Keyring::parse(&format!("{},{key}", fernet::Fernet::generate_key()), "test").unwrap();
    assert_eq!(rotated.decrypt(&from_python).unwrap().expose(), "tok-EAAB-ümlaut-1");
}
