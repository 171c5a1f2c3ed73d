//! The sender workers (`funnel campaigns send`, a consumer group: more instances share the
//! partitions of the send topics). Per batch of send requests (the campaign's batch size):
//! catch the view up, then for each request — campaign paused: wait; cancelled: record it;
//! already final in the ledger (a re-delivery after a crash): skip; suppressed: record it;
//! render (a missing field fails that recipient alone) — then send the batch over SMTP with
//! bounded concurrency and a per-sender rate, recording each outcome in the ledger as soon as
//! its reply arrives. A 4xx goes to the retry topic of the next attempt (backoff doubling); a
//! 5xx is a bounce and suppresses the address. A concurrency slot is free again only once the
//! broker acknowledged the mail's ledger record, and the batch's offsets commit after that: a
//! kill loses at most the `--smtp-concurrency` mails in flight (those may be sent twice;
//! nothing is skipped).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use rdkafka::producer::FutureProducer;

use super::metrics::metrics;
use super::model::State;
use super::records::{status, Codec, LedgerEntry, SendRequest, Suppression};
use super::compose::CampaignMail;
use super::now_ms;
use super::smtp::{Reply, Smtp};
use super::tracking::Links;
use super::view::View;
use crate::kafka::batch_producer::OutRecord;
use crate::retry::Verdict;
use crate::runtime::health;
use crate::runtime::processor::{InRecord, Outcome, Transform};

pub const PROCESSOR: &str = "campaign-sender";

#[derive(clap::Args, Clone, Debug)]
pub struct SenderConfig {
    /// SMTP server (smtp://host:port).
    #[arg(long = "smtp-url", env = "FUNNEL_SMTP_URL", default_value = "smtp://127.0.0.1:12525")]
    pub smtp_url: String,
    /// Mails in flight at once per worker (and SMTP connections in its pool).
    #[arg(long = "smtp-concurrency", default_value_t = 8)]
    pub concurrency: usize,
    /// Mails per second per sender address, per worker (0 = unlimited).
    #[arg(long = "rate-per-sender", default_value_t = 0.0)]
    pub rate_per_sender: f64,
    /// Wait before the second attempt after a 4xx; it doubles for each further one.
    #[arg(long = "smtp-retry-backoff", default_value = "30s", value_parser = crate::config::parse_duration)]
    pub backoff_base: Duration,
    /// Timeout of one SMTP conversation, in seconds.
    #[arg(long = "smtp-timeout-s", default_value_t = 30)]
    pub timeout_s: u64,
    /// Public base URL of `funnel campaigns serve` for tracking and unsubscribe links.
    #[arg(long = "public-url", env = "FUNNEL_CAMPAIGNS_PUBLIC_URL", default_value = "http://127.0.0.1:8090")]
    pub public_url: String,
}

/// (topic, partition, offset) of a record.
type Position = (String, i32, i64);

/// One mail ready to go.
struct Job {
    req: SendRequest,
    sender: String,
    message: lettre::Message,
    message_id: String,
    rendered_in: Duration,
}

pub struct Sender {
    codec: Arc<Codec>,
    view: View,
    smtp: Smtp,
    producer: FutureProducer,
    links: Arc<Links>,
    cfg: SenderConfig,
    campaigns: HashMap<String, Arc<CampaignMail>>,
    /// The request of the record `not_before` last looked at (decoded once).
    decoded: Option<(Position, Result<SendRequest, String>)>,
    jobs: Vec<Job>,
    in_batch: HashSet<(String, String)>,
    /// Requests taken per campaign in this batch: at the campaign's batch size the rest waits
    /// for the next batch, so a pause takes effect within one batch.
    taken: HashMap<String, i32>,
    caught_up: bool,
    /// Per sender address: when its next mail may go.
    next_slot: Arc<tokio::sync::Mutex<HashMap<String, Instant>>>,
}

impl Sender {
    pub fn new(codec: Arc<Codec>, view: View, smtp: Smtp, producer: FutureProducer, links: Arc<Links>, cfg: SenderConfig) -> Self {
        Sender { codec, view, smtp, producer, links, cfg, campaigns: HashMap::new(), decoded: None, jobs: vec![], in_batch: HashSet::new(), taken: HashMap::new(), caught_up: false, next_slot: Default::default() }
    }

    async fn request(&mut self, rec: &InRecord<'_>) -> Result<Result<SendRequest, String>> {
        let id = (rec.topic.to_string(), rec.partition, rec.offset);
        if let Some((at, r)) = &self.decoded {
            if *at == id {
                return Ok(r.clone());
            }
        }
        let r = match rec.value {
            Some(b) => self.codec.decode::<SendRequest>(b).await?,
            None => Err("a send request without a value".into()),
        };
        self.decoded = Some((id, r.clone()));
        Ok(r)
    }

