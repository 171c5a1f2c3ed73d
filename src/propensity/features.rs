//! The features of each model: computed from the lake with the SQL of `sql/propensity/` as of a
//! point in time (training), or taken from a stream record (scoring), and encoded into the
//! numbers the model multiplies. The encoding is fitted on the training rows only and stored
//! in the artefact, so scoring encodes exactly as training did.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{DataType, Float64Type, Int64Type};
use deltalake::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// Which question a model answers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Will this marketing-qualified lead close a deal?
    Leads,
    /// Will this customer order again within the horizon?
    Customers,
}

pub const CUSTOMER_SQL: &str = include_str!("../../sql/propensity/customer_features.sql");
pub const LEAD_SQL: &str = include_str!("../../sql/propensity/lead_features.sql");

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Leads => "leads",
            ModelKind::Customers => "customers",
        }
    }

    /// Numeric features (columns of the feature SQL and of the scorer's input).
    pub fn numeric(self) -> &'static [&'static str] {
        match self {
            ModelKind::Leads => &[],
            ModelKind::Customers => &["order_count", "revenue", "avg_order_value", "review_avg", "delivered_orders", "canceled_orders", "recency_days", "tenure_days"],
        }
    }

    /// Categorical features.
    pub fn categorical(self) -> &'static [&'static str] {
        match self {
            ModelKind::Leads => &["channel", "landing_page", "contact_weekday"],
            ModelKind::Customers => &["state", "favourite_category"],
        }
    }

    pub fn feature_names(self) -> Vec<String> {
        self.numeric().iter().chain(self.categorical()).map(|s| s.to_string()).collect()
    }

    pub fn sql(self) -> &'static str {
        match self {
            ModelKind::Leads => LEAD_SQL,
            ModelKind::Customers => CUSTOMER_SQL,
        }
    }
}

/// One entity's feature values, in the order of `ModelKind::numeric` and `categorical`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Values {
    pub numeric: Vec<Option<f64>>,
    pub categorical: Vec<Option<String>>,
}

/// A labelled row of the feature SQL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub key: String,
    pub values: Values,
    pub label: bool,
}

/// The points in time one feature query is evaluated at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Customers: features as of this time. Leads: leads first contacted from here…
    pub from: DateTime<Utc>,
    /// …(leads) until here, exclusive. Customers: equal to `from`.
    pub until: DateTime<Utc>,
    /// The label looks no further than this.
    pub label_until: DateTime<Utc>,
    pub horizon_days: i64,
}

fn literal(t: &DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// The feature SQL of `kind` with the window's times and the bronze tables of the CDC
/// topics `<cdc_prefix>.ecommerce.*` filled in.
pub fn render(kind: ModelKind, w: &Window, cdc_prefix: &str) -> String {
    kind.sql()
        .replace("{{bronze}}", &format!("bronze_{}", cdc_prefix.replace(['.', '-'], "_")))
        .replace("{{as_of}}", &literal(&w.from))
        .replace("{{from}}", &literal(&w.from))
        .replace("{{until}}", &literal(&w.until))
        .replace("{{label_until}}", &literal(&w.label_until))
        .replace("{{horizon_days}}", &w.horizon_days.to_string())
}

/// The labelled rows of `kind` for window `w`, ordered by key, from the lake's tables.
pub async fn examples(lake: &crate::lake::location::Lake, kind: ModelKind, w: &Window, cdc_prefix: &str) -> Result<Vec<Example>> {
    let ctx = crate::lake::query::context(lake).await?;
    let sql = render(kind, w, cdc_prefix);
    let batches = crate::lake::query::batches(&ctx, &sql).await.with_context(|| format!("computing the {} features (are the lake tables there? `funnel sql \"SHOW TABLES\"`)", kind.name()))?;
    let mut out = vec![];
    for b in &batches {
        out.extend(rows(kind, b)?);
    }
    Ok(out)
}

fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    b.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| anyhow::anyhow!("the feature SQL returned no column {name}"))
}

fn rows(kind: ModelKind, b: &RecordBatch) -> Result<Vec<Example>> {
    use deltalake::arrow::compute::cast;
    let keys = cast(column(b, "key")?, &DataType::Utf8)?;
    let labels = cast(column(b, "label")?, &DataType::Int64)?;
    let numeric = kind.numeric().iter().map(|c| Ok(cast(column(b, c)?, &DataType::Float64)?)).collect::<Result<Vec<_>>>()?;
    let categorical = kind.categorical().iter().map(|c| Ok(cast(column(b, c)?, &DataType::Utf8)?)).collect::<Result<Vec<_>>>()?;
    let (keys, labels) = (keys.as_string::<i32>(), labels.as_primitive::<Int64Type>());
    Ok((0..b.num_rows())
        .map(|i| Example {
            key: keys.value(i).to_string(),
            label: labels.value(i) == 1,
            values: Values {
                numeric: numeric.iter().map(|a| a.as_primitive::<Float64Type>()).map(|a| a.is_valid(i).then(|| a.value(i))).collect(),
                categorical: categorical.iter().map(|a| a.as_string::<i32>()).map(|a| a.is_valid(i).then(|| a.value(i).to_string())).collect(),
            },
        })
        .collect())
}

