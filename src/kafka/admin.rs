//! Topic creation from the topology, idempotent.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::client_config;

#[derive(Clone, Debug)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compact: bool,
}

/// Create every missing topic; existing topics are left as they are.
pub async fn ensure_topics(brokers: &str, topics: &[TopicSpec]) -> Result<Vec<String>> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create().context("creating admin client")?;
    let existing = list_topics(brokers)?;
    let missing: Vec<&TopicSpec> = topics.iter().filter(|t| !existing.contains(&t.name)).collect();
    if missing.is_empty() {
        return Ok(vec![]);
    }
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            let nt = NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1));
            if t.compact {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))))
        .await
        .context("create_topics")?;
    let mut created = vec![];
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(topic = name, "already exists"),
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(created)
}

pub fn list_topics(brokers: &str) -> Result<Vec<String>> {
    let consumer: BaseConsumer = client_config(brokers).create()?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .with_context(|| format!("fetching metadata from {brokers}"))?;
    Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
}

/// Partition count of a topic as the broker reports it.
pub fn partition_count(brokers: &str, topic: &str) -> Result<i32> {
    let consumer: BaseConsumer = client_config(brokers).create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md.topics().first().context("no metadata")?;
    if t.partitions().is_empty() {
        anyhow::bail!("topic {topic} does not exist (run `funnel topics create`)");
    }
    Ok(t.partitions().len() as i32)
}

/// Delete topics (those that do not exist are ignored).
pub async fn delete_topics(brokers: &str, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create().context("creating admin client")?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin.delete_topics(&refs, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await.context("delete_topics")?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => anyhow::bail!("deleting topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Point a consumer group at the beginning of `topics` (the group must have no live member).
/// The offsets are committed by joining the group (brokers such as tansu refuse commits from
/// non-members), as the low watermark of each partition.
pub async fn rewind_group(brokers: &str, group: &str, topics: &[String]) -> Result<()> {
    let existing = list_topics(brokers)?;
    let topics: Vec<String> = topics.iter().filter(|t| existing.contains(t)).cloned().collect();
    if topics.is_empty() {
        return Ok(());
    }
    let (b, g) = (brokers.to_string(), group.to_string());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let consumer: BaseConsumer = super::consumer_config(&b, &g).create().context("creating consumer")?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while consumer.assignment()?.count() == 0 {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("could not join consumer group {g} within 60 s (is the processor still running?)");
            }
            let _ = consumer.poll(Duration::from_millis(200));
        }
        let parts: Vec<(String, i32)> = consumer.assignment()?.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (t, p, lo, _) in super::watermarks(&consumer, &parts)? {
            tpl.add_partition_offset(&t, p, rdkafka::Offset::Offset(lo))?;
        }
        consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync).with_context(|| format!("rewinding consumer group {g}"))?;
        consumer.unsubscribe();
        Ok(())
    })
    .await?
}

/// Before a replay: delete `topics_to_delete` (changelogs, rebuilt outputs) and rewind `group`
/// to the beginning of `inputs`.
pub async fn reset_for_replay(brokers: &str, group: &str, inputs: &[String], topics_to_delete: &[String]) -> Result<()> {
    delete_topics(brokers, topics_to_delete).await?;
    tracing::info!(topics = ?topics_to_delete, "state topics deleted");
    rewind_group(brokers, group, inputs).await?;
    tracing::info!(group, "consumer group rewound to the beginning of its inputs");
    // Topic deletion is asynchronous on some brokers: wait until they are gone.
    for _ in 0..50 {
        let existing = list_topics(brokers)?;
        if !topics_to_delete.iter().any(|t| existing.contains(t)) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    anyhow::bail!("topics {topics_to_delete:?} still exist after deletion")
}
