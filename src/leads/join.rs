//! `leads`: marketing-qualified leads ⟕ closed deals ⟕ seller metrics → `marketing.lead.v1`
//! (compacted, one record per lead) and a `marketing.lead.processed.v1` event per lead whose
//! row changed.
//!
//! Its input is leads' repartition topic (`lead_inputs`: MQL and deal changes keyed by
//! mql_id), so its state is partitioned like that topic: an instance holds the MQLs, deals
//! and last emitted rows of the leads of its assigned partitions only (`PartitionedStore`,
//! restored on every assignment), and the lead topic follows the same partitions (the lead
//! of repartition partition p is written to partition p of the lead topic, which is its
//! last-emitted store). The seller metrics are joined by a deal's seller, a key unrelated to
//! the lead's: every instance reads them whole (`GlobalTable`).
//!
//! Incremental: a change marks only the leads it can affect (an MQL or deal: its lead; a
//! seller's metrics: this instance's leads whose deal names that seller, through an index)
//! and only those are recomputed at the end of the batch. A recomputed row equal to the last
//! emitted one is not emitted, so an unchanged lead never gets a second processed event.
//! After every assignment each owned lead is recomputed once against the seller metrics as
//! read now: the global table's position is this process's own, so a lead whose seller
//! changed while another instance (or a killed run) held it is brought up to date, and one
//! already up to date emits nothing. MQL and deal changes not newer (by source position) than
//! what the store holds are re-sends and are skipped; deletes stay in the store with their
//! position, so an older change re-sent after a delete never brings a lead back.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use apache_avro::types::Value;

use super::lead::{Deal, Lead, Mql, SellerMetrics};
use super::lead_inputs::{self, Source};
use super::names::LeadTopics;
use crate::avro::value::{double, field, long, nullable};
use crate::avro::{serialization, Registered};
use crate::cdc::change::{ChangeDecoder, Position};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::align::Partition;
use crate::runtime::processor::{InRecord, Outcome, Transform};
use crate::state::{GlobalTable, PartitionedStore};

pub const PROCESSOR: &str = "leads";

pub struct LeadsTransform {
    registry: RegistryClient,
    decoder: ChangeDecoder,
    codec: lead_inputs::Codec,
    topics: LeadTopics,
    lead_key: Registered,
    lead_value: Registered,
    processed_key: Registered,
    processed_value: Registered,
    /// Repartition key → the MQL's latest CDC value (a delete included), per partition.
    mql_store: PartitionedStore,
    deal_store: PartitionedStore,
    /// The lead topic: the last row emitted per lead, per partition.
    emitted: PartitionedStore,
    seller_table: GlobalTable,
    /// Seller metrics records read from the global table, not yet applied to `sellers`.
    seller_updates: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    mqls: HashMap<String, (Mql, Position)>,
    deals: HashMap<String, (Deal, Position)>,
    deleted: HashMap<(bool, String), Position>,
    sellers: HashMap<String, SellerMetrics>,
    /// seller_id → this instance's leads whose deal names it.
    seller_leads: HashMap<String, HashSet<String>>,
    /// lead → its partition (of the repartition and the lead topic).
    partition_of: HashMap<String, i32>,
    dirty: HashSet<String>,
}

