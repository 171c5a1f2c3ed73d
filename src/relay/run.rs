//! `funnel run relay`: the relay's processors — the CDC connector of the relay tables and
//! the intake (inbox rows → `relay.event.received.v1`).

use anyhow::{Context, Result};

use super::intake::{self, Intake};
use super::topics::{RelayConfig, RelayTopics, CDC_TABLES};
use crate::cdc::CdcConfig;
use crate::kafka::admin::{ensure_topics, TopicSpec};
use crate::kafka::batch_producer::Delivery;
use crate::lake::merge_sink::wait_for_topic;
use crate::registry::RegistryClient;
use crate::runtime::processor::{self, LoopConfig};

/// The CDC connector of the relay tables. One partition per table: the inbox's insert order
/// is each storefront's event order, and the intake keeps it.
pub fn cdc_config(cfg: &RelayConfig, delivery: Delivery) -> CdcConfig {
    CdcConfig {
        name: cfg.cdc_name.clone(),
        topic_prefix: cfg.cdc_prefix.clone(),
        schemas: vec!["relay".into()],
        publication: format!("funnel_{}", cfg.cdc_name),
        tables: CDC_TABLES.iter().map(|t| t.to_string()).collect(),
        snapshot_only: false,
        load_id: None,
        partitions: 1,
        snapshot_chunk: 10_000,
        max_changes: 20_000,
        poll_ms: 50,
        delivery,
    }
}

/// Migrate the relay schema (CDC needs its tables), then stream it.
pub async fn run_cdc(pg_url: &str, brokers: &str, registry_url: &str, cfg: CdcConfig) -> Result<()> {
    super::db::migrate(pg_url).await?;
    crate::cdc::run(pg_url, brokers, registry_url, cfg).await.map(|_| ())
}

pub async fn run_intake(brokers: &str, registry_url: &str, topics: RelayTopics, delivery: Delivery) -> Result<()> {
    let registry = RegistryClient::waiting_for(registry_url, intake::PROCESSOR);
    wait_for_topic(brokers, &topics.marketing_events).await?;
    ensure_topics(
        brokers,
        &[
            TopicSpec { name: topics.received.clone(), partitions: 3, compact: false },
            TopicSpec { name: topics.names.dead_letters(intake::PROCESSOR), partitions: 1, compact: false },
        ],
    )
    .await?;
    processor::fence(brokers, &topics.names.group(intake::PROCESSOR), delivery).await?;
    let transform = Intake::open(&registry, topics.clone()).await?;
    let cfg = LoopConfig { batch_ms: 50, ..LoopConfig::namespaced(intake::PROCESSOR, brokers, vec![topics.marketing_events.clone()], delivery, &topics.names) };
    processor::run(cfg, transform).await.context(intake::PROCESSOR)
}
