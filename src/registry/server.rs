//! `funnel registry`: the subset of the Confluent Schema Registry REST API that producers,
//! consumers and tools use, with schemas kept in a compacted `_schemas` topic as Confluent's
//! registry keeps them (so a restart rebuilds state from the broker).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apache_avro::Schema;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, TopicPartitionList};
use serde_json::{json, Value as Json};
use tokio::sync::{Mutex, RwLock};

use super::compatibility::{self, Level};
use crate::kafka::admin::{ensure_topics, TopicSpec};
use crate::kafka::{client_config, producer_config};

pub const SCHEMAS_TOPIC: &str = "_schemas";
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Default)]
struct Store {
    /// Schema text by global id.
    by_id: BTreeMap<u32, String>,
    /// Versions of each subject: (version, id, deleted).
    subjects: BTreeMap<String, Vec<(u32, u32, bool)>>,
    global: Option<Level>,
    per_subject: HashMap<String, Level>,
}

impl Store {
    fn level(&self, subject: &str) -> Level {
        self.per_subject.get(subject).copied().or(self.global).unwrap_or(Level::Backward)
    }
    /// Same schema = same JSON once parsed (whitespace and key order do not matter).
    fn id_of(&self, schema: &str) -> Option<u32> {
        let want: Json = serde_json::from_str(schema).ok()?;
        self.by_id.iter().find(|(_, s)| serde_json::from_str::<Json>(s).ok().as_ref() == Some(&want)).map(|(id, _)| *id)
    }
    fn live_versions(&self, subject: &str) -> Vec<(u32, u32)> {
        self.subjects.get(subject).map(|v| v.iter().filter(|x| !x.2).map(|x| (x.0, x.1)).collect()).unwrap_or_default()
    }
    fn apply(&mut self, key: &Json, value: Option<&Json>) {
        match key.get("keytype").and_then(Json::as_str) {
            Some("SCHEMA") => {
                let Some(v) = value else { return };
                let (Some(subject), Some(version), Some(id), Some(schema)) = (
                    v.get("subject").and_then(Json::as_str),
                    v.get("version").and_then(Json::as_u64),
                    v.get("id").and_then(Json::as_u64),
                    v.get("schema").and_then(Json::as_str),
                ) else {
                    return;
                };
                let deleted = v.get("deleted").and_then(Json::as_bool).unwrap_or(false);
                self.by_id.insert(id as u32, schema.to_string());
                let versions = self.subjects.entry(subject.to_string()).or_default();
                versions.retain(|x| x.0 != version as u32);
                versions.push((version as u32, id as u32, deleted));
                versions.sort();
            }
            Some("CONFIG") => {
                let level = value.and_then(|v| v.get("compatibilityLevel")).and_then(Json::as_str).and_then(Level::parse);
                match (key.get("subject").and_then(Json::as_str), level) {
                    (Some(s), Some(l)) => {
                        self.per_subject.insert(s.to_string(), l);
                    }
                    (None, l) => self.global = l,
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

struct Registry {
    store: RwLock<Store>,
    /// Serialises writes: produce to `_schemas`, then apply.
    write_lock: Mutex<()>,
    producer: FutureProducer,
    /// The schemas topic.
    topic: String,
}

type Shared = Arc<Registry>;

fn reply(status: StatusCode, body: Json) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}
fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    reply(status, json!({"error_code": code, "message": message.into()}))
}

/// Load the schemas topic (`_schemas` unless `topic` says otherwise, like Confluent's
/// `kafkastore.topic`) and serve the REST API until the process is stopped.
pub async fn serve(brokers: &str, port: u16, topic: &str) -> Result<()> {
    ensure_topics(brokers, &[TopicSpec { name: topic.into(), partitions: 1, compact: true }]).await?;
    let store = load(brokers, topic).with_context(|| format!("loading {topic}"))?;
    tracing::info!(schemas = store.by_id.len(), subjects = store.subjects.len(), "registry state loaded from {topic}");
    let producer: FutureProducer = producer_config(brokers, None).create()?;
    let reg = Arc::new(Registry { store: RwLock::new(store), write_lock: Mutex::new(()), producer, topic: topic.to_string() });
    let app = router(reg);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("binding 127.0.0.1:{port}"))?;
    tracing::info!(port, "schema registry listening");
    axum::serve(listener, app).with_graceful_shutdown(crate::runtime::shutdown::signal()).await?;
    Ok(())
}

fn router(reg: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { reply(StatusCode::OK, json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(list_versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
        .route("/schemas/ids/{id}", get(get_by_id))
        .route("/config", get(get_global_config).put(put_global_config))
        .route("/config/{subject}", get(get_subject_config).put(put_subject_config))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(check_compatibility))
        .with_state(reg)
}

fn load(brokers: &str, topic: &str) -> Result<Store> {
    let consumer: BaseConsumer = client_config(brokers).set("group.id", "funnel-registry-loader").set("enable.auto.commit", "false").set("auto.offset.reset", "earliest").create()?;
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    let mut store = Store::default();
    if high == 0 {
        return Ok(store);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, crate::kafka::FROM_START)?;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("timed out reading {topic} up to offset {high}");
        }
        let Some(msg) = consumer.poll(Duration::from_millis(500)) else { continue };
        let msg = msg?;
        if let Some(key) = msg.key().and_then(|k| serde_json::from_slice::<Json>(k).ok()) {
            let value = msg.payload().and_then(|p| serde_json::from_slice::<Json>(p).ok());
            store.apply(&key, value.as_ref());
        }
        if msg.offset() + 1 >= high {
            return Ok(store);
        }
    }
}

impl Registry {
    async fn persist(&self, key: Json, value: Json) -> Result<(), Response> {
        let k = key.to_string();
        let v = value.to_string();
        self.producer
            .send(FutureRecord::to(&self.topic).key(&k).payload(&v), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| error(StatusCode::INTERNAL_SERVER_ERROR, 50001, format!("cannot write to {}: {e}", self.topic)))?;
        self.store.write().await.apply(&key, Some(&value));
        Ok(())
    }
}

/// Parse a request body regardless of its content type (clients send the vnd type).
fn body_json(body: &Bytes) -> Result<Json, Response> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, 42203, format!("invalid JSON body: {e}")))
}

