//! Prometheus metrics every processor reports, labelled by processor name.

use std::sync::OnceLock;

use prometheus::{register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec, IntCounterVec, IntGaugeVec};

pub struct Metrics {
    pub records_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub errors: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub duplicates_skipped: IntCounterVec,
    pub lag: IntGaugeVec,
    pub batch_seconds: HistogramVec,
    pub alignment_gave_up: IntCounterVec,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| Metrics {
        records_in: register_int_counter_vec!("funnel_records_in_total", "Records consumed", &["processor", "topic"]).expect("metric"),
        records_out: register_int_counter_vec!("funnel_records_out_total", "Records produced or written", &["processor", "target"]).expect("metric"),
        errors: register_int_counter_vec!("funnel_errors_total", "Errors by kind", &["processor", "kind"]).expect("metric"),
        dead_letters: register_int_counter_vec!("funnel_dead_letters_total", "Records sent to the dead-letter topic", &["processor", "topic"]).expect("metric"),
        duplicates_skipped: register_int_counter_vec!("funnel_duplicates_skipped_total", "Re-delivered change events recognised by source position and skipped", &["processor", "topic"]).expect("metric"),
        lag: register_int_gauge_vec!("funnel_lag", "Lag: records behind the high watermark (sinks) or bytes of WAL behind (CDC)", &["processor", "source"]).expect("metric"),
        batch_seconds: register_histogram_vec!(
            "funnel_batch_latency_seconds",
            "Time to process and commit one batch",
            &["processor"],
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
        )
        .expect("metric"),
        alignment_gave_up: register_int_counter_vec!(
            "funnel_alignment_gave_up_total",
            "Times an input partition stayed behind longer than the alignment idle time and records went on without it",
            &["processor", "topic"]
        )
        .expect("metric"),
    })
}

pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = vec![];
    let _ = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
