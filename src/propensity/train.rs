//! `funnel train propensity`: features from the lake as of a cutoff, a logistic regression
//! fitted by smartcore on the earlier period, evaluated against a baseline on the later one,
//! saved as a versioned artefact and appended to the metrics tables.

use std::path::Path;

use crate::lake::location::Lake;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, DurationRound, TimeZone, Utc};
use sha2::Digest;
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use super::artefact::{probability, sigmoid, Artefact, Evaluation};
use super::evaluate::Metrics;
use super::features::{self, Encoder, Example, ModelKind, Window};

#[derive(clap::Args, Clone, Debug)]
pub struct TrainArgs {
    /// Which model: leads (will an MQL close a deal?) or customers (will a customer order
    /// again within the horizon?).
    #[arg(long, value_enum)]
    pub model: ModelKind,
    /// Nothing later than this is used for training, features or labels (RFC 3339 or
    /// YYYY-MM-DD). The period after it is the held-out evaluation. Default: leads, the last
    /// contact date + 1 day − horizon; customers, the last purchase − horizon.
    #[arg(long, value_parser = parse_time)]
    pub cutoff: Option<DateTime<Utc>>,
    /// Label horizon in days (leads: a deal within this many days of the first contact,
    /// default 60; customers: another order within this many days, default 180).
    #[arg(long = "horizon-days")]
    pub horizon_days: Option<i64>,
    /// L2 regularisation of the logistic regression.
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Random seed, recorded in the artefact (the L-BFGS fit itself draws no random numbers).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Prefix of the CDC topics whose bronze tables hold the orders (customers model).
    #[arg(long = "cdc-topic-prefix", default_value = "olist")]
    pub cdc_topic_prefix: String,
    /// A category value becomes a feature column when at least this many training rows have it.
    #[arg(long = "min-category-count", default_value_t = 20)]
    pub min_category_count: usize,
}

pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| Utc.from_utc_datetime(&t))
        .ok_or_else(|| format!("{s:?} is neither RFC 3339 (2018-04-01T00:00:00Z) nor a date (2018-04-01)"))
}

fn default_horizon(kind: ModelKind) -> i64 {
    match kind {
        ModelKind::Leads => 60,
        ModelKind::Customers => 180,
    }
}

/// The latest event time the lake holds for `kind` (last first contact / last purchase).
async fn latest(lake: &Lake, kind: ModelKind, cdc_prefix: &str) -> Result<DateTime<Utc>> {
    let sql = match kind {
        ModelKind::Leads => "SELECT CAST(max(CAST(first_contact_date AS TIMESTAMP)) AS VARCHAR) AS t FROM silver_m_data_marketing_qualified_lead".to_string(),
        ModelKind::Customers => format!("SELECT CAST(max(CAST(order_purchase_timestamp AS TIMESTAMP)) AS VARCHAR) AS t FROM bronze_{}_ecommerce_orders", cdc_prefix.replace(['.', '-'], "_")),
    };
    let ctx = crate::lake::query::context(lake).await?;
    let rows = crate::lake::query::rows(&ctx, &sql).await.with_context(|| format!("finding the latest {} event in the lake (has the pipeline landed it?)", kind.name()))?;
    let t = rows.first().and_then(|r| r.get("t")).and_then(|t| t.as_str()).ok_or_else(|| anyhow::anyhow!("the lake holds no {} data yet", kind.name()))?;
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(t, f).ok())
        .with_context(|| format!("the latest {} time {t:?} is not a timestamp", kind.name()))?;
    Ok(Utc.from_utc_datetime(&naive))
}

