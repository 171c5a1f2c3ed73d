//! `funnel run loader`: the marketing data loader rebuilt on the CDC topics.
//!
//! Staging: the MQL and closed-deal CDC topics are merged by key into the silver tables
//! `silver/m_data.marketing_qualified_lead` and `silver/m_data.closed_deal` (updates replace,
//! deletes remove; exactly-once through offsets in the Delta log; a change older than the row's
//! source position never overwrites it). Load events: whenever the staged tables catch up with
//! their topics, and after every `POST /load` (a fresh snapshot of the marketing tables), the
//! loader checks integrity (source rows = live keys in the topic = staged rows) and publishes a
//! `marketing-data-loaded` or `marketing-data-load-failed` event to marketing.data.loaded.v1.
//! The service API is in `service`, dependency checks in `health`.

pub mod health;
pub mod integrity;
pub mod jobs;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apache_avro::types::Value;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::avro::value::{nullable, nullable_text};
use crate::avro::Registered;
use crate::cdc::CdcConfig;
use crate::config::Endpoints;
use crate::lake::merge_sink::{self, RowShape, SinkConfig, SinkTable, Status};
use crate::leads::names::LeadTopics;
use crate::registry::RegistryClient;
use crate::retry::Backoff;
use crate::runtime::{health as processor_health, shutdown};
use integrity::Integrity;

pub const PROCESSOR: &str = "loader";

/// A source table staged into silver.
pub struct StagedTable {
    /// schema.table in the source database.
    pub source: &'static str,
    /// Silver table name (the reference project's m_data schema).
    pub staged: &'static str,
    /// Suffix of the replication slot a load uses for it (lowercase, no dots).
    pub slot_tag: &'static str,
}

pub const STAGED: &[StagedTable] = &[
    StagedTable { source: "marketing.marketing_qualified_leads", staged: "m_data.marketing_qualified_lead", slot_tag: "mql" },
    StagedTable { source: "marketing.closed_deals", staged: "m_data.closed_deal", slot_tag: "deal" },
];

#[derive(clap::Args, Clone, Debug)]
pub struct LoaderConfig {
    /// Silver commit interval.
    #[arg(long = "loader-flush-ms", default_value_t = 500)]
    pub silver_flush_ms: u64,
    /// Least time between two catch-up load events (a load request always gets its own).
    #[arg(long = "load-event-interval-s", default_value_t = 10)]
    pub event_interval_s: u64,
    /// Longest a load waits for the staged tables to catch up with the re-snapshot.
    #[arg(long = "load-timeout-s", default_value_t = 300)]
    pub load_timeout_s: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableLoad {
    pub table: String,
    pub status: String,
    pub records_loaded: i64,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub integrity: Integrity,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadEvent {
    pub event_type: String,
    pub load_id: String,
    pub trigger: String,
    pub timestamp: i64,
    pub error: Option<String>,
    pub tables: Vec<TableLoad>,
}

impl LoadEvent {
    pub fn succeeded(&self) -> bool {
        self.event_type == "marketing-data-loaded"
    }

    fn new(load_id: &str, trigger: &str, tables: Vec<TableLoad>) -> Self {
        let error = tables.iter().find_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.table)));
        LoadEvent {
            event_type: if error.is_none() { "marketing-data-loaded" } else { "marketing-data-load-failed" }.into(),
            load_id: load_id.into(),
            trigger: trigger.into(),
            timestamp: chrono::Utc::now().timestamp_millis(),
            error,
            tables,
        }
    }

    fn to_value(&self) -> Value {
        let s = nullable_text;
        let l = |v: Option<i64>| nullable(v.map(Value::Long));
        let tables = self
            .tables
            .iter()
            .map(|t| {
                Value::Record(vec![
                    ("table".into(), Value::String(t.table.clone())),
                    ("status".into(), Value::String(t.status.clone())),
                    ("records_loaded".into(), Value::Long(t.records_loaded)),
                    ("duration_ms".into(), Value::Long(t.duration_ms)),
                    ("error".into(), s(&t.error)),
                    (
                        "integrity".into(),
                        Value::Record(vec![
                            ("source_rows".into(), l(t.integrity.source_rows)),
                            ("topic_rows".into(), l(t.integrity.topic_rows)),
                            ("staged_rows".into(), l(t.integrity.staged_rows)),
                            ("passed".into(), Value::Boolean(t.integrity.passed)),
                        ]),
                    ),
                ])
            })
            .collect();
        Value::Record(vec![
            ("event_type".into(), Value::String(self.event_type.clone())),
            ("load_id".into(), Value::String(self.load_id.clone())),
            ("trigger".into(), Value::String(self.trigger.clone())),
            ("timestamp".into(), Value::TimestampMillis(self.timestamp)),
            ("error".into(), s(&self.error)),
            ("tables".into(), Value::Array(tables)),
        ])
    }
}

