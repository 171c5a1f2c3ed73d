//! The consume-transform-produce loop for topic→topic processors.
//!
//! Records are consumed in batches through a consumer group (scale-out = more instances of the
//! same group, for stateless transforms; stateful ones say how they partition their state).
//! Exactly-once: a batch's outputs, its state changelog records, its dead letters and the
//! consumed offsets commit in one Kafka transaction (`send_offsets_to_transaction`); nothing is
//! polled while a transaction is open, so a rebalance never splits one. At-least-once: outputs
//! are acknowledged, then offsets committed; every output carries an idempotency key header
//! (`funnel.idempotency-key` = source topic/partition/offset/index) for consumers to dedupe.
//! A failed batch aborts and the process exits with the error: a restart restores state from
//! the changelog and resumes from the last committed offsets, so nothing is lost or doubled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::align::{Alignment, Inbox, Partition};
use super::batch::process_batch;
use super::partitions::{self, consumed_to_end, release_aligned, resume_due, set_paused, Assignments, Consumer};
use super::{health, lag, metrics::metrics, shutdown};
use crate::kafka::batch_producer::{Delivery, OutRecord};
use crate::kafka::dead_letters;
use crate::kafka::{consumer_config, producer_config};

pub const IDEMPOTENCY_HEADER: &str = "funnel.idempotency-key";

/// One consumed record.
pub struct InRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
}

/// What a transform made of one record: outputs, or the reason to dead-letter it.
pub type Outcome = Result<Vec<OutRecord>, String>;

/// A processor's logic. `Ok(Err(reason))` sends the record to the processor's dead-letter
/// topic; `Err` is a failure of the processor itself (registry down, …): the batch aborts.
pub trait Transform: Send {
    fn process(&mut self, rec: &InRecord<'_>) -> impl std::future::Future<Output = Result<Outcome>> + Send;

    /// The time (ms since the epoch) before which `rec` must not be processed, if it must wait.
    /// The loop then stops its partition at that record — not processed, its offset not
    /// committed — pauses the partition and resumes it when due: delayed retries and schedules
    /// without sleeping in the loop. Records of one partition should come due in offset order
    /// (one delay per topic), or a later-due record holds back the ones behind it.
    fn not_before(&mut self, _rec: &InRecord<'_>) -> impl std::future::Future<Output = Result<Option<i64>>> + Send {
        async { Ok(None) }
    }

    /// Called once every output of the batch was acknowledged by the broker, just before the
    /// input offsets commit (at-least-once; with exactly-once, inside the still-open
    /// transaction): the place for a write outside Kafka that must come after the outputs, so
    /// that a crash before it re-processes the batch and a crash after it finds it done.
    fn before_commit(&mut self) -> impl std::future::Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Called once the batch's records were processed, before the commit: outputs that
    /// summarise the batch (one update per key the batch touched, not one per record).
    fn end_batch(&mut self) -> impl std::future::Future<Output = Result<Vec<OutRecord>>> + Send {
        async { Ok(vec![]) }
    }

    /// Whether the transform has outputs to make although no input record came: a side input
    /// outside the consumer group changed (`state::GlobalTable`), or an assignment left keys
    /// to recompute. The loop then runs a batch without records: `end_batch` makes the
    /// outputs, in a transaction of their own that commits no offsets.
    fn has_work(&mut self) -> bool {
        false
    }

    /// Called before the first batch after the consumer group assigned partitions (at start
    /// and after every rebalance), with every input partition this instance now owns. A
    /// processor whose state is partitioned like its input (`state::PartitionedStore`)
    /// restores the state of exactly these partitions here and drops the rest. Rebalancing is
    /// eager: each assignment resumes every partition from its committed offset, which the
    /// committed changelog matches, so restoring all of them is always right.
    fn assigned(&mut self, _partitions: &[Partition]) -> impl std::future::Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
}

#[derive(Clone, Debug)]
pub struct LoopConfig {
    /// Name in metrics, logs and the dead-letter topic.
    pub processor: String,
    pub brokers: String,
    pub inputs: Vec<String>,
    /// Consumer group (namespaced by the caller); the transactional id too, with the instance.
    pub group_id: String,
    /// This instance's id for a processor that several instances run (`runtime::instance`):
    /// its transactional id is then `<group>-<instance>`. None: the group id.
    pub instance_id: Option<String>,
    pub dead_letter_topic: String,
    pub delivery: Delivery,
    pub batch_max: usize,
    pub batch_ms: u64,
    /// Stop once a poll finds nothing and every assigned partition is consumed to its end
    /// (replays, bounded runs).
    pub stop_when_idle: bool,
    /// Hand the transform its records in event-time order across all input partitions
    /// (`align`); None: in the order the consumer fetched them.
    pub align: Option<Alignment>,
}

impl LoopConfig {
    pub fn transactional_id(&self) -> String {
        super::instance::transactional_id(&self.group_id, self.instance_id.as_deref())
    }

