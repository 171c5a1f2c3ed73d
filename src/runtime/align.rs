//! Event-time alignment of a processor's input partitions (Kafka Streams' task idling).
//!
//! The consumer hands records over as partitions happen to be fetched: during a replay one
//! topic may run minutes ahead of another, so a join would see an order long before the
//! profile produced just ahead of it. The inbox buffers records per input partition and
//! releases them in event-time order across all of them — the smallest record timestamp
//! first; ties go to the earlier input (the order of `LoopConfig::inputs`), then the lower
//! partition; offset order within a partition always holds.
//!
//! A partition with nothing buffered holds the release back unless it is known to be at its
//! end: consumed up to the high watermark of a query made after the records now buffered
//! arrived (what is committed later was produced later, so it carries a later timestamp).
//! A partition that stays behind for longer than `max_idle` of polling — time the loop spent
//! waiting for it, not time spent processing what was released — is given up on for the
//! moment: the records go out of order rather than wait forever; counted in
//! `funnel_alignment_gave_up_total` and remembered at that watermark, so that unreadable
//! offsets (transaction markers, aborted records) do not make every later batch wait.
//!
//! The loop commits only the offsets of released records; the rest stays buffered (at most
//! `max_buffered` records: beyond that the partitions holding records are paused until half
//! of it is released). A partition that is fetched again from an earlier offset (a rebalance
//! gave it back, a rewind) drops what it had buffered from there.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

pub type Partition = (String, i32);

/// `ordering` in topology/processors.toml of a processor whose loop aligns its inputs.
pub const RECORD_TIMESTAMP: &str = "record-timestamp";

#[derive(Clone, Debug)]
pub struct Alignment {
    /// Longest wait for a partition that has nothing buffered and is not at its end.
    pub max_idle: Duration,
    /// Records buffered at most across all partitions (soft: a fetch in flight still lands).
    pub max_buffered: usize,
}

impl Alignment {
    /// The alignment of a loop with batches of `batch_max` records, waiting at most
    /// `idle_ms` for a partition behind; None when `idle_ms` is 0 (records in fetch order).
    /// The buffer holds four batches (at least 4000 records).
    pub fn for_batches(idle_ms: u64, batch_max: usize) -> Option<Alignment> {
        (idle_ms > 0).then(|| Alignment { max_idle: Duration::from_millis(idle_ms), max_buffered: 4 * batch_max.max(1000) })
    }
}

impl Default for Alignment {
    fn default() -> Self {
        Alignment { max_idle: Duration::from_millis(2000), max_buffered: 20_000 }
    }
}

/// What `release` stopped at.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Released as many as asked for, or everything buffered.
    Done,
    /// These partitions have nothing buffered and are not known to be at their end.
    Waiting(Vec<Partition>),
}

pub struct Inbox {
    cfg: Alignment,
    rank: HashMap<String, usize>,
    queues: BTreeMap<Partition, VecDeque<OwnedMessage>>,
    buffered: usize,
    /// The offset after the last record received, per partition.
    received: HashMap<Partition, i64>,
    /// How long the loop has polled while a partition held the release back.
    waited: HashMap<Partition, Duration>,
    /// Whether the last release stopped at a partition behind.
    blocked: bool,
    /// Partitions known to be at their end (until they receive a record).
    at_end: HashSet<Partition>,
    /// The high watermark at which each partition was last given up on.
    gave_up_at: HashMap<Partition, i64>,
    paused: HashSet<Partition>,
}

