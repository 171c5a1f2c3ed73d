//! The campaigns as every process sees them: a follower reads the campaign topics from their
//! beginning (all partitions, nothing committed: a global table, as Kafka Streams'
//! GlobalKTable) and folds them into campaigns with their lifecycle, the send ledger, the
//! suppression list and the engagement counts. Nothing lives only here: a restart reads it
//! all back. `catch_up` waits until everything acknowledged before the call is applied — the
//! sender calls it before each batch, so it never mails a recipient the ledger already holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::model::{Lifecycle, State};
use super::records::{status, Codec, Definition, Engagement, LedgerEntry, Stats, Suppression, Task};
use super::topics::Kind;
use crate::kafka::{admin, consumer_config, reached, remaining_ends};

/// Engagement of one campaign: every hit, and the recipients behind them.
#[derive(Clone, Debug, Default)]
pub struct EngagementCounts {
    pub opens: i64,
    pub clicks: i64,
    pub openers: HashSet<String>,
    pub human_openers: HashSet<String>,
    pub clickers: HashSet<String>,
    pub human_clickers: HashSet<String>,
    pub unsubscribed: HashSet<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Campaign {
    pub definition: Option<Definition>,
    pub life: Lifecycle,
    /// Recipients per ledger status.
    pub counts: HashMap<String, i64>,
    pub engagement: EngagementCounts,
    /// When the last task arrived (ms).
    pub updated_at: i64,
}

impl Campaign {
    /// Recipients whose outcome is final.
    pub fn done(&self) -> i64 {
        self.counts.iter().filter(|(s, _)| status::is_final(s)).map(|(_, n)| n).sum()
    }

    pub fn stats(&self, id: &str, now_ms: i64) -> Stats {
        let n = |s: &str| self.counts.get(s).copied().unwrap_or(0);
        let e = &self.engagement;
        Stats {
            campaign_id: id.to_string(),
            name: self.definition.as_ref().map(|d| d.name.clone()).unwrap_or_default(),
            state: self.life.state.as_str().to_string(),
            requested: self.life.requested.unwrap_or(0),
            sent: n(status::SENT),
            retrying: n(status::RETRYING),
            failed: n(status::FAILED),
            bounced: n(status::BOUNCED),
            suppressed: n(status::SUPPRESSED),
            skipped: n(status::SKIPPED),
            cancelled: n(status::CANCELLED),
            opens: e.opens,
            unique_opens: e.openers.len() as i64,
            unique_human_opens: e.human_openers.len() as i64,
            clicks: e.clicks,
            unique_clicks: e.clickers.len() as i64,
            unique_human_clicks: e.human_clickers.len() as i64,
            unsubscribes: e.unsubscribed.len() as i64,
            updated_at: now_ms,
        }
    }
}

#[derive(Debug, Default)]
pub struct ViewState {
    pub campaigns: BTreeMap<String, Campaign>,
    /// (campaign, recipient) → latest outcome.
    pub ledger: HashMap<(String, String), LedgerEntry>,
    /// Lower-cased address → why it is suppressed.
    pub suppressed: HashMap<String, Suppression>,
    /// Campaigns whose counts changed since `take_changed`.
    changed: HashSet<String>,
}

impl ViewState {
    pub fn apply_definition(&mut self, d: Definition) {
        self.changed.insert(d.campaign_id.clone());
        let id = d.campaign_id.clone();
        self.campaigns.entry(id).or_default().definition = Some(d);
    }

    pub fn apply_task(&mut self, t: &Task) {
        let c = self.campaigns.entry(t.campaign_id.clone()).or_default();
        if c.life.apply(t) {
            c.updated_at = t.at;
            self.changed.insert(t.campaign_id.clone());
        } else {
            tracing::debug!(campaign = t.campaign_id, action = t.action, state = c.life.state.as_str(), "task not applicable in this state; ignored");
        }
    }

