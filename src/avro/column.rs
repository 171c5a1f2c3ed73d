//! Column types funnel carries end to end: Postgres text → Avro value → Arrow array.
//! One mapping, used by the CDC snapshot, the CDC stream and the Delta writers alike.

use apache_avro::types::Value;
use chrono::{NaiveDate, NaiveDateTime, DateTime};
use serde_json::{json, Value as Json};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int,
    Long,
    Float,
    Double,
    Boolean,
    /// Days since the epoch.
    Date,
    /// Microseconds since the epoch (timestamps without zone are read as UTC).
    TimestampMicros,
    Decimal { precision: u32, scale: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("column {column}: cannot read {text:?} as {ty:?}")]
pub struct ParseError {
    pub column: String,
    pub text: String,
    pub ty: ColumnType,
}

impl ColumnType {
    /// Map a Postgres type (`pg_type.typname` plus numeric precision/scale) to a column type.
    pub fn from_pg(typname: &str, precision: Option<i32>, scale: Option<i32>) -> ColumnType {
        match typname {
            "int2" | "int4" => ColumnType::Int,
            "int8" | "oid" => ColumnType::Long,
            "float4" => ColumnType::Float,
            "float8" => ColumnType::Double,
            "bool" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" | "timestamptz" => ColumnType::TimestampMicros,
            "numeric" => match (precision, scale) {
                (Some(p), Some(s)) if p > 0 && p <= 38 => ColumnType::Decimal { precision: p as u32, scale: s.max(0) as u32 },
                // Unconstrained numeric has no fixed scale: keep its exact text.
                _ => ColumnType::String,
            },
            _ => ColumnType::String,
        }
    }

    /// The Avro type JSON (without the null union).
    pub fn avro_json(&self) -> Json {
        match self {
            ColumnType::String => json!("string"),
            ColumnType::Int => json!("int"),
            ColumnType::Long => json!("long"),
            ColumnType::Float => json!("float"),
            ColumnType::Double => json!("double"),
            ColumnType::Boolean => json!("boolean"),
            ColumnType::Date => json!({"type": "int", "logicalType": "date"}),
            ColumnType::TimestampMicros => json!({"type": "long", "logicalType": "timestamp-micros"}),
            ColumnType::Decimal { precision, scale } => json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}),
        }
    }

    /// Parse Postgres' text output for this type into an Avro value.
    pub fn parse_text(&self, text: &str) -> Option<Value> {
        Some(match self {
            ColumnType::String => Value::String(text.to_string()),
            ColumnType::Int => Value::Int(text.parse().ok()?),
            ColumnType::Long => Value::Long(text.parse().ok()?),
            ColumnType::Float => Value::Float(text.parse().ok()?),
            ColumnType::Double => Value::Double(text.parse().ok()?),
            ColumnType::Boolean => Value::Boolean(matches!(text, "t" | "true" | "True" | "TRUE" | "1")),
            ColumnType::Date => {
                let d = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
                Value::Date((d - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days() as i32)
            }
            ColumnType::TimestampMicros => Value::TimestampMicros(parse_timestamp_micros(text)?),
            ColumnType::Decimal { scale, .. } => Value::Decimal(unscaled_bytes(parse_decimal(text, *scale)?).into()),
        })
    }
}

impl Column {
    /// Avro field JSON; nullable columns are `["null", T]` with a null default.
    pub fn avro_field(&self) -> Json {
        if self.nullable {
            json!({"name": self.name, "type": ["null", self.ty.avro_json()], "default": null})
        } else {
            json!({"name": self.name, "type": self.ty.avro_json()})
        }
    }

