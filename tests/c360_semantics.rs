//! Stream-table semantics of the c360 SQL, event by event, under the default definitions
//! (ksqlDB: an order joins the profile as of its arrival; a later profile change alters later
//! orders only) and under the per-query options beyond ksqlDB (REEMIT_ON_TABLE_CHANGE re-emits
//! the customer's orders; NULLS = 'ignore' keeps the previous value of a null column). Then
//! `funnel replay c360` rebuilds topics, gold and Redis equal to the live run.

mod common;

use std::time::Duration;

use common::*;
use funnel::avro::Registered;
use funnel::c360::C360Topics;
use funnel::domain::events::{key, Order, Profile};
use funnel::domain::schemas as s;
use funnel::kafka::admin::ensure_topics;
use funnel::kafka::batch_producer::{BatchProducer, Delivery, OutRecord};
use funnel::registry::RegistryClient;
use funnel::topology::names::TopicNames;
use serde_json::Value as Json;

/// A field of a decoded record (nullable unions appear either wrapped or plain).
fn text(v: &Json, f: &str) -> Option<String> {
    let x = &v[f];
    x.as_str().or_else(|| x.get("string").and_then(Json::as_str)).map(str::to_string)
}

struct Producer {
    topics: C360Topics,
    profile: (Registered, Registered),
    order: (Registered, Registered),
    out: BatchProducer,
}

impl Producer {
    async fn new(case: &Case, ns: &str) -> Producer {
        let registry = RegistryClient::new(&case.stack.registry);
        let topics = C360Topics::new(TopicNames::new("olist", ns));
        // Created here, not left to the processors spawned next: the test produces to the
        // inputs and reads the outputs before those processes may have got that far.
        ensure_topics(&case.stack.brokers, &[topics.inputs(), topics.outputs()].concat()).await.unwrap();
        let profile = Registered::topic(&registry, &topics.profile, s::PROFILE_KEY, s::PROFILE_VALUE).await.unwrap();
        let order = Registered::topic(&registry, &topics.order_created, s::ORDER_KEY, s::ORDER_VALUE).await.unwrap();
        Registered::topic(&registry, &topics.order_updated, s::ORDER_KEY, s::ORDER_VALUE).await.unwrap();
        let out = BatchProducer::new(&case.stack.brokers, "unused", Delivery::AtLeastOnce).await.unwrap();
        Producer { topics, profile, order, out }
    }

    async fn profile(&self, id: &str, city: &str, email: Option<&str>) {
        let p = Profile { customer_id: id.into(), city: Some(city.into()), email: email.map(String::from), source: "test".into(), ..Default::default() };
        let rec = OutRecord { partition: None, topic: self.topics.profile.clone(), key: self.profile.0.encode(key("customer_id", id)).unwrap(), value: Some(self.profile.1.encode(p.to_value()).unwrap()) };
        self.out.send(&[rec]).await.unwrap();
    }

    async fn order(&self, id: &str, customer: &str, at_days: i64, payment: f64) {
        self.order_on(&self.topics.order_created, id, customer, at_days, payment).await
    }

    async fn order_on(&self, topic: &str, id: &str, customer: &str, at_days: i64, payment: f64) {
        let o = Order {
            order_id: id.into(),
            customer_id: Some(customer.into()),
            status: Some("delivered".into()),
            times: [Some(1_500_000_000_000_000 + at_days * 86_400_000_000), None, None, None, None],
            item_total: payment,
            payment_total: Some(payment),
            source: "test".into(),
            ..Default::default()
        };
        let rec = OutRecord { partition: None, topic: topic.to_string(), key: self.order.0.encode(key("order_id", id)).unwrap(), value: Some(self.order.1.encode(o.to_value()).unwrap()) };
        self.out.send(&[rec]).await.unwrap();
    }
}

