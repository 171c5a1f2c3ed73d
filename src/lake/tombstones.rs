//! Deletes of a positioned (CDC) table, remembered by source position. A MERGE removes a
//! deleted row, so nothing in the table itself remembers when it went: an older change that
//! arrives after the delete — an insert CDC re-sent after a crash, a re-snapshot that read the
//! row before it was deleted — would find no row and insert it again. The tombstone (key and
//! the delete's position) says it is older than the delete and is dropped.
//!
//! Tombstones live in a small append-only Delta table beside the table
//! (`<layer>/.<name>.tombstones`, hidden from the SQL catalog), loaded whole when the writer
//! opens (latest position per key), and committed before the merge that applies the deletes,
//! so a crash in between only re-applies a delete.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{Field, Int64Type, Schema as ArrowSchema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;

use crate::avro::arrow::{arrow_field, ColumnBuilder};
use crate::avro::key::{key_text, key_texts};
use crate::avro::{Column, ColumnType};
use crate::cdc::change::Position;

const LSN: &str = "_source_lsn";
const CHANGE_LSN: &str = "_source_change_lsn";

pub struct Tombstones {
    table: DeltaTable,
    /// Key columns, then the two position columns.
    columns: Vec<Column>,
    schema: Arc<ArrowSchema>,
    /// Latest delete position per key text.
    latest: HashMap<String, Position>,
    /// Deletes not yet committed: key values, then the position.
    pending: Vec<Vec<Value>>,
}

/// `<layer>/<name>` → `<layer>/.<name>.tombstones`.
pub fn url_for(table: &url::Url) -> Result<url::Url> {
    let name = super::location::name_of(table);
    anyhow::ensure!(!name.is_empty(), "table URL without a name: {table}");
    Ok(super::location::sibling(table, &format!(".{name}.tombstones")))
}

impl Tombstones {
    /// Open (or create) the tombstones of the table at `table_url`, keyed by `key_columns`.
    pub async fn open(table_url: &url::Url, name: &str, key_columns: Vec<Column>, checkpoint_interval: u32) -> Result<Self> {
        let url = url_for(table_url)?;
        let mut columns = key_columns;
        let n_keys = columns.len();
        columns.push(Column { name: LSN.into(), ty: ColumnType::Long, nullable: false });
        columns.push(Column { name: CHANGE_LSN.into(), ty: ColumnType::Long, nullable: false });
        let schema = Arc::new(ArrowSchema::new(columns.iter().map(|c| arrow_field(c).with_nullable(true)).collect::<Vec<Field>>()));
        let table = super::table::open_or_create(&url, &schema, &format!("{name}.tombstones"), "deletes by source position (funnel merge writer)", checkpoint_interval).await?;
        let mut latest: HashMap<String, Position> = HashMap::new();
        if table.version().unwrap_or(0) > 0 {
            let ctx = deltalake::datafusion::prelude::SessionContext::new();
            ctx.register_table("t", table.table_provider().await.context("reading tombstones")?)?;
            for batch in ctx.sql("SELECT * FROM t").await?.collect().await.context("reading tombstones")? {
                let keys: Vec<&dyn Array> = columns[..n_keys].iter().map(|c| batch.column_by_name(&c.name).map(|a| a.as_ref()).context("tombstone key column")).collect::<Result<_>>()?;
                let lsn = batch.column_by_name(LSN).context(LSN)?.as_primitive::<Int64Type>();
                let change = batch.column_by_name(CHANGE_LSN).context(CHANGE_LSN)?.as_primitive::<Int64Type>();
                for (row, key) in key_texts(&keys)?.into_iter().enumerate() {
                    let pos = (lsn.value(row), change.value(row));
                    let e = latest.entry(key).or_insert(pos);
                    *e = (*e).max(pos);
                }
            }
        }
        Ok(Self { table, columns, schema, latest, pending: vec![] })
    }

    /// Whether a delete of `key` at or after `pos` is known: a change at `pos` is stale.
    pub fn covers(&self, key: &str, pos: Position) -> bool {
        self.latest.get(key).is_some_and(|deleted| *deleted >= pos)
    }

    /// Remember a delete of the key with these values at `pos` (committed by `flush`).
    pub fn record(&mut self, key_values: &[&Value], pos: Position) {
        let key = key_text(key_values);
        if self.covers(&key, pos) {
            return;
        }
        self.latest.insert(key, pos);
        let mut row: Vec<Value> = key_values.iter().map(|v| (*v).clone()).collect();
        row.push(Value::Long(pos.0));
        row.push(Value::Long(pos.1));
        self.pending.push(row);
    }

    /// Commit the deletes recorded since the last flush.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut builders: Vec<ColumnBuilder> = self.columns.iter().map(|c| ColumnBuilder::new(&c.ty)).collect();
        for row in &self.pending {
            for (b, v) in builders.iter_mut().zip(row) {
                if !b.append(v) {
                    b.append_null();
                }
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), builders.iter_mut().map(ColumnBuilder::finish).collect()).context("tombstone batch")?;
        let mut writer = RecordBatchWriter::for_table(&self.table)?;
        writer.write(batch).await.context("writing tombstones")?;
        writer.flush_and_commit(&mut self.table).await.context("committing tombstones")?;
        self.pending.clear();
        Ok(())
    }
}
