//! Dependency checks of the data-loader service (`GET /health`, `funnel health`): broker,
//! schema registry, source database and lake, each with its own verdict and reason.

use std::time::Duration;

use serde::Serialize;

use crate::config::Endpoints;

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub dependency: String,
    pub ok: bool,
    pub detail: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

async fn timed<F: std::future::Future<Output = anyhow::Result<String>>>(name: &str, f: F) -> Check {
    let (ok, detail) = match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(d)) => (true, d),
        Ok(Err(e)) => (false, format!("{e:#}")),
        Err(_) => (false, format!("no answer within {} s", TIMEOUT.as_secs())),
    };
    Check { dependency: name.to_string(), ok, detail }
}

/// Check every dependency concurrently.
pub async fn check_all(ep: &Endpoints, lake: &crate::lake::location::Lake) -> Vec<Check> {
    let brokers = ep.brokers.clone();
    let broker = timed("broker", async move {
        let n = tokio::task::spawn_blocking(move || crate::kafka::admin::list_topics(&brokers)).await??.len();
        Ok(format!("{n} topics"))
    });
    let registry = crate::registry::RegistryClient::new(&ep.registry_url);
    let registry = timed("schema_registry", async move { Ok(format!("{} subjects", registry.subjects().await?.len())) });
    let pg = ep.source_pg_url.clone();
    let source = timed("source_database", async move {
        let client = crate::olist::db::connect(&pg).await?;
        let v: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        Ok(format!("PostgreSQL {v} at {}", crate::olist::db::redact(&pg)))
    });
    let lake = lake.clone();
    let lake = timed("lake", async move { crate::lake::location::probe(&lake).await });
    let (a, b, c, d) = tokio::join!(broker, registry, source, lake);
    vec![a, b, c, d]
}
