//! The relay's topics: CDC of the `relay` tables (`<cdc prefix>.relay.<table>`) and the topics
//! its processors own (namespaced like every processor's).

use std::time::Duration;

use crate::topology::names::TopicNames;

/// The tables the relay's CDC connector captures (not the audit, which only the relay writes).
pub const CDC_TABLES: &[&str] = &["relay.marketing_events", "relay.storefronts", "relay.storefront_sgtm_config", "relay.ad_analytics_platforms", "relay.platform_credentials"];

#[derive(clap::Args, Clone, Debug)]
pub struct RelayConfig {
    /// The relay tables' CDC connector: key of its progress in _funnel.cdc.state, base of its
    /// slot and publication names.
    #[arg(long = "relay-cdc-name", default_value = "relay")]
    pub cdc_name: String,
    /// Prefix of the relay tables' CDC topics: <prefix>.relay.<table>.
    #[arg(long = "relay-cdc-prefix", default_value = "cdc")]
    pub cdc_prefix: String,
    /// Attempts per event and destination before it goes to the dead-letter topic.
    #[arg(long = "max-retry-attempts", env = "MAX_RETRY_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..=20))]
    pub max_attempts: i32,
    /// Wait before the second attempt; it doubles for each further one. Seconds ("60"), or
    /// with a unit: "250ms", "60s", "2m".
    #[arg(long = "retry-backoff-base", env = "RETRY_BACKOFF_BASE", default_value = "60", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Timeout of one request to a destination, in milliseconds.
    #[arg(long = "relay-timeout-ms", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Requests in flight at once per delivery worker.
    #[arg(long = "relay-concurrency", default_value_t = 32)]
    pub concurrency: usize,
}

pub use crate::config::parse_duration;

#[derive(Clone, Debug)]
pub struct RelayTopics {
    pub names: TopicNames,
    pub marketing_events: String,
    pub storefronts: String,
    pub sgtm_config: String,
    pub platforms: String,
    pub credentials: String,
    pub received: String,
    pub requested: String,
    pub attempts: String,
    pub dlq: String,
}

impl RelayTopics {
    pub fn new(cfg: &RelayConfig, namespace: &str) -> Self {
        let names = TopicNames::new(&cfg.cdc_prefix, namespace);
        RelayTopics {
            marketing_events: names.cdc("relay.marketing_events"),
            storefronts: names.cdc("relay.storefronts"),
            sgtm_config: names.cdc("relay.storefront_sgtm_config"),
            platforms: names.cdc("relay.ad_analytics_platforms"),
            credentials: names.cdc("relay.platform_credentials"),
            received: names.owned("relay.event.received.v1"),
            requested: names.owned("relay.delivery.requested.v1"),
            attempts: names.owned("relay.attempt.v1"),
            dlq: names.owned("relay.delivery.dlq.v1"),
            names,
        }
    }

    /// Where deliveries wait for their attempt `n` (≥ 2): one topic per attempt number, so
    /// that every record of a topic waits the same and they come due in offset order.
    pub fn retry(&self, n: i32) -> String {
        self.names.owned(&format!("relay.delivery.retry.{n}.v1"))
    }
}
