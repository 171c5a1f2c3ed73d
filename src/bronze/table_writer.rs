//! One bronze table: CDC envelopes of one topic decoded into Arrow builders and committed
//! to Delta with the offsets they cover.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use apache_avro::Schema;
use deltalake::arrow::array::{ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;

use crate::lake::offsets;
use crate::avro::arrow::{arrow_field, columns_of_record, ColumnBuilder};
use crate::avro::value::{field, long};
use crate::avro::Column;

/// Metadata columns after the row's own columns.
pub const META_COLUMNS: &[&str] = &[
    "_op", "_ts_ms", "_source_lsn", "_source_change_lsn", "_source_tx_id", "_source_ts_ms", "_source_snapshot", "_source_load_id", "_kafka_partition", "_kafka_offset", "_kafka_timestamp",
];

/// The row columns of a funnel CDC envelope schema (the `after` record); Err says why not.
pub fn envelope_columns(envelope: &Schema) -> Result<Vec<Column>, String> {
    let not_envelope = || "not a CDC envelope (a record with a nullable record `before`)".to_string();
    let Schema::Record(rec) = envelope else { return Err(not_envelope()) };
    let after = rec.fields.iter().find(|f| f.name == "before").ok_or_else(not_envelope)?;
    let Schema::Union(u) = &after.schema else { return Err(not_envelope()) };
    let row = u.variants().iter().find(|s| matches!(s, Schema::Record(_))).ok_or_else(not_envelope)?;
    columns_of_record(row)
}

fn arrow_schema(columns: &[Column]) -> Arc<ArrowSchema> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields: Vec<Field> = columns.iter().map(|c| arrow_field(c).with_nullable(true)).collect();
    fields.extend([
        Field::new("_op", DataType::Utf8, false),
        Field::new("_ts_ms", DataType::Int64, false),
        Field::new("_source_lsn", DataType::Int64, false),
        Field::new("_source_change_lsn", DataType::Int64, false),
        Field::new("_source_tx_id", DataType::Int64, true),
        Field::new("_source_ts_ms", DataType::Int64, false),
        Field::new("_source_snapshot", DataType::Boolean, false),
        // The load id of a re-read (POST /load); null for the snapshot and for changes.
        Field::new("_source_load_id", DataType::Utf8, true),
        Field::new("_kafka_partition", DataType::Int32, false),
        Field::new("_kafka_offset", DataType::Int64, false),
        Field::new("_kafka_timestamp", ts, true),
    ]);
    Arc::new(ArrowSchema::new(fields))
}

struct Meta {
    op: StringBuilder,
    ts_ms: Int64Builder,
    lsn: Int64Builder,
    change_lsn: Int64Builder,
    tx_id: Int64Builder,
    source_ts: Int64Builder,
    snapshot: BooleanBuilder,
    load_id: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    kafka_ts: TimestampMicrosecondBuilder,
}

impl Meta {
    fn new() -> Self {
        Meta {
            op: StringBuilder::new(),
            ts_ms: Int64Builder::new(),
            lsn: Int64Builder::new(),
            change_lsn: Int64Builder::new(),
            tx_id: Int64Builder::new(),
            source_ts: Int64Builder::new(),
            snapshot: BooleanBuilder::new(),
            load_id: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            kafka_ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
        }
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.op.finish()),
            Arc::new(self.ts_ms.finish()),
            Arc::new(self.lsn.finish()),
            Arc::new(self.change_lsn.finish()),
            Arc::new(self.tx_id.finish()),
            Arc::new(self.source_ts.finish()),
            Arc::new(self.snapshot.finish()),
            Arc::new(self.load_id.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.kafka_ts.finish().with_timezone("UTC")),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("value is not a CDC envelope record")]
    NotEnvelope,
    #[error("envelope has neither before nor after image")]
    NoImage,
    #[error("column {0} does not match the table's type")]
    Column(String),
}

pub struct TableWriter {
    pub topic: String,
    pub table: DeltaTable,
    columns: Vec<Column>,
    /// Primary-key column names and the re-send filter over them.
    pk: Vec<String>,
    seen: super::dedup::Seen,
    schema: Arc<ArrowSchema>,
    cols: Vec<ColumnBuilder>,
    meta: Meta,
    pub rows: usize,
    /// Highest offset seen per partition since the last commit (rows, tombstones, dead letters).
    pub pending: BTreeMap<i32, i64>,
}