    /// A loop whose group, transactional id and dead-letter topic carry the namespace of `names`.
    pub fn namespaced(processor: &str, brokers: &str, inputs: Vec<String>, delivery: Delivery, names: &crate::topology::names::TopicNames) -> Self {
        LoopConfig { group_id: names.group(processor), dead_letter_topic: names.dead_letters(processor), ..Self::new(processor, brokers, inputs, delivery) }
    }

    pub fn new(processor: &str, brokers: &str, inputs: Vec<String>, delivery: Delivery) -> Self {
        LoopConfig {
            processor: processor.to_string(),
            brokers: brokers.to_string(),
            inputs,
            group_id: format!("funnel-{processor}"),
            instance_id: None,
            dead_letter_topic: dead_letters::topic_for(processor),
            delivery,
            batch_max: 5000,
            batch_ms: 200,
            stop_when_idle: false,
            align: None,
        }
    }
}

pub async fn run<T: Transform>(cfg: LoopConfig, mut transform: T) -> Result<()> {
    let p = cfg.processor.as_str();
    health::report(p, "starting", "");
    let consumer: Consumer = consumer_config(&cfg.brokers, &cfg.group_id).create_with_context(Assignments::default())?;
    let refs: Vec<&str> = cfg.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&refs).with_context(|| format!("subscribing to {:?}", cfg.inputs))?;
    let transactional = cfg.delivery == Delivery::ExactlyOnce;
    let tid = cfg.transactional_id();
    let producer: FutureProducer = producer_config(&cfg.brokers, transactional.then_some(tid.as_str())).create()?;
    if transactional {
        let pr = producer.clone();
        tokio::task::spawn_blocking(move || pr.init_transactions(Duration::from_secs(60))).await?.context("init_transactions")?;
    }
    let progress: lag::Progress = Default::default();
    lag::spawn_reporter(p, &cfg.brokers, &progress)?;
    health::report(p, "running", cfg.inputs.join(","));
    tracing::info!(processor = p, inputs = ?cfg.inputs, delivery = cfg.delivery.as_str(), instance = cfg.instance_id.as_deref().unwrap_or(""), "processor running");
    // The group assignment the transform was last told of (`Transform::assigned`).
    let mut handed = 0;

