//! Outages are not bad data, and not a reason to die: a long-running processor that fails
//! (its broker, database, Redis or lake went away mid-batch) is restarted in the same process
//! after a backoff — 1 s doubling to 60 s, back to 1 s once a run lasted a minute — and
//! reports `failed` with the error meanwhile, so `/health` says what is down. A restart is
//! what a process restart would be: the processor rebuilds its clients, restores its state
//! from its changelogs and resumes from its committed offsets — nothing is lost, and an
//! exactly-once processor doubles nothing (an at-least-once one re-sends the uncommitted
//! batch, each record carrying its idempotency key).
//! Records that are bad in themselves never get here: they go to the dead-letter topic.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{health, metrics::metrics, shutdown};

const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run that lasted this long was healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Run `start()` until it ends cleanly or a shutdown is requested, restarting it after each
/// failure. With `exit_on_failure` the first failure is returned instead (for deployments
/// whose supervisor restarts the process).
pub async fn supervise<T, F, Fut>(processor: &str, exit_on_failure: bool, mut start: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        let started = Instant::now();
        let err = match start().await {
            Ok(done) => return Ok(done),
            Err(e) if exit_on_failure || shutdown::requested() => return Err(e),
            Err(e) => e,
        };
        if started.elapsed() >= HEALTHY_RUN {
            delay = FIRST_DELAY;
        }
        metrics().errors.with_label_values(&[processor, "restart"]).inc();
        health::report(processor, "failed", format!("{err:#} (restarting in {} s)", delay.as_secs()));
        tracing::error!(processor, error = format!("{err:#}"), restart_in_s = delay.as_secs(), "processor failed; restarting it when the backoff is over");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown::wait() => return Err(err),
        }
        delay = (delay * 2).min(MAX_DELAY);
        tracing::info!(processor, "restarting processor");
    }
}
