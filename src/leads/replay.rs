//! `funnel replay seller-metrics|leads`: forget a processor's state and rebuild it from its
//! input topics. The processor must be stopped. Its changelogs are deleted and its consumer
//! group rewound to the beginning; for `leads` the lead topic (its last-emitted store) and the
//! gold table go too, and are rebuilt. The rebuild runs to the end of the inputs and exits;
//! start the processor again afterwards. Rebuilt leads are announced again (`created`) on
//! marketing.lead.processed.v1; seller-metrics (both of its steps) republishes every seller (same values).


use anyhow::{Context, Result};

use super::names::LeadTopics;
use super::{join, lead_inputs, seller_items, seller_metrics, LeadsConfig};
use crate::kafka::admin;
use crate::kafka::batch_producer::Delivery;

pub async fn replay(which: &str, brokers: &str, registry_url: &str, lake: &crate::lake::location::Lake, topics: LeadTopics, delivery: Delivery, cfg: &LeadsConfig) -> Result<()> {
    match which {
        seller_metrics::PROCESSOR => {
            // Both steps start over: the aggregate's group is rewound while the repartition
            // topic still exists (a group's offsets outlive a deleted topic), then its state,
            // the repartition step's item state and the repartition topic itself go.
            let doomed = vec![topics.changelog(which, "by-seller")];
            admin::reset_for_replay(brokers, &topics.names.group(which), &[topics.seller_repartition()], &doomed).await?;
            let doomed = vec![topics.changelog(seller_items::PROCESSOR, "items"), topics.seller_repartition()];
            admin::reset_for_replay(brokers, &topics.names.group(seller_items::PROCESSOR), &[topics.order_items.clone(), topics.sellers.clone()], &doomed).await?;
            super::run_seller_metrics(brokers, registry_url, topics, delivery, cfg, true).await
        }
        join::PROCESSOR => {
            // Both steps start over, as for seller-metrics: the join's group is rewound while
            // the repartition topic still exists, then its state, the lead topic (its
            // last-emitted store) and the repartition topic go.
            let doomed = vec![topics.changelog(which, "mqls"), topics.changelog(which, "closed-deals"), topics.lead.clone()];
            admin::reset_for_replay(brokers, &topics.names.group(which), &[topics.lead_repartition()], &doomed).await?;
            admin::reset_for_replay(brokers, &topics.names.group(lead_inputs::PROCESSOR), &[topics.mqls.clone(), topics.closed_deals.clone()], &[topics.lead_repartition()]).await?;
            let gold = super::gold_path(lake);
            if crate::lake::location::remove(&gold).await.with_context(|| format!("removing {gold}"))? {
                tracing::info!(table = %gold, "gold table removed for the rebuild");
            }
            // The join to the end of its inputs, then the gold table up to the join's output.
            super::run_leads(brokers, registry_url, topics.clone(), delivery, cfg, true).await?;
            super::run_leads_gold(brokers, registry_url, lake, topics, cfg, true).await
        }
        other => anyhow::bail!("nothing to replay for {other:?} (seller-metrics or leads)"),
    }
}
