//! The held-out metrics of every trained version as Delta tables, for `funnel sql`:
//! `gold/propensity_metrics` (one row per model version and scorer) and
//! `gold/propensity_calibration` (one row per decile). Appended once per training run.

use std::sync::Arc;

use anyhow::{Context, Result};
use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};

use super::artefact::Artefact;
use crate::lake::location::Lake;

pub const METRICS_TABLE: &str = "propensity_metrics";
pub const CALIBRATION_TABLE: &str = "propensity_calibration";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

async fn append(lake: &Lake, name: &str, comment: &str, batch: RecordBatch) -> Result<()> {
    let url = lake.table("gold", name);
    let mut table = crate::lake::table::open_or_create(&url, &batch.schema(), name, comment, 20).await?;
    let mut writer = RecordBatchWriter::for_table(&table)?;
    writer.write(batch).await.with_context(|| format!("writing gold/{name}"))?;
    writer.flush_and_commit(&mut table).await.with_context(|| format!("committing gold/{name}"))?;
    Ok(())
}

/// Append the artefact's held-out metrics (model and baseline) and its calibration deciles.
pub async fn append_artefact(lake: &Lake, a: &Artefact) -> Result<()> {
    let e = &a.evaluation;
    let scorers = [("model", &e.model), (e.baseline_name.as_str(), &e.baseline)];
    let n = scorers.len();
    let text = |f: &dyn Fn(usize) -> String| Arc::new(StringArray::from((0..n).map(f).collect::<Vec<_>>())) as ArrayRef;
    let float = |f: &dyn Fn(usize) -> f64| Arc::new(Float64Array::from((0..n).map(f).collect::<Vec<_>>())) as ArrayRef;
    let int = |f: &dyn Fn(usize) -> i64| Arc::new(Int64Array::from((0..n).map(f).collect::<Vec<_>>())) as ArrayRef;
    let time = |t: i64| Arc::new(TimestampMicrosecondArray::from(vec![t; n]).with_timezone("UTC")) as ArrayRef;
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("version", DataType::Utf8, false),
        Field::new("trained_at", ts(), false),
        Field::new("cutoff", ts(), false),
        Field::new("horizon_days", DataType::Int64, false),
        Field::new("scorer", DataType::Utf8, false),
        Field::new("examples", DataType::Int64, false),
        Field::new("positives", DataType::Int64, false),
        Field::new("roc_auc", DataType::Float64, true),
        Field::new("pr_auc", DataType::Float64, true),
        Field::new("log_loss", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            text(&|_| a.model.name().to_string()),
            text(&|_| a.version.clone()),
            time(a.trained_at.timestamp_micros()),
            time(a.cutoff.timestamp_micros()),
            int(&|_| a.horizon_days),
            text(&|i| scorers[i].0.to_string()),
            int(&|i| scorers[i].1.examples as i64),
            int(&|i| scorers[i].1.positives as i64),
            float(&|i| scorers[i].1.roc_auc),
            float(&|i| scorers[i].1.pr_auc),
            float(&|i| scorers[i].1.log_loss),
        ],
    )?;
    append(lake, METRICS_TABLE, "propensity model metrics on the held-out period, per version and scorer (model, baseline)", batch).await?;

    let rows: Vec<(&str, &super::evaluate::Decile)> = scorers.iter().flat_map(|(s, m)| m.calibration.iter().map(move |d| (*s, d))).collect();
    let n = rows.len();
    let schema = Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("version", DataType::Utf8, false),
        Field::new("scorer", DataType::Utf8, false),
        Field::new("decile", DataType::Int64, false),
        Field::new("examples", DataType::Int64, false),
        Field::new("mean_score", DataType::Float64, false),
        Field::new("observed_rate", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![a.model.name(); n])),
            Arc::new(StringArray::from(vec![a.version.as_str(); n])),
            Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1.decile as i64).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1.count as i64).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.1.mean_score).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.1.observed_rate).collect::<Vec<_>>())),
        ],
    )?;
    append(lake, CALIBRATION_TABLE, "propensity model calibration on the held-out period: deciles of score, mean score and observed rate", batch).await
}