pub struct Loader {
    pub ep: Endpoints,
    pub lake: crate::lake::location::Lake,
    topics: LeadTopics,
    cdc: CdcConfig,
    cfg: LoaderConfig,
    status: Status,
    registry: RegistryClient,
    producer: FutureProducer,
    key: Registered,
    value: Registered,
    backoff: Backoff,
    load_lock: tokio::sync::Mutex<()>,
    pub jobs: jobs::Jobs,
}

fn load_id(trigger: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{trigger}-{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f"), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl Loader {
    pub async fn new(ep: &Endpoints, lake: &crate::lake::location::Lake, topics: LeadTopics, cdc: CdcConfig, cfg: LoaderConfig) -> Result<Arc<Self>> {
        let registry = RegistryClient::new(&ep.registry_url);
        let backoff = Backoff::from_env();
        let (key, value) = backoff
            .retry("registering the load event schemas", || Registered::topic(&registry, &topics.data_loaded, crate::leads::schemas::LOADED_KEY, crate::leads::schemas::LOADED_VALUE))
            .await?;
        crate::kafka::admin::ensure_topics(&ep.brokers, &[crate::kafka::admin::TopicSpec { name: topics.data_loaded.clone(), partitions: 1, compact: false }]).await?;
        Ok(Arc::new(Loader {
            ep: ep.clone(),
            lake: lake.clone(),
            producer: crate::kafka::producer_config(&ep.brokers, None).create()?,
            topics,
            cdc,
            cfg,
            status: Default::default(),
            registry,
            key,
            value,
            backoff,
            load_lock: Default::default(),
            jobs: Default::default(),
        }))
    }

    pub fn silver_path(&self, t: &StagedTable) -> url::Url {
        self.lake.table("silver", t.staged)
    }

    fn topic(&self, t: &StagedTable) -> String {
        self.topics.names.cdc(t.source)
    }

    fn sink_config(&self) -> SinkConfig {
        SinkConfig {
            processor: PROCESSOR.into(),
            brokers: self.ep.brokers.clone(),
            registry_url: self.ep.registry_url.clone(),
            dead_letter_topic: self.topics.names.dead_letters(PROCESSOR),
            tables: STAGED
                .iter()
                .map(|t| SinkTable {
                    topic: self.topic(t),
                    url: self.silver_path(t),
                    key: vec![],
                    shape: RowShape::Cdc,
                    comment: format!("silver {}: {} merged by key from CDC", t.staged, t.source),
                })
                .collect(),
            flush_ms: self.cfg.silver_flush_ms,
            checkpoint_interval: 20,
            until_caught_up: false,
        }
    }

    /// Stage continuously and publish a load event after each catch-up.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        let sink = merge_sink::run(self.sink_config(), self.status.clone());
        let watch = self.clone().watch_catch_up();
        tokio::try_join!(async { sink.await.map(|_| ()) }, watch)?;
        Ok(())
    }

    /// Keys merged so far and whether every partition of the table's topic is committed up to `ends`.
    fn progress(&self, topic: &str, ends: &[(String, i32, i64)]) -> (u64, bool) {
        let status = self.status.lock().map(|s| s.get(topic).cloned()).ok().flatten().unwrap_or_default();
        let caught_up = ends.iter().filter(|(t, ..)| t == topic).all(|(_, p, hi)| status.committed.get(p).is_some_and(|c| c >= hi));
        (status.keys_merged, caught_up)
    }

    /// The high watermark of every partition of the staged topics.
    async fn ends(&self) -> Result<Vec<(String, i32, i64)>> {
        topic_ends(&self.ep.brokers, STAGED.iter().map(|t| self.topic(t)).collect()).await
    }

    async fn watch_catch_up(self: Arc<Self>) -> Result<()> {
        for t in STAGED {
            merge_sink::wait_for_topic(&self.ep.brokers, &self.topic(t)).await?;
        }
        let mut behind_since: Option<Instant> = Some(Instant::now());
        let mut merged_at_last_event: HashMap<String, u64> = HashMap::new();
        let mut last_event: Option<Instant> = None;
        while !shutdown::requested() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // A failed watermark query just waits a turn.
            let Ok(ends) = self.ends().await else { continue };
            let caught_up = STAGED.iter().all(|t| self.progress(&self.topic(t), &ends).1);
            if !caught_up {
                behind_since.get_or_insert_with(Instant::now);
                continue;
            }
            let due = last_event.is_none_or(|t| t.elapsed() >= Duration::from_secs(self.cfg.event_interval_s));
            let Some(since) = behind_since else { continue };
            if !due {
                continue;
            }
            // A load request reports on its own; never interleave with one.
            let Ok(_guard) = self.load_lock.try_lock() else { continue };
            let mut tables = vec![];
            for t in STAGED {
                let topic = self.topic(t);
                let merged = self.progress(&topic, &ends).0;
                let before = merged_at_last_event.insert(topic.clone(), merged).unwrap_or(0);
                tables.push(self.table_result(t, (merged - before) as i64, since.elapsed(), None).await);
            }
            let event = LoadEvent::new(&load_id("catch-up"), "catch-up", tables);
            self.publish(&event).await?;
            behind_since = None;
            last_event = Some(Instant::now());
        }
        Ok(())
    }

    /// Integrity of one table and its result line (a failure named by `error` or by a mismatch).
    async fn table_result(&self, t: &StagedTable, records: i64, took: Duration, error: Option<String>) -> TableLoad {
        let mut integrity = Integrity::default();
        let mut error = error;
        if error.is_none() {
            let source = self.backoff.retry(&format!("counting {}", t.source), || integrity::source_rows(&self.ep.source_pg_url, t.source)).await;
            let topic = integrity::topic_live_keys(&self.ep.brokers, &self.registry, &self.topic(t)).await;
            let staged = integrity::staged_rows(&self.silver_path(t)).await;
            integrity.source_rows = source.as_ref().ok().copied();
            integrity.topic_rows = topic.as_ref().ok().copied();
            integrity.staged_rows = staged.as_ref().ok().copied();
            integrity.passed = matches!((&source, &topic, &staged), (Ok(a), Ok(b), Ok(c)) if a == b && b == c);
            error = match (source, topic, staged) {
                (Err(e), ..) => Some(format!("source count: {e:#}")),
                (_, Err(e), _) => Some(format!("topic count: {e:#}")),
                (.., Err(e)) => Some(format!("staged count: {e:#}")),
                (Ok(a), Ok(b), Ok(c)) if !integrity.passed => Some(format!("integrity check failed: source {a}, topic {b}, staged {c}")),
                _ => None,
            };
        }
        TableLoad {
            table: t.staged.to_string(),
            status: if error.is_none() { "success" } else { "failed" }.into(),
            records_loaded: records,
            duration_ms: took.as_millis() as i64,
            error,
            integrity,
        }
    }

    async fn publish(&self, event: &LoadEvent) -> Result<()> {
        let key = self.key.encode(Value::Record(vec![("load_id".into(), Value::String(event.load_id.clone()))]))?;
        let value = self.value.encode(event.to_value())?;
        self.producer
            .send(FutureRecord::to(&self.topics.data_loaded).key(&key).payload(&value), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("publishing the load event to {}", self.topics.data_loaded))?;
        let level_ok = event.succeeded();
        if level_ok {
            tracing::info!(load_id = event.load_id, trigger = event.trigger, tables = ?event.tables.iter().map(|t| (&t.table, t.integrity.staged_rows)).collect::<Vec<_>>(), "marketing data loaded");
        } else {
            tracing::warn!(load_id = event.load_id, trigger = event.trigger, error = ?event.error, "marketing data load failed");
        }
        Ok(())
    }

    fn set_job(&self, id: &str, status: &str, progress: String, result: Option<LoadEvent>) {
        self.jobs.set(id, status, progress, result);
    }

    /// `POST /load`: re-snapshot each marketing table, wait until silver caught up with it,
    /// check integrity, publish and return the event. A table whose snapshot fails (after the
    /// retries) is reported failed; the others still load. Re-running never duplicates: the
    /// staged tables are merged by key.
    pub async fn load(&self, id: &str) -> Result<LoadEvent> {
        let _guard = self.load_lock.lock().await;
        self.set_job(id, "running", "starting".into(), None);
        let mut tables = vec![];
        for t in STAGED {
            let t0 = Instant::now();
            let topic = self.topic(t);
            let merged_before = self.progress(&topic, &[]).0;
            self.set_job(id, "running", format!("snapshot of {}", t.source), None);
            let name = format!("{}_load_{}", self.cdc.name, t.slot_tag);
            let mut cfg = self.cdc.clone();
            cfg.name = name.clone();
            cfg.tables = vec![t.source.to_string()];
            cfg.snapshot_only = true;
            // Its reads go to the same topics as the connector's, marked as this load's.
            cfg.load_id = Some(id.to_string());
            let ep = &self.ep;
            let snapshot = self
                .backoff
                .retry(&format!("snapshot of {}", t.source), || {
                    let (cfg, name) = (cfg.clone(), name.clone());
                    async move {
                        crate::cdc::reset(&ep.source_pg_url, &ep.brokers, &ep.registry_url, &name).await?;
                        let r = crate::cdc::run(&ep.source_pg_url, &ep.brokers, &ep.registry_url, cfg).await;
                        // The load's slot has done its job: drop it so it holds no WAL.
                        crate::cdc::reset(&ep.source_pg_url, &ep.brokers, &ep.registry_url, &name).await?;
                        r
                    }
                })
                .await;
            let error = match snapshot {
                Err(e) => Some(format!("{e:#}")),
                Ok(_) => {
                    self.set_job(id, "running", format!("staging {}", t.staged), None);
                    self.wait_staged(&topic).await.err().map(|e| format!("{e:#}"))
                }
            };
            let merged = self.progress(&topic, &[]).0 - merged_before;
            tables.push(self.table_result(t, merged as i64, t0.elapsed(), error).await);
        }
        let event = LoadEvent::new(id, "request", tables);
        self.publish(&event).await?;
        self.set_job(id, if event.succeeded() { "succeeded" } else { "failed" }, "done".into(), Some(event.clone()));
        Ok(event)
    }

    async fn wait_staged(&self, topic: &str) -> Result<()> {
        let ends = topic_ends(&self.ep.brokers, vec![topic.to_string()]).await?;
        let deadline = Instant::now() + Duration::from_secs(self.cfg.load_timeout_s);
        while !self.progress(topic, &ends).1 {
            if Instant::now() > deadline {
                anyhow::bail!("silver did not catch up with {topic} within {} s", self.cfg.load_timeout_s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub fn new_load_id(&self) -> String {
        load_id("request")
    }

    pub fn processors_health(&self) -> serde_json::Value {
        serde_json::to_value(processor_health::snapshot()).unwrap_or_default()
    }
}

/// The high watermark of every partition of `topics` (broker round trips, off the async threads).
async fn topic_ends(brokers: &str, topics: Vec<String>) -> Result<Vec<(String, i32, i64)>> {
    let b = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = crate::kafka::client_config(&b).create()?;
        let mut parts = vec![];
        for t in topics {
            for p in 0..crate::kafka::admin::partition_count(&b, &t)? {
                parts.push((t.clone(), p));
            }
        }
        Ok(crate::kafka::watermarks(&consumer, &parts)?.into_iter().map(|(t, p, _, hi)| (t, p, hi)).collect())
    })
    .await?
}