/// A numeric feature: log-scaled (x ≥ 0 everywhere here, heavy right tails), a missing value
/// replaced by the training mean and flagged, then standardised with the training mean/sd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumericEncoding {
    pub name: String,
    pub mean: f64,
    pub sd: f64,
    /// Training rows had missing values: a 0/1 "missing" column follows.
    pub missing_flag: bool,
}

/// A categorical feature: one 0/1 column per value seen at least `min_count` times in
/// training; rarer and unseen values are all zeros (the intercept's level).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoricalEncoding {
    pub name: String,
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    pub numeric: Vec<NumericEncoding>,
    pub categorical: Vec<CategoricalEncoding>,
}

fn log1p(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

impl Encoder {
    pub fn fit(kind: ModelKind, train: &[Example], min_count: usize) -> Encoder {
        let numeric = kind
            .numeric()
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let xs: Vec<f64> = train.iter().filter_map(|e| e.values.numeric[j]).map(log1p).collect();
                let n = xs.len().max(1) as f64;
                let mean = xs.iter().sum::<f64>() / n;
                let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
                NumericEncoding { name: name.to_string(), mean, sd, missing_flag: xs.len() < train.len() }
            })
            .collect();
        let categorical = kind
            .categorical()
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for e in train {
                    if let Some(v) = &e.values.categorical[j] {
                        *counts.entry(v.as_str()).or_default() += 1;
                    }
                }
                let mut values: Vec<(&str, usize)> = counts.into_iter().filter(|(_, c)| *c >= min_count).collect();
                values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                CategoricalEncoding { name: name.to_string(), values: values.into_iter().map(|(v, _)| v.to_string()).collect() }
            })
            .collect();
        Encoder { numeric, categorical }
    }

    /// Names of the encoded columns, in order.
    pub fn columns(&self) -> Vec<String> {
        let mut out = vec![];
        for n in &self.numeric {
            out.push(n.name.clone());
            if n.missing_flag {
                out.push(format!("{}_missing", n.name));
            }
        }
        for c in &self.categorical {
            out.extend(c.values.iter().map(|v| format!("{}={v}", c.name)));
        }
        out
    }

    pub fn encode(&self, v: &Values) -> Vec<f64> {
        // Counted, not `columns().len()`: that formats every column name, per scored record.
        let width = self.numeric.iter().map(|n| 1 + n.missing_flag as usize).sum::<usize>() + self.categorical.iter().map(|c| c.values.len()).sum::<usize>();
        let mut out = Vec::with_capacity(width);
        for (n, x) in self.numeric.iter().zip(&v.numeric) {
            let x = x.filter(|x| x.is_finite());
            out.push(x.map_or(0.0, |x| (log1p(x) - n.mean) / n.sd));
            if n.missing_flag {
                out.push(if x.is_none() { 1.0 } else { 0.0 });
            }
        }
        for (c, x) in self.categorical.iter().zip(&v.categorical) {
            out.extend(c.values.iter().map(|v| if x.as_deref() == Some(v.as_str()) { 1.0 } else { 0.0 }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: Option<f64>, c: &str) -> Example {
        let mut numeric = vec![None; ModelKind::Customers.numeric().len()];
        numeric[0] = n;
        Example { key: "k".into(), label: false, values: Values { numeric, categorical: vec![Some(c.into()), None] } }
    }

    #[test]
    fn encoding_is_fitted_on_training_rows_and_leaves_rare_values_out() {
        let train = vec![ex(Some(0.0), "SP"), ex(Some((1f64).exp_m1() * 1.0), "SP"), ex(None, "RJ")];
        let enc = Encoder::fit(ModelKind::Customers, &train, 2);
        assert_eq!(enc.categorical[0].values, vec!["SP".to_string()]);
        assert!(enc.numeric[0].missing_flag);
        assert_eq!((enc.numeric[0].mean, enc.numeric[0].sd), (0.5, 0.5));
        let cols = enc.columns();
        let x = enc.encode(&ex(None, "RJ").values);
        assert_eq!(x.len(), cols.len());
        assert_eq!(&x[..2], &[0.0, 1.0], "missing: the mean (0 after standardising) and the flag");
        let sp = cols.iter().position(|c| c == "state=SP").unwrap();
        assert_eq!(x[sp], 0.0, "a rare value is all zeros");
    }
}
