//! `relay-intake`: CDC of `relay.marketing_events` → `relay.event.received.v1`.
//!
//! Only a row's arrival routes it: an insert (`c`), or a snapshot read (`r`) of a row still
//! `pending` (the connector's first start, or a re-snapshot). Updates — the delivery status the
//! relay writes back — and deletes never route, so the write-back cannot re-trigger delivery.
//! A re-sent insert (CDC is at-least-once across crashes) routes again; delivery dedupes by
//! event and destination.

use anyhow::Result;
use apache_avro::types::Value;

use super::topics::RelayTopics;
use crate::avro::registered::Registered;
use crate::cdc::change::{Change, ChangeDecoder};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};

pub const PROCESSOR: &str = "relay-intake";

pub mod schemas {
    pub const RECEIVED_KEY: &str = include_str!("../../schemas/relay/relay.event.received.v1-key.avsc");
    pub const RECEIVED_VALUE: &str = include_str!("../../schemas/relay/relay.event.received.v1-value.avsc");
}

/// A received event, as the router reads it back.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub event_pk: i64,
    pub storefront_code: String,
    pub storefront_id: Option<i32>,
    pub event_type: String,
    pub source_event_id: String,
    pub event_id: String,
    pub event_time_us: i64,
    pub payload: String,
    pub source_system: String,
    pub received_at_us: i64,
}

impl Received {
    pub fn key(&self) -> Value {
        Value::Record(vec![("storefront_code".into(), Value::String(self.storefront_code.clone()))])
    }

    pub fn to_value(&self) -> Value {
        use crate::avro::value::nullable;
        Value::Record(vec![
            ("event_pk".into(), Value::Long(self.event_pk)),
            ("storefront_code".into(), Value::String(self.storefront_code.clone())),
            ("storefront_id".into(), nullable(self.storefront_id.map(Value::Int))),
            ("event_type".into(), Value::String(self.event_type.clone())),
            ("source_event_id".into(), Value::String(self.source_event_id.clone())),
            ("event_id".into(), Value::String(self.event_id.clone())),
            ("event_time".into(), Value::TimestampMicros(self.event_time_us)),
            ("payload".into(), Value::String(self.payload.clone())),
            ("source_system".into(), Value::String(self.source_system.clone())),
            ("received_at".into(), Value::TimestampMicros(self.received_at_us)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, String> {
        use crate::avro::value::{field, long, text};
        let Value::Record(f) = v else { return Err("not a record".into()) };
        let s = |n: &str| text(field(f, n)).map(str::to_string).ok_or_else(|| format!("{n} missing"));
        let l = |n: &str| long(field(f, n)).ok_or_else(|| format!("{n} missing"));
        Ok(Received {
            event_pk: l("event_pk")?,
            storefront_code: s("storefront_code")?,
            storefront_id: long(field(f, "storefront_id")).map(|x| x as i32),
            event_type: s("event_type")?,
            source_event_id: s("source_event_id")?,
            event_id: s("event_id")?,
            event_time_us: l("event_time")?,
            payload: s("payload")?,
            source_system: s("source_system")?,
            received_at_us: l("received_at")?,
        })
    }

    /// From a CDC change of `relay.marketing_events`; `Ok(None)` when it must not route.
    pub fn from_change(c: &Change) -> Result<Option<Self>, String> {
        let routes = match c.op.as_str() {
            "c" => true,
            "r" => c.text("status").as_deref() == Some("pending"),
            _ => false,
        };
        if !routes {
            return Ok(None);
        }
        let event_pk = crate::avro::value::long(c.get("id")).ok_or("row without id")?;
        let storefront_code = c.text("storefront_code").ok_or_else(|| format!("marketing_events {event_pk}: no storefront (storefront_id or storefront_code)"))?;
        let event_type = c.text("event_type").ok_or_else(|| format!("marketing_events {event_pk}: no event_type"))?;
        let source_event_id = c.text("event_id").ok_or_else(|| format!("marketing_events {event_pk}: no event_id"))?;
        let payload = c.text("event_payload").unwrap_or_default();
        let json: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&payload).map_err(|e| format!("marketing_events {event_pk}: event_payload is not a JSON object: {e}"))?;
        let event_id = match json.get("event_id").and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty()) {
            Some(id) => id.to_string(),
            None => format!("{event_type}_{source_event_id}"),
        };
        let created = c.micros("created_at").unwrap_or_default();
        // The row's event_time, else the payload's, else when the row was written.
        let event_time_us = c
            .micros("event_time")
            .or_else(|| json.get("event_time").and_then(|v| v.as_str()).and_then(super::oms::parse_time).map(|t| t.timestamp_micros()))
            .unwrap_or(created);
        Ok(Some(Received {
            event_pk,
            storefront_code,
            storefront_id: crate::avro::value::long(c.get("storefront_id")).map(|x| x as i32),
            event_type,
            source_event_id,
            event_id,
            event_time_us,
            payload,
            source_system: c.text("source_system").unwrap_or_else(|| "oms_direct".into()),
            received_at_us: created,
        }))
    }
}

pub struct Intake {
    decoder: ChangeDecoder,
    key: Registered,
    value: Registered,
    topics: RelayTopics,
}

impl Intake {
    pub async fn open(registry: &RegistryClient, topics: RelayTopics) -> Result<Self> {
        let (key, value) = Registered::topic(registry, &topics.received, schemas::RECEIVED_KEY, schemas::RECEIVED_VALUE).await?;
        Ok(Intake { decoder: ChangeDecoder::new(registry), key, value, topics })
    }
}

impl Transform for Intake {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        let Some(bytes) = rec.value else { return Ok(Ok(vec![])) }; // a delete's tombstone
        let change = match self.decoder.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        let event = match Received::from_change(&change) {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(Ok(vec![])),
            Err(reason) => return Ok(Err(reason)),
        };
        let key = self.key.encode(event.key()).map_err(|e| anyhow::anyhow!("encoding the received key: {e}"))?;
        let value = self.value.encode(event.to_value()).map_err(|e| anyhow::anyhow!("encoding the received event: {e}"))?;
        Ok(Ok(vec![OutRecord { partition: None, topic: self.topics.received.clone(), key, value: Some(value) }]))
    }
}
