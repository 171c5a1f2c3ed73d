//! `funnel run propensity`: the two scoring loops, each supervised on its own, (customers from
//! `dom.customer.consolidated.v1`, leads from `marketing.lead.v1`) and the gold tables of
//! their score topics; `funnel replay propensity` rescores everything with the current models.

use std::path::Path;

use anyhow::{Context, Result};

use super::features::ModelKind;
use super::scorer::{processor, Scorer};
use crate::avro::Registered;
use crate::kafka::admin::{self, ensure_topics, TopicSpec};
use crate::kafka::batch_producer::Delivery;
use crate::lake::location::Lake;
use crate::lake::merge_sink::{self, RowShape, SinkConfig, SinkTable};
use crate::registry::RegistryClient;
use crate::runtime::processor::{self, LoopConfig};
use crate::topology::names::TopicNames;

pub const GOLD_PROCESSOR: &str = "propensity-gold";

pub mod schemas {
    pub const CUSTOMER_KEY: &str = include_str!("../../schemas/propensity/dom.customer.propensity.v1-key.avsc");
    pub const CUSTOMER_VALUE: &str = include_str!("../../schemas/propensity/dom.customer.propensity.v1-value.avsc");
    pub const LEAD_KEY: &str = include_str!("../../schemas/propensity/marketing.lead.score.v1-key.avsc");
    pub const LEAD_VALUE: &str = include_str!("../../schemas/propensity/marketing.lead.score.v1-value.avsc");
}

#[derive(clap::Args, Clone, Debug)]
pub struct PropensityConfig {
    /// Records per transaction of the scoring loops.
    #[arg(long = "propensity-batch", default_value_t = 5000)]
    pub propensity_batch_max: usize,
    /// Longest wait to fill a batch (end-to-end latency floor).
    #[arg(long = "propensity-batch-ms", default_value_t = 200)]
    pub propensity_batch_ms: u64,
    /// Commit interval of the gold score tables.
    #[arg(long = "propensity-gold-flush-ms", default_value_t = 500)]
    pub propensity_gold_flush_ms: u64,
}

/// The topics of one model: what it scores and where the scores go.
#[derive(Clone, Debug)]
pub struct ScoreTopics {
    pub names: TopicNames,
    pub customers_in: String,
    pub customers_out: String,
    pub leads_in: String,
    pub leads_out: String,
}

impl ScoreTopics {
    pub fn new(names: TopicNames) -> Self {
        ScoreTopics {
            customers_in: names.owned("dom.customer.consolidated.v1"),
            customers_out: names.owned("dom.customer.propensity.v1"),
            leads_in: names.owned("marketing.lead.v1"),
            leads_out: names.owned("marketing.lead.score.v1"),
            names,
        }
    }

    fn of(&self, kind: ModelKind) -> (&str, &str, &'static str, &'static str) {
        match kind {
            ModelKind::Customers => (&self.customers_in, &self.customers_out, schemas::CUSTOMER_KEY, schemas::CUSTOMER_VALUE),
            ModelKind::Leads => (&self.leads_in, &self.leads_out, schemas::LEAD_KEY, schemas::LEAD_VALUE),
        }
    }

    pub fn outputs(&self) -> Vec<TopicSpec> {
        let mut out = vec![TopicSpec { name: self.customers_out.clone(), partitions: 3, compact: true }, TopicSpec { name: self.leads_out.clone(), partitions: 3, compact: true }];
        for kind in [ModelKind::Customers, ModelKind::Leads] {
            out.push(TopicSpec { name: self.names.dead_letters(&processor(kind)), partitions: 1, compact: false });
        }
        out
    }
}

/// `<lake>/gold/c360_propensity`, `<lake>/gold/m_dim.lead_score`.
pub fn gold_paths(lake: &Lake) -> [url::Url; 2] {
    [lake.table("gold", "c360_propensity"), lake.table("gold", "m_dim.lead_score")]
}

