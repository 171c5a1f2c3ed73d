//! Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary datum.

use apache_avro::types::Value;
use apache_avro::Schema;

use crate::registry::client::RegistryError;
use crate::registry::RegistryClient;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("record too short for the Confluent wire format ({0} bytes)")]
    TooShort(usize),
    #[error("unknown magic byte {0:#04x} (expected 0x00: not Confluent wire format)")]
    BadMagic(u8),
    #[error("schema lookup failed: {0}")]
    Registry(#[from] RegistryError),
    #[error("Avro datum does not decode with writer schema {id}: {source}")]
    Decode { id: u32, source: apache_avro::Error },
    #[error("Avro value does not match schema: {0}")]
    Encode(apache_avro::Error),
    #[error("Avro value kind not supported by funnel's encoder: {0}")]
    Unsupported(String),
}

/// Frame `value` (built by funnel to match `schema`) in the wire format.
///
/// The datum is written straight from the value: unions carry their branch index and records
/// their fields in schema order, so no schema walk is needed. apache-avro's `to_avro_datum`
/// re-resolves and re-validates the schema for every record, which dominated CDC's cost.
/// Debug builds (the tests) still validate every value against the schema.
pub fn encode(schema_id: u32, schema: &Schema, value: Value) -> Result<Vec<u8>, WireError> {
    if cfg!(debug_assertions) && !value.validate(schema) {
        // apache-avro says why; the value is known to be invalid either way.
        let why = apache_avro::to_avro_datum(schema, value.clone()).err().map(|e| e.to_string()).unwrap_or_default();
        return Err(WireError::Unsupported(format!("value does not match its schema: {why}")));
    }
    let mut out = Vec::with_capacity(256);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    write_datum(&value, &mut out)?;
    Ok(out)
}

fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

/// Avro binary encoding of a value whose unions and records are already shaped by its schema.
pub fn write_datum(v: &Value, out: &mut Vec<u8>) -> Result<(), WireError> {
    match v {
        Value::Null => {}
        Value::Boolean(b) => out.push(*b as u8),
        Value::Int(x) | Value::Date(x) | Value::TimeMillis(x) => write_long(*x as i64, out),
        Value::Long(x)
        | Value::TimeMicros(x)
        | Value::TimestampMillis(x)
        | Value::TimestampMicros(x)
        | Value::TimestampNanos(x)
        | Value::LocalTimestampMillis(x)
        | Value::LocalTimestampMicros(x)
        | Value::LocalTimestampNanos(x) => write_long(*x, out),
        Value::Float(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Double(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bytes(b) => write_bytes(b, out),
        Value::String(s) => write_bytes(s.as_bytes(), out),
        Value::Uuid(u) => write_bytes(u.to_string().as_bytes(), out),
        Value::Fixed(_, b) => out.extend_from_slice(b),
        Value::Enum(i, _) => write_long(*i as i64, out),
        Value::Decimal(d) => write_bytes(&Vec::<u8>::try_from(d).map_err(WireError::Encode)?, out),
        Value::Union(i, inner) => {
            write_long(*i as i64, out);
            write_datum(inner, out)?;
        }
        Value::Array(items) => {
            if !items.is_empty() {
                write_long(items.len() as i64, out);
                for i in items {
                    write_datum(i, out)?;
                }
            }
            out.push(0);
        }
        Value::Map(m) => {
            if !m.is_empty() {
                write_long(m.len() as i64, out);
                for (k, v) in m {
                    write_bytes(k.as_bytes(), out);
                    write_datum(v, out)?;
                }
            }
            out.push(0);
        }
        Value::Record(fields) => {
            for (_, f) in fields {
                write_datum(f, out)?;
            }
        }
        other => return Err(WireError::Unsupported(format!("{other:?}"))),
    }
    Ok(())
}

/// Split a framed record into its schema id and Avro datum.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if bytes.len() < 5 {
        return Err(WireError::TooShort(bytes.len()));
    }
    if bytes[0] != 0 {
        return Err(WireError::BadMagic(bytes[0]));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[5..]))
}

/// Decode a framed record with its writer schema from the registry.
pub async fn decode(registry: &RegistryClient, bytes: &[u8]) -> Result<(u32, Value), WireError> {
    let (id, mut datum) = split(bytes)?;
    let schema = registry.schema_by_id(id).await?;
    let value = apache_avro::from_avro_datum(&schema, &mut datum, None).map_err(|source| WireError::Decode { id, source })?;
    Ok((id, value))
}

/// Decode for a processor — the one decode path every processor takes: `Ok(Err(reason))` when
/// the bytes themselves are bad (the record is dead-lettered: not framed, an id the registry
/// does not know, a datum that does not match its schema); `Err` when the registry cannot be
/// asked. A processor's client (`RegistryClient::waiting_for`) waits out an outage, so `Err`
/// only comes with a shutdown: the batch fails and nothing is committed or dead-lettered.
pub async fn decode_or_reason(registry: &RegistryClient, bytes: &[u8]) -> anyhow::Result<Result<(u32, Value), String>> {
    match decode(registry, bytes).await {
        Ok(x) => Ok(Ok(x)),
        Err(WireError::Registry(e)) if e.is_outage() => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{Column, ColumnType};

    /// The direct encoder writes exactly what apache-avro writes, for every column type.
    #[test]
    fn direct_encoding_matches_apache_avro() {
        let cols = [
            (ColumnType::String, "héllo"),
            (ColumnType::Int, "-42"),
            (ColumnType::Long, "9000000000"),
            (ColumnType::Float, "1.5"),
            (ColumnType::Double, "-2.25"),
            (ColumnType::Boolean, "t"),
            (ColumnType::Date, "2018-03-01"),
            (ColumnType::TimestampMicros, "2017-10-02 10:56:33.25"),
            (ColumnType::Decimal { precision: 10, scale: 2 }, "-129.99"),
        ];
        let columns: Vec<Column> = cols.iter().enumerate().map(|(i, (ty, _))| Column { name: format!("c{i}"), ty: ty.clone(), nullable: i % 2 == 0 }).collect();
        let schema_json = serde_json::json!({"type": "record", "name": "R", "fields": columns.iter().map(Column::avro_field).collect::<Vec<_>>()});
        let schema = Schema::parse_str(&schema_json.to_string()).unwrap();
        for nulls in [false, true] {
            let fields: Vec<(String, Value)> = columns
                .iter()
                .zip(cols.iter())
                .map(|(c, (_, text))| (c.name.clone(), c.value_from_text(if nulls && c.nullable { None } else { Some(text) }).unwrap()))
                .collect();
            let value = Value::Record(fields);
            let mut ours = vec![];
            write_datum(&value, &mut ours).unwrap();
            assert_eq!(ours, apache_avro::to_avro_datum(&schema, value.clone()).unwrap());
            let framed = encode(7, &schema, value.clone()).unwrap();
            let (id, mut datum) = split(&framed).unwrap();
            assert_eq!(id, 7);
            assert_eq!(apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap(), value);
        }
    }
}
