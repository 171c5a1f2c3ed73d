//! `funnel bench relay`: the relay's two throughput figures, each against a baseline measured
//! in the same run on the same events.
//! - Ingest: events/s through `POST /v1/events` (OMS pages of 4000, validated and recorded in
//!   the inbox) ÷ events/s of a raw Avro produce of the same events to a topic.
//! - Delivery: events/s the delivery workers deliver to a local sink that answers at once
//!   (sGTM custom client, one event per request, audit written, attempts produced) ÷ the sink's
//!   own capacity: the same requests sent by a plain HTTP client at the same concurrency.
//! Runs on a scratch database `funnel_bench_relay` of the source Postgres and scratch topics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::json;

use super::{report, Measurement};
use crate::avro::registered::Registered;
use crate::kafka::admin::{delete_topics, ensure_topics, TopicSpec};
use crate::kafka::batch_producer::{BatchProducer, Delivery as Guarantee, OutRecord};
use crate::registry::RegistryClient;
use crate::relay::config_state::{ConfigView, Platform, RelayState, SgtmConfig, Storefront};
use crate::relay::crypto::Keyring;
use crate::relay::deliver::{Deliverer, PROCESSOR};
use crate::relay::delivery::{schemas as ds, Delivery};
use crate::relay::intake::{schemas as is, Received};
use crate::relay::topics::{RelayConfig, RelayTopics};
use crate::runtime::processor::{self, LoopConfig};

#[derive(clap::Args, Clone, Debug)]
pub struct RelayBenchConfig {
    /// Events per measurement.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Requests in flight at once (the relay's --relay-concurrency and the plain client's).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

const PAGE: usize = 4000;

fn oms_item(i: usize, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    json!({"t-value": "bench_aff", "storefront_id": "bench", "event_name": "purchase_completed", "event_time": (now - chrono::Duration::seconds((i % 3600) as i64)).to_rfc3339(),
           "order_id": format!("B{i}"), "order_revenue": 19.99, "session_id": format!("s{}", i % 100), "utm_source": "google"})
}

/// What the sink saw: requests, and the first and last arrival.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    window: std::sync::Mutex<Option<(Instant, Instant)>>,
}

impl Seen {
    /// Requests since `before`, and the seconds from the first to the last arrival.
    fn take(&self, before: u64) -> (u64, f64) {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner()).take();
        (self.count.load(Ordering::Relaxed) - before, w.map(|(a, b)| (b - a).as_secs_f64()).unwrap_or_default())
    }
}

