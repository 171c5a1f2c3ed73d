//! Plain Rust structs ⇄ Avro values through serde, for records whose fields are all scalars,
//! options and lists (the campaigns' records): one derive instead of hand-written to/from
//! value code. `resolve` turns the serde form into the schema's (unions, logical types).

use apache_avro::types::Value;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The record as a value of `schema` (an error names what does not fit).
pub fn to_avro<T: Serialize>(record: &T, schema: &Schema) -> Result<Value, String> {
    let value = apache_avro::to_value(record).map_err(|e| format!("to Avro: {e}"))?;
    value.resolve(schema).map_err(|e| format!("does not fit its schema: {e}"))
}

/// A decoded Avro value as the record (an error names the field that does not fit).
pub fn from_avro<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    apache_avro::from_value(value).map_err(|e| format!("not a valid record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct R {
        id: String,
        n: i32,
        at: i64,
        note: Option<String>,
        tags: Vec<String>,
        flag: bool,
    }

    #[test]
    fn records_round_trip_through_unions_and_logical_types() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"id","type":"string"},{"name":"n","type":"int"},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},{"name":"note","type":["null","string"],"default":null},
            {"name":"tags","type":{"type":"array","items":"string"}},{"name":"flag","type":"boolean"}]}"#,
        )
        .unwrap();
        for r in [R { id: "a".into(), n: 3, at: 1_700_000_000_000, note: Some("x".into()), tags: vec!["t".into()], flag: true }, R { id: "b".into(), n: -1, at: 0, note: None, tags: vec![], flag: false }] {
            let v = to_avro(&r, &schema).unwrap();
            let bytes = crate::avro::serialization::encode(1, &schema, v).unwrap();
            let (_, body) = crate::avro::serialization::split(&bytes).unwrap();
            let back = apache_avro::from_avro_datum(&schema, &mut &body[..], None).unwrap();
            assert_eq!(from_avro::<R>(&back).unwrap(), r);
        }
    }
}
