//! `funnel serve`: JSON → Avro through the registry (REST-proxy style) and read-only SQL.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value as Json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_produced_as_registered_avro_and_sql_is_read_only() {
    let mut case = Case::new("serve").await;
    let topic = format!("{}.dom.customer.profile.upsert.v1", case.prefix);
    let registry = funnel::registry::RegistryClient::new(&case.stack.registry);
    funnel::avro::Registered::topic(&registry, &topic, funnel::domain::schemas::PROFILE_KEY, funnel::domain::schemas::PROFILE_VALUE).await.unwrap();
    funnel::kafka::admin::ensure_topics(&case.stack.brokers, &[funnel::kafka::admin::TopicSpec { name: topic.clone(), partitions: 1, compact: true }]).await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    case.spawn(&["serve".to_string(), "--port".to_string(), port.to_string()], "serve");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(60), "funnel serve", || async { http.get(format!("{base}/health")).send().await.is_ok() }).await;

    // Two good records: produced, readable with the registered schema, defaults filled in.
    let good = json!({"records": [
        {"key": {"customer_id": "c1"}, "value": {"customer_id": "c1", "first_name": "Ana", "city": "sao paulo", "signup_at": 1_600_000_000_000_000i64, "attributes": {"tier": "gold"}, "source": "http"}},
        {"key": {"customer_id": "c2"}, "value": {"customer_id": "c2", "source": "http"}},
    ]});
    let resp = http.post(format!("{base}/topics/{topic}")).json(&good).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // A bad record refuses the whole request, naming the record: nothing of it is produced.
    let bad = json!({"records": [
        {"key": {"customer_id": "c3"}, "value": {"customer_id": "c3", "source": "http"}},
        {"key": {"customer_id": "c4"}, "value": {"customer_id": 4}},
    ]});
    let resp = http.post(format!("{base}/topics/{topic}")).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let err: Json = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("record 1"), "{err}");
    let resp = http.post(format!("{base}/topics/no.such.topic")).json(&good).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    let records = case.topic_json(&topic).await;
    assert_eq!(records.len(), 2, "only the good request's records");
    let first = &records[0];
    assert_eq!((first["customer_id"].clone(), first["city"].clone(), first["attributes"]["tier"].clone()), (json!("c1"), json!("sao paulo"), json!("gold")), "{first}");

    // SQL: queries answer, anything else is refused.
    let r: Json = http.get(format!("{base}/api/sql")).query(&[("q", "SELECT 1 + 1 AS two")]).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["rows"], json!([{"two": 2}]), "{r}");
    for q in ["CREATE TABLE t AS SELECT 1", "DROP TABLE x", "SET datafusion.execution.batch_size = 1", "SELECT * FROM no_such_table"] {
        let resp = http.get(format!("{base}/api/sql")).query(&[("q", q)]).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{q} must be refused");
    }
}
