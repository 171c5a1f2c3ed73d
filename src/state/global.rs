//! A table every instance of a processor holds whole (Kafka Streams' GlobalKTable): a small
//! compacted topic — a dimension such as the seller metrics — that the processor joins by a
//! key unrelated to its own partitioning, so no partition of it belongs to one instance.
//!
//! Opened, it reads every partition of the topic to the end it has then; afterwards `poll`
//! returns what was committed since, without blocking. Its position lives in this process
//! only (the topic is its own changelog, read again on every start): a processor that joins
//! with it must make its outputs a function of the table's current state — after a restart or
//! a rebalance it recomputes what it owns against the table as read then — instead of relying
//! on having seen every intermediate version.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::BaseConsumer;
use rdkafka::Message;

use crate::kafka::admin;

pub struct GlobalTable {
    pub topic: String,
    consumer: BaseConsumer,
    map: HashMap<Vec<u8>, Vec<u8>>,
}

/// At most this many records per `poll`, so one call never holds a batch for long.
const POLL_MAX: usize = 10_000;

impl GlobalTable {
    /// Read every partition of `topic` (which must exist) to its current end.
    pub async fn open(brokers: &str, topic: &str) -> Result<Self> {
        let (b, t) = (brokers.to_string(), topic.to_string());
        let t0 = Instant::now();
        let (consumer, map, records) = tokio::task::spawn_blocking(move || -> Result<_> {
            let all: Vec<i32> = (0..admin::partition_count(&b, &t).with_context(|| format!("partitions of {t}"))?).collect();
            let (consumer, ends) = super::reader_at_start(&b, &t, &all)?;
            let mut map = HashMap::new();
            let n = super::read_to(&consumer, &t, &ends, |_, k, v| apply(&mut map, k, v))?;
            Ok((consumer, map, n))
        })
        .await??;
        tracing::info!(topic, records, keys = map.len(), ms = t0.elapsed().as_millis() as u64, "global table read");
        Ok(GlobalTable { topic: topic.to_string(), consumer, map })
    }

    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.map.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The records committed since the last call (key, value or None for a tombstone),
    /// already applied to the table. Never blocks; a broker that is away yields nothing now
    /// (logged) and the records later.
    pub fn poll(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = vec![];
        while out.len() < POLL_MAX {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    let (k, v) = (m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec));
                    apply(&mut self.map, &k, v.as_deref());
                    out.push((k, v));
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = self.topic, error = %e, "global table read error");
                    break;
                }
                None => break,
            }
        }
        out
    }
}

fn apply(map: &mut HashMap<Vec<u8>, Vec<u8>>, k: &[u8], v: Option<&[u8]>) {
    match v {
        Some(v) => {
            map.insert(k.to_vec(), v.to_vec());
        }
        None => {
            map.remove(k);
        }
    }
}
