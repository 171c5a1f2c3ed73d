//! Arrow rows (SQL results) into Avro records of a registered schema, field by field by name.
//! Each column is cast once to the Arrow type of its field (Int64 for long, Timestamp(µs) for
//! timestamp-micros, …), so the query decides values and the schema decides types; a column
//! that cannot be cast, a missing column or a null in a non-null field is an error, checked
//! against the query's plan before any record flows (`check`).

use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::compute::{can_cast_types, cast};
use deltalake::arrow::datatypes::{DataType, Float32Type, Float64Type, Int32Type, Int64Type, Schema as ArrowSchema, TimeUnit, TimestampMicrosecondType};
use deltalake::arrow::record_batch::RecordBatch;

#[derive(Debug, thiserror::Error)]
pub enum FromArrowError {
    #[error("the Avro schema is not a record")]
    NotARecord,
    #[error("field {0}: no column of that name in the query's result")]
    MissingColumn(String),
    #[error("column {column}: the query gives {from}, which does not convert to the field's type {to}")]
    Uncastable { column: String, from: DataType, to: DataType },
    #[error("field {0}: Avro type not supported for SQL results")]
    Unsupported(String),
    #[error("column {0} is null but its Avro field is not nullable")]
    NullInRequired(String),
    #[error("column {column}: {source}")]
    Cast { column: String, source: deltalake::arrow::error::ArrowError },
    #[error("result column {0} has no field in the Avro schema (add it to the schema or drop it from the SELECT)")]
    ExtraColumn(String),
}

/// A record field as SQL sees it: its name, Arrow type and whether it takes null.
struct Target {
    name: String,
    ty: DataType,
    nullable: bool,
}

fn targets(schema: &Schema) -> Result<Vec<Target>, FromArrowError> {
    let Schema::Record(rec) = schema else { return Err(FromArrowError::NotARecord) };
    rec.fields
        .iter()
        .map(|f| {
            let (inner, nullable) = super::arrow::split_nullable(&f.schema);
            let ty = match inner {
                Schema::String => DataType::Utf8,
                Schema::Int => DataType::Int32,
                Schema::Long => DataType::Int64,
                Schema::Float => DataType::Float32,
                Schema::Double => DataType::Float64,
                Schema::Boolean => DataType::Boolean,
                Schema::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, None),
                _ => return Err(FromArrowError::Unsupported(f.name.clone())),
            };
            Ok(Target { name: f.name.clone(), ty, nullable })
        })
        .collect()
}

/// Check a query's result schema against the Avro record: every field not in `filled_by_engine`
/// has a column that casts to its type, and every column has a field.
pub fn check(result: &ArrowSchema, schema: &Schema, filled_by_engine: &[&str]) -> Result<(), FromArrowError> {
    let targets = targets_except(schema, filled_by_engine)?;
    for t in &targets {
        let col = result.field_with_name(&t.name).map_err(|_| FromArrowError::MissingColumn(t.name.clone()))?;
        if !can_cast_types(col.data_type(), &t.ty) {
            return Err(FromArrowError::Uncastable { column: t.name.clone(), from: col.data_type().clone(), to: t.ty.clone() });
        }
    }
    if let Some(extra) = result.fields().iter().find(|f| !targets.iter().any(|t| &t.name == f.name())) {
        return Err(FromArrowError::ExtraColumn(extra.name().clone()));
    }
    Ok(())
}

fn targets_except(schema: &Schema, skip: &[&str]) -> Result<Vec<Target>, FromArrowError> {
    Ok(targets(schema)?.into_iter().filter(|t| !skip.contains(&t.name.as_str())).collect())
}

/// The rows of `batch` as records of `schema`: fields in schema order; fields named in
/// `filled_by_engine` are `Value::Null` placeholders for the caller to set.
pub fn records(batch: &RecordBatch, schema: &Schema, filled_by_engine: &[&str]) -> Result<Vec<Vec<(String, Value)>>, FromArrowError> {
    let all = targets(schema)?;
    let mut columns: Vec<Option<ArrayRef>> = vec![];
    for t in &all {
        if filled_by_engine.contains(&t.name.as_str()) {
            columns.push(None);
            continue;
        }
        let col = batch.column_by_name(&t.name).ok_or_else(|| FromArrowError::MissingColumn(t.name.clone()))?;
        let cast_to = cast(col, &t.ty).map_err(|source| FromArrowError::Cast { column: t.name.clone(), source })?;
        columns.push(Some(Arc::new(cast_to)));
    }
    (0..batch.num_rows())
        .map(|row| {
            all.iter()
                .zip(&columns)
                .map(|(t, col)| {
                    let value = match col {
                        None => Value::Null,
                        Some(col) if col.is_null(row) => {
                            if !t.nullable {
                                return Err(FromArrowError::NullInRequired(t.name.clone()));
                            }
                            Value::Union(0, Box::new(Value::Null))
                        }
                        Some(col) => {
                            let v = value_at(col, row);
                            if t.nullable {
                                Value::Union(1, Box::new(v))
                            } else {
                                v
                            }
                        }
                    };
                    Ok((t.name.clone(), value))
                })
                .collect()
        })
        .collect()
}

/// One non-null cell of an array already cast to a target type.
fn value_at(col: &ArrayRef, row: usize) -> Value {
    match col.data_type() {
        DataType::Utf8 => Value::String(col.as_string::<i32>().value(row).to_string()),
        DataType::Int32 => Value::Int(col.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::Long(col.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => Value::Float(col.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Value::Double(col.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Value::Boolean(col.as_boolean().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Value::TimestampMicros(col.as_primitive::<TimestampMicrosecondType>().value(row)),
        // `targets` only produces the types above.
        other => Value::String(format!("unsupported {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::Field;

    fn schema() -> Schema {
        Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"id","type":"string"},
                {"name":"n","type":"long"},
                {"name":"x","type":["null","double"]},
                {"name":"at","type":["null",{"type":"long","logicalType":"timestamp-micros"}]},
                {"name":"engine","type":"long"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn rows_become_records_with_casts_and_nulls() {
        let batch = RecordBatch::try_new(
            Arc::new(ArrowSchema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("n", DataType::Int64, false),
                Field::new("x", DataType::Float64, true),
                Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(7), None]).with_timezone("UTC")),
            ],
        )
        .unwrap();
        check(&batch.schema(), &schema(), &["engine"]).unwrap();
        let rows = records(&batch, &schema(), &["engine"]).unwrap();
        assert_eq!(rows[0][2].1, Value::Union(1, Box::new(Value::Double(1.5))));
        assert_eq!(rows[0][3].1, Value::Union(1, Box::new(Value::TimestampMicros(7))));
        assert_eq!(rows[1][2].1, Value::Union(0, Box::new(Value::Null)));
        assert_eq!(rows[1][4].1, Value::Null);
        assert!(matches!(check(&batch.schema(), &schema(), &[]), Err(FromArrowError::MissingColumn(c)) if c == "engine"));
    }
}
