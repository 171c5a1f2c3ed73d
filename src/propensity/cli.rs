//! `funnel train propensity`: trains, prints the held-out metrics and the calibration.

use std::path::Path;

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};

use super::artefact::Artefact;
use super::train::{describe, train, TrainArgs};

fn num(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.4}")
    }
}

fn right(t: &mut Table, from: usize) {
    for i in from..t.column_count() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The metrics and calibration tables of one artefact.
pub fn report(a: &Artefact) -> String {
    let e = &a.evaluation;
    let mut metrics = Table::new();
    metrics.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["scorer", "ROC AUC", "PR AUC", "log loss", "examples", "positives"]);
    for (name, m) in [("model", &e.model), (e.baseline_name.as_str(), &e.baseline)] {
        metrics.add_row(vec![name.to_string(), num(m.roc_auc), num(m.pr_auc), num(m.log_loss), m.examples.to_string(), m.positives.to_string()]);
    }
    right(&mut metrics, 1);
    let mut calibration = Table::new();
    calibration.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["decile", "examples", "mean score", "observed rate", "baseline mean", "baseline observed"]);
    for (d, b) in e.model.calibration.iter().zip(&e.baseline.calibration) {
        calibration.add_row(vec![d.decile.to_string(), d.count.to_string(), num(d.mean_score), num(d.observed_rate), num(b.mean_score), num(b.observed_rate)]);
    }
    right(&mut calibration, 0);
    format!(
        "{} model {} (cutoff {}, horizon {} days)\n  trained on {} rows ({} positive): {}\n  held out: {}\n{metrics}\ncalibration on the held-out period (decile 1 = lowest scores):\n{calibration}",
        a.model.name(),
        a.version,
        a.cutoff.format("%Y-%m-%d"),
        a.horizon_days,
        a.train_rows,
        a.train_positives,
        describe(a.model, &a.train_window),
        describe(a.model, &a.eval_window),
    )
}

pub async fn run_train(lake: &crate::lake::location::Lake, models: &Path, args: &TrainArgs) -> Result<()> {
    let t = train(lake, models, args).await?;
    println!("{}\nsaved in {}", report(&t.artefact), t.dir.display());
    Ok(())
}
