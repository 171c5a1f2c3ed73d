//! The relay's Prometheus metrics (beside every processor's `funnel_*` ones).

use std::sync::OnceLock;

use prometheus::{register_histogram_vec, register_int_counter_vec, HistogramVec, IntCounterVec};

pub struct RelayMetrics {
    /// Events of `POST /v1/events` by outcome: accepted, duplicate, rejected.
    pub ingested: IntCounterVec,
    /// Delivery outcomes per destination: delivered, failed, retried, skipped.
    pub deliveries: IntCounterVec,
    pub latency: HistogramVec,
}

pub fn metrics() -> &'static RelayMetrics {
    static M: OnceLock<RelayMetrics> = OnceLock::new();
    M.get_or_init(|| RelayMetrics {
        ingested: register_int_counter_vec!("funnel_relay_ingested_total", "OMS events posted to /v1/events, by outcome", &["outcome"]).expect("metric"),
        deliveries: register_int_counter_vec!("funnel_relay_deliveries_total", "Events by destination platform and outcome", &["platform", "outcome"]).expect("metric"),
        latency: register_histogram_vec!(
            "funnel_relay_request_seconds",
            "Latency of requests to destinations",
            &["platform"],
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
        )
        .expect("metric"),
    })
}
