//! Table metadata from the Postgres catalog, and the Avro key and envelope schemas CDC
//! derives from it (the same schemas `schemas/cdc/` holds for olist).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value as Json};
use tokio_postgres::Client;

use crate::avro::{Column, ColumnType};

#[derive(Clone, Debug)]
pub struct TableMeta {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// Postgres type name of each column (for ORDER BY collation).
    pub pg_types: Vec<String>,
    /// Indexes into `columns` of the primary key, in key order.
    pub pk: Vec<usize>,
}

impl TableMeta {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    pub fn topic(&self, prefix: &str) -> String {
        format!("{prefix}.{}.{}", self.schema, self.name)
    }
    /// ORDER BY expression list of the primary key: text compared bytewise ("C"), so that
    /// Rust can compare keys the same way when it resumes a snapshot.
    pub fn pk_order(&self) -> String {
        self.pk
            .iter()
            .map(|i| {
                let name = &self.columns[*i].name;
                if matches!(self.pg_types[*i].as_str(), "text" | "varchar" | "bpchar" | "name") {
                    format!("\"{name}\" COLLATE \"C\"")
                } else {
                    format!("\"{name}\"")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn key_columns(&self) -> Vec<Column> {
        self.pk.iter().map(|i| Column { nullable: false, ..self.columns[*i].clone() }).collect()
    }

    /// Avro schema of the key record.
    pub fn key_schema(&self, prefix: &str) -> Json {
        json!({
            "type": "record",
            "name": "Key",
            "namespace": self.topic(prefix),
            "fields": self.key_columns().iter().map(Column::avro_field).collect::<Vec<_>>(),
        })
    }

    /// Avro schema of the Debezium-style envelope.
    pub fn value_schema(&self, prefix: &str) -> Json {
        let row = json!({
            "type": "record",
            "name": "Value",
            "fields": self.columns.iter().map(Column::avro_field).collect::<Vec<_>>(),
        });
        json!({
            "type": "record",
            "name": "Envelope",
            "namespace": self.topic(prefix),
            "doc": format!("Change events of {} (Debezium-style envelope)", self.qualified()),
            "fields": [
                {"name": "before", "type": ["null", row], "default": null, "doc": "Row before the change (updates, deletes)"},
                {"name": "after", "type": ["null", "Value"], "default": null, "doc": "Row after the change (reads, inserts, updates)"},
                {"name": "op", "type": "string", "doc": "r = snapshot read, c = insert, u = update, d = delete"},
                {"name": "ts_ms", "type": "long", "doc": "When funnel produced the event"},
                {"name": "source", "type": source_schema()},
            ]
        })
    }
}

/// The `source` block: where a change comes from. (lsn, change_lsn) identifies a change
/// uniquely and orders the changes of one key, so a re-sent event is recognisable.
pub fn source_schema() -> Json {
    json!({
        "type": "record",
        "name": "Source",
        "namespace": "funnel.cdc",
        "fields": [
            {"name": "connector", "type": "string"},
            {"name": "db", "type": "string"},
            {"name": "schema", "type": "string"},
            {"name": "table", "type": "string"},
            {"name": "lsn", "type": "long", "doc": "Commit LSN of the transaction; for snapshot reads the slot's consistent point"},
            {"name": "change_lsn", "type": "long", "doc": "LSN of this change inside its transaction; 0 for snapshot reads"},
            {"name": "txId", "type": ["null", "long"], "default": null},
            {"name": "ts_ms", "type": "long", "doc": "Commit time (snapshot: snapshot start)"},
            {"name": "snapshot", "type": "boolean"},
            {"name": "load_id", "type": ["null", "string"], "default": null, "doc": "Set on the reads of an ad-hoc re-snapshot (the data loader's POST /load): its load id. Null for the connector's own snapshot and for changes, so consumers can count a table's rows once"},
        ]
    })
}

/// Columns and primary key of `schema.table`.
pub async fn table_meta(client: &Client, schema: &str, table: &str) -> Result<TableMeta> {
    let rel = format!("\"{schema}\".\"{table}\"");
    let rows = client
        .query(
            "SELECT a.attname::text, t.typname::text, a.attnotnull,
                    information_schema._pg_numeric_precision(a.atttypid, a.atttypmod)::int,
                    information_schema._pg_numeric_scale(a.atttypid, a.atttypmod)::int,
                    coalesce((SELECT k.n FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(att, n) WHERE k.att = a.attnum), 0)::int
               FROM pg_attribute a
               JOIN pg_type t ON t.oid = a.atttypid
               LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&rel],
        )
        .await
        .with_context(|| format!("reading catalog for {rel}"))?;
    let mut columns = vec![];
    let mut pg_types = vec![];
    let mut pk: Vec<(i32, usize)> = vec![];
    for (i, r) in rows.iter().enumerate() {
        let typname: String = r.get(1);
        let pk_pos: i32 = r.get(5);
        pg_types.push(typname.clone());
        columns.push(Column { name: r.get(0), ty: ColumnType::from_pg(&typname, r.get(3), r.get(4)), nullable: !r.get::<_, bool>(2) });
        if pk_pos > 0 {
            pk.push((pk_pos, i));
        }
    }
    if pk.is_empty() {
        bail!("table {rel} has no primary key; CDC keys records by primary key");
    }
    pk.sort();
    Ok(TableMeta { schema: schema.into(), name: table.into(), columns, pg_types, pk: pk.into_iter().map(|x| x.1).collect() })
}

/// Tables of the given schemas, sorted by name.
pub async fn tables_in(client: &Client, schemas: &[String]) -> Result<Vec<TableMeta>> {
    let rows = client
        .query(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables
              WHERE table_schema = ANY($1) AND table_type = 'BASE TABLE' ORDER BY 1, 2",
            &[&schemas],
        )
        .await?;
    let mut out = vec![];
    for r in rows {
        out.push(table_meta(client, r.get(0), r.get(1)).await?);
    }
    Ok(out)
}
