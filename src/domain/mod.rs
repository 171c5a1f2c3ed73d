//! Domain topics (customer 360's inputs): `dom.customer.profile.upsert.v1` (latest profile per
//! person) and `dom.order.created.v1` / `dom.order.updated.v1` (an order with its items and
//! payment total). `funnel run domain` derives them from the olist CDC topics (`olist`).

pub mod events;
pub mod olist;
pub mod seed;

use anyhow::{Context, Result};

use crate::kafka::admin::{ensure_topics, TopicSpec};
use crate::kafka::batch_producer::Delivery;
use crate::lake::merge_sink::wait_for_topic;
use crate::registry::RegistryClient;
use crate::runtime::processor::{self, LoopConfig};
use crate::topology::names::TopicNames;

pub const PROCESSOR: &str = "domain";

pub mod schemas {
    pub const PROFILE_KEY: &str = include_str!("../../schemas/dom/dom.customer.profile.upsert.v1-key.avsc");
    pub const PROFILE_VALUE: &str = include_str!("../../schemas/dom/dom.customer.profile.upsert.v1-value.avsc");
    pub const ORDER_KEY: &str = include_str!("../../schemas/dom/dom.order.v1-key.avsc");
    pub const ORDER_VALUE: &str = include_str!("../../schemas/dom/dom.order.v1-value.avsc");
}

#[derive(Clone, Debug)]
pub struct DomainTopics {
    pub names: TopicNames,
    pub customers: String,
    pub orders: String,
    pub order_items: String,
    pub order_payments: String,
    pub products: String,
    pub order_reviews: String,
    pub profile: String,
    pub order_created: String,
    pub order_updated: String,
}

impl DomainTopics {
    pub fn new(names: TopicNames) -> Self {
        DomainTopics {
            customers: names.cdc("ecommerce.customers"),
            orders: names.cdc("ecommerce.orders"),
            order_items: names.cdc("ecommerce.order_items"),
            order_payments: names.cdc("ecommerce.order_payments"),
            products: names.cdc("ecommerce.products"),
            order_reviews: names.cdc("ecommerce.order_reviews"),
            profile: names.owned("dom.customer.profile.upsert.v1"),
            order_created: names.owned("dom.order.created.v1"),
            order_updated: names.owned("dom.order.updated.v1"),
            names,
        }
    }
}

/// `funnel run domain`: olist CDC → domain topics.
pub async fn run(brokers: &str, registry_url: &str, topics: DomainTopics, delivery: Delivery) -> Result<()> {
    let registry = RegistryClient::waiting_for(registry_url, "domain");
    for t in [&topics.customers, &topics.orders, &topics.order_items, &topics.order_payments, &topics.products, &topics.order_reviews] {
        wait_for_topic(brokers, t).await?;
    }
    let dlq = topics.names.dead_letters(PROCESSOR);
    ensure_topics(
        brokers,
        &[
            TopicSpec { name: topics.order_created.clone(), partitions: 3, compact: false },
            TopicSpec { name: topics.order_updated.clone(), partitions: 3, compact: false },
            TopicSpec { name: dlq, partitions: 1, compact: false },
        ],
    )
    .await?;
    crate::runtime::instance::single(PROCESSOR);
    processor::fence(brokers, &topics.names.group(PROCESSOR), delivery).await?;
    let transform = olist::OlistDomain::open(brokers, &registry, topics.clone()).await?;
    let cfg = LoopConfig::namespaced(PROCESSOR, brokers, transform.inputs(), delivery, &topics.names);
    processor::run(cfg, transform).await.context("domain")
}
