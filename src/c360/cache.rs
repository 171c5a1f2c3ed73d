//! The `cache` processor: `dom.customer.consolidated.v1` and the score topics of `funnel run
//! propensity` (`dom.customer.propensity.v1`, `marketing.lead.score.v1`) → Redis, the serving
//! copy the web page of `funnel serve` reads.
//!
//! Layout (prefix `c360` by default):
//! - `<prefix>:customer:<id>` hash: every consolidated field as text (timestamps in µs since
//!   the epoch, nulls absent) plus `_v_epoch` / `_v_events` / `_v_time`, the record's version;
//! - `<prefix>:segment:<segment>`, `<prefix>:stage:<lifecycle_stage>` sets of ids, and the
//!   names seen in `<prefix>:segments` / `<prefix>:stages`;
//! - `<prefix>:by_revenue` sorted set; `<prefix>:search` hash: lowercase search text (id,
//!   names, email, city, state; the id last, so the text is unique) → id, matched by
//!   `HSCAN … MATCH` (which matches field names);
//! - `<prefix>:meta` hash: `writes` (a counter the page polls to refresh) and `updated_ms`;
//! - `<prefix>:propensity:<id>` hash (`score`, `model_version`, `scored_at`) and the
//!   `<prefix>:by_propensity` sorted set, from `dom.customer.propensity.v1`, kept apart from
//!   the customer hash, which each consolidated record replaces; likewise
//!   `<prefix>:lead_score:<lead_id>` and `<prefix>:leads_by_propensity` from
//!   `marketing.lead.score.v1`. A score record is the whole current score of its key, so
//!   applying it again (at-least-once) changes nothing.
//!
//! Writes are versioned: a Lua script applies a record only when its version
//! (`epoch`, `applied_events`, `stream_time`) is not older than the stored one, so
//! re-deliveries never put an older view over a newer one, and a replay (`funnel replay
//! c360`, a new epoch) replaces the view even where compaction left it fewer events to count.
//! At-least-once: offsets are committed after Redis acknowledged the batch.
//! The read side (the web page's queries) is `super::view`.

use anyhow::{Context, Result};
use apache_avro::types::Value;

use super::C360Topics;
use crate::avro::serialization::decode_or_reason;
use crate::avro::value::{field, long, text, unwrap_union};
use crate::kafka::batch_producer::{Delivery, OutRecord};
use crate::registry::RegistryClient;
use crate::runtime::processor::{self, InRecord, LoopConfig, Outcome, Transform};

/// KEYS: none (names are built from the prefix, one Redis, not a cluster).
/// ARGV: prefix, id, epoch, events, time, segment, stage, revenue, search, field, value, …
/// The version is (epoch, events, time), compared in that order.
const UPSERT: &str = r#"
local p, id = ARGV[1], ARGV[2]
local key = p .. ':customer:' .. id
local cur = redis.call('HMGET', key, '_v_epoch', '_v_events', '_v_time', 'segment', 'lifecycle_stage', '_search')
local nep, ne, nt = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if cur[1] then
  local cep, ce, ct = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
  if nep < cep or (nep == cep and (ne < ce or (ne == ce and nt < ct))) then return 0 end
  if cur[4] then redis.call('SREM', p .. ':segment:' .. cur[4], id) end
  if cur[5] then redis.call('SREM', p .. ':stage:' .. cur[5], id) end
  if cur[6] then redis.call('HDEL', p .. ':search', cur[6]) end
end
redis.call('DEL', key)
redis.call('HSET', key, '_v_epoch', ARGV[3], '_v_events', ARGV[4], '_v_time', ARGV[5], '_search', ARGV[9], unpack(ARGV, 10))
redis.call('SADD', p .. ':segment:' .. ARGV[6], id)
redis.call('SADD', p .. ':stage:' .. ARGV[7], id)
redis.call('SADD', p .. ':segments', ARGV[6])
redis.call('SADD', p .. ':stages', ARGV[7])
redis.call('ZADD', p .. ':by_revenue', ARGV[8], id)
redis.call('HSET', p .. ':search', ARGV[9], id)
redis.call('HINCRBY', p .. ':meta', 'writes', 1)
return 1
"#;

/// ARGV: prefix, id.
const DELETE: &str = r#"
local p, id = ARGV[1], ARGV[2]
local key = p .. ':customer:' .. id
local cur = redis.call('HMGET', key, 'segment', 'lifecycle_stage', '_search')
if cur[1] then redis.call('SREM', p .. ':segment:' .. cur[1], id) end
if cur[2] then redis.call('SREM', p .. ':stage:' .. cur[2], id) end
if cur[3] then redis.call('HDEL', p .. ':search', cur[3]) end
redis.call('DEL', key)
redis.call('ZREM', p .. ':by_revenue', id)
redis.call('HINCRBY', p .. ':meta', 'writes', 1)
return 1
"#;