/// The training and held-out windows for `cutoff`.
pub fn windows(kind: ModelKind, cutoff: DateTime<Utc>, horizon_days: i64) -> (Window, Window) {
    let h = Duration::days(horizon_days);
    match kind {
        // Leads contacted early enough that their whole horizon ended by the cutoff; evaluated
        // on the leads of the next horizon-long period.
        ModelKind::Leads => (
            Window { from: DateTime::UNIX_EPOCH, until: cutoff - h, label_until: cutoff, horizon_days },
            Window { from: cutoff, until: cutoff + h, label_until: cutoff + h + h, horizon_days },
        ),
        // Customers as they stood one horizon before the cutoff, labelled by the cutoff;
        // evaluated as they stood at the cutoff, labelled by the period after it.
        ModelKind::Customers => (
            Window { from: cutoff - h, until: cutoff - h, label_until: cutoff, horizon_days },
            Window { from: cutoff, until: cutoff, label_until: cutoff + h, horizon_days },
        ),
    }
}

pub struct Trained {
    pub artefact: Artefact,
    pub dir: std::path::PathBuf,
}

/// A logistic regression fitted by smartcore: (weights, intercept).
fn fit(x: &[Vec<f64>], y: &[bool], alpha: f64) -> Result<(Vec<f64>, f64)> {
    let p = x.first().map_or(0, Vec::len);
    anyhow::ensure!(p > 0, "no feature columns to fit");
    let m = DenseMatrix::new(x.len(), p, x.concat(), false).map_err(|e| anyhow::anyhow!("feature matrix: {e}"))?;
    let labels: Vec<u32> = y.iter().map(|l| *l as u32).collect();
    let lr = LogisticRegression::<f64, u32, DenseMatrix<f64>, Vec<u32>>::fit(&m, &labels, LogisticRegressionParameters::default().with_alpha(alpha)).map_err(|e| anyhow::anyhow!("fitting the logistic regression: {e}"))?;
    anyhow::ensure!(lr.classes() == &vec![0, 1], "the fit saw classes {:?}", lr.classes());
    let w = (0..p).map(|j| *lr.coefficients().get((0, j))).collect();
    Ok((w, *lr.intercept().get((0, 0))))
}

/// The baseline's scores on the held-out rows.
fn baseline(kind: ModelKind, enc: &Encoder, train: &[Example], eval: &[Example], alpha: f64) -> Result<(String, Vec<f64>)> {
    match kind {
        ModelKind::Leads => {
            // The training conversion rate of the lead's channel (the overall rate for a
            // channel training never saw).
            let mut by: std::collections::BTreeMap<Option<&str>, (usize, usize)> = Default::default();
            for e in train {
                let c = by.entry(e.values.categorical[0].as_deref()).or_default();
                c.0 += 1;
                c.1 += e.label as usize;
            }
            let overall = train.iter().filter(|e| e.label).count() as f64 / train.len() as f64;
            let scores = eval.iter().map(|e| by.get(&e.values.categorical[0].as_deref()).map_or(overall, |(n, k)| *k as f64 / *n as f64)).collect();
            Ok(("channel conversion rate".into(), scores))
        }
        ModelKind::Customers => {
            // A logistic regression on recency alone.
            let j = enc.columns().iter().position(|c| c == "recency_days").context("the encoding has no recency_days column")?;
            let col = |e: &Example| enc.encode(&e.values)[j];
            let x: Vec<Vec<f64>> = train.iter().map(|e| vec![col(e)]).collect();
            let y: Vec<bool> = train.iter().map(|e| e.label).collect();
            let (w, b) = fit(&x, &y, alpha)?;
            Ok(("recency alone (logistic regression)".into(), eval.iter().map(|e| sigmoid(b + w[0] * col(e))).collect()))
        }
    }
}