/// Wait until `topic` holds `n` records; return them.
async fn wait_records(case: &Case, topic: &str, n: usize, log: &str) -> Vec<Json> {
    for _ in 0..240 {
        let recs = case.topic_json(topic).await;
        if recs.len() >= n {
            assert_eq!(recs.len(), n, "{topic}: more records than expected: {recs:?}");
            return recs;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{topic}: fewer than {n} records after 60 s: {:?}\n{}", case.topic_json(topic).await, case.log(log));
}

/// The enriched rows as (order_id, event_type, city, email).
fn rows(recs: &[Json]) -> Vec<(String, String, Option<String>, Option<String>)> {
    recs.iter().map(|r| (text(r, "order_id").unwrap(), text(r, "event_type").unwrap(), text(r, "city"), text(r, "email"))).collect()
}

fn sorted(mut v: Vec<(String, String, Option<String>, Option<String>)>) -> Vec<(String, String, Option<String>, Option<String>)> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_table_semantics_options_and_replay() {
    let mut case = Case::new("c360sem").await;
    let (a, b) = (format!("{}a", case.prefix), format!("{}b", case.prefix));
    // b runs the same SQL with the two options beyond ksqlDB switched on.
    let sql_b = case.lake.path().join("sql_b");
    std::fs::create_dir_all(&sql_b).unwrap();
    for (file, text) in funnel::c360::definitions::BUILT_IN {
        let text = text.replace("REEMIT_ON_TABLE_CHANGE = false", "REEMIT_ON_TABLE_CHANGE = true").replace("NULLS = 'keep'", "NULLS = 'ignore'");
        std::fs::write(sql_b.join(file), text).unwrap();
    }
    let run = |ns: &str, processors: &[&str], extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.extend(processors.iter().map(|p| p.to_string()));
        v.extend(["--http-port", "0", "--namespace", ns, "--redis-prefix", ns, "--c360-batch-ms", "50"].iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (pa, pb) = (Producer::new(&case, &a).await, Producer::new(&case, &b).await);
    let live_a = case.spawn(&run(&a, &["c360", "lake", "cache"], &[]), "a");
    case.spawn(&run(&b, &["c360"], &["--c360-sql-dir", sql_b.to_str().unwrap()]), "b");
    let (ea, eb) = (pa.topics.enriched.clone(), pb.topics.enriched.clone());

    // Each step is waited for through the consolidated topic (one record per step and
    // customer), so every event is applied before the next is produced.
    let (ca, cb) = (pa.topics.consolidated.clone(), pb.topics.consolidated.clone());
    let step = |n: usize| {
        let (case, ca, cb) = (&case, ca.clone(), cb.clone());
        async move {
            wait_records(case, &ca, n, "a").await;
            wait_records(case, &cb, n, "b").await;
        }
    };
    // 1. An order before any profile: enriched with nulls (left join).
    for p in [&pa, &pb] {
        p.order("o1", "c1", 0, 100.0).await;
    }
    step(1).await;
    // 2. The profile arrives: ksqlDB semantics change nothing already emitted; b re-emits o1.
    for p in [&pa, &pb] {
        p.profile("c1", "Recife", Some("c1@example.com")).await;
    }
    step(2).await;
    // 3. A later order joins the profile.
    for p in [&pa, &pb] {
        p.order("o2", "c1", 10, 50.0).await;
    }
    step(3).await;
    // 4. A profile update with a null email; 5. an order after it.
    for p in [&pa, &pb] {
        p.profile("c1", "Natal", None).await;
    }
    step(4).await;
    for p in [&pa, &pb] {
        p.order("o3", "c1", 20, 25.0).await;
    }
    step(5).await;
    let got_a = rows(&wait_records(&case, &ea, 3, "a").await);
    let got_b = rows(&wait_records(&case, &eb, 6, "b").await);
    let r = |o: &str, e: &str, city: Option<&str>, email: Option<&str>| (o.to_string(), e.to_string(), city.map(String::from), email.map(String::from));
    assert_eq!(
        sorted(got_a),
        sorted(vec![r("o1", "created", None, None), r("o2", "created", Some("Recife"), Some("c1@example.com")), r("o3", "created", Some("Natal"), None)]),
        "default: as of arrival, never retroactive; NULLS = 'keep' takes the null email"
    );
    assert_eq!(
        sorted(got_b),
        sorted(vec![
            r("o1", "created", None, None),
            r("o1", "profile-changed", Some("Recife"), Some("c1@example.com")),
            r("o2", "created", Some("Recife"), Some("c1@example.com")),
            r("o1", "profile-changed", Some("Natal"), Some("c1@example.com")),
            r("o2", "profile-changed", Some("Natal"), Some("c1@example.com")),
            r("o3", "created", Some("Natal"), Some("c1@example.com")),
        ]),
        "REEMIT_ON_TABLE_CHANGE re-emits the customer's orders; NULLS = 'ignore' keeps the email"
    );

    // 6. An order's update arrives before its creation (the two topics are consumed at their
    // own pace; a replay sees this all the time): the state keeps the update, and the late
    // creation is still an event — enriched, counted for the customer.
    for p in [&pa, &pb] {
        p.order_on(&p.topics.order_updated, "o4", "c2", 30, 70.0).await;
    }
    step(6).await;
    for p in [&pa, &pb] {
        p.order("o4", "c2", 30, 60.0).await;
    }
    step(7).await;
    for (e, n) in [(&ea, 5), (&eb, 8)] {
        let o4: Vec<_> = rows(&wait_records(&case, e, n, "a").await).into_iter().filter(|r| r.0 == "o4").collect();
        assert_eq!(sorted(o4), sorted(vec![r("o4", "created", None, None), r("o4", "updated", None, None)]), "{e}: the late creation is enriched too");
    }
    let c2 = case.topic_json(&ca).await.into_iter().filter(|r| r["customer_id"] == "c2").last().expect("c2 consolidated");
    assert_eq!((c2["applied_events"].as_i64(), c2["order_count"].as_i64(), c2["revenue"].as_f64()), (Some(2), Some(1), Some(70.0)), "the update's state, both events counted: {c2}");

    // Volume for the replay, then the live view of namespace a.
    let out = case.run_ok(&["seed", "events", "--customers", "150", "--orders", "600", "--orders-before-profile", "0.2", "--namespace", &a]);
    assert!(out.contains("produced 150 profiles"), "{out}");
    let gold_rows = || case.run_ok(&["sql", "--format", "json", "SELECT * FROM gold_c360 ORDER BY customer_id"]);
    let mut live_gold = String::new();
    for _ in 0..240 {
        live_gold = gold_rows();
        if json_lines(&live_gold).len() == 152 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the live run settle (lake and cache commit on their own cadence), then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let live = C360Snapshot::take(&case, &pa.topics.consolidated, &a).await;
    assert_eq!(live.gold.len(), 152, "every customer in gold: {}", live_gold.len());
    assert_eq!(live.redis.len(), 152);
    let c1 = &live.gold["c1"];
    assert_eq!((c1["order_count"].as_i64(), c1["revenue"].as_f64(), c1["city"].as_str()), (Some(3), Some(175.0), Some("Natal")), "{c1}");
    let o4 = json_lines(&case.run_ok(&["sql", "--format", "json", "SELECT event_type, payment_total FROM silver_c360_order WHERE order_id = 'o4'"]));
    assert_eq!(o4.len(), 1, "{o4:?}");
    assert_eq!(o4[0]["payment_total"].as_f64(), Some(70.0), "silver keeps the update's image after the late creation: {o4:?}");
    case.kill9(live_a);

    let out = case.run_ok(&["replay", "c360", "--namespace", &a, "--redis-prefix", &a]);
    assert!(out.contains("rebuilt"), "{out}");
    let replayed = C360Snapshot::take(&case, &pa.topics.consolidated, &a).await;
    assert!(replayed.epoch > live.epoch, "the replay begins a new epoch ({} > {})", replayed.epoch, live.epoch);
    replayed.assert_same_as(&live, "the replay");
}
