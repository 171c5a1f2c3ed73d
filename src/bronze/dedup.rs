//! Re-sent change events (same source position as one already written) are dropped, so a
//! change is counted once in bronze even when CDC re-sent it after a crash or a broker leaked
//! an aborted transaction. Per primary key the highest source position written is kept; the
//! map is rebuilt from the table's own files when the writer starts.

use std::collections::HashMap;

use anyhow::{Context, Result};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::Int64Type;
use deltalake::DeltaTable;

/// (source.lsn, source.change_lsn): orders the changes of one key.
pub type Position = (i64, i64);

#[derive(Default)]
pub struct Seen {
    latest: HashMap<String, Position>,
}

impl Seen {
    /// True when `pos` is new for `key` (and records it); false for a re-sent event.
    pub fn admit(&mut self, key: String, pos: Position) -> bool {
        match self.latest.get(&key) {
            Some(seen) if *seen >= pos => false,
            _ => {
                self.latest.insert(key, pos);
                true
            }
        }
    }

    /// Rebuild from the table's data files, read through the table's own store (a local
    /// disk or S3: the provider scans the files of the current version).
    pub async fn load(table: &DeltaTable, pk: &[String]) -> Result<Seen> {
        use futures::StreamExt;
        let mut seen = Seen::default();
        if table.version().is_none() {
            return Ok(seen);
        }
        let ctx = deltalake::datafusion::prelude::SessionContext::new();
        ctx.register_table("t", table.table_provider().await.context("opening the bronze table to rebuild the re-send filter")?)?;
        let columns: Vec<String> = pk.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).chain(["_source_lsn".into(), "_source_change_lsn".into()]).collect();
        let df = ctx.sql(&format!("SELECT {} FROM t", columns.join(", "))).await.context("planning the re-send filter's scan")?;
        let mut batches = df.execute_stream().await.context("reading the bronze table to rebuild the re-send filter")?;
        while let Some(batch) = batches.next().await {
            let batch = batch.context("reading the bronze table to rebuild the re-send filter")?;
            let columns: Vec<&dyn Array> = pk.iter().map(|c| batch.column_by_name(c).map(|a| a.as_ref()).context("key column in bronze table")).collect::<Result<_>>()?;
            let keys = crate::avro::key::key_texts(&columns)?;
            let lsn = batch.column_by_name("_source_lsn").context("_source_lsn")?.as_primitive::<Int64Type>().clone();
            let change = batch.column_by_name("_source_change_lsn").context("_source_change_lsn")?.as_primitive::<Int64Type>().clone();
            for (row, key) in keys.into_iter().enumerate() {
                seen.admit(key, (lsn.value(row), change.value(row)));
            }
        }
        Ok(seen)
    }
}

