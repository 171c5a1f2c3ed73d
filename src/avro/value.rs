//! Reading fields of decoded Avro records (nullable fields arrive as one-branch-or-null unions).

use apache_avro::types::Value;

/// The field `name` of a record, with a nullable union unwrapped (`Value::Null` when null).
pub fn field<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| unwrap_union(v))
}

pub fn unwrap_union(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => inner.as_ref(),
        other => other,
    }
}

pub fn long(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::Long(x)) | Some(Value::TimestampMicros(x)) | Some(Value::TimestampMillis(x)) => Some(*x),
        Some(Value::Int(x)) | Some(Value::Date(x)) => Some(*x as i64),
        _ => None,
    }
}

pub fn text(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

pub fn double(v: Option<&Value>) -> Option<f64> {
    match v {
        Some(Value::Double(x)) => Some(*x),
        Some(Value::Float(x)) => Some(*x as f64),
        Some(Value::Long(x)) => Some(*x as f64),
        Some(Value::Int(x)) => Some(*x as f64),
        _ => None,
    }
}

/// The unscaled integer of a decimal (the scale is the column's, from its schema).
pub fn unscaled(v: Option<&Value>) -> Option<i128> {
    match v {
        Some(Value::Decimal(d)) => Vec::<u8>::try_from(d).ok().and_then(|b| super::column::unscaled_from_bytes(&b)),
        _ => None,
    }
}

/// A nullable Avro field value: `["null", T]` unions put null first.
pub fn nullable(v: Option<Value>) -> Value {
    match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

/// A nullable string field.
pub fn nullable_text(v: &Option<String>) -> Value {
    nullable(v.clone().map(Value::String))
}
