//! `funnel bench c360`, on synthetic domain events (`seed events`) in a throw-away namespace:
//!
//! 1. throughput: the c360 engine (four SQL queries per micro-batch, state, changelog,
//!    exactly-once) ÷ a no-op consume→produce passthrough (same loop, same delivery, same
//!    input topics), both run to the end of the inputs; each timed from its first consumed
//!    record, so consumer-group joins do not count;
//! 2. latency: with `c360` and `cache` running, orders for new customers are produced at a
//!    steady rate (purchase times continuing the seeded timeline); each is timed from the
//!    broker's acknowledgement of the produce (the source commit) to its customer's hash
//!    appearing in Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{report, Measurement};
use crate::avro::Registered;
use crate::c360::{C360Config, C360Topics};
use crate::domain::events::{key, Order, OrderItem};
use crate::domain::seed::SeedEventsConfig;
use crate::domain::DomainTopics;
use crate::kafka::batch_producer::{BatchProducer, Delivery, OutRecord};
use crate::registry::RegistryClient;
use crate::runtime::metrics::metrics;
use crate::runtime::processor::{self, LoopConfig, Passthrough};
use crate::topology::names::TopicNames;

#[derive(clap::Args, Clone, Debug)]
pub struct C360BenchConfig {
    /// Customers (profiles) in the throughput data set.
    #[arg(long, default_value_t = 20_000)]
    pub customers: u32,
    /// Orders in the throughput data set.
    #[arg(long, default_value_t = 100_000)]
    pub orders: u32,
    /// Orders per second in the latency phase.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Length of the latency phase.
    #[arg(long, default_value_t = 20)]
    pub latency_seconds: u64,
}

