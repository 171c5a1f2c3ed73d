//! Read-only SQL over lake tables with DataFusion (`funnel sql`): every Delta table under
//! bronze/, silver/ and gold/ is registered as `<layer>_<table>` with dots and dashes turned
//! into underscores (gold/m_dim.lead → `gold_m_dim_lead`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::prelude::SessionContext;

use super::location::Lake;

/// A table that could not be opened (corrupt log, missing files): left out of the catalog.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Skipped {
    pub table: String,
    pub error: String,
}

/// A session with every readable table of the lake registered, and the tables left out.
pub struct Catalog {
    pub ctx: SessionContext,
    pub skipped: Vec<Skipped>,
}

/// Every Delta table under bronze/, silver/ and gold/; one unreadable table is reported in
/// `skipped` and the others still answer.
pub async fn catalog(lake: &Lake) -> Result<Catalog> {
    // information_schema: SHOW TABLES and DESCRIBE work.
    let ctx = SessionContext::new_with_config(deltalake::datafusion::prelude::SessionConfig::new().with_information_schema(true));
    let mut skipped = vec![];
    for layer in ["bronze", "silver", "gold"] {
        // Hidden tables (a merge writer's `.…tombstones`) are funnel's bookkeeping, not data:
        // `tables_in` leaves them out.
        for (table, url) in super::location::tables_in(lake, layer).await.with_context(|| format!("listing the {layer} tables of {lake}"))? {
            let name = format!("{layer}_{}", table.replace(['.', '-'], "_"));
            if let Err(e) = register(&ctx, &name, &url).await {
                tracing::warn!(table = name, error = format!("{e:#}"), "lake table left out of the SQL catalog");
                skipped.push(Skipped { table: name, error: format!("{e:#}") });
            }
        }
    }
    Ok(Catalog { ctx, skipped })
}

/// A session with every readable table of the lake registered (unreadable ones are logged).
pub async fn context(lake: &Lake) -> Result<SessionContext> {
    Ok(catalog(lake).await?.ctx)
}

/// The catalog, rebuilt at most every `max_age` (opening every table's log per request would
/// cost more than most queries): queries see the lake as of at most `max_age` ago.
pub struct CachedCatalog {
    lake: Lake,
    max_age: Duration,
    current: tokio::sync::Mutex<Option<(Instant, Arc<Catalog>)>>,
}

impl CachedCatalog {
    pub fn new(lake: &Lake, max_age: Duration) -> Self {
        Self { lake: lake.clone(), max_age, current: Default::default() }
    }

    pub async fn get(&self) -> Result<Arc<Catalog>> {
        let mut current = self.current.lock().await;
        if let Some((at, c)) = current.as_ref() {
            if at.elapsed() < self.max_age {
                return Ok(c.clone());
            }
        }
        let fresh = Arc::new(catalog(&self.lake).await?);
        *current = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}

/// Bounds of one query from an API: rows returned and time spent.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not a query, a syntax error, an unknown table or a failure while running it.
    #[error("{0}")]
    Refused(String),
    #[error("query stopped at the time limit of {0:?}")]
    Timeout(Duration),
}

/// What a bounded query returned: at most `max_rows` rows, `truncated` when there were more.
pub struct Answer {
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub truncated: bool,
}

/// Run a read-only query within `limits`: one row more than the limit is fetched to know
/// whether the result was cut; past the time limit the query is dropped (its streams stop).
pub async fn bounded(ctx: &SessionContext, sql: &str, limits: Limits) -> Result<Answer, QueryError> {
    let run = async {
        let df = ctx.sql_with_options(sql, read_only()).await.map_err(|e| QueryError::Refused(format!("planning: {e}")))?;
        let df = df.limit(0, Some(limits.max_rows.saturating_add(1))).map_err(|e| QueryError::Refused(format!("planning: {e}")))?;
        df.collect().await.map_err(|e| QueryError::Refused(format!("running: {e}")))
    };
    let batches = tokio::time::timeout(limits.timeout, run).await.map_err(|_| QueryError::Timeout(limits.timeout))??;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if total <= limits.max_rows {
        return Ok(Answer { batches, rows: total, truncated: false });
    }
    let mut kept = vec![];
    let mut left = limits.max_rows;
    for b in batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        kept.push(b.slice(0, n));
        left -= n;
    }
    Ok(Answer { batches: kept, rows: limits.max_rows, truncated: true })
}

/// Register the Delta table at `url` as `name` (on first scan its provider registers the
/// table's object store with the session: S3 tables need nothing more).
pub async fn register(ctx: &SessionContext, name: &str, url: &url::Url) -> Result<()> {
    let table = deltalake::open_table(url.clone()).await.with_context(|| format!("opening {url}"))?;
    let provider = table.table_provider().await.with_context(|| format!("reading {url}"))?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// Queries only: DDL, DML and statements (SET, …) are refused before anything runs.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

pub async fn batches(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql_with_options(sql, read_only()).await.with_context(|| format!("planning {sql}"))?;
    df.collect().await.with_context(|| format!("running {sql}"))
}

/// Run `sql` and return its rows as JSON objects.
pub async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    to_json(&batches(ctx, sql).await?)
}

pub fn to_json(batches: &[RecordBatch]) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut writer = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(vec![]);
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// The batches as an aligned table.
pub fn to_table(batches: &[RecordBatch]) -> Result<comfy_table::Table> {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let Some(first) = batches.first() else { return Ok(table) };
    table.set_header(first.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>());
    let options = FormatOptions::default().with_null("NULL");
    for b in batches {
        let formatters = b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            table.add_row(formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<_>>());
        }
    }
    Ok(table)
}

/// The batches as CSV with a header line.
pub fn to_csv(batches: &[RecordBatch]) -> Result<String> {
    let mut out = Vec::new();
    {
        let mut writer = deltalake::arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
        for b in batches {
            writer.write(b)?;
        }
    }
    Ok(String::from_utf8(out)?)
}
