//! Keyed state partitioned like a processor's input (Kafka Streams' task stores): the state
//! derived from input partition p lives in partition p of the changelog, and an instance holds
//! the state of exactly the input partitions the consumer group assigned to it.
//!
//! The changelog has as many partitions as the input topic, and every change is written to
//! the partition of the input record that caused it (explicitly, not by hashing the state's
//! key, which may differ from the input's). On each assignment the store drops every
//! partition and reads the assigned ones from the changelog to their committed end: with
//! eager rebalancing each assigned partition resumes at its committed offset, and the
//! committed changelog is the state as of exactly that offset (both commit in one
//! transaction), whichever instance wrote it.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::kafka::admin::{self, TopicSpec};
use crate::kafka::batch_producer::OutRecord;

pub struct PartitionedStore {
    pub topic: String,
    brokers: String,
    parts: BTreeMap<i32, HashMap<Vec<u8>, Vec<u8>>>,
}

impl PartitionedStore {
    /// Create the changelog with the input's partition count if needed; holds nothing until
    /// `assign`. A changelog whose partition count differs from the input's cannot follow it:
    /// an error, not a silent mix-up of state.
    pub async fn open(brokers: &str, topic: &str, input: &str) -> Result<Self> {
        let n = admin::partition_count(brokers, input).with_context(|| format!("partitions of {input}"))?;
        admin::ensure_topics(brokers, &[TopicSpec { name: topic.to_string(), partitions: n, compact: true }]).await?;
        let have = admin::partition_count(brokers, topic)?;
        anyhow::ensure!(have == n, "changelog {topic} has {have} partitions but its input {input} has {n}: state partitions must follow input partitions (recreate it with `funnel replay`)");
        Ok(PartitionedStore { topic: topic.to_string(), brokers: brokers.to_string(), parts: BTreeMap::new() })
    }

    /// Hold the state of exactly `partitions`, read from the changelog. Returns the number of
    /// keys restored.
    pub async fn assign(&mut self, partitions: &[i32]) -> Result<usize> {
        self.parts.clear();
        if partitions.is_empty() {
            return Ok(0);
        }
        let (b, t, ps) = (self.brokers.clone(), self.topic.clone(), partitions.to_vec());
        let t0 = Instant::now();
        let (records, parts) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut parts: BTreeMap<i32, HashMap<Vec<u8>, Vec<u8>>> = ps.iter().map(|p| (*p, HashMap::new())).collect();
            let n = super::read_partitions(&b, &t, &ps, |p, k, v| {
                let m = parts.entry(p).or_default();
                match v {
                    Some(v) => {
                        m.insert(k.to_vec(), v.to_vec());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            })?;
            Ok((n, parts))
        })
        .await??;
        self.parts = parts;
        let keys = self.parts.values().map(HashMap::len).sum();
        tracing::info!(topic = self.topic, partitions = ?partitions, records, keys, ms = t0.elapsed().as_millis() as u64, "partitioned state restored from changelog");
        Ok(keys)
    }

    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }

    pub fn get(&self, partition: i32, key: &[u8]) -> Option<&Vec<u8>> {
        self.parts.get(&partition).and_then(|m| m.get(key))
    }

    /// Every (partition, key, value) held.
    pub fn iter(&self) -> impl Iterator<Item = (i32, &Vec<u8>, &Vec<u8>)> {
        self.parts.iter().flat_map(|(p, m)| m.iter().map(move |(k, v)| (*p, k, v)))
    }

    pub fn len(&self) -> usize {
        self.parts.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set `key` in `partition`; its changelog record goes to `out` (nothing when unchanged).
    /// Writing to a partition this instance does not hold is a bug in the caller.
    pub fn put(&mut self, partition: i32, key: Vec<u8>, value: Vec<u8>, out: &mut Vec<OutRecord>) -> Result<()> {
        let m = self.parts.get_mut(&partition).with_context(|| format!("{}: partition {partition} is not assigned to this instance", self.topic))?;
        if m.get(&key) == Some(&value) {
            return Ok(());
        }
        out.push(OutRecord { partition: Some(partition), topic: self.topic.clone(), key: key.clone(), value: Some(value.clone()) });
        m.insert(key, value);
        Ok(())
    }

    /// Remove `key` from `partition`; a tombstone goes to `out` when it was present.
    pub fn delete(&mut self, partition: i32, key: &[u8], out: &mut Vec<OutRecord>) {
        if self.parts.get_mut(&partition).and_then(|m| m.remove(key)).is_some() {
            out.push(OutRecord { partition: Some(partition), topic: self.topic.clone(), key: key.to_vec(), value: None });
        }
    }
}