/// Run `fut` and time it from the first record `processor` consumed from `inputs` to its end.
async fn timed(processor: &str, inputs: &[String], records: u64, name: &str, fut: impl std::future::Future<Output = Result<()>>) -> Result<Measurement> {
    let first: Arc<std::sync::Mutex<Option<Instant>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (first, done, p, inputs) = (first.clone(), done.clone(), processor.to_string(), inputs.to_vec());
        tokio::spawn(async move {
            // The counters are the process's: a second run of the same processor starts above 0.
            let consumed = || -> u64 { inputs.iter().map(|t| metrics().records_in.with_label_values(&[p.as_str(), t.as_str()]).get()).sum() };
            let before = consumed();
            while !done.load(Ordering::Relaxed) {
                if consumed() > before {
                    if let Ok(mut f) = first.lock() {
                        f.get_or_insert_with(Instant::now);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    fut.await?;
    let end = Instant::now();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    let start = first.lock().ok().and_then(|f| *f).context("the processor consumed nothing")?;
    Ok(Measurement { name: name.into(), records, seconds: (end - start).as_secs_f64() })
}

pub async fn run(brokers: &str, registry_url: &str, redis_url: &str, cfg: &C360BenchConfig) -> Result<()> {
    let stamp = chrono::Utc::now().timestamp_millis() % 100_000_000;
    let ns = format!("bench{stamp}");
    let names = TopicNames::new("olist", &ns);
    let domain = DomainTopics::new(names.clone());
    let topics = C360Topics::new(names.clone());
    let seed = SeedEventsConfig { customers: cfg.customers, orders: cfg.orders, rate: 0.0, seed: 42, orders_before_profile: 0.0, stamp_event_time: false };
    let produced = crate::domain::seed::run(brokers, registry_url, &domain, &seed).await?;
    let records = produced.profiles + produced.orders;
    println!("data: {} profiles and {} orders in namespace {ns}", produced.profiles, produced.orders);

    let specs = topics.inputs();
    let inputs: Vec<String> = specs.iter().map(|t| t.name.clone()).collect();
    crate::kafka::admin::ensure_topics(brokers, &specs).await?;
    let mut lc = LoopConfig::namespaced("bench-passthrough", brokers, inputs.clone(), Delivery::ExactlyOnce, &names);
    lc.stop_when_idle = true;
    let to = names.owned("bench.passthrough");
    crate::kafka::admin::ensure_topics(brokers, &[crate::kafka::admin::TopicSpec { name: to.clone(), partitions: 3, compact: false }]).await?;
    let baseline = timed("bench-passthrough", &inputs, records, "passthrough (no-op)", processor::run(lc, Passthrough { to })).await?;

    let c360_cfg = C360Config { sql_dir: None, batch_max: 5000, batch_ms: 200, align_idle_ms: 2000, lake_flush_ms: 500, redis_prefix: ns.clone() };
    let engine = timed(crate::c360::PROCESSOR, &inputs, records, "c360 engine (aligned)", crate::c360::run(brokers, registry_url, topics.clone(), Delivery::ExactlyOnce, &c360_cfg, true)).await?;
    report(&format!("c360 throughput: {records} input records, same broker, same run"), &baseline, &engine);
    // The same again with event-time alignment off (records in the order fetched): what
    // alignment costs. The engine's state and outputs are reset as `funnel replay` does.
    let doomed = vec![names.changelog(crate::c360::PROCESSOR, "state"), topics.enriched.clone(), topics.consolidated.clone(), topics.segment.clone()];
    crate::kafka::admin::reset_for_replay(brokers, &names.group(crate::c360::PROCESSOR), &inputs, &doomed).await?;
    let unaligned_cfg = C360Config { align_idle_ms: 0, ..c360_cfg.clone() };
    let unaligned = timed(crate::c360::PROCESSOR, &inputs, records, "c360 engine (arrival order)", crate::c360::run(brokers, registry_url, topics.clone(), Delivery::ExactlyOnce, &unaligned_cfg, true)).await?;
    report("c360 throughput without alignment (same inputs)", &baseline, &unaligned);
    println!("alignment costs {:.1} % of the engine's throughput", (1.0 - engine.per_second() / unaligned.per_second()) * 100.0);

    latency(brokers, registry_url, redis_url, topics, &c360_cfg, cfg).await
}

async fn latency(brokers: &str, registry_url: &str, redis_url: &str, topics: C360Topics, c360_cfg: &C360Config, cfg: &C360BenchConfig) -> Result<()> {
    let (b, r, t, c) = (brokers.to_string(), registry_url.to_string(), topics.clone(), c360_cfg.clone());
    let engine = tokio::spawn(async move { crate::c360::run(&b, &r, t, Delivery::ExactlyOnce, &c, false).await });
    let (b, r, t, p, u) = (brokers.to_string(), registry_url.to_string(), topics.clone(), c360_cfg.redis_prefix.clone(), redis_url.to_string());
    let cache = tokio::spawn(async move { crate::c360::cache::run(&b, &r, &u, t, &p, false).await });
    // Let both join their groups and catch up with the throughput data first.
    let mut con = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await.context("connecting to redis")?;
    let by_revenue = format!("{}:by_revenue", c360_cfg.redis_prefix);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n: u64 = redis::cmd("ZCARD").arg(&by_revenue).query_async(&mut con).await?;
        if n >= cfg.customers as u64 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the cache did not catch up within 600 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let registry = RegistryClient::new(registry_url);
    let (order_key, order_value) = Registered::topic(&registry, &topics.order_created, crate::domain::schemas::ORDER_KEY, crate::domain::schemas::ORDER_VALUE).await?;
    let producer = BatchProducer::new(brokers, "unused", Delivery::AtLeastOnce).await?;
    let total = (cfg.rate * cfg.latency_seconds as f64).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let sent: Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let prefix = c360_cfg.redis_prefix.clone();
    let watch = {
        let (sent, prefix) = (sent.clone(), prefix.clone());
        let mut con = con.clone();
        tokio::spawn(async move {
            let mut latencies = vec![];
            let deadline = Instant::now() + Duration::from_secs(cfg_deadline(total, interval));
            while (latencies.len() as u64) < total && Instant::now() < deadline {
                let pending: Vec<(String, Instant)> = sent.lock().map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
                if !pending.is_empty() {
                    let mut pipe = redis::pipe();
                    for (id, _) in &pending {
                        pipe.cmd("EXISTS").arg(format!("{prefix}:customer:{id}"));
                    }
                    let found: Vec<bool> = pipe.query_async(&mut con).await.unwrap_or_default();
                    let now = Instant::now();
                    for ((id, at), hit) in pending.iter().zip(found) {
                        if hit {
                            latencies.push((now - *at).as_secs_f64() * 1000.0);
                            if let Ok(mut s) = sent.lock() {
                                s.remove(id);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        })
    };
    let t0 = Instant::now();
    for i in 0..total {
        let id = format!("probe-{i}");
        let order = Order {
            order_id: format!("probe-order-{i}"),
            customer_id: Some(id.clone()),
            status: Some("created".into()),
            // Purchase times continue the seeded timeline (a jump to today would fire every
            // customer's churn timer at once: a one-off burst, not the steady state measured here).
            times: [Some(crate::domain::seed::TIMELINE_END + i as i64 * 1000), None, None, None, None],
            items: vec![OrderItem { item_id: 1, price: Some(10.0), freight: Some(1.0), ..Default::default() }],
            item_total: 11.0,
            payment_total: Some(11.0),
            review_score: None,
            source: "bench".into(),
        };
        let rec = OutRecord { partition: None, topic: topics.order_created.clone(), key: order_key.encode(key("order_id", &order.order_id))?, value: Some(order_value.encode(order.to_value())?) };
        producer.send(&[rec]).await?;
        sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(id, Instant::now());
        let next = t0 + interval * (i as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    let mut latencies = watch.await?;
    crate::runtime::shutdown::request();
    let _ = engine.await;
    let _ = cache.await;
    anyhow::ensure!(!latencies.is_empty(), "no probe reached redis");
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["orders", "rate/s", "reached redis", "p50 ms", "p99 ms", "max ms"]);
    t.add_row(vec![total.to_string(), format!("{:.0}", cfg.rate), latencies.len().to_string(), format!("{:.0}", pct(0.50)), format!("{:.0}", pct(0.99)), format!("{:.0}", pct(1.0))]);
    println!("c360 end-to-end latency, source commit (produce acknowledged) → Redis (c360 batch window {} ms)\n{t}", c360_cfg.batch_ms);
    Ok(())
}

/// How long to wait for the probes: the produce phase plus a minute.
fn cfg_deadline(total: u64, interval: Duration) -> u64 {
    (interval.as_secs_f64() * total as f64) as u64 + 60
}
