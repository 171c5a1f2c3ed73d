//! Reading the consolidated view from Redis for the web page (`funnel serve`): filters by
//! search text, segment and lifecycle stage, ordered by revenue or repurchase propensity. The layout is written by
//! `super::cache`. Every query is read-only.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value as Json};

#[derive(Debug, Default, serde::Deserialize)]
pub struct Filter {
    /// Substring of id, name, email, city or state (case-insensitive).
    pub q: Option<String>,
    pub segment: Option<String>,
    pub stage: Option<String>,
    pub limit: Option<usize>,
    /// `revenue` (default) or `propensity` (customers without a score are left out).
    pub sort: Option<String>,
}

fn glob_escape(s: &str) -> String {
    s.chars().flat_map(|c| if matches!(c, '*' | '?' | '[' | ']' | '\\') { vec!['\\', c] } else { vec![c] }).collect()
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Ids matching the filter, highest revenue (or propensity) first, at most `limit`; and how
/// many match in all.
async fn matching(con: &mut MultiplexedConnection, prefix: &str, f: &Filter, limit: usize) -> Result<(Vec<String>, usize)> {
    let ranking = match some(&f.sort) {
        None | Some("revenue") => format!("{prefix}:by_revenue"),
        Some("propensity") => format!("{prefix}:by_propensity"),
        Some(other) => anyhow::bail!("sort: {other:?} is neither revenue nor propensity"),
    };
    let mut sets = vec![];
    if let Some(s) = some(&f.segment) {
        sets.push(format!("{prefix}:segment:{s}"));
    }
    if let Some(s) = some(&f.stage) {
        sets.push(format!("{prefix}:stage:{s}"));
    }
    if let Some(q) = some(&f.q) {
        let pattern = format!("*{}*", glob_escape(&q.to_lowercase()));
        let mut ids = vec![];
        let mut cursor = 0u64;
        loop {
            let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN").arg(format!("{prefix}:search")).arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(2000).query_async(con).await?;
            ids.extend(flat.chunks(2).filter_map(|kv| kv.get(1).cloned()));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for set in &sets {
            if ids.is_empty() {
                break;
            }
            let member: Vec<bool> = redis::cmd("SMISMEMBER").arg(set).arg(&ids).query_async(con).await?;
            ids = ids.into_iter().zip(member).filter_map(|(id, m)| m.then_some(id)).collect();
        }
        if ids.is_empty() {
            return Ok((vec![], 0));
        }
        let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE").arg(&ranking).arg(&ids).query_async(con).await?;
        let mut scored: Vec<(f64, String)> = ids.into_iter().zip(scores).map(|(id, s)| (s.unwrap_or(0.0), id)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let total = scored.len();
        return Ok((scored.into_iter().take(limit).map(|(_, id)| id).collect(), total));
    }
    if sets.is_empty() {
        let total: usize = redis::cmd("ZCARD").arg(&ranking).query_async(con).await?;
        let ids: Vec<String> = redis::cmd("ZREVRANGE").arg(&ranking).arg(0).arg(limit as i64 - 1).query_async(con).await?;
        return Ok((ids, total));
    }
    // ZINTER (read-only): revenue as score, the filter sets weigh nothing.
    let mut cmd = redis::cmd("ZINTER");
    cmd.arg(1 + sets.len()).arg(&ranking).arg(&sets).arg("WEIGHTS").arg(1);
    for _ in &sets {
        cmd.arg(0);
    }
    let all: Vec<String> = cmd.query_async(con).await?;
    let total = all.len();
    Ok((all.into_iter().rev().take(limit).collect(), total))
}

async fn counts(con: &mut MultiplexedConnection, prefix: &str, what: &str) -> Result<BTreeMap<String, usize>> {
    let names: Vec<String> = redis::cmd("SMEMBERS").arg(format!("{prefix}:{what}s")).query_async(con).await?;
    let mut out = BTreeMap::new();
    for n in names {
        let c: usize = redis::cmd("SCARD").arg(format!("{prefix}:{what}:{n}")).query_async(con).await?;
        if c > 0 {
            out.insert(n, c);
        }
    }
    Ok(out)
}

/// The page's data: matching customers (hash fields as text), totals, per-segment and
/// per-stage counts, and the write counter the page watches to refresh.
pub async fn query(con: &mut MultiplexedConnection, prefix: &str, f: &Filter) -> Result<Json> {
    let limit = f.limit.unwrap_or(50).clamp(1, 500);
    let (ids, total) = matching(con, prefix, f, limit).await.context("querying the consolidated view in redis")?;
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.cmd("HGETALL").arg(format!("{prefix}:customer:{id}"));
    }
    for id in &ids {
        pipe.cmd("HGETALL").arg(format!("{prefix}:propensity:{id}"));
    }
    let mut found: Vec<BTreeMap<String, String>> = if ids.is_empty() { vec![] } else { pipe.query_async(con).await? };
    let scores = found.split_off(ids.len());
    let customers: Vec<BTreeMap<String, String>> = found
        .into_iter()
        .zip(scores)
        .map(|(mut c, p)| {
            if let Some(s) = p.get("score") {
                c.insert("propensity".into(), s.clone());
                c.insert("propensity_model_version".into(), p.get("model_version").cloned().unwrap_or_default());
            }
            c
        })
        .collect();
    let meta: BTreeMap<String, String> = redis::cmd("HGETALL").arg(format!("{prefix}:meta")).query_async(con).await?;
    Ok(json!({
        "total": total,
        "customers": customers.into_iter().filter(|c| !c.is_empty()).collect::<Vec<_>>(),
        "segments": counts(con, prefix, "segment").await?,
        "stages": counts(con, prefix, "stage").await?,
        "writes": meta.get("writes").and_then(|w| w.parse::<u64>().ok()).unwrap_or(0),
        "updated_ms": meta.get("updated_ms").and_then(|w| w.parse::<i64>().ok()),
    }))
}
