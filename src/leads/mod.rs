//! The lead pipeline (the seed's lead processor, rebuilt on the backbone's topics):
//! `seller-metrics` (order items → lifetime metrics per seller), `leads` (MQLs ⟕ closed deals
//! ⟕ seller metrics → the lead dimension, its processed events and the gold Delta table
//! `gold/m_dim.lead`). The staging side (silver `m_data` tables, load events, the service
//! API) is `crate::loader`.

pub mod join;
pub mod lead;
pub mod lead_inputs;
pub mod names;
pub mod replay;
pub mod seller_items;
pub mod seller_metrics;


use anyhow::{Context, Result};

use crate::kafka::batch_producer::Delivery;
use crate::lake::location::Lake;
use crate::lake::merge_sink::{self, RowShape, SinkConfig, SinkTable};
use crate::registry::RegistryClient;
use crate::runtime::processor::{self, LoopConfig};
use names::LeadTopics;

/// The Avro schemas of the lead pipeline's topics (the files under schemas/ are the source).
pub mod schemas {
    pub const SELLER_KEY: &str = include_str!("../../schemas/ecommerce/ecommerce.seller.metrics.v1-key.avsc");
    pub const SELLER_VALUE: &str = include_str!("../../schemas/ecommerce/ecommerce.seller.metrics.v1-value.avsc");
    pub const LEAD_KEY: &str = include_str!("../../schemas/marketing/marketing.lead.v1-key.avsc");
    pub const LEAD_VALUE: &str = include_str!("../../schemas/marketing/marketing.lead.v1-value.avsc");
    pub const LEAD_PROCESSED_VALUE: &str = include_str!("../../schemas/marketing/marketing.lead.processed.v1-value.avsc");
    pub const LOADED_KEY: &str = include_str!("../../schemas/marketing/marketing.data.loaded.v1-key.avsc");
    pub const LOADED_VALUE: &str = include_str!("../../schemas/marketing/marketing.data.loaded.v1-value.avsc");
}

pub const GOLD_PROCESSOR: &str = "leads-gold";

/// `<lake>/gold/m_dim.lead`.
pub fn gold_path(lake: &Lake) -> url::Url {
    lake.table("gold", "m_dim.lead")
}

#[derive(clap::Args, Clone, Debug)]
pub struct LeadsConfig {
    /// Records per transaction of the seller-metrics and leads processors.
    #[arg(long = "leads-batch", default_value_t = 5000)]
    pub leads_batch_max: usize,
    /// Longest wait to fill a batch (end-to-end latency floor).
    #[arg(long = "leads-batch-ms", default_value_t = 200)]
    pub leads_batch_ms: u64,
    /// Longest wait for an input partition of seller-metrics or leads that has nothing
    /// buffered but is not consumed to its end (event-time alignment of their inputs; 0 = no
    /// alignment, records in the order they are fetched).
    #[arg(long = "leads-align-idle-ms", default_value_t = 2000)]
    pub leads_align_idle_ms: u64,
    /// Gold table commit interval.
    #[arg(long = "gold-flush-ms", default_value_t = 500)]
    pub gold_flush_ms: u64,
}

fn loop_config(processor: &str, brokers: &str, topics: &LeadTopics, inputs: Vec<String>, delivery: Delivery, cfg: &LeadsConfig, stop_when_idle: bool) -> LoopConfig {
    let mut c = LoopConfig::namespaced(processor, brokers, inputs, delivery, &topics.names);
    c.batch_max = cfg.leads_batch_max;
    c.batch_ms = cfg.leads_batch_ms;
    c.stop_when_idle = stop_when_idle;
    c.align = crate::runtime::align::Alignment::for_batches(cfg.leads_align_idle_ms, cfg.leads_batch_max);
    c
}

/// seller-metrics and leads see their records in event-time order (topology/processors.toml).
pub const ORDERING: &str = crate::runtime::align::RECORD_TIMESTAMP;

/// `funnel run seller-metrics`: both of its steps in this process — the repartition step
/// (order items and sellers re-keyed by seller) and the aggregate per seller. Live, they run
/// side by side; bounded (a replay), the aggregate starts once the first step consumed its
/// inputs to their end.
pub async fn run_seller_metrics(brokers: &str, registry_url: &str, topics: LeadTopics, delivery: Delivery, cfg: &LeadsConfig, stop_when_idle: bool) -> Result<()> {
    let registry = RegistryClient::waiting_for(registry_url, seller_metrics::PROCESSOR);
    for t in [&topics.order_items, &topics.sellers] {
        merge_sink::wait_for_topic(brokers, t).await?;
    }
    ensure_dead_letters(brokers, &topics, seller_items::PROCESSOR).await?;
    ensure_dead_letters(brokers, &topics, seller_metrics::PROCESSOR).await?;
    crate::kafka::admin::ensure_topics(brokers, &[crate::kafka::admin::TopicSpec { name: topics.seller_metrics.clone(), partitions: 3, compact: true }]).await?;
    let repartition = async {
        let transform = seller_items::SellerItemsTransform::open(brokers, &registry, topics.clone()).await?;
        let lc = loop_config(seller_items::PROCESSOR, brokers, &topics, transform.inputs(), delivery, cfg, stop_when_idle);
        run_step(lc, transform).await.context("seller-metrics repartition step")
    };
    let aggregate = async {
        let transform = seller_metrics::SellerMetricsTransform::open(brokers, &registry, topics.clone()).await?;
        let mut lc = loop_config(seller_metrics::PROCESSOR, brokers, &topics, transform.inputs(), delivery, cfg, stop_when_idle);
        // Sellers are independent of each other: no order across partitions to wait for.
        lc.align = None;
        run_step(lc, transform).await.context("seller-metrics")
    };
    two_steps(repartition, aggregate, stop_when_idle).await
}

