//! Backbone acceptance: olist → CDC topics → bronze Delta, checked by independent readers
//! against the source, including kill -9 of both processes at random moments.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use funnel::olist::synthetic::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;


fn seed_synthetic(case: &Case, scale: u32) {
    case.run_ok(&["seed", "olist", "--synthetic-scale", &scale.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_olist_snapshot_lands_once_per_row_in_topics_and_bronze() {
    let dir = olist_dir().expect("the real olist files in ../shared/data/olist (acceptance runs on real data)");
    let mut case = Case::new("realsnap").await;
    case.run_ok(&["seed", "olist", "--dir", dir.to_str().unwrap()]);
    let cdc = case.cdc_args();
    case.spawn(&cdc, "cdc");
    case.wait_streaming(Duration::from_secs(600)).await;

    let topics = case.check("topics", OLIST_TABLES);
    let reads: BTreeMap<&str, i64> = topics.iter().map(|r| (r["table"].as_str().unwrap(), r["ops"]["r"].as_i64().unwrap_or(0))).collect();
    for (table, rows) in [
        ("marketing.marketing_qualified_leads", 8000),
        ("marketing.closed_deals", 842),
        ("ecommerce.sellers", 3095),
        ("ecommerce.products", 32951),
        ("ecommerce.order_payments", 103886),
        ("ecommerce.product_category_name_translation", 71),
    ] {
        assert_eq!(reads[table], rows, "snapshot reads of {table}");
    }
    for r in &topics {
        assert_equal_to_source(r);
        assert_eq!(r["ops"]["r"], r["expected_rows"], "one r event per source row: {r}");
    }

    case.drain_bronze();
    for r in case.check("bronze", OLIST_TABLES) {
        assert_equal_to_source(&r);
        assert_eq!(r["bronze_rows"], r["expected_rows"], "{r}");
    }
}

/// Random single-row statements against four tables; returns how many ran.
async fn random_dml(pg: &tokio_postgres::Client, rng: &mut Rng, n: usize, live: &mut BTreeMap<&'static str, Vec<String>>) -> usize {
    for i in 0..n {
        let table = *rng.pick(&["marketing.marketing_qualified_leads", "marketing.closed_deals", "ecommerce.orders", "ecommerce.sellers"]);
        let keys = live.get_mut(table).unwrap();
        let r = rng.below(10);
        let sql = if r < 4 || keys.len() < 10 {
            let id = format!("dml{:08x}{i}", rng.next_u64() as u32);
            keys.push(id.clone());
            match table {
                "marketing.marketing_qualified_leads" => format!("INSERT INTO {table} VALUES ('{id}', '2018-03-0{}', 'lp{i}', 'email')", 1 + rng.below(9)),
                "marketing.closed_deals" => format!("INSERT INTO {table} (mql_id, seller_id, won_date, declared_monthly_revenue) VALUES ('{id}', 's{i}', '2018-05-01 10:00:00', {}.5)", rng.below(1000)),
                "ecommerce.orders" => format!("INSERT INTO {table} (order_id, customer_id, order_status, order_purchase_timestamp) VALUES ('{id}', 'c{i}', 'created', now())"),
                _ => format!("INSERT INTO {table} VALUES ('{id}', '0{}', 'city {i}', 'SP')", rng.below(9999)),
            }
        } else if r < 8 {
            let id = rng.pick(keys).clone();
            match table {
                "marketing.marketing_qualified_leads" => format!("UPDATE {table} SET origin = 'u{i}' WHERE mql_id = '{id}'"),
                "marketing.closed_deals" => format!("UPDATE {table} SET lead_type = 'u{i}', declared_monthly_revenue = {i} WHERE mql_id = '{id}'"),
                "ecommerce.orders" => format!("UPDATE {table} SET order_status = 'u{i}', order_approved_at = now() WHERE order_id = '{id}'"),
                _ => format!("UPDATE {table} SET seller_city = 'u{i}' WHERE seller_id = '{id}'"),
            }
        } else {
            let idx = rng.below(keys.len() as u64) as usize;
            let id = keys.swap_remove(idx);
            let pk = match table {
                "marketing.marketing_qualified_leads" | "marketing.closed_deals" => "mql_id",
                "ecommerce.orders" => "order_id",
                _ => "seller_id",
            };
            format!("DELETE FROM {table} WHERE {pk} = '{id}'")
        };
        pg.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    n
}

async fn live_keys(pg: &tokio_postgres::Client) -> BTreeMap<&'static str, Vec<String>> {
    let mut live = BTreeMap::new();
    for (t, pk) in [("marketing.marketing_qualified_leads", "mql_id"), ("marketing.closed_deals", "mql_id"), ("ecommerce.orders", "order_id"), ("ecommerce.sellers", "seller_id")] {
        let rows = pg.query(&format!("SELECT {pk} FROM {t} ORDER BY 1 LIMIT 2000"), &[]).await.unwrap();
        live.insert(t, rows.iter().map(|r| r.get::<_, String>(0)).collect());
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_random_statements_reach_topics_and_bronze_in_commit_order() {
    let mut case = Case::new("dml").await;
    seed_synthetic(&case, 2);
    let (cdc, bronze) = (case.cdc_args(), case.bronze_args());
    case.spawn(&cdc, "cdc");
    let b = case.spawn(&bronze, "bronze");
    case.wait_streaming(Duration::from_secs(300)).await;
    let tables = ["marketing.marketing_qualified_leads", "marketing.closed_deals", "ecommerce.orders", "ecommerce.sellers"];
    let bronze_rows = |case: &Case| {
        let lake = funnel::lake::location::Lake::local(case.lake.path()).unwrap();
        let prefix = case.prefix.clone();
        async move {
            let mut n = 0;
            for t in tables {
                n += funnel::summary::delta_rows(&funnel::bronze::table_path(&lake, &format!("{prefix}.{t}"))).await.ok().flatten().unwrap_or(0);
            }
            n
        }
    };
    let pg = case.pg().await;
    let before: i64 = {
        let mut n = 0;
        for t in tables {
            n += pg.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get::<_, i64>(0);
        }
        n
    };
    wait_for(Duration::from_secs(120), "bronze to hold the snapshot", || async { bronze_rows(&case).await == before }).await;

    let mut rng = Rng::new(std::process::id() as u64);
    let mut live = live_keys(&pg).await;
    let statements = random_dml(&pg, &mut rng, 1000, &mut live).await;
    let done = Instant::now();
    case.wait_cdc_caught_up(Duration::from_secs(60)).await;
    let topic_delay = done.elapsed();
    wait_for(Duration::from_secs(60), "bronze to hold every change", || async { bronze_rows(&case).await == before + statements as i64 }).await;
    let bronze_delay = done.elapsed();
    println!("after the last of {statements} statements: in topics within {topic_delay:?}, in bronze within {bronze_delay:?}");
    if std::env::var("TEST_FUNNEL_LOG").is_ok() {
        println!("{}", case.log("bronze"));
    }
    // Check the lake at rest (delta-rs' Python reader has crashed reading a table mid-commit).
    case.kill9(b);

    for r in case.check("topics", &tables) {
        assert_equal_to_source(&r);
    }
    for r in case.check("bronze", &tables) {
        assert_equal_to_source(&r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_cdc_and_bronze_loses_nothing_and_bronze_counts_each_change_once() {
    let mut case = Case::new("kill9").await;
    seed_synthetic(&case, 40);
    let mut rng = Rng::new(0x5eed ^ std::process::id() as u64);
    let mut cdc = case.cdc_args();
    cdc.extend(["--snapshot-chunk".into(), "200".into()]);
    let bronze = case.bronze_args();

    // A writer keeps changing the source the whole time.
    let writer_pg = case.pg().await;
    let mut live = live_keys(&writer_pg).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_w = stop.clone();
    let writer = tokio::spawn(async move {
        let mut rng = Rng::new(42);
        let mut n = 0;
        while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
            n += random_dml(&writer_pg, &mut rng, 5, &mut live).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    });

    let mut c = case.spawn(&cdc, "cdc");
    let mut b = case.spawn(&bronze, "bronze");
    let (mut snapshot_kills, mut stream_kills, mut bronze_kills) = (0, 0, 0);
    // During the snapshot: each time the connector has committed progress beyond the last
    // kill, kill it again at a random moment — five times mid-snapshot.
    let mut last_cursor = None;
    while snapshot_kills < 5 {
        let t0 = Instant::now();
        let cursor = loop {
            let s = case.cdc_state().await;
            match s {
                Some(s) if format!("{:?}", s.phase) == "Streaming" => panic!("snapshot finished after {snapshot_kills} kills; make it longer"),
                Some(s) if Some((s.tables_done.len(), s.last_pk.clone())) != last_cursor => break (s.tables_done.len(), s.last_pk.clone()),
                _ => {}
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "no snapshot progress after a restart:\n{}", case.log("cdc"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        case.kill9(c);
        snapshot_kills += 1;
        last_cursor = Some(cursor);
        // Bronze dies too, a random moment later.
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        case.kill9(b);
        bronze_kills += 1;
        b = case.spawn(&bronze, "bronze");
        c = case.spawn(&cdc, "cdc");
    }
    let bronze_snapshot_kills = bronze_kills;
    case.wait_streaming(Duration::from_secs(600)).await;
    // While streaming: kill both at random moments.
    while stream_kills < 5 {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2500))).await;
        case.kill9(c);
        stream_kills += 1;
        c = case.spawn(&cdc, "cdc");
        tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
        case.kill9(b);
        bronze_kills += 1;
        b = case.spawn(&bronze, "bronze");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statements = writer.await.unwrap();
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    case.kill9(b);
    case.drain_bronze();
    println!(
        "kills: cdc {snapshot_kills} in snapshot + {stream_kills} streaming, bronze {bronze_snapshot_kills} in snapshot + {} streaming; {statements} concurrent statements",
        bronze_kills - bronze_snapshot_kills
    );
    assert!(bronze_snapshot_kills >= 5 && bronze_kills - bronze_snapshot_kills >= 5);

    let topics = case.check("topics", OLIST_TABLES);
    if topics.iter().any(|r| r["missing"].as_i64() != Some(0)) {
        let log = case.log("cdc");
        let resumes: Vec<&str> = log.lines().filter(|l| l.contains("resuming") || l.contains("slot created")).collect();
        println!("CDC resumes:\n{}", resumes.join("\n"));
    }
    // Topics: nothing lost, nothing out of order. Events re-sent after a crash (CDC resumes
    // from confirmed progress; tansu's aborted transactions leak) carry the original source
    // position. Bronze, downstream: every change exactly once, no Kafka position twice.
    let bronze = case.check("bronze", OLIST_TABLES);
    let resent = topics.iter().map(|r| r["duplicate_events"].as_i64().unwrap_or(0)).sum::<i64>();
    println!("re-sent events in topics, recognised by source position and dropped by bronze: {resent}");
    for r in &topics {
        assert_complete(r);
    }
    for r in &bronze {
        assert_equal_to_source(r);
    }
    assert!(case.log("cdc").contains("resuming interrupted snapshot"), "no kill landed mid-snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_cdc_topic_goes_to_the_dead_letter_topic_and_bronze_keeps_going() {
    let mut case = Case::new("dlq").await;
    seed_synthetic(&case, 1);
    let cdc = case.cdc_args();
    case.spawn(&cdc, "cdc");
    case.wait_streaming(Duration::from_secs(300)).await;
    let topic = format!("{}.marketing.closed_deals", case.prefix);
    let producer: FutureProducer = funnel::kafka::producer_config(&case.stack.brokers, None).create().unwrap();
    producer.send(FutureRecord::to(&topic).key("k").payload("definitely not avro"), Duration::from_secs(10)).await.unwrap();
    let pg = case.pg().await;
    pg.batch_execute("INSERT INTO marketing.closed_deals (mql_id, seller_id) VALUES ('after-garbage', 's1')").await.unwrap();
    case.wait_cdc_caught_up(Duration::from_secs(60)).await;
    case.drain_bronze();

    for r in case.check("bronze", &["marketing.closed_deals"]) {
        assert_equal_to_source(&r);
    }
    // The dead letter carries the original bytes and the reason.
    let dlq = funnel::kafka::dead_letters::topic_for("bronze");
    let consumer: BaseConsumer = funnel::kafka::client_config(&case.stack.brokers).set("group.id", "dlq-test").create().unwrap();
    let (lo, hi) = consumer.fetch_watermarks(&dlq, 0, Duration::from_secs(10)).unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&dlq, 0, rdkafka::Offset::Offset(lo)).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.is_none() && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else { continue };
        let headers = m.headers().map(|h| h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect::<BTreeMap<_, _>>()).unwrap_or_default();
        if headers.get("funnel.source.topic") == Some(&topic) {
            found = Some((m.payload().map(|p| p.to_vec()), headers));
        }
        if m.offset() + 1 >= hi && found.is_none() {
            break;
        }
    }
    let (payload, headers) = found.expect("dead letter for the garbage record");
    assert_eq!(payload.as_deref(), Some(&b"definitely not avro"[..]));
    assert!(headers["funnel.error"].contains("magic byte"), "reason: {}", headers["funnel.error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_cdc_schemas_match_the_source_catalog() {
    let case = Case::new("schemas").await;
    seed_synthetic(&case, 1);
    let pg = case.pg().await;
    let tables = funnel::cdc::catalog::tables_in(&pg, &["ecommerce".into(), "marketing".into()]).await.unwrap();
    assert_eq!(tables.len(), OLIST_TABLES.len());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/cdc");
    for t in tables {
        for (suffix, want) in [("key", t.key_schema("olist")), ("value", t.value_schema("olist"))] {
            let path = dir.join(format!("{}-{suffix}.avsc", t.topic("olist")));
            let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(file, want, "{} is stale: regenerate with `funnel schemas`", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bronze_lands_a_table_whose_topic_appears_while_it_runs() {
    let mut case = Case::new("newtopic").await;
    seed_synthetic(&case, 1);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".into(), "ecommerce.sellers".into()]);
    case.spawn(&cdc, "cdc");
    let mut bronze = case.bronze_args();
    bronze.extend(["--bronze-discover-secs".into(), "1".into()]);
    case.spawn(&bronze, "bronze");
    let landed = |case: &Case, t: &str| case.lake.path().join(format!("bronze/{}.{t}/_delta_log", case.prefix)).is_dir();
    wait_for(Duration::from_secs(120), "bronze sellers", || async { landed(&case, "ecommerce.sellers") }).await;
    for r in case.wait_checks_equal("bronze", &["ecommerce.sellers"], &[], Duration::from_secs(120), "bronze").await {
        assert_complete(&r);
    }
    // A second connector starts publishing another table under the same prefix: a topic bronze
    // did not have when it started.
    let name = format!("{}b", case.name);
    let second: Vec<String> = ["run", "cdc", "--http-port", "0", "--cdc-name", &name, "--cdc-topic-prefix", &case.prefix.clone(), "--cdc-publication", &name, "--cdc-tables", "marketing.closed_deals"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    case.spawn(&second, "cdc2");
    wait_for(Duration::from_secs(120), "bronze to land the new topic's table", || async { landed(&case, "marketing.closed_deals") }).await;
    for r in case.wait_checks_equal("bronze", &["marketing.closed_deals", "ecommerce.sellers"], &[], Duration::from_secs(120), "bronze").await {
        assert_complete(&r);
    }
    assert!(case.log("bronze").contains("new topics assigned to bronze"), "{}", case.log("bronze"));
}
