//! Read-only SQL over lake tables with DataFusion: every Delta table under bronze/, silver/
//! and gold/ is registered as `<layer>_<table>` with dots turned into underscores
//! (gold/m_dim.lead → `gold_m_dim_lead`).

use std::path::Path;

use anyhow::{Context, Result};
use deltalake::datafusion::prelude::SessionContext;

/// A session with every table of the lake registered.
pub async fn context(lake: &Path) -> Result<SessionContext> {
    let ctx = SessionContext::new();
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

/// Run `sql` and return its rows as JSON objects.
pub async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let batches = ctx.sql(sql).await.with_context(|| format!("planning {sql}"))?.collect().await.with_context(|| format!("running {sql}"))?;
    let mut writer = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        writer.write(b)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(vec![]);
    }
    Ok(serde_json::from_slice(&bytes)?)
}
