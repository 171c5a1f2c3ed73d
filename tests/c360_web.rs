//! The customer 360 web page, driven in headless Chromium: served by `funnel serve` from the
//! Redis view the cache processor keeps; a segment filter click shows exactly that segment's
//! customers, and a customer produced meanwhile appears without a reload.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value as Json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_filters_by_segment_and_refreshes_live() {
    let mut case = Case::new("web").await;
    let ns = case.prefix.clone();
    let out = case.run_ok(&["seed", "events", "--customers", "200", "--orders", "700", "--namespace", &ns]);
    assert!(out.contains("produced 200 profiles"), "{out}");
    let run: Vec<String> = ["run", "c360", "cache", "--http-port", "0", "--namespace", &ns, "--redis-prefix", &ns].iter().map(|s| s.to_string()).collect();
    case.spawn(&run, "c360");
    let port = 15000 + (std::process::id() % 1000) as u16;
    case.spawn(&["serve".into(), "--port".into(), port.to_string(), "--redis-prefix".into(), ns.clone(), "--namespace".into(), ns.clone()], "serve");

    // Wait until the view holds every seeded customer with every seeded order (profiles come
    // first in event time, so the view can hold all 200 before their orders are applied).
    let client = redis::Client::open(case.stack.redis.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let by_revenue = format!("{ns}:by_revenue");
    let (mut count, mut orders) = (0usize, 0i64);
    for _ in 0..300 {
        count = redis::cmd("ZCARD").arg(&by_revenue).query_async(&mut con).await.unwrap();
        if count == 200 {
            let ids: Vec<String> = redis::cmd("ZRANGE").arg(&by_revenue).arg(0).arg(-1).query_async(&mut con).await.unwrap();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGET").arg(format!("{ns}:customer:{id}")).arg("order_count");
            }
            let counts: Vec<Option<i64>> = pipe.query_async(&mut con).await.unwrap();
            orders = counts.into_iter().flatten().sum();
            if orders == 700 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!((count, orders), (200, 700), "cache holds every customer and order\n{}", case.log("c360"));

    // The smallest non-empty segment, so the page shows all of it (not new-lead: the customer
    // the page adds live lands there).
    let segments: Vec<String> = redis::cmd("SMEMBERS").arg(format!("{ns}:segments")).query_async(&mut con).await.unwrap();
    let mut sizes = vec![];
    for s in &segments {
        let n: usize = redis::cmd("SCARD").arg(format!("{ns}:segment:{s}")).query_async(&mut con).await.unwrap();
        sizes.push((n, s.clone()));
    }
    sizes.sort();
    let (expected, segment) = sizes.into_iter().find(|(n, s)| *n > 0 && s != "new-lead").expect("a segment with customers");
    assert!(segments.len() >= 2, "customers fall into several segments: {segments:?}");

    let out = Command::new(&case.stack.python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/c360_page.py"))
        .args(["--url", &format!("http://127.0.0.1:{port}"), "--profile-topic", &format!("{ns}.dom.customer.profile.upsert.v1"), "--segment", &segment])
        .env("FUNNEL_API_TOKEN", &case.token)
        .output()
        .expect("python with selenium (funnel stack up installs it)");
    assert!(out.status.success(), "browser run failed:\n{}\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr), case.log("serve"));
    let r: Json = serde_json::from_slice(&out.stdout).expect("page result JSON");
    eprintln!("page: {r}");
    assert_eq!(r["without_credentials"], 401, "the page asks for credentials: {r}");
    assert_eq!(r["before_live"], 0, "nobody lives in Livetown before the profile is produced: {r}");
    assert_eq!(r["live_rows"][0]["customer_id"], "live-1", "{r}");
    assert_eq!(r["live_rows"][0]["stage"], "prospect", "a profile without orders is a prospect: {r}");
    assert_eq!(r["segment_cells"], serde_json::json!([segment]), "only the clicked segment is shown: {r}");
    assert_eq!(r["segment_total"].as_u64(), Some(expected as u64), "{r}");
    assert_eq!(r["segment_rows"].as_u64(), Some(expected.min(100) as u64), "{r}");
    assert_eq!(r["button_active"], true, "{r}");
}
