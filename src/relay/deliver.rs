//! `relay-deliver`: the delivery workers (a consumer group: more instances, more throughput).
//!
//! Each batch of delivery requests — first attempts from `relay.delivery.requested.v1`, due
//! retries from `relay.delivery.retry.<n>.v1` — is checked against the audit (an (event,
//! destination) that ended, or an attempt already made, is not sent again) and against the kill switches (a stopped
//! one is recorded `skipped` with its level), then sent per storefront and destination through
//! that destination's adapter, concurrently. Each event's verdict becomes an attempt (on
//! `relay.attempt.v1`, and in `relay.event_attempts` once the batch's outputs are acknowledged,
//! before the input offsets commit); a
//! retryable failure goes to the retry topic of its next attempt, due after the backoff
//! (`base × 2^(n−2)` before attempt n, or the destination's Retry-After if longer) — the
//! runtime pauses that topic until then, nothing sleeps in the loop; a permanent failure or
//! the last attempt goes to `relay.delivery.dlq.v1` with every attempt it had.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;

use super::config_state::{ConfigView, Route};
use super::crypto::{Keyring, Secret};
use super::delivery::{Attempt, AttemptSummary, Delivery, Status, NONE};
use super::destinations::{self, Request, Settings, Verdict};
use super::metrics::metrics;
use super::topics::{RelayConfig, RelayTopics};
use crate::avro::registered::Registered;
use crate::avro::serialization;
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};

pub const PROCESSOR: &str = "relay-deliver";
/// Response bodies are kept in the audit up to this many characters.
const EXCERPT: usize = 500;

pub struct Deliverer {
    registry: RegistryClient,
    config: ConfigView,
    keys: Arc<Keyring>,
    pool: deadpool_postgres::Pool,
    http: reqwest::Client,
    cfg: RelayConfig,
    topics: RelayTopics,
    delivery: (Registered, Registered),
    attempt: (Registered, Registered),
    /// The record `not_before` decoded, for `process` to reuse.
    peeked: Option<((String, i32, i64), Delivery)>,
    batch: Vec<Delivery>,
    /// The batch's attempts, for the audit once its outputs are acknowledged.
    unaudited: Vec<Attempt>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Deliverer {
    pub async fn open(registry: &RegistryClient, config: ConfigView, keys: Arc<Keyring>, pool: deadpool_postgres::Pool, cfg: RelayConfig, topics: RelayTopics) -> Result<Self> {
        use super::delivery::schemas as s;
        let delivery = Registered::topic(registry, &topics.dlq, s::DELIVERY_KEY, s::DELIVERY_VALUE).await?;
        for n in 2..=cfg.max_attempts {
            Registered::topic(registry, &topics.retry(n), s::DELIVERY_KEY, s::DELIVERY_VALUE).await?;
        }
        let attempt = Registered::topic(registry, &topics.attempts, s::ATTEMPT_KEY, s::ATTEMPT_VALUE).await?;
        let http = reqwest::Client::builder().timeout(Duration::from_millis(cfg.timeout_ms)).build().context("building the HTTP client")?;
        Ok(Deliverer { registry: registry.clone(), config, keys, pool, http, cfg, topics, delivery, attempt, peeked: None, batch: vec![], unaudited: vec![] })
    }

    async fn decode(&mut self, rec: &InRecord<'_>) -> Result<Result<Delivery, String>> {
        let at = (rec.topic.to_string(), rec.partition, rec.offset);
        if let Some((pos, d)) = self.peeked.take() {
            if pos == at {
                return Ok(Ok(d));
            }
        }
        let Some(bytes) = rec.value else { return Ok(Err("a delivery request without a value".into())) };
        Ok(match serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok((_, v)) => Delivery::from_value(&v),
            Err(reason) => Err(reason),
        })
    }

    /// The wait before attempt `n` (n ≥ 2): `base × 2^(n−2)` — the original service's examples
    /// (attempt 2 after base, 3 after 2 × base); its formula `base × 2^(n−1)` contradicts them.
    pub fn backoff(base: Duration, n: i32) -> Duration {
        base.saturating_mul(1u32.checked_shl((n - 2).clamp(0, 31) as u32).unwrap_or(u32::MAX))
    }

