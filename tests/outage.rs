//! Outages are not bad data: with the schema registry stopped for 30 s while bronze, the lead
//! pipeline and customer 360 consume — each restarted during the outage, so it knows no schema
//! yet — nothing is dead-lettered, every processor reports unhealthy naming the registry, and
//! once the registry is back every table and topic equals the source again.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;


fn run_args(case: &Case, processors: &[&str], port: u16) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into()];
    a.extend(processors.iter().map(|p| p.to_string()));
    let prefix = case.prefix.clone();
    a.extend(
        ["--http-port", &port.to_string(), "--namespace", &prefix, "--cdc-topic-prefix", &prefix, "--redis-prefix", &prefix, "--gold-flush-ms", "300", "--bronze-topics", &format!(r"^{prefix}\.(ecommerce|marketing)\.[a-z_]+$"), "--flush-ms", "300"]
            .iter()
            .map(|s| s.to_string()),
    );
    a
}

/// Records in a (namespaced) dead-letter topic; 0 when it does not exist.
fn dead_letters(case: &Case, topic: &str) -> usize {
    if !funnel::kafka::admin::list_topics(&case.stack.brokers).unwrap().iter().any(|t| t == topic) {
        return 0;
    }
    let mut n = 0;
    funnel::state::read_topic(&case.stack.brokers, topic, |_, _| n += 1).unwrap();
    n
}

