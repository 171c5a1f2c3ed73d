//! Load requests' progress for `GET /load/{id}`, bounded: finished jobs expire after
//! `JOB_TTL`, at most `MAX_JOBS` are kept (the oldest finished go first), and at most
//! `MAX_WAITING` requests wait for a load (loads run one at a time), so no client can make
//! the service hold an unbounded number of jobs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::LoadEvent;

pub const JOB_TTL: Duration = Duration::from_secs(3600);
pub const MAX_JOBS: usize = 100;
pub const MAX_WAITING: usize = 4;

/// A load request's progress.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub load_id: String,
    /// queued, running, succeeded or failed.
    pub status: String,
    pub progress: String,
    pub result: Option<LoadEvent>,
}

impl Job {
    fn finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed")
    }
}

#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, (Instant, Job)>>,
}

impl Jobs {
    /// Record a job's new state (its age counts from this update).
    pub fn set(&self, id: &str, status: &str, progress: String, result: Option<LoadEvent>) {
        let Ok(mut jobs) = self.jobs.lock() else { return };
        jobs.insert(id.to_string(), (Instant::now(), Job { load_id: id.into(), status: status.into(), progress, result }));
        prune(&mut jobs);
    }

    /// Queue a job unless `MAX_WAITING` are already waiting or running; the count otherwise.
    pub fn try_queue(&self, id: &str) -> Result<(), usize> {
        let Ok(mut jobs) = self.jobs.lock() else { return Err(0) };
        let waiting = jobs.values().filter(|(_, j)| !j.finished()).count();
        if waiting >= MAX_WAITING {
            return Err(waiting);
        }
        jobs.insert(id.to_string(), (Instant::now(), Job { load_id: id.into(), status: "queued".into(), progress: "waiting for a running load".into(), result: None }));
        prune(&mut jobs);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        let mut jobs = self.jobs.lock().ok()?;
        prune(&mut jobs);
        jobs.get(id).map(|(_, j)| j.clone())
    }

    pub fn len(&self) -> usize {
        self.jobs.lock().map(|j| j.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn prune(jobs: &mut HashMap<String, (Instant, Job)>) {
    jobs.retain(|_, (at, j)| !(j.finished() && at.elapsed() > JOB_TTL));
    while jobs.len() > MAX_JOBS {
        let oldest = jobs.iter().filter(|(_, (_, j))| j.finished()).min_by_key(|(_, (at, _))| *at).map(|(id, _)| id.clone());
        match oldest {
            Some(id) => jobs.remove(&id),
            None => break,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_stay_bounded_and_waiting_loads_are_limited() {
        let jobs = Jobs::default();
        for i in 0..MAX_WAITING {
            jobs.try_queue(&format!("w{i}")).unwrap();
        }
        assert_eq!(jobs.try_queue("one-too-many"), Err(MAX_WAITING));
        for i in 0..MAX_WAITING {
            jobs.set(&format!("w{i}"), "succeeded", "done".into(), None);
        }
        for i in 0..MAX_JOBS * 3 {
            jobs.set(&format!("f{i}"), "failed", "done".into(), None);
        }
        assert_eq!(jobs.len(), MAX_JOBS);
        assert!(jobs.get(&format!("f{}", MAX_JOBS * 3 - 1)).is_some(), "the newest is kept");
        assert!(jobs.get("f0").is_none(), "the oldest finished went first");
        jobs.try_queue("again").unwrap();
    }
}