fn parse_avro(body: &Json) -> Result<(String, Schema), Response> {
    if let Some(t) = body.get("schemaType").and_then(Json::as_str) {
        if t != "AVRO" {
            return Err(error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("schemaType {t} is not supported by this registry (AVRO only)")));
        }
    }
    let Some(text) = body.get("schema").and_then(Json::as_str) else {
        return Err(error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "body needs a \"schema\" string"));
    };
    let schema = Schema::parse_str(text).map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, 42201, format!("invalid Avro schema: {e}")))?;
    Ok((text.to_string(), schema))
}

async fn list_subjects(State(reg): State<Shared>) -> Response {
    let store = reg.store.read().await;
    let subjects: Vec<&String> = store.subjects.iter().filter(|(_, v)| v.iter().any(|x| !x.2)).map(|(s, _)| s).collect();
    reply(StatusCode::OK, json!(subjects))
}

async fn list_versions(State(reg): State<Shared>, Path(subject): Path<String>) -> Response {
    let versions: Vec<u32> = reg.store.read().await.live_versions(&subject).into_iter().map(|x| x.0).collect();
    if versions.is_empty() {
        return error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."));
    }
    reply(StatusCode::OK, json!(versions))
}

fn resolve_version(store: &Store, subject: &str, version: &str) -> Result<(u32, u32), Response> {
    let versions = store.live_versions(subject);
    if versions.is_empty() {
        return Err(error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found.")));
    }
    let found = if version == "latest" || version == "-1" {
        versions.last().copied()
    } else {
        let v: u32 = version.parse().map_err(|_| error(StatusCode::UNPROCESSABLE_ENTITY, 42202, format!("invalid version {version}")))?;
        versions.iter().find(|x| x.0 == v).copied()
    };
    found.ok_or_else(|| error(StatusCode::NOT_FOUND, 40402, format!("Version {version} not found.")))
}

async fn get_version(State(reg): State<Shared>, Path((subject, version)): Path<(String, String)>) -> Response {
    let store = reg.store.read().await;
    match resolve_version(&store, &subject, &version) {
        Ok((v, id)) => reply(StatusCode::OK, json!({"subject": subject, "version": v, "id": id, "schema": store.by_id[&id]})),
        Err(r) => r,
    }
}

async fn get_version_schema(State(reg): State<Shared>, Path((subject, version)): Path<(String, String)>) -> Response {
    let store = reg.store.read().await;
    match resolve_version(&store, &subject, &version) {
        Ok((_, id)) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], store.by_id[&id].clone()).into_response(),
        Err(r) => r,
    }
}

async fn get_by_id(State(reg): State<Shared>, Path(id): Path<u32>) -> Response {
    match reg.store.read().await.by_id.get(&id) {
        Some(s) => reply(StatusCode::OK, json!({"schema": s})),
        None => error(StatusCode::NOT_FOUND, 40403, format!("Schema {id} not found")),
    }
}

