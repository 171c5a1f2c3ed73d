//! Topics → Delta tables merged by key (silver staging, gold dimensions), exactly-once.
//!
//! Partitions are assigned, not taken from a consumer group: the consumed offsets live in each
//! table's Delta log (application transactions committed with the merge, see `offsets`), and
//! the loop seeks to them on start — the table itself says where to resume, whatever the
//! broker's transactions did. Scale out by giving each process its own tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apache_avro::types::Value;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::merge_writer::MergeWriter;
use super::offsets;
use crate::avro::arrow::columns_of_record;
use crate::avro::serialization;
use crate::cdc::change::ChangeDecoder;
use crate::kafka::{admin, consumer_config, dead_letters, producer_config};
use crate::registry::RegistryClient;
use crate::runtime::{health, lag, metrics::metrics, shutdown};

/// How a topic's records become rows.
#[derive(Clone, Debug)]
pub enum RowShape {
    /// CDC envelopes: the after image (before image of a delete), ordered by source position.
    Cdc,
    /// Keyed records of this Avro schema; a tombstone deletes its key, and so does a record
    /// whose column `delete_when.0` holds the text `delete_when.1` (a stream's delete events).
    Keyed { value_schema: String, delete_when: Option<(String, String)> },
}

#[derive(Clone, Debug)]
pub struct SinkTable {
    pub topic: String,
    /// Where the table lives (`lake::location::Lake::table`).
    pub url: url::Url,
    /// Key columns (Cdc: taken from the record key's schema when empty).
    pub key: Vec<String>,
    pub shape: RowShape,
    pub comment: String,
}

#[derive(Clone, Debug)]
pub struct SinkConfig {
    pub processor: String,
    pub brokers: String,
    pub registry_url: String,
    pub dead_letter_topic: String,
    pub tables: Vec<SinkTable>,
    pub flush_ms: u64,
    pub checkpoint_interval: u32,
    /// Stop once every partition reached the end it had at start.
    pub until_caught_up: bool,
}

/// What the sink committed, per topic (shared with the loader's service).
#[derive(Clone, Debug, Default)]
pub struct TableProgress {
    pub keys_merged: u64,
    /// Next offset to consume, per partition, as committed to the table (or, when nothing is
    /// buffered, the consumer's position: markers and tombstones need no commit).
    pub committed: HashMap<i32, i64>,
}

pub type Status = Arc<Mutex<HashMap<String, TableProgress>>>;

/// Longest interval between commits in a bounded run (`until_caught_up`).
const CATCH_UP_FLUSH_MS: u64 = 15_000;

