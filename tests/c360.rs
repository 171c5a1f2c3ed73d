//! Customer 360 on the real olist data: olist CDC → domain → c360 (the SQL of sql/c360/ on
//! DataFusion) → consolidated topic, gold `c360` (lake) and Redis (cache). Source changes of
//! every kind arrive during the initial load while the c360 processor is killed (-9) six times;
//! then each view equals sql/checks/c360_customers.sql for every customer, with no duplicate
//! enriched order, and equals an uninterrupted `funnel replay c360` column for column.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value as Json;

const CDC_TABLES: &str = "ecommerce.customers,ecommerce.orders,ecommerce.order_items,ecommerce.order_payments,ecommerce.products,ecommerce.order_reviews";

fn args(case: &Case, processors: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into()];
    a.extend(processors.iter().map(|p| p.to_string()));
    a.extend(["--http-port", "0", "--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix, "--redis-prefix", &case.prefix].iter().map(|s| s.to_string()));
    a
}

fn n(r: &Json, k: &str) -> i64 {
    r.get(k).and_then(Json::as_i64).unwrap_or(-1)
}

async fn wait_c360_equal(case: &Case, timeout: Duration) -> Vec<Json> {
    // Checked once the engine has committed its inputs to their end and its outputs stand
    // still: a check reads 96 062 customers three ways and costs a core for minutes.
    let topics = funnel::c360::C360Topics::new(funnel::topology::names::TopicNames::new("olist", &case.prefix));
    let inputs: Vec<String> = topics.inputs().into_iter().map(|t| t.name).collect();
    let group = topics.names.group(funnel::c360::PROCESSOR);
    // Gold is merged behind the topics: its Delta log must stand still too.
    let mut quiet = vec![topics.consolidated, topics.enriched, "gold/c360".to_string()];
    quiet.extend(inputs.iter().cloned());
    let extra = ["--namespace", &case.prefix, "--redis-prefix", &case.prefix];
    case.wait_checks_equal_when_settled("c360", &["topic", "gold", "redis"], &extra, timeout, "c360,sinks", &[(group, inputs)], &quiet).await
}

fn enriched(case: &Case) -> Json {
    case.check_with("c360", &["enriched"], &["--namespace", &case.prefix]).remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c360_views_equal_the_source_sql_through_changes_and_kill_9() {
    let dir = olist_dir().expect("the real olist files in ../shared/data/olist (acceptance runs on real data)");
    let mut case = Case::new("c360").await;
    case.run_ok(&["seed", "olist", "--dir", dir.to_str().unwrap()]);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".to_string(), CDC_TABLES.to_string()]);
    case.spawn(&cdc, "cdc");
    let sinks = case.spawn(&args(&case, &["domain", "lake", "cache"]), "sinks");
    let mut c360 = case.spawn(&args(&case, &["c360"]), "c360");

    // Changes of every kind while the c360 processor is killed at random moments of the
    // initial load (restores of a large, growing state), then one check of everything.
    let t0 = std::time::Instant::now();
    case.wait_streaming(Duration::from_secs(600)).await;
    let enriched_topic = funnel::c360::C360Topics::new(funnel::topology::names::TopicNames::new("olist", &case.prefix)).enriched;
    let pg = case.pg().await;
    let customers: Vec<String> = pg
        .query("SELECT customer_id FROM ecommerce.customers ORDER BY customer_id LIMIT 40", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rng = funnel::olist::synthetic::Rng::new(11);
    let kills = 6;
    for round in 0..kills {
        // Spread over the load: about 187 000 enriched records in all.
        let target = (round as i64 + 1) * 25_000;
        let waited = std::time::Instant::now();
        while case.topic_end(&enriched_topic) < target && waited.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        eprintln!("round {round} at {:.0} s: {} enriched records written", t0.elapsed().as_secs_f64(), case.topic_end(&enriched_topic));
        let kill_at = 10 + rng.below(70) as usize;
        for i in 0..100 {
            let o = format!("c360-{round}-{i}");
            let customer = &customers[(round * 7 + i) % customers.len()];
            let sql = match i % 5 {
                0 => format!(
                    "BEGIN; INSERT INTO ecommerce.orders (order_id, customer_id, order_status, order_purchase_timestamp) VALUES ('{o}', '{customer}', 'created', now()); \
                     INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES ('{o}', 1, 'p', 's', 10.{i:02}, 1.00); \
                     INSERT INTO ecommerce.order_payments VALUES ('{o}', 1, 'credit_card', 1, 11.{i:02}); COMMIT;"
                ),
                1 => format!("UPDATE ecommerce.orders SET order_status = 'shipped' WHERE order_id = 'c360-{round}-{}'", i - 1),
                2 => format!("UPDATE ecommerce.order_payments SET payment_value = payment_value + 5 WHERE order_id = 'c360-{round}-{}'", i - 2),
                3 => format!("UPDATE ecommerce.customers SET customer_city = 'city {round}-{i}' WHERE customer_id = '{customer}'"),
                _ if round % 2 == 0 => format!("DELETE FROM ecommerce.orders WHERE order_id = 'c360-{round}-{}'", i - 4),
                _ => format!("UPDATE ecommerce.order_payments SET payment_value = payment_value * 2 WHERE order_id = (SELECT min(order_id) FROM ecommerce.orders WHERE customer_id = '{customer}')"),
            };
            pg.batch_execute(&sql).await.unwrap();
            if i == kill_at {
                case.kill9(c360);
                c360 = case.spawn(&args(&case, &["c360"]), "c360");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    case.wait_cdc_caught_up(Duration::from_secs(300)).await;
    let r = wait_c360_equal(&case, Duration::from_secs(1800)).await;
    eprintln!("c360 equal to the SQL after {kills} kill -9, {:.0} s: {r:?}", t0.elapsed().as_secs_f64());
    for x in &r {
        assert_eq!(n(x, "expected_rows"), 96062, "every olist person: {x}");
    }
    assert_eq!(r[0]["digest"], r[1]["digest"], "topic and gold agree row for row");
    assert_eq!(r[1]["digest"], r[2]["digest"], "gold and Redis agree row for row");
    let stages = r[1]["lifecycle_stages"].as_object().unwrap();
    assert!(stages.len() >= 3, "lifecycle stages are derived from behaviour, not constant: {stages:?}");
    let e = enriched(&case);
    eprintln!("enriched after kill -9: {e}");
    assert_eq!(n(&e, "duplicates"), 0, "no order event enriched twice: {e}");
    assert_eq!(n(&e, "records"), n(&e, "order_events"), "every order event enriched once: {e}");
    assert!(n(&e, "with_profile") > n(&e, "records") / 2, "orders are joined with their profile: {e}");
    assert!(n(&e, "profile_preceded") > n(&e, "records") / 2, "{e}");
    assert_eq!(n(&e, "profile_not_carried"), 0, "every order event whose profile precedes it in event time carries that profile: {e}");
    let live = e;

    // The killed run against an uninterrupted one over the same inputs: `funnel replay c360`
    // rebuilds state, topics, gold and Redis in one pass; every column of every customer
    // must come out the same.
    let consolidated = funnel::c360::C360Topics::new(funnel::topology::names::TopicNames::new("olist", &case.prefix)).consolidated;
    let killed = C360Snapshot::take(&case, &consolidated, &case.prefix).await;
    assert_eq!(killed.gold.len(), 96062);
    case.kill9(c360);
    case.kill9(sinks);
    let t0 = std::time::Instant::now();
    let out = case.run_ok(&["replay", "c360", "--namespace", &case.prefix, "--redis-prefix", &case.prefix]);
    assert!(out.contains("rebuilt"), "{out}");
    eprintln!("replay c360 (uninterrupted rebuild) took {:.0} s", t0.elapsed().as_secs_f64());
    let uninterrupted = C360Snapshot::take(&case, &consolidated, &case.prefix).await;
    assert!(uninterrupted.epoch > killed.epoch, "the replay begins a new epoch");
    killed.assert_same_as(&uninterrupted, "six kill -9 (compared with an uninterrupted replay)");
    // The replay reads the three input topics at its own pace; the runtime's alignment hands
    // the records over in event-time order all the same, so the enriched stream is the live
    // one: per order the same records in the same order, each with the profile it had live.
    let e = enriched(&case);
    eprintln!("enriched after the replay: {e}");
    assert_eq!(n(&e, "duplicates"), 0, "{e}");
    assert_eq!(n(&e, "records"), n(&e, "order_events"), "every order event enriched once in the replay: {e}");
    assert_eq!(n(&e, "profile_not_carried"), 0, "{e}");
    assert_eq!((n(&e, "orders"), n(&e, "with_profile")), (n(&live, "orders"), n(&live, "with_profile")), "live {live}\nreplay {e}");
    assert_eq!(e["sequence_digest"], live["sequence_digest"], "every order's enriched records equal the live run's: live {live}\nreplay {e}");
}
