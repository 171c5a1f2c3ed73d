//! gold/campaign_stats: campaign.stats.v1 merged by campaign_id into Delta (exactly-once, the
//! offsets in the Delta log), readable with `funnel sql "SELECT * FROM gold_campaign_stats"`.
//! Runs inside `funnel campaigns serve`, restarted after a failure like any processor.

use crate::lake::location::Lake;
use crate::lake::merge_sink::{self, RowShape, SinkConfig, SinkTable};

pub const PROCESSOR: &str = "campaign-stats";

pub fn path(lake: &Lake) -> url::Url {
    lake.table("gold", "campaign_stats")
}

pub fn config(brokers: &str, registry_url: &str, lake: &Lake, topics: &super::topics::CampaignTopics) -> SinkConfig {
    SinkConfig {
        processor: PROCESSOR.into(),
        brokers: brokers.into(),
        registry_url: registry_url.into(),
        dead_letter_topic: topics.names.dead_letters(PROCESSOR),
        tables: vec![SinkTable {
            topic: topics.stats.clone(),
            url: path(lake),
            key: vec!["campaign_id".into()],
            shape: RowShape::Keyed { value_schema: super::topics::Kind::Stats.schemas().1.into(), delete_when: None },
            comment: "gold campaign_stats: per campaign, recipients per outcome and unique opens/clicks, merged by campaign_id from campaign.stats.v1".into(),
        }],
        flush_ms: 1000,
        checkpoint_interval: 20,
        until_caught_up: false,
    }
}

pub async fn run(brokers: String, registry_url: String, lake: Lake, topics: super::topics::CampaignTopics) {
    let cfg = config(&brokers, &registry_url, &lake, &topics);
    let r = crate::runtime::supervise::supervise(PROCESSOR, false, || merge_sink::run(cfg.clone(), Default::default())).await;
    if let Err(e) = r {
        tracing::error!(error = %format!("{e:#}"), "campaign stats sink stopped");
    }
}
