//! Consumed offsets live in the Delta log as application transaction versions, committed
//! atomically with the data they cover (kafka-delta-ingest's scheme): after a crash the
//! table itself says where to resume, whatever the broker's transactions did.

use anyhow::Result;
use deltalake::kernel::Transaction;
use deltalake::DeltaTable;

pub fn app_id(processor: &str, topic: &str, partition: i32) -> String {
    format!("funnel-{processor}-{topic}-{partition}")
}

/// The table at `url` when it exists (a table without a Delta log is not an error: it is new).
pub async fn open_existing(url: &url::Url) -> Result<Option<DeltaTable>> {
    if !super::location::exists(url).await? {
        return Ok(None);
    }
    let table = DeltaTable::try_from_url(url.clone()).await?;
    Ok(table.version().is_some().then_some(table))
}

/// The last offset committed to the table at `url` for each partition (None = nothing yet).
pub async fn committed(url: &url::Url, processor: &str, topic: &str, partitions: i32) -> Result<Vec<Option<i64>>> {
    let mut out = vec![];
    let Some(table) = open_existing(url).await? else {
        return Ok(vec![None; partitions as usize]);
    };
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
