//! Streaming from the slot: whole transactions decoded from pgoutput, emitted in one Kafka
//! transaction with the state that records their commit LSN; the slot advances only after
//! the broker acknowledged. A transaction at or below the recorded commit LSN was emitted
//! before a crash and is skipped, so a re-read after a restart sends nothing twice.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::events::{Row, SourceInfo, TableCodec};
use super::pgoutput::{self, format_lsn, parse_lsn, Cell, PgMessage, Relation, Tuple};
use super::state::CdcState;
use super::Connector;
use crate::kafka::batch_producer::OutRecord;
use crate::runtime::metrics::metrics;

/// Which changes to emit while draining an old slot (resuming a snapshot): only those of
/// rows the earlier snapshot already covered; the new snapshot covers the rest.
pub type Filter<'a> = &'a (dyn Fn(&TableCodec, &Row) -> bool + Sync);

pub struct Poll {
    /// Transactions emitted by this poll.
    pub transactions: usize,
    pub events: usize,
    /// Nothing left to read (below `upto`, when given).
    pub caught_up: bool,
}

struct Txn {
    commit_lsn: u64,
    xid: u32,
    out: Vec<OutRecord>,
}

/// Read up to `max_changes` from `slot` (and not past `upto`), emit, advance the slot.
pub async fn poll(conn: &Connector, client: &Client, slot: &str, codecs: &HashMap<String, TableCodec>, state: &mut CdcState, upto: Option<u64>, filter: Option<Filter<'_>>) -> Result<Poll> {
    let t0 = Instant::now();
    // The flush position, not the insert position: decoding only reaches flushed WAL, and a
    // commit written but not yet flushed must not be skipped by the heartbeat below.
    let wal_before: String = client.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]).await?.get(0);
    let upto_text = upto.map(format_lsn);
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, $2::text::pg_lsn, $3, 'proto_version', '1', 'publication_names', $4)",
            &[&slot, &upto_text, &(conn.cfg.max_changes as i32), &conn.cfg.publication],
        )
        .await
        .with_context(|| format!("reading changes from slot {slot}"))?;
    let n_rows = rows.len();

    let mut relations: HashMap<u32, Relation> = HashMap::new();
    let mut current: Option<(Txn, i64)> = None;
    let mut done: Vec<Txn> = vec![];
    let mut last_end: Option<u64> = None;
    for r in &rows {
        let change_lsn = parse_lsn(r.get::<_, &str>(0)).unwrap_or(0);
        let data: &[u8] = r.get(1);
        match pgoutput::decode(data).with_context(|| format!("decoding pgoutput at {}", format_lsn(change_lsn)))? {
            PgMessage::Begin { final_lsn, commit_ts_us, xid } => current = Some((Txn { commit_lsn: final_lsn, xid, out: vec![] }, commit_ts_us / 1000)),
            PgMessage::Commit { commit_lsn, end_lsn, .. } => {
                if let Some((txn, _)) = current.take() {
                    debug_assert_eq!(txn.commit_lsn, commit_lsn);
                    if commit_lsn > state.last_commit_lsn {
                        done.push(txn);
                    } else {
                        metrics().duplicates_skipped.with_label_values(&[&conn.processor, "wal"]).inc();
                    }
                }
                last_end = Some(end_lsn);
            }
            PgMessage::Relation(rel) => {
                relations.insert(rel.id, rel);
            }
            PgMessage::Insert { rel, new } => change(conn, codecs, &relations, &mut current, rel, "c", None, Some(new), change_lsn, filter)?,
            PgMessage::Update { rel, old, new } => change(conn, codecs, &relations, &mut current, rel, "u", old, Some(new), change_lsn, filter)?,
            PgMessage::Delete { rel, old } => change(conn, codecs, &relations, &mut current, rel, "d", Some(old), None, change_lsn, filter)?,
            PgMessage::Truncate { rels } => {
                let names: Vec<String> = rels.iter().filter_map(|r| relations.get(r)).map(|r| format!("{}.{}", r.schema, r.name)).collect();
                metrics().errors.with_label_values(&[&conn.processor, "truncate"]).inc();
                tracing::error!(tables = ?names, "TRUNCATE is not propagated as events; re-snapshot with `funnel cdc reset` to resync these tables");
            }
            PgMessage::Ignored(_) => {}
        }
    }

    let transactions = done.len();
    let events: usize = done.iter().map(|t| t.out.len()).sum();
    if let Some(last) = done.last() {
        state.last_commit_lsn = last.commit_lsn;
        let mut out: Vec<OutRecord> = vec![];
        for t in &mut done {
            for rec in &t.out {
                metrics().records_out.with_label_values(&[&conn.processor, &rec.topic]).inc();
            }
            tracing::debug!(xid = t.xid, commit_lsn = %format_lsn(t.commit_lsn), events = t.out.len(), "transaction");
            out.append(&mut t.out);
        }
        conn.emit(out, state).await.context("emitting change events")?;
        metrics().batch_seconds.with_label_values(&[&conn.processor]).observe(t0.elapsed().as_secs_f64());
    }
    // Only now that the broker has the events may the slot let go of their WAL. With nothing
    // of ours in the WAL, advance to where it stood before the read: quiet tables must not
    // pin the WAL of a busy database (the heartbeat).
    let target = match (last_end, upto) {
        (Some(end), _) => Some(end),
        (None, Some(_)) => None,
        (None, None) => parse_lsn(&wal_before),
    };
    if let Some(target) = target {
        advance(client, slot, target).await?;
    }
    report_lag(conn, client, slot).await;
    Ok(Poll { transactions, events, caught_up: n_rows == 0 || (n_rows as i64) < conn.cfg.max_changes as i64 })
}

