//! `funnel seed events`: synthetic customers and orders produced straight to the domain topics
//! through the registry, as the original demo's seed scripts did. Deterministic for a seed;
//! `--rate` paces the events (per second) for latency measurements and live demos.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use super::events::{key, Order, OrderItem, Profile};
use super::schemas as s;
use super::DomainTopics;
use crate::avro::Registered;
use crate::kafka::admin::{ensure_topics, TopicSpec};
use crate::kafka::batch_producer::{BatchProducer, Delivery, OutRecord};
use crate::olist::synthetic::{Rng, CITIES};
use crate::registry::RegistryClient;

const FIRST: &[&str] = &["Ana", "Bruno", "Carla", "Diego", "Eva", "Felipe", "Gabriela", "Hugo", "Isabela", "João", "Larissa", "Mateus"];
const LAST: &[&str] = &["Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Costa", "Almeida"];
const STATUSES: &[(&str, f64)] = &[("delivered", 0.8), ("shipped", 0.1), ("canceled", 0.05), ("processing", 0.05)];
const CHANNELS: &[&str] = &["organic_search", "paid_search", "social", "email", "referral"];
/// Product categories (olist's most common ones); a product's category is fixed by its number.
const CATEGORIES: &[&str] = &["cama_mesa_banho", "beleza_saude", "esporte_lazer", "moveis_decoracao", "informatica_acessorios", "utilidades_domesticas", "relogios_presentes", "telefonia"];
/// 2017-01-01T00:00:00Z in microseconds.
const EPOCH_2017: i64 = 1_483_228_800_000_000;
const DAY: i64 = 86_400_000_000;
/// Seeded orders are purchased in 2018; later events that continue their timeline start here.
pub const TIMELINE_END: i64 = EPOCH_2017 + 730 * DAY;

#[derive(clap::Args, Clone, Debug)]
pub struct SeedEventsConfig {
    /// Customers (profiles) to create.
    #[arg(long, default_value_t = 1000)]
    pub customers: u32,
    /// Orders to create, each for a random customer.
    #[arg(long, default_value_t = 5000)]
    pub orders: u32,
    /// Events per second (0 = as fast as the broker takes them).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Random seed: the same seed produces the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of orders produced before their customer's profile (exercises left joins).
    #[arg(long, default_value_t = 0.0)]
    pub orders_before_profile: f64,
    /// Stamp each record with the time of its event (a profile: signup; an order: purchase)
    /// instead of the time it is produced: with --orders-before-profile, orders arrive first
    /// although every profile precedes them in event time (what alignment puts right).
    #[arg(long)]
    pub stamp_event_time: bool,
}

pub struct SeedReport {
    pub profiles: u64,
    pub orders: u64,
    pub seconds: f64,
}

fn profile(rng: &mut Rng, i: u32) -> Profile {
    let (first, last) = (*rng.pick(FIRST), *rng.pick(LAST));
    let (zip, city, state) = *rng.pick(CITIES);
    let mut attributes = HashMap::new();
    attributes.insert("acquisition_channel".to_string(), rng.pick(CHANNELS).to_string());
    Profile {
        customer_id: format!("seed-c{i:07}"),
        first_name: Some(first.into()),
        last_name: Some(last.into()),
        email: Some(format!("{}.{}{i}@example.com", first.to_lowercase(), last.to_lowercase())),
        city: Some(city.into()),
        state: Some(state.into()),
        zip_code_prefix: Some(zip.into()),
        signup_at: Some(EPOCH_2017 + rng.below(365) as i64 * DAY),
        attributes,
        source: "seed".into(),
    }
}

