//! A table every instance of a processor holds whole (Kafka Streams' GlobalKTable): a small
//! compacted topic — a dimension such as the seller metrics — that the processor joins by a
//! key unrelated to its own partitioning, so no partition of it belongs to one instance.
//!
//! Opened, it reads every partition of the topic to the end it has then; `poll` returns
//! first every key's latest value as of that read, then, without blocking, every record
//! committed since. The caller keeps the table in whatever decoded form it joins with. Its
//! position lives in this process only (the topic is its own changelog, read again on every
//! start): a processor that joins with it must make its outputs a function of the table's
//! current state — after a restart or a rebalance it recomputes what it owns against the
//! table as read then — instead of relying on having seen every intermediate version.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::BaseConsumer;
use rdkafka::Message;

use crate::kafka::admin;

pub struct GlobalTable {
    pub topic: String,
    consumer: BaseConsumer,
    /// What the next `poll` returns before reading on: the table as read at open.
    pending: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// At most this many records per `poll`, so one call never holds a batch for long.
const POLL_MAX: usize = 10_000;

impl GlobalTable {
    /// Read every partition of `topic` (which must exist) to its current end.
    pub async fn open(brokers: &str, topic: &str) -> Result<Self> {
        let (b, t) = (brokers.to_string(), topic.to_string());
        let t0 = Instant::now();
        let (consumer, latest, records) = tokio::task::spawn_blocking(move || -> Result<_> {
            let all: Vec<i32> = (0..admin::partition_count(&b, &t).with_context(|| format!("partitions of {t}"))?).collect();
            let (consumer, ends) = super::reader_at_start(&b, &t, &all)?;
            let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            let n = super::read_to(&consumer, &t, &ends, |_, k, v| match v {
                Some(v) => {
                    latest.insert(k.to_vec(), v.to_vec());
                }
                None => {
                    latest.remove(k);
                }
            })?;
            Ok((consumer, latest, n))
        })
        .await??;
        tracing::info!(topic, records, keys = latest.len(), ms = t0.elapsed().as_millis() as u64, "global table read");
        Ok(GlobalTable { topic: topic.to_string(), consumer, pending: latest.into_iter().map(|(k, v)| (k, Some(v))).collect() })
    }

    /// The table as read at open on the first call; afterwards the records committed since the
    /// last call (key, value or None for a tombstone). Never blocks; a broker that is away
    /// yields nothing now (logged) and the records later.
    pub fn poll(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut out = std::mem::take(&mut self.pending);
        while out.len() < POLL_MAX {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => out.push((m.key().unwrap_or_default().to_vec(), m.payload().map(<[u8]>::to_vec))),
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
