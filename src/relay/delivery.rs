//! The records between routing and delivery: a `Delivery` (one event for one destination, on
//! the requested, retry and dead-letter topics) and an `Attempt` (the audit of one try).

use apache_avro::types::Value;

use super::intake::Received;
use crate::avro::value::{field, long, nullable, text};

pub mod schemas {
    pub const DELIVERY_KEY: &str = include_str!("../../schemas/relay/relay.delivery.v1-key.avsc");
    pub const DELIVERY_VALUE: &str = include_str!("../../schemas/relay/relay.delivery.v1-value.avsc");
    pub const ATTEMPT_KEY: &str = include_str!("../../schemas/relay/relay.attempt.v1-key.avsc");
    pub const ATTEMPT_VALUE: &str = include_str!("../../schemas/relay/relay.attempt.v1-value.avsc");
}

/// The destination of an event no destination could be planned for.
pub const NONE: &str = "none";

#[derive(Clone, Debug, PartialEq)]
pub struct AttemptSummary {
    pub number: i32,
    pub at_ms: i64,
    pub status_code: Option<i32>,
    pub error_class: Option<String>,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub event_pk: i64,
    pub storefront_code: String,
    pub storefront_id: Option<i32>,
    pub event_type: String,
    pub event_id: String,
    pub event_time_us: i64,
    pub payload: String,
    pub source_system: String,
    pub destination: String,
    pub config_id: i32,
    pub planned: i32,
    pub attempt: i32,
    pub not_before_ms: i64,
    /// 0 for the first round; n after the n-th `replay-dlq`.
    pub replay: i32,
    pub note: Option<String>,
    pub attempts: Vec<AttemptSummary>,
}

fn opt_text(s: &Option<String>) -> Value {
    nullable(s.clone().map(Value::String))
}

impl Delivery {
    pub fn first(e: &Received, destination: &str, config_id: i32, planned: i32, note: Option<String>) -> Self {
        Delivery {
            event_pk: e.event_pk,
            storefront_code: e.storefront_code.clone(),
            storefront_id: e.storefront_id,
            event_type: e.event_type.clone(),
            event_id: e.event_id.clone(),
            event_time_us: e.event_time_us,
            payload: e.payload.clone(),
            source_system: e.source_system.clone(),
            destination: destination.to_string(),
            config_id,
            planned,
            attempt: 1,
            not_before_ms: 0,
            replay: 0,
            note,
            attempts: vec![],
        }
    }

    pub fn key(&self) -> Value {
        Value::Record(vec![("storefront_code".into(), Value::String(self.storefront_code.clone())), ("destination".into(), Value::String(self.destination.clone()))])
    }

    pub fn to_value(&self) -> Value {
        let attempts = self
            .attempts
            .iter()
            .map(|a| {
                Value::Record(vec![
                    ("number".into(), Value::Int(a.number)),
                    ("at".into(), Value::TimestampMillis(a.at_ms)),
                    ("status_code".into(), nullable(a.status_code.map(Value::Int))),
                    ("error_class".into(), opt_text(&a.error_class)),
                    ("detail".into(), opt_text(&a.detail)),
                ])
            })
            .collect();
        Value::Record(vec![
            ("event_pk".into(), Value::Long(self.event_pk)),
            ("storefront_code".into(), Value::String(self.storefront_code.clone())),
            ("storefront_id".into(), nullable(self.storefront_id.map(Value::Int))),
            ("event_type".into(), Value::String(self.event_type.clone())),
            ("event_id".into(), Value::String(self.event_id.clone())),
            ("event_time".into(), Value::TimestampMicros(self.event_time_us)),
            ("payload".into(), Value::String(self.payload.clone())),
            ("source_system".into(), Value::String(self.source_system.clone())),
            ("destination".into(), Value::String(self.destination.clone())),
            ("config_id".into(), Value::Int(self.config_id)),
            ("planned".into(), Value::Int(self.planned)),
            ("attempt".into(), Value::Int(self.attempt)),
            ("not_before".into(), Value::TimestampMillis(self.not_before_ms)),
            ("replay".into(), Value::Int(self.replay)),
            ("note".into(), opt_text(&self.note)),
            ("attempts".into(), Value::Array(attempts)),
        ])
    }