    async fn ensure_caught_up(&mut self) -> Result<()> {
        if !self.caught_up {
            self.view.catch_up().await?;
            self.caught_up = true;
        }
        Ok(())
    }

    fn ledger(&self, r: &SendRequest, status: &str, code: Option<i32>, detail: Option<String>, message_id: Option<String>) -> Result<OutRecord> {
        ledger(&self.codec, r, status, code, detail, message_id)
    }

    /// The campaign compiled once per worker (definitions never change).
    fn campaign(&mut self, campaign_id: &str) -> Result<Arc<CampaignMail>, String> {
        if let Some(c) = self.campaigns.get(campaign_id) {
            return Ok(c.clone());
        }
        let def = self.view.read().campaigns.get(campaign_id).and_then(|c| c.definition.clone()).ok_or_else(|| format!("unknown campaign {campaign_id}"))?;
        let c = Arc::new(CampaignMail::compile(&def, self.links.clone())?);
        self.campaigns.insert(campaign_id.to_string(), c.clone());
        Ok(c)
    }

    /// Render one request into a mail, or the reason it cannot be.
    fn prepare(&mut self, r: &SendRequest) -> Result<Job, String> {
        let t0 = Instant::now();
        let campaign = self.campaign(&r.campaign_id)?;
        let (message, message_id) = campaign.compose(r)?;
        Ok(Job { req: r.clone(), sender: campaign.from.email.to_string(), message, message_id, rendered_in: t0.elapsed() })
    }

    /// Wait for the sender address's next slot under the rate limit.
    async fn pace(next_slot: &tokio::sync::Mutex<HashMap<String, Instant>>, sender: &str, rate: f64) {
        if rate <= 0.0 {
            return;
        }
        let slot = {
            let mut slots = next_slot.lock().await;
            let now = Instant::now();
            let next = slots.entry(sender.to_string()).or_insert(now);
            let slot = (*next).max(now);
            *next = slot + Duration::from_secs_f64(1.0 / rate);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

impl Transform for Sender {
    async fn not_before(&mut self, rec: &InRecord<'_>) -> Result<Option<i64>> {
        self.ensure_caught_up().await?;
        let Ok(r) = self.request(rec).await? else { return Ok(None) };
        if r.not_before > now_ms() {
            return Ok(Some(r.not_before));
        }
        // A paused campaign holds its requests (and, behind them, the partition) until resumed;
        // one not started in this view yet is looked at again shortly.
        let (state, batch_size) = {
            let v = self.view.read();
            (v.state_of(&r.campaign_id), v.campaigns.get(&r.campaign_id).and_then(|c| c.definition.as_ref()).map_or(i32::MAX, |d| d.batch_size))
        };
        if matches!(state, Some(State::Paused | State::Scheduled | State::Draft)) {
            return Ok(Some(now_ms() + 250));
        }
        let taken = self.taken.entry(r.campaign_id.clone()).or_default();
        if *taken >= batch_size {
            return Ok(Some(now_ms() + 1));
        }
        *taken += 1;
        Ok(None)
    }

    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        self.ensure_caught_up().await?;
        let r = match self.request(rec).await? {
            Ok(r) => r,
            Err(reason) => return Ok(Err(reason)),
        };
        let key = (r.campaign_id.clone(), r.recipient_id.clone());
        let (state, done, suppressed) = {
            let v = self.view.read();
            (v.state_of(&r.campaign_id), v.is_final(&key.0, &key.1), v.suppressed.get(&r.email.to_lowercase()).map(|s| s.reason.clone()))
        };
        let Some(state) = state else { return Ok(Err(format!("unknown campaign {}", r.campaign_id))) };
        if done || !self.in_batch.insert(key) {
            metrics().processed.with_label_values(&["duplicate"]).inc();
            return Ok(Ok(vec![]));
        }
        if matches!(state, State::Cancelled | State::Failed) {
            return Ok(Ok(vec![self.ledger(&r, status::CANCELLED, None, Some(format!("campaign {}", state.as_str())), None)?]));
        }
        if let Some(reason) = suppressed {
            return Ok(Ok(vec![self.ledger(&r, status::SUPPRESSED, None, Some(reason), None)?]));
        }
        match self.prepare(&r) {
            Ok(job) => {
                self.jobs.push(job);
                Ok(Ok(vec![]))
            }
            Err(reason) => Ok(Ok(vec![self.ledger(&r, status::FAILED, None, Some(reason), None)?])),
        }
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        self.caught_up = false;
        self.in_batch.clear();
        self.taken.clear();
        let jobs = std::mem::take(&mut self.jobs);
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        let (smtp, rate, slots) = (self.smtp.clone(), self.cfg.rate_per_sender, self.next_slot.clone());
        let (codec, producer, backoff) = (self.codec.clone(), self.producer.clone(), self.cfg.backoff_base);
        let server = smtp.server.clone();
        let mut unavailable: Option<String> = None;
        // Each of the `concurrency` slots holds a mail from its SMTP send until the broker
        // acknowledged its ledger record, so at any moment at most `concurrency` mails per
        // worker are sent but not yet recorded: all a kill -9 can make a restart send twice.
        let mut results = futures::stream::iter(jobs.into_iter().map(|job| {
            let (smtp, slots, codec, producer) = (smtp.clone(), slots.clone(), codec.clone(), producer.clone());
            async move {
                // An outage is retried here for a few seconds; if it lasts, the batch fails
                // (the processor restarts it; what was sent is in the ledger and is skipped).
                let mut tries = 0;
                let (reply, took) = loop {
                    Self::pace(&slots, &job.sender, rate).await;
                    let t0 = Instant::now();
                    let reply = smtp.send(&job.message).await;
                    let took = t0.elapsed() + job.rendered_in;
                    match &reply {
                        Reply::Unavailable(_) if tries < 4 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200 << tries)).await;
                        }
                        _ => break (reply, took),
                    }
                };
                let recorded = match outcome(&codec, backoff, &job, &reply) {
                    Ok(outs) => crate::kafka::batch_producer::produce_acked(&producer, &outs).await.context("recording a send in the ledger"),
                    Err(e) => Err(e),
                };
                (reply, took, recorded)
            }
        }))
        .buffer_unordered(self.cfg.concurrency.max(1));
        let mut first_error = None;
        while let Some((reply, took, recorded)) = results.next().await {
            let label = match &reply {
                Reply::Judged { verdict: Verdict::Delivered, .. } => "sent",
                Reply::Judged { .. } => "refused",
                Reply::Unavailable(e) => {
                    unavailable = Some(e.clone());
                    "unavailable"
                }
            };
            metrics().processing.with_label_values(&[label]).observe(took.as_secs_f64());
            if let Err(e) = recorded {
                first_error.get_or_insert(e);
            }
        }
        drop(results);
        if let Some(e) = first_error {
            return Err(e);
        }
        if let Some(e) = unavailable {
            metrics().healthy.with_label_values(&[&server]).set(0);
            health::dependency(PROCESSOR, "smtp", Some(format!("{server}: {e}")));
            anyhow::bail!("the SMTP server {server} is unavailable: {e}");
        }
        metrics().healthy.with_label_values(&[&server]).set(1);
        health::dependency(PROCESSOR, "smtp", None);
        Ok(vec![])
    }
}

