//! `seller-metrics-repartition`: the first step of seller-metrics. Order items arrive keyed
//! by item; the metrics are per seller. This step re-keys every change by seller_id into the
//! repartition topic `_funnel.seller-metrics.by-seller.repartition`, so that the aggregate
//! (`seller_metrics`) holds the state of the sellers of its own partitions only and runs as
//! several instances of one consumer group (Kafka Streams' KTable groupBy).
//!
//! An update can move an item to another seller, and a delete carries no seller the
//! aggregate could trust: so this step keeps every item as last sent (partitioned like
//! order_items, `state::PartitionedStore`) and sends the retraction to the old seller
//! (`item_removed`) before the item to the new one. Seller rows pass through re-keyed. A
//! change whose source position is older than the item's is stale: nothing is sent. One at
//! the same position is a re-send, or a batch re-processed after a crash whose state records
//! a broker leaked (tansu shows an open transaction's records after a kill -9): its records
//! are sent again as they were, retraction included, and the aggregate skips what it has.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::names::LeadTopics;
use crate::avro::serde_record::{from_avro, to_avro};
use crate::avro::value::long;
use crate::avro::Registered;
use crate::cdc::change::{Change, ChangeDecoder, Position};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::align::Partition;
use crate::runtime::processor::{InRecord, Outcome, Transform};
use crate::state::PartitionedStore;

pub const PROCESSOR: &str = "seller-metrics-repartition";
/// Revenue is kept in units of 10^-SCALE.
pub const SCALE: u32 = 4;
pub const KEY_SCHEMA: &str = include_str!("../../schemas/internal/_funnel.seller-metrics.by-seller.repartition-key.avsc");
pub const VALUE_SCHEMA: &str = include_str!("../../schemas/internal/_funnel.seller-metrics.by-seller.repartition-value.avsc");

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Item,
    ItemRemoved,
    Seller,
    SellerRemoved,
}

/// One record of the repartition topic (and of both steps' state).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SellerItemChange {
    pub kind: Kind,
    pub seller_id: String,
    pub item_id: String,
    pub order_id: String,
    pub units: i64,
    pub previous_seller_id: String,
    pub source_lsn: i64,
    pub source_change_lsn: i64,
}

impl SellerItemChange {
    pub fn pos(&self) -> Position {
        (self.source_lsn, self.source_change_lsn)
    }
}

/// The repartition topic's schemas, registered once; encodes and decodes its records.
#[derive(Clone)]
pub struct Codec {
    key: std::sync::Arc<Registered>,
    value: std::sync::Arc<Registered>,
    registry: RegistryClient,
}

impl Codec {
    pub async fn register(registry: &RegistryClient, topic: &str) -> Result<Codec> {
        let (key, value) = Registered::topic(registry, topic, KEY_SCHEMA, VALUE_SCHEMA).await?;
        Ok(Codec { key: key.into(), value: value.into(), registry: registry.clone() })
    }

    pub fn key(&self, seller: &str) -> Result<Vec<u8>> {
        use apache_avro::types::Value;
        Ok(self.key.encode(Value::Record(vec![("seller_id".into(), Value::String(seller.to_string()))]))?)
    }

    pub fn value(&self, c: &SellerItemChange) -> Result<Vec<u8>> {
        let v = to_avro(c, &self.value.schema).map_err(|e| anyhow::anyhow!("seller item change {e}"))?;
        Ok(self.value.encode(v)?)
    }

    /// `Ok(Err(reason))` for bytes that are not such a record (dead letter).
    pub async fn decode(&self, bytes: &[u8]) -> Result<Result<SellerItemChange, String>> {
        Ok(match crate::avro::serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok((_, v)) => from_avro(&v),
            Err(reason) => Err(reason),
        })
    }
}

pub struct SellerItemsTransform {
    decoder: ChangeDecoder,
    topics: LeadTopics,
    codec: Codec,
    /// order_items key → the item as last sent (kind item, or item_removed after a delete).
    items: PartitionedStore,
}

