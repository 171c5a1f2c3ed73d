//! The relay's topics: CDC of the `relay` tables (`<cdc prefix>.relay.<table>`) and the topics
//! its processors own (namespaced like every processor's).

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
}

#[derive(Clone, Debug)]
pub struct RelayTopics {
    pub names: TopicNames,
    pub marketing_events: String,
    pub storefronts: String,
    pub sgtm_config: String,
    pub platforms: String,
    pub credentials: String,
    pub received: String,
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
            names,
        }
    }
}
