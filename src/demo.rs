//! `funnel demo`: the whole topology on the local stack, end to end, saying what it did.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Endpoints, DEFAULT_HTTP_PORT};
use crate::olist::{db, seed, tables::TABLES};
use crate::stack::{self, StackDirs};

/// The demo's Redis key prefix (the default of `run cache` and `serve`).
const DEMO_REDIS_PREFIX: &str = "c360";

pub async fn run(ep: &Endpoints, dirs: &StackDirs, topology_dir: &Path, data_dir: Option<PathBuf>, synthetic_scale: u32) -> Result<()> {
    let started = Instant::now();
    println!("\n== 1/8 local stack");
    stack::up(dirs).await?;
    stack::stop_processors(dirs)?;

    println!("\n== 2/8 seed the olist database ({})", match &data_dir {
        Some(d) => format!("real Olist files from {}, missing tables generated", d.display()),
        None => format!("synthetic, {synthetic_scale}k orders"),
    });
    let report = seed::seed(&ep.source_pg_url, &seed::SeedOptions { dir: data_dir, synthetic_scale }).await?;
    let source_rows: u64 = report.tables.iter().map(|t| t.1).sum();
    println!("loaded {source_rows} rows into {} tables", report.tables.len());

    println!("\n== 3/8 topics and schemas from topology/");
    // A fresh source means a fresh pipeline: drop the previous run's slot, topics and lake.
    crate::cdc::reset(&ep.source_pg_url, &ep.brokers, &ep.registry_url, "olist").await?;
    crate::cdc::reset(&ep.source_pg_url, &ep.brokers, &ep.registry_url, "relay").await?;
    // The relay's tables too (its processors migrate them again at start).
    db::connect(&ep.source_pg_url).await?.batch_execute("DROP PUBLICATION IF EXISTS funnel_relay; DROP SCHEMA IF EXISTS relay CASCADE").await.context("clearing the relay schema")?;
    let stale: Vec<String> = crate::kafka::admin::list_topics(&ep.brokers)?
        .into_iter()
        .filter(|t| {
            ["olist.", "_funnel.", "funnel.dlq.", "ecommerce.seller.", "marketing.", "dom.", "cdc.relay.", "relay.", "campaign."].iter().any(|p| t.starts_with(p))
        })
        .collect();
    crate::kafka::admin::delete_topics(&ep.brokers, &stale).await?;
    let lake = ep.lake()?;
    for layer in ["bronze", "silver", "gold"] {
        let dir = lake.layer(layer)?;
        crate::lake::location::remove(&dir).await.with_context(|| format!("clearing {dir}"))?;
    }
    let models = ep.models_dir()?;
    std::fs::remove_dir_all(&models).with_context(|| format!("clearing {}", models.display()))?;
    crate::c360::cache::clear(&ep.redis_url, DEMO_REDIS_PREFIX).await?;
    let topology = crate::topology::Topology::load(topology_dir)?;
    let registry = crate::registry::RegistryClient::new(&ep.registry_url);
    let created = topology.create(&ep.brokers, &registry).await?;
    println!("{} topics declared, {} schemas registered", topology.topics.len(), created.iter().filter(|c| c.1.starts_with("id")).count());

    println!(
        "\n== 4/8 processors cdc, bronze, loader, seller-metrics, leads, leads-gold, domain, c360, lake, cache and the web front (background, logs in {})",
        dirs.state()?.display()
    );
    // The HTTP services (loader API, serve) take the token `stack up` wrote.
    let token_file = dirs.state()?.join(crate::runtime::auth::STACK_TOKEN_FILE);
    let funnel = |args: &[&str]| -> Result<Command> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(args)
            .env("FUNNEL_BROKERS", &ep.brokers)
            .env("FUNNEL_SCHEMA_REGISTRY_URL", &ep.registry_url)
            .env("FUNNEL_SOURCE_PG_URL", &ep.source_pg_url)
            .env("FUNNEL_REDIS_URL", &ep.redis_url)
            .env("FUNNEL_REDIS_PREFIX", DEMO_REDIS_PREFIX)
            .env("FUNNEL_LAKE_DIR", lake.to_string())
            .env("FUNNEL_MODELS_DIR", &models)
            .env(crate::runtime::auth::TOKEN_FILE_ENV, &token_file);
        Ok(cmd)
    };
    let port = DEFAULT_HTTP_PORT.to_string();
    stack::start_detached(dirs, "processors", funnel(&["run", "cdc", "bronze", "loader", "seller-metrics", "leads", "leads-gold", "domain", "c360", "lake", "cache", "--http-port", &port])?)?;
    stack::start_detached(dirs, "serve", funnel(&["serve", "--topology-dir", &topology_dir.to_string_lossy()])?)?;
    wait_for_bronze(&lake, source_rows, dirs).await?;
    let mqls = report.tables.iter().find(|t| t.0 == "marketing.marketing_qualified_leads").map(|t| t.1).unwrap_or(0);
    wait_for_leads(&lake, mqls, dirs).await?;
    let orders = report.tables.iter().find(|t| t.0 == "ecommerce.orders").map(|t| t.1).unwrap_or(0);
    wait_for_rows("orders → dom.order.created.v1 [{bar:30}] {pos}/{len} orders", "announced orders", orders, Duration::from_secs(900), dirs, || async {
        let b = ep.brokers.clone();
        tokio::task::spawn_blocking(move || crate::summary::count_records(&b, "dom.order.created.v1")).await.ok().and_then(Result::ok).map(|c| c.0 as i64).unwrap_or(0)
    })
    .await?;
    // Every order counted in gold c360 (profiles arrive first; the orders then fill them in).
    wait_for_rows("orders → c360 → gold c360 [{bar:30}] {pos}/{len} orders", "orders in gold c360", orders, Duration::from_secs(900), dirs, || async {
        crate::summary::c360_orders(&lake).await.unwrap_or(0)
    })
    .await?;

    println!("\n== 5/8 propensity: train the lead and customer models on the lake, score every lead and customer (log propensity.log)");
    crate::propensity::demo::run(ep, dirs, &funnel).await?;

    println!("\n== 6/8 events relay: OMS sample → inbox → CDC → router → delivery (sGTM ga4 + custom clients, Meta CAPI; logs relay.log, relay-serve.log)");
    crate::relay::demo::run(ep, dirs, &funnel).await?;

    println!("\n== 7/8 email campaign: a customer-360 segment → send requests → 2 sender workers → the stack's SMTP server (logs campaigns-*.log)");
    crate::campaigns::demo::run(ep, dirs, &funnel).await?;

    println!("\n== 8/8 summary");
    crate::summary::print(ep, "olist").await?;
    crate::summary::print_leads(&lake).await?;
    crate::summary::print_domain(&ep.brokers)?;
    crate::summary::print_c360(&lake).await?;
    println!(
        "\ndone in {:.0?}. The processors keep running: change rows in Postgres and watch them arrive.\n\
         \x20 psql {}\n\
         \x20 funnel summary                                  # counts again\n\
         \x20 curl -s http://127.0.0.1:{DEFAULT_HTTP_PORT}/metrics | grep funnel_   # processor metrics\n\
         \x20 funnel cdc status                               # CDC progress\n\
         \x20 funnel load && funnel health                    # the data loader's API (port {DEFAULT_HTTP_PORT})\n\
         \x20 open http://127.0.0.1:{serve_port}/                 # customer 360 page (Redis), JSON→Avro, /api/sql\n\
         \x20                                                 # (user funnel, password: the token in {})\n\
         \x20 funnel sql \"SELECT segment, count(*) FROM gold_c360 GROUP BY 1\"\n\
         \x20 curl -u funnel:$(cat {}) localhost:8088/admin/v1/storefronts   # the relay's admin API
         \x20 funnel campaigns status <id>                    # a campaign's counts (API on port 8090)
         \x20 funnel sql \"SELECT * FROM gold_campaign_stats\"\n\
         \x20 funnel sql \"SELECT model, version, scorer, roc_auc, pr_auc FROM gold_propensity_metrics\"\n\
         \x20 lake: {}\n\
         stop everything with:  funnel stack down",
        started.elapsed(),
        db::redact(&ep.source_pg_url),
        token_file.display(),
        token_file.display(),
        lake,
        serve_port = crate::serve::DEFAULT_PORT,
    );
    Ok(())
}

