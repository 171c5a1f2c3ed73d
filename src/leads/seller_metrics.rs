//! `seller-metrics`: per seller, distinct orders, item count and revenue (price + freight)
//! over all order items, whatever the order's status. Its input is the repartition topic of
//! `seller_items` (order items and sellers keyed by seller_id), so its state is partitioned
//! like that topic and several instances of the consumer group each hold the sellers of
//! their own partitions (`state::PartitionedStore`, restored on every assignment).
//!
//! State: every item counted for a seller and every seller row, as the repartition records
//! that set them. `item_removed` retracts the item's previous contribution, so corrections
//! and moves between sellers are exact; revenue is summed in decimal units, never in floating
//! point. A change whose source position is not newer than the one applied for the same item
//! or seller is a re-send: skipped (the seller is still re-published, idempotent downstream).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use apache_avro::types::Value;

use super::names::LeadTopics;
use super::seller_items::{Codec, Kind, SellerItemChange, SCALE};
use crate::avro::value::nullable;
use crate::avro::Registered;
use crate::cdc::change::Position;
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::align::Partition;
use crate::runtime::processor::{InRecord, Outcome, Transform};
use crate::state::PartitionedStore;

pub const PROCESSOR: &str = "seller-metrics";

#[derive(Default)]
struct Aggregate {
    /// order_id → items of the seller in that order (distinct orders = keys).
    orders: HashMap<String, u32>,
    items: i64,
    units: i128,
}

pub struct SellerMetricsTransform {
    topics: LeadTopics,
    codec: Codec,
    key: Registered,
    value: Registered,
    /// (seller, item) and (seller, "") for the seller row → the repartition record applied last.
    state: PartitionedStore,
    state_key: Registered,
    /// The same, decoded: (seller, item) → the last change applied (item or item_removed).
    items: HashMap<(String, String), SellerItemChange>,
    /// seller → the position of its last row change, and whether the row exists.
    sellers: HashMap<String, (Position, bool)>,
    aggregates: HashMap<String, Aggregate>,
    dirty: HashSet<String>,
}

pub const STATE_KEY_SCHEMA: &str = include_str!("../../schemas/internal/_funnel.seller-metrics.by-seller.changelog-key.avsc");

