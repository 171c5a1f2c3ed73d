//! A trained model as files in the models directory (`--models-dir`, by default `<lake>/models`): `propensity/<model>/<version>/model.json`
//! (what it was trained on, the encoding, the weights, the held-out metrics) and
//! `training_features.jsonl` (the training rows as computed at training time). A version
//! directory is written under a temporary name and renamed when complete; `CURRENT` names the
//! version scorers use and is replaced atomically after it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::evaluate::Metrics;
use super::features::{Encoder, Example, ModelKind, Values, Window};

pub const MODEL_FILE: &str = "model.json";
pub const TRAINING_FEATURES_FILE: &str = "training_features.jsonl";
pub const CURRENT_FILE: &str = "CURRENT";

/// `<models>/propensity/<model>` (`<models>` is `--models-dir`, by default `<lake>/models`).
pub fn model_dir(models: &Path, kind: ModelKind) -> PathBuf {
    models.join("propensity").join(kind.name())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub model: Metrics,
    /// What the model has to beat (leads: its channel's training conversion rate; customers:
    /// a logistic regression on recency alone).
    pub baseline_name: String,
    pub baseline: Metrics,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artefact {
    pub model: ModelKind,
    pub version: String,
    pub trained_at: DateTime<Utc>,
    /// Nothing the training saw (features or labels) is later than this.
    pub cutoff: DateTime<Utc>,
    pub horizon_days: i64,
    pub train_window: Window,
    /// The held-out later period.
    pub eval_window: Window,
    pub train_rows: usize,
    pub train_positives: usize,
    pub features: Vec<String>,
    pub algorithm: String,
    pub alpha: f64,
    pub seed: u64,
    pub encoder: Encoder,
    pub columns: Vec<String>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    pub evaluation: Evaluation,
    /// sha256 over the training rows and the fitted weights: equal data and seed give an
    /// equal fingerprint (the fit has no other input).
    pub fingerprint: String,
    pub determinism: String,
}

pub(super) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The logistic model's probability for one entity: training evaluates with it before the
/// artefact exists, scoring through `Artefact::score`.
pub(super) fn probability(encoder: &Encoder, weights: &[f64], intercept: f64, v: &Values) -> f64 {
    sigmoid(intercept + encoder.encode(v).iter().zip(weights).map(|(a, b)| a * b).sum::<f64>())
}

impl Artefact {
    /// The probability of the positive outcome for one entity.
    pub fn score(&self, v: &Values) -> f64 {
        probability(&self.encoder, &self.weights, self.intercept, v)
    }

    pub fn dir(&self, models: &Path) -> PathBuf {
        model_dir(models, self.model).join(&self.version)
    }

    /// Write the version directory (complete or not at all).
    pub fn save(&self, models: &Path, training: &[Example]) -> Result<PathBuf> {
        let dir = self.dir(models);
        let tmp = dir.with_file_name(format!(".{}.partial", self.version));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        std::fs::write(tmp.join(MODEL_FILE), serde_json::to_vec_pretty(self)?)?;
        let mut lines = Vec::new();
        for e in training {
            serde_json::to_writer(&mut lines, e)?;
            lines.push(b'\n');
        }
        std::fs::write(tmp.join(TRAINING_FEATURES_FILE), lines)?;
        std::fs::rename(&tmp, &dir).with_context(|| format!("moving the model to {}", dir.display()))?;
        Ok(dir)
    }

    /// Make this version the one scorers use (an atomic replace of `CURRENT`).
    pub fn make_current(&self, models: &Path) -> Result<()> {
        let current = model_dir(models, self.model).join(CURRENT_FILE);
        let current_tmp = current.with_file_name(format!(".{CURRENT_FILE}.partial"));
        std::fs::write(&current_tmp, format!("{}\n", self.version))?;
        std::fs::rename(&current_tmp, &current)?;
        Ok(())
    }

    /// The version `CURRENT` names, or a clear error saying what is missing or broken.
    pub fn load_current(models: &Path, kind: ModelKind) -> Result<Artefact> {
        let current = model_dir(models, kind).join(CURRENT_FILE);
        let version = std::fs::read_to_string(&current)
            .with_context(|| format!("no {} model: {} is missing (train one with `funnel train propensity --model {}`)", kind.name(), current.display(), kind.name()))?;
        Self::load(models, kind, version.trim())
    }

    pub fn load(models: &Path, kind: ModelKind, version: &str) -> Result<Artefact> {
        let file = model_dir(models, kind).join(version).join(MODEL_FILE);
        let bytes = std::fs::read(&file).with_context(|| format!("reading the {} model {version} ({})", kind.name(), file.display()))?;
        let a: Artefact = serde_json::from_slice(&bytes).with_context(|| format!("the {} model {version} is corrupt ({})", kind.name(), file.display()))?;
        a.check(kind).with_context(|| format!("the {} model {version} is inconsistent ({})", kind.name(), file.display()))?;
        Ok(a)
    }

    fn check(&self, kind: ModelKind) -> Result<()> {
        anyhow::ensure!(self.model == kind, "it is a {} model", self.model.name());
        anyhow::ensure!(self.encoder.columns() == self.columns, "its encoding does not match its column list");
        anyhow::ensure!(self.weights.len() == self.columns.len(), "{} weights for {} columns", self.weights.len(), self.columns.len());
        anyhow::ensure!(self.weights.iter().chain([&self.intercept]).all(|w| w.is_finite()), "a weight is not a finite number");
        anyhow::ensure!(self.encoder.numeric.len() == kind.numeric().len() && self.encoder.categorical.len() == kind.categorical().len(), "its features are not the {} features", kind.name());
        Ok(())
    }

    /// The stored training rows.
    pub fn training_features(models: &Path, kind: ModelKind, version: &str) -> Result<Vec<Example>> {
        let file = model_dir(models, kind).join(version).join(TRAINING_FEATURES_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("a line of {}", file.display()))).collect()
    }
}