/// ARGV: prefix, hash name, sorted set name, id, score, model_version, scored_at.
const SCORE: &str = r#"
local p, id = ARGV[1], ARGV[4]
redis.call('HSET', p .. ':' .. ARGV[2] .. ':' .. id, 'score', ARGV[5], 'model_version', ARGV[6], 'scored_at', ARGV[7])
redis.call('ZADD', p .. ':' .. ARGV[3], ARGV[5], id)
redis.call('HINCRBY', p .. ':meta', 'writes', 1)
return 1
"#;

/// ARGV: prefix, hash name, sorted set name, id.
const UNSCORE: &str = r#"
local p, id = ARGV[1], ARGV[4]
redis.call('DEL', p .. ':' .. ARGV[2] .. ':' .. id)
redis.call('ZREM', p .. ':' .. ARGV[3], id)
redis.call('HINCRBY', p .. ':meta', 'writes', 1)
return 1
"#;

/// A score topic the cache serves, and where its scores go under the prefix.
#[derive(Clone, Debug)]
pub struct ScoreTopic {
    pub topic: String,
    /// The key field of its records.
    pub key: &'static str,
    /// `<prefix>:<hash>:<id>` holds one key's score.
    pub hash: &'static str,
    /// `<prefix>:<by>` ranks the ids by score.
    pub by: &'static str,
}

impl ScoreTopic {
    /// The score topics of `funnel run propensity` (customers, leads).
    pub fn propensity(names: &crate::topology::names::TopicNames) -> [ScoreTopic; 2] {
        let t = crate::propensity::run::ScoreTopics::new(names.clone());
        [
            ScoreTopic { topic: t.customers_out, key: "customer_id", hash: "propensity", by: "by_propensity" },
            ScoreTopic { topic: t.leads_out, key: "lead_id", hash: "lead_score", by: "leads_by_propensity" },
        ]
    }
}

enum Write {
    Upsert(Vec<String>),
    Delete(String),
    /// (index into `Cache::scores`, [id, score, model_version, scored_at]).
    Score(usize, [String; 4]),
    Unscore(usize, String),
}

pub struct Cache {
    registry: RegistryClient,
    prefix: String,
    redis: redis::aio::MultiplexedConnection,
    upsert: redis::Script,
    delete: redis::Script,
    score: redis::Script,
    unscore: redis::Script,
    /// The score topics (their records are scores, not consolidated customers).
    scores: Vec<ScoreTopic>,
    pending: Vec<Write>,
}

