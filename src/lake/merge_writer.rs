//! A Delta table kept equal to the latest state per key: buffered upserts and deletes are
//! reduced to the last change per key, then applied with one Delta MERGE whose commit also
//! stores the consumed offsets (application transactions), so a batch lands exactly once.
//!
//! Positioned tables (silver, from CDC) also keep each row's source position and apply a
//! change only when it is newer than the row's: a re-sent or late event never overwrites a
//! newer one, and re-snapshotting the source (`/load`) is idempotent. Their deletes are
//! remembered by position too (`tombstones`), so an older change that arrives after a delete
//! never brings the row back.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use deltalake::arrow::array::{ArrayRef, BooleanBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;

use super::offsets;
use super::tombstones::Tombstones;
use crate::avro::key::key_text;
use crate::avro::arrow::{arrow_field, ColumnBuilder};
use crate::avro::value::field;
use crate::avro::{Column, ColumnType};
use crate::cdc::change::Position;

pub const LSN: &str = "_source_lsn";
pub const CHANGE_LSN: &str = "_source_change_lsn";
const DELETE: &str = "_delete";

struct Pending {
    values: Vec<Value>,
    delete: bool,
    pos: Option<Position>,
}

pub struct MergeWriter {
    pub topic: String,
    pub table: DeltaTable,
    /// The row's columns (for positioned tables followed by the two position columns).
    columns: Vec<Column>,
    key: Vec<String>,
    positioned: bool,
    schema: Arc<ArrowSchema>,
    /// One builder per row column, only to check values before buffering them.
    check: Vec<ColumnBuilder>,
    rows: BTreeMap<String, Pending>,
    /// Highest offset consumed per partition since the last commit.
    pub offsets: BTreeMap<i32, i64>,
    /// Positioned tables: the deletes, by position.
    tombstones: Option<Tombstones>,
}

