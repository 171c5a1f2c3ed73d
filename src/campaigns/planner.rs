//! The planner (runs inside `funnel campaigns serve`; one instance): every tick it catches
//! the view up and
//! - starts each scheduled campaign that is due — the audience is expanded into one send
//!   request per recipient (batch numbers of the campaign's batch size; recipients without a
//!   usable address are recorded `skipped` with the reason), and once all of those are
//!   acknowledged the `start` task — or fails it as expired when it is too late. A crash in
//!   between leaves the campaign scheduled: the next tick expands it again, and the ledger,
//!   which every worker checks before it sends, makes the repeated requests harmless (workers
//!   hold a campaign's requests until its start record arrives). No Kafka transaction: the
//!   ledger partitions are also written by the workers, and tansu reports the end of a
//!   partition one short when plain records follow a transaction marker, which left a
//!   campaign's last outcome unread;
//! - finishes a running campaign once every recipient has a final outcome;
//! - publishes the counts of every campaign that changed to campaign.stats.v1.
//!
//! A restart loses nothing: the view is read back from the topics, and a campaign due while
//! the service was down starts on the first tick.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::producer::FutureProducer;

use super::{audience, now_ms};
use super::metrics::metrics;
use super::model::{action, fmt_ms, State};
use super::records::{status, Codec, LedgerEntry, SendRequest, Task};
use super::view::View;
use crate::kafka::batch_producer::OutRecord;
use crate::kafka::producer_config;
use crate::runtime::{health, shutdown};

pub const PROCESSOR: &str = "campaign-planner";

pub struct Planner {
    codec: Arc<Codec>,
    view: View,
    lake: crate::lake::location::Lake,
    producer: FutureProducer,
    pub tick: Duration,
}


impl Planner {
    pub async fn open(brokers: &str, codec: Arc<Codec>, view: View, lake: crate::lake::location::Lake) -> Result<Self> {
        let producer: FutureProducer = producer_config(brokers, None).create()?;
        Ok(Planner { codec, view, lake, producer, tick: Duration::from_millis(500) })
    }

    /// Tick until shutdown; a failed tick is logged, reported and tried again.
    pub async fn run(mut self) {
        health::report(PROCESSOR, "running", "");
        while !shutdown::requested() {
            match self.once().await {
                Ok(()) => health::report(PROCESSOR, "running", ""),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "campaign planner tick failed; trying again");
                    health::report(PROCESSOR, "failed", format!("{e:#}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tick) => {}
                _ = shutdown::wait() => break,
            }
        }
    }

    pub async fn once(&mut self) -> Result<()> {
        self.view.catch_up().await?;
        let now = now_ms();
        let mut starts = vec![];
        let mut tasks = vec![];
        {
            let v = self.view.read();
            for (id, c) in &v.campaigns {
                let Some(def) = &c.definition else { continue };
                let l = &c.life;
                match l.state {
                    State::Scheduled if l.scheduled_at.is_some_and(|at| at <= now) => {
                        let at = l.scheduled_at.unwrap_or(now);
                        if now - at > def.expire_after_ms {
                            let detail = format!("expired: due at {}, not started within {} s", fmt_ms(at), def.expire_after_ms / 1000);
                            tasks.push(Task { detail: Some(detail), ..Task::new(id, action::FAIL, now) });
                        } else {
                            starts.push(def.clone());
                        }
                    }
                    State::Running if l.requested.is_some_and(|n| c.done() >= n) => tasks.push(Task::new(id, action::FINISH, now)),
                    _ => {}
                }
            }
        }
        for t in &tasks {
            tracing::info!(campaign = t.campaign_id, action = t.action, detail = t.detail.as_deref().unwrap_or(""), "campaign lifecycle");
            metrics().lifecycle.with_label_values(&[if t.action == action::FAIL { "failed" } else { "finished" }]).inc();
            self.send(&self.codec.task(t)?).await?;
        }
        for def in starts {
            self.start(&def).await?;
        }
        self.publish_stats().await
    }

    async fn send(&self, out: &OutRecord) -> Result<()> {
        self.send_all(std::slice::from_ref(out)).await
    }

    /// Produce and wait until the broker acknowledged every record.
    async fn send_all(&self, outs: &[OutRecord]) -> Result<()> {
        crate::kafka::batch_producer::produce_acked(&self.producer, outs).await
    }

    /// Expand the audience into requests, then record the start.
    async fn start(&self, def: &super::records::Definition) -> Result<()> {
        let id = &def.campaign_id;
        let now = now_ms();
        let recipients = match audience::resolve(def, &self.lake).await {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(campaign = id, reason, "campaign audience failed; the campaign fails");
                metrics().lifecycle.with_label_values(&["failed"]).inc();
                return self.send(&self.codec.task(&Task { detail: Some(format!("audience: {reason}")), ..Task::new(id, action::FAIL, now) })?).await;
            }
        };
        let mut outs = Vec::with_capacity(recipients.len() + 1);
        let (mut requests, mut skipped) = (0i32, 0);
        for r in &recipients {
            match r.skip_reason() {
                Some(reason) => {
                    skipped += 1;
                    outs.push(self.codec.ledger(&LedgerEntry {
                        campaign_id: id.clone(),
                        recipient_id: r.id.clone(),
                        email: r.email.clone(),
                        status: status::SKIPPED.into(),
                        attempt: 0,
                        smtp_code: None,
                        detail: Some(reason),
                        message_id: None,
                        at: now,
                    })?);
                }
                None => {
                    let req = SendRequest {
                        campaign_id: id.clone(),
                        recipient_id: r.id.clone(),
                        email: r.email.clone().unwrap_or_default(),
                        fields: serde_json::Value::Object(r.fields.clone()).to_string(),
                        batch: requests / def.batch_size.max(1),
                        attempt: 1,
                        not_before: 0,
                    };
                    requests += 1;
                    outs.push(self.codec.request(&req)?);
                }
            }
        }
        let t0 = std::time::Instant::now();
        self.send_all(&outs).await.context("producing the campaign's send requests")?;
        self.send(&self.codec.task(&Task { requested: Some(recipients.len() as i64), ..Task::new(id, action::START, now) })?).await?;
        metrics().lifecycle.with_label_values(&["started"]).inc();
        tracing::info!(campaign = id, recipients = recipients.len(), requests, skipped, batches = (requests + def.batch_size - 1) / def.batch_size.max(1), ms = t0.elapsed().as_millis() as u64, "campaign started");
        self.view.catch_up().await
    }

    async fn publish_stats(&self) -> Result<()> {
        let now = now_ms();
        let stats: Vec<_> = {
            let mut v = self.view.write();
            let changed = v.take_changed();
            changed.iter().filter_map(|id| v.campaigns.get(id).filter(|c| c.definition.is_some()).map(|c| c.stats(id, now))).collect()
        };
        for s in &stats {
            self.send(&self.codec.stats(s)?).await?;
        }
        Ok(())
    }
}