async fn lookup(State(reg): State<Shared>, Path(subject): Path<String>, body: Bytes) -> Response {
    let body = match body_json(&body).and_then(|b| parse_avro(&b)) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = reg.store.read().await;
    let versions = store.live_versions(&subject);
    if versions.is_empty() {
        return error(StatusCode::NOT_FOUND, 40401, format!("Subject '{subject}' not found."));
    }
    match store.id_of(&body.0).and_then(|id| versions.iter().find(|x| x.1 == id)) {
        Some((v, id)) => reply(StatusCode::OK, json!({"subject": subject, "version": v, "id": id, "schema": store.by_id[id]})),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn register(State(reg): State<Shared>, Path(subject): Path<String>, body: Bytes) -> Response {
    let (text, schema) = match body_json(&body).and_then(|b| parse_avro(&b)) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let _guard = reg.write_lock.lock().await;
    let (id, next_version) = {
        let store = reg.store.read().await;
        let versions = store.live_versions(&subject);
        let existing_id = store.id_of(&text);
        if let Some(id) = existing_id {
            if versions.iter().any(|x| x.1 == id) {
                return reply(StatusCode::OK, json!({"id": id}));
            }
        }
        let existing: Vec<Schema> = versions.iter().filter_map(|(_, id)| Schema::parse_str(&store.by_id[id]).ok()).collect();
        let reasons = compatibility::check(store.level(&subject), &schema, &existing);
        if !reasons.is_empty() {
            tracing::warn!(subject, ?reasons, "incompatible schema refused");
            return error(
                StatusCode::CONFLICT,
                409,
                format!("Schema being registered is incompatible with an earlier schema for subject \"{subject}\" ({} compatibility): {}", store.level(&subject).as_str(), reasons.join("; ")),
            );
        }
        let id = existing_id.unwrap_or_else(|| store.by_id.keys().next_back().map(|x| x + 1).unwrap_or(1));
        let next_version = store.subjects.get(&subject).and_then(|v| v.iter().map(|x| x.0).max()).unwrap_or(0) + 1;
        (id, next_version)
    };
    let key = json!({"keytype": "SCHEMA", "subject": subject, "version": next_version, "magic": 1});
    let value = json!({"subject": subject, "version": next_version, "id": id, "schema": text, "deleted": false});
    if let Err(r) = reg.persist(key, value).await {
        return r;
    }
    tracing::info!(subject, id, version = next_version, "schema registered");
    reply(StatusCode::OK, json!({"id": id}))
}

async fn get_global_config(State(reg): State<Shared>) -> Response {
    let level = reg.store.read().await.global.unwrap_or(Level::Backward);
    reply(StatusCode::OK, json!({"compatibilityLevel": level.as_str()}))
}

async fn get_subject_config(State(reg): State<Shared>, Path(subject): Path<String>) -> Response {
    let level = reg.store.read().await.level(&subject);
    reply(StatusCode::OK, json!({"compatibilityLevel": level.as_str()}))
}

async fn put_config(reg: Shared, subject: Option<String>, body: Bytes) -> Response {
    let body = match body_json(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(level) = body.get("compatibility").and_then(Json::as_str).and_then(Level::parse) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42203, "body needs {\"compatibility\": NONE|BACKWARD|BACKWARD_TRANSITIVE|FORWARD|FORWARD_TRANSITIVE|FULL|FULL_TRANSITIVE}");
    };
    let _guard = reg.write_lock.lock().await;
    let key = json!({"keytype": "CONFIG", "subject": subject, "magic": 0});
    if let Err(r) = reg.persist(key, json!({"compatibilityLevel": level.as_str()})).await {
        return r;
    }
    reply(StatusCode::OK, json!({"compatibility": level.as_str()}))
}

async fn put_global_config(State(reg): State<Shared>, body: Bytes) -> Response {
    put_config(reg, None, body).await
}

async fn put_subject_config(State(reg): State<Shared>, Path(subject): Path<String>, body: Bytes) -> Response {
    put_config(reg, Some(subject), body).await
}

async fn check_compatibility(State(reg): State<Shared>, Path((subject, version)): Path<(String, String)>, body: Bytes) -> Response {
    let (_, schema) = match body_json(&body).and_then(|b| parse_avro(&b)) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = reg.store.read().await;
    let versions = store.live_versions(&subject);
    if versions.is_empty() {
        return reply(StatusCode::OK, json!({"is_compatible": true}));
    }
    let (_, id) = match resolve_version(&store, &subject, &version) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(old) = Schema::parse_str(&store.by_id[&id]) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, 50001, "stored schema does not parse");
    };
    let reasons = compatibility::check(store.level(&subject), &schema, &[old]);
    reply(StatusCode::OK, json!({"is_compatible": reasons.is_empty(), "messages": reasons}))
}