/// The ledger record of one request's outcome.
fn ledger(codec: &Codec, r: &SendRequest, status: &str, code: Option<i32>, detail: Option<String>, message_id: Option<String>) -> Result<OutRecord> {
    metrics().processed.with_label_values(&[status]).inc();
    codec.ledger(&LedgerEntry {
        campaign_id: r.campaign_id.clone(),
        recipient_id: r.recipient_id.clone(),
        email: Some(r.email.clone()),
        status: status.into(),
        attempt: r.attempt,
        smtp_code: code,
        detail,
        message_id,
        at: now_ms(),
    })
}

/// What the reply to one mail records: ledger entry, and a retry request or suppression.
fn outcome(codec: &Codec, backoff_base: Duration, job: &Job, reply: &Reply) -> Result<Vec<OutRecord>> {
    let r = &job.req;
    let Reply::Judged { verdict, code, detail } = reply else { return Ok(vec![]) };
    let class = match code {
        Some(c) => format!("{}xx", c / 100),
        None => "none".into(),
    };
    metrics().smtp.with_label_values(&[&class]).inc();
    Ok(match verdict {
        Verdict::Delivered => vec![ledger(codec, r, status::SENT, *code, None, Some(job.message_id.clone()))?],
        Verdict::Retry { .. } if r.attempt < codec.topics.max_attempts => {
            let wait = backoff_base.saturating_mul(1 << (r.attempt - 1).clamp(0, 16));
            let next = SendRequest { attempt: r.attempt + 1, not_before: now_ms() + wait.as_millis() as i64, ..r.clone() };
            vec![ledger(codec, r, status::RETRYING, *code, Some(detail.clone()), None)?, codec.request(&next)?]
        }
        Verdict::Retry { .. } => vec![ledger(codec, r, status::FAILED, *code, Some(format!("{} attempts, last: {detail}", r.attempt)), None)?],
        Verdict::Permanent { .. } => vec![
            ledger(codec, r, status::BOUNCED, *code, Some(detail.clone()), None)?,
            codec.suppression(&Suppression { email: r.email.to_lowercase(), reason: "bounce".into(), campaign_id: Some(r.campaign_id.clone()), detail: Some(detail.clone()), at: now_ms() })?,
        ],
    })
}
