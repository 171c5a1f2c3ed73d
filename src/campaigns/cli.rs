//! `funnel campaigns …`: the service, the sender workers and the command-line client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use super::records::Codec;
use super::sender::{Sender, SenderConfig, PROCESSOR};
use super::topics::{CampaignTopics, CampaignsConfig, Kind};
use crate::config::Endpoints;
use crate::kafka::batch_producer::Delivery;
use crate::registry::RegistryClient;
use crate::runtime::processor::{self, LoopConfig};

#[derive(clap::Subcommand, Debug)]
pub enum CampaignsAction {
    /// The campaigns service: the API under /api/v1/campaigns, the tracking and one-click
    /// unsubscribe routes (/t/o, /t/c, /u — public, signed tokens), the planner (starts due
    /// campaigns, expands audiences into send requests, finishes them, publishes their
    /// counts) and the gold/campaign_stats table.
    ///
    /// Credentials: HTTP Basic with user funnel and the API token as password (or a bearer
    /// token): FUNNEL_API_TOKEN, FUNNEL_API_TOKEN_FILE or .funnel/api-token. Links are signed
    /// with FUNNEL_CAMPAIGN_SIGNING_KEY(_FILE) (.funnel/campaign-signing-key on the stack).
    ///
    ///   curl -u funnel:$(cat .funnel/api-token) -H 'content-type: application/json' \
    ///     -d '{"name":"Dormant","sender":"Shop <news@shop.example>","subject":"We miss you in {{ city }}",
    ///          "text":"{{ order_count }} orders so far","audience":{"c360":{"segment":["dormant"]}},
    ///          "scheduled_at":"2026-12-02T12:00:00Z"}' localhost:8090/api/v1/campaigns
    #[command(verbatim_doc_comment)]
    Serve {
        #[command(flatten)]
        cfg: super::service::ServeConfig,
        #[command(flatten)]
        campaigns: CampaignsConfig,
        #[command(flatten)]
        ns: crate::topology::names::NamespaceArg,
    },
    /// A sender worker: renders and mails the send requests of its partitions (run several:
    /// they share the work as one consumer group). /metrics and /health on --http-port.
    Send {
        #[command(flatten)]
        cfg: SenderConfig,
        #[command(flatten)]
        campaigns: CampaignsConfig,
        #[command(flatten)]
        ns: crate::topology::names::NamespaceArg,
        /// Port for /metrics and /health (0 = off).
        #[arg(long, env = "FUNNEL_HTTP_PORT", default_value_t = 0)]
        http_port: u16,
        /// Exit on failure instead of restarting in this process (for a supervisor).
        #[arg(long, env = "FUNNEL_EXIT_ON_FAILURE")]
        exit_on_failure: bool,
    },
    /// Submit campaigns (the original's submit tool): the template file is a JSON object with
    /// name, sender, subject, html and/or text (and optionally batch_size); the recipients are
    /// a JSON list or a CSV file with an `email` column, or a customer-360 audience.
    ///
    ///   funnel campaigns submit --template campaign.json --recipients people.csv --count 3
    ///   funnel campaigns submit --template campaign.json --segment dormant --at 2026-12-24T09:00:00Z
    #[command(verbatim_doc_comment)]
    Submit {
        #[arg(long)]
        template: PathBuf,
        /// JSON list of recipient objects, or CSV with a header (one column is `email`).
        #[arg(long, conflicts_with_all = ["segment", "stage"])]
        recipients: Option<PathBuf>,
        /// Customer-360 segment(s) (repeat the flag), e.g. dormant, repeat-buyer.
        #[arg(long)]
        segment: Vec<String>,
        /// Customer-360 lifecycle stage(s), e.g. customer, churn-risk.
        #[arg(long)]
        stage: Vec<String>,
        /// How many campaigns to submit (each named "<name> #i").
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Start time (RFC 3339); default: now.
        #[arg(long)]
        at: Option<String>,
        #[arg(long, env = "FUNNEL_CAMPAIGNS_URL", default_value = "http://127.0.0.1:8090")]
        url: String,
    },
    /// A campaign's state and counts per recipient outcome and engagement.
    Status {
        id: String,
        #[arg(long, env = "FUNNEL_CAMPAIGNS_URL", default_value = "http://127.0.0.1:8090")]
        url: String,
    },
}

