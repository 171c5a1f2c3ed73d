//! Customer 360 (the marketing-engine seed's Redpanda → ksqlDB → Spark Delta → web UI, as
//! funnel processors):
//! - `c360` (`engine`): the ksql-style SQL of `sql/c360/` on DataFusion per micro-batch, with
//!   keyed state and a compacted changelog → `dom.customer.order.enriched.v1`,
//!   `dom.customer.consolidated.v1`, `dom.customer.segment.v1`;
//! - `lake`: silver `c360.customer` / `c360.order` and gold `c360`, merged by key;
//! - `cache` (`cache`): the consolidated view in Redis, versioned, for the web page of
//!   `funnel serve`.

pub mod cache;
pub mod definitions;
pub mod engine;
pub mod relations;
pub mod replay;
pub mod state;
pub mod timers;
pub mod view;

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::kafka::admin::{ensure_topics, TopicSpec};
use crate::kafka::batch_producer::Delivery;
use crate::lake::location::Lake;
use crate::lake::merge_sink::{self, RowShape, SinkConfig, SinkTable};
use crate::registry::RegistryClient;
use crate::runtime::align::Alignment;
use crate::runtime::processor::{self, LoopConfig};
use crate::topology::names::TopicNames;

pub const PROCESSOR: &str = "c360";
pub const LAKE_PROCESSOR: &str = "lake";
pub const CACHE_PROCESSOR: &str = "cache";
/// The engine sees its records in event-time order (topology/processors.toml `ordering`).
pub const ORDERING: &str = crate::runtime::align::RECORD_TIMESTAMP;

pub mod schemas {
    pub const ENRICHED_VALUE: &str = include_str!("../../schemas/dom/dom.customer.order.enriched.v1-value.avsc");
    pub const CONSOLIDATED_VALUE: &str = include_str!("../../schemas/dom/dom.customer.consolidated.v1-value.avsc");
    pub const SEGMENT_VALUE: &str = include_str!("../../schemas/dom/dom.customer.segment.v1-value.avsc");
}

#[derive(Clone, Debug)]
pub struct C360Topics {
    pub names: TopicNames,
    pub profile: String,
    pub order_created: String,
    pub order_updated: String,
    pub enriched: String,
    pub consolidated: String,
    pub segment: String,
}

impl C360Topics {
    pub fn new(names: TopicNames) -> Self {
        C360Topics {
            profile: names.owned("dom.customer.profile.upsert.v1"),
            order_created: names.owned("dom.order.created.v1"),
            order_updated: names.owned("dom.order.updated.v1"),
            enriched: names.owned("dom.customer.order.enriched.v1"),
            consolidated: names.owned("dom.customer.consolidated.v1"),
            segment: names.owned("dom.customer.segment.v1"),
            names,
        }
    }

    /// The domain topics c360 reads (the profile topic is compacted: latest per customer).
    pub fn inputs(&self) -> Vec<TopicSpec> {
        [&self.profile, &self.order_created, &self.order_updated]
            .into_iter()
            .map(|t| TopicSpec { name: t.clone(), partitions: 3, compact: t == &self.profile })
            .collect()
    }

