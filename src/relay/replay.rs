//! `funnel relay replay-dlq`: send the dead-lettered deliveries again, after the cause was
//! fixed (a sink repaired, a credential renewed). Each record of `relay.delivery.dlq.v1` not
//! replayed before (consumer group `funnel-relay-replay-dlq`) goes back to
//! `relay.delivery.requested.v1` as a new round: attempts count from 1 again, its history kept,
//! `replay` counting rounds (the audit's attempt ids carry it). The delivery workers send a
//! replayed delivery even though its last attempt failed; one delivered meanwhile is not sent.
//! At-least-once: the offsets commit after the broker acknowledged the re-sent records.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::delivery::{schemas as s, Delivery};
use super::topics::RelayTopics;
use crate::avro::registered::Registered;
use crate::avro::serialization;
use crate::kafka::batch_producer::{BatchProducer, Delivery as Guarantee, OutRecord};
use crate::kafka::{admin, consumer_config, reached, remaining_ends};
use crate::registry::RegistryClient;

pub const GROUP: &str = "relay-replay-dlq";

/// Replay every dead letter not replayed yet; returns the count per destination.
pub async fn replay_dlq(brokers: &str, registry_url: &str, topics: &RelayTopics) -> Result<BTreeMap<String, u64>> {
    let registry = RegistryClient::new(registry_url);
    let (key, value) = Registered::topic(&registry, &topics.requested, s::DELIVERY_KEY, s::DELIVERY_VALUE).await?;
    let group = topics.names.group(GROUP);
    let (b, dlq) = (brokers.to_string(), topics.dlq.clone());
    // Read the dead letters after the group's committed position, to the end they have now.
    let (consumer, raw) = tokio::task::spawn_blocking(move || -> Result<(BaseConsumer, Vec<(i32, i64, Vec<u8>)>)> {
        let consumer: BaseConsumer = consumer_config(&b, &group).create().context("creating the replay consumer")?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..admin::partition_count(&b, &dlq)? {
            tpl.add_partition(&dlq, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).context("reading the replay group's offsets")?;
        let mut start = TopicPartitionList::new();
        for e in committed.elements() {
            let at = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => crate::kafka::FROM_START,
            };
            start.add_partition_offset(e.topic(), e.partition(), at)?;
        }
        let ends = remaining_ends(&consumer, &start)?;
        let mut out = vec![];
        if ends.is_empty() {
            return Ok((consumer, out));
        }
        consumer.assign(&start)?;
        let t0 = std::time::Instant::now();
        while !reached(&consumer, &ends) {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.context("reading the dead-letter topic")?;
                out.push((m.partition(), m.offset(), m.payload().unwrap_or_default().to_vec()));
            }
            anyhow::ensure!(t0.elapsed() < Duration::from_secs(300), "reading {dlq}: no end after 300 s");
        }
        Ok((consumer, out))
    })
    .await??;
    let mut counts = BTreeMap::new();
    if raw.is_empty() {
        return Ok(counts);
    }
    let mut records = vec![];
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, bytes) in raw {
        let (_, v) = serialization::decode(&registry, &bytes).await.with_context(|| format!("dead letter {partition}/{offset}"))?;
        let mut d = Delivery::from_value(&v).map_err(|e| anyhow::anyhow!("dead letter {partition}/{offset}: {e}"))?;
        d.replay += 1;
        d.attempt = 1;
        d.not_before_ms = 0;
        *counts.entry(d.destination.clone()).or_insert(0u64) += 1;
        let k = key.encode(d.key()).map_err(|e| anyhow::anyhow!("encoding: {e}"))?;
        let v = value.encode(d.to_value()).map_err(|e| anyhow::anyhow!("encoding: {e}"))?;
        records.push(OutRecord { partition: None, topic: topics.requested.clone(), key: k, value: Some(v) });
        next.insert(partition, offset + 1);
    }
    let producer = BatchProducer::new(brokers, &topics.names.group(GROUP), Guarantee::AtLeastOnce).await?;
    producer.send(&records).await.context("re-sending the dead letters")?;
    let mut done = TopicPartitionList::new();
    for (p, o) in next {
        done.add_partition_offset(&topics.dlq, p, Offset::Offset(o))?;
    }
    tokio::task::spawn_blocking(move || consumer.commit(&done, CommitMode::Sync)).await?.context("committing the replay position")?;
    Ok(counts)
}
