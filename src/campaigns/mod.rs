//! Email campaigns: scheduled, batched, personalised sends to customer-360 audiences over SMTP,
//! with tracking, one-click unsubscribe and analytics — every definition, state change, send
//! request, outcome, suppression and engagement a record on the campaign topics.
//!
//! - `funnel campaigns serve` — the API (`service`), tracking routes (`public`), the planner
//!   (`planner`: schedules, audience expansion, finishing, stats) and gold/campaign_stats.
//! - `funnel campaigns send` — the sender workers (`sender`), a consumer group.
//! - `funnel campaigns submit|status` — the command-line client (`cli`).

pub mod audience;
pub mod cli;
pub mod compose;
pub mod demo;
pub mod metrics;
pub mod model;
pub mod planner;
pub mod public;
pub mod records;
pub mod sender;
pub mod service;
pub mod smtp;
pub mod stats_sink;
pub mod template;
pub mod topics;
pub mod tracking;
pub mod view;

/// Wall-clock time in ms since the epoch: when records happen, when requests come due.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
