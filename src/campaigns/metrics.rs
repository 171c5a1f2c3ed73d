//! The campaigns' Prometheus metrics (beside every processor's `funnel_*` ones), named as the
//! original service's: campaigns_processed_total, campaign_processing_seconds,
//! campaign_processor_healthy; plus the SMTP outcomes and engagement.

use std::sync::OnceLock;

use prometheus::{register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec, IntCounterVec, IntGaugeVec};

pub struct CampaignMetrics {
    /// Send requests handled by the sender workers, by final status (sent, failed, bounced,
    /// suppressed, cancelled, retrying, duplicate).
    pub processed: IntCounterVec,
    /// Render + SMTP time of one mail.
    pub processing: HistogramVec,
    /// 1 while the worker can reach its SMTP server, 0 during an outage.
    pub healthy: IntGaugeVec,
    /// SMTP replies by class: 2xx, 4xx, 5xx, none (no reply).
    pub smtp: IntCounterVec,
    /// Opens, clicks and unsubscribes by whether they look automated.
    pub engagement: IntCounterVec,
    /// Campaign lifecycle changes (scheduled, started, paused, resumed, cancelled, finished, failed).
    pub lifecycle: IntCounterVec,
}

pub fn metrics() -> &'static CampaignMetrics {
    static M: OnceLock<CampaignMetrics> = OnceLock::new();
    M.get_or_init(|| CampaignMetrics {
        processed: register_int_counter_vec!("campaigns_processed_total", "Campaign send requests handled, by status", &["status"]).expect("metric"),
        processing: register_histogram_vec!(
            "campaign_processing_seconds",
            "Render and SMTP time of one campaign mail",
            &["outcome"],
            vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]
        )
        .expect("metric"),
        healthy: register_int_gauge_vec!("campaign_processor_healthy", "1 while the campaign sender reaches its SMTP server", &["server"]).expect("metric"),
        smtp: register_int_counter_vec!("campaign_smtp_replies_total", "SMTP replies to campaign mails, by class", &["class"]).expect("metric"),
        engagement: register_int_counter_vec!("campaign_engagement_total", "Opens, clicks and unsubscribes, by whether they look automated", &["kind", "automated"]).expect("metric"),
        lifecycle: register_int_counter_vec!("campaign_lifecycle_total", "Campaign state changes", &["action"]).expect("metric"),
    })
}
