//! Domain topics from olist CDC (customer 360's inputs), on the real data: every order's latest
//! state in dom.order.created/updated.v1 and every person's profile equal sql/checks, through
//! inserts, updates, deletes and kill -9 of the domain processor.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value as Json;

const CDC_TABLES: &str = "ecommerce.customers,ecommerce.orders,ecommerce.order_items,ecommerce.order_payments,ecommerce.products,ecommerce.order_reviews";

fn domain_args(case: &Case) -> Vec<String> {
    ["run", "domain", "--http-port", "0", "--namespace", &case.prefix, "--cdc-topic-prefix", &case.prefix].iter().map(|s| s.to_string()).collect()
}

fn n(r: &Json, k: &str) -> i64 {
    r.get(k).and_then(Json::as_i64).unwrap_or(-1)
}

async fn wait_domain_equal(case: &Case, timeout: Duration) -> Vec<Json> {
    // Checked once the processor has committed its CDC inputs to their end and its outputs
    // stand still: a check of the olist orders costs a core for a minute.
    let topics = funnel::domain::DomainTopics::new(funnel::topology::names::TopicNames::new(&case.prefix, &case.prefix));
    let inputs = vec![topics.customers.clone(), topics.orders.clone(), topics.order_items.clone(), topics.order_payments.clone(), topics.products.clone(), topics.order_reviews.clone()];
    let group = topics.names.group(funnel::domain::PROCESSOR);
    let mut quiet = vec![topics.profile.clone(), topics.order_created.clone(), topics.order_updated.clone()];
    quiet.extend(inputs.iter().cloned());
    case.wait_checks_equal_when_settled("domain", &["orders", "profiles"], &["--namespace", &case.prefix], timeout, "domain", &[(group, inputs)], &quiet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_topics_equal_the_source_through_changes_and_kill_9() {
    let dir = olist_dir().expect("the real olist files in ../shared/data/olist (acceptance runs on real data)");
    let mut case = Case::new("domain").await;
    case.run_ok(&["seed", "olist", "--dir", dir.to_str().unwrap()]);
    let mut cdc = case.cdc_args();
    cdc.extend(["--cdc-tables".to_string(), CDC_TABLES.to_string()]);
    case.spawn(&cdc, "cdc");
    let mut domain = case.spawn(&domain_args(&case), "domain");

    let r = wait_domain_equal(&case, Duration::from_secs(900)).await;
    assert_eq!(n(&r[0], "expected_rows"), 99440, "every olist order: {}", r[0]);
    assert_eq!(n(&r[0], "orders_created_twice"), 0, "{}", r[0]);

    // Changes of every kind, the domain processor killed three times while they run.
    let pg = case.pg().await;
    // A person with one customer record, so that "most recently changed record" is unambiguous.
    let customer: String = pg
        .query_one(
            "SELECT customer_id FROM ecommerce.customers WHERE customer_unique_id IN \
             (SELECT customer_unique_id FROM ecommerce.customers GROUP BY 1 HAVING count(*) = 1) ORDER BY customer_id LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut rng = funnel::olist::synthetic::Rng::new(5);
    for round in 0..3 {
        let kill_at = 20 + rng.below(60) as usize;
        for i in 0..100 {
            let o = format!("dom-{round}-{i}");
            let sql = match i % 5 {
                0 => format!(
                    "BEGIN; INSERT INTO ecommerce.orders (order_id, customer_id, order_status, order_purchase_timestamp) VALUES ('{o}', '{customer}', 'created', now()); \
                     INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES ('{o}', 1, 'p', 's', 10.{i:02}, 1.00); \
                     INSERT INTO ecommerce.order_payments VALUES ('{o}', 1, 'credit_card', 1, 11.{i:02}); COMMIT;"
                ),
                1 => format!("UPDATE ecommerce.orders SET order_status = 'shipped' WHERE order_id = 'dom-{round}-{}'", i - 1),
                2 => format!("INSERT INTO ecommerce.order_items (order_id, order_item_id, product_id, seller_id, price, freight_value) VALUES ('dom-{round}-{}', 2, 'p', 's', 5.00, 0.50)", i - 2),
                3 => format!("UPDATE ecommerce.customers SET customer_city = 'city {round}-{i}' WHERE customer_id = '{customer}'"),
                // Round 0 deletes its orders; the later rounds' orders stay (the end state must
                // differ from the start, or equality would prove nothing).
                _ if round == 0 => format!("DELETE FROM ecommerce.orders WHERE order_id = 'dom-{round}-{}'", i - 4),
                _ => format!("UPDATE ecommerce.order_payments SET payment_value = payment_value + 1 WHERE order_id = 'dom-{round}-{}'", i - 4),
            };
            pg.batch_execute(&sql).await.unwrap();
            if i == kill_at {
                case.kill9(domain);
                domain = case.spawn(&domain_args(&case), "domain");
            }
        }
    }
    case.wait_cdc_caught_up(Duration::from_secs(120)).await;
    let r = wait_domain_equal(&case, Duration::from_secs(300)).await;
    assert_eq!(n(&r[0], "expected_rows"), 99440 + 40, "{}", r[0]);
    assert_eq!(n(&r[0], "orders_created_twice"), 0, "an order announced as created twice: {}", r[0]);
    eprintln!("domain after kill -9: {} / {}", r[0], r[1]);

    // A change to an order announced before is an update; a deleted order a tombstone there.
    // (Changes within one batch are coalesced: an order created and shipped in the same batch
    // is announced once, as created, already shipped.)
    let updates_before = n(&r[0], "updated_events");
    pg.batch_execute("UPDATE ecommerce.orders SET order_status = 'lost' WHERE order_id = (SELECT min(order_id) FROM ecommerce.orders); DELETE FROM ecommerce.orders WHERE order_id = 'dom-1-0'")
        .await
        .unwrap();
    let r = wait_domain_equal(&case, Duration::from_secs(120)).await;
    assert_eq!(n(&r[0], "expected_rows"), 99440 + 39, "{}", r[0]);
    assert_eq!(n(&r[0], "updated_events"), updates_before + 2, "one update and one tombstone: {}", r[0]);
}

/// Every decoded record of a topic, in a stable order (partitions interleave differently per run).
async fn topic_json(case: &Case, topic: &str) -> Vec<Json> {
    let mut out = case.topic_json(topic).await;
    out.sort_by_key(|j| j.to_string());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_events_produce_consistent_deterministic_domain_events() {
    let case = Case::new("seedev").await;
    let mut runs = vec![];
    for ns in ["a", "b"] {
        let ns = format!("{}{ns}", case.prefix);
        let out = case.run_ok(&["seed", "events", "--customers", "50", "--orders", "200", "--orders-before-profile", "0.2", "--namespace", &ns]);
        assert!(out.contains("produced 50 profiles") && out.contains("200 orders"), "{out}");
        runs.push((topic_json(&case, &format!("{ns}.dom.customer.profile.upsert.v1")).await, topic_json(&case, &format!("{ns}.dom.order.created.v1")).await));
    }
    let (profiles, orders) = &runs[0];
    assert_eq!((profiles.len(), orders.len()), (50, 200));
    assert_eq!(runs[0], runs[1], "the same seed produces the same events");
    let ids: std::collections::HashSet<&str> = profiles.iter().map(|p| p["customer_id"].as_str().unwrap()).collect();
    for o in orders {
        assert!(ids.contains(o["customer_id"]["string"].as_str().or(o["customer_id"].as_str()).unwrap()), "order of an unknown customer: {o}");
        let items: f64 = o["items"].as_array().unwrap().iter().map(|i| i["price"]["double"].as_f64().or(i["price"].as_f64()).unwrap() + i["freight"]["double"].as_f64().or(i["freight"].as_f64()).unwrap()).sum();
        assert!((items - o["item_total"].as_f64().unwrap()).abs() < 0.006, "{o}");
    }
    assert!(case.funnel().args(["seed", "events", "--customers", "0", "--orders", "5"]).output().unwrap().status.code() == Some(1), "orders without customers are refused");
}