    pub fn from_value(v: &Value) -> Result<Self, String> {
        let Value::Record(f) = v else { return Err("a delivery is a record".into()) };
        let s = |n: &str| text(field(f, n)).map(str::to_string).ok_or_else(|| format!("delivery without {n}"));
        let l = |n: &str| long(field(f, n)).ok_or_else(|| format!("delivery without {n}"));
        let attempts = match field(f, "attempts") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|a| match a {
                    Value::Record(a) => Some(AttemptSummary {
                        number: long(field(a, "number")).unwrap_or_default() as i32,
                        at_ms: long(field(a, "at")).unwrap_or_default(),
                        status_code: long(field(a, "status_code")).map(|x| x as i32),
                        error_class: text(field(a, "error_class")).map(str::to_string),
                        detail: text(field(a, "detail")).map(str::to_string),
                    }),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        Ok(Delivery {
            event_pk: l("event_pk")?,
            storefront_code: s("storefront_code")?,
            storefront_id: long(field(f, "storefront_id")).map(|x| x as i32),
            event_type: s("event_type")?,
            event_id: s("event_id")?,
            event_time_us: l("event_time")?,
            payload: s("payload")?,
            source_system: s("source_system")?,
            destination: s("destination")?,
            config_id: l("config_id")? as i32,
            planned: l("planned")? as i32,
            attempt: l("attempt")? as i32,
            not_before_ms: l("not_before")?,
            replay: long(field(f, "replay")).unwrap_or_default() as i32,
            note: text(field(f, "note")).map(str::to_string),
            attempts,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Delivered,
    Retrying,
    Failed,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Retrying => "retrying",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
    fn index(self) -> u32 {
        self as u32
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub event_pk: i64,
    pub storefront_code: String,
    pub destination: String,
    pub event_id: String,
    pub attempt_number: i32,
    pub replay: i32,
    pub status: Status,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error_class: Option<String>,
    pub skipped_level: Option<String>,
    pub attempted_at_ms: i64,
    pub planned: i32,
}

impl Attempt {
    pub fn attempt_id(&self) -> String {
        match self.replay {
            0 => format!("{}/{}/{}", self.event_pk, self.destination, self.attempt_number),
            r => format!("{}/{}/r{r}/{}", self.event_pk, self.destination, self.attempt_number),
        }
    }

    pub fn of(d: &Delivery, status: Status, at_ms: i64) -> Self {
        Attempt {
            event_pk: d.event_pk,
            storefront_code: d.storefront_code.clone(),
            destination: d.destination.clone(),
            event_id: d.event_id.clone(),
            attempt_number: d.attempt,
            replay: d.replay,
            status,
            status_code: None,
            latency_ms: None,
            response_excerpt: None,
            error_class: None,
            skipped_level: None,
            attempted_at_ms: at_ms,
            planned: d.planned,
        }
    }

    pub fn key(&self) -> Value {
        Value::Record(vec![("event_pk".into(), Value::Long(self.event_pk))])
    }

    pub fn to_value(&self) -> Value {
        Value::Record(vec![
            ("attempt_id".into(), Value::String(self.attempt_id())),
            ("event_pk".into(), Value::Long(self.event_pk)),
            ("storefront_code".into(), Value::String(self.storefront_code.clone())),
            ("destination".into(), Value::String(self.destination.clone())),
            ("event_id".into(), Value::String(self.event_id.clone())),
            ("attempt_number".into(), Value::Int(self.attempt_number)),
            ("replay".into(), Value::Int(self.replay)),
            ("status".into(), Value::Enum(self.status.index(), self.status.as_str().into())),
            ("status_code".into(), nullable(self.status_code.map(Value::Int))),
            ("latency_ms".into(), nullable(self.latency_ms.map(Value::Int))),
            ("response_excerpt".into(), opt_text(&self.response_excerpt)),
            ("error_class".into(), opt_text(&self.error_class)),
            ("skipped_level".into(), opt_text(&self.skipped_level)),
            ("attempted_at".into(), Value::TimestampMillis(self.attempted_at_ms)),
            ("planned".into(), Value::Int(self.planned)),
        ])
    }
}
