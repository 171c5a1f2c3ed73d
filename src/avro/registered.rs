//! A schema registered under a subject: its global id and parsed form, ready to frame values.

use anyhow::{Context, Result};
use apache_avro::types::Value;
use apache_avro::Schema;

use super::serialization::{self, WireError};
use crate::registry::{subject, RegistryClient};

pub struct Registered {
    pub id: u32,
    pub schema: Schema,
}

impl Registered {
    /// Register `text` under `subject` (idempotent; the registry refuses an incompatible change).
    pub async fn register(registry: &RegistryClient, subject: &str, text: &str) -> Result<Self> {
        let id = registry.register(subject, text).await.with_context(|| format!("registering {subject}"))?;
        let schema = Schema::parse_str(text).with_context(|| format!("parsing the schema of {subject}"))?;
        Ok(Self { id, schema })
    }

    /// Register a topic's key and value schemas (TopicNameStrategy).
    pub async fn topic(registry: &RegistryClient, topic: &str, key: &str, value: &str) -> Result<(Self, Self)> {
        Ok((Self::register(registry, &subject(topic, true), key).await?, Self::register(registry, &subject(topic, false), value).await?))
    }

    pub fn encode(&self, value: Value) -> Result<Vec<u8>, WireError> {
        serialization::encode(self.id, &self.schema, value)
    }
}