pub async fn run(action: CampaignsAction, ep: &Endpoints, stack_dir: &Path) -> Result<()> {
    match action {
        CampaignsAction::Serve { cfg, campaigns, ns } => {
            let topics = CampaignTopics::new(&campaigns, &ns.namespace);
            super::service::run(ep, stack_dir, ep.lake()?, topics, &cfg).await
        }
        CampaignsAction::Send { cfg, campaigns, ns, http_port, exit_on_failure } => {
            crate::runtime::http::spawn(&ep.bind_address, http_port, None).await?;
            let topics = CampaignTopics::new(&campaigns, &ns.namespace);
            crate::runtime::supervise::supervise(PROCESSOR, exit_on_failure, || run_sender(ep, stack_dir, topics.clone(), cfg.clone())).await
        }
        CampaignsAction::Submit { template, recipients, segment, stage, count, at, url } => submit(stack_dir, &url, &template, recipients.as_deref(), segment, stage, count, at).await,
        CampaignsAction::Status { id, url } => print_status(stack_dir, &url, &id).await,
    }
}

/// One sender worker (the loop restarts it after a failure).
pub async fn run_sender(ep: &Endpoints, stack_dir: &Path, topics: CampaignTopics, cfg: SenderConfig) -> Result<()> {
    let registry = RegistryClient::waiting_for(&ep.registry_url, PROCESSOR);
    let codec = Arc::new(Codec::open(&registry, &topics).await?);
    let view = super::view::follow(&ep.brokers, codec.clone(), &[Kind::Definition, Kind::Task, Kind::Ledger, Kind::Suppression]).await?;
    let links = Arc::new(super::tracking::Links::load(stack_dir, &cfg.public_url)?);
    let smtp = super::smtp::Smtp::new(&cfg.smtp_url, cfg.concurrency as u32, std::time::Duration::from_secs(cfg.timeout_s))?;
    let producer: rdkafka::producer::FutureProducer = crate::kafka::producer_config(&ep.brokers, None).create()?;
    crate::kafka::admin::ensure_topics(&ep.brokers, &[crate::kafka::admin::TopicSpec { name: topics.names.dead_letters(PROCESSOR), partitions: 1, compact: false }]).await?;
    let mut inputs = vec![topics.requested.clone()];
    inputs.extend((2..=topics.max_attempts).map(|n| topics.retry(n)));
    let transform = Sender::new(codec, view, smtp, producer, links, cfg);
    let lc = LoopConfig { batch_max: 1000, batch_ms: 100, ..LoopConfig::namespaced(PROCESSOR, &ep.brokers, inputs, Delivery::AtLeastOnce, &topics.names) };
    processor::run(lc, transform).await.context(PROCESSOR)
}

fn client(stack_dir: &Path) -> Result<(reqwest::Client, String)> {
    let token = match crate::runtime::auth::read_secret(crate::runtime::auth::TOKEN_ENV, crate::runtime::auth::TOKEN_FILE_ENV, &stack_dir.join(crate::runtime::auth::STACK_TOKEN_FILE)) {
        Ok(Some((t, _))) => t.trim().to_string(),
        Ok(None) => bail!("no API token: set FUNNEL_API_TOKEN or FUNNEL_API_TOKEN_FILE, or run `funnel stack up`"),
        Err((p, e)) => bail!("reading the API token from {}: {e}", p.display()),
    };
    Ok((reqwest::Client::builder().timeout(std::time::Duration::from_secs(120)).build()?, token))
}

