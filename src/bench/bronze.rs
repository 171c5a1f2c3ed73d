//! Bronze writer throughput ÷ a no-op consumer's on the same topics, same run: the no-op
//! consumer reads every record to the end and drops it; the bronze writer decodes, builds
//! Arrow, writes Parquet and commits Delta with offsets, into a throw-away lake.

use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{report, Measurement};
use crate::bronze::{self, BronzeConfig};
use crate::kafka::{admin, consumer_config};

pub async fn run(brokers: &str, registry_url: &str, pattern: &str) -> Result<()> {
    let re = regex::Regex::new(pattern)?;
    let topics: Vec<String> = admin::list_topics(brokers)?.into_iter().filter(|t| re.is_match(t)).collect();
    if topics.is_empty() {
        anyhow::bail!("no topic matches {pattern:?}: run `funnel demo` first");
    }

    // Baseline: read everything, do nothing.
    let consumer: BaseConsumer = consumer_config(brokers, "funnel-bench-noop").create()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = vec![];
    let mut parts = vec![];
    for t in &topics {
        for p in 0..admin::partition_count(brokers, t)? {
            parts.push((t.clone(), p));
        }
    }
    for (t, p, lo, hi) in crate::kafka::watermarks(&consumer, &parts)? {
        if hi > lo {
            tpl.add_partition_offset(&t, p, Offset::Offset(lo))?;
            ends.push((t, p, hi));
        }
    }
    consumer.assign(&tpl)?;
    let t0 = Instant::now();
    let mut n = 0u64;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => return Err(e.into()),
            None => {
                if crate::kafka::reached(&consumer, &ends) {
                    break;
                }
            }
        }
    }
    let noop = Measurement { name: "no-op consumer".into(), records: n, seconds: t0.elapsed().as_secs_f64() };
    drop(consumer);

    let lake = tempfile::tempdir()?;
    let cfg = BronzeConfig { topics: pattern.to_string(), flush_rows: 100_000, flush_ms: 1000, target_file_mb: 128, checkpoint_interval: 20, discover_secs: 5, until_caught_up: true };
    let t0 = Instant::now();
    let rows = bronze::run(brokers, registry_url, &crate::lake::location::Lake::local(lake.path())?, cfg).await?;
    let writer = Measurement { name: "bronze writer".into(), records: n, seconds: t0.elapsed().as_secs_f64() };
    report(&format!("bronze: {} topics, {n} records ({rows} rows written)", topics.len()), &noop, &writer);
    Ok(())
}
