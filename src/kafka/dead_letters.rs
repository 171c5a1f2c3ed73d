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

impl DeadLetter<'_> {
    /// Reason and origin as headers.
    pub fn headers(&self) -> OwnedHeaders {
        let partition = self.partition.to_string();
        let offset = self.offset.to_string();
        OwnedHeaders::new()
            .insert(Header { key: HEADER_REASON, value: Some(self.reason.as_bytes()) })
            .insert(Header { key: HEADER_TOPIC, value: Some(self.topic.as_bytes()) })
            .insert(Header { key: HEADER_PARTITION, value: Some(partition.as_bytes()) })
            .insert(Header { key: HEADER_OFFSET, value: Some(offset.as_bytes()) })
            .insert(Header { key: HEADER_PROCESSOR, value: Some(self.processor.as_bytes()) })
    }

    /// The dead-letter record for `dlq`: original key and value bytes, headers.
    pub fn record<'b>(&'b self, dlq: &'b str) -> FutureRecord<'b, [u8], [u8]> {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq).headers(self.headers());
        if let Some(k) = self.key {
            rec = rec.key(k);
        }
        if let Some(p) = self.payload {
            rec = rec.payload(p);
        }
        rec
    }
}

/// Send one dead letter and wait for the broker's acknowledgement: the caller moves its
/// offset past the record only after this returns Ok.
pub async fn send(producer: &FutureProducer, dlq: &str, dl: DeadLetter<'_>) -> Result<()> {
    producer
        .send(dl.record(dlq), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("sending dead letter to {dlq}"))?;
    tracing::warn!(processor = dl.processor, topic = dl.topic, partition = dl.partition, offset = dl.offset, reason = %dl.reason, "record sent to dead-letter topic");
    Ok(())
}
