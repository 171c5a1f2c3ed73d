//! `funnel replay c360`: rebuild customer 360 from its input topics (stop `c360`, `lake` and
//! `cache` first). The engine's changelog and output topics are deleted and its group rewound;
//! the silver and gold c360 tables are removed. Then, in order and each to the end of its
//! input: the engine, the lake tables, and the Redis view (its group rewound to the start of
//! the recreated consolidated topic). Redis is not flushed, so the page keeps answering: the
//! rebuilt state begins a new epoch, the first part of every record's version, so each
//! replayed record replaces the old view of its customer (older ones of the same epoch never
//! do), and the view ends where the inputs say — also where compaction shortened them.

use anyhow::{Context, Result};

use super::{cache, C360Config, C360Topics, CACHE_PROCESSOR, PROCESSOR};
use crate::kafka::admin;
use crate::kafka::batch_producer::Delivery;
use crate::lake::location::{self, Lake};

pub async fn replay(brokers: &str, registry_url: &str, redis_url: &str, lake: &Lake, topics: C360Topics, delivery: Delivery, cfg: &C360Config) -> Result<()> {
    let doomed = vec![topics.names.changelog(PROCESSOR, "state"), topics.enriched.clone(), topics.consolidated.clone(), topics.segment.clone()];
    let inputs: Vec<String> = topics.inputs().into_iter().map(|t| t.name).collect();
    admin::reset_for_replay(brokers, &topics.names.group(PROCESSOR), &inputs, &doomed).await?;
    for table in super::table_paths(lake) {
        if location::remove(&table).await.with_context(|| format!("removing {table}"))? {
            tracing::info!(table = %table, "table removed for the rebuild");
        }
    }
    super::run(brokers, registry_url, topics.clone(), delivery, cfg, true).await?;
    tracing::info!("c360 rebuilt to the end of its inputs");
    super::run_lake(brokers, registry_url, lake, topics.clone(), cfg, true).await?;
    tracing::info!("silver and gold c360 tables rebuilt");
    admin::rewind_group(brokers, &topics.names.group(CACHE_PROCESSOR), &[topics.consolidated.clone()]).await?;
    cache::run(brokers, registry_url, redis_url, topics, &cfg.redis_prefix, true).await?;
    tracing::info!("redis view caught up");
    Ok(())
}