#[allow(clippy::too_many_arguments)]
fn change(
    conn: &Connector,
    codecs: &HashMap<String, TableCodec>,
    relations: &HashMap<u32, Relation>,
    current: &mut Option<(Txn, i64)>,
    rel: u32,
    op: &str,
    old: Option<Tuple>,
    new: Option<Tuple>,
    change_lsn: u64,
    filter: Option<Filter<'_>>,
) -> Result<()> {
    let relation = relations.get(&rel).with_context(|| format!("change for unknown relation {rel}"))?;
    let qualified = format!("{}.{}", relation.schema, relation.name);
    let Some(codec) = codecs.get(&qualified) else {
        metrics().errors.with_label_values(&[&conn.processor, "uncaptured_table"]).inc();
        tracing::warn!(table = qualified, "change to a table that was not captured at snapshot time; run `funnel cdc reset` to include it");
        return Ok(());
    };
    let (txn, ts_ms) = current.as_mut().context("change outside a transaction")?;
    let old_row = old.map(|t| to_row(codec, relation, &t, None));
    let new_row = new.map(|t| to_row(codec, relation, &t, old_row.as_ref()));
    let key_row = new_row.as_ref().or(old_row.as_ref()).context("change without a row")?;
    if let Some(f) = filter {
        if !f(codec, key_row) {
            return Ok(());
        }
    }
    // Under REPLICA IDENTITY DEFAULT the old row holds only key columns: no before-image then.
    let before = old_row.as_ref().filter(|r| codec.is_complete(r));
    let src = SourceInfo { db: &conn.db, lsn: txn.commit_lsn, change_lsn, tx_id: Some(txn.xid), ts_ms: *ts_ms, snapshot: false, load_id: None };
    codec.event(op, key_row, before, new_row.as_ref(), &src, &mut txn.out)
}

/// Tuple in relation column order → row in catalog column order. Unchanged TOAST values
/// are taken from the old row (REPLICA IDENTITY FULL sends it).
fn to_row(codec: &TableCodec, relation: &Relation, tuple: &Tuple, old: Option<&Row>) -> Row {
    let mut row: Row = vec![None; codec.meta.columns.len()];
    for (j, name) in relation.columns.iter().enumerate() {
        let Some(i) = codec.meta.columns.iter().position(|c| &c.name == name) else { continue };
        row[i] = match tuple.get(j) {
            Some(Cell::Text(s)) => Some(s.clone()),
            Some(Cell::Unchanged) => old.and_then(|o| o[i].clone()),
            _ => None,
        };
    }
    row
}

async fn advance(client: &Client, slot: &str, target: u64) -> Result<()> {
    let confirmed: Option<String> = client
        .query_opt("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await?
        .and_then(|r| r.get(0));
    if confirmed.as_deref().and_then(parse_lsn).is_some_and(|c| target > c) {
        client
            .execute("SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&slot, &format_lsn(target)])
            .await
            .with_context(|| format!("advancing slot {slot} to {}", format_lsn(target)))?;
    }
    Ok(())
}

async fn report_lag(conn: &Connector, client: &Client, slot: &str) {
    if let Ok(Some(r)) = client
        .query_opt("SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await
    {
        let lag: Option<i64> = r.get(0);
        metrics().lag.with_label_values(&[&conn.processor, "wal_bytes"]).set(lag.unwrap_or(0));
    }
}