/// A sink that answers 200 at once and counts the events it received. Both delivery runs are
/// timed here, from the first request's arrival to the last's, so that neither the Kafka
/// consumer's group join nor the client's start-up is counted for one and not the other.
async fn sink() -> Result<(String, Arc<Seen>)> {
    let count: Arc<Seen> = Arc::default();
    let c = count.clone();
    let app = axum::Router::new().fallback(move || {
        let c = c.clone();
        async move {
            c.count.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            let mut w = c.window.lock().unwrap_or_else(|p| p.into_inner());
            *w = Some(w.map_or((now, now), |(a, _)| (a, now)));
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, count))
}

pub async fn run(pg_url: &str, brokers: &str, registry_url: &str, cfg: &RelayBenchConfig) -> Result<()> {
    let n = cfg.events.max(PAGE);
    let admin_url = crate::olist::db::with_database(pg_url, "postgres")?;
    let admin = crate::olist::db::connect(&admin_url).await?;
    // Two statements: a multi-statement string runs as one transaction, which DROP DATABASE refuses.
    admin.batch_execute("DROP DATABASE IF EXISTS funnel_bench_relay WITH (FORCE)").await.context("dropping the scratch database")?;
    admin.batch_execute("CREATE DATABASE funnel_bench_relay").await.context("creating the scratch database")?;
    let db_url = crate::olist::db::with_database(pg_url, "funnel_bench_relay")?;
    crate::relay::db::migrate(&db_url).await?;
    let db = crate::olist::db::connect(&db_url).await?;
    db.batch_execute("INSERT INTO relay.storefronts (code, name) VALUES ('bench', 'bench')").await?;
    let registry = RegistryClient::new(registry_url);
    let now = chrono::Utc::now();

    // ---- ingest -------------------------------------------------------------------------
    let token = format!("bench-{}", fernet::Fernet::generate_key());
    let creds = crate::runtime::auth::ApiCredentials::new("funnel", &token, "bench")?;
    let keys = Arc::new(Keyring::parse(&fernet::Fernet::generate_key(), "bench")?);
    let relay = Arc::new(crate::relay::service::Relay { pool: crate::relay::db::pool(&db_url, 8)?, keys: keys.clone() });
    let app = crate::relay::service::router(relay, creds.clone(), 64 * 1024 * 1024);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}/v1/events", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let pages: Vec<serde_json::Value> = (0..n / PAGE).map(|p| json!({"count": n, "data": (p * PAGE..(p + 1) * PAGE).map(|i| oms_item(i, now)).collect::<Vec<_>>()})).collect();
    let http = reqwest::Client::new();
    let t0 = Instant::now();
    let mut accepted = 0u64;
    for page in &pages {
        let r: serde_json::Value = http.post(&api).header("authorization", creds.authorization()).json(page).send().await?.error_for_status()?.json().await?;
        accepted += r["accepted"].as_u64().unwrap_or(0);
    }
    let ingest = Measurement { name: "POST /v1/events".into(), records: accepted, seconds: t0.elapsed().as_secs_f64() };
    anyhow::ensure!(accepted as usize == pages.len() * PAGE, "{accepted} of {} events accepted", pages.len() * PAGE);

    let raw_topic = "_funnel.bench.relay.raw".to_string();
    delete_topics(brokers, std::slice::from_ref(&raw_topic)).await?;
    ensure_topics(brokers, &[TopicSpec { name: raw_topic.clone(), partitions: 3, compact: false }]).await?;
    let (k, v) = Registered::topic(&registry, &raw_topic, is::RECEIVED_KEY, is::RECEIVED_VALUE).await?;
    let producer = BatchProducer::new(brokers, "funnel-bench-relay", Guarantee::AtLeastOnce).await?;
    let t0 = Instant::now();
    for page in &pages {
        let mut recs = Vec::with_capacity(PAGE);
        for (i, item) in page["data"].as_array().into_iter().flatten().enumerate() {
            let e = Received {
                event_pk: i as i64,
                storefront_code: "bench".into(),
                storefront_id: Some(1),
                event_type: "purchase_completed".into(),
                source_event_id: item["order_id"].as_str().unwrap_or_default().into(),
                event_id: format!("purchase_completed_{}", item["order_id"].as_str().unwrap_or_default()),
                event_time_us: now.timestamp_micros(),
                payload: item.to_string(),
                source_system: "oms".into(),
                received_at_us: now.timestamp_micros(),
            };
            recs.push(OutRecord { partition: None, topic: raw_topic.clone(), key: k.encode(e.key())?, value: Some(v.encode(e.to_value())?) });
        }
        producer.send(&recs).await?;
    }
    let raw = Measurement { name: "raw Avro produce".into(), records: (pages.len() * PAGE) as u64, seconds: t0.elapsed().as_secs_f64() };
    report(&format!("relay ingest: {} events in OMS pages of {PAGE}", pages.len() * PAGE), &raw, &ingest);

    // ---- delivery -----------------------------------------------------------------------
    let (sink_url, received) = sink().await?;
    let deliveries: Vec<Delivery> = (0..n)
        .map(|i| {
            let e = Received {
                event_pk: i as i64 + 1,
                storefront_code: "bench".into(),
                storefront_id: Some(1),
                event_type: "purchase_completed".into(),
                source_event_id: format!("D{i}"),
                event_id: format!("purchase_completed_D{i}"),
                event_time_us: now.timestamp_micros(),
                payload: oms_item(i, now).to_string(),
                source_system: "oms".into(),
                received_at_us: now.timestamp_micros(),
            };
            Delivery { storefront_id: Some(1), ..Delivery::first(&e, "sgtm", 1, 1, None) }
        })
        .collect();
    // Baseline: the sink's capacity for the same requests, from a plain client.
    let sgtm = crate::relay::destinations::sgtm::Sgtm;
    let mut settings = crate::relay::destinations::Settings::default();
    settings.config.insert("sgtm_url".into(), format!("{sink_url}/sgtm").into());
    settings.config.insert("client_type".into(), "custom".into());
    settings.config.insert("endpoint_path".into(), "/collect".into());
    let refs: Vec<&Delivery> = deliveries.iter().collect();
    let requests = crate::relay::destinations::Destination::build(&sgtm, &settings, &refs).map_err(anyhow::Error::msg)?;
    let plain = reqwest::Client::new();
    let ok = futures::stream::iter(requests.iter().map(|r| {
        let mut b = plain.post(&r.url).body(r.body.clone());
        for (k, v) in &r.headers {
            b = b.header(k, v);
        }
        async move { b.send().await.map(|resp| resp.status().is_success()).unwrap_or(false) }
    }))
    .buffer_unordered(cfg.concurrency.max(1))
    .filter(|ok| futures::future::ready(*ok))
    .count()
    .await;
    let (_, seconds) = received.take(0);
    let capacity = Measurement { name: "plain HTTP client".into(), records: ok as u64, seconds };

    // The relay's delivery workers on the same events, pre-routed into a scratch topic.
    let rcfg = RelayConfig { cdc_name: "bench".into(), cdc_prefix: "_funnel.bench.cdc".into(), max_attempts: 2, backoff_base: Duration::from_secs(1), timeout_ms: 10_000, concurrency: cfg.concurrency };
    let topics = RelayTopics::new(&rcfg, "_funnel.bench");
    delete_topics(brokers, &[topics.requested.clone(), topics.attempts.clone(), topics.dlq.clone(), topics.retry(2)]).await?;
    ensure_topics(
        brokers,
        &[topics.requested.clone(), topics.attempts.clone(), topics.dlq.clone(), topics.retry(2), topics.names.dead_letters(PROCESSOR)].map(|name| TopicSpec { name, partitions: 3, compact: false }),
    )
    .await?;
    let (dk, dv) = Registered::topic(&registry, &topics.requested, ds::DELIVERY_KEY, ds::DELIVERY_VALUE).await?;
    for chunk in deliveries.chunks(PAGE) {
        let recs: Result<Vec<OutRecord>> = chunk.iter().map(|d| Ok(OutRecord { partition: None, topic: topics.requested.clone(), key: dk.encode(d.key())?, value: Some(dv.encode(d.to_value())?) })).collect();
        producer.send(&recs?).await?;
    }
    let mut state = RelayState::default();
    state.storefronts.insert(1, Storefront { id: 1, code: "bench".into(), active: true });
    state.platforms.insert(1, Platform { id: 1, code: "sgtm".into(), active: true });
    state.sgtm.insert(1, SgtmConfig { id: 1, storefront_id: 1, url: format!("{sink_url}/sgtm"), client_type: "custom".into(), measurement_id: None, api_secret: None, endpoint_path: "/collect".into(), headers: None, active: true });
    let before = received.count.load(Ordering::Relaxed);
    let deliverer = Deliverer::open(&registry, ConfigView::fixed(state), keys, crate::relay::db::pool(&db_url, 4)?, rcfg, topics.clone()).await?;
    let group = format!("funnel-bench-relay-{}", now.timestamp_millis());
    let lc = LoopConfig { batch_max: 2000, batch_ms: 100, stop_when_idle: true, group_id: group, ..LoopConfig::namespaced(PROCESSOR, brokers, vec![topics.requested.clone()], Guarantee::AtLeastOnce, &topics.names) };
    processor::run(lc, deliverer).await?;
    let (delivered, seconds) = received.take(before);
    let relay = Measurement { name: "relay delivery workers".into(), records: delivered, seconds };
    anyhow::ensure!(delivered as usize == n, "{delivered} of {n} events reached the sink");
    report(&format!("relay delivery: {n} events, one request each (sGTM custom client), {} in flight", cfg.concurrency), &capacity, &relay);
    Ok(())
}
