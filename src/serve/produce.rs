//! `POST /topics/{topic}`: JSON records in, Confluent-framed Avro out, like Confluent's REST
//! Proxy. Each record's key and value are resolved against the latest schemas registered for
//! the topic (`<topic>-key`, `<topic>-value`).
//! - Only public inputs (`public = true` in topology/topics.toml) are written: internal topics
//!   (`_funnel.*` progress and changelogs, processors' outputs) answer 403, because a forged
//!   record there would corrupt a processor (a fake "confirmed" CDC progress skips data).
//! - All or nothing: every record is checked first (422 names the record and the field), a
//!   keyless record for a compacted topic is refused, then the records are produced in one
//!   Kafka transaction — a failure at any record aborts it and read_committed consumers see none.

use std::sync::Arc;

use apache_avro::types::Value;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as JsonValue};

use super::Serve;
use crate::avro::serialization;
use crate::kafka::batch_producer::{is_commit_outcome_unknown, is_record_too_large, OutRecord};
use crate::registry::subject;
use crate::runtime::http::json_error;

/// A JSON value as an Avro datum of `schema`, framed with `id`.
fn encode_json(v: &JsonValue, id: u32, schema: &apache_avro::Schema) -> Result<Vec<u8>, String> {
    let value = Value::from(v.clone()).resolve(schema).map_err(|e| e.to_string())?;
    serialization::encode(id, schema, value).map_err(|e| e.to_string())
}

/// The request's records, framed with the topic's schemas; Err names the first record that
/// does not fit (the request is refused whole). Pure, so a fuzzer can reach it.
pub fn records_from_json(topic: &str, records: &[JsonValue], key: (u32, &apache_avro::Schema), value: (u32, &apache_avro::Schema), compacted: bool) -> Result<Vec<OutRecord>, String> {
    let mut framed = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if !r.is_object() {
            return Err(format!("record {i} is not an object with key and value"));
        }
        let key = match r.get("key") {
            None | Some(JsonValue::Null) if compacted => {
                return Err(format!("record {i} has no key: {topic} is compacted, compaction keeps the latest record per key"));
            }
            None | Some(JsonValue::Null) => vec![],
            Some(k) => encode_json(k, key.0, key.1).map_err(|e| format!("record {i}: key does not match {}: {e}", subject(topic, true)))?,
        };
        let value = match r.get("value") {
            None | Some(JsonValue::Null) => None,
            Some(v) => Some(encode_json(v, value.0, value.1).map_err(|e| format!("record {i}: value does not match {}: {e}", subject(topic, false)))?),
        };
        framed.push(OutRecord { partition: None, topic: topic.to_string(), key, value });
    }
    Ok(framed)
}

pub(super) async fn produce(State(s): State<Arc<Serve>>, Path(topic): Path<String>, body: Result<Json<JsonValue>, JsonRejection>) -> Response {
    let Some(policy) = s.public.get(&topic).copied() else {
        let mut public: Vec<&str> = s.public.keys().map(String::as_str).collect();
        public.sort();
        return json_error(StatusCode::FORBIDDEN, format!("{topic} is not a public input topic (only funnel's processors write it); POST /topics accepts: {}", public.join(", ")));
    };
    let body = match body {
        Ok(Json(b)) => b,
        Err(rejection) => return json_error(rejection.status(), rejection.body_text()),
    };
    let Some(records) = body.get("records").and_then(JsonValue::as_array) else {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, r#"expected {"records": [{"key": …, "value": …}, …]}"#);
    };
    if records.is_empty() {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "records is empty: nothing to produce");
    }
    let mut schemas = vec![];
    for is_key in [true, false] {
        match s.registry.latest(&subject(&topic, is_key)).await {
            Ok(Some(x)) => schemas.push(x),
            Ok(None) => return json_error(StatusCode::NOT_FOUND, format!("no schema registered under {} (run `funnel topics create`)", subject(&topic, is_key))),
            Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    let ((key_id, key_schema), (value_id, value_schema)) = (&schemas[0], &schemas[1]);
    let framed = match records_from_json(&topic, records, (*key_id, key_schema), (*value_id, value_schema), policy.compacted) {
        Ok(f) => f,
        Err(message) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, message),
    };
    // A record the broker can never take is refused before anything is sent: all-or-nothing must
    // not rest on the broker's abort alone (tansu has let aborted records reach read_committed
    // readers).
    // Key and value, plus the framing librdkafka counts against message.max.bytes.
    const OVERHEAD: usize = 512;
    let sizes = framed.iter().map(|r| r.key.len() + r.value.as_ref().map_or(0, Vec::len));
    if let Some((i, bytes)) = sizes.enumerate().find(|(_, bytes)| bytes + OVERHEAD > crate::kafka::MAX_RECORD_BYTES) {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("record {i} is {bytes} bytes, more than the broker takes ({}): nothing produced to {topic}", crate::kafka::MAX_RECORD_BYTES));
    }
    let n = framed.len();
    // In its own task: a client that disconnects must not leave a transaction half done.
    let state = s.clone();
    let sent = tokio::spawn(async move {
        // BatchProducer aborts a failed transaction itself (also after a failed commit), so the
        // producer is ready for the next request. It is not renewed: against tansu, a new
        // producer fencing the old one right after an abort let the aborted records reach
        // read_committed readers (seen once in CI).
        let producer = state.producer.lock().await;
        producer.send(&framed).await
    })
    .await
    .unwrap_or_else(|e| Err(anyhow::anyhow!("produce task ended: {e}")));
    if let Err(e) = sent {
        if is_commit_outcome_unknown(&e) {
            tracing::warn!(topic, records = n, error = format!("{e:#}"), "produce request: commit outcome unknown");
            return json_error(StatusCode::GATEWAY_TIMEOUT, format!("the commit to {topic} failed and its outcome is unknown: the records may have been written; check before retrying: {e:#}"));
        }
        tracing::warn!(topic, records = n, error = format!("{e:#}"), "produce request aborted: none of its records is committed");
        let status = if is_record_too_large(&e) { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::SERVICE_UNAVAILABLE };
        return json_error(status, format!("nothing produced to {topic} (the transaction was aborted): {e:#}"));
    }
    (StatusCode::OK, Json(json!({"key_schema_id": key_id, "value_schema_id": value_id, "records": n}))).into_response()
}
