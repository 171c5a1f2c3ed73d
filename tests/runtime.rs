//! The consume-transform-produce loop: exactly-once topic→topic under kill -9.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Stack;
use funnel::kafka::admin::{ensure_topics, TopicSpec};
use funnel::olist::synthetic::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

fn spawn_passthrough(stack: &Stack, from: &str, to: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_funnel"))
        .args(["run", "passthrough", "--http-port", "0", "--passthrough-from", from, "--passthrough-to", to])
        .env("FUNNEL_BROKERS", &stack.brokers)
        .env("FUNNEL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn funnel")
}

/// Every committed value on `topic`, with how often it appears.
fn committed_values(brokers: &str, topic: &str) -> HashMap<Vec<u8>, usize> {
    let c: BaseConsumer = funnel::kafka::client_config(brokers).set("group.id", "runtime-test-reader").set("isolation.level", "read_committed").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = vec![];
    for p in 0..3 {
        let (lo, hi) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        tpl.add_partition_offset(topic, p, Offset::Offset(lo)).unwrap();
        ends.push((p, hi));
    }
    c.assign(&tpl).unwrap();
    let mut seen = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => *seen.entry(m.payload().unwrap_or_default().to_vec()).or_insert(0) += 1,
            Some(Err(e)) => panic!("{e}"),
            None => {
                let pos = c.position().unwrap();
                if ends.iter().all(|(p, hi)| matches!(pos.find_partition(topic, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *hi)) {
                    break;
                }
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_is_exactly_once_under_kill_9() {
    let stack = Stack::from_env();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    let (input, output) = (format!("rt{stamp}.in"), format!("rt{stamp}.out"));
    let specs: Vec<TopicSpec> = [&input, &output].iter().map(|t| TopicSpec { name: t.to_string(), partitions: 3, compact: false }).collect();
    ensure_topics(&stack.brokers, &specs).await.unwrap();

    const N: usize = 20_000;
    let brokers = stack.brokers.clone();
    let input_t = input.clone();
    let feeder = tokio::spawn(async move {
        let p: FutureProducer = funnel::kafka::producer_config(&brokers, None).create().unwrap();
        for chunk in 0..40 {
            let mut fs = vec![];
            for i in chunk * (N / 40)..(chunk + 1) * (N / 40) {
                let (k, v) = (format!("k{}", i % 997), format!("v{i}"));
                fs.push(p.send_result(FutureRecord::to(&input_t).key(&k).payload(&v)).map_err(|(e, _)| e).unwrap());
            }
            for f in fs {
                f.await.unwrap().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });

    let mut rng = Rng::new(stamp as u64);
    let mut child = spawn_passthrough(&stack, &input, &output);
    let mut kills = 0;
    while !feeder.is_finished() || kills < 4 {
        tokio::time::sleep(Duration::from_millis(800 + rng.below(1500))).await;
        let _ = child.kill();
        let _ = child.wait();
        kills += 1;
        child = spawn_passthrough(&stack, &input, &output);
    }
    feeder.await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(180);
    let seen = loop {
        let seen = committed_values(&stack.brokers, &output);
        if seen.values().sum::<usize>() >= N || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    println!("{kills} kills; {} distinct values, {duplicates} duplicates", seen.len());
    assert_eq!(seen.len(), N, "every input record arrives");
    assert_eq!(duplicates, 0, "no input record arrives twice");
}

/// A stateful processor restarted after kill -9 fences its previous instance before it restores
/// its changelog: the transaction the killed instance left open is aborted, so the read_committed
/// restore neither waits for the broker's transaction timeout nor sees the aborted record.
/// Needs a broker that aborts a fenced producer's open transaction: tansu (the local stack)
/// does not — its read_committed readers get the open transaction's record even after the
/// fence (measured 2026-12-02) — so run it against Redpanda or Kafka:
/// `FUNNEL_BROKERS=… cargo test --test runtime -- --ignored`.
#[ignore = "tansu does not abort a fenced producer's open transaction; run against Redpanda/Kafka"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fences_the_killed_instance_before_restoring() {
    use rdkafka::producer::Producer;
    let stack = Stack::from_env();
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    let topic = format!("fence{stamp}.changelog");
    let tid = format!("fence{stamp}-processor");
    ensure_topics(&stack.brokers, &[TopicSpec { name: topic.clone(), partitions: 1, compact: true }]).await.unwrap();
    // The killed instance: one committed change, then a transaction left open with another.
    let zombie: FutureProducer = funnel::kafka::producer_config(&stack.brokers, Some(&tid)).create().unwrap();
    zombie.init_transactions(Duration::from_secs(30)).unwrap();
    for (value, commit) in [("committed", true), ("left open by kill -9", false)] {
        zombie.begin_transaction().unwrap();
        zombie.send(FutureRecord::to(&topic).key("k").payload(value), Duration::from_secs(30)).await.unwrap();
        if commit {
            zombie.commit_transaction(Duration::from_secs(30)).unwrap();
        }
    }
    std::mem::forget(zombie); // gone without a word, as after SIGKILL

    let t0 = Instant::now();
    funnel::runtime::processor::fence(&stack.brokers, &tid, funnel::kafka::batch_producer::Delivery::ExactlyOnce).await.unwrap();
    let (b, t) = (stack.brokers.clone(), topic.clone());
    let restore = tokio::task::spawn_blocking(move || {
        let mut values = vec![];
        funnel::state::read_topic(&b, &t, |_, v| values.push(String::from_utf8_lossy(v.unwrap_or_default()).into_owned())).unwrap();
        values
    });
    // Well below the 60 s transaction timeout a broker would wait before aborting it by itself.
    let values = tokio::time::timeout(Duration::from_secs(30), restore).await.expect("the restore waited for the open transaction").unwrap();
    eprintln!("fenced and restored in {:?}", t0.elapsed());
    assert_eq!(values, vec!["committed".to_string()], "the open transaction's record must not be restored");
}