/// Wait until every source row is in bronze, with a progress bar.
async fn wait_for_bronze(lake: &crate::lake::location::Lake, expected: u64, dirs: &StackDirs) -> Result<()> {
    wait_for_rows("snapshot → topics → bronze [{bar:30}] {pos}/{len} rows {per_sec}", "bronze rows", expected, Duration::from_secs(1800), dirs, || async {
        let mut rows = 0i64;
        for t in TABLES {
            rows += crate::summary::delta_rows(&crate::bronze::table_path(lake, &t.topic())).await.ok().flatten().unwrap_or(0);
        }
        rows
    })
    .await
}

/// Wait until the gold lead dimension has a row per MQL (seller metrics may still be settling).
async fn wait_for_leads(lake: &crate::lake::location::Lake, expected: u64, dirs: &StackDirs) -> Result<()> {
    wait_for_rows("leads → gold m_dim.lead [{bar:30}] {pos}/{len} leads", "gold m_dim.lead rows", expected, Duration::from_secs(900), dirs, || async {
        crate::summary::delta_rows(&crate::leads::gold_path(lake)).await.ok().flatten().unwrap_or(0)
    })
    .await
}

/// Poll `count` with a progress bar until it reaches `expected`; fail when the background
/// processors died or `timeout` passed.
async fn wait_for_rows<F, Fut>(template: &str, what: &str, expected: u64, timeout: Duration, dirs: &StackDirs, count: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let bar = ProgressBar::new(expected);
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    let deadline = Instant::now() + timeout;
    loop {
        let rows = count().await;
        bar.set_position(rows.max(0) as u64);
        if rows as u64 >= expected {
            bar.finish();
            return Ok(());
        }
        if !stack::processors_running(dirs) {
            bail!("the processors stopped; see {}", dirs.state()?.join("processors.log").display());
        }
        if Instant::now() > deadline {
            bail!("{rows} of {expected} {what} after {} s; see the processors' log", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
