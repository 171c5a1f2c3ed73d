//! `funnel bench campaigns`: mails/s funnel's sender workers deliver to a local SMTP sink
//! (requests on the broker, the view caught up per batch, rendering with tracking links,
//! pooled SMTP, ledger records produced and acknowledged) ÷ mails/s of a plain SMTP client
//! (the same lettre pool and concurrency) sending the same rendered mails to the same sink,
//! measured in the same run. The sink is an in-process SMTP server that accepts and discards,
//! so it is not what limits either run; both figures are the sink's arrival window (first to
//! last mail). Scratch topics under the namespace `bench-campaigns-<time>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{report, Measurement};
use crate::campaigns::records::{Codec, Definition, SendRequest, Task};
use crate::campaigns::sender::{Sender, SenderConfig, PROCESSOR};
use crate::campaigns::smtp::Smtp;
use crate::campaigns::topics::{CampaignTopics, CampaignsConfig, Kind};
use crate::campaigns::tracking::Links;
use crate::kafka::batch_producer::{BatchProducer, Delivery};
use crate::registry::RegistryClient;
use crate::runtime::processor::{self, LoopConfig};

#[derive(clap::Args, Clone, Debug)]
pub struct CampaignsBenchConfig {
    /// Mails per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub mails: usize,
    /// Mails in flight per worker (--smtp-concurrency); the plain client keeps as many in
    /// flight as the two workers together.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The campaign's batch size (send requests per worker batch).
    #[arg(long, default_value_t = 100)]
    pub batch_size: i32,
}

/// Arrivals at the sink: count, and the first and last.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    window: Mutex<Option<(Instant, Instant)>>,
}

impl Seen {
    fn arrived(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        *w = Some(w.map_or((now, now), |(a, _)| (a, now)));
    }
    fn take(&self) -> (u64, f64) {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner()).take();
        (self.count.swap(0, Ordering::Relaxed), w.map(|(a, b)| (b - a).as_secs_f64()).unwrap_or_default())
    }
}

/// A minimal SMTP server: 250 to everything, DATA read to its end and dropped.
async fn sink() -> Result<(String, Arc<Seen>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("smtp://{}", listener.local_addr()?);
    let seen: Arc<Seen> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let seen = s.clone();
            // Without it, small replies wait for delayed ACKs (≈ 40 ms per SMTP command).
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r);
                let _ = w.write_all(b"220 bench sink ESMTP\r\n").await;
                let mut line = String::new();
                let mut in_data = false;
                loop {
                    line.clear();
                    match lines.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            seen.arrived();
                            let _ = w.write_all(b"250 2.0.0 OK\r\n").await;
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-bench\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((url, seen))
}

