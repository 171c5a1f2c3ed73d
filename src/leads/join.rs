//! `leads`: marketing-qualified leads ⟕ closed deals ⟕ seller metrics → `marketing.lead.v1`
//! (compacted, one record per lead) and a `marketing.lead.processed.v1` event per lead whose
//! row changed.
//!
//! Incremental: a change marks only the leads it can affect (an MQL or deal: its lead; a
//! seller's metrics: the leads whose deal names that seller, through an index) and only those
//! are recomputed at the end of the batch. The last emitted row of every lead is the lead
//! topic itself (restored from it at start): a recomputed row equal to it is not emitted, so
//! an unchanged lead never gets a second processed event. Inputs are kept in stores with
//! compacted changelogs; MQL and deal changes not newer (by source position) than what the
//! store holds are re-sends and are skipped.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use apache_avro::types::Value;

use super::lead::{Deal, Lead, Mql, SellerMetrics};
use super::names::LeadTopics;
use crate::avro::value::{double, field, long, nullable};
use crate::avro::{serialization, Registered};
use crate::cdc::change::{ChangeDecoder, Position};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};
use crate::state::ChangelogStore;

pub const PROCESSOR: &str = "leads";

pub struct LeadsTransform {
    registry: RegistryClient,
    decoder: ChangeDecoder,
    topics: LeadTopics,
    lead_key: Registered,
    lead_value: Registered,
    processed_key: Registered,
    processed_value: Registered,
    mql_store: ChangelogStore,
    deal_store: ChangelogStore,
    seller_store: ChangelogStore,
    /// The lead topic: the last row emitted per lead.
    emitted: ChangelogStore,
    mqls: HashMap<String, (Mql, Position)>,
    deals: HashMap<String, (Deal, Position)>,
    deleted: HashMap<(bool, String), Position>,
    sellers: HashMap<String, SellerMetrics>,
    /// seller_id → leads whose deal names it.
    seller_leads: HashMap<String, HashSet<String>>,
    dirty: HashSet<String>,
}

