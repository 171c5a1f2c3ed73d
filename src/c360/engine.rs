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

mod apply;
mod flush;

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
