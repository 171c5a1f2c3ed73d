//! The scoring transforms of `funnel run propensity`: one per model, each a `runtime::processor`
//! loop of its own (own consumer group, exactly-once), so a missing customers model never
//! holds back the lead scores. A record is scored with the model `CURRENT` names, re-read
//! when it changes; a version that cannot be loaded is reported and the last good one kept.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use apache_avro::types::Value;

use super::artefact::{model_dir, Artefact, CURRENT_FILE};
use super::features::{ModelKind, Values};
use crate::domain::events::key;
use crate::avro::value::{double, field, long, text};
use crate::avro::Registered;
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::health;
use crate::runtime::processor::{InRecord, Outcome, Transform};

const MICROS_PER_DAY: f64 = 86_400e6;


pub fn processor(kind: ModelKind) -> String {
    format!("propensity-{}", kind.name())
}

/// The current model of one kind, followed through `CURRENT`.
pub struct ModelSlot {
    kind: ModelKind,
    /// The models directory (`--models-dir`).
    models: PathBuf,
    current: Option<std::sync::Arc<Artefact>>,
    /// The version `CURRENT` named when last looked at (loaded or not).
    seen: Option<String>,
    looked_at: Option<Instant>,
}

impl ModelSlot {
    pub fn new(models: PathBuf, kind: ModelKind) -> Self {
        ModelSlot { kind, models, current: None, seen: None, looked_at: None }
    }

    /// The model to score with: `CURRENT` is looked at again at most once a second; a new
    /// version replaces the old one only when it loads.
    pub fn get(&mut self) -> Option<std::sync::Arc<Artefact>> {
        if self.looked_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.looked_at = Some(Instant::now());
            self.refresh();
        }
        self.current.clone()
    }

    fn refresh(&mut self) {
        let name = processor(self.kind);
        let named = std::fs::read_to_string(model_dir(&self.models, self.kind).join(CURRENT_FILE)).ok().map(|v| v.trim().to_string());
        if named == self.seen {
            return;
        }
        self.seen = named.clone();
        let loaded = match &named {
            Some(v) => Artefact::load(&self.models, self.kind, v),
            None => Artefact::load_current(&self.models, self.kind),
        };
        match loaded {
            Ok(a) => {
                tracing::info!(model = self.kind.name(), version = a.version, previous = self.current.as_ref().map(|c| c.version.as_str()), "scoring with a new model version");
                health::dependency(&name, "model", None);
                super::metrics::metrics().model_loads.with_label_values(&[self.kind.name(), "loaded"]).inc();
                self.current = Some(std::sync::Arc::new(a));
            }
            Err(e) => {
                let kept = self.current.as_ref().map(|c| c.version.clone());
                tracing::error!(model = self.kind.name(), error = format!("{e:#}"), kept, "model version not loaded; keeping the last good one");
                super::metrics::metrics().model_loads.with_label_values(&[self.kind.name(), "failed"]).inc();
                // Without any model the processor cannot score: unhealthy until one is trained.
                health::dependency(&name, "model", self.current.is_none().then(|| format!("{e:#}")));
            }
        }
        if let Some(a) = &self.current {
            super::metrics::metrics().model_version.with_label_values(&[self.kind.name()]).set(a.trained_at.timestamp() as f64);
        }
    }
}

/// The customers model's feature values from a `dom.customer.consolidated.v1` record, as of
/// its stream time (the definitions of `sql/propensity/customer_features.sql`).
pub fn customer_values(r: &[(String, Value)]) -> (Values, Option<i64>) {
    let at = long(field(r, "stream_time"));
    let days_since = |t: Option<i64>| match (at, t) {
        (Some(at), Some(t)) => Some((at - t) as f64 / MICROS_PER_DAY),
        _ => None,
    };
    let count = |f: &str| long(field(r, f)).map(|x| x as f64);
    let values = Values {
        numeric: vec![
            count("order_count"),
            double(field(r, "revenue")),
            double(field(r, "avg_order_value")),
            double(field(r, "review_avg")),
            count("delivered_orders"),
            count("canceled_orders"),
            days_since(long(field(r, "last_order_at"))),
            days_since(long(field(r, "first_order_at"))),
        ],
        categorical: vec![text(field(r, "state")).map(str::to_string), text(field(r, "favourite_category")).map(str::to_string)],
    };
    (values, at)
}