/// The answer's JSON, or an error with the service's message.
async fn answer(r: reqwest::Response) -> Result<Value> {
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{status}: {}", v.get("message").and_then(Value::as_str).unwrap_or("(no message)"));
    }
    Ok(v)
}

/// Recipients from a JSON list or a CSV file with a header.
pub fn read_recipients(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).with_context(|| format!("{}: a JSON list of recipient objects", path.display()));
    }
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    let headers = rd.headers().with_context(|| format!("{}: CSV header", path.display()))?.clone();
    if !headers.iter().any(|h| h == "email") {
        bail!("{}: no `email` column in the CSV header", path.display());
    }
    rd.records()
        .enumerate()
        .map(|(i, r)| {
            let r = r.with_context(|| format!("{}: CSV row {}", path.display(), i + 2))?;
            Ok(headers.iter().zip(r.iter()).map(|(h, v)| (h.to_string(), Value::String(v.to_string()))).collect())
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn submit(stack_dir: &Path, url: &str, template: &Path, recipients: Option<&Path>, segment: Vec<String>, stage: Vec<String>, count: u32, at: Option<String>) -> Result<()> {
    let text = std::fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
    let mut base: Map<String, Value> = serde_json::from_str(&text).with_context(|| format!("{}: a JSON object (name, sender, subject, html/text)", template.display()))?;
    let audience = match recipients {
        Some(p) => json!({"recipients": read_recipients(p)?}),
        None => json!({"c360": {"segment": segment, "lifecycle_stage": stage}}),
    };
    base.insert("audience".into(), audience);
    base.insert("scheduled_at".into(), Value::String(at.unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))));
    let name = base.get("name").and_then(Value::as_str).unwrap_or("campaign").to_string();
    let (http, token) = client(stack_dir)?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["id", "name", "state", "scheduled_at"]);
    for i in 1..=count {
        let mut body = base.clone();
        if count > 1 {
            body.insert("name".into(), Value::String(format!("{name} #{i}")));
        }
        let r = http.post(format!("{}/api/v1/campaigns", url.trim_end_matches('/'))).bearer_auth(&token).json(&body).send().await.with_context(|| format!("POST {url}/api/v1/campaigns"))?;
        let v = answer(r).await.with_context(|| format!("campaign {i} of {count}"))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        table.add_row(vec![s("id"), s("name"), s("state"), s("scheduled_at")]);
    }
    println!("{table}");
    Ok(())
}

async fn print_status(stack_dir: &Path, url: &str, id: &str) -> Result<()> {
    let (http, token) = client(stack_dir)?;
    let r = http.get(format!("{}/api/v1/campaigns/{id}/status", url.trim_end_matches('/'))).bearer_auth(&token).send().await.with_context(|| format!("GET {url}"))?;
    let v = answer(r).await?;
    println!("campaign {id} ({}): {}", v["name"].as_str().unwrap_or(""), v["state"].as_str().unwrap_or(""));
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["recipients", "count", "engagement", "count"]);
    let pick = |group: &str, keys: &[&'static str]| -> Vec<(&'static str, i64)> { keys.iter().map(|k| (*k, v[group][*k].as_i64().unwrap_or(0))).collect() };
    let left = pick("recipients", &["requested", "pending", "sent", "retrying", "failed", "bounced", "suppressed", "skipped", "cancelled"]);
    let right = pick("engagement", &["opens", "unique_opens", "unique_human_opens", "clicks", "unique_clicks", "unique_human_clicks", "unsubscribes"]);
    for i in 0..left.len().max(right.len()) {
        let cell = |x: Option<&(&str, i64)>, name: bool| x.map(|(k, n)| if name { k.to_string() } else { n.to_string() }).unwrap_or_default();
        table.add_row(vec![cell(left.get(i), true), cell(left.get(i), false), cell(right.get(i), true), cell(right.get(i), false)]);
    }
    for col in [1, 3] {
        if let Some(c) = table.column_mut(col) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    println!("{table}");
    Ok(())
}
