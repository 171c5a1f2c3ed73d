//! `seller-metrics`: per seller, distinct orders, item count and revenue (price + freight)
//! over all order items, whatever the order's status — from the order_items CDC stream.
//!
//! State: every order item as last applied (the CDC envelope bytes) in a store with a
//! compacted changelog, plus the sellers of ecommerce.sellers. An update or delete retracts
//! the item's previous contribution before adding the new one, so corrections are exact;
//! revenue is summed in decimal units, never in floating point. A change whose source
//! position is not newer than the item's is a re-send: skipped (its seller is still
//! re-published, which is idempotent downstream).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use apache_avro::types::Value;

use super::names::LeadTopics;
use crate::avro::value::nullable;
use crate::avro::Registered;
use crate::cdc::change::{Change, ChangeDecoder, Position};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};
use crate::state::ChangelogStore;

pub const PROCESSOR: &str = "seller-metrics";
/// Revenue is kept in units of 10^-SCALE.
const SCALE: u32 = 4;

struct Item {
    seller: Option<String>,
    order: String,
    units: i128,
    pos: Position,
}

#[derive(Default)]
struct Aggregate {
    /// order_id → items of the seller in that order (distinct orders = keys).
    orders: HashMap<String, u32>,
    items: i64,
    units: i128,
}

pub struct SellerMetricsTransform {
    decoder: ChangeDecoder,
    topics: LeadTopics,
    key: Registered,
    value: Registered,
    item_store: ChangelogStore,
    seller_store: ChangelogStore,
    items: HashMap<Vec<u8>, Item>,
    /// Deletes applied in this run, by item key (a re-sent older change must not revive the item).
    deleted: HashMap<Vec<u8>, Position>,
    aggregates: HashMap<String, Aggregate>,
    sellers: HashSet<String>,
    dirty: HashSet<String>,
}

impl Item {
    fn from_change(c: &Change) -> Result<Item, String> {
        let order = c.text("order_id").ok_or("order item without order_id")?;
        Ok(Item { seller: c.text("seller_id"), order, units: c.units("price", SCALE).unwrap_or(0) + c.units("freight_value", SCALE).unwrap_or(0), pos: c.pos })
    }
}

