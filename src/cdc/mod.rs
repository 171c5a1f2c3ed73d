//! `funnel run cdc`: Postgres logical replication into one topic per table.
//!
//! Start-up decides between three paths, from the state committed in `_funnel.cdc.state`:
//! - no state: create a slot with an exported snapshot, snapshot every table, then stream;
//! - a snapshot was interrupted: create a new slot (new snapshot, consistent point L2), drain
//!   the old slot up to L2 emitting only changes of rows the first snapshot already covered,
//!   drop it, and continue the snapshot after the last committed key in the new snapshot —
//!   nothing missed, nothing emitted twice;
//! - streaming: continue from the slot, skipping transactions already emitted.

pub mod catalog;
pub mod change;
pub mod events;
pub mod pgoutput;
pub mod snapshot;
pub mod state;
pub mod stream;
pub mod walsender;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use apache_avro::Schema;

use crate::avro::serialization;
use crate::kafka::admin::{ensure_topics, TopicSpec};
use crate::kafka::batch_producer::{BatchProducer, Delivery, OutRecord};
use crate::olist::db;
use crate::registry::{subject, RegistryClient};
use crate::runtime::{health, shutdown};
use events::TableCodec;
use state::{CdcState, Phase};

#[derive(clap::Args, Clone, Debug)]
pub struct CdcConfig {
    /// Connector name: key of its progress in _funnel.cdc.state and base of its slot names.
    #[arg(long = "cdc-name", default_value = "olist")]
    pub name: String,
    /// Topic prefix: tables go to <prefix>.<schema>.<table>.
    #[arg(long = "cdc-topic-prefix", default_value = "olist")]
    pub topic_prefix: String,
    /// Source schemas to capture.
    #[arg(long = "cdc-schemas", value_delimiter = ',', default_value = "ecommerce,marketing")]
    pub schemas: Vec<String>,
    /// Publication to create (if missing) and read.
    #[arg(long = "cdc-publication", default_value = "funnel_olist")]
    pub publication: String,
    /// Capture only these tables (schema.table); default: every table of --cdc-schemas.
    #[arg(long = "cdc-tables", value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Stop once the snapshot is complete (one-shot loads, benchmarks).
    #[arg(long = "snapshot-only", default_value_t = false)]
    pub snapshot_only: bool,
    /// Marks every read of this snapshot as a re-read (`source.load_id`): set by the data
    /// loader for its ad-hoc re-snapshots, so the table's rows are not counted twice.
    #[arg(skip)]
    pub load_id: Option<String>,
    /// Partitions of topics CDC creates when they do not exist yet.
    #[arg(long = "cdc-partitions", default_value_t = 3)]
    pub partitions: i32,
    /// Rows per snapshot chunk (one Kafka transaction each).
    #[arg(long = "snapshot-chunk", default_value_t = 10_000)]
    pub snapshot_chunk: usize,
    /// Most changes read from the slot per poll.
    #[arg(long = "max-changes", default_value_t = 20_000)]
    pub max_changes: usize,
    /// Pause between polls of an idle slot.
    #[arg(long = "poll-ms", default_value_t = 100)]
    pub poll_ms: u64,
    /// exactly-once needs broker transactions; at-least-once relies on downstream dedup by source position.
    #[arg(long, value_enum, default_value = "exactly-once", env = "FUNNEL_DELIVERY")]
    pub delivery: Delivery,
}

/// A running connector's shared handles.
pub struct Connector {
    pub cfg: CdcConfig,
    pub processor: String,
    pub db: String,
    pub producer: BatchProducer,
    state_schema: Schema,
    state_id: u32,
    state_key: Vec<u8>,
    state_topic: String,
}

impl Connector {
    fn state_record(&self, state: &CdcState, confirmed: bool) -> Result<OutRecord> {
        let state = CdcState { confirmed, ..state.clone() };
        Ok(OutRecord { partition: None, topic: self.state_topic.clone(), key: self.state_key.clone(), value: Some(serialization::encode(self.state_id, &self.state_schema, state.to_avro())?) })
    }

