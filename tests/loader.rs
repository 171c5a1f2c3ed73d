//! Data-loader acceptance on the real marketing data: silver staging merged by key, load events
//! with integrity checks, the service API (/load, /load-async, /health) and its failure path
//! with the source database unreachable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;


fn loader_args(case: &Case, port: u16) -> Vec<String> {
    ["run", "loader", "--http-port", &port.to_string(), "--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix, "--cdc-name", &case.name, "--cdc-publication", &case.name, "--loader-flush-ms", "300"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Every load event published so far, as JSON.
async fn load_events(case: &Case) -> Vec<Json> {
    case.topic_json(&format!("{}.marketing.data.loaded.v1", case.prefix)).await
}

fn silver_checks(case: &Case) -> Vec<Json> {
    case.check("silver", SILVER)
}

const SILVER: &[&str] = &["marketing.marketing_qualified_leads=m_data.marketing_qualified_lead", "marketing.closed_deals=m_data.closed_deal"];

async fn wait_silver_equal(case: &Case, timeout: Duration) -> Vec<Json> {
    case.wait_checks_equal("silver", SILVER, &[], timeout, "loader").await
}

fn integrity(event: &Json, table: &str) -> (i64, i64, i64, i64) {
    let t = event["tables"].as_array().unwrap().iter().find(|t| t["table"] == table).unwrap_or_else(|| panic!("{table} in {event}"));
    let i = &t["integrity"];
    let n = |v: &Json| v.as_i64().or_else(|| v.get("long").and_then(Json::as_i64)).unwrap_or(-1);
    (n(&i["source_rows"]), n(&i["topic_rows"]), n(&i["staged_rows"]), n(&t["records_loaded"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_stages_reports_loads_and_fails_cleanly_without_its_source() {
    let dir = olist_dir().expect("the real olist files in ../shared/data/olist (acceptance runs on real data)");
    let mut case = Case::new("loader").await;
    case.run_ok(&["seed", "olist", "--dir", dir.to_str().unwrap()]);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".into(), "marketing.marketing_qualified_leads,marketing.closed_deals".into()]);
    case.spawn(&cdc, "cdc");
    let port = free_port();
    let loader = case.spawn(&loader_args(&case, port), "loader");
    let http = case.http();
    let base = format!("http://127.0.0.1:{port}");

    // 1. Snapshot → silver, then a catch-up load event with the integrity counts.
    wait_silver_equal(&case, Duration::from_secs(300)).await;
    wait_for(Duration::from_secs(120), "a catch-up load event", || async { load_events(&case).await.iter().any(|e| e["event_type"] == "marketing-data-loaded") }).await;
    let events = load_events(&case).await;
    let first = events.iter().find(|e| e["event_type"] == "marketing-data-loaded").unwrap();
    assert_eq!(integrity(first, "m_data.marketing_qualified_lead").0, 8000, "{first}");
    let (s, t, st, _) = integrity(first, "m_data.marketing_qualified_lead");
    assert_eq!((s, t, st), (8000, 8000, 8000), "{first}");
    let (s, t, st, _) = integrity(first, "m_data.closed_deal");
    assert_eq!((s, t, st), (842, 842, 842), "{first}");

    // 2. Updates replace, deletes remove, inserts add.
    let pg = case.pg().await;
    pg.batch_execute(
        "UPDATE marketing.marketing_qualified_leads SET origin = 'loader-test' WHERE mql_id IN (SELECT mql_id FROM marketing.marketing_qualified_leads ORDER BY mql_id LIMIT 5); \
         DELETE FROM marketing.closed_deals WHERE mql_id IN (SELECT mql_id FROM marketing.closed_deals ORDER BY mql_id LIMIT 3); \
         INSERT INTO marketing.marketing_qualified_leads VALUES ('loader-test-mql', '2018-06-01', 'lp', NULL);",
    )
    .await
    .unwrap();
    case.wait_cdc_caught_up(Duration::from_secs(60)).await;
    let r = wait_silver_equal(&case, Duration::from_secs(60)).await;
    assert_eq!((r[0]["actual_rows"].as_i64(), r[1]["actual_rows"].as_i64()), (Some(8001), Some(839)), "{r:?}");

    // 2b. kill -9 of the loader while the source changes: silver ends equal, no duplicate row.
    let mut loader = loader;
    let mut rng = funnel::olist::synthetic::Rng::new(11);
    for round in 0..3 {
        let kill_at = 40 + rng.below(60) as usize;
        for i in 0..120 {
            let sql = match rng.below(3) {
                0 => format!("INSERT INTO marketing.marketing_qualified_leads VALUES ('loader-kill-{round}-{i}', '2018-07-01', 'lp{i}', 'social')"),
                1 => format!("UPDATE marketing.closed_deals SET declared_monthly_revenue = {} WHERE mql_id IN (SELECT mql_id FROM marketing.closed_deals ORDER BY mql_id LIMIT 1 OFFSET {})", rng.below(10_000), rng.below(800)),
                _ => format!("DELETE FROM marketing.marketing_qualified_leads WHERE mql_id = 'loader-kill-{round}-{}'", rng.below(i as u64 + 1)),
            };
            pg.batch_execute(&sql).await.unwrap();
            if i == kill_at {
                case.kill9(loader);
                loader = case.spawn(&loader_args(&case, port), "loader");
            }
        }
    }
    case.wait_cdc_caught_up(Duration::from_secs(60)).await;
    for r in wait_silver_equal(&case, Duration::from_secs(120)).await {
        assert_eq!(r["expected_rows"], r["actual_rows"], "a duplicate row in silver: {r}");
    }
    let live_mqls = pg.query_one("SELECT count(*) FROM marketing.marketing_qualified_leads", &[]).await.unwrap().get::<_, i64>(0);
    let live_deals = pg.query_one("SELECT count(*) FROM marketing.closed_deals", &[]).await.unwrap().get::<_, i64>(0);

    // 3. The service: info, health, a synchronous and an asynchronous load.
    wait_for(Duration::from_secs(60), "the restarted loader's API", || async { http.get(&base).send().await.is_ok() }).await;
    let info: Json = http.get(&base).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["service"], "funnel data loader", "{info}");
    // Without the token (or with another) every route but /health and /metrics answers 401.
    let anonymous = reqwest::Client::new();
    for (method, path) in [("GET", ""), ("POST", "/load"), ("POST", "/load-async"), ("GET", "/load/x")] {
        let url = format!("{base}{path}");
        for req in [anonymous.request(method.parse().unwrap(), &url), anonymous.request(method.parse().unwrap(), &url).bearer_auth("wrong-token-of-enough-length")] {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path}");
            let body: Json = resp.json().await.unwrap();
            assert!(body["message"].as_str().unwrap().contains("credentials"), "{body}");
        }
    }
    assert_eq!(anonymous.get(format!("{base}/metrics")).send().await.unwrap().status(), 200);
    let health = anonymous.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/health needs no credentials");
    let health: Json = health.json().await.unwrap();
    assert_eq!(health["failing"], serde_json::json!([]), "{health}");
    let resp = http.post(format!("{base}/load")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let event: Json = resp.json().await.unwrap();
    assert_eq!(event["event_type"], "marketing-data-loaded", "{event}");
    let mql = event["tables"].as_array().unwrap().iter().find(|t| t["table"] == "m_data.marketing_qualified_lead").unwrap();
    assert_eq!(mql["records_loaded"], live_mqls, "the re-snapshot merged every row again: {event}");
    assert_eq!(mql["integrity"]["staged_rows"], live_mqls, "{event}");
    assert_eq!(mql["integrity"]["passed"], true, "{event}");
    // The re-read is marked with the load's id: the topic still has one r event per row of the
    // first snapshot (8000 MQLs), the re-read's events are counted apart, one per live row.
    let topic = case.check("topics", &["marketing.marketing_qualified_leads"]).remove(0);
    assert_eq!(topic["ops"]["r"], 8000, "the connector's own snapshot, counted once: {topic}");
    assert_eq!(topic["reread_events"], live_mqls, "{topic}");
    assert_eq!(topic["loads"][event["load_id"].as_str().unwrap()], live_mqls, "re-reads carry the load id: {topic}");
    assert_equal_to_source(&topic);
    let after_load = wait_silver_equal(&case, Duration::from_secs(30)).await;
    assert_eq!((after_load[0]["actual_rows"].as_i64(), after_load[1]["actual_rows"].as_i64()), (Some(live_mqls), Some(live_deals)), "a reload must not duplicate rows");
    let accepted = http.post(format!("{base}/load-async")).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Json>().await.unwrap()["load_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    let job: Json = loop {
        let job: Json = http.get(format!("{base}/load/{id}")).send().await.unwrap().json().await.unwrap();
        if job["status"] == "succeeded" || job["status"] == "failed" {
            break job;
        }
        assert!(Instant::now() < deadline, "the async load never finished: {job}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["event_type"], "marketing-data-loaded", "{job}");
    let out = case.run_ok(&["load", "--url", &base]);
    assert!(out.contains("marketing-data-loaded") && out.contains("m_data.closed_deal"), "{out}");
    assert!(case.run_ok(&["health"]).contains("source_database"));

    // 4. Source database unreachable: the load fails after its retries with a clear error, the
    //    tables are untouched, /health and `funnel health` name the source database.
    case.kill9(loader);
    let before = silver_checks(&case);
    let bad_port = free_port();
    let bad_source = "postgres://postgres@127.0.0.1:1/olist";
    let port2 = free_port();
    let mut cmd = case.funnel();
    cmd.env("FUNNEL_SOURCE_PG_URL", bad_source).env("FUNNEL_RETRY_ATTEMPTS", "3").env("FUNNEL_RETRY_DELAY", "0.2");
    let log = std::fs::File::create(case.lake.path().join("loader-down.log")).unwrap();
    let mut child = cmd.args(loader_args(&case, port2)).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
    let base2 = format!("http://127.0.0.1:{port2}");
    wait_for(Duration::from_secs(60), "the second loader's API", || async { http.get(&base2).send().await.is_ok() }).await;
    let resp = http.post(format!("{base2}/load")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let failed: Json = resp.json().await.unwrap();
    assert_eq!(failed["event_type"], "marketing-data-load-failed", "{failed}");
    let err = failed["error"].as_str().unwrap_or_default();
    assert!(err.contains("after 3 attempts") && (err.contains("refused") || err.contains("connect")), "unclear error: {err}");
    for t in failed["tables"].as_array().unwrap() {
        assert_eq!(t["status"], "failed", "{failed}");
    }
    assert!(load_events(&case).await.iter().any(|e| e["event_type"] == "marketing-data-load-failed"), "the failure event is published");
    let after = silver_checks(&case);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((b["actual_rows"].clone(), b["digest"].clone()), (a["actual_rows"].clone(), a["digest"].clone()), "a failed load touched the staged table");
    }
    let health = http.get(format!("{base2}/health")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let health: Json = health.json().await.unwrap();
    assert_eq!(health["failing"], serde_json::json!(["source_database"]), "{health}");
    let out = case.funnel().env("FUNNEL_SOURCE_PG_URL", bad_source).arg("health").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failing: source_database"), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(case.lake.path().join("loader-down.log")).unwrap();
    assert!(log.contains("transient failure, retrying"), "no retry logged:\n{log}");
    let _ = (child.kill(), child.wait(), bad_port);
}
