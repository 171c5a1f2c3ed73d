//! Produce a batch of records atomically: in a Kafka transaction where the broker supports
//! them (exactly-once), or as an acknowledged batch (at-least-once, consumers dedupe by the
//! idempotency key each record carries).

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::producer_config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Delivery {
    /// Kafka transactions: records and progress commit together.
    ExactlyOnce,
    /// Acknowledged batches; a crash may re-send a batch, recognised downstream by its key.
    AtLeastOnce,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly-once",
            Delivery::AtLeastOnce => "at-least-once",
        }
    }
}

#[derive(Clone)]
pub struct OutRecord {
    /// The partition to write, or None for the key's (murmur2, as Java clients): a changelog
    /// of partitioned state goes to the partition of the input the state belongs to.
    pub partition: Option<i32>,
    pub topic: String,
    pub key: Vec<u8>,
    /// None = tombstone.
    pub value: Option<Vec<u8>>,
}

pub struct BatchProducer {
    producer: FutureProducer,
    delivery: Delivery,
}

const TIMEOUT: Duration = Duration::from_secs(60);

impl BatchProducer {
    pub async fn new(brokers: &str, transactional_id: &str, delivery: Delivery) -> Result<Self> {
        let tid = (delivery == Delivery::ExactlyOnce).then_some(transactional_id);
        let producer: FutureProducer = producer_config(brokers, tid)
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .context("creating producer")?;
        if delivery == Delivery::ExactlyOnce {
            let p = producer.clone();
            tokio::task::spawn_blocking(move || p.init_transactions(TIMEOUT))
                .await?
                .with_context(|| format!("init_transactions for {transactional_id} (use --delivery at-least-once on brokers without transactions)"))?;
        }
        Ok(Self { producer, delivery })
    }

    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// Send every record; returns once all are acknowledged (and committed, exactly-once).
    pub async fn send(&self, records: &[OutRecord]) -> Result<()> {
        self.send_stamped(records, None).await
    }

    /// `send` with each record's timestamp (ms since the epoch) given instead of now.
    pub async fn send_stamped(&self, records: &[OutRecord], stamps: Option<&[i64]>) -> Result<()> {
        if self.delivery == Delivery::ExactlyOnce {
            self.producer.begin_transaction().context("begin_transaction")?;
        }
        match self.send_all(records, stamps).await {
            Ok(()) => {
                if self.delivery == Delivery::ExactlyOnce {
                    let p = self.producer.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || p.commit_transaction(TIMEOUT)).await? {
                        // The broker may or may not have committed: abort what can be aborted and
                        // say the outcome is unknown (a caller must not report "nothing written").
                        let p = self.producer.clone();
                        let _ = tokio::task::spawn_blocking(move || p.abort_transaction(TIMEOUT)).await;
                        return Err(anyhow::Error::new(e).context(CommitOutcomeUnknown));
                    }
                }
                Ok(())
            }
            Err(e) => {
                if self.delivery == Delivery::ExactlyOnce {
                    let p = self.producer.clone();
                    let _ = tokio::task::spawn_blocking(move || p.abort_transaction(TIMEOUT)).await;
                }
                Err(e)
            }
        }
    }

    async fn send_all(&self, records: &[OutRecord], stamps: Option<&[i64]>) -> Result<()> {
        let mut pending = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            loop {
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic);
                if let Some(p) = r.partition {
                    rec = rec.partition(p);
                }
                if let Some(ts) = stamps.and_then(|s| s.get(i)) {
                    rec = rec.timestamp(*ts);
                }
                // An empty key is never a framed Avro key: it stands for "no key" (null).
                if !r.key.is_empty() {
                    rec = rec.key(&r.key);
                }
                if let Some(v) = &r.value {
                    rec = rec.payload(v);
                }
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // Local queue full: let deliveries drain, then retry this record.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err((e, _)) => return Err(e).with_context(|| format!("producing record {i} to {}", r.topic)),
                }
            }
        }
        for (i, f) in pending.into_iter().enumerate() {
            f.await.context("producer dropped a delivery")?.map_err(|(e, _)| e).with_context(|| format!("delivering record {i}"))?;
        }
        Ok(())
    }
}

/// `BatchProducer::send` failed at the commit itself: the records may have been committed.
#[derive(Debug, thiserror::Error)]
#[error("commit_transaction failed: the records may or may not be committed")]
pub struct CommitOutcomeUnknown;

pub fn is_commit_outcome_unknown(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<CommitOutcomeUnknown>())
}

/// Whether `e` (from `BatchProducer::send`) is a record the broker can never take (too large),
/// as opposed to a broker that is unavailable.
pub fn is_record_too_large(e: &anyhow::Error) -> bool {
    e.chain().filter_map(|c| c.downcast_ref::<KafkaError>()).any(|k| {
        matches!(k.rdkafka_error_code(), Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize))
    })
}

/// Start producing one record with a plain (non-transactional) producer; await the future for
/// the broker's acknowledgement.
pub fn produce(producer: &FutureProducer, out: &OutRecord) -> Result<rdkafka::producer::DeliveryFuture> {
    let mut rec: rdkafka::producer::FutureRecord<'_, [u8], [u8]> = rdkafka::producer::FutureRecord::to(&out.topic).key(out.key.as_slice());
    if let Some(p) = out.partition {
        rec = rec.partition(p);
    }
    if let Some(v) = &out.value {
        rec = rec.payload(v);
    }
    producer.send_result(rec).map_err(|(e, _)| e).with_context(|| format!("producing to {}", out.topic))
}

/// Produce `outs` and wait until the broker acknowledged every one.
pub async fn produce_acked(producer: &FutureProducer, outs: &[OutRecord]) -> Result<()> {
    let pending = outs.iter().map(|o| produce(producer, o)).collect::<Result<Vec<_>>>()?;
    for f in pending {
        f.await.context("producer dropped a record")?.map_err(|(e, _)| e).context("a record was not acknowledged")?;
    }
    Ok(())
}