fn order(rng: &mut Rng, j: u32, customers: u32) -> Order {
    let customer = rng.below(customers as u64) as u32;
    let purchased = EPOCH_2017 + (365 + rng.below(365)) as i64 * DAY + rng.below(DAY as u64) as i64;
    let mut status = STATUSES[0].0;
    let mut p = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    for (s, share) in STATUSES {
        if p < *share {
            status = s;
            break;
        }
        p -= share;
    }
    let items: Vec<OrderItem> = (1..=1 + rng.below(3) as i32)
        .map(|n| {
            let product = rng.below(500);
            OrderItem {
                item_id: n,
                product_id: Some(format!("seed-p{product:04}")),
                seller_id: Some(format!("seed-s{:03}", rng.below(100))),
                price: Some((500 + rng.below(50_000)) as f64 / 100.0),
                freight: Some((rng.below(3_000)) as f64 / 100.0),
                category: Some(CATEGORIES[product as usize % CATEGORIES.len()].into()),
            }
        })
        .collect();
    let item_total = items.iter().map(|i| i.price.unwrap_or(0.0) + i.freight.unwrap_or(0.0)).sum::<f64>();
    // Round to cents once: the total is what the customer paid.
    let item_total = (item_total * 100.0).round() / 100.0;
    Order {
        order_id: format!("seed-o{j:08}"),
        customer_id: Some(format!("seed-c{customer:07}")),
        status: Some(status.into()),
        times: [Some(purchased), Some(purchased + DAY / 24), None, (status == "delivered").then_some(purchased + 7 * DAY), Some(purchased + 14 * DAY)],
        items,
        item_total,
        payment_total: (status != "canceled").then_some(item_total),
        review_score: (status == "delivered").then(|| 1.0 + rng.below(5) as f64),
        source: "seed".into(),
    }
}

pub async fn run(brokers: &str, registry_url: &str, topics: &DomainTopics, cfg: &SeedEventsConfig) -> Result<SeedReport> {
    if cfg.customers == 0 && cfg.orders > 0 {
        anyhow::bail!("orders need customers: pass --customers N (N > 0)");
    }
    let registry = RegistryClient::new(registry_url);
    let (pk, pv) = Registered::topic(&registry, &topics.profile, s::PROFILE_KEY, s::PROFILE_VALUE).await?;
    let (ok, ov) = Registered::topic(&registry, &topics.order_created, s::ORDER_KEY, s::ORDER_VALUE).await?;
    ensure_topics(
        brokers,
        &[TopicSpec { name: topics.profile.clone(), partitions: 3, compact: true }, TopicSpec { name: topics.order_created.clone(), partitions: 3, compact: false }],
    )
    .await?;
    let producer = BatchProducer::new(brokers, &topics.names.owned("funnel-seed-events"), Delivery::ExactlyOnce).await?;
    let mut rng = Rng::new(cfg.seed);
    // Events in production order: every profile, with some orders moved ahead of theirs.
    // (record, event time in ms)
    let mut events: Vec<(OutRecord, i64)> = Vec::with_capacity((cfg.customers + cfg.orders) as usize);
    let mut early = vec![];
    let mut late = vec![];
    for i in 0..cfg.customers {
        let p = profile(&mut rng, i);
        let at = p.signup_at.unwrap_or(EPOCH_2017) / 1000;
        late.push((OutRecord { partition: None, topic: topics.profile.clone(), key: pk.encode(key("customer_id", &p.customer_id))?, value: Some(pv.encode(p.to_value())?) }, at));
    }
    for j in 0..cfg.orders {
        let o = order(&mut rng, j, cfg.customers);
        let at = o.times[0].unwrap_or(EPOCH_2017) / 1000;
        let rec = OutRecord { partition: None, topic: topics.order_created.clone(), key: ok.encode(key("order_id", &o.order_id))?, value: Some(ov.encode(o.to_value())?) };
        if rng.chance(cfg.orders_before_profile) {
            early.push((rec, at));
        } else {
            late.push((rec, at));
        }
    }
    events.extend(early);
    events.extend(late);
    let bar = ProgressBar::new(events.len() as u64);
    bar.set_style(ProgressStyle::with_template("seed events [{bar:30}] {pos}/{len} {per_sec}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let t0 = Instant::now();
    // Batches of at most 1000 (one transaction each), paced to the rate.
    let chunk = if cfg.rate > 0.0 { ((cfg.rate / 10.0).ceil() as usize).clamp(1, 1000) } else { 1000 };
    let mut sent = 0usize;
    for batch in events.chunks(chunk) {
        if cfg.rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / cfg.rate);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let records: Vec<OutRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        let stamps: Vec<i64> = batch.iter().map(|(_, at)| *at).collect();
        producer.send_stamped(&records, cfg.stamp_event_time.then_some(stamps.as_slice())).await?;
        sent += batch.len();
        bar.set_position(sent as u64);
    }
    bar.finish();
    Ok(SeedReport { profiles: cfg.customers as u64, orders: cfg.orders as u64, seconds: t0.elapsed().as_secs_f64() })
}
