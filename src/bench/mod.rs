//! `funnel bench …`: throughput ratios against a baseline measured in the same run.

pub mod cdc_snapshot;
