//! The processor loop's hold on its input partitions: which ones the group assigned (and how
//! often that changed), pausing and resuming them (flow control, waiting records), releasing
//! buffered records in event-time order, and whether everything assigned was consumed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::align::{self, Inbox, Partition};
use super::metrics::metrics;

/// Counts the assignments the group handed this consumer. Rebalancing is eager (librdkafka's
/// default assignors): every assignment revokes all partitions first and starts each again
/// at its committed offset, so what was fetched or buffered before it is stale and the state
/// of every assigned partition must be taken from what was committed.
#[derive(Default)]
pub struct Assignments {
    count: AtomicU64,
}

impl Assignments {
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

impl ClientContext for Assignments {}

impl ConsumerContext for Assignments {
    /// Eager rebalancing as librdkafka's default does it, except that a partition the group
    /// never committed starts at offset 0 instead of the broker's "earliest" (tansu can answer
    /// that with an offset above records it still holds: `kafka::FROM_START`).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: rdkafka::types::RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        use rdkafka::types::RDKafkaRespErr as E;
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                    Ok(committed) => {
                        for e in committed.elements() {
                            if !matches!(e.offset(), Offset::Offset(_)) {
                                let _ = tpl.set_partition_offset(e.topic(), e.partition(), crate::kafka::FROM_START);
                            }
                        }
                    }
                    // Without the committed offsets the assignment still resumes from them
                    // (librdkafka fetches them itself); only the tansu workaround is lost.
                    Err(e) => tracing::warn!(error = %e, "committed offsets unknown at assignment"),
                }
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assigning partitions");
                }
                let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!(assignment = n, partitions = tpl.count(), "consumer group assigned partitions");
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "revoking partitions");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

pub type Consumer = StreamConsumer<Assignments>;

/// The partitions assigned now, sorted.
pub fn assigned(consumer: &Consumer) -> Result<Vec<Partition>> {
    let mut parts: Vec<Partition> = consumer.assignment().context("assignment")?.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    parts.sort();
    Ok(parts)
}

/// Whether the consumer has partitions and its position reached the end of each; or, for a
/// `spare` member (still nothing assigned well after it joined: one of several instances of a
/// bounded run, and tansu may not reassign when a member leaves), whether its group has
/// committed every partition of `inputs` to its end. A group commits the offset after the last
/// record it applied, one short of the end behind a transaction's commit marker, so one
/// offset of lag counts as the end: the members holding partitions judge by their own
/// position, exactly, and a spare member has nothing to process anyway.
pub(super) fn consumed_to_end(consumer: &Consumer, inputs: &[String], spare: bool) -> Result<bool> {
    let assigned = consumer.assignment().context("assignment")?;
    if assigned.count() == 0 {
        return if spare { group_committed_to_end(consumer, inputs) } else { Ok(false) };
    }
    let parts: Vec<(String, i32)> = assigned.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    let marks = crate::kafka::watermarks(consumer, &parts)?;
    let position = consumer.position().context("position")?;
    let committed = consumer.committed(Duration::from_secs(10)).context("committed offsets")?;
    Ok(marks.iter().all(|(t, p, lo, hi)| {
        let at = |tpl: &TopicPartitionList| match tpl.find_partition(t, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o >= *hi,
            _ => false,
        };
        lo == hi || at(&position) || at(&committed)
    }))
}