impl MergeWriter {
    /// Open (or create) the table at `url` for rows with `columns`, merged on `key`.
    pub async fn open(topic: &str, url: &url::Url, comment: &str, mut columns: Vec<Column>, key: Vec<String>, positioned: bool, checkpoint_interval: u32) -> Result<Self> {
        if let Some(k) = key.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
            anyhow::bail!("key column {k} is not a column of {topic}");
        }
        if positioned {
            columns.push(Column { name: LSN.into(), ty: ColumnType::Long, nullable: false });
            columns.push(Column { name: CHANGE_LSN.into(), ty: ColumnType::Long, nullable: false });
        }
        let schema = Arc::new(ArrowSchema::new(columns.iter().map(|c| arrow_field(c).with_nullable(true)).collect::<Vec<Field>>()));
        let table = super::table::open_or_create(url, &schema, topic, comment, checkpoint_interval).await?;
        let check = columns.iter().map(|c| ColumnBuilder::new(&c.ty)).collect();
        let tombstones = if positioned {
            let key_columns = key.iter().filter_map(|k| columns.iter().find(|c| &c.name == k).cloned()).collect();
            Some(Tombstones::open(url, topic, key_columns, checkpoint_interval).await?)
        } else {
            None
        };
        Ok(Self { topic: topic.to_string(), table, columns, key, positioned, schema, check, rows: BTreeMap::new(), offsets: BTreeMap::new(), tombstones })
    }

    pub fn buffered(&self) -> usize {
        self.rows.len()
    }

    pub fn note_offset(&mut self, partition: i32, offset: i64) {
        let e = self.offsets.entry(partition).or_insert(offset);
        *e = (*e).max(offset);
    }

    /// Buffer the row (a record's fields) as the key's latest state, or its deletion.
    /// `Err` names a column whose value does not fit the table (nothing is buffered then).
    pub fn change(&mut self, row: &[(String, Value)], delete: bool, pos: Option<Position>, partition: i32, offset: i64) -> Result<(), String> {
        let n = self.columns.len() - if self.positioned { 2 } else { 0 };
        let mut values: Vec<Value> = self.columns[..n].iter().map(|c| field(row, &c.name).cloned().unwrap_or(Value::Null)).collect();
        for ((c, b), v) in self.columns.iter().zip(&self.check).zip(&values) {
            if !delete && !b.accepts(v) {
                return Err(format!("column {} does not fit the table's type {:?}", c.name, c.ty));
            }
        }
        let key_values: Vec<&Value> = self.key.iter().map(|k| field(row, k).unwrap_or(&Value::Null)).collect();
        if key_values.iter().any(|v| matches!(v, Value::Null)) {
            return Err(format!("row without its key ({})", self.key.join(", ")));
        }
        let k = key_text(&key_values);
        let stale_in_batch = matches!((pos, self.rows.get(&k).and_then(|r| r.pos)), (Some(p), Some(prev)) if prev >= p);
        // Only a non-delete is stale behind a tombstone: a delete replayed after a crash between
        // the tombstone commit and the merge must still reach the table (the MERGE's position
        // check keeps it from touching a newer row).
        let deleted_since = !delete && matches!((pos, &self.tombstones), (Some(p), Some(t)) if t.covers(&k, p));
        if stale_in_batch || deleted_since {
            self.note_offset(partition, offset);
            return Ok(());
        }
        if let (true, Some(p), Some(t)) = (delete, pos, self.tombstones.as_mut()) {
            t.record(&key_values, p);
        }
        if let Some(p) = pos {
            values.push(Value::Long(p.0));
            values.push(Value::Long(p.1));
        }
        self.rows.insert(k, Pending { values, delete, pos });
        self.note_offset(partition, offset);
        Ok(())
    }

    /// Merge the buffered changes and commit them with the offsets they cover (one Delta
    /// version). Returns the number of keys merged.
    pub async fn flush(&mut self, processor: &str) -> Result<usize> {
        if self.offsets.is_empty() {
            return Ok(0);
        }
        let offsets: Vec<(i32, i64)> = self.offsets.iter().map(|(p, o)| (*p, *o)).collect();
        let props = CommitProperties::default().with_application_transactions(offsets::transactions(processor, &self.topic, &offsets));
        // Deletes are remembered before they are applied: a crash in between re-applies them.
        if let Some(t) = self.tombstones.as_mut() {
            t.flush().await.with_context(|| format!("tombstones of {}", self.topic))?;
        }
        let merged = self.rows.len();
        let before = self.table.version();
        if merged > 0 {
            let batch = self.source_batch()?;
            let df = SessionContext::new().read_batch(batch).context("merge source")?;
            let on = self.key.iter().map(|k| format!("t.{k} = s.{k}")).collect::<Vec<_>>().join(" AND ");
            let newer = if self.positioned { format!("(s.{LSN} > t.{LSN} OR (s.{LSN} = t.{LSN} AND s.{CHANGE_LSN} > t.{CHANGE_LSN}))") } else { "true".to_string() };
            let names: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
            let non_key: Vec<String> = names.iter().filter(|n| !self.key.contains(n)).cloned().collect();
            let (table, metrics) = self
                .table
                .clone()
                .merge(df, on)
                .with_source_alias("s")
                .with_target_alias("t")
                .when_matched_delete(|d| d.predicate(format!("s.{DELETE} AND {newer}")))?
                .when_matched_update(|u| non_key.iter().fold(u.predicate(format!("NOT s.{DELETE} AND {newer}")), |u, c| u.update(c.as_str(), format!("s.{c}"))))?
                .when_not_matched_insert(|i| names.iter().fold(i.predicate(format!("NOT s.{DELETE}")), |i, c| i.set(c.as_str(), format!("s.{c}"))))?
                .with_commit_properties(props.clone())
                .await
                .with_context(|| format!("merging into the table of {}", self.topic))?;
            tracing::debug!(topic = self.topic, inserted = metrics.num_target_rows_inserted, updated = metrics.num_target_rows_updated, deleted = metrics.num_target_rows_deleted, "merged");
            self.table = table;
        }
        // A merge that changed nothing writes no version: commit the offsets by themselves.
        if self.table.version() == before {
            let mut writer = RecordBatchWriter::for_table(&self.table)?.with_commit_properties(props);
            writer.flush_and_commit(&mut self.table).await.with_context(|| format!("committing offsets of {}", self.topic))?;
        }
        self.rows.clear();
        self.offsets.clear();
        Ok(merged)
    }

    fn source_batch(&self) -> Result<RecordBatch> {
        let mut builders: Vec<ColumnBuilder> = self.columns.iter().map(|c| ColumnBuilder::new(&c.ty)).collect();
        let mut delete = BooleanBuilder::new();
        for r in self.rows.values() {
            for (b, v) in builders.iter_mut().zip(&r.values) {
                if !b.append(v) {
                    b.append_null();
                }
            }
            delete.append_value(r.delete);
        }
        let mut arrays: Vec<ArrayRef> = builders.iter_mut().map(|b| b.finish()).collect();
        arrays.push(Arc::new(delete.finish()));
        let mut fields: Vec<Field> = self.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DELETE, DataType::Boolean, false));
        RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), arrays).context("assembling merge batch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ids(w: &MergeWriter) -> Vec<String> {
        let ctx = SessionContext::new();
        let t = DeltaTable::try_from_url(w.table.table_url().clone()).await.unwrap();
        ctx.register_table("t", t.table_provider().await.unwrap()).unwrap();
        let batches = ctx.sql("SELECT id FROM t ORDER BY id").await.unwrap().collect().await.unwrap();
        crate::lake::query::to_json(&batches).unwrap().into_iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    }

    fn row(id: &str) -> Vec<(String, Value)> {
        vec![("id".into(), Value::String(id.into())), ("v".into(), Value::Union(1, Box::new(Value::Long(1))))]
    }

    /// A re-sent insert older than the delete that removed its row — in a later batch, or after a
    /// restart of the writer — does not bring the row back; a newer insert does.
    #[tokio::test]
    async fn a_stale_insert_after_a_delete_does_not_resurrect_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let lake = crate::lake::location::Lake::local(dir.path()).unwrap();
        let url = lake.table("silver", "t");
        let columns = || vec![Column { name: "id".into(), ty: ColumnType::String, nullable: false }, Column { name: "v".into(), ty: ColumnType::Long, nullable: true }];
        let open = || MergeWriter::open("t", &url, "test", columns(), vec!["id".into()], true, 10);
        let mut w = open().await.unwrap();
        w.change(&row("a"), false, Some((10, 10)), 0, 0).unwrap();
        w.change(&row("b"), false, Some((10, 11)), 0, 1).unwrap();
        w.flush("test").await.unwrap();
        w.change(&row("a"), true, Some((30, 30)), 0, 2).unwrap();
        w.flush("test").await.unwrap();
        assert_eq!(ids(&w).await, ["b"]);
        // CDC re-sends the insert (its original position) after the delete was applied.
        w.change(&row("a"), false, Some((10, 10)), 0, 3).unwrap();
        w.flush("test").await.unwrap();
        assert_eq!(ids(&w).await, ["b"], "a stale insert brought a deleted row back");
        // The same after a restart: the tombstone is read back from its table.
        let mut w = open().await.unwrap();
        w.change(&row("a"), false, Some((20, 1)), 0, 4).unwrap();
        w.flush("test").await.unwrap();
        assert_eq!(ids(&w).await, ["b"], "a stale insert after a restart brought a deleted row back");
        // A change newer than the delete is a new life of the key.
        w.change(&row("a"), false, Some((40, 1)), 0, 5).unwrap();
        w.flush("test").await.unwrap();
        assert_eq!(ids(&w).await, ["a", "b"]);
        // A crash after the tombstone of a delete was committed but before its merge: the delete
        // is read again and must still remove the row.
        w.change(&row("b"), false, Some((50, 1)), 0, 6).unwrap();
        w.flush("test").await.unwrap();
        let mut t = Tombstones::open(&url, "t", vec![columns()[0].clone()], 10).await.unwrap();
        t.record(&[&Value::String("b".into())], (60, 1));
        t.flush().await.unwrap();
        let mut w = open().await.unwrap();
        w.change(&row("b"), true, Some((60, 1)), 0, 7).unwrap();
        w.flush("test").await.unwrap();
        assert_eq!(ids(&w).await, ["a"], "a replayed delete was skipped as covered by its own tombstone");
        // The tombstones are hidden from the SQL catalog.
        let catalog = crate::lake::query::catalog(&lake).await.unwrap();
        assert!(catalog.ctx.table_exist("silver_t").unwrap() && catalog.ctx.catalog_names().len() == 1);
        let tables = crate::lake::query::rows(&catalog.ctx, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").await.unwrap();
        assert_eq!(tables.len(), 1, "{tables:?}");
    }
}