    /// Emit `events` with the progress they bring: one transaction for the events and the
    /// progress, then, once it committed, the confirmation of that progress.
    pub async fn emit(&self, mut events: Vec<OutRecord>, state: &CdcState) -> Result<()> {
        if !events.is_empty() {
            events.push(self.state_record(state, false)?);
            self.producer.send(&events).await?;
        }
        self.producer.send(&[self.state_record(state, true)?]).await
    }
    fn slot_name(&self, generation: i64) -> String {
        format!("funnel_{}_{generation}", self.cfg.name)
    }
}

/// What a run did, for benchmarks and the caller's summary.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Wall time of this run's snapshot phase (slot creation to last chunk), when it ran one.
    pub snapshot_seconds: Option<f64>,
}

pub async fn run(pg_url: &str, brokers: &str, registry_url: &str, cfg: CdcConfig) -> Result<RunStats> {
    let processor = "cdc".to_string();
    health::report(&processor, "starting", "");
    let registry = RegistryClient::waiting_for(registry_url, &processor);
    let client = db::connect(pg_url).await?;
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal_level != "logical" {
        bail!("the source database runs with wal_level={wal_level}; CDC needs wal_level=logical (postgresql.conf, then restart)");
    }
    ensure_publication(&client, &cfg).await?;

    let mut tables = catalog::tables_in(&client, &cfg.schemas).await?;
    if !cfg.tables.is_empty() {
        tables.retain(|t| cfg.tables.contains(&t.qualified()));
    }
    if tables.is_empty() {
        bail!("no tables in schemas {:?} of {} (seed it with `funnel seed olist`)", cfg.schemas, db::redact(pg_url));
    }
    let mut topics: Vec<TopicSpec> = tables.iter().map(|t| TopicSpec { name: t.topic(&cfg.topic_prefix), partitions: cfg.partitions, compact: false }).collect();
    topics.push(TopicSpec { name: state::topic(&cfg.name), partitions: 1, compact: true });
    ensure_topics(brokers, &topics).await?;

    let mut codecs = HashMap::new();
    for t in tables {
        codecs.insert(t.qualified(), TableCodec::register(t, &cfg.topic_prefix, &registry).await?);
    }
    let state_id = registry.register(&subject(&state::topic(&cfg.name), false), state::STATE_SCHEMA).await?;
    let producer = BatchProducer::new(brokers, &format!("funnel-cdc-{}", cfg.name), cfg.delivery).await?;
    tracing::info!(delivery = cfg.delivery.as_str(), tables = codecs.len(), "cdc connector starting");
    let conn = Connector {
        processor,
        db: db::database_name(pg_url)?,
        producer,
        state_schema: state::schema()?,
        state_id,
        state_key: state::key(&registry, &cfg.name).await?,
        state_topic: state::topic(&cfg.name),
        cfg,
    };

    let snapshot_started = std::time::Instant::now();
    let mut stats = RunStats::default();
    let mut state = match state::load(brokers, &registry, &conn.cfg.name).await? {
        None => fresh_snapshot(&conn, pg_url, &client, &codecs, None).await?,
        Some(s) if s.phase == Phase::Snapshot => resume_snapshot(&conn, pg_url, &client, &codecs, s).await?,
        Some(s) => s,
    };
    stats.snapshot_seconds = Some(snapshot_started.elapsed().as_secs_f64());
    if conn.cfg.snapshot_only {
        tracing::info!("snapshot complete; stopping (--snapshot-only)");
        return Ok(stats);
    }
    drop_other_slots(&client, &conn, &state.slot).await?;
    let slot_exists = client.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&state.slot]).await?.is_some();
    if !slot_exists {
        bail!(
            "replication slot {} recorded in {} no longer exists (dropped, or the database was reseeded); \
             run `funnel cdc reset` to re-snapshot",
            state.slot,
            conn.state_topic
        );
    }
    tracing::info!(slot = state.slot, last_commit_lsn = %pgoutput::format_lsn(state.last_commit_lsn), "streaming");
    health::report(&conn.processor, "streaming", state.slot.clone());
    while !shutdown::requested() {
        let p = stream::poll(&conn, &client, &state.slot.clone(), &codecs, &mut state, None, None).await?;
        if p.transactions > 0 {
            tracing::info!(transactions = p.transactions, events = p.events, "emitted");
        }
        if p.caught_up {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(conn.cfg.poll_ms)) => {},
                _ = shutdown::wait() => {},
            }
        }
    }
    tracing::info!("cdc stopped cleanly");
    Ok(stats)
}

