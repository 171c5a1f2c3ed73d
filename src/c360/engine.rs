//! The `c360` processor: runs `sql/c360/*.sql` on DataFusion per micro-batch.
//!
//! The runtime hands the records over in event-time order across the three input topics
//! (`runtime::align`: record timestamp, ties to profiles, then creations). Each is decoded
//! (a bad one is dead-lettered), applied to keyed state (profiles: latest by source position;
//! orders: latest state, with a customer → orders index) and collected into a sub-batch, which
//! runs through the four queries at the end of the batch — or earlier, when a profile changes
//! for a customer that already has an order event in the sub-batch, so that every order joins
//! the profile as of its own event time:
//!
//! 1. `customer_profile` over the stored profiles of the customers involved;
//! 2. `customer_order_enriched` over the sub-batch's order events ⟕ `customer_profile`;
//! 3. `customer_consolidated` over the affected customers and their current orders;
//! 4. `customer_segment` over those consolidated rows and the event-time clock.
//!
//! Only the keys the batch touches are looked up, so a batch costs what its keys cost, not
//! what the state holds. Aggregates are recomputed per affected customer from the customer's
//! current orders: with updates and deletes (retractions), MIN/MAX/AVG need the rows anyway.
//! State changes go to the changelog in the same Kafka transaction as the outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{Context, Result};
use apache_avro::types::Value;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::prelude::SessionContext;

use super::definitions::{C360Sql, Definition};
use super::relations::{self, EventRow};
use super::state::{self, Entry, OrderEntry, ProfileEntry};
use super::timers::Timers;
use super::C360Topics;
use crate::avro::arrow::{batch_of_records, columns_of_record};
use crate::avro::from_arrow;
use crate::avro::serialization::{decode, decode_or_reason};
use crate::avro::value::{field, long, nullable, text};
use crate::avro::{Column, Registered};
use crate::domain::events::{key, Order, Profile};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};
use crate::state::ChangelogStore;

/// Consolidated fields the engine sets (the rest come from `customer_consolidated.sql`).
const CONSOLIDATED_BY_ENGINE: &[&str] = &["lifecycle_stage", "segment", "epoch", "applied_events", "stream_time"];
/// How far an order's purchase time may run ahead of its record's timestamp and still move the
/// event-time clock (a mistyped year must not push every customer into churn-risk for good).
const CLOCK_ALLOWANCE_MICROS: i64 = 86_400_000_000;
/// Segment-event fields the engine sets (the rest come from `customer_segment.sql`).
const SEGMENT_BY_ENGINE: &[&str] = &["previous_lifecycle_stage", "previous_segment", "stream_time"];

type Record = Vec<(String, Value)>;

struct PendingEvent {
    order: Order,
    event_type: &'static str,
    topic: String,
    partition: i32,
    offset: i64,
}

