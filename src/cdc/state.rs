//! CDC progress, kept in the compacted `_funnel.cdc.state` topic and written in the same Kafka
//! transaction as the change records it describes: the topic, not the slot, is the truth about
//! what was emitted. The slot only holds WAL until the broker has it.

use std::time::Duration;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use apache_avro::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::avro::serialization;
use crate::kafka::client_config;
use crate::registry::RegistryClient;

/// Each connector keeps its progress in its own single-partition topic, so reading it back
/// never scans other connectors' history (brokers without compaction keep every record).
pub fn topic(name: &str) -> String {
    format!("_funnel.cdc.state.{name}")
}
pub const STATE_SCHEMA: &str = include_str!("../../schemas/internal/_funnel.cdc.state.olist-value.avsc");

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Snapshot,
    Streaming,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CdcState {
    /// The connector name (the state topic's key).
    pub name: String,
    /// The replication slot in use.
    pub slot: String,
    pub generation: i64,
    pub phase: Phase,
    /// Consistent point of the slot's exported snapshot.
    pub consistent_lsn: u64,
    /// Tables captured, in snapshot order.
    pub tables: Vec<String>,
    pub tables_done: Vec<String>,
    /// Table being snapshotted and the last primary key emitted from it.
    pub current_table: Option<String>,
    pub last_pk: Option<Vec<String>>,
    /// Commit LSN of the last transaction emitted from the stream.
    pub last_commit_lsn: u64,
    /// Set on the copy written after the events' transaction committed. Resuming only from
    /// confirmed progress keeps a broker whose aborted transactions leak (tansu) from making
    /// CDC skip events that were never committed; the price is that a crash between commit
    /// and confirmation re-sends one batch, recognisable downstream by its source position.
    pub confirmed: bool,
}

impl CdcState {
    pub fn to_avro(&self) -> Value {
        let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
        let opt = |v: Option<Value>| match v {
            Some(v) => Value::Union(1, Box::new(v)),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        Value::Record(vec![
            ("name".into(), Value::String(self.name.clone())),
            ("slot".into(), Value::String(self.slot.clone())),
            ("generation".into(), Value::Long(self.generation)),
            ("phase".into(), Value::String(match self.phase {
                Phase::Snapshot => "snapshot".into(),
                Phase::Streaming => "streaming".into(),
            })),
            ("consistent_lsn".into(), Value::Long(self.consistent_lsn as i64)),
            ("tables".into(), strings(&self.tables)),
            ("tables_done".into(), strings(&self.tables_done)),
            ("current_table".into(), opt(self.current_table.clone().map(Value::String))),
            ("last_pk".into(), opt(self.last_pk.as_deref().map(strings))),
            ("last_commit_lsn".into(), Value::Long(self.last_commit_lsn as i64)),
            ("updated_ms".into(), Value::Long(chrono::Utc::now().timestamp_millis())),
            ("confirmed".into(), Value::Boolean(self.confirmed)),
        ])
    }

    pub fn from_avro(v: &Value) -> Option<CdcState> {
        let Value::Record(fields) = v else { return None };
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| match v {
            Value::Union(_, inner) => inner.as_ref(),
            other => other,
        });
        let string = |n: &str| match get(n) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let long = |n: &str| match get(n) {
            Some(Value::Long(x)) => Some(*x),
            _ => None,
        };
        let strings = |n: &str| match get(n) {
            Some(Value::Array(a)) => Some(a.iter().filter_map(|x| if let Value::String(s) = x { Some(s.clone()) } else { None }).collect::<Vec<_>>()),
            _ => None,
        };
        Some(CdcState {
            name: string("name")?,
            slot: string("slot")?,
            generation: long("generation")?,
            phase: if string("phase")? == "snapshot" { Phase::Snapshot } else { Phase::Streaming },
            consistent_lsn: long("consistent_lsn")? as u64,
            tables: strings("tables")?,
            tables_done: strings("tables_done")?,
            current_table: string("current_table"),
            last_pk: strings("last_pk"),
            last_commit_lsn: long("last_commit_lsn")? as u64,
            confirmed: matches!(get("confirmed"), Some(Value::Boolean(true))),
        })
    }
}

pub fn schema() -> Result<Schema> {
    Ok(Schema::parse_str(STATE_SCHEMA)?)
}

/// The record key of connector `name`: its name as an Avro string.
pub async fn key(registry: &RegistryClient, name: &str) -> Result<Vec<u8>> {
    let id = registry.register(&crate::registry::subject(&topic(name), true), "\"string\"").await?;
    Ok(serialization::encode(id, &Schema::String, Value::String(name.to_string()))?)
}

/// The latest confirmed state of connector `name`, if any.
pub async fn load(brokers: &str, registry: &RegistryClient, name: &str) -> Result<Option<CdcState>> {
    let state_topic = topic(name);
    let key = key(registry, name).await?;
    let key = key.as_slice();
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", "funnel-cdc-state-loader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let (low, high) = match consumer.fetch_watermarks(&state_topic, 0, Duration::from_secs(10)) {
        Ok(w) => w,
        Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)) => return Ok(None),
        Err(e) => return Err(e).context("reading state topic watermarks"),
    };
    if high <= low {
        return Ok(None);
    }
    // The latest record is near the end: read backwards in growing windows instead of
    // replaying the whole history (brokers without compaction keep every progress record).
    let mut window = 64i64;
    loop {
        let start = (high - window).max(low);
        if let Some(found) = latest_in(&consumer, registry, &state_topic, key, start, high).await? {
            return Ok(found);
        }
        if start == low {
            return Ok(None);
        }
        window *= 4;
    }
}

/// The last record under `key` from offset `start` up to `high` (the end when the read
/// began; a connector still writing must not keep the read going): Some(None) for a
/// tombstone, None when the range has no record under `key`.
async fn latest_in(consumer: &BaseConsumer, registry: &RegistryClient, state_topic: &str, key: &[u8], start: i64, high: i64) -> Result<Option<Option<CdcState>>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(state_topic, 0, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    let mut latest = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                // Transaction markers are never delivered: the position passing `high` ends the read too.
                if crate::kafka::reached(consumer, &[(state_topic.to_string(), 0, high)]) {
                    return Ok(latest);
                }
            }
            Some(Err(e)) => return Err(e).context("reading state topic"),
            Some(Ok(msg)) => {
                if msg.offset() >= high {
                    return Ok(latest);
                }
                if msg.key() == Some(key) {
                    match msg.payload() {
                        None => latest = Some(None),
                        Some(p) => {
                            let (_, v) = serialization::decode(registry, p).await.context("decoding CDC state")?;
                            let s = CdcState::from_avro(&v).context("CDC state record lacks fields")?;
                            if s.confirmed {
                                latest = Some(Some(s));
                            }
                        }
                    }
                }
                if msg.offset() + 1 >= high {
                    return Ok(latest);
                }
            }
        }
    }
    anyhow::bail!("timed out reading {state_topic}")
}
