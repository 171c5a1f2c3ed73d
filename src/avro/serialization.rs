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
}

pub fn encode(schema_id: u32, schema: &Schema, value: Value) -> Result<Vec<u8>, WireError> {
    let datum = apache_avro::to_avro_datum(schema, value).map_err(WireError::Encode)?;
    let mut out = Vec::with_capacity(datum.len() + 5);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
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