    // Partitions stopped at a record that is not due yet: (topic, partition) → (offset, due ms).
    let mut waiting: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    // A bounded run (a replay) has every record it will read already in its inputs: a
    // partition behind is only being fetched, so waiting longer for it costs nothing and
    // keeps the rebuild in event-time order.
    let bounded_idle = |mut a: Alignment| {
        if cfg.stop_when_idle {
            a.max_idle = a.max_idle.max(Duration::from_secs(30));
        }
        a
    };
    let mut inbox = cfg.align.clone().map(|a| Inbox::new(bounded_idle(a), &cfg.inputs));
    let mut throttle = super::throttle::Throttle::from_env()?;
    let loop_started = Instant::now();
    while !shutdown::requested() {
        resume_due(&consumer, &mut waiting);
        if let Some(t) = &mut throttle {
            set_paused(&consumer, &t.resume_due(), false);
        }
        // Collect a batch (no transaction is open while polling).
        let mut batch = vec![];
        let mut polled = 0;
        let started = Instant::now();
        let mut assignment = consumer.context().count();
        // Waiting for a partition behind: take everything the window brings (what is waited
        // for may sit behind other partitions' records in the consumer's queue).
        let cap = if inbox.as_ref().is_some_and(Inbox::blocked) { usize::MAX } else { cfg.batch_max };
        while polled < cap && started.elapsed() < Duration::from_millis(cfg.batch_ms) {
            let left = Duration::from_millis(cfg.batch_ms).saturating_sub(started.elapsed());
            match tokio::time::timeout(left.max(Duration::from_millis(1)), consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    metrics().errors.with_label_values(&[p, "consume"]).inc();
                    tracing::warn!(processor = p, error = %e, "consume error");
                }
                Ok(Ok(m)) => {
                    // A rebalance inside recv(): what was collected before it is stale (each
                    // partition starts again at its committed offset); `m` came after it.
                    if consumer.context().count() != assignment {
                        assignment = consumer.context().count();
                        batch.clear();
                        polled = 0;
                        if let Some(inbox) = &mut inbox {
                            set_paused(&consumer, &inbox.clear(), false);
                        }
                    }
                    // A waiting partition's records are read again from its stop once resumed.
                    let tp = (m.topic().to_string(), m.partition());
                    if throttle.as_mut().is_some_and(|t| t.note(&tp)) {
                        set_paused(&consumer, &[tp.clone()], true);
                    }
                    if !waiting.contains_key(&tp) {
                        polled += 1;
                        match &mut inbox {
                            Some(inbox) => inbox.push(m.detach()),
                            None => batch.push(m.detach()),
                        }
                    }
                }
            }
        }
        if consumer.context().count() != assignment {
            // The rebalance came with the last, empty recv().
            batch.clear();
            if let Some(inbox) = &mut inbox {
                set_paused(&consumer, &inbox.clear(), false);
            }
        }
        let now_assigned = consumer.context().count();
        if now_assigned != handed {
            let parts = partitions::assigned(&consumer)?;
            // librdkafka keeps a partition paused across a rebalance, but the inbox forgets
            // the pauses of partitions revoked (an eager rebalance revokes all before it
            // assigns): resume every assigned partition not waiting for a due record, or one
            // paused by flow control is never fetched again (`funnel bench scale-out` stalled).
            let resume: Vec<Partition> = parts.iter().filter(|tp| !waiting.contains_key(*tp)).cloned().collect();
            set_paused(&consumer, &resume, false);
            let t = Instant::now();
            transform.assigned(&parts).await.with_context(|| format!("{p}: taking over partitions {parts:?}"))?;
            tracing::info!(processor = p, partitions = parts.len(), ms = t.elapsed().as_millis() as u64, "assigned partitions handed to the transform");
            handed = now_assigned;
        }
        if let Some(inbox) = &mut inbox {
            batch = release_aligned(p, &consumer, inbox, &waiting, cfg.batch_max, started.elapsed())?;
        }
        if batch.is_empty() && !transform.has_work() {
            if inbox.as_ref().is_none_or(Inbox::is_empty) {
                lag::advance_to_position(&progress, &consumer);
                if cfg.stop_when_idle && consumed_to_end(&consumer, &cfg.inputs, loop_started.elapsed() > Duration::from_secs(10))? {
                    break;
                }
            }
            continue;
        }
        let t0 = Instant::now();
        if transactional {
            producer.begin_transaction().context("begin_transaction")?;
        }
        let result = process_batch(&cfg, &mut transform, &producer, &batch).await;
        let (next, deferred) = match result {
            Ok(x) => x,
            Err(e) => {
                metrics().errors.with_label_values(&[p, "batch"]).inc();
                if transactional {
                    let pr = producer.clone();
                    let _ = tokio::task::spawn_blocking(move || pr.abort_transaction(Duration::from_secs(30))).await;
                }
                health::report(p, "failed", format!("{e:#}"));
                return Err(e);
            }
        };
        let processed = t0.elapsed();
        let mut offsets = TopicPartitionList::new();
        for ((t, part), o) in &next {
            offsets.add_partition_offset(t, *part, Offset::Offset(*o))?;
        }
        if transactional {
            // Both calls wait for the broker: off the async workers, which the lag reporter,
            // the HTTP server and (in one process) other processors share.
            let meta = consumer.group_metadata().context("consumer group metadata")?;
            let pr = producer.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                // A batch of records that were all not yet due consumed nothing.
                if offsets.count() > 0 {
                    pr.send_offsets_to_transaction(&offsets, &meta, Duration::from_secs(30)).context("send_offsets_to_transaction")?;
                }
                pr.commit_transaction(Duration::from_secs(60)).context("commit_transaction")
            })
            .await??;
        } else if offsets.count() > 0 {
            // A blocking round trip; the consumer stays borrowed here, so instead of spawn_blocking
            // the runtime moves its other tasks off this worker meanwhile.
            tokio::task::block_in_place(|| consumer.commit(&offsets, CommitMode::Sync)).context("committing offsets")?;
        }
        for ((t, part), o) in &next {
            lag::advance(&progress, t, *part, *o);
        }
        for ((t, part), (offset, due)) in deferred {
            // Pause first, then rewind: the records after the stop are fetched again on resume.
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&t, part);
            consumer.pause(&tpl).with_context(|| format!("pausing {t}/{part}"))?;
            consumer.seek(&t, part, Offset::Offset(offset), Duration::from_secs(10)).with_context(|| format!("rewinding {t}/{part} to {offset}"))?;
            if let Some(inbox) = &mut inbox {
                inbox.rewind(&(t.clone(), part), offset);
            }
            waiting.insert((t, part), (offset, due));
        }
        // The position covers buffered records too: progress only once nothing is buffered.
        if inbox.as_ref().is_none_or(Inbox::is_empty) {
            lag::advance_to_position(&progress, &consumer);
        }
        metrics().batch_seconds.with_label_values(&[p]).observe(t0.elapsed().as_secs_f64());
        tracing::debug!(
            processor = p,
            records = batch.len(),
            collect_ms = (t0 - started).as_millis() as u64,
            process_ms = processed.as_millis() as u64,
            commit_ms = (t0.elapsed() - processed).as_millis() as u64,
            "batch committed"
        );
    }
    tracing::info!(processor = p, "processor stopped cleanly");
    Ok(())
}

/// Fence the previous instance of a processor before it restores its state: a producer with
/// the processor's transactional id (its group id) initialises transactions, which aborts a
/// transaction the killed instance left open. Without it, a read_committed restore of the
/// changelogs waits behind that open transaction until the broker times it out.
pub async fn fence(brokers: &str, group_id: &str, delivery: Delivery) -> Result<()> {
    if delivery != Delivery::ExactlyOnce {
        return Ok(());
    }
    let producer: FutureProducer = producer_config(brokers, Some(group_id)).create()?;
    tokio::task::spawn_blocking(move || producer.init_transactions(Duration::from_secs(60)))
        .await?
        .with_context(|| format!("fencing the previous instance of {group_id} (init_transactions)"))
}

/// Copies records unchanged: the baseline for benchmarks and a smoke test of the loop.
pub struct Passthrough {
    pub to: String,
}

impl Transform for Passthrough {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        Ok(Ok(vec![OutRecord { partition: None, topic: self.to.clone(), key: rec.key.unwrap_or_default().to_vec(), value: rec.value.map(<[u8]>::to_vec) }]))
    }
}