pub async fn run(cfg: SinkConfig, status: Status) -> Result<u64> {
    let p = cfg.processor.as_str();
    health::report(p, "starting", "");
    let registry = RegistryClient::waiting_for(&cfg.registry_url, p);
    let mut decoder = ChangeDecoder::new(&registry);
    admin::ensure_topics(&cfg.brokers, &[admin::TopicSpec { name: cfg.dead_letter_topic.clone(), partitions: 1, compact: false }]).await?;
    let dlq: FutureProducer = producer_config(&cfg.brokers, None).create()?;
    let consumer: StreamConsumer = consumer_config(&cfg.brokers, &format!("funnel-{p}")).create()?;

    let mut writers: HashMap<String, MergeWriter> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for t in &cfg.tables {
        let n = wait_for_topic(&cfg.brokers, &t.topic).await?;
        let committed = offsets::committed(&t.url, p, &t.topic, n).await?;
        let mut progress = TableProgress::default();
        for (part, off) in committed.iter().enumerate() {
            tpl.add_partition_offset(&t.topic, part as i32, off.map(|o| Offset::Offset(o + 1)).unwrap_or(crate::kafka::FROM_START))?;
            progress.committed.insert(part as i32, off.map(|o| o + 1).unwrap_or(0));
        }
        if let Ok(mut s) = status.lock() {
            s.insert(t.topic.clone(), progress);
        }
        if let RowShape::Keyed { value_schema, .. } = &t.shape {
            let schema = apache_avro::Schema::parse_str(value_schema).context("sink value schema")?;
            let columns = columns_of_record(&schema).map_err(anyhow::Error::msg).with_context(|| format!("{}: value schema is not a flat record", t.topic))?;
            writers.insert(t.topic.clone(), MergeWriter::open(&t.topic, &t.url, &t.comment, columns, t.key.clone(), false, cfg.checkpoint_interval).await?);
        }
        tracing::info!(processor = p, topic = t.topic, table = %t.url, ?committed, "resuming merged table");
    }
    consumer.assign(&tpl).context("assigning partitions")?;
    let ends = if cfg.until_caught_up { Some(crate::kafka::remaining_ends(&consumer, &tpl)?) } else { None };
    let progress: lag::Progress = Default::default();
    lag::spawn_reporter(p, &cfg.brokers, &progress)?;
    health::report(p, "running", format!("{} tables", cfg.tables.len()));

    // A bounded run (a replay or a catch-up) has no reader waiting on each commit, and every
    // flush is one merge into the table grown so far: a replay of c360 flushing every 500 ms
    // spent minutes merging. It commits at most every CATCH_UP_FLUSH_MS instead (the buffer
    // holds one row per key, so its size is bounded by the table's, not by the records read).
    let flush_every = Duration::from_millis(if cfg.until_caught_up { cfg.flush_ms.max(CATCH_UP_FLUSH_MS) } else { cfg.flush_ms });
    let mut oldest: Option<Instant> = None;
    let mut last_end_check = Instant::now();
    let mut last_position_report = Instant::now();
    let mut total = 0u64;
    loop {
        if shutdown::requested() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
            Err(_) => {}
            Ok(Err(e)) => {
                metrics().errors.with_label_values(&[p, "consume"]).inc();
                tracing::warn!(processor = p, error = %e, "consume error");
            }
            Ok(Ok(m)) => {
                metrics().records_in.with_label_values(&[p, m.topic()]).inc();
                oldest.get_or_insert_with(Instant::now);
                let table = cfg.tables.iter().find(|t| t.topic == m.topic()).context("record of an unassigned topic")?;
                let outcome = apply(&table.clone(), &m, &registry, &mut decoder, &mut writers, cfg.checkpoint_interval).await?;
                if let Err(reason) = outcome {
                    metrics().dead_letters.with_label_values(&[p, m.topic()]).inc();
                    let dl = dead_letters::DeadLetter { processor: p, topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key(), payload: m.payload(), reason };
                    dead_letters::send(&dlq, &cfg.dead_letter_topic, dl).await?;
                    if let Some(w) = writers.get_mut(m.topic()) {
                        w.note_offset(m.partition(), m.offset());
                    }
                }
            }
        }
        let at_end = match &ends {
            Some(e) if last_end_check.elapsed() >= Duration::from_millis(100) => {
                last_end_check = Instant::now();
                crate::kafka::reached(&consumer, e)
            }
            _ => false,
        };
        let due = oldest.is_some_and(|t| t.elapsed() >= flush_every) || (at_end && oldest.is_some());
        if due {
            total += flush(p, &mut writers, &status, &progress).await?;
            oldest = None;
        }
        if at_end && oldest.is_none() {
            break;
        }
        // With nothing buffered, everything up to the consumer's position is committed — including
        // transaction markers and tombstones past the last row, which no row offset covers.
        if oldest.is_none() && last_position_report.elapsed() >= Duration::from_millis(500) {
            last_position_report = Instant::now();
            report_position(&consumer, &status, &progress);
        }
    }
    total += flush(p, &mut writers, &status, &progress).await?;
    tracing::info!(processor = p, keys = total, "merge sink stopped cleanly");
    Ok(total)
}