impl SellerMetricsTransform {
    /// Register the schemas and open the state (restored when partitions are assigned).
    pub async fn open(brokers: &str, registry: &RegistryClient, topics: LeadTopics) -> Result<Self> {
        let (key, value) = Registered::topic(registry, &topics.seller_metrics, super::schemas::SELLER_KEY, super::schemas::SELLER_VALUE).await?;
        let codec = Codec::register(registry, &topics.seller_repartition()).await?;
        let changelog = topics.changelog(PROCESSOR, "by-seller");
        let (state_key, _) = Registered::topic(registry, &changelog, STATE_KEY_SCHEMA, super::seller_items::VALUE_SCHEMA).await?;
        let state = PartitionedStore::open(brokers, &changelog, &topics.seller_repartition()).await?;
        Ok(SellerMetricsTransform { topics, codec, key, value, state, state_key, items: HashMap::new(), sellers: HashMap::new(), aggregates: HashMap::new(), dirty: HashSet::new() })
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.topics.seller_repartition()]
    }

    fn add(&mut self, c: &SellerItemChange) {
        let a = self.aggregates.entry(c.seller_id.clone()).or_default();
        *a.orders.entry(c.order_id.clone()).or_insert(0) += 1;
        a.items += 1;
        a.units += c.units as i128;
    }

    fn retract(&mut self, c: &SellerItemChange) {
        if let Some(a) = self.aggregates.get_mut(&c.seller_id) {
            if let Some(n) = a.orders.get_mut(&c.order_id) {
                *n -= 1;
                if *n == 0 {
                    a.orders.remove(&c.order_id);
                }
            }
            a.items -= 1;
            a.units -= c.units as i128;
            if a.items == 0 {
                self.aggregates.remove(&c.seller_id);
            }
        }
    }

    /// Apply one change to the in-memory view (restore and live processing alike); returns
    /// false for a re-send.
    fn apply(&mut self, c: &SellerItemChange) -> bool {
        match c.kind {
            Kind::Item | Kind::ItemRemoved => {
                let k = (c.seller_id.clone(), c.item_id.clone());
                if self.items.get(&k).is_some_and(|old| old.pos() >= c.pos()) {
                    return false;
                }
                if let Some(old) = self.items.remove(&k) {
                    if old.kind == Kind::Item {
                        self.retract(&old);
                    }
                }
                if c.kind == Kind::Item {
                    self.add(c);
                }
                self.items.insert(k, c.clone());
            }
            Kind::Seller | Kind::SellerRemoved => {
                if self.sellers.get(&c.seller_id).is_some_and(|(pos, _)| *pos >= c.pos()) {
                    return false;
                }
                self.sellers.insert(c.seller_id.clone(), (c.pos(), c.kind == Kind::Seller));
            }
        }
        true
    }

    fn record(&self, seller: &str) -> Result<OutRecord> {
        let key = self.key.encode(Value::Record(vec![("seller_id".into(), Value::String(seller.to_string()))]))?;
        if !self.sellers.get(seller).is_some_and(|(_, exists)| *exists) {
            return Ok(OutRecord { partition: None, topic: self.topics.seller_metrics.clone(), key, value: None });
        }
        let a = self.aggregates.get(seller);
        let value = Value::Record(vec![
            ("seller_id".into(), Value::String(seller.to_string())),
            ("number_of_orders_lifetime".into(), nullable(a.map(|a| Value::Long(a.orders.len() as i64)))),
            ("number_of_order_items_lifetime".into(), nullable(a.map(|a| Value::Long(a.items)))),
            ("revenue_lifetime".into(), nullable(a.map(|a| Value::Double(a.units as f64 / 10f64.powi(SCALE as i32))))),
        ]);
        Ok(OutRecord { partition: None, topic: self.topics.seller_metrics.clone(), key, value: Some(self.value.encode(value)?) })
    }
}

impl Transform for SellerMetricsTransform {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        let Some(bytes) = rec.value else { return Ok(Err("repartition record without a value".into())) };
        let c = match self.codec.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        if c.seller_id.is_empty() {
            return Ok(Err("repartition record without seller_id".into()));
        }
        self.dirty.insert(c.seller_id.clone());
        let mut out = vec![];
        if self.apply(&c) {
            let item = if matches!(c.kind, Kind::Item | Kind::ItemRemoved) { c.item_id.clone() } else { String::new() };
            let key = self.state_key.encode(Value::Record(vec![("seller_id".into(), Value::String(c.seller_id.clone())), ("item_id".into(), Value::String(item))]))?;
            self.state.put(rec.partition, key, bytes.to_vec(), &mut out)?;
        }
        Ok(Ok(out))
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        let dirty: Vec<String> = self.dirty.drain().collect();
        dirty.iter().map(|s| self.record(s).with_context(|| format!("encoding metrics of seller {s}"))).collect()
    }

    /// Restore the sellers of exactly the assigned partitions.
    async fn assigned(&mut self, partitions: &[Partition]) -> Result<()> {
        let mine: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        self.state.assign(&mine).await?;
        self.items.clear();
        self.sellers.clear();
        self.aggregates.clear();
        self.dirty.clear();
        let stored: Vec<Vec<u8>> = self.state.iter().map(|(_, _, v)| v.clone()).collect();
        for bytes in stored {
            let c = self.codec.decode(&bytes).await?.map_err(|e| anyhow::anyhow!("changelog {}: {e}", self.state.topic))?;
            self.apply(&c);
        }
        tracing::info!(partitions = ?mine, items = self.items.len(), sellers = self.sellers.len(), "seller metrics state restored");
        Ok(())
    }
}
