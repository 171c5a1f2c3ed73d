//! olist CDC → domain events. olist's `customer_id` is one per order; the person is
//! `customer_unique_id`, which becomes the domain's `customer_id`. Items carry their product's
//! category (products), orders the mean score of their reviews (order_reviews).
//!
//! State: the last CDC image of every customer, order, order item and payment, in stores with
//! compacted changelogs (restored on start), plus the last order emitted per order_id. A change
//! marks the orders and profiles it affects; at the end of the batch those are rebuilt, and
//! emitted only when different from what was emitted before: an order's first state goes to
//! dom.order.created.v1, every later one to dom.order.updated.v1 (a tombstone there when the
//! order is deleted). Changes not newer (source position) than the stored image are re-sends.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Result;

use super::events::{key, Order, OrderItem, Profile};
use super::DomainTopics;
use crate::avro::Registered;
use crate::cdc::change::{Change, ChangeDecoder, Position};
use crate::kafka::batch_producer::OutRecord;
use crate::registry::RegistryClient;
use crate::runtime::processor::{InRecord, Outcome, Transform};
use crate::state::ChangelogStore;

/// Money in units of 10^-SCALE, summed exactly.
const SCALE: u32 = 4;
const SOURCE: &str = "olist-cdc";

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Table {
    Customers,
    Orders,
    Items,
    Payments,
    Products,
    Reviews,
}

struct Customer {
    unique: String,
    city: Option<String>,
    state: Option<String>,
    zip: Option<String>,
    email: Option<String>,
    pos: Position,
}

struct OrderRow {
    customer_id: String,
    status: Option<String>,
    times: [Option<i64>; 5],
}

#[derive(Clone)]
struct Item {
    product_id: Option<String>,
    seller_id: Option<String>,
    price: Option<i128>,
    freight: Option<i128>,
}

pub struct OlistDomain {
    decoder: ChangeDecoder,
    topics: DomainTopics,
    profile_key: Registered,
    profile_value: Registered,
    order_key: Registered,
    order_value: Registered,
    stores: HashMap<Table, ChangelogStore>,
    /// Last order value emitted per order key (created or updated).
    emitted_orders: ChangelogStore,
    /// The compacted profile topic: last profile emitted per person.
    emitted_profiles: ChangelogStore,
    /// Source position per (table, record key), kept after deletes for this run.
    positions: HashMap<(Table, Vec<u8>), Position>,
    /// What each record key is about, to undo it on update or delete.
    refs: HashMap<(Table, Vec<u8>), (String, i32)>,
    customers: HashMap<String, Customer>,
    members: HashMap<String, BTreeSet<String>>,
    orders: HashMap<String, OrderRow>,
    customer_orders: HashMap<String, BTreeSet<String>>,
    items: HashMap<String, BTreeMap<i32, Item>>,
    payments: HashMap<String, BTreeMap<i32, i128>>,
    /// Category per product, and the orders each product is in (a category change re-emits them).
    categories: HashMap<String, Option<String>>,
    product_orders: HashMap<String, BTreeSet<String>>,
    /// Review scores per order, by review record key.
    reviews: HashMap<String, BTreeMap<Vec<u8>, Option<i32>>>,
    dirty_orders: HashSet<String>,
    dirty_profiles: HashSet<String>,
}

fn money(units: i128) -> f64 {
    units as f64 / 10f64.powi(SCALE as i32)
}

