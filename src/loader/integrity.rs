//! Integrity of a staged table: rows in the source table, live keys in its CDC topic (keys
//! whose latest event is not a delete) and rows in the silver table — three counts that must
//! agree once the loader has caught up.

use std::collections::HashMap;

use anyhow::Result;
use apache_avro::types::Value;
use serde::Serialize;

use crate::avro::serialization;
use crate::avro::value::{field, text};
use crate::registry::RegistryClient;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Integrity {
    pub source_rows: Option<i64>,
    pub topic_rows: Option<i64>,
    pub staged_rows: Option<i64>,
    pub passed: bool,
}

/// Rows of `schema.table` in the source database.
pub async fn source_rows(pg_url: &str, qualified: &str) -> Result<i64> {
    let client = crate::olist::db::connect(pg_url).await?;
    Ok(client.query_one(&format!("SELECT count(*) FROM {qualified}"), &[]).await?.get(0))
}

/// Keys of a CDC topic whose latest event (in offset order) is not a delete.
pub async fn topic_live_keys(brokers: &str, registry: &RegistryClient, topic: &str) -> Result<i64> {
    let (b, t) = (brokers.to_string(), topic.to_string());
    let records = tokio::task::spawn_blocking(move || {
        let mut out: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![];
        crate::state::read_topic(&b, &t, |k, v| out.push((k.to_vec(), v.map(<[u8]>::to_vec)))).map(|_| out)
    })
    .await??;
    let mut live: HashMap<Vec<u8>, bool> = HashMap::new();
    for (k, v) in records {
        let Some(v) = v else {
            live.insert(k, false);
            continue;
        };
        let deleted = match serialization::decode(registry, &v).await {
            Ok((_, Value::Record(env))) => text(field(&env, "op")) == Some("d"),
            _ => continue, // undecodable: counted by nobody, reported by the dead-letter path
        };
        live.insert(k, !deleted);
    }
    Ok(live.values().filter(|l| **l).count() as i64)
}

/// Rows in a Delta table (0 when it does not exist yet).
pub async fn staged_rows(table: &url::Url) -> Result<i64> {
    Ok(crate::summary::delta_rows(table).await?.unwrap_or(0))
}