impl TableWriter {
    /// Open the table at `url`, creating it with `columns` when it does not exist.
    pub async fn open(topic: &str, url: url::Url, columns: Vec<Column>, pk: Vec<String>, checkpoint_interval: u32) -> Result<Self> {
        let schema = arrow_schema(&columns);
        let table = crate::lake::table::open_or_create(&url, &schema, topic, &format!("bronze: CDC envelopes of topic {topic}"), checkpoint_interval).await?;
        let cols = columns.iter().map(|c| ColumnBuilder::new(&c.ty)).collect();
        let seen = super::dedup::Seen::load(&table, &pk).await?;
        Ok(Self { topic: topic.into(), table, columns, pk, seen, schema, cols, meta: Meta::new(), rows: 0, pending: BTreeMap::new() })
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Append one decoded envelope. On error nothing was appended. Returns false when the
    /// event was re-sent (its source position was already written for its key): skipped.
    pub fn append(&mut self, v: &Value, partition: i32, offset: i64, kafka_ts_ms: Option<i64>) -> Result<bool, RowError> {
        let Value::Record(env) = v else { return Err(RowError::NotEnvelope) };
        let image = match (field(env, "after"), field(env, "before")) {
            (Some(Value::Record(r)), _) => r,
            (_, Some(Value::Record(r))) => r,
            _ => return Err(RowError::NoImage),
        };
        let Some(Value::Record(source)) = field(env, "source") else { return Err(RowError::NotEnvelope) };
        // Check every column first so that a bad record leaves the builders untouched.
        let values: Vec<&Value> = self.columns.iter().map(|c| field(image, &c.name).unwrap_or(&Value::Null)).collect();
        if let Some(i) = self.cols.iter().zip(&values).position(|(b, v)| !b.accepts(v)) {
            return Err(RowError::Column(self.columns[i].name.clone()));
        }
        let key: Vec<&Value> = self.pk.iter().map(|k| field(image, k).unwrap_or(&Value::Null)).collect();
        let pos = (long(field(source, "lsn")).unwrap_or(0), long(field(source, "change_lsn")).unwrap_or(0));
        if !self.seen.admit(crate::avro::key::key_text(&key), pos) {
            self.note_offset(partition, offset);
            return Ok(false);
        }
        for (b, v) in self.cols.iter_mut().zip(values) {
            b.append(v);
        }
        let m = &mut self.meta;
        m.op.append_value(match field(env, "op") {
            Some(Value::String(s)) => s.as_str(),
            _ => "?",
        });
        m.ts_ms.append_value(long(field(env, "ts_ms")).unwrap_or(0));
        m.lsn.append_value(long(field(source, "lsn")).unwrap_or(0));
        m.change_lsn.append_value(long(field(source, "change_lsn")).unwrap_or(0));
        m.tx_id.append_option(long(field(source, "txId")));
        m.source_ts.append_value(long(field(source, "ts_ms")).unwrap_or(0));
        m.snapshot.append_value(matches!(field(source, "snapshot"), Some(Value::Boolean(true))));
        m.load_id.append_option(crate::avro::value::text(field(source, "load_id")));
        m.partition.append_value(partition);
        m.offset.append_value(offset);
        m.kafka_ts.append_option(kafka_ts_ms.map(|t| t * 1000));
        self.rows += 1;
        self.note_offset(partition, offset);
        Ok(true)
    }

    /// Record that `offset` was consumed without a row (tombstone, dead letter).
    pub fn note_offset(&mut self, partition: i32, offset: i64) {
        let e = self.pending.entry(partition).or_insert(offset);
        *e = (*e).max(offset);
    }

    /// Write buffered rows and commit them with their offsets in one Delta version.
    /// Returns the rows committed.
    pub async fn flush(&mut self, processor: &str, target_file_size: u64) -> Result<usize> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let mut arrays: Vec<ArrayRef> = self.cols.iter_mut().map(|b| b.finish()).collect();
        arrays.extend(self.meta.finish());
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).context("assembling record batch")?;
        let offsets: Vec<(i32, i64)> = self.pending.iter().map(|(p, o)| (*p, *o)).collect();
        let props = CommitProperties::default().with_application_transactions(offsets::transactions(processor, &self.topic, &offsets));
        let mut writer = RecordBatchWriter::for_table(&self.table)?.with_commit_properties(props).with_target_file_size(target_file_size);
        if batch.num_rows() > 0 {
            writer.write(batch).await.context("writing parquet")?;
        }
        writer.flush_and_commit(&mut self.table).await.with_context(|| format!("committing to bronze table of {}", self.topic))?;
        let rows = self.rows;
        self.rows = 0;
        self.pending.clear();
        Ok(rows)
    }
}