#[derive(Default)]
struct Pending {
    events: Vec<PendingEvent>,
    /// Input events applied per customer in this sub-batch (the consolidated version step).
    affected: BTreeMap<String, i64>,
    /// Customers with an order row in the sub-batch: their profile must not change before it runs.
    joined: HashSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Input {
    Profile,
    Created,
    Updated,
}

enum Event {
    /// A customer's profile; `None` deletes it.
    Profile(String, Option<Profile>),
    /// An order's state; `None` deletes it.
    Order(String, Option<Order>),
}

/// A decoded input record.
struct Arrived {
    input: Input,
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: i64,
    event: Event,
}

pub struct C360Engine {
    sql: C360Sql,
    topics: C360Topics,
    registry: RegistryClient,
    customer_key: Registered,
    order_key: Registered,
    enriched: Registered,
    consolidated: Registered,
    segment: Registered,
    consolidated_columns: Vec<Column>,
    store: ChangelogStore,
    profiles: HashMap<String, ProfileEntry>,
    orders: HashMap<String, OrderEntry>,
    customer_orders: HashMap<String, BTreeSet<String>>,
    clock: Option<i64>,
    epoch: i64,
    /// Changelog records written at start (a new epoch), committed with the first batch.
    startup: Vec<OutRecord>,
    timers: Timers,
    timer: Option<(String, i64)>,
    reemit: bool,
    keep_nulls: bool,
    pending: Pending,
    /// Outputs of the batch's records so far (produced at its end).
    held: Vec<OutRecord>,
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state entries serialise")
}

fn set(rec: &mut Record, name: &str, value: Value) {
    if let Some(slot) = rec.iter_mut().find(|(k, _)| k == name) {
        slot.1 = value;
    }
}

fn text_of(rec: &Record, name: &str) -> Option<String> {
    text(field(rec, name)).map(str::to_string)
}

async fn plan(ctx: &SessionContext, def: &Definition) -> Result<DataFrame> {
    ctx.sql_with_options(&def.select, crate::lake::query::read_only()).await.with_context(|| format!("{}: planning {}", def.file, def.name))
}

async fn run(ctx: &SessionContext, def: &Definition) -> Result<Vec<RecordBatch>> {
    plan(ctx, def).await?.collect().await.with_context(|| format!("{}: running {}", def.file, def.name))
}

impl C360Engine {
    pub async fn open(brokers: &str, registry: &RegistryClient, topics: C360Topics, sql: C360Sql) -> Result<Self> {
        use super::schemas as s;
        use crate::domain::schemas as d;
        let (customer_key, consolidated) = Registered::topic(registry, &topics.consolidated, d::PROFILE_KEY, s::CONSOLIDATED_VALUE).await?;
        let (order_key, enriched) = Registered::topic(registry, &topics.enriched, d::ORDER_KEY, s::ENRICHED_VALUE).await?;
        let (_, segment) = Registered::topic(registry, &topics.segment, d::PROFILE_KEY, s::SEGMENT_VALUE).await?;
        let consolidated_columns = columns_of_record(&consolidated.schema).map_err(anyhow::Error::msg).context("the consolidated schema is not a flat record")?;
        let keep_nulls = match sql.profile.option("NULLS").map(str::to_ascii_lowercase).as_deref() {
            None | Some("keep") => true,
            Some("ignore") => false,
            Some(other) => return Err(sql.profile.bad("NULLS", format!("expected 'keep' or 'ignore', got {other:?}")).into()),
        };
        if sql.profile.option("LATEST_BY").is_some_and(|v| !v.eq_ignore_ascii_case("source_position")) {
            return Err(sql.profile.bad("LATEST_BY", "only 'source_position' is supported").into());
        }
        let mut engine = C360Engine {
            reemit: sql.enriched.flag("REEMIT_ON_TABLE_CHANGE")?,
            timer: sql.segment.recompute_at()?,
            keep_nulls,
            store: ChangelogStore::open(brokers, &topics.names.changelog(super::PROCESSOR, "state"), 3).await?,
            sql,
            topics,
            registry: registry.clone(),
            customer_key,
            order_key,
            enriched,
            consolidated,
            segment,
            consolidated_columns,
            profiles: HashMap::new(),
            orders: HashMap::new(),
            customer_orders: HashMap::new(),
            clock: None,
            epoch: 0,
            startup: vec![],
            timers: Timers::default(),
            pending: Pending::default(),
            held: vec![],
        };
        engine.validate().await?;
        engine.restore().await?;
        Ok(engine)
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.topics.profile.clone(), self.topics.order_created.clone(), self.topics.order_updated.clone()]
    }

    /// Plan every query over empty relations and check its columns against the output schemas,
    /// so a wrong SELECT fails at start with the file named, not on the first record.
    async fn validate(&self) -> Result<()> {
        let ctx = SessionContext::new();
        self.register_profiles(&ctx, &[]).await?;
        ctx.register_batch("order_events", relations::order_events(&[])?)?;
        ctx.register_batch("affected_customers", relations::affected_customers(&[])?)?;
        ctx.register_batch("customer_orders", relations::customer_orders(&[])?)?;
        ctx.register_batch("customer_order_items", relations::customer_order_items(&[])?)?;
        let checks = [(&self.sql.enriched, &self.enriched, &[][..]), (&self.sql.consolidated, &self.consolidated, CONSOLIDATED_BY_ENGINE)];
        for (def, out, engine_fields) in checks {
            let df = plan(&ctx, def).await?;
            from_arrow::check(df.schema().as_arrow(), &out.schema, engine_fields).with_context(|| format!("{}: {} against its Avro schema", def.file, def.name))?;
        }
        let ctx = self.segment_context(&[])?;
        let df = plan(&ctx, &self.sql.segment).await?;
        from_arrow::check(df.schema().as_arrow(), &self.segment.schema, SEGMENT_BY_ENGINE).with_context(|| format!("{}: customer_segment against its Avro schema", self.sql.segment.file))?;
        for name in ["customer_id", "lifecycle_stage", "segment"] {
            df.schema().as_arrow().field_with_name(name).with_context(|| format!("{}: customer_segment must return {name}", self.sql.segment.file))?;
        }
        Ok(())
    }

