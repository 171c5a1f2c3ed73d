//! Dead-letter topics: records that cannot be decoded or processed keep their original bytes,
//! with the reason and origin in headers, so they can be inspected and replayed.

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

pub const HEADER_REASON: &str = "funnel.error";
pub const HEADER_TOPIC: &str = "funnel.source.topic";
pub const HEADER_PARTITION: &str = "funnel.source.partition";
pub const HEADER_OFFSET: &str = "funnel.source.offset";
pub const HEADER_PROCESSOR: &str = "funnel.processor";

/// Dead-letter topic of a processor.
pub fn topic_for(processor: &str) -> String {
    format!("funnel.dlq.{processor}")
}

pub struct DeadLetter<'a> {
    pub processor: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub reason: String,
}

/// Send one dead letter and wait for the broker's acknowledgement: the caller moves its
/// offset past the record only after this returns Ok.
pub async fn send(producer: &FutureProducer, dl: DeadLetter<'_>) -> Result<()> {
    let dlq = topic_for(dl.processor);
    let partition = dl.partition.to_string();
    let offset = dl.offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: HEADER_REASON, value: Some(dl.reason.as_bytes()) })
        .insert(Header { key: HEADER_TOPIC, value: Some(dl.topic.as_bytes()) })
        .insert(Header { key: HEADER_PARTITION, value: Some(partition.as_bytes()) })
        .insert(Header { key: HEADER_OFFSET, value: Some(offset.as_bytes()) })
        .insert(Header { key: HEADER_PROCESSOR, value: Some(dl.processor.as_bytes()) });
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq).headers(headers);
    if let Some(k) = dl.key {
        rec = rec.key(k);
    }
    if let Some(p) = dl.payload {
        rec = rec.payload(p);
    }
    producer
        .send(rec, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("sending dead letter to {dlq}"))?;
    tracing::warn!(processor = dl.processor, topic = dl.topic, partition = dl.partition, offset = dl.offset, reason = %dl.reason, "record sent to dead-letter topic");
    Ok(())
}
