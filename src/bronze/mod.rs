//! `funnel run bronze`: every CDC topic into a Delta table at `$FUNNEL_LAKE_DIR/bronze/<topic>`,
//! exactly-once through offsets stored in the Delta log (see `offsets`). Records that cannot be
//! decoded go to the dead-letter topic with their reason; the writer keeps going. A schema
//! registry outage is not bad data: the writer waits for the registry (unhealthy meanwhile).

pub mod dedup;
pub mod table_writer;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::avro::serialization;
use crate::lake::location::Lake;
use crate::lake::offsets;
use crate::kafka::{admin, consumer_config, dead_letters, producer_config};
use crate::registry::RegistryClient;
use crate::runtime::{health, lag, metrics::metrics, shutdown};
use table_writer::{envelope_columns, TableWriter};

pub const PROCESSOR: &str = "bronze";

#[derive(clap::Args, Clone, Debug)]
pub struct BronzeConfig {
    /// Topics to land in bronze (regular expression over topic names).
    #[arg(long = "bronze-topics", default_value = r"^olist\..+")]
    pub topics: String,
    /// Commit when a table has buffered this many rows…
    #[arg(long = "flush-rows", default_value_t = 100_000)]
    pub flush_rows: usize,
    /// …or when its oldest buffered row is this old (data visible in Delta within about this).
    #[arg(long = "flush-ms", default_value_t = 1000)]
    pub flush_ms: u64,
    /// Parquet file size target.
    #[arg(long = "target-file-mb", default_value_t = 128)]
    pub target_file_mb: u64,
    /// Delta checkpoint every N commits.
    #[arg(long = "checkpoint-interval", default_value_t = 20)]
    pub checkpoint_interval: u32,
    /// Look for new topics matching --bronze-topics every this many seconds (tables added to
    /// CDC while bronze runs).
    #[arg(long = "bronze-discover-secs", default_value_t = 5)]
    pub discover_secs: u64,
    /// Stop once every partition reached the end it had when the writer started (`funnel run
    /// --until-caught-up`, benchmarks).
    #[arg(skip)]
    pub until_caught_up: bool,
}

pub fn table_path(lake: &Lake, topic: &str) -> url::Url {
    lake.table("bronze", topic)
}

