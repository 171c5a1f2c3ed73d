//! CDC snapshot throughput ÷ `COPY (SELECT …) TO STDOUT` on the same table, same run.
//! The snapshot runs the real connector (slot + exported snapshot, chunked reads, Avro
//! encoding, transactional produce with progress) into throw-away topics.

use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Buf;
use futures::StreamExt;

use super::{report, Measurement};
use crate::cdc::{self, CdcConfig};
use crate::kafka::batch_producer::Delivery;
use crate::olist::db;

pub async fn run(pg_url: &str, brokers: &str, registry_url: &str, table: &str) -> Result<()> {
    let client = db::connect(pg_url).await?;
    let rows: i64 = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.with_context(|| format!("counting {table}"))?.get(0);

    // Baseline: Postgres' own bulk export of the same rows, in the same key order.
    let (schema, name) = table.split_once('.').context("table as schema.table")?;
    let meta = cdc::catalog::table_meta(&client, schema, name).await?;
    let t0 = Instant::now();
    let stream = client.copy_out(&format!("COPY (SELECT * FROM {table} ORDER BY {}) TO STDOUT", meta.pk_order())).await?;
    futures::pin_mut!(stream);
    let mut lines = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        lines += chunk.chunk().iter().filter(|b| **b == b'\n').count() as u64;
    }
    let copy = Measurement { name: "COPY TO STDOUT".into(), records: lines, seconds: t0.elapsed().as_secs_f64() };

    let stamp = chrono::Utc::now().timestamp_millis() % 100_000_000;
    let cfg = CdcConfig {
        name: format!("bench{stamp}"),
        topic_prefix: format!("bench{stamp}"),
        schemas: vec![schema.to_string()],
        publication: format!("bench{stamp}"),
        tables: vec![table.to_string()],
        snapshot_only: true,
        load_id: None,
        partitions: 3,
        snapshot_chunk: 10_000,
        max_changes: 20_000,
        poll_ms: 100,
        delivery: Delivery::ExactlyOnce,
    };
    let t0 = Instant::now();
    let stats = cdc::run(pg_url, brokers, registry_url, cfg.clone()).await?;
    let whole = Measurement { name: "funnel CDC, start to snapshot done".into(), records: rows as u64, seconds: t0.elapsed().as_secs_f64() };
    let snap = Measurement { name: "funnel CDC snapshot phase".into(), records: rows as u64, seconds: stats.snapshot_seconds.unwrap_or(whole.seconds) };
    cdc::reset(pg_url, brokers, registry_url, &cfg.name).await?;
    client.batch_execute(&format!("DROP PUBLICATION IF EXISTS \"{}\"", cfg.publication)).await?;
    let topics = vec![meta.topic(&cfg.topic_prefix), cdc::state::topic(&cfg.name)];
    crate::kafka::admin::delete_topics(brokers, &topics).await?;
    report(&format!("CDC snapshot of {table} ({rows} rows), snapshot phase"), &copy, &snap);
    report("including connector start-up (topics, schemas, producer, publication, slot)", &copy, &whole);
    Ok(())
}