/// `funnel_dead_letters_total` summed over a process's metrics.
async fn dead_letter_metric(http: &reqwest::Client, port: u16) -> f64 {
    let text = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with("funnel_dead_letters_total")).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn wait_all_equal(case: &Case, timeout: Duration) {
    let logs = |t: &&str| case.lake.path().join(format!("bronze/{}.{t}/_delta_log", case.prefix));
    wait_for(timeout, "every bronze table", || async { OLIST_TABLES.iter().all(|t| logs(t).is_dir()) }).await;
    for r in case.wait_checks_equal("bronze", OLIST_TABLES, &[], timeout, "bronze").await {
        assert_complete(&r);
    }
    case.wait_checks_equal("leads", &["gold", "topic", "sellers"], &["--namespace", &case.prefix], timeout, "leads").await;
    case.wait_checks_equal("c360", &["topic", "gold", "redis"], &["--namespace", &case.prefix, "--redis-prefix", &case.prefix], timeout, "c360").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_outage_pauses_processors_and_dead_letters_nothing() {
    let mut case = Case::new("outage").await;
    case.run_ok(&["seed", "olist", "--synthetic-scale", "1"]);
    // A registry of this test's own (its own schemas topic): stopping it disturbs no other test.
    let registry_port = free_port().to_string();
    let registry_args: Vec<String> = ["registry", "--port", &registry_port, "--kafkastore-topic", &format!("_schemas.{}", case.prefix)].iter().map(|s| s.to_string()).collect();
    let mut registry = case.spawn(&registry_args, "registry");
    case.stack.registry = format!("http://127.0.0.1:{registry_port}");
    let http = reqwest::Client::new();
    let subjects = format!("{}/subjects", case.stack.registry);
    wait_for(Duration::from_secs(60), "the test's registry", || async { http.get(&subjects).send().await.is_ok_and(|r| r.status() == 200) }).await;

    case.spawn(&case.cdc_args(), "cdc");
    let ports = [free_port(), free_port(), free_port()];
    let groups: [&[&str]; 3] = [&["bronze"], &["seller-metrics", "leads", "leads-gold"], &["domain", "c360", "lake", "cache"]];
    let logs = ["bronze", "leads", "c360"];
    let mut procs: Vec<usize> = (0..3).map(|i| case.spawn(&run_args(&case, groups[i], ports[i]), logs[i])).collect();
    let t0 = Instant::now();
    wait_all_equal(&case, Duration::from_secs(600)).await;
    eprintln!("first pass equal to the source after {:.0} s", t0.elapsed().as_secs_f64());

    // The outage: the registry stops; every processor is restarted (an empty schema cache) while
    // the source keeps changing.
    case.kill9(registry);
    let outage = Instant::now();
    for i in 0..3 {
        case.kill9(procs[i]);
        procs[i] = case.spawn(&run_args(&case, groups[i], ports[i]), logs[i]);
    }
    let pg = case.pg().await;
    let customers: Vec<String> = pg.query("SELECT customer_id FROM ecommerce.customers ORDER BY customer_id LIMIT 20", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    for i in 0..60 {
        let o = format!("outage-{i}");
        let customer = &customers[i % customers.len()];
        let sql = match i % 4 {
            0 => format!(
                "BEGIN; INSERT INTO ecommerce.orders (order_id, customer_id, order_status, order_purchase_timestamp) VALUES ('{o}', '{customer}', 'created', now()); \
                 INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES ('{o}', 1, 'p', 's', 10.{i:02}, 1.00); \
                 INSERT INTO ecommerce.order_payments VALUES ('{o}', 1, 'credit_card', 1, 11.{i:02}); COMMIT;"
            ),
            1 => format!("UPDATE ecommerce.customers SET customer_city = 'outage {i}' WHERE customer_id = '{customer}'"),
            2 => format!("UPDATE marketing.marketing_qualified_leads SET origin = 'outage-{i}' WHERE mql_id = (SELECT mql_id FROM marketing.marketing_qualified_leads ORDER BY mql_id OFFSET {i} LIMIT 1)"),
            _ => format!("UPDATE ecommerce.order_items SET price = price + 1 WHERE order_id = (SELECT order_id FROM ecommerce.order_items ORDER BY order_id OFFSET {i} LIMIT 1)"),
        };
        pg.batch_execute(&sql).await.unwrap();
    }
    // Every process is up and says it is waiting for the registry.
    for (port, log) in ports.iter().zip(logs) {
        let url = format!("http://127.0.0.1:{port}/health");
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            if let Ok(resp) = http.get(&url).send().await {
                let status = resp.status().as_u16();
                last = format!("{status} {}", resp.text().await.unwrap_or_default());
                if status == 503 && last.contains("waiting for schema-registry") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "{log} never reported waiting for the registry: {last}\n{}", case.log(log));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("{log} during the outage: {last}");
    }
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    registry = case.spawn(&registry_args, "registry");
    eprintln!("registry back after {:.1} s", outage.elapsed().as_secs_f64());

    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    wait_all_equal(&case, Duration::from_secs(600)).await;
    eprintln!("equal to the source {:.0} s after the registry returned", outage.elapsed().as_secs_f64() - 30.0);
    for (port, log) in ports.iter().zip(logs) {
        let health: Json = http.get(format!("http://127.0.0.1:{port}/health")).send().await.unwrap().json().await.unwrap();
        assert_eq!(health["status"], "ok", "{log} healthy again: {health}");
        assert_eq!(dead_letter_metric(&http, *port).await, 0.0, "{log} dead-lettered records during the outage");
    }
    for p in ["seller-metrics-repartition", "seller-metrics", "leads-repartition", "leads", "leads-gold", "domain", "c360", "lake", "cache"] {
        let topic = format!("{}.{}", case.prefix, funnel::kafka::dead_letters::topic_for(p));
        assert_eq!(dead_letters(&case, &topic), 0, "{topic}");
    }
    let _ = registry;
}

/// A Redis of the test's own, persisting every write (appendfsync always), so a restart keeps
/// the view and only the outage is tested.
fn start_redis(dir: &std::path::Path, port: u16) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (funnel stack up installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_restarts_the_cache_until_redis_is_back_and_loses_nothing() {
    let mut case = Case::new("redisout").await;
    let ns = case.prefix.clone();
    let redis_dir = case.lake.path().join("redis");
    std::fs::create_dir_all(&redis_dir).unwrap();
    let redis_port = free_port();
    let mut redis = start_redis(&redis_dir, redis_port);
    case.stack.redis = format!("redis://127.0.0.1:{redis_port}/");
    let client = redis::Client::open(case.stack.redis.as_str()).unwrap();
    let count = || async {
        let Ok(mut con) = client.get_multiplexed_async_connection().await else { return 0usize };
        redis::cmd("ZCARD").arg(format!("{ns}:by_revenue")).query_async(&mut con).await.unwrap_or(0)
    };
    wait_for(Duration::from_secs(30), "the test's redis", || async { client.get_multiplexed_async_connection().await.is_ok() }).await;

    case.run_ok(&["seed", "events", "--customers", "150", "--orders", "400", "--namespace", &ns]);
    let port = free_port();
    let run: Vec<String> = ["run", "c360", "cache", "--http-port", &port.to_string(), "--namespace", &ns, "--redis-prefix", &ns].iter().map(|s| s.to_string()).collect();
    case.spawn(&run, "c360");
    wait_for(Duration::from_secs(180), "the first 150 customers in redis", || async { count().await == 150 }).await;

    // Redis goes away; new customers keep arriving.
    let _ = (redis.kill(), redis.wait());
    case.run_ok(&["seed", "events", "--customers", "300", "--orders", "800", "--seed", "43", "--namespace", &ns]);
    let http = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{port}/health");
    let mut last: String;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http.get(&health).send().await.expect("the process stays up while redis is down");
        let status = resp.status().as_u16();
        last = resp.text().await.unwrap_or_default();
        let h: Json = serde_json::from_str(&last).unwrap_or_default();
        if status == 503 && h["processors"]["cache"]["state"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never reported the outage: {last}\n{}", case.log("c360"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("during the outage: {last}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    redis = start_redis(&redis_dir, redis_port);

    // Back: every customer of the consolidated topic is in Redis with its latest version.
    let consolidated = format!("{ns}.dom.customer.consolidated.v1");
    let latest = |records: Vec<Json>| -> std::collections::BTreeMap<String, i64> {
        records.into_iter().map(|r| (r["customer_id"].as_str().unwrap().to_string(), r["applied_events"].as_i64().unwrap())).collect()
    };
    let mut expected = latest(case.topic_json(&consolidated).await);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let mut differ = vec![];
        for (id, events) in &expected {
            let got: Option<i64> = redis::cmd("HGET").arg(format!("{ns}:customer:{id}")).arg("applied_events").query_async(&mut con).await.unwrap();
            if got != Some(*events) {
                differ.push((id.clone(), *events, got));
            }
        }
        if differ.is_empty() && expected.len() == count().await && expected.len() >= 300 {
            break;
        }
        assert!(Instant::now() < deadline, "{} of {} customers differ in redis, e.g. {:?}\n{}", differ.len(), expected.len(), &differ[..differ.len().min(3)], case.log("c360"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        expected = latest(case.topic_json(&consolidated).await);
    }
    let h: Json = http.get(&health).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    let log = case.log("c360");
    assert!(log.contains("restarting it when the backoff is over"), "the cache was restarted in process:\n{log}");
    let metrics = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.lines().any(|l| l.starts_with("funnel_dead_letters_total")), "nothing dead-lettered: {metrics}");
    eprintln!("{} customers in redis equal the consolidated topic after the outage", expected.len());
    let _ = (redis.kill(), redis.wait());
}
