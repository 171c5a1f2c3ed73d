//! REST client for any Confluent-compatible registry (funnel's own, Redpanda's, Confluent's).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use serde_json::{json, Value as Json};
use tokio::sync::RwLock;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url} unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("schema for subject {subject} refused as incompatible (409): {message}")]
    Incompatible { subject: String, message: String },
    #[error("schema registry answered {status} for {what}: {body}")]
    Status { what: String, status: u16, body: String },
    #[error("schema {id} from the registry does not parse: {source}")]
    BadSchema { id: u32, source: apache_avro::Error },
}

impl RegistryError {
    /// An outage (nothing answered, or the registry failed on its side), as opposed to an answer
    /// about the request itself (404 unknown id, 409 incompatible, a schema that does not parse).
    pub fn is_outage(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    by_id: Arc<RwLock<HashMap<u32, Arc<Schema>>>>,
    /// Set for a processor's client: an outage is waited out (see `waiting_for`).
    processor: Option<Arc<str>>,
}

/// Backoff while the registry is down: doubling from the first delay up to the cap.
const OUTAGE_FIRST_DELAY: Duration = Duration::from_millis(100);
const OUTAGE_MAX_DELAY: Duration = Duration::from_secs(5);

impl RegistryClient {
    /// A client that reports an outage to its caller at once (request/response paths: the
    /// caller answers 503 or fails the command).
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("reqwest client with static config");
        Self { base: base.trim_end_matches('/').to_string(), http, by_id: Default::default(), processor: None }
    }

    /// A processor's client: while the registry is unreachable or failing, every call retries
    /// with backoff (100 ms doubling to 5 s) and `processor` reports unhealthy, waiting for the
    /// `schema-registry`; it resumes when the registry is back. An outage is not bad data:
    /// nothing is dead-lettered for it. Only a shutdown request ends the wait (with the error).
    pub fn waiting_for(base: &str, processor: &str) -> Self {
        Self { processor: Some(processor.into()), ..Self::new(base) }
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<(u16, Json), RegistryError> {
        let Some(processor) = &self.processor else { return self.call_once(req, what).await };
        let mut delay = OUTAGE_FIRST_DELAY;
        let mut waited = false;
        loop {
            // Registry requests carry in-memory bodies, so they always clone.
            let Some(attempt) = req.try_clone() else { return self.call_once(req, what).await };
            match self.call_once(attempt, what).await {
                Err(e) if e.is_outage() && !crate::runtime::shutdown::requested() => {
                    if !waited {
                        tracing::warn!(processor = &**processor, error = %e, "schema registry unavailable: waiting for it (nothing is dead-lettered meanwhile)");
                    }
                    waited = true;
                    crate::runtime::health::dependency(processor, "schema-registry", Some(e.to_string()));
                    crate::runtime::metrics::metrics().errors.with_label_values(&[processor, "registry_unavailable"]).inc();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(OUTAGE_MAX_DELAY);
                }
                result => {
                    if waited {
                        tracing::info!(processor = &**processor, "schema registry is back");
                        crate::runtime::health::dependency(processor, "schema-registry", None);
                    }
                    return result;
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call_once(&self, req: reqwest::RequestBuilder, what: &str) -> Result<(u16, Json), RegistryError> {
        let resp = req
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable { url: self.base.clone(), source })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| RegistryError::Unreachable { url: self.base.clone(), source })?;
        let body = serde_json::from_str(&text).unwrap_or(Json::String(text.clone()));
        if status >= 300 && status != 409 && status != 404 {
            return Err(RegistryError::Status { what: what.to_string(), status, body: text });
        }
        Ok((status, body))
    }

    /// Register `schema` under `subject` (idempotent) and return its global id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let (status, body) = self.call(self.http.post(url).body(json!({"schema": schema}).to_string()), subject).await?;
        match status {
            409 => Err(RegistryError::Incompatible {
                subject: subject.to_string(),
                message: body.get("message").and_then(Json::as_str).unwrap_or_default().to_string(),
            }),
            404 => Err(RegistryError::Status { what: subject.into(), status, body: body.to_string() }),
            _ => body
                .get("id")
                .and_then(Json::as_u64)
                .map(|id| id as u32)
                .ok_or_else(|| RegistryError::Status { what: subject.into(), status, body: body.to_string() }),
        }
    }

    /// The writer schema for a global id, cached for the life of the client.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.by_id.read().await.get(&id) {
            return Ok(s.clone());
        }
        let (status, body) = self.call(self.http.get(format!("{}/schemas/ids/{id}", self.base)), &format!("schema id {id}")).await?;
        let text = body.get("schema").and_then(Json::as_str).ok_or(RegistryError::Status {
            what: format!("schema id {id}"),
            status,
            body: body.to_string(),
        })?;
        let schema = Arc::new(Schema::parse_str(text).map_err(|source| RegistryError::BadSchema { id, source })?);
        self.by_id.write().await.insert(id, schema.clone());
        Ok(schema)
    }

    /// Ask the registry whether `schema` would be accepted under `subject`.
    pub async fn is_compatible(&self, subject: &str, schema: &str) -> Result<(bool, Vec<String>), RegistryError> {
        let url = format!("{}/compatibility/subjects/{subject}/versions/latest", self.base);
        let (status, body) = self.call(self.http.post(url).body(json!({"schema": schema}).to_string()), subject).await?;
        if status == 404 {
            return Ok((true, vec![]));
        }
        let ok = body.get("is_compatible").and_then(Json::as_bool).unwrap_or(false);
        let msgs = body.get("messages").and_then(Json::as_array).map(|a| a.iter().filter_map(|m| m.as_str().map(String::from)).collect()).unwrap_or_default();
        Ok((ok, msgs))
    }

    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let (_, body) = self.call(self.http.get(format!("{}/subjects", self.base)), "subjects").await?;
        Ok(body.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default())
    }

    /// The latest schema registered under `subject` (None when the subject does not exist).
    pub async fn latest(&self, subject: &str) -> Result<Option<(u32, Arc<Schema>)>, RegistryError> {
        let (status, body) = self.call(self.http.get(format!("{}/subjects/{subject}/versions/latest", self.base)), subject).await?;
        if status == 404 {
            return Ok(None);
        }
        let id = body.get("id").and_then(Json::as_u64).ok_or_else(|| RegistryError::Status { what: subject.into(), status, body: body.to_string() })? as u32;
        Ok(Some((id, self.schema_by_id(id).await?)))
    }
}