/// One step of a two-step processor, as this instance (`--instance-id`): its own previous
/// run fenced, then its loop.
async fn run_step<T: processor::Transform>(mut lc: LoopConfig, transform: T) -> Result<()> {
    lc.instance_id = crate::runtime::instance::id();
    processor::fence(&lc.brokers, &lc.transactional_id(), lc.delivery).await?;
    processor::run(lc, transform).await
}

/// Live, both steps run side by side; bounded (a replay), the second starts once the first
/// consumed its inputs to their end.
async fn two_steps(first: impl std::future::Future<Output = Result<()>>, second: impl std::future::Future<Output = Result<()>>, bounded: bool) -> Result<()> {
    if bounded {
        first.await?;
        second.await
    } else {
        tokio::try_join!(first, second).map(|_| ())
    }
}

/// `funnel run leads`: both of its steps in this process — the repartition step (MQLs and
/// closed deals re-keyed by mql_id) and the join of MQLs, closed deals and seller metrics
/// into the lead topic (`leads-gold` writes the gold table from it). Each is a consumer group
/// that N instances (distinct --instance-id) share. Live, they run side by side; bounded (a
/// replay), the join starts once the first step consumed its inputs to their end.
pub async fn run_leads(brokers: &str, registry_url: &str, topics: LeadTopics, delivery: Delivery, cfg: &LeadsConfig, stop_when_idle: bool) -> Result<()> {
    use crate::kafka::admin::{ensure_topics, TopicSpec};
    let registry = RegistryClient::waiting_for(registry_url, join::PROCESSOR);
    for t in [&topics.mqls, &topics.closed_deals] {
        merge_sink::wait_for_topic(brokers, t).await?;
    }
    ensure_topics(brokers, &[
        TopicSpec { name: topics.seller_metrics.clone(), partitions: 3, compact: true },
        // Before the join opens: its stores (the lead topic among them) take their partition
        // count from it.
        TopicSpec { name: topics.lead_repartition(), partitions: topics.lead_partitions, compact: false },
    ])
    .await?;
    ensure_dead_letters(brokers, &topics, lead_inputs::PROCESSOR).await?;
    ensure_dead_letters(brokers, &topics, join::PROCESSOR).await?;
    let repartition = async {
        let transform = lead_inputs::LeadInputsTransform::open(&registry, topics.clone()).await?;
        let lc = loop_config(lead_inputs::PROCESSOR, brokers, &topics, transform.inputs(), delivery, cfg, stop_when_idle);
        run_step(lc, transform).await.context("leads repartition step")
    };
    let join = async {
        let transform = join::LeadsTransform::open(brokers, &registry, topics.clone()).await?;
        let mut lc = loop_config(join::PROCESSOR, brokers, &topics, transform.inputs(), delivery, cfg, stop_when_idle);
        // Leads are independent of each other, and each lead's changes keep the order the
        // repartition step (aligned by event time) gave them: nothing to wait for.
        lc.align = None;
        run_step(lc, transform).await.context("leads")
    };
    two_steps(repartition, join, stop_when_idle).await
}

/// `funnel run leads-gold`: the gold lead dimension merged from the lead topic; with
/// `until_caught_up`, up to the end the topic had at start.
pub async fn run_leads_gold(brokers: &str, registry_url: &str, lake: &Lake, topics: LeadTopics, cfg: &LeadsConfig, until_caught_up: bool) -> Result<()> {
    merge_sink::run(gold_config(brokers, registry_url, lake, &topics, cfg, until_caught_up), Default::default()).await.map(|_| ()).context("leads gold table")
}

pub fn gold_config(brokers: &str, registry_url: &str, lake: &Lake, topics: &LeadTopics, cfg: &LeadsConfig, until_caught_up: bool) -> SinkConfig {
    SinkConfig {
        processor: GOLD_PROCESSOR.into(),
        brokers: brokers.into(),
        registry_url: registry_url.into(),
        dead_letter_topic: topics.names.dead_letters(GOLD_PROCESSOR),
        tables: vec![SinkTable {
            topic: topics.lead.clone(),
            url: gold_path(lake),
            key: vec!["lead_id".into()],
            shape: RowShape::Keyed { value_schema: schemas::LEAD_VALUE.into(), delete_when: None },
            comment: "gold m_dim.lead: the lead dimension, merged by lead_id from marketing.lead.v1".into(),
        }],
        flush_ms: cfg.gold_flush_ms,
        checkpoint_interval: 20,
        until_caught_up,
    }
}

async fn ensure_dead_letters(brokers: &str, topics: &LeadTopics, processor: &str) -> Result<()> {
    crate::kafka::admin::ensure_topics(brokers, &[crate::kafka::admin::TopicSpec { name: topics.names.dead_letters(processor), partitions: 1, compact: false }]).await?;
    Ok(())
}
