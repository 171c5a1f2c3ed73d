//! The campaigns' records, one struct per topic value (Avro through serde, `avro::serde_record`),
//! and the codec that frames them with their registered schemas.

use std::collections::HashMap;

use anyhow::Result;
use apache_avro::types::Value;
use serde::{Deserialize, Serialize};

use super::topics::{CampaignTopics, Kind};
use crate::avro::serde_record::{from_avro, to_avro};
use crate::avro::Registered;
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Definition {
    pub campaign_id: String,
    pub name: String,
    pub sender: String,
    pub subject: String,
    pub html_template: Option<String>,
    pub text_template: Option<String>,
    pub batch_size: i32,
    pub audience: String,
    pub fields: Vec<String>,
    pub expire_after_ms: i64,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Task {
    pub campaign_id: String,
    pub action: String,
    pub at: i64,
    pub scheduled_at: Option<i64>,
    pub requested: Option<i64>,
    pub detail: Option<String>,
}

impl Task {
    pub fn new(campaign_id: &str, action: &str, at: i64) -> Self {
        Task { campaign_id: campaign_id.to_string(), action: action.to_string(), at, scheduled_at: None, requested: None, detail: None }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SendRequest {
    pub campaign_id: String,
    pub recipient_id: String,
    pub email: String,
    pub fields: String,
    pub batch: i32,
    pub attempt: i32,
    pub not_before: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LedgerEntry {
    pub campaign_id: String,
    pub recipient_id: String,
    pub email: Option<String>,
    pub status: String,
    pub attempt: i32,
    pub smtp_code: Option<i32>,
    pub detail: Option<String>,
    pub message_id: Option<String>,
    pub at: i64,
}

/// Ledger states; every one but `retrying` is final.
pub mod status {
    pub const SENT: &str = "sent";
    pub const RETRYING: &str = "retrying";
    pub const FAILED: &str = "failed";
    pub const BOUNCED: &str = "bounced";
    pub const SUPPRESSED: &str = "suppressed";
    pub const SKIPPED: &str = "skipped";
    pub const CANCELLED: &str = "cancelled";
    pub const ALL: &[&str] = &[SENT, RETRYING, FAILED, BOUNCED, SUPPRESSED, SKIPPED, CANCELLED];

    pub fn is_final(s: &str) -> bool {
        s != RETRYING
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Suppression {
    pub email: String,
    pub reason: String,
    pub campaign_id: Option<String>,
    pub detail: Option<String>,
    pub at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Engagement {
    pub campaign_id: String,
    pub recipient_id: String,
    pub kind: String,
    pub url: Option<String>,
    pub user_agent: Option<String>,
    pub automated: bool,
    pub automated_reason: Option<String>,
    pub at: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub campaign_id: String,
    pub name: String,
    pub state: String,
    pub requested: i64,
    pub sent: i64,
    pub retrying: i64,
    pub failed: i64,
    pub bounced: i64,
    pub suppressed: i64,
    pub skipped: i64,
    pub cancelled: i64,
    pub opens: i64,
    pub unique_opens: i64,
    pub unique_human_opens: i64,
    pub clicks: i64,
    pub unique_clicks: i64,
    pub unique_human_clicks: i64,
    pub unsubscribes: i64,
    pub updated_at: i64,
}

fn key_record(fields: &[(&str, &str)]) -> Value {
    Value::Record(fields.iter().map(|(n, v)| (n.to_string(), Value::String(v.to_string()))).collect())
}

/// Encodes every campaigns record with its topic's registered key and value schemas.
pub struct Codec {
    pub topics: CampaignTopics,
    schemas: HashMap<Kind, (Registered, Registered)>,
    registry: RegistryClient,
}

impl Codec {
    /// Register the schemas of every campaigns topic (idempotent).
    pub async fn open(registry: &RegistryClient, topics: &CampaignTopics) -> Result<Self> {
        let mut schemas = HashMap::new();
        for kind in Kind::ALL {
            let (k, v) = kind.schemas();
            schemas.insert(*kind, Registered::topic(registry, &topics.topic(*kind), k, v).await?);
        }
        for n in 2..=topics.max_attempts {
            let (k, v) = Kind::Requested.schemas();
            Registered::topic(registry, &topics.retry(n), k, v).await?;
        }
        Ok(Codec { topics: topics.clone(), schemas, registry: registry.clone() })
    }

    fn encode<T: Serialize>(&self, kind: Kind, topic: String, key: Value, value: Option<&T>) -> Result<OutRecord> {
        let (k, v) = &self.schemas[&kind];
        let key = k.encode(key)?;
        let value = match value {
            Some(r) => Some(v.encode(to_avro(r, &v.schema).map_err(anyhow::Error::msg)?)?),
            None => None,
        };
        Ok(OutRecord { partition: None, topic, key, value })
    }

    pub fn definition(&self, d: &Definition) -> Result<OutRecord> {
        self.encode(Kind::Definition, self.topics.definitions.clone(), key_record(&[("campaign_id", &d.campaign_id)]), Some(d))
    }

    pub fn task(&self, t: &Task) -> Result<OutRecord> {
        self.encode(Kind::Task, self.topics.tasks.clone(), key_record(&[("campaign_id", &t.campaign_id)]), Some(t))
    }

    /// A send request for its attempt: the first goes to the requested topic, attempt n ≥ 2 to
    /// retry topic n.
    pub fn request(&self, r: &SendRequest) -> Result<OutRecord> {
        let topic = if r.attempt <= 1 { self.topics.requested.clone() } else { self.topics.retry(r.attempt) };
        self.encode(Kind::Requested, topic, key_record(&[("email", &r.email.to_lowercase())]), Some(r))
    }

    pub fn ledger(&self, e: &LedgerEntry) -> Result<OutRecord> {
        self.encode(Kind::Ledger, self.topics.ledger.clone(), key_record(&[("campaign_id", &e.campaign_id), ("recipient_id", &e.recipient_id)]), Some(e))
    }

    pub fn suppression(&self, s: &Suppression) -> Result<OutRecord> {
        self.encode(Kind::Suppression, self.topics.suppression.clone(), key_record(&[("email", &s.email.to_lowercase())]), Some(s))
    }

    pub fn engagement(&self, e: &Engagement) -> Result<OutRecord> {
        self.encode(Kind::Engagement, self.topics.engagement.clone(), key_record(&[("campaign_id", &e.campaign_id), ("recipient_id", &e.recipient_id)]), Some(e))
    }

    pub fn stats(&self, s: &Stats) -> Result<OutRecord> {
        self.encode(Kind::Stats, self.topics.stats.clone(), key_record(&[("campaign_id", &s.campaign_id)]), Some(s))
    }

    /// The text of a single-field key record (the suppression key's address).
    pub async fn decode_key_text(&self, bytes: &[u8]) -> Result<Result<String, String>> {
        Ok(match crate::avro::serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok((_, Value::Record(f))) => f.first().and_then(|(_, v)| crate::avro::value::text(Some(v))).map(str::to_string).ok_or_else(|| "key without text".to_string()),
            Ok(_) => Err("key is not a record".into()),
            Err(reason) => Err(reason),
        })
    }

    /// Decode a value of any campaigns topic (`Ok(Err)`: a record that is not one).
    pub async fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<Result<T, String>> {
        Ok(match crate::avro::serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok((_, v)) => from_avro(&v),
            Err(reason) => Err(reason),
        })
    }
}