async fn ensure_publication(client: &tokio_postgres::Client, cfg: &CdcConfig) -> Result<()> {
    let exists = client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&cfg.publication]).await?.is_some();
    if !exists {
        let scope = if cfg.tables.is_empty() {
            format!("TABLES IN SCHEMA {}", cfg.schemas.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "))
        } else {
            format!("TABLE {}", cfg.tables.join(", "))
        };
        client
            .batch_execute(&format!("CREATE PUBLICATION \"{}\" FOR {scope}", cfg.publication))
            .await
            .with_context(|| format!("creating publication {}", cfg.publication))?;
        tracing::info!(publication = cfg.publication, "publication created");
    }
    Ok(())
}

/// Drop this connector's slots other than `keep` (left by a crash between creating a slot
/// and recording it).
async fn drop_other_slots(client: &tokio_postgres::Client, conn: &Connector, keep: &str) -> Result<()> {
    let pattern = format!("funnel\\_{}\\_%", conn.cfg.name);
    let rows = client.query("SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE $1 AND slot_name <> $2", &[&pattern, &keep]).await?;
    for r in rows {
        let name: String = r.get(0);
        client.execute("SELECT pg_drop_replication_slot($1)", &[&name]).await.with_context(|| format!("dropping stale slot {name}"))?;
        tracing::info!(slot = name, "dropped stale replication slot");
    }
    Ok(())
}

/// Open a connection inside the exported snapshot.
async fn snapshot_client(pg_url: &str, snapshot_name: &str) -> Result<tokio_postgres::Client> {
    let snap = db::connect(pg_url).await?;
    snap.batch_execute(&format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot_name}'"))
        .await
        .context("importing the exported snapshot")?;
    Ok(snap)
}

async fn fresh_snapshot(conn: &Connector, pg_url: &str, client: &tokio_postgres::Client, codecs: &HashMap<String, TableCodec>, previous: Option<i64>) -> Result<CdcState> {
    let generation = previous.unwrap_or(0) + 1;
    let slot = conn.slot_name(generation);
    drop_other_slots(client, conn, "").await?;
    let mut ws = walsender::WalSender::connect(pg_url).await?;
    let created = ws.create_slot(&slot).await?;
    tracing::info!(slot, consistent_lsn = %pgoutput::format_lsn(created.consistent_lsn), "slot created; snapshot starts");
    let mut tables: Vec<String> = codecs.keys().cloned().collect();
    tables.sort();
    let mut state = CdcState {
        name: conn.cfg.name.clone(),
        slot,
        generation,
        phase: Phase::Snapshot,
        consistent_lsn: created.consistent_lsn,
        tables,
        tables_done: vec![],
        current_table: None,
        last_pk: None,
        last_commit_lsn: created.consistent_lsn,
        confirmed: false,
    };
    conn.emit(vec![], &state).await?;
    let snap = snapshot_client(pg_url, &created.snapshot_name).await?;
    snapshot::run(conn, &snap, codecs, &mut state).await?;
    finish_snapshot(conn, state, ws).await
}

async fn finish_snapshot(conn: &Connector, mut state: CdcState, ws: walsender::WalSender) -> Result<CdcState> {
    state.phase = Phase::Streaming;
    conn.emit(vec![], &state).await?;
    drop(ws); // the exported snapshot is no longer needed
    tracing::info!(tables = state.tables.len(), "snapshot complete");
    Ok(state)
}