impl LeadsTransform {
    pub async fn open(brokers: &str, registry: &RegistryClient, topics: LeadTopics) -> Result<Self> {
        use super::schemas as s;
        let (lead_key, lead_value) = Registered::topic(registry, &topics.lead, s::LEAD_KEY, s::LEAD_VALUE).await?;
        let (processed_key, processed_value) = Registered::topic(registry, &topics.lead_processed, s::LEAD_KEY, s::LEAD_PROCESSED_VALUE).await?;
        crate::kafka::admin::ensure_topics(brokers, &[crate::kafka::admin::TopicSpec { name: topics.lead_processed.clone(), partitions: 3, compact: false }]).await?;
        let mut t = LeadsTransform {
            registry: registry.clone(),
            decoder: ChangeDecoder::new(registry),
            mql_store: ChangelogStore::open(brokers, &topics.changelog(PROCESSOR, "mqls"), 3).await?,
            deal_store: ChangelogStore::open(brokers, &topics.changelog(PROCESSOR, "closed-deals"), 3).await?,
            seller_store: ChangelogStore::open(brokers, &topics.changelog(PROCESSOR, "sellers"), 3).await?,
            emitted: ChangelogStore::open(brokers, &topics.lead, 3).await?,
            topics,
            lead_key,
            lead_value,
            processed_key,
            processed_value,
            mqls: HashMap::new(),
            deals: HashMap::new(),
            deleted: HashMap::new(),
            sellers: HashMap::new(),
            seller_leads: HashMap::new(),
            dirty: HashSet::new(),
        };
        for v in t.mql_store.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>() {
            let c = t.decoder.decode(&v).await?.map_err(anyhow::Error::msg)?;
            let id = c.text("mql_id").unwrap_or_default();
            t.mqls.insert(id, (Mql::from_change(&c), c.pos));
        }
        for v in t.deal_store.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>() {
            let c = t.decoder.decode(&v).await?.map_err(anyhow::Error::msg)?;
            let id = c.text("mql_id").unwrap_or_default();
            t.index_deal(&id, Deal::from_change(&c), c.pos);
        }
        for v in t.seller_store.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>() {
            let (_, value) = serialization::decode(&t.registry, &v).await?;
            if let Some((id, m)) = seller_metrics(&value) {
                t.sellers.insert(id, m);
            }
        }
        tracing::info!(mqls = t.mqls.len(), deals = t.deals.len(), sellers = t.sellers.len(), leads = t.emitted.len(), "leads state restored");
        Ok(t)
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.topics.mqls.clone(), self.topics.closed_deals.clone(), self.topics.seller_metrics.clone()]
    }

    fn index_deal(&mut self, id: &str, deal: Deal, pos: Position) {
        if let Some((old, _)) = self.deals.get(id) {
            if let Some(s) = &old.seller_id {
                if let Some(set) = self.seller_leads.get_mut(s) {
                    set.remove(id);
                }
            }
        }
        if let Some(s) = &deal.seller_id {
            self.seller_leads.entry(s.clone()).or_default().insert(id.to_string());
        }
        self.deals.insert(id.to_string(), (deal, pos));
    }

    fn unindex_deal(&mut self, id: &str) {
        if let Some((old, _)) = self.deals.remove(id) {
            if let Some(s) = &old.seller_id {
                if let Some(set) = self.seller_leads.get_mut(s) {
                    set.remove(id);
                }
            }
        }
    }

    /// Apply an MQL (is_deal = false) or closed-deal change to the stores; a change not newer
    /// than the stored one is a re-send and only marks its lead for a (no-op) recompute.
    async fn apply_cdc(&mut self, is_deal: bool, key: &[u8], bytes: &[u8], out: &mut Vec<OutRecord>) -> Result<Outcome> {
        let c = match self.decoder.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        let Some(id) = c.text("mql_id") else { return Ok(Err("row without mql_id".into())) };
        let known = if is_deal { self.deals.get(&id).map(|d| d.1) } else { self.mqls.get(&id).map(|m| m.1) }.or_else(|| self.deleted.get(&(is_deal, id.clone())).copied());
        self.dirty.insert(id.clone());
        if known.is_some_and(|p| p >= c.pos) {
            return Ok(Ok(vec![]));
        }
        let store = if is_deal { &mut self.deal_store } else { &mut self.mql_store };
        if c.is_delete() {
            store.delete(key, out);
            self.deleted.insert((is_deal, id.clone()), c.pos);
            if is_deal {
                self.unindex_deal(&id);
            } else {
                self.mqls.remove(&id);
            }
        } else {
            store.put(key.to_vec(), bytes.to_vec(), out);
            self.deleted.remove(&(is_deal, id.clone()));
            if is_deal {
                self.index_deal(&id, Deal::from_change(&c), c.pos);
            } else {
                self.mqls.insert(id, (Mql::from_change(&c), c.pos));
            }
        }
        Ok(Ok(vec![]))
    }

    fn seller_changed(&mut self, seller: &str) {
        if let Some(leads) = self.seller_leads.get(seller) {
            self.dirty.extend(leads.iter().cloned());
        }
    }

    async fn emit(&mut self, id: &str, out: &mut Vec<OutRecord>) -> Result<()> {
        let key = self.lead_key.encode(Value::Record(vec![("lead_id".into(), Value::String(id.to_string()))]))?;
        let new = self.mqls.get(id).map(|(mql, _)| Lead::compute(id, mql, self.deals.get(id).map(|d| &d.0), |s| self.sellers.get(s).cloned()));
        let old_bytes = self.emitted.get(&key).cloned();
        let (change, changed, closed, seller) = match (&new, &old_bytes) {
            (Some(lead), old_bytes) => {
                let value = lead.to_value();
                let bytes = self.lead_value.encode(value.clone())?;
                if old_bytes.as_ref() == Some(&bytes) {
                    return Ok(());
                }
                let old = match old_bytes {
                    Some(b) => Some(serialization::decode(&self.registry, b).await?.1),
                    None => None,
                };
                let changed = changed_fields(old.as_ref(), &value);
                self.emitted.put(key.clone(), bytes, out);
                (if old.is_some() { 1 } else { 0 }, changed, Some(lead.is_closed_deal.clone()), lead.seller_fk.clone())
            }
            (None, Some(_)) => {
                self.emitted.delete(&key, out);
                (2, vec![], None, None)
            }
            (None, None) => return Ok(()),
        };
        let symbols = ["created", "updated", "deleted"];
        let event = Value::Record(vec![
            ("event_type".into(), Value::String("lead_processed".into())),
            ("lead_id".into(), Value::String(id.to_string())),
            ("change".into(), Value::Enum(change, symbols[change as usize].to_string())),
            ("changed_fields".into(), Value::Array(changed.into_iter().map(Value::String).collect())),
            ("is_closed_deal".into(), nullable(closed.map(Value::String))),
            ("seller_fk".into(), nullable(seller.map(Value::String))),
            ("processed_at".into(), Value::TimestampMillis(chrono::Utc::now().timestamp_millis())),
        ]);
        let key = self.processed_key.encode(Value::Record(vec![("lead_id".into(), Value::String(id.to_string()))]))?;
        out.push(OutRecord { partition: None, topic: self.topics.lead_processed.clone(), key, value: Some(self.processed_value.encode(event)?) });
        Ok(())
    }
}