pub fn gold_config(brokers: &str, registry_url: &str, lake: &Lake, topics: &ScoreTopics, cfg: &PropensityConfig, until_caught_up: bool) -> SinkConfig {
    let [customers, leads] = gold_paths(lake);
    SinkConfig {
        processor: GOLD_PROCESSOR.into(),
        brokers: brokers.into(),
        registry_url: registry_url.into(),
        dead_letter_topic: topics.names.dead_letters(GOLD_PROCESSOR),
        tables: vec![
            SinkTable {
                topic: topics.customers_out.clone(),
                url: customers,
                key: vec!["customer_id".into()],
                shape: RowShape::Keyed { value_schema: schemas::CUSTOMER_VALUE.into(), delete_when: None },
                comment: "gold c360_propensity: the current repurchase score per customer, from dom.customer.propensity.v1".into(),
            },
            SinkTable {
                topic: topics.leads_out.clone(),
                url: leads,
                key: vec!["lead_id".into()],
                shape: RowShape::Keyed { value_schema: schemas::LEAD_VALUE.into(), delete_when: None },
                comment: "gold m_dim.lead_score: the current conversion score per lead, from marketing.lead.score.v1".into(),
            },
        ],
        flush_ms: cfg.propensity_gold_flush_ms,
        checkpoint_interval: 20,
        until_caught_up,
    }
}

/// One scoring loop (`propensity-customers` or `propensity-leads`), once its input topic exists.
pub async fn score(kind: ModelKind, brokers: &str, registry_url: &str, models: &Path, topics: &ScoreTopics, delivery: Delivery, cfg: &PropensityConfig, stop_when_idle: bool) -> Result<()> {
    let name = processor(kind);
    let registry = RegistryClient::waiting_for(registry_url, &name);
    ensure_topics(brokers, &topics.outputs()).await?;
    let (input, output, key_schema, value_schema) = topics.of(kind);
    merge_sink::wait_for_topic(brokers, input).await?;
    let (out_key, out_value) = Registered::topic(&registry, output, key_schema, value_schema).await?;
    let scorer = Scorer::new(kind, registry, models.to_path_buf(), input.to_string(), output.to_string(), out_key, out_value);
    // Stateless: instances share the group, each with its own transactional id.
    let mut lc = LoopConfig { instance_id: crate::runtime::instance::id(), ..LoopConfig::namespaced(&name, brokers, scorer.inputs(), delivery, &topics.names) };
    processor::fence(brokers, &lc.transactional_id(), delivery).await?;
    lc.batch_max = cfg.propensity_batch_max;
    lc.batch_ms = cfg.propensity_batch_ms;
    lc.stop_when_idle = stop_when_idle;
    processor::run(lc, scorer).await.with_context(|| name.clone())
}

/// The gold score tables (`propensity-gold`).
pub async fn gold(brokers: &str, registry_url: &str, lake: &Lake, topics: &ScoreTopics, cfg: &PropensityConfig, until_caught_up: bool) -> Result<()> {
    ensure_topics(brokers, &topics.outputs()).await?;
    merge_sink::run(gold_config(brokers, registry_url, lake, topics, cfg, until_caught_up), Default::default()).await.map(|_| ()).context("propensity gold tables")
}

/// Both scoring loops to the end of their inputs, then the gold tables up to their outputs.
pub async fn run_bounded(brokers: &str, registry_url: &str, lake: &Lake, models: &Path, topics: ScoreTopics, delivery: Delivery, cfg: &PropensityConfig) -> Result<()> {
    let customers = score(ModelKind::Customers, brokers, registry_url, models, &topics, delivery, cfg, true);
    let leads = score(ModelKind::Leads, brokers, registry_url, models, &topics, delivery, cfg, true);
    tokio::try_join!(customers, leads)?;
    gold(brokers, registry_url, lake, &topics, cfg, true).await
}

/// `funnel replay propensity`: every customer and lead scored again with the current models
/// (the score topics are compacted and the gold tables merged by key: the rescored values
/// replace the old ones). The processor must be stopped.
pub async fn replay(brokers: &str, registry_url: &str, lake: &Lake, models: &Path, topics: ScoreTopics, delivery: Delivery, cfg: &PropensityConfig) -> Result<()> {
    for kind in [ModelKind::Customers, ModelKind::Leads] {
        let (input, ..) = topics.of(kind);
        admin::reset_for_replay(brokers, &topics.names.group(&processor(kind)), &[input.to_string()], &[]).await?;
    }
    run_bounded(brokers, registry_url, lake, models, topics, delivery, cfg).await
}