    /// Avro value of this column from Postgres text (None = SQL NULL).
    pub fn value_from_text(&self, text: Option<&str>) -> Result<Value, ParseError> {
        let v = match text {
            None => None,
            Some(t) => Some(self.ty.parse_text(t).ok_or_else(|| ParseError { column: self.name.clone(), text: t.to_string(), ty: self.ty.clone() })?),
        };
        match (v, self.nullable) {
            (Some(v), true) => Ok(Value::Union(1, Box::new(v))),
            (None, true) => Ok(Value::Union(0, Box::new(Value::Null))),
            (Some(v), false) => Ok(v),
            (None, false) => Err(ParseError { column: self.name.clone(), text: "NULL".into(), ty: self.ty.clone() }),
        }
    }
}

fn parse_timestamp_micros(text: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_str(&normalise_tz(text), "%Y-%m-%d %H:%M:%S%.f%z") {
        return Some(dt.timestamp_micros());
    }
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()?;
    Some(naive.and_utc().timestamp_micros())
}

/// Postgres prints zones as `+00` or `+05:30`; chrono's %z wants `+0000`.
fn normalise_tz(text: &str) -> String {
    let Some(pos) = text.rfind(['+', '-']).filter(|p| *p > 10) else { return text.to_string() };
    let (head, tz) = text.split_at(pos);
    let digits: String = tz[1..].chars().filter(|c| c.is_ascii_digit()).collect();
    let padded = format!("{digits:0<4}");
    format!("{head}{}{padded}", &tz[..1])
}

/// Exact decimal text → unscaled integer at `scale` (rounding is refused, not silent).
pub fn parse_decimal(text: &str, scale: u32) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let frac_trim = frac.trim_end_matches('0');
    if frac_trim.len() > scale as usize || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut v: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    for i in 0..scale as usize {
        let d = frac_trim.as_bytes().get(i).map(|b| (b - b'0') as i128).unwrap_or(0);
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    Some(if neg { -v } else { v })
}

/// Minimal big-endian two's complement bytes of an unscaled decimal (Avro's decimal encoding).
pub fn unscaled_bytes(v: i128) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// Inverse of [`unscaled_bytes`]; None when the value does not fit an i128 (more than 16
/// bytes that are not just sign extension).
pub fn unscaled_from_bytes(b: &[u8]) -> Option<i128> {
    if b.is_empty() {
        return Some(0);
    }
    let fill = if b[0] & 0x80 != 0 { 0xff } else { 0x00 };
    if b.len() > 16 {
        let (extra, rest) = b.split_at(b.len() - 16);
        // Leading bytes may only repeat the sign, and the remaining 16 must keep it.
        if extra.iter().any(|x| *x != fill) || (rest[0] & 0x80 != 0) != (fill == 0xff) {
            return None;
        }
        return Some(i128::from_be_bytes(rest.try_into().ok()?));
    }
    let mut buf = [fill; 16];
    buf[16 - b.len()..].copy_from_slice(b);
    Some(i128::from_be_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_through_avro_bytes() {
        for (text, want) in [("29.99", 2999i128), ("-0.5", -50), ("100", 10000), ("0.00", 0), ("-128.00", -12800)] {
            let v = parse_decimal(text, 2).unwrap();
            assert_eq!(v, want, "{text}");
            assert_eq!(unscaled_from_bytes(&unscaled_bytes(v)), Some(v));
        }
        assert_eq!(parse_decimal("1.234", 2), None, "rounding must be refused");
        assert_eq!(parse_decimal("abc", 2), None);
    }

    #[test]
    fn timestamps_parse_with_and_without_zone() {
        let a = parse_timestamp_micros("2017-10-02 10:56:33").unwrap();
        let b = parse_timestamp_micros("2017-10-02 10:56:33+00").unwrap();
        let c = parse_timestamp_micros("2017-10-02 12:56:33.5+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(c, a + 500_000);
    }

    #[test]
    fn null_into_non_nullable_column_is_an_error() {
        let col = Column { name: "id".into(), ty: ColumnType::String, nullable: false };
        assert!(col.value_from_text(None).is_err());
        let col = Column { name: "n".into(), ty: ColumnType::Int, nullable: false };
        assert!(col.value_from_text(Some("x")).is_err());
    }
}