    async fn restore(&mut self) -> Result<()> {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self.store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut consolidated = vec![];
        for (k, v) in entries {
            match state::entry_of(&k) {
                Entry::Profile(id) => {
                    self.profiles.insert(id.to_string(), serde_json::from_slice(&v).context("restoring a profile entry")?);
                }
                Entry::Order(id) => {
                    let entry: OrderEntry = serde_json::from_slice(&v).context("restoring an order entry")?;
                    if let Some(c) = entry.customer() {
                        self.customer_orders.entry(c.to_string()).or_default().insert(id.to_string());
                    }
                    self.orders.insert(id.to_string(), entry);
                }
                Entry::Clock => self.clock = serde_json::from_slice(&v).context("restoring the clock")?,
                Entry::Epoch => self.epoch = serde_json::from_slice(&v).context("restoring the epoch")?,
                Entry::Consolidated(id) => consolidated.push((id.to_string(), v)),
                Entry::Unknown => tracing::warn!(key = %String::from_utf8_lossy(&k), "c360: ignoring an unknown state key"),
            }
        }
        for (id, bytes) in consolidated {
            let rec = self.decode_consolidated(&bytes).await?;
            self.set_timer(&id, &rec);
        }
        if self.epoch == 0 {
            // Empty state (first start, or a replay): a new epoch, committed with the first batch.
            self.epoch = chrono::Utc::now().timestamp_millis();
            self.store.put(state::EPOCH.to_vec(), json(&self.epoch), &mut self.startup);
        }
        tracing::info!(profiles = self.profiles.len(), orders = self.orders.len(), timers = self.timers.len(), clock = ?self.clock, epoch = self.epoch, "c360 state restored");
        Ok(())
    }

    async fn decode_consolidated(&self, bytes: &[u8]) -> Result<Record> {
        let (id, value) = decode(&self.registry, bytes).await.context("decoding a stored consolidated record")?;
        // A record stored under an older schema version is resolved against the current one
        // (gaining defaults); the common case, written with the current schema, is taken as is.
        let value = if id == self.consolidated.id { value } else { value.resolve(&self.consolidated.schema).context("resolving a stored consolidated record")? };
        match value {
            Value::Record(fields) => Ok(fields),
            other => anyhow::bail!("stored consolidated record is not a record: {other:?}"),
        }
    }

    fn set_timer(&mut self, id: &str, rec: &Record) {
        let at = self.timer.as_ref().and_then(|(column, delay)| long(field(rec, column)).map(|t| t + delay));
        self.timers.set(id, at);
    }

    /// `profile_changes` (stored profiles of `customers`) and the `customer_profile` view over it.
    async fn register_profiles(&self, ctx: &SessionContext, customers: &[&str]) -> Result<()> {
        let profiles: Vec<&Profile> = customers.iter().filter_map(|id| self.profiles.get(*id).and_then(|e| e.profile.as_ref())).collect();
        ctx.register_batch("profile_changes", relations::profile_changes(&profiles)?)?;
        let view = plan(ctx, &self.sql.profile).await?.into_view();
        ctx.register_table("customer_profile", view)?;
        Ok(())
    }

    fn segment_context(&self, records: &[&Record]) -> Result<SessionContext> {
        let ctx = SessionContext::new();
        ctx.register_batch("customer_consolidated", batch_of_records(&self.consolidated_columns, records.iter().map(|r| r.as_slice()))?)?;
        ctx.register_batch("stream_clock", relations::stream_clock(self.clock)?)?;
        Ok(ctx)
    }

    fn input_of(&self, topic: &str) -> Option<Input> {
        if topic == self.topics.profile {
            Some(Input::Profile)
        } else if topic == self.topics.order_created {
            Some(Input::Created)
        } else if topic == self.topics.order_updated {
            Some(Input::Updated)
        } else {
            None
        }
    }