async fn wait_for(seen: &Seen, n: u64, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    while seen.count.load(Ordering::Relaxed) < n {
        anyhow::ensure!(t0.elapsed() < timeout, "only {} of {n} mails arrived within {} s", seen.count.load(Ordering::Relaxed), timeout.as_secs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn run(brokers: &str, registry_url: &str, cfg: &CampaignsBenchConfig) -> Result<()> {
    let n = cfg.mails.max(100);
    let (smtp_url, seen) = sink().await?;
    let ns = format!("bench-campaigns-{}", chrono::Utc::now().timestamp());
    let topics = CampaignTopics::new(&CampaignsConfig { max_attempts: 2, partitions: 4 }, &ns);
    let registry = RegistryClient::new(registry_url);
    let codec = Arc::new(Codec::open(&registry, &topics).await?);
    crate::kafka::admin::ensure_topics(brokers, &topics.specs()).await?;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
    let links = Arc::new(Links::new(&key, "https://t.bench.example")?);
    let now = chrono::Utc::now().timestamp_millis();
    let id = "bench".to_string();
    let def = Definition {
        campaign_id: id.clone(),
        name: "bench".into(),
        sender: "Bench <news@bench.example>".into(),
        subject: "Hello {{ first_name }} from {{ city }}".into(),
        html_template: Some("<html><body><p>Hello {{ first_name }} from {{ city }}, you have {{ order_count }} orders.</p><a href=\"{{ track('https://shop.example/new') }}\">new</a></body></html>".into()),
        text_template: Some("Hello {{ first_name }} from {{ city }}: {{ track('https://shop.example/new') }}".into()),
        batch_size: cfg.batch_size,
        audience: json!({"recipients": []}).to_string(),
        fields: vec!["city".into(), "first_name".into(), "order_count".into()],
        expire_after_ms: 86_400_000,
        created_at: now,
    };
    let requests: Vec<SendRequest> = (0..n)
        .map(|i| SendRequest {
            campaign_id: id.clone(),
            recipient_id: format!("r{i}"),
            email: format!("r{i}@customers.example"),
            fields: json!({"first_name": format!("R{i}"), "city": "São Paulo", "order_count": i % 7}).to_string(),
            batch: i as i32 / cfg.batch_size.max(1),
            attempt: 1,
            not_before: 0,
        })
        .collect();
    let producer = BatchProducer::new(brokers, "funnel-bench-campaigns", Delivery::AtLeastOnce).await?;
    let mut outs = vec![codec.definition(&def)?, codec.task(&Task { scheduled_at: Some(now), ..Task::new(&id, "schedule", now) })?];
    outs.push(codec.task(&Task { requested: Some(n as i64), ..Task::new(&id, "start", now) })?);
    producer.send(&outs).await?;
    for chunk in requests.chunks(5000) {
        let recs: Vec<_> = chunk.iter().map(|r| codec.request(r)).collect::<Result<_>>()?;
        producer.send(&recs).await?;
    }
    println!("{n} send requests on {} ({} partitions); sink {smtp_url}", topics.requested, topics.partitions);

    // ---- funnel's sender workers (two in this process, one consumer group) --------------
    let sender_cfg = SenderConfig {
        smtp_url: smtp_url.clone(),
        concurrency: cfg.concurrency,
        rate_per_sender: 0.0,
        backoff_base: Duration::from_secs(1),
        timeout_s: 30,
        public_url: links.base_url.clone(),
    };
    let mut workers = vec![];
    for _ in 0..2 {
        let view = crate::campaigns::view::follow(brokers, codec.clone(), &[Kind::Definition, Kind::Task, Kind::Ledger, Kind::Suppression]).await?;
        let smtp = Smtp::new(&smtp_url, cfg.concurrency as u32, Duration::from_secs(30))?;
        let p: rdkafka::producer::FutureProducer = crate::kafka::producer_config(brokers, None).create()?;
        let sender = Sender::new(codec.clone(), view, smtp, p, links.clone(), sender_cfg.clone());
        let lc = LoopConfig { batch_max: 1000, batch_ms: 100, ..LoopConfig::namespaced(PROCESSOR, brokers, vec![topics.requested.clone()], Delivery::AtLeastOnce, &topics.names) };
        workers.push(tokio::spawn(processor::run(lc, sender)));
    }
    wait_for(&seen, n as u64, Duration::from_secs(1800)).await.context("funnel's sender workers")?;
    let (mails, seconds) = seen.take();
    for w in workers {
        w.abort();
    }
    let funnel = Measurement { name: "funnel sender workers ×2".into(), records: mails, seconds };

    // ---- a plain SMTP client on the same rendered mails ---------------------------------
    let mail = crate::campaigns::compose::CampaignMail::compile(&def, links.clone()).map_err(anyhow::Error::msg)?;
    let messages = requests.iter().map(|r| mail.compose(r).map(|(m, _)| m)).collect::<Result<Vec<_>, String>>().map_err(anyhow::Error::msg)?;
    // The same mails in flight as the two workers together.
    let in_flight = 2 * cfg.concurrency;
    let plain = Smtp::new(&smtp_url, in_flight as u32, Duration::from_secs(30))?;
    let results: Vec<_> = futures::stream::iter(messages.iter().map(|m| plain.send(m))).buffer_unordered(in_flight).collect().await;
    let ok = results.iter().filter(|r| matches!(r, crate::campaigns::smtp::Reply::Judged { verdict: crate::retry::Verdict::Delivered, .. })).count();
    anyhow::ensure!(ok == n, "the plain client delivered {ok} of {n}");
    let (mails, seconds) = seen.take();
    let baseline = Measurement { name: "plain SMTP client (lettre pool)".into(), records: mails, seconds };
    report(&format!("campaign mails: {n} personalised, tracked mails, {in_flight} in flight (2 workers × {}), batch size {}", cfg.concurrency, cfg.batch_size), &baseline, &funnel);
    println!("reference (../shared/notes/campaign-anchors.md): listmonk users report 12–16 mails/s with default settings and about 833/s per tuned node");
    crate::kafka::admin::delete_topics(brokers, &topics.specs().into_iter().map(|s| s.name).collect::<Vec<_>>()).await?;
    Ok(())
}
