//! Turning rows (Postgres text values in catalog column order) into keyed Avro change events.

use std::cmp::Ordering;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use apache_avro::Schema;

use super::catalog::TableMeta;
use crate::avro::{serialization, ColumnType};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::{subject, RegistryClient};

pub type Row = Vec<Option<String>>;

pub struct SourceInfo<'a> {
    pub db: &'a str,
    pub lsn: u64,
    pub change_lsn: u64,
    pub tx_id: Option<u32>,
    pub ts_ms: i64,
    pub snapshot: bool,
    /// The load id of an ad-hoc re-snapshot (see `CdcConfig::load_id`).
    pub load_id: Option<&'a str>,
}

/// A table with its registered key and envelope schemas.
pub struct TableCodec {
    pub meta: TableMeta,
    pub topic: String,
    key_schema: Schema,
    key_id: u32,
    value_schema: Schema,
    value_id: u32,
}

impl TableCodec {
    /// Derive the schemas from the catalog and register them (the registry refuses an
    /// incompatible change of the table with a 409, which stops CDC with that message).
    pub async fn register(meta: TableMeta, prefix: &str, registry: &RegistryClient) -> Result<Self> {
        let topic = meta.topic(prefix);
        let key_json = meta.key_schema(prefix).to_string();
        let value_json = meta.value_schema(prefix).to_string();
        let key_id = registry.register(&subject(&topic, true), &key_json).await?;
        let value_id = registry.register(&subject(&topic, false), &value_json).await?;
        Ok(Self {
            key_schema: Schema::parse_str(&key_json).context("key schema")?,
            value_schema: Schema::parse_str(&value_json).context("value schema")?,
            meta,
            topic,
            key_id,
            value_id,
        })
    }

    pub fn pk_text(&self, row: &Row) -> Vec<String> {
        self.meta.pk.iter().map(|i| row[*i].clone().unwrap_or_default()).collect()
    }

    fn key(&self, row: &Row) -> Result<Vec<u8>> {
        let mut fields = vec![];
        for c in &self.meta.pk {
            let col = &self.meta.columns[*c];
            let key_col = crate::avro::Column { nullable: false, ..col.clone() };
            fields.push((col.name.clone(), key_col.value_from_text(row[*c].as_deref())?));
        }
        Ok(serialization::encode(self.key_id, &self.key_schema, Value::Record(fields))?)
    }

    /// Whether `row` has every non-nullable column (a delete under REPLICA IDENTITY DEFAULT
    /// carries only the key columns, so its before-image cannot be encoded).
    pub fn is_complete(&self, row: &Row) -> bool {
        self.meta.columns.iter().zip(row).all(|(c, v)| c.nullable || v.is_some())
    }

    fn row_value(&self, row: &Row) -> Result<Value> {
        let mut fields = Vec::with_capacity(row.len());
        for (col, v) in self.meta.columns.iter().zip(row) {
            fields.push((col.name.clone(), col.value_from_text(v.as_deref())?));
        }
        Ok(Value::Record(fields))
    }

    /// The change event (and, after a delete, its tombstone).
    pub fn event(&self, op: &str, key_row: &Row, before: Option<&Row>, after: Option<&Row>, src: &SourceInfo<'_>, out: &mut Vec<OutRecord>) -> Result<()> {
        let key = self.key(key_row).with_context(|| format!("{}: key", self.meta.qualified()))?;
        let opt = |r: Option<&Row>| -> Result<Value> {
            Ok(match r {
                Some(r) => Value::Union(1, Box::new(self.row_value(r)?)),
                None => Value::Union(0, Box::new(Value::Null)),
            })
        };
        let source = Value::Record(vec![
            ("connector".into(), Value::String("funnel-postgres".into())),
            ("db".into(), Value::String(src.db.to_string())),
            ("schema".into(), Value::String(self.meta.schema.clone())),
            ("table".into(), Value::String(self.meta.name.clone())),
            ("lsn".into(), Value::Long(src.lsn as i64)),
            ("change_lsn".into(), Value::Long(src.change_lsn as i64)),
            ("txId".into(), match src.tx_id {
                Some(x) => Value::Union(1, Box::new(Value::Long(x as i64))),
                None => Value::Union(0, Box::new(Value::Null)),
            }),
            ("ts_ms".into(), Value::Long(src.ts_ms)),
            ("snapshot".into(), Value::Boolean(src.snapshot)),
            ("load_id".into(), match src.load_id {
                Some(id) => Value::Union(1, Box::new(Value::String(id.to_string()))),
                None => Value::Union(0, Box::new(Value::Null)),
            }),
        ]);
        let envelope = Value::Record(vec![
            ("before".into(), opt(before).with_context(|| format!("{}: before image", self.meta.qualified()))?),
            ("after".into(), opt(after).with_context(|| format!("{}: after image", self.meta.qualified()))?),
            ("op".into(), Value::String(op.to_string())),
            ("ts_ms".into(), Value::Long(chrono::Utc::now().timestamp_millis())),
            ("source".into(), source),
        ]);
        let value = serialization::encode(self.value_id, &self.value_schema, envelope)?;
        out.push(OutRecord { partition: None, topic: self.topic.clone(), key: key.clone(), value: Some(value) });
        if op == "d" {
            out.push(OutRecord { partition: None, topic: self.topic.clone(), key, value: None });
        }
        Ok(())
    }

    /// Compare primary keys the way the snapshot orders them (text in "C" collation, numbers numerically).
    pub fn cmp_pk(&self, a: &[String], b: &[String]) -> Ordering {
        for (i, c) in self.meta.pk.iter().enumerate() {
            let ord = match self.meta.columns[*c].ty {
                ColumnType::Int | ColumnType::Long => a[i].parse::<i64>().unwrap_or(0).cmp(&b[i].parse::<i64>().unwrap_or(0)),
                _ => a[i].as_bytes().cmp(b[i].as_bytes()),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }
}