    /// The id in a record's key (`customer_id` or `order_id`).
    async fn key_id(&self, key: Option<&[u8]>, name: &str) -> Result<Result<String, String>> {
        let Some(key) = key else { return Ok(Err("record without a key".into())) };
        Ok(match decode_or_reason(&self.registry, key).await? {
            Ok((_, Value::Record(f))) => text(field(&f, name)).map(str::to_string).ok_or_else(|| format!("key has no {name}")),
            Ok((_, other)) => Err(format!("key is not a record: {other:?}")),
            Err(reason) => Err(format!("key: {reason}")),
        })
    }

    fn bump(&mut self, customer: Option<&str>) {
        if let Some(c) = customer {
            *self.pending.affected.entry(c.to_string()).or_default() += 1;
        }
    }

    /// Decode a record into its event; `Ok(Err(reason))` for a record to dead-letter.
    async fn decode(&self, input: Input, rec: &InRecord<'_>) -> Result<Result<Event, String>> {
        let value = match rec.value {
            Some(bytes) => match decode_or_reason(&self.registry, bytes).await? {
                Ok((_, v)) => Some(v),
                Err(reason) => return Ok(Err(reason)),
            },
            None => None,
        };
        Ok(match (input, value) {
            (Input::Profile, Some(v)) => Profile::from_value(&v).map(|p| Event::Profile(p.customer_id.clone(), Some(p))),
            (Input::Profile, None) => self.key_id(rec.key, "customer_id").await?.map(|id| Event::Profile(id, None)),
            (_, Some(v)) => Order::from_value(&v).map(|o| Event::Order(o.order_id.clone(), Some(o))),
            (Input::Updated, None) => self.key_id(rec.key, "order_id").await?.map(|id| Event::Order(id, None)),
            (Input::Created, None) => Err("tombstone on the created topic (deletes go to dom.order.updated.v1)".into()),
        })
    }

    async fn apply_profile(&mut self, id: &str, profile: Option<Profile>, rec: &Arrived, out: &mut Vec<OutRecord>) -> Result<()> {
        let id = id.to_string();
        if self.profiles.get(&id).is_some_and(|e| e.partition == rec.partition && e.offset >= rec.offset) {
            return Ok(()); // re-delivered
        }
        if self.pending.joined.contains(&id) {
            // An order in the sub-batch must see the profile as it was: run the sub-batch first.
            out.extend(self.flush().await?);
        }
        let previous = self.profiles.get(&id);
        let profile = match (profile, previous.and_then(|e| e.profile.as_ref())) {
            (Some(mut new), Some(old)) if !self.keep_nulls => {
                for (slot, old) in [(&mut new.first_name, &old.first_name), (&mut new.last_name, &old.last_name), (&mut new.email, &old.email), (&mut new.city, &old.city), (&mut new.state, &old.state), (&mut new.zip_code_prefix, &old.zip_code_prefix)] {
                    if slot.is_none() {
                        slot.clone_from(old);
                    }
                }
                new.signup_at = new.signup_at.or(old.signup_at);
                Some(new)
            }
            (p, _) => p,
        };
        let entry = ProfileEntry { partition: rec.partition, offset: rec.offset, profile };
        self.store.put(state::profile_key(&id), json(&entry), out);
        self.profiles.insert(id.clone(), entry);
        self.bump(Some(&id));
        if self.reemit {
            let orders: Vec<Order> = self.customer_orders.get(&id).into_iter().flatten().filter_map(|o| self.orders.get(o).and_then(|e| e.order.clone())).collect();
            for order in orders {
                self.pending.events.push(PendingEvent { order, event_type: "profile-changed", topic: rec.topic.clone(), partition: rec.partition, offset: rec.offset });
            }
            self.pending.joined.insert(id);
        }
        Ok(())
    }