impl LeadsTransform {
    /// Register the schemas, read the seller metrics whole and open the state (restored when
    /// partitions are assigned). The repartition topic must exist.
    pub async fn open(brokers: &str, registry: &RegistryClient, topics: LeadTopics) -> Result<Self> {
        use super::schemas as s;
        let (lead_key, lead_value) = Registered::topic(registry, &topics.lead, s::LEAD_KEY, s::LEAD_VALUE).await?;
        let (processed_key, processed_value) = Registered::topic(registry, &topics.lead_processed, s::LEAD_KEY, s::LEAD_PROCESSED_VALUE).await?;
        crate::kafka::admin::ensure_topics(brokers, &[crate::kafka::admin::TopicSpec { name: topics.lead_processed.clone(), partitions: 3, compact: false }]).await?;
        let input = topics.lead_repartition();
        let mut t = LeadsTransform {
            registry: registry.clone(),
            decoder: ChangeDecoder::new(registry),
            codec: lead_inputs::Codec::register(registry, &input).await?,
            mql_store: PartitionedStore::open(brokers, &topics.changelog(PROCESSOR, "mqls"), &input).await?,
            deal_store: PartitionedStore::open(brokers, &topics.changelog(PROCESSOR, "closed-deals"), &input).await?,
            emitted: PartitionedStore::open(brokers, &topics.lead, &input).await?,
            seller_table: GlobalTable::open(brokers, &topics.seller_metrics).await?,
            seller_updates: vec![],
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
            partition_of: HashMap::new(),
            dirty: HashSet::new(),
        };
        t.seller_updates = t.seller_table.poll();
        t.apply_seller_updates().await?;
        Ok(t)
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.topics.lead_repartition()]
    }

    fn index_deal(&mut self, id: &str, deal: Deal, pos: Position) {
        self.unindex_deal(id);
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

    /// Set the in-memory view of one stored MQL or deal change (restore and live alike).
    fn hold(&mut self, is_deal: bool, id: String, c: &crate::cdc::change::Change) {
        if c.is_delete() {
            self.deleted.insert((is_deal, id.clone()), c.pos);
            if is_deal {
                self.unindex_deal(&id);
            } else {
                self.mqls.remove(&id);
            }
        } else {
            self.deleted.remove(&(is_deal, id.clone()));
            if is_deal {
                self.index_deal(&id, Deal::from_change(c), c.pos);
            } else {
                self.mqls.insert(id, (Mql::from_change(c), c.pos));
            }
        }
    }

    /// Apply an MQL or closed-deal change of partition `partition` to the stores; a change not
    /// newer than the stored one is a re-send and only marks its lead for a (no-op) recompute.
    async fn apply_cdc(&mut self, partition: i32, is_deal: bool, key: &[u8], bytes: &[u8], out: &mut Vec<OutRecord>) -> Result<Outcome> {
        let c = match self.decoder.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        let Some(id) = c.text("mql_id") else { return Ok(Err("row without mql_id".into())) };
        let known = if is_deal { self.deals.get(&id).map(|d| d.1) } else { self.mqls.get(&id).map(|m| m.1) }.or_else(|| self.deleted.get(&(is_deal, id.clone())).copied());
        self.partition_of.insert(id.clone(), partition);
        self.dirty.insert(id.clone());
        if known.is_some_and(|p| p >= c.pos) {
            return Ok(Ok(vec![]));
        }
        // A delete is stored too, with its position (see the module comment).
        let store = if is_deal { &mut self.deal_store } else { &mut self.mql_store };
        store.put(partition, key.to_vec(), bytes.to_vec(), out)?;
        self.hold(is_deal, id, &c);
        Ok(Ok(vec![]))
    }

    /// Apply the seller metrics read from the global table since the last batch.
    async fn apply_seller_updates(&mut self) -> Result<()> {
        for (key, value) in std::mem::take(&mut self.seller_updates) {
            let id = match &value {
                None => {
                    // The seller was deleted: find it by its key.
                    let (_, k) = serialization::decode(&self.registry, &key).await.context("seller metrics key")?;
                    let Value::Record(f) = k else { anyhow::bail!("seller metrics key is not a record") };
                    let Some(id) = crate::avro::value::text(field(&f, "seller_id")).map(str::to_string) else { anyhow::bail!("seller metrics key without seller_id") };
                    self.sellers.remove(&id);
                    id
                }
                Some(bytes) => {
                    let (_, value) = serialization::decode(&self.registry, bytes).await.context("seller metrics")?;
                    let Some((id, m)) = seller_metrics(&value) else { anyhow::bail!("{}: not a seller metrics record", self.topics.seller_metrics) };
                    self.sellers.insert(id.clone(), m);
                    id
                }
            };
            if let Some(leads) = self.seller_leads.get(&id) {
                self.dirty.extend(leads.iter().cloned());
            }
        }
        Ok(())
    }

    async fn emit(&mut self, id: &str, out: &mut Vec<OutRecord>) -> Result<()> {
        let Some(&partition) = self.partition_of.get(id) else { anyhow::bail!("lead {id}: no partition known") };
        let key = self.lead_key.encode(Value::Record(vec![("lead_id".into(), Value::String(id.to_string()))]))?;
        let new = self.mqls.get(id).map(|(mql, _)| Lead::compute(id, mql, self.deals.get(id).map(|d| &d.0), |s| self.sellers.get(s).cloned()));
        let old_bytes = self.emitted.get(partition, &key).cloned();
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
                self.emitted.put(partition, key.clone(), bytes, out)?;
                (if old.is_some() { 1 } else { 0 }, changed, Some(lead.is_closed_deal.clone()), lead.seller_fk.clone())
            }
            (None, Some(_)) => {
                self.emitted.delete(partition, &key, out);
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
        let Some(bytes) = rec.value else { return Ok(Err("lead input change without a value".into())) };
        let (source, change) = match self.codec.decode(bytes).await? {
            Ok(x) => x,
            Err(reason) => return Ok(Err(reason)),
        };
        let mut out = vec![];
        match self.apply_cdc(rec.partition, source == Source::ClosedDeal, rec.key.unwrap_or_default(), &change, &mut out).await? {
            Ok(_) => Ok(Ok(out)),
            Err(reason) => Ok(Err(reason)),
        }
    }

    /// Seller metrics changed since the last batch, or leads left to recompute after an
    /// assignment: a batch without input records emits what follows.
    fn has_work(&mut self) -> bool {
        self.seller_updates.extend(self.seller_table.poll());
        !self.seller_updates.is_empty() || !self.dirty.is_empty()
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        self.seller_updates.extend(self.seller_table.poll());
        self.apply_seller_updates().await?;
        let mut out = vec![];
        let dirty: Vec<String> = self.dirty.drain().collect();
        for id in dirty {
            self.emit(&id, &mut out).await.with_context(|| format!("lead {id}"))?;
        }
        Ok(out)
    }

    /// Restore the leads of exactly the assigned partitions, then mark every one of them for
    /// a recompute against the seller metrics as this instance read them.
    async fn assigned(&mut self, partitions: &[Partition]) -> Result<()> {
        let mine: Vec<i32> = partitions.iter().map(|(_, p)| *p).collect();
        self.mql_store.assign(&mine).await?;
        self.deal_store.assign(&mine).await?;
        self.emitted.assign(&mine).await?;
        self.mqls.clear();
        self.deals.clear();
        self.deleted.clear();
        self.seller_leads.clear();
        self.partition_of.clear();
        self.dirty.clear();
        for is_deal in [false, true] {
            let store = if is_deal { &self.deal_store } else { &self.mql_store };
            let (topic, stored): (String, Vec<(i32, Vec<u8>)>) = (store.topic.clone(), store.iter().map(|(p, _, v)| (p, v.clone())).collect());
            for (p, v) in stored {
                let c = self.decoder.decode(&v).await?.map_err(|e| anyhow::anyhow!("changelog {topic}: {e}"))?;
                let id = c.text("mql_id").unwrap_or_default();
                self.partition_of.insert(id.clone(), p);
                self.hold(is_deal, id, &c);
            }
        }
        let emitted: Vec<(i32, Vec<u8>)> = self.emitted.iter().map(|(p, k, _)| (p, k.clone())).collect();
        for (p, k) in emitted {
            let (_, key) = serialization::decode(&self.registry, &k).await.with_context(|| format!("a key of {}", self.topics.lead))?;
            let Value::Record(f) = key else { anyhow::bail!("{}: key is not a record", self.topics.lead) };
            let Some(id) = crate::avro::value::text(field(&f, "lead_id")) else { anyhow::bail!("{}: key without lead_id", self.topics.lead) };
            self.partition_of.insert(id.to_string(), p);
        }
        self.dirty.extend(self.partition_of.keys().cloned());
        tracing::info!(partitions = ?mine, mqls = self.mqls.len(), deals = self.deals.len(), sellers = self.sellers.len(), leads = self.emitted.len(), "leads state restored");
        Ok(())
    }
}