    /// The topics c360 writes, its dead-letter topic included.
    pub fn outputs(&self) -> Vec<TopicSpec> {
        vec![
            TopicSpec { name: self.enriched.clone(), partitions: 3, compact: false },
            TopicSpec { name: self.consolidated.clone(), partitions: 3, compact: true },
            TopicSpec { name: self.segment.clone(), partitions: 3, compact: false },
            TopicSpec { name: self.names.dead_letters(PROCESSOR), partitions: 1, compact: false },
        ]
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct C360Config {
    /// Directory of the c360 SQL definitions (default: the built-in copy of sql/c360/).
    #[arg(long = "c360-sql-dir")]
    pub sql_dir: Option<PathBuf>,
    /// Records per micro-batch (one DataFusion run and one Kafka transaction).
    #[arg(long = "c360-batch", default_value_t = 5000)]
    pub batch_max: usize,
    /// Longest wait to fill a micro-batch (end-to-end latency floor).
    #[arg(long = "c360-batch-ms", default_value_t = 200)]
    pub batch_ms: u64,
    /// Longest wait for an input partition that has nothing buffered but is not consumed to
    /// its end, before records go on without it (event-time alignment across the profile,
    /// created and updated topics; 0 = no alignment, records in the order they are fetched).
    #[arg(long = "c360-align-idle-ms", default_value_t = 2000)]
    pub align_idle_ms: u64,
    /// Commit interval of the silver and gold c360 tables (`lake`).
    #[arg(long = "c360-lake-flush-ms", default_value_t = 500)]
    pub lake_flush_ms: u64,
    /// Key prefix of the consolidated view in Redis (`cache`).
    #[arg(long = "redis-prefix", env = "FUNNEL_REDIS_PREFIX", default_value = "c360")]
    pub redis_prefix: String,
}

/// `funnel run c360`: the SQL engine.
pub async fn run(brokers: &str, registry_url: &str, topics: C360Topics, delivery: Delivery, cfg: &C360Config, stop_when_idle: bool) -> Result<()> {
    let registry = RegistryClient::waiting_for(registry_url, PROCESSOR);
    let sql = definitions::C360Sql::load(cfg.sql_dir.as_deref())?;
    ensure_topics(brokers, &[topics.inputs(), topics.outputs()].concat()).await?;
    crate::runtime::instance::single(PROCESSOR);
    processor::fence(brokers, &topics.names.group(PROCESSOR), delivery).await?;
    let engine = engine::C360Engine::open(brokers, &registry, topics.clone(), sql).await?;
    let mut lc = LoopConfig::namespaced(PROCESSOR, brokers, engine.inputs(), delivery, &topics.names);
    lc.batch_max = cfg.batch_max;
    lc.batch_ms = cfg.batch_ms;
    lc.stop_when_idle = stop_when_idle;
    lc.align = Alignment::for_batches(cfg.align_idle_ms, cfg.batch_max);
    processor::run(lc, engine).await.context("c360")
}

/// `<lake>/silver/c360.customer`, `<lake>/silver/c360.order`, `<lake>/gold/c360`.
pub fn table_paths(lake: &Lake) -> [url::Url; 3] {
    [lake.table("silver", "c360.customer"), lake.table("silver", "c360.order"), lake.table("gold", "c360")]
}

/// The `lake` processor's tables: silver customers (the profile topic), silver orders (latest
/// enriched state per order; a `deleted` event removes it), gold c360 (consolidated).
pub fn lake_config(brokers: &str, registry_url: &str, lake: &Lake, topics: &C360Topics, cfg: &C360Config, until_caught_up: bool) -> SinkConfig {
    let [customers, orders, gold] = table_paths(lake);
    let keyed = |value_schema: &str| RowShape::Keyed { value_schema: value_schema.into(), delete_when: None };
    SinkConfig {
        processor: LAKE_PROCESSOR.into(),
        brokers: brokers.into(),
        registry_url: registry_url.into(),
        dead_letter_topic: topics.names.dead_letters(LAKE_PROCESSOR),
        tables: vec![
            SinkTable {
                topic: topics.profile.clone(),
                url: customers,
                key: vec!["customer_id".into()],
                shape: keyed(crate::domain::schemas::PROFILE_VALUE),
                comment: "silver c360.customer: latest profile per customer from dom.customer.profile.upsert.v1".into(),
            },
            SinkTable {
                topic: topics.enriched.clone(),
                url: orders,
                key: vec!["order_id".into()],
                shape: RowShape::Keyed { value_schema: schemas::ENRICHED_VALUE.into(), delete_when: Some(("event_type".into(), "deleted".into())) },
                comment: "silver c360.order: latest enriched state per order from dom.customer.order.enriched.v1".into(),
            },
            SinkTable {
                topic: topics.consolidated.clone(),
                url: gold,
                key: vec!["customer_id".into()],
                shape: keyed(schemas::CONSOLIDATED_VALUE),
                comment: "gold c360: one row per customer from dom.customer.consolidated.v1".into(),
            },
        ],
        flush_ms: cfg.lake_flush_ms,
        checkpoint_interval: 20,
        until_caught_up,
    }
}

/// `funnel run lake`.
pub async fn run_lake(brokers: &str, registry_url: &str, lake: &Lake, topics: C360Topics, cfg: &C360Config, until_caught_up: bool) -> Result<()> {
    ensure_topics(brokers, &topics.outputs()).await?;
    merge_sink::run(lake_config(brokers, registry_url, lake, &topics, cfg, until_caught_up), Default::default()).await.context("lake")?;
    Ok(())
}
