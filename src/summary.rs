//! `funnel summary`: records per topic and rows per bronze table, aligned.

use std::time::Duration;

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::Endpoints;
use crate::kafka::client_config;

/// Records on a topic = Σ (high − low) over its partitions (tombstones and any transaction
/// markers included, so this is an upper bound on events).
pub fn topic_records(brokers: &str, topic: &str) -> Result<i64> {
    let c: BaseConsumer = client_config(brokers).create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut n = 0;
    for t in md.topics() {
        for p in t.partitions() {
            let (lo, hi) = c.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            n += hi - lo;
        }
    }
    Ok(n)
}

/// Rows in a Delta table (from the log's file statistics, no data read).
pub async fn delta_rows(path: &std::path::Path) -> Result<Option<i64>> {
    let Ok(url) = url::Url::from_directory_path(path) else { return Ok(None) };
    if !path.join("_delta_log").exists() {
        return Ok(None);
    }
    let table = deltalake::open_table(url).await?;
    let snapshot = table.snapshot()?;
    let mut rows = 0i64;
    for add in snapshot.log_data().into_iter() {
        rows += add.num_records().unwrap_or(0) as i64;
    }
    Ok(Some(rows))
}

pub async fn print(ep: &Endpoints) -> Result<()> {
    let lake = ep.lake_root()?;
    let mut topics: Vec<String> = crate::kafka::admin::list_topics(&ep.brokers)?.into_iter().filter(|t| !t.starts_with("__")).collect();
    topics.sort();
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["topic", "records (offsets)", "bronze rows"]);
    for t in topics {
        let bronze = delta_rows(&crate::bronze::table_path(&lake, &t)).await?.map(|n| n.to_string()).unwrap_or_default();
        table.add_row(vec![t.clone(), topic_records(&ep.brokers, &t)?.to_string(), bronze]);
    }
    println!("{table}");
    Ok(())
}