    pub fn apply_ledger(&mut self, e: LedgerEntry) {
        let c = self.campaigns.entry(e.campaign_id.clone()).or_default();
        let key = (e.campaign_id.clone(), e.recipient_id.clone());
        if let Some(old) = self.ledger.get(&key) {
            // A final outcome is never replaced (a late retry record of a sent mail).
            if status::is_final(&old.status) {
                return;
            }
            *c.counts.entry(old.status.clone()).or_default() -= 1;
        }
        *c.counts.entry(e.status.clone()).or_default() += 1;
        self.changed.insert(e.campaign_id.clone());
        self.ledger.insert(key, e);
    }

    pub fn apply_suppression(&mut self, email: &str, s: Option<Suppression>) {
        match s {
            Some(s) => {
                self.suppressed.insert(email.to_lowercase(), s);
            }
            None => {
                self.suppressed.remove(&email.to_lowercase());
            }
        }
    }

    pub fn apply_engagement(&mut self, e: &Engagement) {
        let c = self.campaigns.entry(e.campaign_id.clone()).or_default();
        let g = &mut c.engagement;
        let r = e.recipient_id.clone();
        match e.kind.as_str() {
            "open" => {
                g.opens += 1;
                g.openers.insert(r.clone());
                if !e.automated {
                    g.human_openers.insert(r);
                }
            }
            "click" => {
                g.clicks += 1;
                g.clickers.insert(r.clone());
                if !e.automated {
                    g.human_clickers.insert(r);
                }
            }
            "unsubscribe" => {
                g.unsubscribed.insert(r);
            }
            _ => return,
        }
        self.changed.insert(e.campaign_id.clone());
    }

    /// Campaigns whose counts changed since the last call.
    pub fn take_changed(&mut self) -> Vec<String> {
        self.changed.drain().collect()
    }

    pub fn is_final(&self, campaign_id: &str, recipient_id: &str) -> bool {
        self.ledger.get(&(campaign_id.to_string(), recipient_id.to_string())).is_some_and(|e| status::is_final(&e.status))
    }

    pub fn state_of(&self, campaign_id: &str) -> Option<State> {
        self.campaigns.get(campaign_id).filter(|c| c.definition.is_some()).map(|c| c.life.state)
    }
}

/// The shared view; the follower task stops with the last clone.
#[derive(Clone)]
pub struct View {
    state: Arc<RwLock<ViewState>>,
    requests: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    _follower: Arc<crate::runtime::task::AbortOnDrop>,
}


impl View {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ViewState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, ViewState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until every record acknowledged before this call is applied.
    pub async fn catch_up(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.requests.send(tx).await.map_err(|_| anyhow::anyhow!("the campaigns view follower stopped"))?;
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => bail!("catching up with the campaign topics: {e}"),
            Ok(Err(_)) => bail!("the campaigns view follower stopped"),
            Err(_) => bail!("catching up with the campaign topics took over 60 s"),
        }
    }
}

/// Read `kinds`' topics to their end, then follow them in the background.
pub async fn follow(brokers: &str, codec: Arc<Codec>, kinds: &[Kind]) -> Result<View> {
    let topics: Vec<(String, Kind)> = kinds.iter().map(|k| (codec.topics.topic(*k), *k)).collect();
    admin::ensure_topics(brokers, &codec.topics.specs()).await?;
    let mut tpl = TopicPartitionList::new();
    for (t, _) in &topics {
        for p in 0..admin::partition_count(brokers, t)? {
            tpl.add_partition_offset(t, p, crate::kafka::FROM_START)?;
        }
    }
    let consumer: Arc<StreamConsumer> = Arc::new(consumer_config(brokers, "funnel-campaigns-view").create().context("creating the campaigns view consumer")?);
    consumer.assign(&tpl).context("assigning the campaign topics")?;
    let kind_of: HashMap<String, Kind> = topics.into_iter().collect();
    let state: Arc<RwLock<ViewState>> = Arc::default();
    let (requests, mut pending) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(64);
    let mut f = FollowerLoop { consumer: consumer.clone(), tpl, kind_of, codec, state: state.clone() };
    f.catch_up().await?;
    {
        let s = state.read().unwrap_or_else(|p| p.into_inner());
        tracing::info!(campaigns = s.campaigns.len(), ledger = s.ledger.len(), suppressed = s.suppressed.len(), "campaigns view loaded");
    }
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                m = f.consumer.recv() => match m {
                    Ok(m) => { let m = m.detach(); f.apply(&m).await; }
                    Err(e) => {
                        tracing::warn!(error = %e, "campaigns view read error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                Some(reply) = pending.recv() => {
                    let r = f.catch_up().await.map_err(|e| format!("{e:#}"));
                    let _ = reply.send(r);
                }
            }
        }
    });
    Ok(View { state, requests, _follower: Arc::new(crate::runtime::task::AbortOnDrop(task.abort_handle())) })
}

