//! Keyed processor state backed by a compacted changelog topic (the Kafka Streams scheme).
//!
//! The store is an in-memory map of key bytes → value bytes. Every change a batch makes is
//! returned as a changelog record that the processor produces in the same Kafka transaction
//! as its outputs and consumed offsets, so the changelog always matches the committed input
//! position. On start the processor restores the map by reading the changelog to its end.
//! Processors keep their values idempotent by source position (see `leads`), so a record a
//! broker leaked from an aborted transaction is re-derived, not doubled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, TopicPartitionList};

use crate::kafka::admin::{self, TopicSpec};
use crate::kafka::batch_producer::OutRecord;
use crate::kafka::{consumer_config, reached, remaining_ends};

pub mod global;
pub mod partitioned;
pub use global::GlobalTable;
pub use partitioned::PartitionedStore;

pub struct ChangelogStore {
    pub topic: String,
    map: HashMap<Vec<u8>, Vec<u8>>,
}

impl ChangelogStore {
    /// Create the changelog topic if needed and restore the store from it.
    pub async fn open(brokers: &str, topic: &str, partitions: i32) -> Result<Self> {
        admin::ensure_topics(brokers, &[TopicSpec { name: topic.to_string(), partitions, compact: true }]).await?;
        let (b, t) = (brokers.to_string(), topic.to_string());
        let t0 = Instant::now();
        let mut map = HashMap::new();
        let read = tokio::task::spawn_blocking(move || {
            read_topic(&b, &t, |k, v| match v {
                Some(v) => {
                    map.insert(k.to_vec(), v.to_vec());
                }
                None => {
                    map.remove(k);
                }
            })
            .map(|n| (n, map))
        })
        .await??;
        tracing::info!(topic, records = read.0, keys = read.1.len(), ms = t0.elapsed().as_millis() as u64, "state restored from changelog");
        Ok(Self { topic: topic.to_string(), map: read.1 })
    }

    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.map.iter()
    }

    /// Set `key`; the changelog record goes to `out` (nothing when the value is unchanged).
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, out: &mut Vec<OutRecord>) {
        if self.map.get(&key) == Some(&value) {
            return;
        }
        out.push(OutRecord { partition: None, topic: self.topic.clone(), key: key.clone(), value: Some(value.clone()) });
        self.map.insert(key, value);
    }

    /// Remove `key`; a tombstone goes to `out` when it was present.
    pub fn delete(&mut self, key: &[u8], out: &mut Vec<OutRecord>) {
        if self.map.remove(key).is_some() {
            out.push(OutRecord { partition: None, topic: self.topic.clone(), key: key.to_vec(), value: None });
        }
    }
}

/// Read every committed record of `topic` from the beginning to the end it has now, in
/// offset order per partition; `f(key, value)` with `None` for tombstones. Returns the count.
pub fn read_topic(brokers: &str, topic: &str, mut f: impl FnMut(&[u8], Option<&[u8]>)) -> Result<u64> {
    let all: Vec<i32> = (0..admin::partition_count(brokers, topic)?).collect();
    read_partitions(brokers, topic, &all, |_, k, v| f(k, v))
}

/// `read_topic` for some partitions only: `f(partition, key, value)`.
pub fn read_partitions(brokers: &str, topic: &str, partitions: &[i32], f: impl FnMut(i32, &[u8], Option<&[u8]>)) -> Result<u64> {
    let (consumer, ends) = reader_at_start(brokers, topic, partitions)?;
    read_to(&consumer, topic, &ends, f)
}

/// A consumer assigned to `partitions` of `topic` from their beginning, and the ends they
/// have now (the partitions with something to read).
pub(crate) fn reader_at_start(brokers: &str, topic: &str, partitions: &[i32]) -> Result<(BaseConsumer, Vec<(String, i32, i64)>)> {
    // Partitions are assigned, not subscribed: the group id is never joined or committed.
    let consumer: BaseConsumer = consumer_config(brokers, "funnel-restore").create().context("creating restore consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, crate::kafka::FROM_START)?;
    }
    let ends = remaining_ends(&consumer, &tpl)?;
    consumer.assign(&tpl).context("assigning changelog partitions")?;
    Ok((consumer, ends))
}

/// Read with `consumer` until every partition of `ends` reached its end.
pub(crate) fn read_to(consumer: &BaseConsumer, topic: &str, ends: &[(String, i32, i64)], mut f: impl FnMut(i32, &[u8], Option<&[u8]>)) -> Result<u64> {
    if ends.is_empty() {
        return Ok(0);
    }
    let mut count = 0u64;
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                f(m.partition(), m.key().unwrap_or_default(), m.payload());
                count += 1;
                last_progress = Instant::now();
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "restore read error"),
            None => {}
        }
        if count % 1024 == 0 || last_progress.elapsed() > Duration::from_millis(100) {
            if reached(consumer, ends) {
                return Ok(count);
            }
            if last_progress.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("restoring from {topic}: no progress for 120 s (broker reachable?)");
            }
        }
    }
}