impl SellerMetricsTransform {
    /// Register the output schemas and restore state from the changelogs.
    pub async fn open(brokers: &str, registry: &RegistryClient, topics: LeadTopics) -> Result<Self> {
        let (key, value) = Registered::topic(registry, &topics.seller_metrics, super::schemas::SELLER_KEY, super::schemas::SELLER_VALUE).await?;
        let item_store = ChangelogStore::open(brokers, &topics.changelog(PROCESSOR, "items"), 3).await?;
        let seller_store = ChangelogStore::open(brokers, &topics.changelog(PROCESSOR, "sellers"), 3).await?;
        let mut t = SellerMetricsTransform {
            decoder: ChangeDecoder::new(registry),
            topics,
            key,
            value,
            item_store,
            seller_store,
            items: HashMap::new(),
            deleted: HashMap::new(),
            aggregates: HashMap::new(),
            sellers: HashSet::new(),
            dirty: HashSet::new(),
        };
        let stored: Vec<(Vec<u8>, Vec<u8>)> = t.item_store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in stored {
            let change = t.decoder.decode(&v).await?.map_err(|e| anyhow::anyhow!("changelog {}: {e}", t.item_store.topic))?;
            let item = Item::from_change(&change).map_err(|e| anyhow::anyhow!(e))?;
            t.add(&item);
            t.items.insert(k, item);
        }
        let stored: Vec<Vec<u8>> = t.seller_store.iter().map(|(_, v)| v.clone()).collect();
        for v in stored {
            let change = t.decoder.decode(&v).await?.map_err(|e| anyhow::anyhow!("changelog {}: {e}", t.seller_store.topic))?;
            if let Some(s) = change.text("seller_id") {
                t.sellers.insert(s);
            }
        }
        tracing::info!(items = t.items.len(), sellers = t.sellers.len(), "seller metrics state restored");
        Ok(t)
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.topics.order_items.clone(), self.topics.sellers.clone()]
    }

    fn add(&mut self, item: &Item) {
        let Some(s) = &item.seller else { return };
        let a = self.aggregates.entry(s.clone()).or_default();
        *a.orders.entry(item.order.clone()).or_insert(0) += 1;
        a.items += 1;
        a.units += item.units;
    }

    fn retract(&mut self, item: &Item) {
        let Some(s) = &item.seller else { return };
        if let Some(a) = self.aggregates.get_mut(s) {
            if let Some(n) = a.orders.get_mut(&item.order) {
                *n -= 1;
                if *n == 0 {
                    a.orders.remove(&item.order);
                }
            }
            a.items -= 1;
            a.units -= item.units;
            if a.items == 0 {
                self.aggregates.remove(s);
            }
        }
    }

    fn apply_item(&mut self, key: &[u8], bytes: &[u8], change: Change, out: &mut Vec<OutRecord>) -> Result<(), String> {
        let known = self.items.get(key).map(|i| i.pos).or_else(|| self.deleted.get(key).copied());
        if known.is_some_and(|p| p >= change.pos) {
            if let Some(s) = self.items.get(key).and_then(|i| i.seller.clone()).or_else(|| change.text("seller_id")) {
                self.dirty.insert(s);
            }
            return Ok(());
        }
        let new = if change.is_delete() { None } else { Some(Item::from_change(&change)?) };
        if let Some(old) = self.items.remove(key) {
            self.retract(&old);
            self.dirty.extend(old.seller);
        }
        match new {
            None => {
                self.item_store.delete(key, out);
                self.deleted.insert(key.to_vec(), change.pos);
            }
            Some(item) => {
                self.add(&item);
                self.dirty.extend(item.seller.clone());
                self.item_store.put(key.to_vec(), bytes.to_vec(), out);
                self.deleted.remove(key);
                self.items.insert(key.to_vec(), item);
            }
        }
        Ok(())
    }

    fn record(&self, seller: &str) -> Result<OutRecord> {
        let key = self.key.encode(Value::Record(vec![("seller_id".into(), Value::String(seller.to_string()))]))?;
        if !self.sellers.contains(seller) {
            return Ok(OutRecord { topic: self.topics.seller_metrics.clone(), key, value: None });
        }
        let a = self.aggregates.get(seller);
        let value = Value::Record(vec![
            ("seller_id".into(), Value::String(seller.to_string())),
            ("number_of_orders_lifetime".into(), nullable(a.map(|a| Value::Long(a.orders.len() as i64)))),
            ("number_of_order_items_lifetime".into(), nullable(a.map(|a| Value::Long(a.items)))),
            ("revenue_lifetime".into(), nullable(a.map(|a| Value::Double(a.units as f64 / 10f64.powi(SCALE as i32))))),
        ]);
        Ok(OutRecord { topic: self.topics.seller_metrics.clone(), key, value: Some(self.value.encode(value)?) })
    }
}

impl Transform for SellerMetricsTransform {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        // Tombstones follow delete events, which carry the change.
        let Some(bytes) = rec.value else { return Ok(Ok(vec![])) };
        let key = rec.key.unwrap_or_default();
        let change = match self.decoder.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut out = vec![];
        if rec.topic == self.topics.order_items {
            if let Err(reason) = self.apply_item(key, bytes, change, &mut out) {
                return Ok(Err(reason));
            }
        } else {
            let Some(seller) = change.text("seller_id") else { return Ok(Err("seller without seller_id".into())) };
            if change.is_delete() {
                self.sellers.remove(&seller);
                self.seller_store.delete(key, &mut out);
            } else {
                self.sellers.insert(seller.clone());
                self.seller_store.put(key.to_vec(), bytes.to_vec(), &mut out);
            }
            self.dirty.insert(seller);
        }
        Ok(Ok(out))
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        let dirty: Vec<String> = self.dirty.drain().collect();
        dirty.iter().map(|s| self.record(s).with_context(|| format!("encoding metrics of seller {s}"))).collect()
    }
}
