//! Postgres connections with context-rich errors.

use anyhow::{Context, Result};
use tokio_postgres::{Client, NoTls};

pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to Postgres at {}", redact(url)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Create `db` on the server behind `admin_url` if it does not exist.
pub async fn ensure_database(admin_url: &str, db: &str) -> Result<()> {
    let c = connect(admin_url).await?;
    let exists = c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db]).await?.is_some();
    if !exists {
        c.batch_execute(&format!("CREATE DATABASE \"{db}\"")).await.with_context(|| format!("creating database {db}"))?;
    }
    Ok(())
}

/// The same server with another database name (e.g. `postgres` to create `olist`).
pub fn with_database(url: &str, db: &str) -> Result<String> {
    let mut u = url::Url::parse(url).with_context(|| format!("bad Postgres URL {}", redact(url)))?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

pub fn database_name(url: &str) -> Result<String> {
    let u = url::Url::parse(url).with_context(|| format!("bad Postgres URL {}", redact(url)))?;
    Ok(u.path().trim_start_matches('/').to_string())
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