impl SellerItemsTransform {
    pub async fn open(brokers: &str, registry: &RegistryClient, topics: LeadTopics) -> Result<Self> {
        let repartition = topics.seller_repartition();
        crate::kafka::admin::ensure_topics(brokers, &[crate::kafka::admin::TopicSpec { name: repartition.clone(), partitions: topics.seller_partitions, compact: false }]).await?;
        let codec = Codec::register(registry, &repartition).await?;
        let items = PartitionedStore::open(brokers, &topics.changelog(PROCESSOR, "items"), &topics.order_items).await?;
        Ok(SellerItemsTransform { decoder: ChangeDecoder::new(registry), topics, codec, items })
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.topics.order_items.clone(), self.topics.sellers.clone()]
    }

    fn send(&self, c: &SellerItemChange, out: &mut Vec<OutRecord>) -> Result<()> {
        out.push(OutRecord { partition: None, topic: self.topics.seller_repartition(), key: self.codec.key(&c.seller_id)?, value: Some(self.codec.value(c)?) });
        Ok(())
    }

    /// What an item change sends: the retraction to the seller it was counted for when it
    /// moved or went (first: that seller stops counting it before the new one starts; on
    /// different partitions, each seller's own order holds), then the item to its seller.
    fn send_all(&self, c: &SellerItemChange, out: &mut Vec<OutRecord>) -> Result<()> {
        if !c.previous_seller_id.is_empty() {
            let retraction = SellerItemChange { kind: Kind::ItemRemoved, seller_id: c.previous_seller_id.clone(), previous_seller_id: String::new(), ..c.clone() };
            self.send(&retraction, out)?;
        }
        if c.kind == Kind::Item && !c.seller_id.is_empty() {
            self.send(c, out)?;
        }
        Ok(())
    }

    async fn item(&mut self, rec: &InRecord<'_>, change: Change) -> Result<Outcome> {
        let key = rec.key.unwrap_or_default();
        let stored = match self.items.get(rec.partition, key) {
            Some(bytes) => match self.codec.decode(bytes).await? {
                Ok(c) => Some(c),
                Err(reason) => anyhow::bail!("changelog {}: {reason}", self.items.topic),
            },
            None => None,
        };
        if let Some(s) = stored.as_ref().filter(|s| s.pos() >= change.pos) {
            let mut out = vec![];
            if s.pos() == change.pos {
                self.send_all(s, &mut out)?;
            }
            return Ok(Ok(out));
        }
        let order = change.text("order_id").ok_or("order item without order_id");
        let line = long(change.get("order_item_id")).ok_or("order item without order_item_id");
        let (order, line) = match (order, line) {
            (Ok(o), Ok(l)) => (o, l),
            (Err(r), _) | (_, Err(r)) => return Ok(Err(r.into())),
        };
        let units = change.units("price", SCALE).unwrap_or(0) + change.units("freight_value", SCALE).unwrap_or(0);
        let units = match i64::try_from(units) {
            Ok(u) => u,
            Err(_) => return Ok(Err(format!("order item price + freight {units}e-{SCALE} out of range"))),
        };
        let mut new = SellerItemChange {
            kind: if change.is_delete() { Kind::ItemRemoved } else { Kind::Item },
            seller_id: change.text("seller_id").unwrap_or_default(),
            item_id: format!("{order}/{line}"),
            order_id: order,
            units,
            previous_seller_id: String::new(),
            source_lsn: change.pos.0,
            source_change_lsn: change.pos.1,
        };
        if let Some(old) = stored.filter(|s| s.kind == Kind::Item && !s.seller_id.is_empty()) {
            if new.kind == Kind::ItemRemoved || old.seller_id != new.seller_id {
                new.previous_seller_id = old.seller_id;
            }
        }
        let mut out = vec![];
        self.send_all(&new, &mut out)?;
        // A delete is kept too (as item_removed): an older change re-sent after it must not
        // bring the item back.
        let value = self.codec.value(&new)?;
        self.items.put(rec.partition, key.to_vec(), value, &mut out)?;
        Ok(Ok(out))
    }

    fn seller(&self, change: Change) -> Result<Outcome> {
        let Some(seller) = change.text("seller_id") else { return Ok(Err("seller without seller_id".into())) };
        let c = SellerItemChange {
            kind: if change.is_delete() { Kind::SellerRemoved } else { Kind::Seller },
            seller_id: seller,
            item_id: String::new(),
            order_id: String::new(),
            units: 0,
            previous_seller_id: String::new(),
            source_lsn: change.pos.0,
            source_change_lsn: change.pos.1,
        };
        let mut out = vec![];
        self.send(&c, &mut out)?;
        Ok(Ok(out))
    }
}

impl Transform for SellerItemsTransform {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        // Tombstones follow delete events, which carry the change.
        let Some(bytes) = rec.value else { return Ok(Ok(vec![])) };
        let change = match self.decoder.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        if rec.topic == self.topics.order_items {
            self.item(rec, change).await.with_context(|| format!("order item {}/{}", rec.partition, rec.offset))
        } else {
            self.seller(change)
        }
    }

    async fn assigned(&mut self, partitions: &[Partition]) -> Result<()> {
        let mine: Vec<i32> = partitions.iter().filter(|(t, _)| *t == self.topics.order_items).map(|(_, p)| *p).collect();
        self.items.assign(&mine).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seller_item_changes_round_trip_through_their_schema() {
        let schema = apache_avro::Schema::parse_str(VALUE_SCHEMA).unwrap();
        let c = SellerItemChange { kind: Kind::ItemRemoved, seller_id: "s".into(), item_id: "o/1".into(), order_id: "o".into(), units: 1_234_500, previous_seller_id: "t".into(), source_lsn: 7, source_change_lsn: 9 };
        let v = to_avro(&c, &schema).unwrap();
        assert!(matches!(&v, apache_avro::types::Value::Record(f) if matches!(&f[0].1, apache_avro::types::Value::Enum(1, s) if s == "item_removed")), "{v:?}");
        let mut bytes = vec![];
        crate::avro::serialization::write_datum(&v, &schema, &mut bytes).unwrap();
        let back = apache_avro::from_avro_datum(&schema, &mut bytes.as_slice(), None).unwrap();
        assert_eq!(from_avro::<SellerItemChange>(&back).unwrap(), c);
    }
}
