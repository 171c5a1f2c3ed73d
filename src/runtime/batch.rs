//! One batch of the processor loop (`processor::run`): each record through the transform,
//! its outputs (or its dead letter) sent, the batch's summary outputs, every delivery
//! awaited, then `before_commit`. The loop commits what this returns.

use std::collections::HashMap;

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use super::metrics::metrics;
use super::partitions::now_ms;
use super::processor::{InRecord, LoopConfig, Transform, IDEMPOTENCY_HEADER};
use crate::kafka::batch_producer::OutRecord;
use crate::kafka::dead_letters;

/// Positions after one batch: the next offset per input partition, and the partitions stopped
/// at a record that is not due ((topic, partition) → (its offset, due ms)).
type BatchPositions = (HashMap<(String, i32), i64>, HashMap<(String, i32), (i64, i64)>);

/// Transform and produce one batch.
pub(super) async fn process_batch<T: Transform>(cfg: &LoopConfig, transform: &mut T, producer: &FutureProducer, batch: &[rdkafka::message::OwnedMessage]) -> Result<BatchPositions> {
    let p = cfg.processor.as_str();
    let mut pending = vec![];
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    let send = |pending: &mut Vec<rdkafka::producer::DeliveryFuture>, out: &OutRecord, id: &str| -> Result<()> {
        let headers = OwnedHeaders::new().insert(Header { key: IDEMPOTENCY_HEADER, value: Some(id.as_bytes()) });
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&out.topic).key(out.key.as_slice()).headers(headers);
        if let Some(part) = out.partition {
            r = r.partition(part);
        }
        if let Some(v) = &out.value {
            r = r.payload(v);
        }
        pending.push(producer.send_result(r).map_err(|(e, _)| e).with_context(|| format!("producing to {}", out.topic))?);
        metrics().records_out.with_label_values(&[p, &out.topic]).inc();
        Ok(())
    };
    let mut deferred: HashMap<(String, i32), (i64, i64)> = HashMap::new();
    let now = now_ms();
    for m in batch {
        let rec = InRecord { topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key(), value: m.payload(), timestamp_ms: m.timestamp().to_millis() };
        let tp = (m.topic().to_string(), m.partition());
        if deferred.contains_key(&tp) {
            continue;
        }
        if let Some(due) = transform.not_before(&rec).await.with_context(|| format!("{p}: reading {}/{}/{}", m.topic(), m.partition(), m.offset()))? {
            if due > now {
                deferred.insert(tp, (m.offset(), due));
                continue;
            }
        }
        metrics().records_in.with_label_values(&[p, m.topic()]).inc();
        match transform.process(&rec).await.with_context(|| format!("{p}: processing {}/{}/{}", m.topic(), m.partition(), m.offset()))? {
            Ok(outs) => {
                for (i, out) in outs.iter().enumerate() {
                    send(&mut pending, out, &format!("{}/{}/{}/{i}", m.topic(), m.partition(), m.offset()))?;
                }
            }
            Err(reason) => {
                metrics().dead_letters.with_label_values(&[p, m.topic()]).inc();
                tracing::warn!(processor = p, topic = m.topic(), partition = m.partition(), offset = m.offset(), reason = %reason, "record sent to dead-letter topic");
                let dl = dead_letters::DeadLetter { processor: p, topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key(), payload: m.payload(), reason };
                pending.push(producer.send_result(dl.record(&cfg.dead_letter_topic)).map_err(|(e, _)| e).context("producing dead letter")?);
            }
        }
        let e = next.entry((m.topic().to_string(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    // Summary outputs are identified by the batch's last record.
    let last = batch.last().map(|m| format!("{}/{}/{}", m.topic(), m.partition(), m.offset())).unwrap_or_else(|| format!("{}/no-input/{}", p, now));
    for (i, out) in transform.end_batch().await.with_context(|| format!("{p}: end of batch"))?.iter().enumerate() {
        send(&mut pending, out, &format!("{last}/end/{i}"))?;
    }
    for f in pending {
        f.await.context("producer dropped a delivery")?.map_err(|(e, _)| e).context("delivery failed")?;
    }
    transform.before_commit().await.with_context(|| format!("{p}: before the commit"))?;
    Ok((next, deferred))
}

