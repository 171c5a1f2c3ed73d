//! Re-sent change events (same source position as one already written) are dropped, so a
//! change is counted once in bronze even when CDC re-sent it after a crash or a broker leaked
//! an aborted transaction. Per primary key the highest source position written is kept; the
//! map is rebuilt from the table's own files when the writer starts.

use std::collections::HashMap;

use anyhow::{Context, Result};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::Int64Type;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;
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

    /// Rebuild from the table's data files (local tables; bronze is append-only).
    pub fn load(table: &DeltaTable, pk: &[String]) -> Result<Seen> {
        let mut seen = Seen::default();
        if table.version().is_none() {
            return Ok(seen);
        }
        let mut names: Vec<&str> = pk.iter().map(String::as_str).collect();
        names.extend(["_source_lsn", "_source_change_lsn"]);
        for uri in table.get_file_uris()? {
            let path = url::Url::parse(&uri).ok().and_then(|u| u.to_file_path().ok()).unwrap_or_else(|| uri.clone().into());
            let file = std::fs::File::open(&path).with_context(|| format!("reading {} to rebuild the re-send filter", path.display()))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
            for batch in builder.with_projection(mask).build()? {
                let batch = batch?;
                let columns: Vec<&dyn Array> = pk.iter().map(|c| batch.column_by_name(c).map(|a| a.as_ref()).context("key column in bronze table")).collect::<Result<_>>()?;
                let keys = crate::avro::key::key_texts(&columns)?;
                let lsn = batch.column_by_name("_source_lsn").context("_source_lsn")?.as_primitive::<Int64Type>().clone();
                let change = batch.column_by_name("_source_change_lsn").context("_source_change_lsn")?.as_primitive::<Int64Type>().clone();
                for (row, key) in keys.into_iter().enumerate() {
                    seen.admit(key, (lsn.value(row), change.value(row)));
                }
            }
        }
        Ok(seen)
    }
}

