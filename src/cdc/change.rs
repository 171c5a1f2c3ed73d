//! The consumer side of CDC: one change event decoded from its envelope — the row image
//! (after, or before for a delete) and the source position that orders changes of a key.

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;

use crate::avro::serialization;
use crate::avro::value::{field, long, text, unscaled};
use crate::avro::{Column, ColumnType};
use crate::registry::RegistryClient;

/// Source position: (commit LSN, change LSN). Larger = later; a re-sent event repeats its position.
pub type Position = (i64, i64);

#[derive(Debug)]
pub struct Change {
    /// c (insert), r (snapshot read), u (update), d (delete).
    pub op: String,
    /// The after image, or the before image of a delete.
    pub row: Vec<(String, Value)>,
    pub pos: Position,
    /// The row's columns, from the writer schema (types, decimal scales).
    pub columns: Arc<Vec<Column>>,
}

impl Change {
    pub fn is_delete(&self) -> bool {
        self.op == "d"
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        field(&self.row, name)
    }

    pub fn text(&self, name: &str) -> Option<String> {
        text(self.get(name)).map(str::to_string)
    }

    /// A decimal column as (unscaled, scale).
    pub fn decimal(&self, name: &str) -> Option<(i128, u32)> {
        let scale = self.columns.iter().find(|c| c.name == name).and_then(|c| match c.ty {
            ColumnType::Decimal { scale, .. } => Some(scale),
            _ => None,
        })?;
        unscaled(self.get(name)).map(|u| (u, scale))
    }

    /// A decimal column in units of 10^-`scale` (exact; rounded toward zero when the column
    /// has a finer scale).
    pub fn units(&self, name: &str, scale: u32) -> Option<i128> {
        let (u, s) = self.decimal(name)?;
        Some(if s <= scale { u * 10i128.pow(scale - s) } else { u / 10i128.pow(s - scale) })
    }

    /// A timestamp column in microseconds since the epoch.
    pub fn micros(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(Value::TimestampMicros(t)) => Some(*t),
            Some(Value::TimestampMillis(t)) => Some(*t * 1000),
            _ => None,
        }
    }

    pub fn from_value(v: Value, columns: Arc<Vec<Column>>) -> Result<Change, String> {
        let Value::Record(env) = v else { return Err("value is not a CDC envelope record".into()) };
        let op = text(field(&env, "op")).ok_or("envelope without op")?.to_string();
        let source = match field(&env, "source") {
            Some(Value::Record(s)) => s,
            _ => return Err("envelope without source".into()),
        };
        let pos = (long(field(source, "lsn")).unwrap_or(0), long(field(source, "change_lsn")).unwrap_or(0));
        let image = if op == "d" { "before" } else { "after" };
        let row = env.into_iter().find(|(k, _)| k == image).map(|(_, v)| v);
        let row = match row {
            Some(Value::Union(_, inner)) => *inner,
            Some(other) => other,
            None => Value::Null,
        };
        match row {
            Value::Record(row) => Ok(Change { op, row, pos, columns }),
            _ => Err(format!("{op} event without its {image} image")),
        }
    }
}

/// Decodes framed CDC envelopes, caching each writer schema's row columns.
pub struct ChangeDecoder {
    registry: RegistryClient,
    columns: HashMap<u32, Arc<Vec<Column>>>,
}

impl ChangeDecoder {
    pub fn new(registry: &RegistryClient) -> Self {
        Self { registry: registry.clone(), columns: HashMap::new() }
    }

    /// `Ok(Err(reason))` is a record for the dead-letter topic; `Err` means the registry
    /// cannot be reached (the record is fine, the processor is not).
    pub async fn decode(&mut self, bytes: &[u8]) -> anyhow::Result<Result<Change, String>> {
        let (id, value) = match serialization::decode_or_reason(&self.registry, bytes).await? {
            Ok(x) => x,
            Err(reason) => return Ok(Err(reason)),
        };
        let columns = match self.columns.get(&id) {
            Some(c) => c.clone(),
            None => {
                let schema = self.registry.schema_by_id(id).await?;
                let cols = match crate::bronze::table_writer::envelope_columns(&schema) {
                    Ok(cols) => cols,
                    Err(why) => return Ok(Err(format!("schema {id}: {why}"))),
                };
                let cols = Arc::new(cols);
                self.columns.insert(id, cols.clone());
                cols
            }
        };
        Ok(Change::from_value(value, columns))
    }
}
