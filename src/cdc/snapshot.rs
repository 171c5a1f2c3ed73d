//! The consistent snapshot: every captured table read in primary-key order inside the
//! slot's exported snapshot, in chunks; each chunk and the cursor after it commit together,
//! so a restart resumes after the last committed key instead of starting over.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_postgres::{Client, SimpleQueryMessage};

use super::events::{Row, SourceInfo, TableCodec};
use super::state::CdcState;
use super::Connector;
use crate::runtime::{health, metrics::metrics, shutdown};

/// Quote a value as a SQL literal (standard_conforming_strings: only quotes need doubling).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn chunk_query(codec: &TableCodec, after: Option<&[String]>, limit: usize) -> String {
    let m = &codec.meta;
    let order = m.pk_order();
    let filter = match after {
        None => String::new(),
        Some(pk) => format!(" WHERE ({order}) > ({})", pk.iter().map(|v| literal(v)).collect::<Vec<_>>().join(", ")),
    };
    format!("SELECT * FROM \"{}\".\"{}\"{filter} ORDER BY {order} LIMIT {limit}", m.schema, m.name)
}

/// One chunk of rows after `after`, in key order, as Postgres text.
async fn read_chunk(snap: &Client, codec: &TableCodec, after: Option<&[String]>, limit: usize) -> Result<Vec<Row>> {
    let sql = chunk_query(codec, after, limit);
    let msgs = snap.simple_query(&sql).await.with_context(|| format!("snapshot read of {}", codec.meta.qualified()))?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect())
}

/// Read all remaining tables of the snapshot through `snap` (a connection inside the
/// exported snapshot), emitting `r` events in chunks with the cursor in `state`.
pub async fn run(conn: &Connector, snap: &Client, codecs: &HashMap<String, TableCodec>, state: &mut CdcState) -> Result<()> {
    let started_ms = chrono::Utc::now().timestamp_millis();
    let estimate: i64 = snap
        .query_one("SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class WHERE oid = ANY($1::text[]::regclass[])", &[&state.tables])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    let bar = ProgressBar::new(estimate.max(0) as u64);
    bar.set_style(ProgressStyle::with_template("snapshot [{bar:30}] {pos}/~{len} rows {per_sec} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let pending: Vec<String> = state.tables.iter().filter(|t| !state.tables_done.contains(t)).cloned().collect();
    for table in pending {
        let codec = codecs.get(&table).with_context(|| format!("table {table} disappeared from the catalog during the snapshot"))?;
        let mut cursor = if state.current_table.as_deref() == Some(table.as_str()) { state.last_pk.clone() } else { None };
        bar.set_message(table.clone());
        health::report(&conn.processor, "snapshot", format!("{table} after {cursor:?}"));
        // Reading chunk n+1 from Postgres overlaps with producing chunk n to the broker.
        let mut rows = read_chunk(snap, codec, cursor.as_deref(), conn.cfg.snapshot_chunk).await?;
        while !rows.is_empty() {
            if shutdown::requested() {
                anyhow::bail!("shutdown during snapshot (resumes at {table} after {cursor:?})");
            }
            let t0 = Instant::now();
            let src = SourceInfo { db: &conn.db, lsn: state.consistent_lsn, change_lsn: 0, tx_id: None, ts_ms: started_ms, snapshot: true, load_id: conn.cfg.load_id.as_deref() };
            let mut out = Vec::with_capacity(rows.len() + 1);
            for row in &rows {
                codec.event("r", row, None, Some(row), &src, &mut out)?;
            }
            let last = codec.pk_text(rows.last().expect("non-empty"));
            state.current_table = Some(table.clone());
            state.last_pk = Some(last.clone());
            let more = rows.len() == conn.cfg.snapshot_chunk;
            let (sent, next) = tokio::join!(conn.emit(out, state), async {
                if more {
                    read_chunk(snap, codec, Some(&last), conn.cfg.snapshot_chunk).await
                } else {
                    Ok(vec![])
                }
            });
            sent.with_context(|| format!("emitting snapshot chunk of {table}"))?;
            metrics().records_out.with_label_values(&[&conn.processor, &codec.topic]).inc_by(rows.len() as u64);
            metrics().batch_seconds.with_label_values(&[&conn.processor]).observe(t0.elapsed().as_secs_f64());
            bar.inc(rows.len() as u64);
            cursor = Some(last);
            rows = next?;
        }
        state.tables_done.push(table.clone());
        state.current_table = None;
        state.last_pk = None;
        conn.emit(vec![], state).await?;
        tracing::info!(table, "snapshot of table complete");
    }
    bar.finish_and_clear();
    Ok(())
}