/// Names of the fields whose values differ (every field for a new lead).
fn changed_fields(old: Option<&Value>, new: &Value) -> Vec<String> {
    let Value::Record(new) = new else { return vec![] };
    match old {
        Some(Value::Record(old)) => new.iter().filter(|(k, v)| field(old, k) != Some(crate::avro::value::unwrap_union(v))).map(|(k, _)| k.clone()).collect(),
        _ => new.iter().map(|(k, _)| k.clone()).collect(),
    }
}

fn seller_metrics(v: &Value) -> Option<(String, SellerMetrics)> {
    let Value::Record(f) = v else { return None };
    let id = crate::avro::value::text(field(f, "seller_id"))?.to_string();
    Some((id, SellerMetrics { number_of_orders_lifetime: long(field(f, "number_of_orders_lifetime")), revenue_lifetime: double(field(f, "revenue_lifetime")) }))
}

impl Transform for LeadsTransform {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        let key = rec.key.unwrap_or_default();
        let mut out = vec![];
        if rec.topic == self.topics.seller_metrics {
            match rec.value {
                None => {
                    // The seller was deleted: find it by its key.
                    let (_, k) = match serialization::decode(&self.registry, key).await {
                        Ok(x) => x,
                        Err(e) => return Ok(Err(format!("seller metrics key: {e}"))),
                    };
                    let Value::Record(f) = k else { return Ok(Err("seller metrics key is not a record".into())) };
                    let Some(id) = crate::avro::value::text(field(&f, "seller_id")).map(str::to_string) else { return Ok(Err("seller metrics key without seller_id".into())) };
                    self.sellers.remove(&id);
                    self.seller_store.delete(key, &mut out);
                    self.seller_changed(&id);
                }
                Some(bytes) => {
                    let value = match serialization::decode(&self.registry, bytes).await {
                        Ok((_, v)) => v,
                        Err(e) => return Ok(Err(e.to_string())),
                    };
                    let Some((id, m)) = seller_metrics(&value) else { return Ok(Err("not a seller metrics record".into())) };
                    self.sellers.insert(id.clone(), m);
                    self.seller_store.put(key.to_vec(), bytes.to_vec(), &mut out);
                    self.seller_changed(&id);
                }
            }
            return Ok(Ok(out));
        }
        let Some(bytes) = rec.value else { return Ok(Ok(vec![])) };
        let is_deal = rec.topic == self.topics.closed_deals;
        match self.apply_cdc(is_deal, key, bytes, &mut out).await? {
            Ok(_) => Ok(Ok(out)),
            Err(reason) => Ok(Err(reason)),
        }
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        let mut out = vec![];
        let dirty: Vec<String> = self.dirty.drain().collect();
        for id in dirty {
            self.emit(&id, &mut out).await?;
        }
        Ok(out)
    }
}