impl OlistDomain {
    pub async fn open(brokers: &str, registry: &RegistryClient, topics: DomainTopics) -> Result<Self> {
        use super::schemas as s;
        let (profile_key, profile_value) = Registered::topic(registry, &topics.profile, s::PROFILE_KEY, s::PROFILE_VALUE).await?;
        let (order_key, order_value) = Registered::topic(registry, &topics.order_created, s::ORDER_KEY, s::ORDER_VALUE).await?;
        Registered::topic(registry, &topics.order_updated, s::ORDER_KEY, s::ORDER_VALUE).await?;
        let mut stores = HashMap::new();
        for (t, name) in [
            (Table::Customers, "customers"),
            (Table::Orders, "orders"),
            (Table::Items, "order-items"),
            (Table::Payments, "order-payments"),
            (Table::Products, "products"),
            (Table::Reviews, "order-reviews"),
        ] {
            stores.insert(t, ChangelogStore::open(brokers, &topics.names.changelog(super::PROCESSOR, name), 3).await?);
        }
        let mut d = OlistDomain {
            decoder: ChangeDecoder::new(registry),
            emitted_orders: ChangelogStore::open(brokers, &topics.names.changelog(super::PROCESSOR, "orders-emitted"), 3).await?,
            emitted_profiles: ChangelogStore::open(brokers, &topics.profile, 3).await?,
            topics,
            profile_key,
            profile_value,
            order_key,
            order_value,
            stores,
            positions: HashMap::new(),
            refs: HashMap::new(),
            customers: HashMap::new(),
            members: HashMap::new(),
            orders: HashMap::new(),
            customer_orders: HashMap::new(),
            items: HashMap::new(),
            payments: HashMap::new(),
            categories: HashMap::new(),
            product_orders: HashMap::new(),
            reviews: HashMap::new(),
            dirty_orders: HashSet::new(),
            dirty_profiles: HashSet::new(),
        };
        for t in [Table::Customers, Table::Orders, Table::Items, Table::Payments, Table::Products, Table::Reviews] {
            let stored: Vec<(Vec<u8>, Vec<u8>)> = d.stores[&t].iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (k, v) in stored {
                let c = d.decoder.decode(&v).await?.map_err(anyhow::Error::msg)?;
                d.apply(t, &k, &c).map_err(anyhow::Error::msg)?;
            }
        }
        d.dirty_orders.clear();
        d.dirty_profiles.clear();
        tracing::info!(customers = d.customers.len(), orders = d.orders.len(), emitted = d.emitted_orders.len(), "domain state restored");
        Ok(d)
    }

    pub fn inputs(&self) -> Vec<String> {
        let t = &self.topics;
        vec![t.customers.clone(), t.orders.clone(), t.order_items.clone(), t.order_payments.clone(), t.products.clone(), t.order_reviews.clone()]
    }

    fn table_of(&self, topic: &str) -> Option<Table> {
        let t = &self.topics;
        [
            (&t.customers, Table::Customers),
            (&t.orders, Table::Orders),
            (&t.order_items, Table::Items),
            (&t.order_payments, Table::Payments),
            (&t.products, Table::Products),
            (&t.order_reviews, Table::Reviews),
        ]
            .into_iter()
            .find(|(name, _)| name.as_str() == topic)
            .map(|(_, t)| t)
    }

