//! The relay's part of `funnel demo`: two demo storefronts whose sGTM containers and Meta pixel
//! are a local recorder in this process, the documented OMS sample posted (its times moved to
//! now: Meta takes events at most 7 days old), and a summary of what each destination got.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::config::Endpoints;
use crate::stack::{self, StackDirs};

/// The OMS contract's sample (../shared/data/relay/oms-batch-sample.json).
const SAMPLE: &str = include_str!("../../tests/fixtures/relay/oms-batch-sample.json");

/// A recorder standing in for the destinations: (path, body) of every request, answered 200.
async fn recorder() -> Result<(String, Arc<Mutex<Vec<(String, Value)>>>)> {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let log = log.clone();
        async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock().unwrap_or_else(|p| p.into_inner()).push((uri.path().to_string(), v));
            axum::Json(json!({"events_received": 1, "code": 0}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

pub async fn run(ep: &Endpoints, dirs: &StackDirs, funnel: &dyn Fn(&[&str]) -> Result<Command>) -> Result<()> {
    let creds = crate::runtime::auth::ApiCredentials::load(&dirs.state()?)?;
    let key_file = dirs.state()?.join(super::crypto::STACK_KEY_FILE);
    let with_key = |args: &[&str]| -> Result<Command> {
        let mut c = funnel(args)?;
        c.env(super::crypto::KEY_FILE_ENV, &key_file);
        Ok(c)
    };
    let port = super::service::DEFAULT_PORT;
    stack::start_detached(dirs, "relay-serve", with_key(&["relay", "serve"])?)?;
    stack::start_detached(dirs, "relay", with_key(&["run", "relay", "--http-port", "9465", "--retry-backoff-base", "1s"])?)?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let t0 = Instant::now();
    while !matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200) {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("funnel relay serve did not become ready; see {}", dirs.state()?.join("relay-serve.log").display());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (sink, received) = recorder().await?;
    let auth = creds.authorization();
    let post = |path: String, body: Value| {
        let (http, auth, base) = (http.clone(), auth.clone(), base.clone());
        async move {
            let r = http.post(format!("{base}{path}")).header("authorization", auth).json(&body).send().await.with_context(|| format!("POST {path}"))?;
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
                bail!("POST {path}: {status} {v}");
            }
            Ok::<Value, anyhow::Error>(v)
        }
    };
    for (code, name) in [("bosley", "Bosley (demo)"), ("pfizer", "Pfizer (demo)")] {
        post("/admin/v1/storefronts".into(), json!({"code": code, "name": name})).await?;
    }
    post("/admin/v1/sgtm-configs".into(), json!({"storefront_code": "bosley", "sgtm_url": format!("{sink}/sgtm/bosley"), "client_type": "ga4", "measurement_id": "G-DEMO", "api_secret": "demo-mp-secret"})).await?;
    post("/admin/v1/sgtm-configs".into(), json!({"storefront_code": "pfizer", "sgtm_url": format!("{sink}/sgtm/pfizer"), "client_type": "custom", "custom_headers": {"X-Demo-Key": "demo-header-secret"}})).await?;
    post("/admin/v1/credentials".into(), json!({"storefront_code": "bosley", "platform": "meta_capi", "config": {"pixel_id": "1234567890", "api_base_url": format!("{sink}/meta")}, "secret": "demo-meta-token"})).await?;

    let mut sample: Value = serde_json::from_str(SAMPLE)?;
    let now = chrono::Utc::now();
    let run = now.timestamp();
    for (i, e) in sample["data"].as_array_mut().into_iter().flatten().enumerate() {
        let t = (now - chrono::Duration::minutes(10 - i as i64)).to_rfc3339();
        e["event_time"] = json!(t);
        // A fresh order id per demo run: the inbox would rightly count a re-run as duplicates.
        e["order_id"] = json!(format!("{}-{run}", e["order_id"].as_str().unwrap_or("order")));
    }
    let answer = post("/v1/events".into(), sample.clone()).await?;
    println!("POST /v1/events (the OMS sample, times moved to now): {answer}");
    let ids: Vec<String> = sample["data"].as_array().into_iter().flatten().filter_map(|e| e["order_id"].as_str().map(str::to_string)).collect();
    let db = crate::olist::db::connect(&ep.source_pg_url).await?;
    let t0 = Instant::now();
    let rows = loop {
        let rows = db.query("SELECT storefront_code, event_type, event_id, status FROM relay.marketing_events WHERE event_id = ANY($1) ORDER BY id", &[&ids]).await?;
        if rows.len() == ids.len() && rows.iter().all(|r| r.get::<_, &str>(3) != "pending") {
            break rows;
        }
        if t0.elapsed() > Duration::from_secs(180) {
            bail!("the demo events were not delivered within 180 s; see {}", dirs.state()?.join("relay.log").display());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["storefront", "event", "order", "status", "attempts (destination: status)"]);
    for r in &rows {
        let attempts = db
            .query(
                "SELECT a.destination || ': ' || a.status || coalesce(' ' || a.status_code, '') FROM relay.event_attempts a JOIN relay.marketing_events m ON m.id = a.marketing_event_id \
                 WHERE m.event_id = $1 AND m.event_type = $2 ORDER BY a.id",
                &[&r.get::<_, &str>(2), &r.get::<_, &str>(1)],
            )
            .await?;
        let list: Vec<String> = attempts.iter().map(|a| a.get(0)).collect();
        table.add_row(vec![r.get::<_, String>(0), r.get(1), r.get(2), r.get(3), list.join(", ")]);
    }
    println!("{table}");
    let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
    for (path, _) in received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        *by_path.entry(path.clone()).or_default() += 1;
    }
    println!("the local recorder standing in for sGTM and Meta received: {by_path:?}");
    Ok(())
}
