//! The Delta lake (on a local disk or an object store, see `location`): `bronze/` (CDC history, see `crate::bronze`), `silver/` (tables merged by key)
//! and `gold/` (business tables). Shared here: offsets stored in the Delta log (`offsets`),
//! opening or creating a table (`table`), merging keyed upserts/deletes (`merge_writer`) and
//! the topic → merged table loop (`merge_sink`).

pub mod location;
pub mod merge_sink;
pub mod merge_writer;
pub mod offsets;
pub mod query;
pub mod table;
pub mod tombstones;
