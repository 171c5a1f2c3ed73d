//! Consumer lag per topic (high watermark − committed position), reported to the
//! `funnel_lag_records` gauge every 10 s from a thread of its own: watermark queries are
//! broker round trips that must not stall a processor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use super::metrics::metrics;

/// Committed progress per (topic, partition): the next offset to consume.
pub type Progress = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// Record that everything before `next` of `(topic, partition)` is committed.
pub fn advance(progress: &Progress, topic: &str, partition: i32, next: i64) {
    if let Ok(mut p) = progress.lock() {
        let e = p.entry((topic.to_string(), partition)).or_insert(next);
        *e = (*e).max(next);
    }
}

/// Record the consumer's position as committed progress. Call it only when everything consumed
/// is committed: the position also steps over transaction markers, which no record offset covers
/// (without this a transactional topic shows a lag of one marker per partition forever).
pub fn advance_to_position<X: rdkafka::consumer::ConsumerContext, C: rdkafka::consumer::Consumer<X>>(progress: &Progress, consumer: &C) {
    let Ok(position) = consumer.position() else { return };
    for e in position.elements() {
        if let rdkafka::Offset::Offset(o) = e.offset() {
            advance(progress, e.topic(), e.partition(), o);
        }
    }
}

/// Start the reporter; it ends when the processor drops `progress`.
pub fn spawn_reporter(processor: &str, brokers: &str, progress: &Progress) -> Result<()> {
    let client: rdkafka::consumer::BaseConsumer = crate::kafka::client_config(brokers).create()?;
    let progress = Arc::downgrade(progress);
    let processor = processor.to_string();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(10));
        let Some(progress) = progress.upgrade() else { return };
        let snapshot: HashMap<(String, i32), i64> = match progress.lock() {
            Ok(p) => p.clone(),
            Err(_) => return,
        };
        drop(progress);
        let parts: Vec<(String, i32)> = snapshot.keys().cloned().collect();
        let Ok(marks) = crate::kafka::watermarks(&client, &parts) else { continue };
        let mut per_topic: HashMap<String, i64> = HashMap::new();
        for (topic, partition, _, high) in marks {
            let next = snapshot.get(&(topic.clone(), partition)).copied().unwrap_or(high);
            *per_topic.entry(topic).or_insert(0) += (high - next).max(0);
        }
        for (topic, l) in per_topic {
            metrics().lag.with_label_values(&[&processor, &topic]).set(l);
        }
    });
    Ok(())
}
