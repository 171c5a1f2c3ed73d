//! `funnel bench scale-out`: seller-metrics (both steps) as 1, 2 and 3 instances of its
//! consumer groups, each instance its own `funnel run seller-metrics --instance-id <i>
//! --until-caught-up` process, over the same CDC topics (run `funnel demo` first), each
//! count in a throw-away namespace. Timed from the start of the processes to the exit of the
//! last one, so group joins and state restores after rebalances count: that is what adding
//! an instance costs. The baseline is one instance; on 2 cores, more than 2 is not expected
//! to help.

use std::time::Instant;

use anyhow::{Context, Result};

use super::Measurement;
use crate::kafka::admin;

pub async fn run(brokers: &str, cdc_prefix: &str, counts: &[usize]) -> Result<()> {
    let names = crate::topology::names::TopicNames::new(cdc_prefix, "");
    let topics = crate::leads::names::LeadTopics::new(names);
    let existing = admin::list_topics(brokers)?;
    for t in [&topics.order_items, &topics.sellers] {
        anyhow::ensure!(existing.contains(t), "no topic {t}: run `funnel demo` (or CDC of the olist tables) first");
    }
    let consumer: rdkafka::consumer::BaseConsumer = crate::kafka::client_config(brokers).create()?;
    let mut parts = vec![];
    for t in [&topics.order_items, &topics.sellers] {
        for p in 0..admin::partition_count(brokers, t)? {
            parts.push((t.clone(), p));
        }
    }
    let records: u64 = crate::kafka::watermarks(&consumer, &parts)?.iter().map(|(_, _, lo, hi)| (hi - lo) as u64).sum();
    drop(consumer);
    let exe = std::env::current_exe().context("the funnel executable")?;
    let stamp = chrono::Utc::now().timestamp_millis() % 100_000_000;
    let mut runs = vec![];
    for &n in counts {
        anyhow::ensure!(n >= 1, "instance counts start at 1");
        let ns = format!("benchscale{stamp}x{n}");
        let t0 = Instant::now();
        let mut children = vec![];
        for i in 0..n {
            let log = std::fs::File::create(std::env::temp_dir().join(format!("{ns}-{i}.log")))?;
            let child = tokio::process::Command::new(&exe)
                .args(["run", "seller-metrics", "--until-caught-up", "--http-port", "0", "--namespace", &ns, "--cdc-topic-prefix", cdc_prefix, "--instance-id", &format!("i{i}")])
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .context("starting a seller-metrics instance")?;
            children.push(child);
        }
        for (i, mut c) in children.into_iter().enumerate() {
            let status = c.wait().await?;
            anyhow::ensure!(status.success(), "instance {i} of {n} failed ({status}); log in {}", std::env::temp_dir().join(format!("{ns}-{i}.log")).display());
        }
        let m = Measurement { name: format!("{n} instance{}", if n == 1 { "" } else { "s" }), records, seconds: t0.elapsed().as_secs_f64() };
        eprintln!("{}: {:.1} s", m.name, m.seconds);
        runs.push(m);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["run", "records", "seconds", "records/s", "÷ 1 instance"]);
    let base = runs.first().map(Measurement::per_second).unwrap_or(1.0);
    for m in &runs {
        t.add_row(vec![m.name.clone(), m.records.to_string(), format!("{:.2}", m.seconds), format!("{:.0}", m.per_second()), format!("{:.2}", m.per_second() / base)]);
    }
    println!("seller-metrics (repartition step + aggregate) over {} and {}, bounded runs\n{t}", topics.order_items, topics.sellers);
    Ok(())
}
