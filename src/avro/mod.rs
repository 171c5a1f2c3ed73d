//! Avro as funnel uses it: the Confluent wire format, the column types funnel maps between
//! Postgres, Avro and Arrow, and decoding Avro records into Arrow batches.

pub mod arrow;
pub mod from_arrow;
pub mod column;
pub mod key;
pub mod registered;
pub mod serde_record;
pub mod serialization;
pub mod value;

pub use column::{Column, ColumnType};
pub use registered::Registered;
