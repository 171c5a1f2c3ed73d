//! The relay database (schema `relay` of the source Postgres): a connection pool, and the
//! migrations in `sql/relay/migrations/`, applied in file order once each.

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::olist::db::redact;

/// The migrations, in order (embedded: the binary carries the schema it expects).
pub const MIGRATIONS: &[(&str, &str)] = &[("0001_relay_schema", include_str!("../../sql/relay/migrations/0001_relay_schema.sql"))];

/// A pool: the HTTP service serves requests concurrently and a dead connection is replaced.
pub fn pool(url: &str, size: usize) -> Result<Pool> {
    let cfg: tokio_postgres::Config = url.parse().with_context(|| format!("bad Postgres URL {}", redact(url)))?;
    let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr).max_size(size).build().context("building the Postgres pool")
}

/// Apply the migrations not yet recorded in `relay.schema_migrations`, with their records, in
/// one transaction under an advisory lock (several instances may start at once): all or none.
pub async fn migrate(url: &str) -> Result<Vec<&'static str>> {
    let mut client = crate::olist::db::connect(url).await?;
    let tx = client.transaction().await?;
    // Any constant: one lock for every relay instance migrating this database.
    tx.execute("SELECT pg_advisory_xact_lock(7320051)", &[]).await?;
    tx.batch_execute("CREATE SCHEMA IF NOT EXISTS relay; CREATE TABLE IF NOT EXISTS relay.schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .context("creating relay.schema_migrations")?;
    let mut applied = vec![];
    for (version, sql) in MIGRATIONS {
        if tx.query_opt("SELECT 1 FROM relay.schema_migrations WHERE version = $1", &[version]).await?.is_some() {
            continue;
        }
        tx.batch_execute(sql).await.with_context(|| format!("applying migration {version}"))?;
        tx.execute("INSERT INTO relay.schema_migrations (version) VALUES ($1)", &[version]).await?;
        applied.push(*version);
    }
    tx.commit().await.context("committing the relay migrations")?;
    if !applied.is_empty() {
        tracing::info!(?applied, db = %redact(url), "relay migrations applied");
    }
    Ok(applied)
}
