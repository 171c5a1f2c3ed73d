//! Retries with exponential backoff for transient failures at the edges (source database,
//! broker, registry). Attempts and the first delay come from `FUNNEL_RETRY_ATTEMPTS` (default
//! 3) and `FUNNEL_RETRY_DELAY` (seconds, default 1; doubled after each failure).

use std::future::Future;
use std::time::Duration;

/// The judgement of one attempt at an outbound integration (an ad platform's or sGTM's HTTP
/// answer, an SMTP reply): every destination module classifies into this.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Transient: try again, not before `after` when the destination said so.
    Retry { class: &'static str, after: Option<Duration> },
    /// The destination will never take it as it is.
    Permanent { class: &'static str },
}

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub attempts: u32,
    pub first_delay: Duration,
}

impl Backoff {
    pub fn from_env() -> Self {
        let attempts = std::env::var("FUNNEL_RETRY_ATTEMPTS").ok().and_then(|v| v.parse().ok()).unwrap_or(3u32).max(1);
        let secs = std::env::var("FUNNEL_RETRY_DELAY").ok().and_then(|v| v.parse::<f64>().ok()).unwrap_or(1.0).max(0.0);
        Backoff { attempts, first_delay: Duration::from_secs_f64(secs) }
    }

    /// Run `f` until it succeeds or the attempts are used up; the last error is returned.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut f: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut delay = self.first_delay;
        for attempt in 1..=self.attempts {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt == self.attempts => return Err(e.context(format!("{what}: failed after {attempt} attempts"))),
                Err(e) => {
                    tracing::warn!(what, attempt, of = self.attempts, retry_in_ms = delay.as_millis() as u64, error = format!("{e:#}"), "transient failure, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        unreachable!("attempts >= 1")
    }
}
