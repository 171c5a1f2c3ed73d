//! The relay's configuration as processor state: every instance follows the CDC topics of the
//! four configuration tables from their beginning (a global table, as Kafka Streams'
//! GlobalKTable: each instance holds all of it, whatever partitions of events it owns), so an
//! admin change reaches routing and delivery within a poll, without a restart.
//! Secrets stay Fernet tokens here; the delivery worker decrypts one when it sends.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, TopicPartitionList};
use serde_json::{Map, Value};

use super::destinations::SGTM;
use super::topics::RelayTopics;
use crate::avro::value::long;
use crate::cdc::change::{Change, ChangeDecoder};
use crate::kafka::{admin, consumer_config, reached, remaining_ends};
use crate::registry::RegistryClient;

#[derive(Clone, Debug)]
pub struct Storefront {
    pub id: i32,
    pub code: String,
    pub active: bool,
}

#[derive(Clone, Debug)]
pub struct SgtmConfig {
    pub id: i32,
    pub storefront_id: i32,
    pub url: String,
    pub client_type: String,
    pub measurement_id: Option<String>,
    pub api_secret: Option<String>,
    pub endpoint_path: String,
    pub headers: Option<String>,
    pub active: bool,
}

#[derive(Clone, Debug)]
pub struct Platform {
    pub id: i32,
    pub code: String,
    pub active: bool,
}

#[derive(Clone, Debug)]
pub struct Credential {
    pub id: i32,
    pub storefront_id: i32,
    pub platform_id: i32,
    pub config: Map<String, Value>,
    pub secret: String,
    pub active: bool,
}

/// Where one event goes: the storefront's sGTM config, or one of its platform credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `sgtm` or the platform code.
    pub destination: String,
    /// The sGTM config id or the credential id.
    pub config_id: i32,
}

/// The kill-switch level that stops a delivery.
pub type Level = &'static str;

#[derive(Default, Debug)]
pub struct RelayState {
    pub storefronts: HashMap<i32, Storefront>,
    pub sgtm: HashMap<i32, SgtmConfig>,
    pub platforms: HashMap<i32, Platform>,
    pub credentials: HashMap<i32, Credential>,
}

#[derive(Clone, Copy, Debug)]
enum Table {
    Storefronts,
    Sgtm,
    Platforms,
    Credentials,
}

impl RelayState {
    fn apply(&mut self, table: Table, c: &Change) {
        let Some(id) = long(c.get("id")).map(|x| x as i32) else { return };
        let int = |n: &str| long(c.get(n)).map(|x| x as i32).unwrap_or_default();
        let flag = |n: &str| matches!(c.get(n), Some(apache_avro::types::Value::Boolean(true)));
        let text = |n: &str| c.text(n).unwrap_or_default();
        if c.is_delete() {
            match table {
                Table::Storefronts => self.storefronts.remove(&id).map(|_| ()),
                Table::Sgtm => self.sgtm.remove(&id).map(|_| ()),
                Table::Platforms => self.platforms.remove(&id).map(|_| ()),
                Table::Credentials => self.credentials.remove(&id).map(|_| ()),
            };
            return;
        }
        match table {
            Table::Storefronts => {
                self.storefronts.insert(id, Storefront { id, code: text("code"), active: flag("is_active") });
            }
            Table::Sgtm => {
                let row = SgtmConfig {
                    id,
                    storefront_id: int("storefront_id"),
                    url: text("sgtm_url"),
                    client_type: text("client_type"),
                    measurement_id: c.text("measurement_id"),
                    api_secret: c.text("api_secret_encrypted"),
                    endpoint_path: text("custom_endpoint_path"),
                    headers: c.text("custom_headers_encrypted"),
                    active: flag("is_active"),
                };
                self.sgtm.insert(id, row);
            }
            Table::Platforms => {
                self.platforms.insert(id, Platform { id, code: text("code"), active: flag("is_active") });
            }
            Table::Credentials => {
                let config = serde_json::from_str(&text("config")).unwrap_or_default();
                let row = Credential { id, storefront_id: int("storefront_id"), platform_id: int("platform_id"), config, secret: text("secret_encrypted"), active: flag("is_active") };
                self.credentials.insert(id, row);
            }
        }
    }

    pub fn storefront(&self, id: Option<i32>, code: &str) -> Option<&Storefront> {
        id.and_then(|id| self.storefronts.get(&id)).or_else(|| self.storefronts.values().find(|s| s.code == code))
    }

    fn platform_by_code(&self, code: &str) -> Option<&Platform> {
        self.platforms.values().find(|p| p.code == code)
    }