    fn apply_order(&mut self, id: &str, order: Option<Order>, rec: &Arrived, out: &mut Vec<OutRecord>) {
        let input = rec.input;
        let id = id.to_string();
        let mut entry = self.orders.get(&id).cloned().unwrap_or_default();
        let redelivered = match input {
            Input::Created => entry.created_offset.is_some_and(|o| o >= rec.offset),
            _ => entry.updated_offset.is_some_and(|o| o >= rec.offset),
        };
        if redelivered {
            return;
        }
        // A creation is older than any update of the same life of the order: it applies to an
        // unknown order, or to a deleted one when produced after the delete (offsets of the two
        // topics are not comparable; record timestamps are). The runtime's alignment hands a
        // creation over before the updates produced after it; one that still comes later is
        // true upstream disorder (an update stamped before its creation, or a partition the
        // alignment gave up waiting for) and is still an event.
        if input == Input::Created && (entry.order.is_some() || entry.deleted_at_ms.is_some_and(|d| rec.timestamp <= d)) {
            if entry.created_offset.is_none() {
                self.apply_overtaken_creation(id, entry, order, rec, out);
            }
            return; // otherwise a second creation of the same life (an upstream retry)
        }
        let old_customer = entry.customer().map(str::to_string);
        let event_type = match (&order, input) {
            (None, _) => "deleted",
            (Some(_), Input::Created) => "created",
            (Some(_), _) => "updated",
        };
        match input {
            Input::Created => {
                entry.created_offset = Some(rec.offset);
                entry.unattributed_delete = None; // a new life: that delete ended an unseen one
            }
            _ => entry.updated_offset = Some(rec.offset),
        }
        if order.is_none() {
            entry.deleted_at_ms = Some(rec.timestamp);
            if entry.order.is_none() && entry.created_offset.is_none() {
                entry.unattributed_delete = Some((rec.partition, rec.offset, rec.timestamp));
            }
        }
        let previous = std::mem::replace(&mut entry.order, order);
        let new_customer = entry.customer().map(str::to_string);
        if old_customer != new_customer {
            if let Some(c) = &old_customer {
                if let Some(set) = self.customer_orders.get_mut(c) {
                    set.remove(&id);
                }
            }
            if let Some(c) = &new_customer {
                self.customer_orders.entry(c.clone()).or_default().insert(id.clone());
            }
        }
        self.bump(old_customer.as_deref());
        if new_customer != old_customer {
            self.bump(new_customer.as_deref());
        }
        self.advance_clock(entry.order.as_ref(), rec);
        // The event row: the order as it is now (as it was, for a delete).
        if let Some(row) = entry.order.clone().or(previous) {
            if let Some(c) = &row.customer_id {
                self.pending.joined.insert(c.clone());
            }
            self.pending.events.push(PendingEvent { order: row, event_type, topic: rec.topic.clone(), partition: rec.partition, offset: rec.offset });
        }
        self.store.put(state::order_key(&id), json(&entry), out);
        self.orders.insert(id, entry);
    }

    /// A creation that arrives after an update or the delete of the same order (its first
    /// creation: the caller skips repeats) — upstream disorder, which alignment cannot undo. The state keeps the later image, but the creation
    /// is an event as in any order of arrival: counted for its customer and enriched. Its row
    /// carries the order as it is now, because the lake keeps the last row per order: the
    /// current image while the order lives, `deleted` once it is gone (never bringing it back).
    /// A delete that came before anything else of this life of the order (its customer unknown
    /// until now) is emitted and counted with it, after the creation. Without this, the
    /// enriched stream and the version counter would depend on how the two topics happened to
    /// be interleaved.
    fn apply_overtaken_creation(&mut self, id: String, mut entry: OrderEntry, order: Option<Order>, rec: &Arrived, out: &mut Vec<OutRecord>) {
        entry.created_offset = Some(rec.offset);
        // Only a delete of this life: one the creation precedes, with no later life live since.
        let unattributed = entry.unattributed_delete.take().filter(|(_, _, at)| entry.order.is_none() && rec.timestamp <= *at);
        if let Some(created) = order {
            let customer = created.customer_id.clone();
            self.advance_clock(Some(&created), rec);
            if let Some(c) = &customer {
                self.pending.joined.insert(c.clone());
            }
            self.bump(customer.as_deref());
            let here = |order: Order, event_type| PendingEvent { order, event_type, topic: rec.topic.clone(), partition: rec.partition, offset: rec.offset };
            match (entry.order.clone(), unattributed) {
                (_, Some((partition, offset, _))) => {
                    self.bump(customer.as_deref());
                    self.pending.events.push(here(created.clone(), "created"));
                    self.pending.events.push(PendingEvent { order: created, event_type: "deleted", topic: self.topics.order_updated.clone(), partition, offset });
                }
                (Some(current), None) => self.pending.events.push(here(current, "created")),
                (None, None) => self.pending.events.push(here(created, "deleted")),
            }
        }
        self.store.put(state::order_key(&id), json(&entry), out);
        self.orders.insert(id, entry);
    }

