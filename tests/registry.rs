//! The Schema Registry speaks Confluent's REST API: compatible evolutions are accepted,
//! incompatible ones refused with 409, and state survives a registry restart.

mod common;

use std::time::Duration;

use common::Stack;
use funnel::registry::client::RegistryError;
use funnel::registry::RegistryClient;

fn schema(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Lead","namespace":"test","fields":[{{"name":"id","type":"string"}}{fields}]}}"#)
}

#[tokio::test]
async fn backward_compatibility_is_enforced_with_409() {
    let stack = Stack::from_env();
    let reg = RegistryClient::new(&stack.registry);
    let subject = format!("registry-test-{}-value", std::process::id());
    let v1 = reg.register(&subject, &schema("")).await.unwrap();
    assert_eq!(reg.register(&subject, &schema("")).await.unwrap(), v1, "same schema, same id");
    // Adding a field with a default: new readers can read old data.
    let v2 = reg.register(&subject, &schema(r#",{"name":"channel","type":"string","default":"Unknown"}"#)).await.unwrap();
    assert_ne!(v1, v2);
    // Adding a field without a default is not backward compatible.
    match reg.register(&subject, &schema(r#",{"name":"channel","type":"string","default":"Unknown"},{"name":"score","type":"int"}"#)).await {
        Err(RegistryError::Incompatible { message, .. }) => assert!(message.contains("incompatible"), "{message}"),
        other => panic!("expected 409, got {other:?}"),
    }
    // Raw HTTP: the status code itself, as other clients see it.
    let resp = reqwest::Client::new()
        .post(format!("{}/subjects/{subject}/versions", stack.registry))
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .body(serde_json::json!({"schema": schema(r#",{"name":"score","type":"int"}"#)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let resp = reqwest::Client::new().post(format!("{}/subjects/{subject}/versions", stack.registry)).body("{\"schema\": \"{not json\"}").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 422, "invalid schema is refused, not stored");
}

#[tokio::test]
async fn a_restarted_registry_rebuilds_state_from_the_schemas_topic() {
    let stack = Stack::from_env();
    let reg = RegistryClient::new(&stack.registry);
    let subject = format!("registry-restart-{}-value", std::process::id());
    let id = reg.register(&subject, &schema("")).await.unwrap();
    // A second registry process on another port reads the same `_schemas` topic.
    let port = 18000 + (std::process::id() % 900) as u16;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_funnel"))
        .args(["registry", "--port", &port.to_string(), "--brokers", &stack.brokers])
        .spawn()
        .unwrap();
    let other = RegistryClient::new(&format!("http://127.0.0.1:{port}"));
    let mut found = None;
    for _ in 0..100 {
        if let Ok(s) = other.subjects().await {
            found = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let same = other.schema_by_id(id).await.map(|s| s.canonical_form()).ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(found.expect("second registry up").contains(&subject));
    assert_eq!(same, reg.schema_by_id(id).await.map(|s| s.canonical_form()).ok());
}
