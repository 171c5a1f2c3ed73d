//! Deterministic synthetic olist data. With the real files present it fills in the tables the
//! shared folder lacks (customers, orders, order items, reviews) so that they refer to the real
//! sellers, products and payment order ids, each order's items adding up to its payments.
//! Without the files it generates every table in the same shape.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{Duration, NaiveDate, NaiveDateTime};

/// SplitMix64: tiny, fast and stable forever (a seeded std/rand RNG may change across versions,
/// which would change the "deterministic" dataset).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// A 32-hex-digit id like olist's.
    pub fn hex_id(&mut self) -> String {
        format!("{:016x}{:016x}", self.next_u64(), self.next_u64())
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// What the generated tables refer to.
pub struct World {
    /// Order id → total paid in cents, ordered by id (deterministic iteration).
    pub order_totals: BTreeMap<String, i64>,
    pub seller_ids: Vec<String>,
    pub product_ids: Vec<String>,
}

/// CSV text of one table, header first.
pub type Csv = String;

/// (zip prefix, city, state) of a few Brazilian cities.
pub const CITIES: &[(&str, &str, &str)] = &[
    ("01310", "sao paulo", "SP"),
    ("13023", "campinas", "SP"),
    ("20040", "rio de janeiro", "RJ"),
    ("30110", "belo horizonte", "MG"),
    ("80010", "curitiba", "PR"),
    ("90010", "porto alegre", "RS"),
    ("40010", "salvador", "BA"),
    ("70040", "brasilia", "DF"),
    ("88010", "florianopolis", "SC"),
    ("60010", "fortaleza", "CE"),
];

const STATUSES: &[&str] = &["shipped", "canceled", "unavailable", "invoiced", "processing", "created", "approved"];

fn ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Split `total` into `n` non-negative parts that add up exactly.
fn split_exact(rng: &mut Rng, total: i64, n: usize) -> Vec<i64> {
    let weights: Vec<i64> = (0..n).map(|_| 1 + rng.below(100) as i64).collect();
    let sum: i64 = weights.iter().sum();
    let mut parts: Vec<i64> = weights.iter().map(|w| total * w / sum).collect();
    let rest = total - parts.iter().sum::<i64>();
    parts[0] += rest;
    parts
}

/// The reserved domain (RFC 2606) of the addresses `funnel seed` gives customers: olist has none,
/// and mail to it can never reach a real person.
pub const EMAIL_DOMAIN: &str = "customers.example";

/// A customer's deterministic address: one per person (olist `customer_unique_id`).
pub fn customer_email(unique_id: &str) -> String {
    format!("{unique_id}@{EMAIL_DOMAIN}")
}

/// Customers, orders, order items and reviews for `world`.
pub fn commerce_tables(world: &World, seed: u64) -> [(&'static str, Csv); 4] {
    let mut rng = Rng::new(seed);
    let start = NaiveDate::from_ymd_opt(2016, 9, 4).and_then(|d| d.and_hms_opt(0, 0, 0)).expect("valid date");
    let span_secs = (NaiveDate::from_ymd_opt(2018, 10, 17).expect("valid date") - start.date()).num_seconds();

    let mut customers = String::from("customer_id,customer_unique_id,customer_zip_code_prefix,customer_city,customer_state,customer_email\n");
    let mut orders = String::from(
        "order_id,customer_id,order_status,order_purchase_timestamp,order_approved_at,order_delivered_carrier_date,order_delivered_customer_date,order_estimated_delivery_date\n",
    );
    let mut items = String::from("order_id,order_item_id,product_id,seller_id,shipping_limit_date,price,freight_value\n");
    let mut reviews = String::from("review_id,order_id,review_score,review_comment_title,review_comment_message,review_creation_date,review_answer_timestamp\n");
    let mut unique_ids: Vec<(String, usize)> = vec![];

    for (order_id, total) in &world.order_totals {
        // About 3% of orders come from a customer who ordered before (olist: 96096 unique of 99441).
        let customer_id = rng.hex_id();
        let (unique, city) = if !unique_ids.is_empty() && rng.chance(0.034) {
            unique_ids[rng.below(unique_ids.len() as u64) as usize].clone()
        } else {
            let u = (rng.hex_id(), rng.below(CITIES.len() as u64) as usize);
            unique_ids.push(u.clone());
            u
        };
        let (zip, name, state) = CITIES[city];
        let _ = writeln!(customers, "{customer_id},{unique},{zip},{name},{state},{}", customer_email(&unique));

        let purchase = start + Duration::seconds(rng.below(span_secs as u64) as i64);
        let status = if rng.chance(0.97) { "delivered" } else { *rng.pick(STATUSES) };
        let approved = purchase + Duration::minutes(10 + rng.below(48 * 60) as i64);
        let carrier = approved + Duration::hours(24 + rng.below(96) as i64);
        let delivered = carrier + Duration::hours(48 + rng.below(20 * 24) as i64);
        let estimated = purchase + Duration::days(20 + rng.below(20) as i64);
        let approved_s = if status == "created" { String::new() } else { ts(approved) };
        let carrier_s = if matches!(status, "delivered" | "shipped") { ts(carrier) } else { String::new() };
        let delivered_s = if status == "delivered" { ts(delivered) } else { String::new() };
        let _ = writeln!(orders, "{order_id},{customer_id},{status},{},{approved_s},{carrier_s},{delivered_s},{}", ts(purchase), ts(estimated));

        // About 1.13 items per order; price + freight of the items = the order's payments.
        let r = rng.below(1000);
        let n = if r < 900 { 1 } else if r < 976 { 2 } else if r < 991 { 3 } else { 4 };
        let freight_total = total * (10 + rng.below(15) as i64) / 100;
        let prices = split_exact(&mut rng, total - freight_total, n);
        let freights = split_exact(&mut rng, freight_total, n);
        let seller = rng.pick(&world.seller_ids).clone();
        for i in 0..n {
            let product = rng.pick(&world.product_ids);
            // Multi-item orders mostly come from one seller, as on the marketplace.
            let seller = if rng.chance(0.8) { seller.clone() } else { rng.pick(&world.seller_ids).clone() };
            let limit = purchase + Duration::days(6);
            let _ = writeln!(items, "{order_id},{},{product},{seller},{},{},{}", i + 1, ts(limit), money(prices[i]), money(freights[i]));
        }

        if rng.chance(0.998) {
            let r = rng.below(100);
            let score = if r < 57 { 5 } else if r < 76 { 4 } else if r < 84 { 3 } else if r < 89 { 2 } else { 1 };
            let created = if status == "delivered" { delivered } else { estimated } + Duration::days(1);
            let answered = created + Duration::hours(12 + rng.below(72) as i64);
            let (title, message) = if score <= 2 && rng.chance(0.5) { ("ruim", "produto nao chegou como esperado") } else { ("", "") };
            let _ = writeln!(reviews, "{},{order_id},{score},{title},{message},{},{}", rng.hex_id(), ts(created), ts(answered));
        }
    }
    [("ecommerce.customers", customers), ("ecommerce.orders", orders), ("ecommerce.order_items", items), ("ecommerce.order_reviews", reviews)]
}

const CATEGORIES: &[(&str, &str)] = &[
    ("beleza_saude", "health_beauty"),
    ("cama_mesa_banho", "bed_bath_table"),
    ("esporte_lazer", "sports_leisure"),
    ("informatica_acessorios", "computers_accessories"),
    ("moveis_decoracao", "furniture_decor"),
    ("utilidades_domesticas", "housewares"),
    ("relogios_presentes", "watches_gifts"),
    ("telefonia", "telephony"),
    ("brinquedos", "toys"),
    ("perfumaria", "perfumery"),
];
const ORIGINS: &[&str] = &["organic_search", "paid_search", "social", "unknown", "direct_traffic", "email", "referral", "other", "display", ""];
const SEGMENTS: &[&str] = &["home_decor", "health_beauty", "car_accessories", "household_utilities", "pet", "construction_tools_house_garden", ""];
const LEAD_TYPES: &[&str] = &["online_medium", "online_big", "industry", "offline", "online_small", ""];
const PROFILES: &[&str] = &["cat", "eagle", "wolf", "shark", ""];
const BUSINESS_TYPES: &[&str] = &["reseller", "manufacturer", "other", ""];

/// Every table from scratch (no data folder): `scale` thousand orders and proportionate
/// sellers, products, leads and deals. Returns the reference tables and the world they define.
pub fn reference_tables(scale: u32, seed: u64) -> (World, Vec<(&'static str, Csv)>) {
    let mut rng = Rng::new(seed);
    let scale = scale.max(1) as u64;
    let n_orders = 1000 * scale;
    let seller_ids: Vec<String> = (0..31 * scale).map(|_| rng.hex_id()).collect();
    let product_ids: Vec<String> = (0..330 * scale).map(|_| rng.hex_id()).collect();

    let mut sellers = String::from("seller_id,seller_zip_code_prefix,seller_city,seller_state\n");
    for s in &seller_ids {
        let (zip, city, state) = *rng.pick(CITIES);
        let _ = writeln!(sellers, "{s},{zip},{city},{state}");
    }
    let mut translation = String::from("product_category_name,product_category_name_english\n");
    for (pt, en) in CATEGORIES {
        let _ = writeln!(translation, "{pt},{en}");
    }
    let mut products = String::from(
        "product_id,product_category_name,product_name_lenght,product_description_lenght,product_photos_qty,product_weight_g,product_length_cm,product_height_cm,product_width_cm\n",
    );
    for p in &product_ids {
        let cat = if rng.chance(0.02) { "" } else { rng.pick(CATEGORIES).0 };
        let _ = writeln!(
            products,
            "{p},{cat},{},{},{},{},{},{},{}",
            20 + rng.below(40),
            100 + rng.below(2000),
            1 + rng.below(5),
            100 + rng.below(5000),
            10 + rng.below(60),
            2 + rng.below(40),
            10 + rng.below(40)
        );
    }
    let mut payments = String::from("order_id,payment_sequential,payment_type,payment_installments,payment_value\n");
    let mut order_totals = BTreeMap::new();
    for _ in 0..n_orders {
        let id = rng.hex_id();
        let parts = if rng.chance(0.95) { 1 } else { 2 };
        let mut total = 0;
        for seq in 1..=parts {
            let cents = 1000 + rng.below(40000) as i64;
            total += cents;
            let kind = if seq == 2 { "voucher" } else { *rng.pick(&["credit_card", "credit_card", "credit_card", "boleto", "debit_card"]) };
            let _ = writeln!(payments, "{id},{seq},{kind},{},{}", 1 + rng.below(10), money(cents));
        }
        order_totals.insert(id, total);
    }

    let first = NaiveDate::from_ymd_opt(2017, 6, 14).expect("valid date");
    let mut mqls = String::from("mql_id,first_contact_date,landing_page_id,origin\n");
    let mut deals = String::from(
        "mql_id,seller_id,sdr_id,sr_id,won_date,business_segment,lead_type,lead_behaviour_profile,has_company,has_gtin,average_stock,business_type,declared_product_catalog_size,declared_monthly_revenue\n",
    );
    let pages: Vec<String> = (0..50).map(|_| rng.hex_id()).collect();
    let reps: Vec<String> = (0..10).map(|_| rng.hex_id()).collect();
    for i in 0..80 * scale {
        let id = rng.hex_id();
        let contact = first + Duration::days(rng.below(350) as i64);
        let _ = writeln!(mqls, "{id},{contact},{},{}", rng.pick(&pages), rng.pick(ORIGINS));
        if i % 10 == 0 {
            // Half of the deals' sellers exist in the sellers table, as in the real data.
            let seller = if rng.chance(0.5) { rng.pick(&seller_ids).clone() } else { rng.hex_id() };
            let won = contact.and_hms_opt(0, 0, 0).expect("valid time") + Duration::hours(rng.below(100 * 24) as i64);
            let revenue = if rng.chance(0.05) { (rng.below(100) * 10000).to_string() + ".0" } else { "0.0".into() };
            let _ = writeln!(
                deals,
                "{id},{seller},{},{},{},{},{},{},,,,{},,{revenue}",
                rng.pick(&reps),
                rng.pick(&reps),
                ts(won),
                rng.pick(SEGMENTS),
                rng.pick(LEAD_TYPES),
                rng.pick(PROFILES),
                rng.pick(BUSINESS_TYPES)
            );
        }
    }
    let world = World { order_totals, seller_ids, product_ids };
    let tables = vec![
        ("ecommerce.sellers", sellers),
        ("ecommerce.products", products),
        ("ecommerce.product_category_name_translation", translation),
        ("ecommerce.order_payments", payments),
        ("marketing.marketing_qualified_leads", mqls),
        ("marketing.closed_deals", deals),
    ];
    (world, tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_items_add_up_to_payments() {
        let (w1, t1) = reference_tables(1, 7);
        let (_, t2) = reference_tables(1, 7);
        assert_eq!(t1, t2);
        let c1 = commerce_tables(&w1, 9);
        let c2 = commerce_tables(&w1, 9);
        assert_eq!(c1[2].1, c2[2].1);
        let mut per_order: BTreeMap<String, i64> = BTreeMap::new();
        for line in c1[2].1.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let cents = |s: &str| (s.parse::<f64>().unwrap() * 100.0).round() as i64;
            *per_order.entry(f[0].to_string()).or_default() += cents(f[5]) + cents(f[6]);
        }
        assert_eq!(per_order, w1.order_totals);
    }
}