fn fingerprint(train: &[Example], weights: &[f64], intercept: f64) -> Result<String> {
    let mut h = sha2::Sha256::new();
    for e in train {
        h.update(serde_json::to_vec(e)?);
    }
    for w in weights.iter().chain([&intercept]) {
        h.update(w.to_bits().to_be_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Train one model and save it as the current version.
pub async fn train(lake: &Lake, models: &Path, args: &TrainArgs) -> Result<Trained> {
    let kind = args.model;
    let horizon_days = args.horizon_days.unwrap_or(default_horizon(kind));
    anyhow::ensure!(horizon_days > 0, "--horizon-days must be positive");
    let cutoff = match args.cutoff {
        Some(c) => c,
        None => {
            let last = latest(lake, kind, &args.cdc_topic_prefix).await?;
            let day = last.duration_trunc(Duration::days(1))?;
            match kind {
                ModelKind::Leads => day + Duration::days(1) - Duration::days(horizon_days),
                ModelKind::Customers => day - Duration::days(horizon_days),
            }
        }
    };
    let (train_w, eval_w) = windows(kind, cutoff, horizon_days);
    tracing::info!(model = kind.name(), %cutoff, horizon_days, "computing features");
    let train = features::examples(lake, kind, &train_w, &args.cdc_topic_prefix).await?;
    let eval = features::examples(lake, kind, &eval_w, &args.cdc_topic_prefix).await?;
    let positives = |xs: &[Example]| xs.iter().filter(|e| e.label).count();
    let what = |xs: &[Example], w: &Window| format!("{} rows ({} positive) for {}", xs.len(), positives(xs), describe(kind, w));
    anyhow::ensure!(positives(&train) > 0 && positives(&train) < train.len(), "cannot train the {} model on {}: both outcomes must occur (another --cutoff?)", kind.name(), what(&train, &train_w));
    anyhow::ensure!(positives(&eval) > 0 && positives(&eval) < eval.len(), "cannot evaluate the {} model on {}: both outcomes must occur (an earlier --cutoff?)", kind.name(), what(&eval, &eval_w));

    let encoder = Encoder::fit(kind, &train, args.min_category_count);
    let columns = encoder.columns();
    let x: Vec<Vec<f64>> = train.iter().map(|e| encoder.encode(&e.values)).collect();
    let y: Vec<bool> = train.iter().map(|e| e.label).collect();
    let (weights, intercept) = fit(&x, &y, args.alpha)?;
    let labels: Vec<bool> = eval.iter().map(|e| e.label).collect();
    let model_scores: Vec<f64> = eval.iter().map(|e| probability(&encoder, &weights, intercept, &e.values)).collect();
    let (baseline_name, baseline_scores) = baseline(kind, &encoder, &train, &eval, args.alpha)?;
    let trained_at = Utc::now();
    let artefact = Artefact {
        model: kind,
        version: trained_at.format("%Y%m%dT%H%M%S%3fZ").to_string(),
        trained_at,
        cutoff,
        horizon_days,
        train_window: train_w,
        eval_window: eval_w,
        train_rows: train.len(),
        train_positives: positives(&train),
        features: kind.feature_names(),
        algorithm: "logistic regression (smartcore 0.7.0, L-BFGS, L2), log-scaled standardised numbers, one-hot categories".into(),
        alpha: args.alpha,
        seed: args.seed,
        columns,
        fingerprint: fingerprint(&train, &weights, intercept)?,
        weights,
        intercept,
        evaluation: Evaluation { model: Metrics::of(&model_scores, &labels), baseline_name, baseline: Metrics::of(&baseline_scores, &labels) },
        encoder,
        determinism: "The same lake data and seed give the same training rows (ordered by key), the same weights (L-BFGS draws no random numbers) and so the same fingerprint and scores.".into(),
    };
    let dir = artefact.save(models, &train)?;
    super::metrics_table::append_artefact(lake, &artefact).await?;
    artefact.make_current(models)?;
    tracing::info!(model = kind.name(), version = artefact.version, dir = %dir.display(), "model saved and made current");
    Ok(Trained { artefact, dir })
}

/// "leads first contacted 2017-… – 2018-…" / "customers as of …".
pub fn describe(kind: ModelKind, w: &Window) -> String {
    let d = |t: &DateTime<Utc>| t.format("%Y-%m-%d").to_string();
    match kind {
        ModelKind::Leads if w.from == DateTime::UNIX_EPOCH => format!("leads first contacted before {}, deals won by {}", d(&w.until), d(&w.label_until)),
        ModelKind::Leads => format!("leads first contacted {} – {}, deals won by {}", d(&w.from), d(&(w.until - Duration::days(1))), d(&w.label_until)),
        ModelKind::Customers => format!("customers as of {}, orders until {}", d(&w.from), d(&w.label_until)),
    }
}