    /// The destination's settings now, secrets decrypted.
    fn settings(&self, route: &Route) -> Result<Settings, String> {
        let state = self.config.read();
        let decrypt = |t: &str| self.keys.decrypt(t).map_err(|e| e.to_string());
        if route.destination == destinations::SGTM {
            let c = state.sgtm.get(&route.config_id).ok_or("the sgtm config was deleted")?;
            let mut config = serde_json::Map::new();
            config.insert("sgtm_url".into(), c.url.clone().into());
            config.insert("client_type".into(), c.client_type.clone().into());
            config.insert("endpoint_path".into(), c.endpoint_path.clone().into());
            if let Some(m) = &c.measurement_id {
                config.insert("measurement_id".into(), m.clone().into());
            }
            let secret = c.api_secret.as_deref().map(decrypt).transpose()?;
            let headers = match c.headers.as_deref().map(decrypt).transpose()? {
                Some(h) => serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(h.expose())
                    .map_err(|e| format!("custom headers: {e}"))?
                    .into_iter()
                    .map(|(k, v)| (k, Secret::new(v.as_str().unwrap_or_default())))
                    .collect(),
                None => vec![],
            };
            return Ok(Settings { config, secret, headers });
        }
        let c = state.credentials.get(&route.config_id).ok_or("the credential was deleted")?;
        Ok(Settings { config: c.config.clone(), secret: Some(decrypt(&c.secret)?), headers: vec![] })
    }

    fn out_delivery(&self, topic: &str, d: &Delivery) -> Result<OutRecord> {
        let key = self.delivery.0.encode(d.key()).map_err(|e| anyhow::anyhow!("encoding a delivery key: {e}"))?;
        let value = self.delivery.1.encode(d.to_value()).map_err(|e| anyhow::anyhow!("encoding a delivery: {e}"))?;
        Ok(OutRecord { partition: None, topic: topic.to_string(), key, value: Some(value) })
    }

    fn out_attempt(&self, a: &Attempt) -> Result<OutRecord> {
        let key = self.attempt.0.encode(a.key()).map_err(|e| anyhow::anyhow!("encoding an attempt key: {e}"))?;
        let value = self.attempt.1.encode(a.to_value()).map_err(|e| anyhow::anyhow!("encoding an attempt: {e}"))?;
        Ok(OutRecord { partition: None, topic: self.topics.attempts.clone(), key, value: Some(value) })
    }

}

type Sent = (Result<(u16, Option<Duration>, String), &'static str>, Duration);

/// Send one request; (status, Retry-After, body) or the transport error's class, and the latency.
async fn send(http: reqwest::Client, url: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Sent {
        let t0 = Instant::now();
        let mut r = http.post(&url).body(body);
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        let result = match r.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok()).map(|s| Duration::from_secs_f64(s.clamp(0.0, 86_400.0)));
                match resp.text().await {
                    Ok(body) => Ok((status, retry_after, body)),
                    Err(e) if e.is_timeout() => Err("timeout"),
                    Err(_) => Err("connection"),
                }
            }
            Err(e) if e.is_timeout() => Err("timeout"),
            Err(e) if e.is_connect() => Err("connect"),
            Err(_) => Err("connection"),
        };
        (result, t0.elapsed())
}

/// One event's outcome before it becomes records.
struct Outcome1 {
    verdict: Verdict,
    status_code: Option<i32>,
    latency_ms: Option<i32>,
    excerpt: Option<String>,
    detail: Option<String>,
}

impl Outcome1 {
    fn bare(verdict: Verdict, detail: impl Into<String>) -> Self {
        Outcome1 { verdict, status_code: None, latency_ms: None, excerpt: None, detail: Some(detail.into()) }
    }
}