/// Turn one record into a buffered change. `Ok(Err(reason))` = dead letter.
async fn apply(
    table: &SinkTable,
    m: &rdkafka::message::BorrowedMessage<'_>,
    registry: &RegistryClient,
    decoder: &mut ChangeDecoder,
    writers: &mut HashMap<String, MergeWriter>,
    checkpoint_interval: u32,
) -> Result<Result<(), String>> {
    let (part, off) = (m.partition(), m.offset());
    match &table.shape {
        RowShape::Keyed { delete_when, .. } => {
            let w = writers.get_mut(&table.topic).context("keyed writer opened at start")?;
            let (bytes, mut delete) = match m.payload() {
                Some(v) => (v, false),
                None => (m.key().unwrap_or_default(), true),
            };
            let fields = match serialization::decode_or_reason(registry, bytes).await? {
                Ok((_, Value::Record(f))) => f,
                Ok(_) => return Ok(Err("not an Avro record".into())),
                Err(reason) => return Ok(Err(reason)),
            };
            if let Some((column, value)) = delete_when {
                delete |= crate::avro::value::text(crate::avro::value::field(&fields, column)) == Some(value.as_str());
            }
            Ok(w.change(&fields, delete, None, part, off))
        }
        RowShape::Cdc => {
            let Some(bytes) = m.payload() else {
                // The tombstone after a delete: the delete event itself carried the change.
                if let Some(w) = writers.get_mut(&table.topic) {
                    w.note_offset(part, off);
                }
                return Ok(Ok(()));
            };
            let c = match decoder.decode(bytes).await? {
                Ok(c) => c,
                Err(reason) => return Ok(Err(reason)),
            };
            if !writers.contains_key(&table.topic) {
                let key = if table.key.is_empty() {
                    match serialization::key_column_names(registry, m.key()).await? {
                        Ok(names) => names,
                        Err(reason) => return Ok(Err(reason)),
                    }
                } else {
                    table.key.clone()
                };
                let w = MergeWriter::open(&table.topic, &table.url, &table.comment, c.columns.as_ref().clone(), key, true, checkpoint_interval).await?;
                writers.insert(table.topic.clone(), w);
            }
            let w = writers.get_mut(&table.topic).context("writer present")?;
            Ok(w.change(&c.row, c.is_delete(), Some(c.pos), part, off))
        }
    }
}

async fn flush(processor: &str, writers: &mut HashMap<String, MergeWriter>, status: &Status, progress: &lag::Progress) -> Result<u64> {
    let mut total = 0;
    for w in writers.values_mut() {
        if w.offsets.is_empty() {
            continue;
        }
        let offsets: Vec<(i32, i64)> = w.offsets.iter().map(|(p, o)| (*p, *o)).collect();
        let t0 = Instant::now();
        let n = w.flush(processor).await?;
        metrics().records_out.with_label_values(&[processor, &w.topic]).inc_by(n as u64);
        metrics().batch_seconds.with_label_values(&[processor]).observe(t0.elapsed().as_secs_f64());
        if let Ok(mut s) = status.lock() {
            let e = s.entry(w.topic.clone()).or_default();
            e.keys_merged += n as u64;
            for (p, o) in &offsets {
                e.committed.insert(*p, o + 1);
            }
        }
        for (p, o) in offsets {
            lag::advance(progress, &w.topic, p, o + 1);
        }
        total += n as u64;
    }
    Ok(total)
}

/// The consumer's position as committed progress, for the loader's status and the lag gauge.
fn report_position(consumer: &StreamConsumer, status: &Status, progress: &lag::Progress) {
    let Ok(position) = consumer.position() else { return };
    let mut s = status.lock().ok();
    for e in position.elements() {
        if let Offset::Offset(o) = e.offset() {
            lag::advance(progress, e.topic(), e.partition(), o);
            if let Some(t) = s.as_mut().and_then(|s| s.get_mut(e.topic())) {
                let c = t.committed.entry(e.partition()).or_insert(o);
                *c = (*c).max(o);
            }
        }
    }
}

/// A topic's partition count, waiting for the topic to appear (its producer may start later).
pub async fn wait_for_topic(brokers: &str, topic: &str) -> Result<i32> {
    let mut waited = 0u32;
    loop {
        if admin::list_topics(brokers)?.iter().any(|t| t == topic) {
            return admin::partition_count(brokers, topic);
        }
        if shutdown::requested() {
            anyhow::bail!("stopped while waiting for topic {topic}");
        }
        if waited % 10 == 0 {
            tracing::info!(topic, "waiting for the topic to be created (is its producer running?)");
        }
        waited += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