/// The leads model's feature values from a `marketing.lead.v1` record (what is known at the
/// first contact; the definitions of `sql/propensity/lead_features.sql`).
pub fn lead_values(r: &[(String, Value)]) -> (Values, Option<i64>) {
    let contact = long(field(r, "first_contact_date"));
    // As the lead dimension: a missing channel is "Unknown" (olist also has a channel "unknown").
    let channel = text(field(r, "advertising_channel")).filter(|c| !c.is_empty()).unwrap_or(crate::leads::lead::UNKNOWN).to_string();
    let landing = text(field(r, "landing_page_id")).unwrap_or("unknown").to_string();
    // Days since 1970-01-01 (a Thursday): 0 = Sunday as SQL's date_part('dow').
    let weekday = contact.map(|d| ((d + 4).rem_euclid(7)).to_string());
    (Values { numeric: vec![], categorical: vec![Some(channel), Some(landing), weekday] }, contact.map(|d| d * 86_400_000_000))
}

pub struct Scorer {
    kind: ModelKind,
    registry: RegistryClient,
    input: String,
    output: String,
    out_key: Registered,
    out_value: Registered,
    pub model: ModelSlot,
}

impl Scorer {
    pub fn new(kind: ModelKind, registry: RegistryClient, models: PathBuf, input: String, output: String, out_key: Registered, out_value: Registered) -> Self {
        Scorer { kind, registry, input, output, out_key, out_value, model: ModelSlot::new(models, kind) }
    }

    pub fn inputs(&self) -> Vec<String> {
        vec![self.input.clone()]
    }

    /// The score record of one input record, or why it cannot be scored (dead-lettered).
    fn record(&self, a: &Artefact, r: &[(String, Value)]) -> Result<(String, Value), String> {
        let s = |v: &str| Value::String(v.to_string());
        let opt = |name: &str| crate::avro::value::nullable(text(field(r, name)).map(|t| Value::String(t.to_string())));
        Ok(match self.kind {
            ModelKind::Customers => {
                let Some(id) = text(field(r, "customer_id")) else { return Err("a consolidated customer without customer_id".into()) };
                let (values, at) = customer_values(r);
                let score = a.score(&values);
                let record = Value::Record(vec![
                    ("customer_id".into(), s(id)),
                    ("score".into(), Value::Double(score)),
                    ("model_version".into(), s(&a.version)),
                    ("horizon_days".into(), Value::Long(a.horizon_days)),
                    ("lifecycle_stage".into(), opt("lifecycle_stage")),
                    ("segment".into(), opt("segment")),
                    ("scored_at".into(), Value::TimestampMicros(at.unwrap_or(0))),
                ]);
                (id.to_string(), record)
            }
            ModelKind::Leads => {
                let Some(id) = text(field(r, "lead_id")) else { return Err("a lead without lead_id".into()) };
                let (values, at) = lead_values(r);
                let closed = text(field(r, "is_closed_deal")).unwrap_or_default().to_string();
                // A lead that closed a deal has converted: its propensity is the outcome.
                let (score, basis) = if closed == crate::leads::lead::CLOSED { (1.0, "outcome") } else { (a.score(&values), "model") };
                let record = Value::Record(vec![
                    ("lead_id".into(), s(id)),
                    ("score".into(), Value::Double(score)),
                    ("basis".into(), s(basis)),
                    ("model_version".into(), s(&a.version)),
                    ("horizon_days".into(), Value::Long(a.horizon_days)),
                    ("advertising_channel".into(), s(text(field(r, "advertising_channel")).unwrap_or(crate::leads::lead::UNKNOWN))),
                    ("is_closed_deal".into(), s(&closed)),
                    ("scored_at".into(), Value::TimestampMicros(at.unwrap_or(0))),
                ]);
                (id.to_string(), record)
            }
        })
    }
}

impl Transform for Scorer {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        // A deleted entity (tombstone): its score goes too.
        let Some(bytes) = rec.value else {
            return Ok(Ok(rec.key.map(|k| vec![OutRecord { partition: None, topic: self.output.clone(), key: k.to_vec(), value: None }]).unwrap_or_default()));
        };
        let fields = match crate::avro::serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok((_, Value::Record(fields))) => fields,
            Ok(_) => return Ok(Err("not an Avro record".into())),
            Err(reason) => return Ok(Err(reason)),
        };
        // No model is an outage, not bad data: fail the batch (retried, /health says why).
        let kind = self.kind;
        let Some(a) = self.model.get() else { anyhow::bail!("no {} model to score with yet (train one with `funnel train propensity --model {}`)", kind.name(), kind.name()) };
        let (id, value) = match self.record(&a, &fields) {
            Ok(x) => x,
            Err(reason) => return Ok(Err(reason)),
        };
        super::metrics::metrics().scored.with_label_values(&[kind.name()]).inc();
        let key_field = match kind {
            ModelKind::Customers => "customer_id",
            ModelKind::Leads => "lead_id",
        };
        Ok(Ok(vec![OutRecord { partition: None, topic: self.output.clone(), key: self.out_key.encode(key(key_field, &id))?, value: Some(self.out_value.encode(value)?) }]))
    }
}