    /// Undo what the record `key` contributed, then apply the change (a delete only undoes).
    fn apply(&mut self, table: Table, key: &[u8], c: &Change) -> Result<(), String> {
        let k = (table, key.to_vec());
        match table {
            Table::Customers => {
                let id = c.text("customer_id").ok_or("customer without customer_id")?;
                if let Some(old) = self.customers.remove(&id) {
                    if let Some(m) = self.members.get_mut(&old.unique) {
                        m.remove(&id);
                    }
                    self.dirty_profiles.insert(old.unique);
                }
                if !c.is_delete() {
                    let unique = c.text("customer_unique_id").ok_or("customer without customer_unique_id")?;
                    self.members.entry(unique.clone()).or_default().insert(id.clone());
                    self.dirty_profiles.insert(unique.clone());
                    self.customers.insert(id.clone(), Customer { unique, city: c.text("customer_city"), state: c.text("customer_state"), zip: c.text("customer_zip_code_prefix"), email: c.text("customer_email"), pos: c.pos });
                }
                self.dirty_orders.extend(self.customer_orders.get(&id).into_iter().flatten().cloned());
            }
            Table::Orders => {
                let id = c.text("order_id").ok_or("order without order_id")?;
                if let Some(old) = self.orders.remove(&id) {
                    if let Some(o) = self.customer_orders.get_mut(&old.customer_id) {
                        o.remove(&id);
                    }
                }
                if !c.is_delete() {
                    let customer_id = c.text("customer_id").ok_or("order without customer_id")?;
                    self.customer_orders.entry(customer_id.clone()).or_default().insert(id.clone());
                    let times = ["order_purchase_timestamp", "order_approved_at", "order_delivered_carrier_date", "order_delivered_customer_date", "order_estimated_delivery_date"].map(|n| c.micros(n));
                    self.orders.insert(id.clone(), OrderRow { customer_id, status: c.text("order_status"), times });
                }
                self.dirty_orders.insert(id);
            }
            Table::Products => {
                let id = c.text("product_id").ok_or("product without product_id")?;
                if c.is_delete() {
                    self.categories.remove(&id);
                } else {
                    self.categories.insert(id.clone(), c.text("product_category_name"));
                }
                self.dirty_orders.extend(self.product_orders.get(&id).into_iter().flatten().cloned());
            }
            Table::Reviews => {
                let order = c.text("order_id").ok_or("review without order_id")?;
                if let Some(r) = self.reviews.get_mut(&order) {
                    r.remove(key);
                }
                if !c.is_delete() {
                    let score = crate::avro::value::long(c.get("review_score")).map(|s| s as i32);
                    self.reviews.entry(order.clone()).or_default().insert(key.to_vec(), score);
                }
                self.dirty_orders.insert(order);
            }
            Table::Items | Table::Payments => {
                if let Some((order, n)) = self.refs.remove(&k) {
                    match table {
                        Table::Items => {
                            if let Some(old) = self.items.get_mut(&order).and_then(|m| m.remove(&n)) {
                                if let Some(orders) = old.product_id.and_then(|p| self.product_orders.get_mut(&p)) {
                                    orders.remove(&order);
                                }
                            }
                        }
                        _ => {
                            self.payments.get_mut(&order).map(|m| m.remove(&n));
                        }
                    };
                    self.dirty_orders.insert(order);
                }
                if !c.is_delete() {
                    let order = c.text("order_id").ok_or("row without order_id")?;
                    let seq = if table == Table::Items { "order_item_id" } else { "payment_sequential" };
                    let n = crate::avro::value::long(c.get(seq)).ok_or(format!("row without {seq}"))? as i32;
                    if table == Table::Items {
                        let item = Item { product_id: c.text("product_id"), seller_id: c.text("seller_id"), price: c.units("price", SCALE), freight: c.units("freight_value", SCALE) };
                        if let Some(p) = &item.product_id {
                            self.product_orders.entry(p.clone()).or_default().insert(order.clone());
                        }
                        self.items.entry(order.clone()).or_default().insert(n, item);
                    } else {
                        self.payments.entry(order.clone()).or_default().insert(n, c.units("payment_value", SCALE).unwrap_or(0));
                    }
                    self.refs.insert(k.clone(), (order.clone(), n));
                    self.dirty_orders.insert(order);
                }
            }
        }
        self.positions.insert(k, c.pos);
        Ok(())
    }