impl Inbox {
    pub fn new(cfg: Alignment, inputs: &[String]) -> Self {
        Inbox {
            cfg,
            rank: inputs.iter().enumerate().map(|(i, t)| (t.clone(), i)).collect(),
            queues: BTreeMap::new(),
            buffered: 0,
            received: HashMap::new(),
            waited: HashMap::new(),
            blocked: false,
            at_end: HashSet::new(),
            gave_up_at: HashMap::new(),
            paused: HashSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.buffered
    }

    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    pub fn push(&mut self, m: OwnedMessage) {
        let tp = (m.topic().to_string(), m.partition());
        let q = self.queues.entry(tp.clone()).or_default();
        while q.back().is_some_and(|b| b.offset() >= m.offset()) {
            q.pop_back();
            self.buffered -= 1;
        }
        self.received.insert(tp.clone(), m.offset() + 1);
        self.waited.remove(&tp);
        self.at_end.remove(&tp);
        q.push_back(m);
        self.buffered += 1;
    }

    /// Drop what is buffered of `tp` from `offset` on (the partition was rewound there).
    pub fn rewind(&mut self, tp: &Partition, offset: i64) {
        if let Some(q) = self.queues.get_mut(tp) {
            while q.back().is_some_and(|b| b.offset() >= offset) {
                q.pop_back();
                self.buffered -= 1;
            }
        }
        self.received.insert(tp.clone(), offset);
        self.at_end.remove(tp);
    }

    /// Forget everything buffered and known (a rebalance: every partition starts again at its
    /// committed offset). Returns the partitions flow control had paused, to resume.
    pub fn clear(&mut self) -> Vec<Partition> {
        let paused = self.paused.drain().collect();
        *self = Inbox { cfg: self.cfg.clone(), rank: std::mem::take(&mut self.rank), ..Inbox::new(self.cfg.clone(), &[]) };
        paused
    }

    /// Forget the partitions no longer assigned (their new owner reads them from the commit).
    pub fn retain(&mut self, assigned: &HashSet<Partition>) {
        let gone: Vec<Partition> = self.queues.keys().filter(|tp| !assigned.contains(*tp)).cloned().collect();
        for tp in gone {
            if let Some(q) = self.queues.remove(&tp) {
                self.buffered -= q.len();
            }
        }
        for map in [&mut self.received] {
            map.retain(|tp, _| assigned.contains(tp));
        }
        self.waited.retain(|tp, _| assigned.contains(tp));
        self.gave_up_at.retain(|tp, _| assigned.contains(tp));
        self.at_end.retain(|tp| assigned.contains(tp));
        self.paused.retain(|tp| assigned.contains(tp));
    }

    /// The offset after the last record received from `tp`, if any arrived.
    pub fn received(&self, tp: &Partition) -> Option<i64> {
        self.received.get(tp).copied()
    }

    /// Whether the last release stopped at a partition behind (the loop then polls without
    /// a record limit: what it waits for may sit behind other partitions' records in the
    /// consumer's queue).
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Record what a watermark query found: `next` is the consumer's next offset of `tp`
    /// (None when unknown), `low`/`high` its watermarks, `polled` how long the loop polled
    /// since the last query. Returns whether the partition was given up on just now (behind
    /// for longer than `max_idle` of polling).
    pub fn observe(&mut self, tp: &Partition, next: Option<i64>, low: i64, high: i64, polled: Duration) -> bool {
        if self.queues.get(tp).is_some_and(|q| !q.is_empty()) {
            return false;
        }
        if low >= high || next.is_some_and(|n| n >= high) || self.gave_up_at.get(tp) == Some(&high) {
            self.at_end.insert(tp.clone());
            self.waited.remove(tp);
            return false;
        }
        let waited = self.waited.entry(tp.clone()).or_default();
        *waited += polled;
        if *waited >= self.cfg.max_idle {
            self.gave_up_at.insert(tp.clone(), high);
            self.at_end.insert(tp.clone());
            self.waited.remove(tp);
            return true;
        }
        false
    }

    /// Release up to `max` records in event-time order. `assigned` are the partitions that
    /// take part (waiting-for-due partitions left out); a drained partition must be known to
    /// be at its end before anything else goes.
    pub fn release(&mut self, max: usize, assigned: &[Partition]) -> (Vec<OwnedMessage>, Stop) {
        let mut out = vec![];
        loop {
            let behind: Vec<Partition> = assigned.iter().filter(|tp| self.queues.get(*tp).is_none_or(VecDeque::is_empty) && !self.at_end.contains(*tp)).cloned().collect();
            if !behind.is_empty() {
                self.blocked = true;
                return (out, Stop::Waiting(behind));
            }
            self.blocked = false;
            if out.len() >= max {
                return (out, Stop::Done);
            }
            let next = self
                .queues
                .iter()
                .filter_map(|(tp, q)| q.front().map(|m| ((m.timestamp().to_millis().unwrap_or(0), self.rank.get(&tp.0).copied().unwrap_or(usize::MAX), tp.1), tp.clone())))
                .min();
            let Some((_, tp)) = next else {
                self.blocked = false;
                return (out, Stop::Done);
            };
            let Some(m) = self.queues.get_mut(&tp).and_then(VecDeque::pop_front) else { return (out, Stop::Done) };
            self.buffered -= 1;
            out.push(m);
            if self.queues.get(&tp).is_some_and(VecDeque::is_empty) {
                // Drained: whether more is on its way is for the next watermark query.
                self.at_end.remove(&tp);
            }
        }
    }

    /// Partitions to pause (over the bound: every one holding records) and to resume (back
    /// under half of it; and at once any paused partition that drained — paused and empty, it
    /// would hold the release back for good while the others keep the buffer full).
    pub fn flow_control(&mut self) -> (Vec<Partition>, Vec<Partition>) {
        let resume: Vec<Partition> = if self.buffered <= self.cfg.max_buffered / 2 {
            self.paused.drain().collect()
        } else {
            let drained: Vec<Partition> = self.paused.iter().filter(|tp| self.queues.get(*tp).is_none_or(VecDeque::is_empty)).cloned().collect();
            for tp in &drained {
                self.paused.remove(tp);
            }
            drained
        };
        let mut pause = vec![];
        if self.buffered >= self.cfg.max_buffered {
            pause = self.queues.iter().filter(|(tp, q)| !q.is_empty() && !self.paused.contains(*tp)).map(|(tp, _)| tp.clone()).collect();
            self.paused.extend(pause.iter().cloned());
        }
        (pause, resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedHeaders, Timestamp};

    fn msg(topic: &str, partition: i32, offset: i64, ts: i64) -> OwnedMessage {
        OwnedMessage::new(Some(vec![]), None, topic.into(), Timestamp::CreateTime(ts), partition, offset, None::<OwnedHeaders>)
    }

    fn ids(ms: &[OwnedMessage]) -> Vec<(String, i32, i64)> {
        ms.iter().map(|m| (m.topic().to_string(), m.partition(), m.offset())).collect()
    }

    fn parts() -> Vec<Partition> {
        vec![("a".into(), 0), ("b".into(), 0)]
    }

    #[test]
    fn records_are_released_by_timestamp_across_partitions_ties_to_the_earlier_input() {
        let mut ib = Inbox::new(Alignment::default(), &["a".into(), "b".into()]);
        for m in [msg("b", 0, 0, 5), msg("b", 0, 1, 10), msg("a", 0, 0, 10), msg("a", 0, 1, 20), msg("b", 0, 2, 30)] {
            ib.push(m);
        }
        let (out, stop) = ib.release(100, &parts());
        // a/0 drains at ts 20; b/0 still holds ts 30, but a/0 is not known to be at its end.
        assert_eq!(ids(&out), vec![("b".into(), 0, 0), ("a".into(), 0, 0), ("b".into(), 0, 1), ("a".into(), 0, 1)]);
        assert_eq!(stop, Stop::Waiting(vec![("a".into(), 0)]));
        assert!(!ib.observe(&("a".into(), 0), Some(2), 0, 2, Duration::ZERO));
        let (out, stop) = ib.release(100, &parts());
        assert_eq!(ids(&out), vec![("b".into(), 0, 2)]);
        assert_eq!(stop, Stop::Waiting(vec![("b".into(), 0)]), "b drained too; a stays at its end");
        assert_eq!(ib.len(), 0);
    }

    #[test]
    fn a_partition_behind_holds_the_release_until_idle_time_then_is_given_up_once_per_watermark() {
        let cfg = Alignment { max_idle: Duration::from_millis(100), max_buffered: 10 };
        let mut ib = Inbox::new(cfg, &["a".into(), "b".into()]);
        ib.push(msg("a", 0, 0, 50));
        let ms = Duration::from_millis;
        // b/0 has records (high 3) it has not fetched yet.
        assert!(!ib.observe(&("b".into(), 0), None, 0, 3, ms(40)));
        assert_eq!(ib.release(10, &parts()).0.len(), 0, "b/0 may hold an earlier record");
        assert!(ib.blocked());
        assert!(!ib.observe(&("b".into(), 0), None, 0, 3, ms(40)));
        assert!(ib.observe(&("b".into(), 0), None, 0, 3, ms(40)), "given up after max_idle of polling");
        assert_eq!(ib.release(10, &parts()).0.len(), 1);
        // a/0 drained; the same watermark of b/0 again does not wait a second time.
        ib.push(msg("a", 0, 1, 60));
        assert!(!ib.observe(&("b".into(), 0), None, 0, 3, ms(40)));
        assert_eq!(ib.release(10, &parts()).0.len(), 1);
    }

    #[test]
    fn a_partition_fetched_again_from_an_earlier_offset_drops_its_stale_records() {
        let mut ib = Inbox::new(Alignment::default(), &["a".into()]);
        for o in 0..5 {
            ib.push(msg("a", 0, o, o));
        }
        ib.push(msg("a", 0, 2, 2));
        assert_eq!(ib.len(), 3);
        ib.rewind(&("a".into(), 0), 1);
        assert_eq!(ib.len(), 1);
        assert_eq!(ib.received(&("a".into(), 0)), Some(1));
        let assigned: HashSet<Partition> = HashSet::new();
        ib.retain(&assigned);
        assert!(ib.is_empty());
    }

    #[test]
    fn over_the_bound_partitions_holding_records_pause_and_resume_at_half() {
        let mut ib = Inbox::new(Alignment { max_idle: Duration::from_secs(1), max_buffered: 4 }, &["a".into(), "b".into()]);
        for o in 0..4 {
            ib.push(msg("a", 0, o, o));
        }
        let (pause, resume) = ib.flow_control();
        assert_eq!((pause, resume.len()), (vec![("a".to_string(), 0)], 0));
        ib.observe(&("b".into(), 0), Some(0), 0, 0, Duration::ZERO);
        assert_eq!(ib.release(2, &parts()).0.len(), 2);
        assert_eq!(ib.flow_control(), (vec![], vec![("a".to_string(), 0)]));
    }

    #[test]
    fn a_paused_partition_that_drains_resumes_while_the_buffer_is_still_full() {
        let mut ib = Inbox::new(Alignment { max_idle: Duration::from_secs(1), max_buffered: 4 }, &["a".into(), "b".into()]);
        ib.push(msg("a", 0, 0, 1));
        for o in 0..4 {
            ib.push(msg("b", 0, o, 10 + o));
        }
        let (mut pause, _) = ib.flow_control();
        pause.sort();
        assert_eq!(pause, vec![("a".to_string(), 0), ("b".to_string(), 0)]);
        // a/0's only record goes; b/0 still holds 4 (over half the bound).
        assert_eq!(ib.release(10, &parts()).0.len(), 1);
        assert_eq!(ib.flow_control(), (vec![], vec![("a".to_string(), 0)]), "a/0 drained: it must fetch again");
    }

    #[test]
    fn a_rebalance_forgets_every_buffered_record_and_hands_back_the_paused_partitions() {
        let mut ib = Inbox::new(Alignment { max_idle: Duration::from_secs(1), max_buffered: 4 }, &["a".into(), "b".into()]);
        for o in 0..4 {
            ib.push(msg("a", 0, o, o));
        }
        assert_eq!(ib.flow_control().0, vec![("a".to_string(), 0)]);
        assert_eq!(ib.clear(), vec![("a".to_string(), 0)]);
        assert!(ib.is_empty() && ib.received(&("a".into(), 0)).is_none());
        // Fetched again from the committed offset: taken as new, inputs ranked as before (a
        // tie goes to the earlier input, a).
        ib.push(msg("b", 0, 0, 5));
        ib.push(msg("a", 0, 0, 5));
        let (out, _) = ib.release(10, &parts());
        assert_eq!(ids(&out), vec![("a".to_string(), 0, 0)]);
    }
}
