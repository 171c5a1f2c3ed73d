//! Key text: one string per row key, the same whether it is made from decoded Avro values
//! (a change as it arrives) or from the Arrow columns a table stored (state rebuilt at start),
//! for every column type: dates as days, timestamps as microseconds, decimals as their unscaled
//! integer. Bronze's re-send filter and the merge writer's tombstones compare keys this way.

use anyhow::Result;
use apache_avro::types::Value;
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{DataType, Int64Type};

/// The key text of decoded values (unions unwrapped, null as empty).
pub fn key_text(values: &[&Value]) -> String {
    let mut out = String::new();
    for v in values {
        let v = match v {
            Value::Union(_, inner) => inner.as_ref(),
            other => other,
        };
        match v {
            Value::Null => {}
            Value::String(s) => out.push_str(s),
            Value::Uuid(u) => out.push_str(&u.to_string()),
            Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(x) | Value::Date(x) | Value::TimeMillis(x) => out.push_str(&x.to_string()),
            Value::Long(x) | Value::TimeMicros(x) | Value::TimestampMicros(x) | Value::LocalTimestampMicros(x) => out.push_str(&x.to_string()),
            // Bronze stores timestamps in microseconds.
            Value::TimestampMillis(x) | Value::LocalTimestampMillis(x) => match x.checked_mul(1000) {
                Some(micros) => out.push_str(&micros.to_string()),
                None => out.push_str(&format!("{v:?}")),
            },
            Value::Float(x) => out.push_str(&(*x as f64).to_string()),
            Value::Double(x) => out.push_str(&x.to_string()),
            Value::Decimal(d) => match Vec::<u8>::try_from(d).ok().and_then(|b| crate::avro::column::unscaled_from_bytes(&b)) {
                Some(x) => out.push_str(&x.to_string()),
                None => out.push_str(&format!("{d:?}")),
            },
            Value::Bytes(b) => match crate::avro::column::unscaled_from_bytes(b) {
                Some(x) => out.push_str(&x.to_string()),
                None => out.push_str(&format!("{b:?}")),
            },
            other => out.push_str(&format!("{other:?}")),
        }
        out.push('\u{1f}');
    }
    out
}

/// The key text of every row of `key_columns` (a table's stored columns), as `key_text` makes it.
pub fn key_texts(key_columns: &[&dyn Array]) -> Result<Vec<String>> {
    use deltalake::arrow::datatypes::{Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, TimeUnit, TimestampMicrosecondType};
    let rows = key_columns.first().map(|c| c.len()).unwrap_or(0);
    let mut out = vec![String::new(); rows];
    for col in key_columns {
        for (row, key) in out.iter_mut().enumerate() {
            if !col.is_null(row) {
                let text = match col.data_type() {
                    DataType::Utf8 => col.as_string::<i32>().value(row).to_string(),
                    DataType::LargeUtf8 => col.as_string::<i64>().value(row).to_string(),
                    DataType::Utf8View => col.as_string_view().value(row).to_string(),
                    DataType::Boolean => col.as_boolean().value(row).to_string(),
                    DataType::Int32 => col.as_primitive::<Int32Type>().value(row).to_string(),
                    DataType::Int64 => col.as_primitive::<Int64Type>().value(row).to_string(),
                    DataType::Date32 => col.as_primitive::<Date32Type>().value(row).to_string(),
                    DataType::Timestamp(TimeUnit::Microsecond, _) => col.as_primitive::<TimestampMicrosecondType>().value(row).to_string(),
                    DataType::Decimal128(..) => col.as_primitive::<Decimal128Type>().value(row).to_string(),
                    DataType::Float32 => (col.as_primitive::<Float32Type>().value(row) as f64).to_string(),
                    DataType::Float64 => col.as_primitive::<Float64Type>().value(row).to_string(),
                    other => anyhow::bail!("key column of type {other}: no key text for it"),
                };
                key.push_str(&text);
            }
            key.push('\u{1f}');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::arrow::ColumnBuilder;
    use crate::avro::column::{parse_decimal, unscaled_bytes};
    use crate::avro::ColumnType;

    /// The live writer's key of a decoded value equals the key rebuilt from the stored column,
    /// for every column type a primary key can have.
    #[test]
    fn live_and_rebuilt_keys_agree_for_every_key_type() {
        let cases = [
            (ColumnType::String, Value::String("ab-1".into())),
            (ColumnType::Int, Value::Int(-7)),
            (ColumnType::Long, Value::Long(9_000_000_000)),
            (ColumnType::Boolean, Value::Boolean(true)),
            (ColumnType::Date, Value::Date(17_591)),
            (ColumnType::TimestampMicros, Value::TimestampMicros(1_506_941_793_250_000)),
            (ColumnType::TimestampMicros, Value::TimestampMillis(1_506_941_793_250)),
            (ColumnType::Decimal { precision: 10, scale: 2 }, Value::Decimal(unscaled_bytes(parse_decimal("-129.90", 2).unwrap()).into())),
            (ColumnType::Decimal { precision: 10, scale: 2 }, Value::Bytes(unscaled_bytes(12_345))),
            (ColumnType::Double, Value::Double(2.5)),
        ];
        for (ty, value) in cases {
            let nullable = Value::Union(1, Box::new(value.clone()));
            let live = key_text(&[&nullable, &Value::String("x".into())]);
            let mut b = ColumnBuilder::new(&ty);
            assert!(b.append(&nullable), "{ty:?} takes {value:?}");
            let stored = b.finish();
            let second = deltalake::arrow::array::StringArray::from(vec!["x"]);
            let rebuilt = key_texts(&[stored.as_ref(), &second]).unwrap();
            assert_eq!(rebuilt, vec![live], "{ty:?} {value:?}");
        }
    }
}
