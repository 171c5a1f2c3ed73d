//! `funnel run relay`: the relay's processors — the CDC connector of the relay tables, the
//! intake (inbox rows → `relay.event.received.v1`), the router (→ one delivery request per
//! destination) and the delivery workers (→ destinations, attempts, retries, dead letters).

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
    // Stateless: instances share the group, each with its own transactional id.
    let cfg = LoopConfig { batch_ms: 50, instance_id: crate::runtime::instance::id(), ..LoopConfig::namespaced(intake::PROCESSOR, brokers, vec![topics.marketing_events.clone()], delivery, &topics.names) };
    processor::fence(brokers, &cfg.transactional_id(), delivery).await?;
    let transform = Intake::open(&registry, topics.clone()).await?;
    processor::run(cfg, transform).await.context(intake::PROCESSOR)
}

pub async fn run_route(brokers: &str, registry_url: &str, topics: RelayTopics, delivery: Delivery) -> Result<()> {
    use super::route::{Router, PROCESSOR};
    let registry = RegistryClient::waiting_for(registry_url, PROCESSOR);
    wait_for_topic(brokers, &topics.received).await?;
    ensure_topics(
        brokers,
        &[
            TopicSpec { name: topics.requested.clone(), partitions: 3, compact: false },
            TopicSpec { name: topics.names.dead_letters(PROCESSOR), partitions: 1, compact: false },
        ],
    )
    .await?;
    let config = super::config_state::follow(brokers, &registry, &topics).await?;
    // The configuration is a global table every instance reads whole: instances share the
    // events' partitions, each with its own transactional id.
    let cfg = LoopConfig { batch_ms: 50, instance_id: crate::runtime::instance::id(), ..LoopConfig::namespaced(PROCESSOR, brokers, vec![topics.received.clone()], delivery, &topics.names) };
    processor::fence(brokers, &cfg.transactional_id(), delivery).await?;
    let transform = Router::open(&registry, config, &topics.requested).await?;
    processor::run(cfg, transform).await.context(PROCESSOR)
}

/// The delivery workers. At-least-once by design: a request is sent before its offset commits,
/// so a crash in between sends it again (the audit stops re-sends of anything that ended).
pub async fn run_deliver(pg_url: &str, brokers: &str, registry_url: &str, stack_dir: &std::path::Path, cfg: RelayConfig, topics: RelayTopics) -> Result<()> {
    use super::deliver::{Deliverer, PROCESSOR};
    let registry = RegistryClient::waiting_for(registry_url, PROCESSOR);
    let keys = std::sync::Arc::new(super::crypto::Keyring::load(stack_dir)?);
    super::db::migrate(pg_url).await?;
    let pool = super::db::pool(pg_url, 4)?;
    wait_for_topic(brokers, &topics.requested).await?;
    let mut specs = vec![
        TopicSpec { name: topics.attempts.clone(), partitions: 3, compact: false },
        TopicSpec { name: topics.dlq.clone(), partitions: 1, compact: false },
        TopicSpec { name: topics.names.dead_letters(PROCESSOR), partitions: 1, compact: false },
    ];
    let mut inputs = vec![topics.requested.clone()];
    for n in 2..=cfg.max_attempts {
        specs.push(TopicSpec { name: topics.retry(n), partitions: 3, compact: false });
        inputs.push(topics.retry(n));
    }
    ensure_topics(brokers, &specs).await?;
    let config = super::config_state::follow(brokers, &registry, &topics).await?;
    let transform = Deliverer::open(&registry, config, keys, pool, cfg, topics.clone()).await?;
    let cfg = LoopConfig { batch_max: 2000, batch_ms: 100, ..LoopConfig::namespaced(PROCESSOR, brokers, inputs, Delivery::AtLeastOnce, &topics.names) };
    processor::run(cfg, transform).await.context(PROCESSOR)
}