impl Transform for Deliverer {
    async fn not_before(&mut self, rec: &InRecord<'_>) -> Result<Option<i64>> {
        let d = self.decode(rec).await?;
        let due = d.as_ref().ok().map(|d| d.not_before_ms).filter(|t| *t > 0);
        if let Ok(d) = d {
            self.peeked = Some(((rec.topic.to_string(), rec.partition, rec.offset), d));
        }
        Ok(due)
    }

    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        match self.decode(rec).await? {
            Ok(d) => {
                self.batch.push(d);
                Ok(Ok(vec![]))
            }
            Err(reason) => Ok(Err(reason)),
        }
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return Ok(vec![]);
        }
        let now = now_ms();
        let db = self.pool.get().await.context("relay database (audit)")?;
        let pks: Vec<i64> = batch.iter().map(|d| d.event_pk).collect();
        let progress = super::audit::progress(&db, &pks).await.context("reading the audit")?;
        drop(db);
        let mut seen = HashSet::new();
        let mut outcomes: Vec<(Delivery, Outcome1)> = vec![];
        let mut groups: Vec<(Route, Vec<Delivery>)> = vec![];
        for d in batch {
            let id = (d.event_pk, d.destination.clone());
            let done = progress.get(&id).is_some_and(|p| p.done || p.last_attempt.get(&d.replay).is_some_and(|last| *last >= d.attempt));
            if done || !seen.insert(id) {
                metrics().deliveries.with_label_values(&[&d.destination, "duplicate_skipped"]).inc();
                continue;
            }
            if d.destination == NONE {
                let note = d.note.clone().unwrap_or_default();
                let verdict = if note.starts_with("unknown storefront") { Verdict::Permanent { class: "unknown_storefront" } } else { Verdict::Permanent { class: "no_destination" } };
                outcomes.push((d, Outcome1::bare(verdict, note)));
                continue;
            }
            let route = Route { destination: d.destination.clone(), config_id: d.config_id };
            let stopped = d.storefront_id.map_or(Some("storefront"), |s| self.config.read().stopped_by(s, &route));
            if let Some(level) = stopped {
                outcomes.push((d, Outcome1 { verdict: Verdict::Permanent { class: "skipped" }, status_code: None, latency_ms: None, excerpt: None, detail: Some(level.to_string()) }));
                continue;
            }
            match groups.iter_mut().find(|(r, _)| *r == route) {
                Some((_, v)) => v.push(d),
                None => groups.push((route, vec![d])),
            }
        }
        // Build every group's requests, then send them all concurrently. `sending` holds the
        // adapter and events of each group that has requests; a request names its group there.
        let mut requests: Vec<(usize, Request, Vec<String>)> = vec![];
        let mut sending: Vec<(Box<dyn destinations::Destination>, Vec<Delivery>)> = vec![];
        for (route, events) in groups {
            let Some(adapter) = destinations::adapter(&route.destination) else {
                for d in events {
                    outcomes.push((d, Outcome1::bare(Verdict::Permanent { class: "no_adapter" }, format!("no adapter for {}", route.destination))));
                }
                continue;
            };
            let mut sendable = vec![];
            for d in events {
                match adapter.precheck(&d, now) {
                    Some((class, why)) => outcomes.push((d, Outcome1::bare(Verdict::Permanent { class }, why))),
                    None => sendable.push(d),
                }
            }
            let settings = match self.settings(&route) {
                Ok(s) => s,
                Err(why) => {
                    for d in sendable {
                        outcomes.push((d, Outcome1::bare(Verdict::Retry { class: "credentials", after: None }, why.clone())));
                    }
                    continue;
                }
            };
            let refs: Vec<&Delivery> = sendable.iter().collect();
            match adapter.build(&settings, &refs) {
                Ok(reqs) => {
                    let secrets: Vec<String> = settings.secrets().iter().map(|s| s.to_string()).collect();
                    let gi = sending.len();
                    requests.extend(reqs.into_iter().map(|r| (gi, r, secrets.clone())));
                }
                Err(why) => {
                    for d in sendable {
                        outcomes.push((d, Outcome1::bare(Verdict::Permanent { class: "config" }, why.clone())));
                    }
                    continue;
                }
            }
            sending.push((adapter, sendable));
        }
        let futures: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(i, (_, req, _))| {
                let f = send(self.http.clone(), req.url.clone(), req.headers.clone(), req.body.clone());
                async move { (i, f.await) }
            })
            .collect();
        let mut sent: Vec<(usize, Sent)> = futures::stream::iter(futures).buffer_unordered(self.cfg.concurrency.max(1)).collect().await;
        sent.sort_by_key(|(i, _)| *i);
        for (i, (result, latency)) in sent {
            let (gi, req, secrets) = &requests[i];
            let (adapter, events) = &sending[*gi];
            metrics().latency.with_label_values(&[adapter.name()]).observe(latency.as_secs_f64());
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let (verdicts, code, excerpt) = match &result {
                Ok((status, retry_after, body)) => {
                    let r = destinations::Response { status: *status, retry_after: *retry_after, body };
                    (adapter.classify(&r, req.events.len()), Some(*status as i32), Some(destinations::redact(body, &secrets, EXCERPT)))
                }
                Err(class) => (vec![Verdict::Retry { class, after: None }; req.events.len()], None, None),
            };
            for (i, v) in req.events.iter().zip(verdicts) {
                let d = events[*i].clone();
                let detail = match &result {
                    Err(class) => Some(format!("{class} after {} ms", latency.as_millis())),
                    Ok(_) => None,
                };
                outcomes.push((d, Outcome1 { verdict: v, status_code: code, latency_ms: Some(latency.as_millis().min(i32::MAX as u128) as i32), excerpt: excerpt.clone(), detail }));
            }
        }
        // Verdicts → attempts, retries and dead letters.
        let base = self.cfg.backoff_base;
        let mut attempts = vec![];
        let mut out = vec![];
        for (mut d, o) in outcomes {
            let mut a = Attempt::of(&d, Status::Delivered, now);
            a.status_code = o.status_code;
            a.latency_ms = o.latency_ms;
            a.response_excerpt = o.excerpt.clone();
            let summary = |class: Option<&str>| AttemptSummary { number: d.attempt, at_ms: now, status_code: o.status_code, error_class: class.map(str::to_string), detail: o.detail.clone().or(o.excerpt.clone()) };
            match &o.verdict {
                Verdict::Delivered => metrics().deliveries.with_label_values(&[&d.destination, "delivered"]).inc(),
                Verdict::Permanent { class: "skipped" } => {
                    a.status = Status::Skipped;
                    a.skipped_level = o.detail.clone();
                    metrics().deliveries.with_label_values(&[&d.destination, "skipped"]).inc();
                }
                Verdict::Permanent { class } => {
                    a.status = Status::Failed;
                    a.error_class = Some(class.to_string());
                    if a.response_excerpt.is_none() {
                        a.response_excerpt = o.detail.clone();
                    }
                    metrics().deliveries.with_label_values(&[&d.destination, "failed"]).inc();
                    tracing::warn!(event = d.event_pk, destination = %d.destination, class, status = ?o.status_code, "delivery failed permanently: dead-lettered");
                    d.attempts.push(summary(Some(class)));
                    out.push(self.out_delivery(&self.topics.dlq, &d)?);
                }
                Verdict::Retry { class, after } => {
                    a.error_class = Some(class.to_string());
                    d.attempts.push(summary(Some(class)));
                    if d.attempt >= self.cfg.max_attempts {
                        a.status = Status::Failed;
                        a.error_class = Some(format!("exhausted:{class}"));
                        metrics().deliveries.with_label_values(&[&d.destination, "failed"]).inc();
                        tracing::warn!(event = d.event_pk, destination = %d.destination, class, attempts = d.attempt, "retries exhausted: dead-lettered");
                        out.push(self.out_delivery(&self.topics.dlq, &d)?);
                    } else {
                        a.status = Status::Retrying;
                        metrics().deliveries.with_label_values(&[&d.destination, "retried"]).inc();
                        let wait = Self::backoff(base, d.attempt + 1).max(after.unwrap_or_default());
                        d.attempt += 1;
                        d.not_before_ms = now + wait.as_millis().min(i64::MAX as u128) as i64;
                        out.push(self.out_delivery(&self.topics.retry(d.attempt), &d)?);
                    }
                }
            }
            attempts.push(a);
        }
        for a in &attempts {
            out.push(self.out_attempt(a)?);
        }
        // Written once these outputs are acknowledged (before_commit): a crash before leaves
        // the batch to be processed again, a crash after finds its attempts in the audit.
        self.unaudited = attempts;
        Ok(out)
    }

    async fn before_commit(&mut self) -> Result<()> {
        let attempts = std::mem::take(&mut self.unaudited);
        if attempts.is_empty() {
            return Ok(());
        }
        let db = self.pool.get().await.context("relay database (audit)")?;
        super::audit::record(&db, &attempts).await.context("writing the attempt audit")
    }
}
