//! `funnel serve`: JSON → Avro through the registry (REST-proxy style), public topics only,
//! all or nothing; read-only SQL bounded in rows and time; credentials on every route.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value as Json};

async fn spawn_serve(case: &mut Case, extra: &[&str]) -> String {
    let port = free_port();
    let mut args: Vec<String> = ["serve", "--port", &port.to_string(), "--namespace", &case.prefix.clone()].iter().map(|s| s.to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    case.spawn(&args, "serve");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(60), "funnel serve", || async { http.get(format!("{base}/health")).send().await.is_ok() }).await;
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_produced_as_registered_avro_all_or_nothing_to_public_topics_only() {
    let mut case = Case::new("serve").await;
    let topic = format!("{}.dom.customer.profile.upsert.v1", case.prefix);
    let registry = funnel::registry::RegistryClient::new(&case.stack.registry);
    funnel::avro::Registered::topic(&registry, &topic, funnel::domain::schemas::PROFILE_KEY, funnel::domain::schemas::PROFILE_VALUE).await.unwrap();
    let internal = format!("_funnel.cdc.state.{}", case.name);
    let specs = [topic.clone(), internal.clone()].map(|name| funnel::kafka::admin::TopicSpec { name, partitions: 1, compact: true });
    funnel::kafka::admin::ensure_topics(&case.stack.brokers, &specs).await.unwrap();
    let base = spawn_serve(&mut case, &[]).await;
    let http = case.http();

    // Every route but /health needs the token: none or a wrong one → 401 with a JSON reason.
    let anonymous = reqwest::Client::new();
    let good = json!({"records": [
        {"key": {"customer_id": "c1"}, "value": {"customer_id": "c1", "first_name": "Ana", "city": "sao paulo", "signup_at": 1_600_000_000_000_000i64, "attributes": {"tier": "gold"}, "source": "http"}},
        {"key": {"customer_id": "c2"}, "value": {"customer_id": "c2", "source": "http"}},
    ]});
    for (method, path) in [("GET", "/".to_string()), ("GET", "/api/customers".into()), ("GET", "/api/sql?q=SELECT%201".into()), ("POST", format!("/topics/{topic}"))] {
        let url = format!("{base}{path}");
        let wrong = anonymous.request(method.parse().unwrap(), &url).bearer_auth("a-wrong-token-that-is-long-enough").json(&good).send().await.unwrap();
        json_error(wrong, 401, &format!("{method} {path} with a wrong token")).await;
        let none = anonymous.request(method.parse().unwrap(), &url).json(&good).send().await.unwrap();
        assert_eq!(none.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Basic realm=\"funnel\", charset=\"UTF-8\""));
        let message = json_error(none, 401, &format!("{method} {path} without credentials")).await;
        assert!(!message.contains(&case.token), "the token leaked into an error");
    }
    assert_eq!(anonymous.get(format!("{base}/health")).send().await.unwrap().status(), 200);
    // HTTP Basic with the user funnel and the token as password works like the bearer token.
    let basic = anonymous.get(format!("{base}/api/sql")).basic_auth("funnel", Some(&case.token)).query(&[("q", "SELECT 1 AS one")]).send().await.unwrap();
    assert_eq!(basic.status(), 200);
    assert!(!case.log("serve").contains(&case.token), "the token reached the log");

    // Two good records: produced, readable with the registered schema, defaults filled in.
    let resp = http.post(format!("{base}/topics/{topic}")).json(&good).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // A bad record refuses the whole request, naming the record: nothing of it is produced.
    let bad = json!({"records": [
        {"key": {"customer_id": "c3"}, "value": {"customer_id": "c3", "source": "http"}},
        {"key": {"customer_id": "c4"}, "value": {"customer_id": 4}},
    ]});
    let message = json_error(http.post(format!("{base}/topics/{topic}")).json(&bad).send().await.unwrap(), 422, "a record of the wrong type").await;
    assert!(message.contains("record 1"), "{message}");
    // A keyless record for a compacted topic is refused.
    let keyless = json!({"records": [{"key": {"customer_id": "c5"}, "value": {"customer_id": "c5", "source": "http"}}, {"value": {"customer_id": "c6", "source": "http"}}]});
    let message = json_error(http.post(format!("{base}/topics/{topic}")).json(&keyless).send().await.unwrap(), 422, "a keyless record").await;
    assert!(message.contains("record 1 has no key") && message.contains("compacted"), "{message}");
    // The last record passes the schema but the broker can never take it (larger than
    // message.max.bytes): the transaction is aborted and the first two are not committed either.
    let huge = "x".repeat(2_000_000);
    let too_large = json!({"records": [
        {"key": {"customer_id": "c7"}, "value": {"customer_id": "c7", "source": "http"}},
        {"key": {"customer_id": "c8"}, "value": {"customer_id": "c8", "source": "http"}},
        {"key": {"customer_id": "c9"}, "value": {"customer_id": "c9", "first_name": huge, "source": "http"}},
    ]});
    let message = json_error(http.post(format!("{base}/topics/{topic}")).json(&too_large).send().await.unwrap(), 413, "a record too large for the broker").await;
    assert!(message.contains("nothing produced") && message.contains("record 2"), "{message}");
    // The failed request leaves no broken transaction behind: the next one is produced.
    let after = json!({"records": [{"key": {"customer_id": "c10"}, "value": {"customer_id": "c10", "source": "http"}}]});
    let resp = http.post(format!("{base}/topics/{topic}")).json(&after).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // Internal topics are refused whatever the body: a forged CDC progress record would make CDC skip data.
    let state = json!({"records": [{"key": {"connector": "x"}, "value": {"connector": "x"}}]});
    for t in [internal.as_str(), "no.such.topic", &format!("{}.dom.customer.consolidated.v1", case.prefix)] {
        let message = json_error(http.post(format!("{base}/topics/{t}")).json(&state).send().await.unwrap(), 403, t).await;
        assert!(message.contains("not a public input") && message.contains(&topic), "{message}");
    }
    // Malformed bodies: JSON reasons, never the framework's plain text.
    let post = |body: &'static str, content_type: &'static str| http.post(format!("{base}/topics/{topic}")).header("content-type", content_type).body(body).send();
    json_error(post("{\"records\": [", "application/json").await.unwrap(), 400, "malformed JSON").await;
    json_error(post("{}", "text/plain").await.unwrap(), 415, "not JSON").await;
    json_error(post("{\"records\": {\"key\": 1}}", "application/json").await.unwrap(), 422, "records not a list").await;
    json_error(post("{\"records\": []}", "application/json").await.unwrap(), 422, "no records").await;
    let oversized = format!("{{\"records\": [{{\"value\": \"{}\"}}]}}", "y".repeat(9 * 1024 * 1024));
    // Its own client: the server answers 413 without reading the whole body and closes that
    // connection, which a pooled client would otherwise reuse for the next request.
    let resp = case.http().post(format!("{base}/topics/{topic}")).header("content-type", "application/json").body(oversized).send().await.unwrap();
    json_error(resp, 413, "a body over the limit").await;
    json_error(http.get(format!("{base}/no/such/route")).send().await.unwrap(), 404, "an unknown route").await;
    json_error(http.put(format!("{base}/topics/{topic}")).send().await.unwrap(), 405, "a wrong method").await;

    let records = case.topic_json(&topic).await;
    let ids: Vec<&str> = records.iter().map(|r| r["customer_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c1", "c2", "c10"], "only the good requests' records are committed (read_committed)");
    let first = &records[0];
    assert_eq!((first["customer_id"].clone(), first["city"].clone(), first["attributes"]["tier"].clone()), (json!("c1"), json!("sao paulo"), json!("gold")), "{first}");
    assert!(case.topic_json(&internal).await.is_empty(), "nothing reached the internal topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_read_only_bounded_in_rows_and_time_and_survives_a_corrupt_table() {
    let mut case = Case::new("servesql").await;
    // One readable (empty) table and one whose log is garbage.
    let lake = case.lake.path().to_path_buf();
    let schema = std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(vec![deltalake::arrow::datatypes::Field::new("id", deltalake::arrow::datatypes::DataType::Int64, true)]));
    let url = funnel::lake::location::Lake::local(&lake).unwrap().table("gold", "fine");
    funnel::lake::table::open_or_create(&url, &schema, "fine", "test", 10).await.unwrap();
    std::fs::create_dir_all(lake.join("gold/broken/_delta_log")).unwrap();
    std::fs::write(lake.join("gold/broken/_delta_log/00000000000000000000.json"), "this is not a delta log\n").unwrap();
    let base = spawn_serve(&mut case, &["--sql-max-rows", "5", "--sql-timeout-secs", "1", "--sql-catalog-secs", "0"]).await;
    let http = case.http();
    let sql = |q: &str| http.get(format!("{base}/api/sql")).query(&[("q", q)]).send();

    let r: Json = sql("SELECT 1 + 1 AS two").await.unwrap().json().await.unwrap();
    assert_eq!((r["rows"].clone(), r["truncated"].clone()), (json!([{"two": 2}]), json!(false)), "{r}");
    // The corrupt table is reported, the others answer.
    let r: Json = sql("SELECT count(*) AS n FROM gold_fine").await.unwrap().json().await.unwrap();
    assert_eq!(r["rows"], json!([{"n": 0}]), "{r}");
    assert_eq!(r["skipped_tables"].as_array().map(|a| a.iter().map(|s| s["table"].clone()).collect::<Vec<_>>()), Some(vec![json!("gold_broken")]), "{r}");
    // More rows than the limit: cut, and the answer says so.
    let r: Json = sql("SELECT unnest(range(0, 100)) AS n").await.unwrap().json().await.unwrap();
    assert_eq!((r["row_count"].clone(), r["truncated"].clone(), r["row_limit"].clone()), (json!(5), json!(true), json!(5)), "{r}");
    assert_eq!(r["rows"].as_array().unwrap().len(), 5, "{r}");
    // A query that would run for minutes is stopped at the time limit; the server answers the next.
    let t0 = Instant::now();
    let slow = "SELECT count(*) FROM (SELECT unnest(range(0, 200000)) AS a) x CROSS JOIN (SELECT unnest(range(0, 200000)) AS b) y WHERE a + b < 0";
    let message = json_error(sql(slow).await.unwrap(), 408, "a slow query").await;
    assert!(message.contains("time limit"), "{message}");
    eprintln!("slow query answered 408 after {:?} (limit 1 s)", t0.elapsed());
    assert_eq!(sql("SELECT 3 AS three").await.unwrap().status(), 200);
    // Anything but a query is refused.
    for q in ["CREATE TABLE t AS SELECT 1", "DROP TABLE x", "SET datafusion.execution.batch_size = 1", "SELECT * FROM no_such_table", "INSERT INTO gold_fine VALUES (1)"] {
        json_error(sql(q).await.unwrap(), 400, q).await;
    }
    json_error(http.get(format!("{base}/api/sql")).send().await.unwrap(), 400, "no query").await;
}