struct FollowerLoop {
    consumer: Arc<StreamConsumer>,
    tpl: TopicPartitionList,
    kind_of: HashMap<String, Kind>,
    codec: Arc<Codec>,
    state: Arc<RwLock<ViewState>>,
}

impl FollowerLoop {
    /// Read until the position reaches the current end of every partition.
    async fn catch_up(&mut self) -> Result<()> {
        let consumer = self.consumer.clone();
        let tpl = self.tpl.clone();
        let mut ends = tokio::task::spawn_blocking(move || remaining_ends(&*consumer, &tpl)).await??;
        // Partitions already read past their end need no wait.
        if let Ok(pos) = self.consumer.position() {
            ends.retain(|(t, p, hi)| !matches!(pos.find_partition(t, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *hi));
        }
        while !reached(&*self.consumer, &ends) {
            match tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    let m = m.detach();
                    self.apply(&m).await;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "campaigns view read error"),
                Err(_) => {}
            }
        }
        Ok(())
    }

    async fn apply(&mut self, m: &OwnedMessage) {
        let Some(kind) = self.kind_of.get(m.topic()).copied() else { return };
        // A registry outage delays the record; it is never skipped.
        loop {
            match self.apply_once(kind, m).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(topic = m.topic(), offset = m.offset(), error = %format!("{e:#}"), "campaign record not decoded yet (registry?); retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn apply_once(&mut self, kind: Kind, m: &OwnedMessage) -> Result<()> {
        let Some(bytes) = m.payload() else {
            if kind == Kind::Suppression {
                if let Some(k) = m.key() {
                    // The key's Avro record holds the address as its only field.
                    if let Ok(Ok(email)) = self.codec.decode_key_text(k).await {
                        self.state.write().unwrap_or_else(|p| p.into_inner()).apply_suppression(&email, None);
                    }
                }
            }
            return Ok(());
        };
        let skip = |reason: String| tracing::warn!(topic = m.topic(), offset = m.offset(), reason, "campaign record not understood; skipped");
        macro_rules! decoded {
            ($t:ty) => {
                match self.codec.decode::<$t>(bytes).await? {
                    Ok(v) => v,
                    Err(reason) => return Ok(skip(reason)),
                }
            };
        }
        match kind {
            Kind::Definition => {
                let d = decoded!(Definition);
                self.state.write().unwrap_or_else(|p| p.into_inner()).apply_definition(d);
            }
            Kind::Task => {
                let t = decoded!(Task);
                self.state.write().unwrap_or_else(|p| p.into_inner()).apply_task(&t);
            }
            Kind::Ledger => {
                let e = decoded!(LedgerEntry);
                self.state.write().unwrap_or_else(|p| p.into_inner()).apply_ledger(e);
            }
            Kind::Suppression => {
                let s = decoded!(Suppression);
                let email = s.email.clone();
                self.state.write().unwrap_or_else(|p| p.into_inner()).apply_suppression(&email, Some(s));
            }
            Kind::Engagement => {
                let e = decoded!(Engagement);
                self.state.write().unwrap_or_else(|p| p.into_inner()).apply_engagement(&e);
            }
            Kind::Requested | Kind::Stats => {}
        }
        Ok(())
    }
}