/// A field as Redis text; `None` for null.
fn cell(v: &Value) -> Option<String> {
    match unwrap_union(v) {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Long(x) | Value::TimestampMicros(x) => Some(x.to_string()),
        Value::Int(x) => Some(x.to_string()),
        Value::Double(x) => Some(x.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

impl Cache {
    pub async fn open(registry: &RegistryClient, redis_url: &str, prefix: &str, scores: Vec<ScoreTopic>) -> Result<Self> {
        let client = redis::Client::open(redis_url).with_context(|| format!("redis url {redis_url}"))?;
        let redis = client.get_multiplexed_async_connection().await.with_context(|| format!("connecting to redis at {redis_url}"))?;
        Ok(Cache {
            registry: registry.clone(),
            prefix: prefix.to_string(),
            redis,
            upsert: redis::Script::new(UPSERT),
            delete: redis::Script::new(DELETE),
            score: redis::Script::new(SCORE),
            unscore: redis::Script::new(UNSCORE),
            scores,
            pending: vec![],
        })
    }

    fn score_args(key: &str, fields: &[(String, Value)]) -> Result<[String; 4], String> {
        let id = text(field(fields, key)).ok_or_else(|| format!("score without {key}"))?.to_string();
        let score = crate::avro::value::double(field(fields, "score")).filter(|s| s.is_finite()).ok_or("score is not a finite number")?;
        let version = text(field(fields, "model_version")).ok_or("score without model_version")?.to_string();
        Ok([id, score.to_string(), version, long(field(fields, "scored_at")).unwrap_or(0).to_string()])
    }

    fn upsert_args(&self, fields: &[(String, Value)]) -> Result<Vec<String>, String> {
        let id = text(field(fields, "customer_id")).ok_or("record without customer_id")?.to_string();
        let required = |name: &str| text(field(fields, name)).map(str::to_string).ok_or_else(|| format!("record without {name}"));
        let epoch = long(field(fields, "epoch")).unwrap_or(0);
        let events = long(field(fields, "applied_events")).ok_or("record without applied_events")?;
        let time = long(field(fields, "stream_time")).unwrap_or(-1);
        let revenue = crate::avro::value::double(field(fields, "revenue")).filter(|r| r.is_finite()).ok_or("revenue is not a finite number")?;
        let search: Vec<String> = ["first_name", "last_name", "email", "city", "state", "customer_id"].iter().filter_map(|n| text(field(fields, n))).map(str::to_lowercase).collect();
        let mut args = vec![self.prefix.clone(), id, epoch.to_string(), events.to_string(), time.to_string(), required("segment")?, required("lifecycle_stage")?, revenue.to_string(), search.join(" ")];
        for (name, v) in fields {
            if let Some(c) = cell(v) {
                args.push(name.clone());
                args.push(c);
            }
        }
        Ok(args)
    }
}

impl Transform for Cache {
    async fn process(&mut self, rec: &InRecord<'_>) -> Result<Outcome> {
        let Some(bytes) = rec.value.or(rec.key) else { return Ok(Err("tombstone without a key".into())) };
        let fields = match decode_or_reason(&self.registry, bytes).await? {
            Ok((_, Value::Record(f))) => f,
            Ok(_) => return Ok(Err("not an Avro record".into())),
            Err(reason) => return Ok(Err(reason)),
        };
        let score = self.scores.iter().position(|s| s.topic == rec.topic);
        let key = score.map_or("customer_id", |i| self.scores[i].key);
        if rec.value.is_none() {
            let Some(id) = text(field(&fields, key)) else { return Ok(Err(format!("key without {key}"))) };
            self.pending.push(match score {
                Some(i) => Write::Unscore(i, id.to_string()),
                None => Write::Delete(id.to_string()),
            });
            return Ok(Ok(vec![]));
        }
        if let Some(i) = score {
            match Self::score_args(key, &fields) {
                Ok(args) => self.pending.push(Write::Score(i, args)),
                Err(reason) => return Ok(Err(reason)),
            }
            return Ok(Ok(vec![]));
        }
        match self.upsert_args(&fields) {
            Ok(args) => self.pending.push(Write::Upsert(args)),
            Err(reason) => return Ok(Err(reason)),
        }
        Ok(Ok(vec![]))
    }

    async fn end_batch(&mut self) -> Result<Vec<OutRecord>> {
        if self.pending.is_empty() {
            return Ok(vec![]);
        }
        // Load the scripts (idempotent; survives a Redis restart), then one pipelined round trip.
        for script in [&self.upsert, &self.delete, &self.score, &self.unscore] {
            script.prepare_invoke().load_async(&mut self.redis).await.context("loading the cache scripts into redis")?;
        }
        let mut pipe = redis::pipe();
        for w in &self.pending {
            match w {
                Write::Upsert(args) => pipe.cmd("EVALSHA").arg(self.upsert.get_hash()).arg(0).arg(args),
                Write::Delete(id) => pipe.cmd("EVALSHA").arg(self.delete.get_hash()).arg(0).arg(&self.prefix).arg(id),
                Write::Score(i, args) => pipe.cmd("EVALSHA").arg(self.score.get_hash()).arg(0).arg(&self.prefix).arg(self.scores[*i].hash).arg(self.scores[*i].by).arg(&args[..]),
                Write::Unscore(i, id) => pipe.cmd("EVALSHA").arg(self.unscore.get_hash()).arg(0).arg(&self.prefix).arg(self.scores[*i].hash).arg(self.scores[*i].by).arg(id),
            };
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        pipe.cmd("HSET").arg(format!("{}:meta", self.prefix)).arg("updated_ms").arg(now_ms).ignore();
        let applied: Vec<i64> = pipe.query_async(&mut self.redis).await.context("writing the consolidated view to redis")?;
        let stale = applied.iter().filter(|a| **a == 0).count();
        if stale > 0 {
            tracing::debug!(stale, "cache: older versions not written");
        }
        self.pending.clear();
        Ok(vec![])
    }
}

/// Delete every key of the view under `prefix` (a fresh pipeline restarts versions at zero,
/// which the versioned writes would otherwise refuse).
pub async fn clear(redis_url: &str, prefix: &str) -> Result<u64> {
    let mut con = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await.with_context(|| format!("connecting to redis at {redis_url}"))?;
    let mut cursor = 0u64;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(format!("{prefix}:*")).arg("COUNT").arg(5000).query_async(&mut con).await?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK").arg(&keys).query_async::<u64>(&mut con).await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(deleted);
        }
    }
}

/// `funnel run cache`.
pub async fn run(brokers: &str, registry_url: &str, redis_url: &str, topics: C360Topics, prefix: &str, stop_when_idle: bool) -> Result<()> {
    let registry = RegistryClient::waiting_for(registry_url, super::CACHE_PROCESSOR);
    crate::kafka::admin::ensure_topics(brokers, &topics.outputs()).await?;
    crate::kafka::admin::ensure_topics(brokers, &[crate::kafka::admin::TopicSpec { name: topics.names.dead_letters(super::CACHE_PROCESSOR), partitions: 1, compact: false }]).await?;
    // The score topics exist whether or not `funnel run propensity` ever ran (compacted, as
    // the scorer creates them).
    let scores = ScoreTopic::propensity(&topics.names);
    let specs: Vec<_> = scores.iter().map(|s| crate::kafka::admin::TopicSpec { name: s.topic.clone(), partitions: 3, compact: true }).collect();
    crate::kafka::admin::ensure_topics(brokers, &specs).await?;
    let mut inputs = vec![topics.consolidated.clone()];
    inputs.extend(scores.iter().map(|s| s.topic.clone()));
    let cache = Cache::open(&registry, redis_url, prefix, scores.to_vec()).await?;
    let mut lc = LoopConfig::namespaced(super::CACHE_PROCESSOR, brokers, inputs, Delivery::AtLeastOnce, &topics.names);
    lc.stop_when_idle = stop_when_idle;
    processor::run(lc, cache).await.context("cache")
}