    /// Event time: the latest purchase time seen, bounded by the record's own timestamp.
    fn advance_clock(&mut self, order: Option<&Order>, rec: &Arrived) {
        if let Some(t) = order.and_then(|o| o.times[0]) {
            let t = t.min(rec.timestamp.saturating_mul(1000).saturating_add(CLOCK_ALLOWANCE_MICROS));
            self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        }
    }

    /// Run the pending sub-batch through the queries; returns outputs and changelog records.
    async fn flush(&mut self) -> Result<Vec<OutRecord>> {
        let pending = std::mem::take(&mut self.pending);
        if pending.events.is_empty() && pending.affected.is_empty() {
            return Ok(vec![]);
        }
        let mut out = vec![];
        let ctx = SessionContext::new();
        let mut involved: BTreeSet<&str> = pending.affected.keys().map(String::as_str).collect();
        involved.extend(pending.events.iter().filter_map(|e| e.order.customer_id.as_deref()));
        self.register_profiles(&ctx, &involved.into_iter().collect::<Vec<_>>()).await?;

        let rows: Vec<EventRow<'_>> = pending.events.iter().map(|e| EventRow { order: &e.order, event_type: e.event_type, topic: &e.topic, partition: e.partition, offset: e.offset }).collect();
        ctx.register_batch("order_events", relations::order_events(&rows)?)?;
        for batch in run(&ctx, &self.sql.enriched).await? {
            for rec in from_arrow::records(&batch, &self.enriched.schema, &[]).context("customer_order_enriched rows")? {
                let id = text_of(&rec, "order_id").context("customer_order_enriched: order_id is null")?;
                out.push(OutRecord { topic: self.topics.enriched.clone(), key: self.order_key.encode(key("order_id", &id))?, value: Some(self.enriched.encode(Value::Record(rec))?) });
            }
        }

        let ids: Vec<&str> = pending.affected.keys().map(String::as_str).collect();
        ctx.register_batch("affected_customers", relations::affected_customers(&ids)?)?;
        let orders: Vec<&Order> = ids.iter().filter_map(|id| self.customer_orders.get(*id)).flatten().filter_map(|o| self.orders.get(o).and_then(|e| e.order.as_ref())).collect();
        ctx.register_batch("customer_orders", relations::customer_orders(&orders)?)?;
        ctx.register_batch("customer_order_items", relations::customer_order_items(&orders)?)?;
        let mut records = vec![];
        for batch in run(&ctx, &self.sql.consolidated).await? {
            records.extend(from_arrow::records(&batch, &self.consolidated.schema, CONSOLIDATED_BY_ENGINE).context("customer_consolidated rows")?);
        }
        drop(ctx);

        let mut live = vec![];
        for mut rec in records {
            let id = text_of(&rec, "customer_id").context("customer_consolidated: customer_id is null")?;
            let stored = self.store.get(&state::consolidated_key(&id)).cloned();
            let previous = match stored {
                Some(bytes) => Some(self.decode_consolidated(&bytes).await?),
                None => None,
            };
            let has_profile = self.profiles.get(&id).is_some_and(|e| e.profile.is_some());
            let has_orders = self.customer_orders.get(&id).is_some_and(|s| !s.is_empty());
            if !has_profile && !has_orders {
                if previous.is_some() {
                    let k = self.customer_key.encode(key("customer_id", &id))?;
                    out.push(OutRecord { topic: self.topics.consolidated.clone(), key: k.clone(), value: None });
                    out.push(OutRecord { topic: self.topics.segment.clone(), key: k, value: None });
                    self.store.delete(&state::consolidated_key(&id), &mut out);
                }
                self.timers.set(&id, None);
                continue;
            }
            let applied = previous.as_ref().and_then(|p| long(field(p, "applied_events"))).unwrap_or(0) + pending.affected.get(&id).copied().unwrap_or(0);
            set(&mut rec, "applied_events", Value::Long(applied));
            set(&mut rec, "epoch", Value::Long(self.epoch));
            live.push((id, rec, previous));
        }
        self.evaluate(live, true, &mut out).await?;
        if !pending.events.is_empty() {
            self.store.put(state::CLOCK.to_vec(), json(&self.clock), &mut out);
        }
        Ok(out)
    }

