//! The topics of the lead pipeline, resolved for a CDC prefix and a namespace.

use crate::topology::names::TopicNames;

#[derive(Clone, Debug)]
pub struct LeadTopics {
    pub names: TopicNames,
    pub mqls: String,
    pub closed_deals: String,
    pub order_items: String,
    pub sellers: String,
    pub seller_metrics: String,
    pub lead: String,
    pub lead_processed: String,
    pub data_loaded: String,
    /// Partitions of seller-metrics' repartition topic: how many instances can share the
    /// aggregate (topology/topics.toml).
    pub seller_partitions: i32,
    /// Partitions of leads' repartition topic (and so of the lead topic, which follows it):
    /// how many instances can share the join.
    pub lead_partitions: i32,
}

impl LeadTopics {
    pub fn new(names: TopicNames) -> Self {
        LeadTopics {
            mqls: names.cdc("marketing.marketing_qualified_leads"),
            closed_deals: names.cdc("marketing.closed_deals"),
            order_items: names.cdc("ecommerce.order_items"),
            sellers: names.cdc("ecommerce.sellers"),
            seller_metrics: names.owned("ecommerce.seller.metrics.v1"),
            lead: names.owned("marketing.lead.v1"),
            lead_processed: names.owned("marketing.lead.processed.v1"),
            data_loaded: names.owned("marketing.data.loaded.v1"),
            seller_partitions: 3,
            lead_partitions: 3,
            names,
        }
    }

    pub fn changelog(&self, processor: &str, store: &str) -> String {
        self.names.changelog(processor, store)
    }

    /// Order items and sellers re-keyed by seller_id (seller-metrics' repartition step).
    pub fn seller_repartition(&self) -> String {
        self.names.repartition("seller-metrics", "by-seller")
    }

    /// MQLs and closed deals re-keyed by mql_id (leads' repartition step).
    pub fn lead_repartition(&self) -> String {
        self.names.repartition("leads", "by-lead")
    }
}
