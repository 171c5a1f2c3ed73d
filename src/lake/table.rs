//! Opening a Delta table by URL, creating it with a schema when it does not exist.

use std::sync::Arc;

use anyhow::{Context, Result};
use deltalake::arrow::datatypes::Schema as ArrowSchema;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::StructType;
use deltalake::{DeltaTable, TableProperty};

/// Open the table at `url`, creating it with `schema` when it has no Delta log yet.
pub async fn open_or_create(url: &url::Url, schema: &Arc<ArrowSchema>, name: &str, comment: &str, checkpoint_interval: u32) -> Result<DeltaTable> {
    if let Some(t) = super::offsets::open_existing(url).await? {
        return Ok(t);
    }
    super::location::prepare(url)?;
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
