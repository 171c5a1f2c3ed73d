//! Read-only SQL over lake tables with DataFusion (`funnel sql`): every Delta table under
//! bronze/, silver/ and gold/ is registered as `<layer>_<table>` with dots and dashes turned
//! into underscores (gold/m_dim.lead → `gold_m_dim_lead`).

use std::path::Path;

use anyhow::{Context, Result};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::prelude::SessionContext;

/// A session with every table of the lake registered.
pub async fn context(lake: &Path) -> Result<SessionContext> {
    // information_schema: SHOW TABLES and DESCRIBE work.
    let ctx = SessionContext::new_with_config(deltalake::datafusion::prelude::SessionConfig::new().with_information_schema(true));
    for layer in ["bronze", "silver", "gold"] {
        let Ok(dir) = std::fs::read_dir(lake.join(layer)) else { continue };
        for entry in dir.flatten() {
            let path = entry.path();
            if !path.join("_delta_log").is_dir() {
                continue;
            }
            let name = format!("{layer}_{}", entry.file_name().to_string_lossy().replace(['.', '-'], "_"));
            register(&ctx, &name, &path).await?;
        }
    }
    Ok(ctx)
}

/// Register the Delta table at `path` as `name`.
pub async fn register(ctx: &SessionContext, name: &str, path: &Path) -> Result<()> {
    let table = deltalake::open_table(super::table::url_of(path)?).await.with_context(|| format!("opening {}", path.display()))?;
    let provider = table.table_provider().await.with_context(|| format!("reading {}", path.display()))?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// Run a query; anything but a query (DDL, DML, SET, …) is refused before it runs.
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
