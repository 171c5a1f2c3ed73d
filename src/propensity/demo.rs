//! The propensity part of `funnel demo`: both models trained on the demo's lake, the scoring
//! processor started, and what came out: each model's held-out metrics against its baseline,
//! the score distribution per lifecycle stage and per lead channel.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::features::ModelKind;
use super::train::TrainArgs;
use crate::config::Endpoints;
use crate::stack::{self, StackDirs};

async fn rows(lake: &crate::lake::location::Lake, sql: &str) -> i64 {
    let Ok(ctx) = crate::lake::query::context(lake).await else { return 0 };
    crate::lake::query::rows(&ctx, sql).await.ok().and_then(|r| r.first().and_then(|r| r.get("n")).and_then(|n| n.as_i64())).unwrap_or(0)
}

pub async fn run(ep: &Endpoints, dirs: &StackDirs, funnel: &dyn Fn(&[&str]) -> Result<Command>) -> Result<()> {
    let (lake, models) = (ep.lake()?, ep.models_dir()?);
    for model in [ModelKind::Leads, ModelKind::Customers] {
        let args = TrainArgs { model, cutoff: None, horizon_days: None, alpha: 1.0, seed: 42, cdc_topic_prefix: "olist".into(), min_category_count: 20 };
        let t0 = Instant::now();
        let trained = super::train::train(&lake, &models, &args).await?;
        println!("\n{}\ntrained in {:.1} s, saved in {}", super::cli::report(&trained.artefact), t0.elapsed().as_secs_f64(), trained.dir.display());
    }
    stack::start_detached(dirs, "propensity", funnel(&["run", "propensity", "--http-port", "9468"])?)?;
    let customers = rows(&lake, "SELECT count(*) AS n FROM gold_c360").await;
    let leads = rows(&lake, "SELECT count(*) AS n FROM gold_m_dim_lead").await;
    let bar = ProgressBar::new((customers + leads) as u64);
    bar.set_style(ProgressStyle::with_template("customers + leads → scores → gold [{bar:30}] {pos}/{len} current {per_sec}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let t0 = Instant::now();
    loop {
        // A score counts once it was made from its customer's or lead's current row (the scorer
        // reads every version of a customer in order, the early ones first: a count alone
        // would print the distribution of half-built profiles).
        let scored = rows(&lake, "SELECT count(*) AS n FROM gold_c360 c JOIN gold_c360_propensity p ON p.customer_id = c.customer_id AND p.lifecycle_stage = c.lifecycle_stage AND p.segment = c.segment AND p.scored_at = c.stream_time").await
            + rows(&lake, "SELECT count(*) AS n FROM gold_m_dim_lead l JOIN gold_m_dim_lead_score s ON s.lead_id = l.lead_id AND s.is_closed_deal = l.is_closed_deal").await;
        bar.set_position(scored.max(0) as u64);
        if scored >= customers + leads {
            bar.finish();
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("{scored} of {} scores in gold after 600 s; see {}", customers + leads, dirs.state()?.join("propensity.log").display());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ctx = crate::lake::query::context(&lake).await?;
    for (title, sql) in [
        (
            "repurchase propensity per lifecycle stage (gold_c360_propensity)",
            "SELECT lifecycle_stage, count(*) AS customers, round(avg(score), 4) AS mean, round(approx_percentile_cont(score, 0.1), 4) AS p10, \
             round(approx_percentile_cont(score, 0.5), 4) AS median, round(approx_percentile_cont(score, 0.9), 4) AS p90, round(max(score), 4) AS max \
             FROM gold_c360_propensity GROUP BY 1 ORDER BY mean DESC",
        ),
        (
            "lead conversion propensity per channel, open leads (gold_m_dim_lead_score, basis model)",
            "SELECT advertising_channel, count(*) AS leads, round(avg(score), 4) AS mean, round(approx_percentile_cont(score, 0.5), 4) AS median, \
             round(max(score), 4) AS max FROM gold_m_dim_lead_score WHERE basis = 'model' GROUP BY 1 ORDER BY mean DESC",
        ),
    ] {
        let batches = crate::lake::query::batches(&ctx, sql).await?;
        println!("\n{title}\n{}", crate::lake::query::to_table(&batches)?);
    }
    Ok(())
}
