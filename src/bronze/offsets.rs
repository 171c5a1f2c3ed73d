//! Consumed offsets live in the Delta log as application transaction versions, committed
//! atomically with the data they cover (kafka-delta-ingest's scheme): after a crash the
//! table itself says where to resume, whatever the broker's transactions did.

use anyhow::Result;
use deltalake::kernel::Transaction;
use deltalake::DeltaTable;

pub fn app_id(processor: &str, topic: &str, partition: i32) -> String {
    format!("funnel-{processor}-{topic}-{partition}")
}

/// The last offset committed to `table` for each partition (None = nothing yet).
pub async fn committed(table: &DeltaTable, processor: &str, topic: &str, partitions: i32) -> Result<Vec<Option<i64>>> {
    let mut out = vec![];
    if table.version().is_none() {
        return Ok(vec![None; partitions as usize]);
    }
    let snapshot = table.snapshot()?;
    let log_store = table.log_store();
    for p in 0..partitions {
        out.push(snapshot.transaction_version(log_store.as_ref(), app_id(processor, topic, p)).await?);
    }
    Ok(out)
}

pub fn transactions(processor: &str, topic: &str, offsets: &[(i32, i64)]) -> Vec<Transaction> {
    let now = chrono::Utc::now().timestamp_millis();
    offsets.iter().map(|(p, o)| Transaction::new_with_last_update(app_id(processor, topic, *p), *o, Some(now))).collect()
}
