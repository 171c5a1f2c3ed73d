//! The propensity processors' Prometheus metrics (beside every processor's `funnel_*` ones).

use std::sync::OnceLock;

use prometheus::{register_gauge_vec, register_int_counter_vec, GaugeVec, IntCounterVec};

pub struct PropensityMetrics {
    /// Records scored, by model.
    pub scored: IntCounterVec,
    /// Model versions loaded or refused (corrupt, inconsistent), by model.
    pub model_loads: IntCounterVec,
    /// Training time (Unix seconds) of the version in use, by model.
    pub model_version: GaugeVec,
}

pub fn metrics() -> &'static PropensityMetrics {
    static M: OnceLock<PropensityMetrics> = OnceLock::new();
    M.get_or_init(|| PropensityMetrics {
        scored: register_int_counter_vec!("propensity_scored_total", "Records scored, by model", &["model"]).expect("metric"),
        model_loads: register_int_counter_vec!("propensity_model_loads_total", "Model versions loaded or refused, by model and outcome", &["model", "outcome"]).expect("metric"),
        model_version: register_gauge_vec!("propensity_model_trained_at_seconds", "Training time of the model version in use, by model", &["model"]).expect("metric"),
    })
}