pub async fn run(brokers: &str, registry_url: &str, lake: &Lake, cfg: BronzeConfig) -> Result<u64> {
    health::report(PROCESSOR, "starting", "");
    let registry = RegistryClient::waiting_for(registry_url, PROCESSOR);
    let re = regex::Regex::new(&cfg.topics).with_context(|| format!("bad --bronze-topics pattern {:?}", cfg.topics))?;
    // CDC may still be creating its topics: wait for them rather than fail.
    let mut waited = 0;
    let topics: Vec<String> = loop {
        let found: Vec<String> = admin::list_topics(brokers)?.into_iter().filter(|t| re.is_match(t)).collect();
        if !found.is_empty() || shutdown::requested() {
            break found;
        }
        if waited % 10 == 0 {
            tracing::info!(pattern = cfg.topics, "waiting for topics to land in bronze (is `funnel run cdc` running?)");
        }
        waited += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    admin::ensure_topics(brokers, &[admin::TopicSpec { name: dead_letters::topic_for(PROCESSOR), partitions: 1, compact: false }]).await?;
    let dlq: FutureProducer = producer_config(brokers, None).create()?;
    let consumer: StreamConsumer = consumer_config(brokers, "funnel-bronze").create()?;

    // Tables open lazily (their schema comes from the first record's writer schema), but the
    // resume offsets of existing tables are read now, before anything is consumed.
    let mut writers: HashMap<String, TableWriter> = HashMap::new();
    let tpl = resume_positions(brokers, lake, &topics).await?;
    consumer.assign(&tpl).context("assigning partitions")?;
    let mut assigned: std::collections::HashSet<String> = topics.iter().cloned().collect();
    let mut last_discovery = Instant::now();
    // --until-caught-up: the end of every partition that has something left to read.
    let ends = if cfg.until_caught_up { Some(crate::kafka::remaining_ends(&consumer, &tpl)?) } else { None };
    let progress: lag::Progress = Default::default();
    lag::spawn_reporter(PROCESSOR, brokers, &progress)?;
    health::report(PROCESSOR, "running", format!("{} topics", topics.len()));

    let target = cfg.target_file_mb * 1024 * 1024;
    let mut oldest: Option<Instant> = None;
    let mut last_end_check = Instant::now();
    let mut last_position_report = Instant::now();
    let mut total: u64 = 0;
    loop {
        if shutdown::requested() {
            break;
        }
        let msg = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
        match msg {
            Err(_) => {}
            Ok(Err(e)) => {
                metrics().errors.with_label_values(&[PROCESSOR, "consume"]).inc();
                tracing::warn!(error = %e, "consume error");
            }
            Ok(Ok(m)) => {
                let topic = m.topic().to_string();
                metrics().records_in.with_label_values(&[PROCESSOR, &topic]).inc();
                oldest.get_or_insert_with(Instant::now);
                let (p, o) = (m.partition(), m.offset());
                let Some(payload) = m.payload() else {
                    // Tombstone: compaction marker, no row, but its offset counts.
                    if let Some(w) = writers.get_mut(&topic) {
                        w.note_offset(p, o);
                    }
                    continue;
                };
                // The shared decode path: a registry outage is waited out (the client retries and
                // bronze reports unhealthy), only bytes that are bad in themselves are dead-lettered.
                let reason = match serialization::decode_or_reason(&registry, payload).await? {
                    Err(reason) => Some(reason),
                    Ok((id, value)) => {
                        if !writers.contains_key(&topic) {
                            let schema = registry.schema_by_id(id).await?;
                            // Key columns come from the record key's schema (the primary key).
                            let pk = serialization::key_column_names(&registry, m.key()).await?;
                            match envelope_columns(&schema).map_err(|why| format!("schema {id}: {why}")).and_then(|cols| Ok((cols, pk?))) {
                                Ok((cols, pk)) => {
                                    let w = TableWriter::open(&topic, table_path(lake, &topic), cols, pk, cfg.checkpoint_interval).await?;
                                    writers.insert(topic.clone(), w);
                                }
                                Err(reason) => {
                                    dead_letter(&dlq, &m, reason).await?;
                                    continue;
                                }
                            }
                        }
                        let w = writers.get_mut(&topic).context("writer present")?;
                        match w.append(&value, p, o, m.timestamp().to_millis()) {
                            Ok(true) => None,
                            Ok(false) => {
                                metrics().duplicates_skipped.with_label_values(&[PROCESSOR, &topic]).inc();
                                None
                            }
                            Err(e) => Some(e.to_string()),
                        }
                    }
                };
                if let Some(reason) = reason {
                    dead_letter(&dlq, &m, reason).await?;
                    if let Some(w) = writers.get_mut(&topic) {
                        w.note_offset(p, o);
                    }
                }
            }
        }
        // A CDC table added while bronze runs gets its topic: assign it (from its table's offsets,
        // if an earlier run landed some) without a restart. Bounded runs keep their start set.
        if ends.is_none() && last_discovery.elapsed() >= Duration::from_secs(cfg.discover_secs) {
            last_discovery = Instant::now();
            let new: Vec<String> = admin::list_topics(brokers)?.into_iter().filter(|t| re.is_match(t) && !assigned.contains(t)).collect();
            if !new.is_empty() {
                let tpl = resume_positions(brokers, lake, &new).await?;
                consumer.incremental_assign(&tpl).context("assigning new topics")?;
                tracing::info!(topics = ?new, "new topics assigned to bronze");
                assigned.extend(new);
                health::report(PROCESSOR, "running", format!("{} topics", assigned.len()));
            }
        }
        // position() walks every assigned partition: ask at most every 100 ms, not per record.
        let at_end = match &ends {
            Some(e) if last_end_check.elapsed() >= Duration::from_millis(100) => {
                last_end_check = Instant::now();
                crate::kafka::reached(&consumer, e)
            }
            _ => false,
        };
        let due = oldest.is_some_and(|t| t.elapsed() >= Duration::from_millis(cfg.flush_ms)) || writers.values().any(|w| w.rows >= cfg.flush_rows) || (at_end && oldest.is_some());
        if due {
            total += flush_all(&mut writers, target, &progress).await?;
            oldest = None;
        }
        // Nothing buffered: all consumed is committed, markers included (see lag::advance_to_position).
        if oldest.is_none() && last_position_report.elapsed() >= Duration::from_millis(500) {
            last_position_report = Instant::now();
            lag::advance_to_position(&progress, &consumer);
        }
        let nothing_buffered = oldest.is_none() && writers.values().all(|w| w.pending.is_empty());
        if nothing_buffered && at_end {
            break;
        }
    }
    total += flush_all(&mut writers, target, &progress).await?;
    tracing::info!(rows = total, "bronze stopped cleanly");
    Ok(total)
}

/// Where to start reading each partition of `topics`: after the offsets committed in their
/// bronze tables, or from the beginning.
async fn resume_positions(brokers: &str, lake: &Lake, topics: &[String]) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let n = admin::partition_count(brokers, topic)?;
        let committed = offsets::committed(&table_path(lake, topic), PROCESSOR, topic, n).await?;
        for (p, off) in committed.iter().enumerate() {
            let start = match off {
                Some(o) => Offset::Offset(o + 1),
                None => crate::kafka::FROM_START,
            };
            tpl.add_partition_offset(topic, p as i32, start)?;
        }
        tracing::info!(topic, ?committed, "resuming bronze table");
    }
    Ok(tpl)
}

/// Commit every table with pending offsets, the tables concurrently (each is its own Delta log).
async fn flush_all(writers: &mut HashMap<String, TableWriter>, target: u64, progress: &lag::Progress) -> Result<u64> {
    for w in writers.values() {
        for (partition, offset) in &w.pending {
            lag::advance(progress, &w.topic, *partition, offset + 1);
        }
    }
    let flushes = writers.values_mut().filter(|w| !w.pending.is_empty()).map(|w| async move {
        let t0 = Instant::now();
        let rows = w.flush(PROCESSOR, target).await?;
        if rows > 0 {
            metrics().records_out.with_label_values(&[PROCESSOR, &w.topic]).inc_by(rows as u64);
            metrics().batch_seconds.with_label_values(&[PROCESSOR]).observe(t0.elapsed().as_secs_f64());
            tracing::debug!(topic = w.topic, rows, ms = t0.elapsed().as_millis() as u64, "committed to bronze");
        }
        anyhow::Ok(rows as u64)
    });
    let mut n = 0;
    for r in futures::future::join_all(flushes).await {
        n += r?;
    }
    Ok(n)
}

async fn dead_letter(dlq: &FutureProducer, m: &rdkafka::message::BorrowedMessage<'_>, reason: String) -> Result<()> {
    metrics().dead_letters.with_label_values(&[PROCESSOR, m.topic()]).inc();
    dead_letters::send(
        dlq,
        &dead_letters::topic_for(PROCESSOR),
        dead_letters::DeadLetter { processor: PROCESSOR, topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key(), payload: m.payload(), reason },
    )
    .await
}