async fn resume_snapshot(conn: &Connector, pg_url: &str, client: &tokio_postgres::Client, codecs: &HashMap<String, TableCodec>, mut state: CdcState) -> Result<CdcState> {
    let old_slot = state.slot.clone();
    let old_exists = client.query_opt("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", &[&old_slot]).await?.is_some();
    if !old_exists {
        tracing::warn!(slot = old_slot, "slot of the interrupted snapshot is gone; snapshotting from scratch");
        return fresh_snapshot(conn, pg_url, client, codecs, Some(state.generation)).await;
    }
    drop_other_slots(client, conn, &old_slot).await?;
    let generation = state.generation + 1;
    let new_slot = conn.slot_name(generation);
    let mut ws = walsender::WalSender::connect(pg_url).await?;
    let created = ws.create_slot(&new_slot).await?;
    tracing::info!(old_slot, new_slot, consistent_lsn = %pgoutput::format_lsn(created.consistent_lsn), resume_table = ?state.current_table, after = ?state.last_pk, tables_done = state.tables_done.len(), "resuming interrupted snapshot");

    // Changes between the two consistent points to rows the first snapshot already emitted.
    let done = state.tables_done.clone();
    let current = state.current_table.clone();
    let last_pk = state.last_pk.clone();
    let covered = move |codec: &TableCodec, row: &events::Row| -> bool {
        let name = codec.meta.qualified();
        if done.contains(&name) {
            return true;
        }
        match (&current, &last_pk) {
            (Some(t), Some(pk)) if *t == name => codec.cmp_pk(&codec.pk_text(row), pk) != std::cmp::Ordering::Greater,
            _ => false,
        }
    };
    loop {
        let p = stream::poll(conn, client, &old_slot, codecs, &mut state, Some(created.consistent_lsn), Some(&covered)).await?;
        if p.caught_up {
            break;
        }
    }
    state.slot = new_slot;
    state.generation = generation;
    state.consistent_lsn = created.consistent_lsn;
    state.last_commit_lsn = state.last_commit_lsn.max(created.consistent_lsn);
    conn.emit(vec![], &state).await?;
    client.execute("SELECT pg_drop_replication_slot($1)", &[&old_slot]).await.with_context(|| format!("dropping old slot {old_slot}"))?;
    let snap = snapshot_client(pg_url, &created.snapshot_name).await?;
    snapshot::run(conn, &snap, codecs, &mut state).await?;
    finish_snapshot(conn, state, ws).await
}

/// `funnel cdc reset`: forget progress and drop the slots; the next start re-snapshots.
pub async fn reset(pg_url: &str, brokers: &str, registry_url: &str, name: &str) -> Result<()> {
    let registry = RegistryClient::new(registry_url);
    let client = db::connect(pg_url).await?;
    let pattern = format!("funnel\\_{name}\\_%");
    for r in client.query("SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE $1", &[&pattern]).await? {
        let slot: String = r.get(0);
        client.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).await?;
        tracing::info!(slot, "replication slot dropped");
    }
    ensure_topics(brokers, &[TopicSpec { name: state::topic(name), partitions: 1, compact: true }]).await?;
    let producer = BatchProducer::new(brokers, &format!("funnel-cdc-{name}-reset"), Delivery::AtLeastOnce).await?;
    producer.send(&[OutRecord { partition: None, topic: state::topic(name), key: state::key(&registry, name).await?, value: None }]).await?;
    tracing::info!(connector = name, "progress cleared; the next `funnel run cdc` snapshots again");
    Ok(())
}

/// The committed progress of connector `name` (for tests, `funnel cdc status` and operators).
pub async fn load_state(brokers: &str, registry_url: &str, name: &str) -> Result<Option<CdcState>> {
    state::load(brokers, &RegistryClient::new(registry_url), name).await
}