    /// Run the segment query over consolidated records and emit: always (`always`, after a
    /// batch changed them) or only when stage or segment changed (timers).
    async fn evaluate(&mut self, mut live: Vec<(String, Record, Option<Record>)>, always: bool, out: &mut Vec<OutRecord>) -> Result<()> {
        if live.is_empty() {
            return Ok(());
        }
        let ctx = self.segment_context(&live.iter().map(|(_, r, _)| r).collect::<Vec<_>>())?;
        let mut segments: HashMap<String, Record> = HashMap::new();
        for batch in run(&ctx, &self.sql.segment).await? {
            for rec in from_arrow::records(&batch, &self.segment.schema, SEGMENT_BY_ENGINE).context("customer_segment rows")? {
                let id = text_of(&rec, "customer_id").context("customer_segment: customer_id is null")?;
                segments.insert(id, rec);
            }
        }
        let clock = nullable(self.clock.map(Value::TimestampMicros));
        for (id, rec, previous) in &mut live {
            let mut seg = segments.remove(id.as_str()).with_context(|| format!("customer_segment returned no row for customer {id}"))?;
            let stage = text_of(&seg, "lifecycle_stage").unwrap_or_default();
            let segment = text_of(&seg, "segment").unwrap_or_default();
            let before = previous.as_ref().map(|p| (text_of(p, "lifecycle_stage"), text_of(p, "segment")));
            let changed = before.as_ref() != Some(&(Some(stage.clone()), Some(segment.clone())));
            if !always && !changed {
                continue;
            }
            set(rec, "lifecycle_stage", Value::String(stage));
            set(rec, "segment", Value::String(segment));
            set(rec, "stream_time", clock.clone());
            let k = self.customer_key.encode(key("customer_id", id))?;
            if changed {
                let (old_stage, old_segment) = before.unwrap_or((None, None));
                set(&mut seg, "previous_lifecycle_stage", nullable(old_stage.map(Value::String)));
                set(&mut seg, "previous_segment", nullable(old_segment.map(Value::String)));
                set(&mut seg, "stream_time", clock.clone());
                out.push(OutRecord { topic: self.topics.segment.clone(), key: k.clone(), value: Some(self.segment.encode(Value::Record(seg))?) });
            }
            let bytes = self.consolidated.encode(Value::Record(rec.clone()))?;
            out.push(OutRecord { topic: self.topics.consolidated.clone(), key: k, value: Some(bytes.clone()) });
            self.store.put(state::consolidated_key(id), bytes, out);
            let rec = rec.clone();
            self.set_timer(id, &rec);
        }
        Ok(())
    }

    /// Re-evaluate the customers whose event-time timer the clock has passed.
    async fn fire_timers(&mut self, out: &mut Vec<OutRecord>) -> Result<()> {
        let Some(now) = self.clock else { return Ok(()) };
        let due = self.timers.take_due(now);
        if due.is_empty() {
            return Ok(());
        }
        let mut live = vec![];
        for id in due {
            let Some(bytes) = self.store.get(&state::consolidated_key(&id)).cloned() else { continue };
            let rec = self.decode_consolidated(&bytes).await?;
            live.push((id, rec.clone(), Some(rec)));
        }
        tracing::debug!(customers = live.len(), "c360: event-time timers fired");
        self.evaluate(live, false, out).await
    }
}

impl Transform for C360Engine {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        let Some(input) = self.input_of(rec.topic) else { return Ok(Err(format!("unexpected topic {}", rec.topic))) };
        let event = match self.decode(input, rec).await? {
            Ok(e) => e,
            Err(reason) => return Ok(Err(reason)),
        };
        let a = Arrived { input, topic: rec.topic.to_string(), partition: rec.partition, offset: rec.offset, timestamp: rec.timestamp_ms.unwrap_or(0), event };
        // The state changes are held and produced with the batch's enriched records at its
        // end, not as each record applies: a broker that leaks part of an aborted transaction
        // (tansu, on a kill) must not find a changelog record saying an event was applied
        // whose enriched record it never got.
        let mut out = std::mem::take(&mut self.held);
        match a.event {
            Event::Profile(ref id, ref profile) => self.apply_profile(id, profile.clone(), &a, &mut out).await?,
            Event::Order(ref id, ref order) => self.apply_order(id, order.clone(), &a, &mut out),
        }
        self.held = out;
        Ok(Ok(vec![]))
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        let mut out = std::mem::take(&mut self.startup);
        out.append(&mut self.held);
        out.extend(self.flush().await?);
        self.fire_timers(&mut out).await?;
        Ok(out)
    }
}
