//! Opening a Delta table by directory, creating it with a schema when it does not exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use deltalake::arrow::datatypes::Schema as ArrowSchema;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::StructType;
use deltalake::{DeltaTable, TableProperty};

/// `<lake>/<layer>/<name>`.
pub fn path(lake: &Path, layer: &str, name: &str) -> PathBuf {
    lake.join(layer).join(name)
}

/// The directory as a Delta table URL (created if missing; Delta needs absolute URLs).
pub fn url_of(path: &Path) -> Result<url::Url> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let abs = std::fs::canonicalize(path)?;
    url::Url::from_directory_path(&abs).map_err(|_| anyhow::anyhow!("lake path {} is not absolute", abs.display()))
}

/// Open the table at `url`, creating it with `schema` when it has no Delta log yet.
pub async fn open_or_create(url: &url::Url, schema: &Arc<ArrowSchema>, name: &str, comment: &str, checkpoint_interval: u32) -> Result<DeltaTable> {
    if let Some(t) = super::offsets::open_existing(url).await? {
        return Ok(t);
    }
    let table = deltalake::DeltaTableBuilder::from_url(url.clone())?.build()?;
    let struct_type = StructType::try_from_arrow(schema.as_ref()).context("Arrow schema → Delta schema")?;
    let table = table
        .create()
        .with_columns(struct_type.fields().cloned())
        .with_table_name(name.replace('.', "_"))
        .with_comment(comment)
        .with_configuration_property(TableProperty::CheckpointInterval, Some(checkpoint_interval.to_string()))
        .await
        .with_context(|| format!("creating Delta table {url}"))?;
    tracing::info!(table = %url, "Delta table created");
    Ok(table)
}