    /// Every destination configured for the storefront, switched on or off (the switches are
    /// judged at each attempt, so a retry waiting when a switch turns off is stopped too).
    pub fn routes(&self, storefront_id: i32) -> Vec<Route> {
        let mut routes: Vec<Route> = self.sgtm.values().filter(|c| c.storefront_id == storefront_id).map(|c| Route { destination: SGTM.into(), config_id: c.id }).collect();
        let mut creds: Vec<Route> = self
            .credentials
            .values()
            .filter(|c| c.storefront_id == storefront_id)
            .filter_map(|c| self.platforms.get(&c.platform_id).map(|p| Route { destination: p.code.clone(), config_id: c.id }))
            .collect();
        creds.sort_by(|a, b| a.destination.cmp(&b.destination));
        routes.extend(creds);
        routes
    }

    /// The switch that stops `route` for the storefront now, if one does: the storefront, the
    /// platform globally, then the sGTM config or the credential (a deleted one counts as off).
    pub fn stopped_by(&self, storefront_id: i32, route: &Route) -> Option<Level> {
        if !self.storefronts.get(&storefront_id).is_some_and(|s| s.active) {
            return Some("storefront");
        }
        if route.destination == SGTM {
            if !self.platform_by_code(SGTM).is_none_or(|p| p.active) {
                return Some("platform");
            }
            return (!self.sgtm.get(&route.config_id).is_some_and(|c| c.active)).then_some("sgtm_config");
        }
        let Some(cred) = self.credentials.get(&route.config_id) else { return Some("credential") };
        if !self.platforms.get(&cred.platform_id).is_some_and(|p| p.active) {
            return Some("platform");
        }
        (!cred.active).then_some("credential")
    }
}

/// The shared, live configuration. The task following the topics stops when the last clone
/// is dropped (a restarted processor does not leave its old follower running).
#[derive(Clone, Default)]
pub struct ConfigView {
    state: Arc<RwLock<RelayState>>,
    _follower: Option<Arc<crate::runtime::task::AbortOnDrop>>,
}


impl ConfigView {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, RelayState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fixed configuration (tests).
    pub fn fixed(state: RelayState) -> Self {
        ConfigView { state: Arc::new(RwLock::new(state)), _follower: None }
    }
}

/// Read the configuration topics to their end, then keep following them in the background.
pub async fn follow(brokers: &str, registry: &RegistryClient, topics: &RelayTopics) -> Result<ConfigView> {
    let tables = [(&topics.storefronts, Table::Storefronts), (&topics.sgtm_config, Table::Sgtm), (&topics.platforms, Table::Platforms), (&topics.credentials, Table::Credentials)];
    let mut tpl = TopicPartitionList::new();
    for (t, _) in &tables {
        crate::lake::merge_sink::wait_for_topic(brokers, t).await?;
        for p in 0..admin::partition_count(brokers, t)? {
            tpl.add_partition_offset(t, p, crate::kafka::FROM_START)?;
        }
    }
    // Assigned, never subscribed: each instance reads every partition; nothing is committed.
    let consumer: StreamConsumer = consumer_config(brokers, "funnel-relay-config").create().context("creating the relay config consumer")?;
    let ends = remaining_ends(&consumer, &tpl)?;
    consumer.assign(&tpl).context("assigning the relay config topics")?;
    let state: Arc<RwLock<RelayState>> = Arc::default();
    let table_of: HashMap<String, Table> = tables.iter().map(|(t, k)| (t.to_string(), *k)).collect();
    let mut decoder = ChangeDecoder::new(registry);
    let apply = {
        let state = state.clone();
        move |topic: &str, change: Change| {
            if let Some(t) = table_of.get(topic) {
                state.write().unwrap_or_else(|p| p.into_inner()).apply(*t, &change);
            }
        }
    };
    // Catch up first: routing must not start from an empty configuration.
    while !reached(&consumer, &ends) {
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(m)) => {
                if let Some(bytes) = m.payload() {
                    match decoder.decode(bytes).await? {
                        Ok(c) => apply(m.topic(), c),
                        Err(reason) => tracing::warn!(topic = m.topic(), offset = m.offset(), reason, "relay config change not understood; skipped"),
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "relay config read error"),
            Err(_) => {}
        }
    }
    {
        let s = state.read().unwrap_or_else(|p| p.into_inner());
        tracing::info!(storefronts = s.storefronts.len(), sgtm_configs = s.sgtm.len(), platforms = s.platforms.len(), credentials = s.credentials.len(), "relay configuration loaded");
    }
    let task = tokio::spawn(async move {
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    let Some(bytes) = m.payload() else { continue };
                    // A registry outage delays the change; it is never skipped.
                    loop {
                        match decoder.decode(bytes).await {
                            Ok(Ok(c)) => apply(m.topic(), c),
                            Ok(Err(reason)) => tracing::warn!(topic = m.topic(), offset = m.offset(), reason, "relay config change not understood; skipped"),
                            Err(e) => {
                                tracing::warn!(error = %format!("{e:#}"), "relay config change not decoded yet (registry?); retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                continue;
                            }
                        }
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay config read error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(ConfigView { state, _follower: Some(Arc::new(crate::runtime::task::AbortOnDrop(task.abort_handle()))) })
}