    fn order(&self, id: &str, o: &OrderRow) -> Order {
        let items = self.items.get(id);
        Order {
            order_id: id.to_string(),
            customer_id: self.customers.get(&o.customer_id).map(|c| c.unique.clone()),
            status: o.status.clone(),
            times: o.times,
            items: items
                .into_iter()
                .flatten()
                .map(|(n, i)| OrderItem {
                    item_id: *n,
                    product_id: i.product_id.clone(),
                    seller_id: i.seller_id.clone(),
                    price: i.price.map(money),
                    freight: i.freight.map(money),
                    category: i.product_id.as_ref().and_then(|p| self.categories.get(p).cloned().flatten()),
                })
                .collect(),
            item_total: money(items.into_iter().flatten().map(|(_, i)| i.price.unwrap_or(0) + i.freight.unwrap_or(0)).sum()),
            payment_total: self.payments.get(id).filter(|p| !p.is_empty()).map(|p| money(p.values().sum::<i128>())),
            review_score: {
                let scores: Vec<i32> = self.reviews.get(id).into_iter().flat_map(|r| r.values().flatten().copied()).collect();
                (!scores.is_empty()).then(|| scores.iter().map(|s| *s as f64).sum::<f64>() / scores.len() as f64)
            },
            source: SOURCE.into(),
        }
    }

    fn emit_order(&mut self, id: &str, out: &mut Vec<OutRecord>) -> Result<()> {
        let key = self.order_key.encode(key("order_id", id))?;
        let seen = self.emitted_orders.get(&key).is_some();
        match self.orders.get(id) {
            Some(o) => {
                let bytes = self.order_value.encode(self.order(id, o).to_value())?;
                if self.emitted_orders.get(&key) == Some(&bytes) {
                    return Ok(());
                }
                let topic = if seen { &self.topics.order_updated } else { &self.topics.order_created };
                out.push(OutRecord { partition: None, topic: topic.clone(), key: key.clone(), value: Some(bytes.clone()) });
                self.emitted_orders.put(key, bytes, out);
            }
            None if seen => {
                out.push(OutRecord { partition: None, topic: self.topics.order_updated.clone(), key: key.clone(), value: None });
                self.emitted_orders.delete(&key, out);
            }
            None => {}
        }
        Ok(())
    }

    /// The person's profile: location from their most recently changed customer record.
    fn emit_profile(&mut self, unique: &str, out: &mut Vec<OutRecord>) -> Result<()> {
        let key = self.profile_key.encode(key("customer_id", unique))?;
        let latest = self.members.get(unique).into_iter().flatten().filter_map(|id| self.customers.get(id).map(|c| (c.pos, id, c))).max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        match latest {
            Some((_, _, c)) => {
                let profile = Profile { customer_id: unique.to_string(), city: c.city.clone(), state: c.state.clone(), zip_code_prefix: c.zip.clone(), email: c.email.clone(), source: SOURCE.into(), ..Default::default() };
                let value = profile.to_value();
                let bytes = self.profile_value.encode(value)?;
                self.emitted_profiles.put(key, bytes, out);
            }
            None => self.emitted_profiles.delete(&key, out),
        }
        Ok(())
    }
}

impl Transform for OlistDomain {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        let Some(bytes) = rec.value else { return Ok(Ok(vec![])) };
        let Some(table) = self.table_of(rec.topic) else { return Ok(Err(format!("unexpected topic {}", rec.topic))) };
        let key = rec.key.unwrap_or_default();
        let c = match self.decoder.decode(bytes).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Err(reason)),
        };
        if self.positions.get(&(table, key.to_vec())).is_some_and(|p| *p >= c.pos) {
            return Ok(Ok(vec![]));
        }
        if let Err(reason) = self.apply(table, key, &c) {
            return Ok(Err(reason));
        }
        let mut out = vec![];
        let store = self.stores.get_mut(&table).expect("a store per table");
        if c.is_delete() {
            store.delete(key, &mut out);
        } else {
            store.put(key.to_vec(), bytes.to_vec(), &mut out);
        }
        Ok(Ok(out))
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        let mut out = vec![];
        let profiles: Vec<String> = self.dirty_profiles.drain().collect();
        for p in profiles {
            self.emit_profile(&p, &mut out)?;
        }
        let orders: Vec<String> = self.dirty_orders.drain().collect();
        for o in orders {
            self.emit_order(&o, &mut out)?;
        }
        Ok(out)
    }
}
