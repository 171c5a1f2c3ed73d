//! Avro values straight into Arrow builders (no JSON in between): one builder per column,
//! typed once from the column list, appended per record.

use std::sync::Arc;

use apache_avro::types::Value;
use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};

use super::column::{unscaled_from_bytes, Column, ColumnType};

pub fn arrow_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int => DataType::Int32,
        ColumnType::Long => DataType::Int64,
        ColumnType::Float => DataType::Float32,
        ColumnType::Double => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision as u8, *scale as i8),
    }
}

pub fn arrow_field(col: &Column) -> Field {
    Field::new(&col.name, arrow_type(&col.ty), col.nullable)
}

#[derive(Debug, thiserror::Error)]
#[error("column {column}: Avro value {value} does not fit Arrow type {ty:?}")]
pub struct AppendError {
    pub column: String,
    pub value: String,
    pub ty: ColumnType,
}

pub enum ColumnBuilder {
    Utf8(StringBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Dec(Decimal128Builder, u8, i8),
}

impl ColumnBuilder {
    pub fn new(ty: &ColumnType) -> Self {
        match ty {
            ColumnType::String => Self::Utf8(StringBuilder::new()),
            ColumnType::Int => Self::I32(Int32Builder::new()),
            ColumnType::Long => Self::I64(Int64Builder::new()),
            ColumnType::Float => Self::F32(Float32Builder::new()),
            ColumnType::Double => Self::F64(Float64Builder::new()),
            ColumnType::Boolean => Self::Bool(BooleanBuilder::new()),
            ColumnType::Date => Self::Date(Date32Builder::new()),
            ColumnType::TimestampMicros => Self::Ts(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            ColumnType::Decimal { precision, scale } => Self::Dec(Decimal128Builder::new(), *precision as u8, *scale as i8),
        }
    }

    /// Append one Avro value (unions are unwrapped; Null appends a null).
    /// Returns false when the value's kind does not match the column.
    pub fn append(&mut self, v: &Value) -> bool {
        let v = match v {
            Value::Union(_, inner) => inner.as_ref(),
            other => other,
        };
        match (self, v) {
            (Self::Utf8(b), Value::Null) => b.append_null(),
            (Self::I32(b), Value::Null) => b.append_null(),
            (Self::I64(b), Value::Null) => b.append_null(),
            (Self::F32(b), Value::Null) => b.append_null(),
            (Self::F64(b), Value::Null) => b.append_null(),
            (Self::Bool(b), Value::Null) => b.append_null(),
            (Self::Date(b), Value::Null) => b.append_null(),
            (Self::Ts(b), Value::Null) => b.append_null(),
            (Self::Dec(b, ..), Value::Null) => b.append_null(),
            (Self::Utf8(b), Value::String(s)) => b.append_value(s),
            (Self::Utf8(b), v @ (Value::Map(_) | Value::Array(_) | Value::Record(_))) => match serde_json::Value::try_from(v.clone()) {
                Ok(json) => b.append_value(json.to_string()),
                Err(_) => return false,
            },
            (Self::I32(b), Value::Int(x)) => b.append_value(*x),
            (Self::I64(b), Value::Long(x)) => b.append_value(*x),
            (Self::I64(b), Value::Int(x)) => b.append_value(*x as i64),
            (Self::F32(b), Value::Float(x)) => b.append_value(*x),
            (Self::F64(b), Value::Double(x)) => b.append_value(*x),
            (Self::F64(b), Value::Float(x)) => b.append_value(*x as f64),
            (Self::Bool(b), Value::Boolean(x)) => b.append_value(*x),
            (Self::Date(b), Value::Date(x)) => b.append_value(*x),
            (Self::Ts(b), Value::TimestampMicros(x)) => b.append_value(*x),
            (Self::Ts(b), Value::TimestampMillis(x)) => match x.checked_mul(1000) {
                Some(micros) => b.append_value(micros),
                None => return false,
            },
            (Self::Dec(b, p, _), Value::Decimal(d)) => match Vec::<u8>::try_from(d).ok().and_then(|bytes| decimal_within(&bytes, *p)) {
                Some(v) => b.append_value(v),
                None => return false,
            },
            (Self::Dec(b, p, _), Value::Bytes(bytes)) => match decimal_within(bytes, *p) {
                Some(v) => b.append_value(v),
                None => return false,
            },
            _ => return false,
        }
        true
    }

    /// Whether `append` would take `v` (checked before a record touches any builder).
    pub fn accepts(&self, v: &Value) -> bool {
        let v = match v {
            Value::Union(_, inner) => inner.as_ref(),
            other => other,
        };
        matches!(
            (self, v),
            (_, Value::Null)
                | (Self::Utf8(_), Value::String(_) | Value::Map(_) | Value::Array(_) | Value::Record(_))
                | (Self::I32(_), Value::Int(_))
                | (Self::I64(_), Value::Long(_) | Value::Int(_))
                | (Self::F32(_), Value::Float(_))
                | (Self::F64(_), Value::Double(_) | Value::Float(_))
                | (Self::Bool(_), Value::Boolean(_))
                | (Self::Date(_), Value::Date(_))
                | (Self::Ts(_), Value::TimestampMicros(_))
        ) || match (self, v) {
            (Self::Ts(_), Value::TimestampMillis(x)) => x.checked_mul(1000).is_some(),
            (Self::Dec(_, p, _), Value::Bytes(bytes)) => decimal_within(bytes, *p).is_some(),
            (Self::Dec(_, p, _), Value::Decimal(d)) => Vec::<u8>::try_from(d).ok().and_then(|bytes| decimal_within(&bytes, *p)).is_some(),
            _ => false,
        }
    }

    pub fn append_null(&mut self) {
        self.append(&Value::Null);
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Utf8(b) => Arc::new(b.finish()),
            Self::I32(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::F32(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Ts(b) => Arc::new(b.finish().with_timezone("UTC")),
            // columns_of_record refuses precision above 38 and scale above precision, the only
            // arguments with_precision_and_scale rejects; a Column built by hand is clamped.
            Self::Dec(b, p, s) => {
                let array = b.finish();
                match array.clone().with_precision_and_scale(*p, *s) {
                    Ok(a) => Arc::new(a),
                    Err(_) => Arc::new(array),
                }
            }
        }
    }
}

/// The unscaled value of decimal bytes when it has at most `precision` digits (more bytes
/// than an i128 holds, or more digits, is a value the column cannot take: refused, never cut).
fn decimal_within(bytes: &[u8], precision: u8) -> Option<i128> {
    let v = unscaled_from_bytes(bytes)?;
    (v.unsigned_abs() < 10u128.checked_pow(precision as u32)?).then_some(v)
}

/// A field schema without its nullable union: `["null", T]` → `(T, true)`, `T` → `(T, false)`.
pub fn split_nullable(schema: &apache_avro::Schema) -> (&apache_avro::Schema, bool) {
    match schema {
        apache_avro::Schema::Union(u) if u.variants().len() == 2 && matches!(u.variants()[0], apache_avro::Schema::Null) => (&u.variants()[1], true),
        other => (other, false),
    }
}

/// Arrow's Decimal128 holds at most 38 digits.
pub const MAX_DECIMAL_PRECISION: usize = 38;

/// Read the column list back from an Avro record schema that funnel generated
/// (the inverse of [`Column::avro_field`]). Maps, arrays and nested records become string
/// columns holding their JSON (a Delta table of a domain topic keeps them queryable).
/// Err says what does not map: not a record, a field type without a column type, or a
/// decimal wider than Arrow's 38 digits (refused here, never truncated later).
pub fn columns_of_record(schema: &apache_avro::Schema) -> Result<Vec<Column>, String> {
    use apache_avro::Schema as S;
    let S::Record(rec) = schema else { return Err(format!("schema {} is not a record", schema.canonical_form())) };
    rec.fields
        .iter()
        .map(|f| {
            let (inner, nullable) = split_nullable(&f.schema);
            let ty = match inner {
                S::String | S::Uuid => ColumnType::String,
                S::Int => ColumnType::Int,
                S::Long => ColumnType::Long,
                S::Float => ColumnType::Float,
                S::Double => ColumnType::Double,
                S::Boolean => ColumnType::Boolean,
                S::Date => ColumnType::Date,
                S::TimestampMicros | S::TimestampMillis | S::LocalTimestampMicros | S::LocalTimestampMillis => ColumnType::TimestampMicros,
                S::Decimal(d) if d.precision == 0 || d.precision > MAX_DECIMAL_PRECISION || d.scale > d.precision => {
                    return Err(format!("field {}: decimal({}, {}) does not fit Arrow's Decimal128 (precision 1..=38, scale <= precision)", f.name, d.precision, d.scale));
                }
                S::Decimal(d) => ColumnType::Decimal { precision: d.precision as u32, scale: d.scale as u32 },
                S::Map(_) | S::Array(_) | S::Record(_) => ColumnType::String,
                other => return Err(format!("field {}: Avro type {other:?} has no column type", f.name)),
            };
            Ok(Column { name: f.name.clone(), ty, nullable })
        })
        .collect()
}

/// Avro records as one Arrow batch with `columns`, fields matched by name (a record without
/// the field gives null). Every Arrow field is nullable: these batches are query inputs.
pub fn batch_of_records<'a>(columns: &[Column], rows: impl IntoIterator<Item = &'a [(String, Value)]>) -> Result<deltalake::arrow::record_batch::RecordBatch, anyhow::Error> {
    let mut builders: Vec<ColumnBuilder> = columns.iter().map(|c| ColumnBuilder::new(&c.ty)).collect();
    for row in rows {
        for (c, b) in columns.iter().zip(builders.iter_mut()) {
            let v = row.iter().find(|(k, _)| k == &c.name).map(|(_, v)| v).unwrap_or(&Value::Null);
            if !b.append(v) {
                anyhow::bail!("{}", AppendError { column: c.name.clone(), value: format!("{v:?}"), ty: c.ty.clone() });
            }
        }
    }
    let schema = deltalake::arrow::datatypes::Schema::new(columns.iter().map(|c| Field::new(&c.name, arrow_type(&c.ty), true)).collect::<Vec<_>>());
    Ok(deltalake::arrow::record_batch::RecordBatch::try_new(Arc::new(schema), builders.iter_mut().map(ColumnBuilder::finish).collect())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_with(field_type: &str) -> apache_avro::Schema {
        apache_avro::Schema::parse_str(&format!(r#"{{"type": "record", "name": "R", "fields": [{{"name": "amount", "type": {field_type}}}]}}"#)).unwrap()
    }

    #[test]
    fn decimal_wider_than_38_digits_is_refused_with_a_reason() {
        let why = columns_of_record(&record_with(r#"{"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 2}"#)).unwrap_err();
        assert!(why.contains("amount") && why.contains("decimal(40, 2)"), "{why}");
        let ok = columns_of_record(&record_with(r#"{"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 2}"#)).unwrap();
        assert_eq!(ok[0].ty, ColumnType::Decimal { precision: 38, scale: 2 });
    }

    #[test]
    fn decimal_values_that_do_not_fit_are_refused_never_truncated() {
        let mut b = ColumnBuilder::new(&ColumnType::Decimal { precision: 4, scale: 2 });
        // 17 significant bytes: more than an i128; the old decoder kept the low 16 bytes.
        let mut huge = vec![0x01];
        huge.extend([0u8; 16]);
        assert!(!b.accepts(&Value::Bytes(huge.clone())) && !b.append(&Value::Bytes(huge)));
        // 12345 (123.45) has 5 digits: more than decimal(4, 2) holds.
        assert!(!b.accepts(&Value::Bytes(crate::avro::column::unscaled_bytes(12345))));
        // Sign extension beyond 16 bytes is still the same small value.
        let mut minus_one = vec![0xff; 17];
        minus_one[16] = 0xff;
        assert!(b.append(&Value::Bytes(minus_one)));
        assert!(b.append(&Value::Bytes(crate::avro::column::unscaled_bytes(-9999))));
        let a = b.finish();
        let d = a.as_any().downcast_ref::<deltalake::arrow::array::Decimal128Array>().unwrap();
        assert_eq!((d.value(0), d.value(1), d.precision(), d.scale()), (-1, -9999, 4, 2));
    }
}
