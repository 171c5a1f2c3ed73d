//! Digests of a stateful processor's output topics, to compare a replay with the live run
//! (`funnel digest <processor>` before, `funnel replay <processor>` prints it after).
//!
//! A record stream (c360's enriched orders: one record per input event) is digested as the
//! full sequence per key. A table (consolidated customers, segments, lead rows, seller
//! metrics) is emitted once per batch that touched a key, so how many records a key gets
//! depends on batch boundaries, which differ between any two runs: it is digested as its
//! latest record per key (what a compacted topic keeps). Fields that say when or in which run
//! a record was made (`epoch`, `stream_time`, `processed_at`, …) are left out.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};

use crate::avro::serialization::decode;
use crate::registry::RegistryClient;
use crate::topology::names::TopicNames;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every record, in order, per key.
    Sequence,
    /// The latest record per key (a tombstone removes the key).
    Latest,
}

impl Shape {
    fn as_str(self) -> &'static str {
        match self {
            Shape::Sequence => "every record per key",
            Shape::Latest => "latest per key",
        }
    }
}

pub struct Output {
    pub topic: String,
    pub shape: Shape,
    /// Fields left out of the digest.
    pub ignore: &'static [&'static str],
}

pub struct TopicDigest {
    pub topic: String,
    pub shape: Shape,
    pub records: u64,
    pub keys: usize,
    pub digest: String,
}

/// The outputs of `processor` that a replay must reproduce (named by the processors' own
/// topic sets, so a renamed topic cannot leave the digest reading the old one).
pub fn outputs(processor: &str, names: &TopicNames) -> Result<Vec<Output>> {
    let o = |topic: &String, shape, ignore| Output { topic: topic.clone(), shape, ignore };
    let c360 = crate::c360::C360Topics::new(names.clone());
    let leads = crate::leads::names::LeadTopics::new(names.clone());
    Ok(match processor {
        "c360" => vec![
            o(&c360.enriched, Shape::Sequence, &[]),
            o(&c360.consolidated, Shape::Latest, &["epoch", "stream_time"]),
            o(&c360.segment, Shape::Latest, &["previous_lifecycle_stage", "previous_segment", "stream_time"]),
        ],
        "leads" => vec![o(&leads.lead, Shape::Latest, &[]), o(&leads.lead_processed, Shape::Latest, &["processed_at", "changed_fields"])],
        "seller-metrics" => vec![o(&leads.seller_metrics, Shape::Latest, &[])],
        other => anyhow::bail!("no digest for {other:?}: one of c360, leads, seller-metrics"),
    })
}

/// One record as canonical JSON without the ignored fields.
async fn canonical(registry: &RegistryClient, bytes: &[u8], ignore: &[&str]) -> Result<String> {
    let (_, value) = decode(registry, bytes).await.context("decoding a record")?;
    let mut json = serde_json::Value::try_from(value).context("record as JSON")?;
    if let serde_json::Value::Object(map) = &mut json {
        for f in ignore {
            map.remove(*f);
        }
    }
    // serde_json's map is ordered by key: one text per value.
    Ok(json.to_string())
}

pub async fn digest_topic(brokers: &str, registry: &RegistryClient, out: &Output) -> Result<TopicDigest> {
    let (b, t) = (brokers.to_string(), out.topic.clone());
    let raw = tokio::task::spawn_blocking(move || {
        let mut raw: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![];
        crate::state::read_topic(&b, &t, |k, v| raw.push((k.to_vec(), v.map(<[u8]>::to_vec)))).map(|_| raw)
    })
    .await?
    .with_context(|| format!("reading {}", out.topic))?;
    let records = raw.len() as u64;
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in raw {
        let key = canonical(registry, &k, &[]).await.with_context(|| format!("{}: a key", out.topic))?;
        let value = match v {
            Some(v) => Some(canonical(registry, &v, out.ignore).await.with_context(|| format!("{}: the value of {key}", out.topic))?),
            None => None,
        };
        match (out.shape, value) {
            (Shape::Sequence, v) => per_key.entry(key).or_default().push(v.unwrap_or_else(|| "null".into())),
            (Shape::Latest, Some(v)) => {
                per_key.insert(key, vec![v]);
            }
            (Shape::Latest, None) => {
                per_key.remove(&key);
            }
        }
    }
    let mut h = Sha256::new();
    for (k, vs) in &per_key {
        h.update(k.as_bytes());
        for v in vs {
            h.update(b"\x1f");
            h.update(v.as_bytes());
        }
        h.update(b"\x1e");
    }
    let digest = h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok(TopicDigest { topic: out.topic.clone(), shape: out.shape, records, keys: per_key.len(), digest: digest[..16].to_string() })
}

/// Digest every output of `processor` and print them as a table.
pub async fn print(brokers: &str, registry_url: &str, processor: &str, names: &TopicNames) -> Result<Vec<TopicDigest>> {
    let registry = RegistryClient::new(registry_url);
    let mut digests = vec![];
    for out in outputs(processor, names)? {
        digests.push(digest_topic(brokers, &registry, &out).await?);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec!["topic", "digest of", "records", "keys", "digest"]);
    for d in &digests {
        t.add_row(vec![d.topic.clone(), d.shape.as_str().into(), d.records.to_string(), d.keys.to_string(), d.digest.clone()]);
    }
    println!("{processor} outputs (equal digests: equal per key, leaving out epoch/evaluation-time fields)\n{t}");
    Ok(digests)
}