fn group_committed_to_end(consumer: &Consumer, inputs: &[String]) -> Result<bool> {
    let mut tpl = TopicPartitionList::new();
    for t in inputs {
        let meta = consumer.fetch_metadata(Some(t), Duration::from_secs(10)).context("topic metadata")?;
        for topic in meta.topics() {
            for part in topic.partitions() {
                tpl.add_partition(t, part.id());
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(false);
    }
    let parts: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    let marks = crate::kafka::watermarks(consumer, &parts)?;
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).context("committed offsets")?;
    Ok(marks.iter().all(|(t, p, lo, hi)| {
        lo == hi || matches!(committed.find_partition(t, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *hi - 1)
    }))
}

/// The next records in event-time order (see `align`): releases what the buffer allows,
/// asks the broker about the partitions holding it back, releases again, and pauses or
/// resumes partitions to keep the buffer bounded. A failed watermark query releases nothing
/// more this round (the broker may be down): the next round asks again.
pub(super) fn release_aligned(p: &str, consumer: &Consumer, inbox: &mut Inbox, waiting: &HashMap<Partition, (i64, i64)>, max: usize, polled: Duration) -> Result<Vec<rdkafka::message::OwnedMessage>> {
    let assignment = consumer.assignment().context("assignment")?;
    let assigned: std::collections::HashSet<Partition> = assignment.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
    inbox.retain(&assigned);
    let mut parts: Vec<Partition> = assigned.iter().filter(|tp| !waiting.contains_key(*tp)).cloned().collect();
    parts.sort();
    let (mut out, stop) = inbox.release(max, &parts);
    if let align::Stop::Waiting(behind) = stop {
        match tokio::task::block_in_place(|| behind_positions(consumer, inbox, &behind)) {
            Ok(marks) => {
                for (tp, next, lo, hi) in marks {
                    if inbox.observe(&tp, next, lo, hi, polled) {
                        metrics().alignment_gave_up.with_label_values(&[p, &tp.0]).inc();
                        tracing::info!(processor = p, topic = tp.0, partition = tp.1, next = ?next, high = hi, "alignment: a partition stayed behind longer than the idle time; going on without it");
                    }
                }
                let (more, _) = inbox.release(max.saturating_sub(out.len()), &parts);
                out.extend(more);
            }
            Err(e) => tracing::warn!(processor = p, error = %format!("{e:#}"), "alignment: watermark query failed; holding back"),
        }
    }
    let (pause, resume) = inbox.flow_control();
    set_paused(consumer, &pause, true);
    set_paused(consumer, &resume, false);
    Ok(out)
}

/// Pause or resume partitions (flow control, throttling); a partition no longer assigned is
/// not an error worth more than a debug line.
pub(super) fn set_paused(consumer: &Consumer, parts: &[Partition], pause: bool) {
    if parts.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (t, part) in parts {
        tpl.add_partition(t, *part);
    }
    let r = if pause { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
    if let Err(e) = r {
        tracing::debug!(error = %e, pause, "pausing/resuming partitions");
    }
}

/// For each partition holding the release back: its next offset (consumer position, the
/// last record received, or the committed offset when none arrived) and its watermarks.
fn behind_positions(consumer: &Consumer, inbox: &Inbox, behind: &[Partition]) -> Result<Vec<(Partition, Option<i64>, i64, i64)>> {
    let marks = crate::kafka::watermarks(consumer, behind)?;
    let position = consumer.position().context("position")?;
    let offset_in = |tpl: &TopicPartitionList, tp: &Partition| match tpl.find_partition(&tp.0, tp.1).map(|e| e.offset()) {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    };
    let mut next: HashMap<Partition, i64> = HashMap::new();
    for tp in behind {
        if let Some(o) = offset_in(&position, tp).max(inbox.received(tp)) {
            next.insert(tp.clone(), o);
        }
    }
    let unknown: Vec<&Partition> = behind.iter().filter(|tp| !next.contains_key(*tp)).collect();
    if !unknown.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (t, part) in &unknown {
            tpl.add_partition(t, *part);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).context("committed offsets")?;
        for tp in unknown {
            if let Some(o) = offset_in(&committed, tp) {
                next.insert(tp.clone(), o);
            }
        }
    }
    Ok(marks.into_iter().map(|(t, part, lo, hi)| {
        let tp = (t, part);
        let n = next.get(&tp).copied();
        (tp, n, lo, hi)
    }).collect())
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Resume the waiting partitions whose stop record is due (a partition no longer assigned
/// after a rebalance is simply forgotten: its new owner reads it from the committed offset).
pub(super) fn resume_due(consumer: &Consumer, waiting: &mut HashMap<(String, i32), (i64, i64)>) {
    let now = now_ms();
    waiting.retain(|(t, p), (_, due)| {
        if *due > now {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(t, *p);
        if let Err(e) = consumer.resume(&tpl) {
            tracing::debug!(topic = t, partition = p, error = %e, "resuming a waiting partition");
        }
        false
    });
}

