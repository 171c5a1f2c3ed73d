//! `funnel serve` (default port 5000): funnel's HTTP front.
//! - `POST /topics/{topic}` — JSON in, Avro out, like Confluent's REST Proxy: each record's key and
//!   value are resolved against the latest schemas registered for the topic (`<topic>-key`,
//!   `<topic>-value`) and produced in the Confluent wire format. All records are checked before
//!   any is produced: one bad record refuses the request (422, naming the record and field).
//! - `GET /api/sql?q=SELECT…` — read-only SQL over every lake table (see `lake::query`).
//! - `GET /` — the customer 360 page: consolidated customers from Redis with search, segment and
//!   lifecycle filters, refreshing live; `GET /api/customers?q=&segment=&stage=&limit=` is its
//!   data (see `c360::view`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value as JsonValue};

use crate::avro::serialization;
use crate::config::Endpoints;
use crate::registry::{subject, RegistryClient};

pub const DEFAULT_PORT: u16 = 5000;

const PAGE: &str = include_str!("c360.html");

struct Serve {
    lake: PathBuf,
    registry: RegistryClient,
    producer: FutureProducer,
    redis: redis::Client,
    redis_prefix: String,
}

pub async fn run(ep: &Endpoints, port: u16, redis_prefix: &str) -> Result<()> {
    let state = Arc::new(Serve {
        lake: ep.lake_root()?,
        registry: RegistryClient::new(&ep.registry_url),
        producer: crate::kafka::producer_config(&ep.brokers, None).create()?,
        redis: redis::Client::open(ep.redis_url.as_str()).with_context(|| format!("redis url {}", ep.redis_url))?,
        redis_prefix: redis_prefix.to_string(),
    });
    let app = Router::new()
        .route("/", get(|| async { axum::response::Html(PAGE) }))
        .route("/api/customers", get(customers))
        .route("/topics/{topic}", post(produce))
        .route("/api/sql", get(sql))
        .with_state(state)
        .merge(crate::runtime::http::health_router());
    let address = ep.bind_address.as_str();
    let listener = tokio::net::TcpListener::bind((address, port)).await.with_context(|| format!("binding {address}:{port} (set --port, --bind-address)"))?;
    tracing::info!(port, "serving http://{address}:{port}/ (the customer 360 page, POST /topics/{{topic}}, GET /api/sql?q=)");
    axum::serve(listener, app).with_graceful_shutdown(async { crate::runtime::shutdown::wait().await }).await?;
    Ok(())
}

fn error(status: StatusCode, message: String) -> (StatusCode, Json<JsonValue>) {
    (status, Json(json!({"error_code": status.as_u16(), "message": message})))
}

/// A JSON value as an Avro datum of `schema`, framed with `id`.
fn encode_json(v: &JsonValue, id: u32, schema: &apache_avro::Schema) -> Result<Vec<u8>, String> {
    let value = Value::from(v.clone()).resolve(schema).map_err(|e| e.to_string())?;
    serialization::encode(id, schema, value).map_err(|e| e.to_string())
}

async fn produce(State(s): State<Arc<Serve>>, Path(topic): Path<String>, Json(body): Json<JsonValue>) -> impl IntoResponse {
    let Some(records) = body.get("records").and_then(JsonValue::as_array) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, r#"expected {"records": [{"key": …, "value": …}, …]}"#.into());
    };
    let mut schemas = vec![];
    for is_key in [true, false] {
        match s.registry.latest(&subject(&topic, is_key)).await {
            Ok(Some(x)) => schemas.push(x),
            Ok(None) => return error(StatusCode::NOT_FOUND, format!("no schema registered under {} (run `funnel topics create`)", subject(&topic, is_key))),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    let ((key_id, key_schema), (value_id, value_schema)) = (&schemas[0], &schemas[1]);
    let mut framed = vec![];
    for (i, r) in records.iter().enumerate() {
        let key = match r.get("key") {
            Some(k) => match encode_json(k, *key_id, key_schema) {
                Ok(b) => Some(b),
                Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("record {i}: key does not match {}: {e}", subject(&topic, true))),
            },
            None => None,
        };
        let value = match r.get("value") {
            None | Some(JsonValue::Null) => None,
            Some(v) => match encode_json(v, *value_id, value_schema) {
                Ok(b) => Some(b),
                Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("record {i}: value does not match {}: {e}", subject(&topic, false))),
            },
        };
        framed.push((key, value));
    }
    let mut offsets = vec![];
    for (key, value) in &framed {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        match s.producer.send(rec, Duration::from_secs(30)).await {
            Ok(d) => offsets.push(json!({"partition": d.partition, "offset": d.offset})),
            Err((e, _)) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("producing to {topic}: {e}")),
        }
    }
    (StatusCode::OK, Json(json!({"key_schema_id": key_id, "value_schema_id": value_id, "offsets": offsets})))
}

async fn customers(State(s): State<Arc<Serve>>, Query(f): Query<crate::c360::view::Filter>) -> impl IntoResponse {
    let mut con = match s.redis.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")),
    };
    match crate::c360::view::query(&mut con, &s.redis_prefix, &f).await {
        Ok(v) => (StatusCode::OK, Json(v)),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}

#[derive(serde::Deserialize)]
struct SqlQuery {
    q: String,
}

async fn sql(State(s): State<Arc<Serve>>, Query(q): Query<SqlQuery>) -> impl IntoResponse {
    let ctx = match crate::lake::query::context(&s.lake).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    };
    match crate::lake::query::batches(&ctx, &q.q).await {
        Err(e) => error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Ok(batches) => {
            let columns: Vec<String> = batches.first().map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect()).unwrap_or_default();
            match crate::lake::query::to_json(&batches) {
                Ok(rows) => (StatusCode::OK, Json(json!({"columns": columns, "rows": rows}))),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
            }
        }
    }
}
