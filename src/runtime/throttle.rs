//! Fault injection: `FUNNEL_THROTTLE=topic/partition=records_per_second[,…]` makes every
//! processor loop of the process take at most that many records per second from those input
//! partitions, pausing each for the rest of its second — one slow partition, as a lagging
//! broker or a hot leader makes it, to see event-time alignment at work (tests, demos).
//! Off unless set; a malformed value is an error at start, not ignored.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::align::Partition;

pub const ENV: &str = "FUNNEL_THROTTLE";

pub struct Throttle {
    limits: HashMap<Partition, u32>,
    counts: HashMap<Partition, u32>,
    paused: HashSet<Partition>,
    window: Instant,
}

impl Throttle {
    /// The throttle `FUNNEL_THROTTLE` asks for, if any.
    pub fn from_env() -> Result<Option<Throttle>> {
        match std::env::var(ENV) {
            Ok(spec) if !spec.trim().is_empty() => Self::parse(&spec).map(Some).with_context(|| format!("{ENV}={spec:?}: expected topic/partition=records_per_second[,…]")),
            _ => Ok(None),
        }
    }

    pub fn parse(spec: &str) -> Result<Throttle> {
        let mut limits = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (tp, rate) = item.split_once('=').context("missing '='")?;
            let (topic, partition) = tp.rsplit_once('/').context("missing '/partition'")?;
            let partition: i32 = partition.parse().context("partition is not a number")?;
            let rate: u32 = rate.parse().context("records per second is not a number")?;
            anyhow::ensure!(rate > 0, "records per second must be above 0");
            limits.insert((topic.to_string(), partition), rate);
        }
        Ok(Throttle { limits, counts: HashMap::new(), paused: HashSet::new(), window: Instant::now() })
    }

    /// Count a record of `tp`; true when the partition used up its second and must pause.
    pub fn note(&mut self, tp: &Partition) -> bool {
        let Some(limit) = self.limits.get(tp) else { return false };
        let c = self.counts.entry(tp.clone()).or_default();
        *c += 1;
        if *c >= *limit && self.paused.insert(tp.clone()) {
            return true;
        }
        false
    }

    /// At the turn of a second: the partitions to resume.
    pub fn resume_due(&mut self) -> Vec<Partition> {
        if self.window.elapsed() < Duration::from_secs(1) {
            return vec![];
        }
        self.window = Instant::now();
        self.counts.clear();
        self.paused.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_partition_pauses_after_its_records_per_second() {
        let mut t = Throttle::parse("a.v1/2=3, b.v1/0=1").unwrap();
        let a: Partition = ("a.v1".into(), 2);
        assert!(!t.note(&("a.v1".into(), 1)), "other partitions are not throttled");
        assert!(!t.note(&a) && !t.note(&a));
        assert!(t.note(&a), "the third record of the second pauses it");
        assert!(!t.note(&a), "paused once");
        assert!(Throttle::parse("a.v1=3").is_err() && Throttle::parse("a.v1/x=3").is_err() && Throttle::parse("a.v1/0=0").is_err());
    }
}
