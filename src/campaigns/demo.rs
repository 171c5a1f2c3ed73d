//! The campaigns' part of `funnel demo`: the service and two sender workers on the stack's SMTP
//! server (aiosmtpd into .funnel/mail), a campaign to the largest customer-360 segment of the
//! demo data, its progress, and its counts as the status API and the Maildir see them.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::config::Endpoints;
use crate::stack::{self, StackDirs};

/// The demo mails this many people of the segment (the real data's largest segment holds
/// ~70 000: minutes of mail for a demo that shows the same thing in seconds).
const DEMO_RECIPIENTS: u64 = 2000;

pub async fn run(ep: &Endpoints, dirs: &StackDirs, funnel: &dyn Fn(&[&str]) -> Result<Command>) -> Result<()> {
    let state = dirs.state()?;
    let creds = crate::runtime::auth::ApiCredentials::load(&state)?;
    let key_file = state.join(super::tracking::STACK_KEY_FILE);
    let with_key = |args: &[&str]| -> Result<Command> {
        let mut c = funnel(args)?;
        c.env(super::tracking::KEY_FILE_ENV, &key_file);
        Ok(c)
    };
    stack::start_detached(dirs, "campaigns-serve", with_key(&["campaigns", "serve"])?)?;
    stack::start_detached(dirs, "campaigns-send", with_key(&["campaigns", "send", "--http-port", "9466"])?)?;
    stack::start_detached(dirs, "campaigns-send-2", with_key(&["campaigns", "send", "--http-port", "9467"])?)?;
    let base = format!("http://127.0.0.1:{}", super::service::DEFAULT_PORT);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let t0 = Instant::now();
    while !matches!(http.get(format!("{base}/health")).send().await, Ok(r) if r.status() == 200) {
        if t0.elapsed() > Duration::from_secs(90) {
            bail!("funnel campaigns serve did not start; see {}", state.join("campaigns-serve.log").display());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The largest segment of people who bought something.
    let ctx = crate::lake::query::context(&ep.lake()?).await?;
    let rows = crate::lake::query::rows(&ctx, "SELECT segment, count(*) AS n FROM gold_c360 WHERE order_count > 0 GROUP BY segment ORDER BY n DESC, segment LIMIT 1").await?;
    let segment = rows.first().and_then(|r| r.get("segment")).and_then(Value::as_str).context("gold c360 has no customers with orders")?.to_string();
    let body = json!({
        "name": format!("demo: {segment}"), "sender": "funnel demo <news@shop.example>", "batch_size": 100,
        "subject": "{{ city }}: thank you for {{ order_count }} order(s)",
        "text": "Hello {{ customer_id }} ({{ segment }}), see what is new: {{ track('https://shop.example/new') }}\nUnsubscribe: {{ unsubscribe_url }}",
        "html": "<p>Hello from {{ city }}!</p><p><a href=\"{{ track('https://shop.example/new') }}\">What is new</a></p>",
        "audience": {"c360": {"segment": [segment], "limit": DEMO_RECIPIENTS}},
        "scheduled_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let r = http.post(format!("{base}/api/v1/campaigns")).header("authorization", creds.authorization()).json(&body).send().await.context("POST /api/v1/campaigns")?;
    let status = r.status();
    let created: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("creating the demo campaign: {status} {created}");
    }
    let id = created["id"].as_str().context("campaign without id")?.to_string();
    println!("campaign {id} to the first {DEMO_RECIPIENTS} people of customer-360 segment {segment:?}: POST /api/v1/campaigns → {status}");
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("send requests → SMTP [{bar:30}] {pos}/{len} recipients {per_sec}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let t0 = Instant::now();
    let s = loop {
        let s: Value = http.get(format!("{base}/api/v1/campaigns/{id}/status")).header("authorization", creds.authorization()).send().await?.json().await.unwrap_or(Value::Null);
        let r = &s["recipients"];
        bar.set_length(r["requested"].as_u64().unwrap_or(0));
        bar.set_position(r["requested"].as_u64().unwrap_or(0).saturating_sub(r["pending"].as_u64().unwrap_or(0)));
        if ["finished", "failed", "cancelled"].contains(&s["state"].as_str().unwrap_or("")) {
            bar.finish();
            break s;
        }
        if t0.elapsed() > Duration::from_secs(900) {
            bail!("the demo campaign did not finish within 900 s: {s}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["campaign", "state", "requested", "sent", "failed", "bounced", "suppressed", "skipped", "seconds"]);
    let r = &s["recipients"];
    let n = |k: &str| r[k].as_i64().unwrap_or(0).to_string();
    table.add_row(vec![s["name"].as_str().unwrap_or("").to_string(), s["state"].as_str().unwrap_or("").to_string(), n("requested"), n("sent"), n("failed"), n("bounced"), n("suppressed"), n("skipped"), format!("{:.1}", t0.elapsed().as_secs_f64())]);
    for i in 2..=8 {
        if let Some(c) = table.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    println!("{table}");
    let maildir = state.join("mail").join("new");
    let files = std::fs::read_dir(&maildir).map(|d| d.count()).unwrap_or(0);
    println!("the stack's SMTP server holds {files} mails in {} (every run's)", maildir.display());
    if s["state"] != "finished" {
        bail!("the demo campaign ended {}: {}", s["state"], s["detail"]);
    }
    Ok(())
}
