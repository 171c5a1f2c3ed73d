//! `leads-repartition`: the first step of leads. MQLs and closed deals arrive on their CDC
//! topics keyed by their own key schemas, so the same mql_id lands on unrelated partitions of
//! the two topics. This step re-keys both by mql_id into one repartition topic
//! (`_funnel.leads.by-lead.repartition`): every change of one lead then sits in one partition,
//! the join (`join`) holds the state of its own partitions' leads only, and several instances
//! share the consumer group. Stateless: mql_id is the primary key of both tables, so a
//! change never moves a lead; re-sends pass through and the join skips them by source
//! position. The CDC value travels unchanged inside the record (`change`).

use anyhow::Result;
use apache_avro::types::Value;

use super::names::LeadTopics;
use crate::avro::value::field;
use crate::avro::Registered;
use crate::cdc::change::ChangeDecoder;
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};

pub const PROCESSOR: &str = "leads-repartition";
pub const KEY_SCHEMA: &str = include_str!("../../schemas/internal/_funnel.leads.by-lead.repartition-key.avsc");
pub const VALUE_SCHEMA: &str = include_str!("../../schemas/internal/_funnel.leads.by-lead.repartition-value.avsc");

/// Which table a repartitioned change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Mql,
    ClosedDeal,
}

/// The repartition topic's schemas, registered once.
pub struct Codec {
    key: Registered,
    value: Registered,
    registry: RegistryClient,
}

impl Codec {
    pub async fn register(registry: &RegistryClient, topic: &str) -> Result<Codec> {
        let (key, value) = Registered::topic(registry, topic, KEY_SCHEMA, VALUE_SCHEMA).await?;
        Ok(Codec { key, value, registry: registry.clone() })
    }

    pub fn key(&self, mql_id: &str) -> Result<Vec<u8>> {
        Ok(self.key.encode(Value::Record(vec![("mql_id".into(), Value::String(mql_id.to_string()))]))?)
    }

    pub fn value(&self, source: Source, change: &[u8]) -> Result<Vec<u8>> {
        let symbol = match source {
            Source::Mql => Value::Enum(0, "mql".into()),
            Source::ClosedDeal => Value::Enum(1, "closed_deal".into()),
        };
        Ok(self.value.encode(Value::Record(vec![("source".into(), symbol), ("change".into(), Value::Bytes(change.to_vec()))]))?)
    }

    /// (source, the CDC value bytes); `Ok(Err(reason))` for bytes that are not such a record.
    pub async fn decode(&self, bytes: &[u8]) -> Result<Result<(Source, Vec<u8>), String>> {
        let v = match crate::avro::serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok((_, v)) => v,
            Err(reason) => return Ok(Err(reason)),
        };
        let Value::Record(f) = v else { return Ok(Err("lead input change is not a record".into())) };
        let source = match field(&f, "source") {
            Some(Value::Enum(0, _)) => Source::Mql,
            Some(Value::Enum(1, _)) => Source::ClosedDeal,
            other => return Ok(Err(format!("lead input change with source {other:?}"))),
        };
        match field(&f, "change") {
            Some(Value::Bytes(b)) => Ok(Ok((source, b.clone()))),
            _ => Ok(Err("lead input change without its change bytes".into())),
        }
    }
}

pub struct LeadInputsTransform {
    decoder: ChangeDecoder,
    topics: LeadTopics,
    codec: Codec,
}

impl LeadInputsTransform {
    pub async fn open(registry: &RegistryClient, topics: LeadTopics) -> Result<Self> {
        let codec = Codec::register(registry, &topics.lead_repartition()).await?;
        Ok(LeadInputsTransform { decoder: ChangeDecoder::new(registry), topics, codec })
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.topics.mqls.clone(), self.topics.closed_deals.clone()]
    }
}

impl Transform for LeadInputsTransform {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        // Tombstones follow delete events, which carry the change.
        let Some(bytes) = rec.value else { return Ok(Ok(vec![])) };
        let change = match self.decoder.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        let Some(id) = change.text("mql_id") else { return Ok(Err("row without mql_id".into())) };
        let source = if rec.topic == self.topics.closed_deals { Source::ClosedDeal } else { Source::Mql };
        Ok(Ok(vec![OutRecord { partition: None, topic: self.topics.lead_repartition(), key: self.codec.key(&id)?, value: Some(self.codec.value(source, bytes)?) }]))
    }
}
