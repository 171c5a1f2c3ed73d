//! Endpoints every command shares, read from flags or `FUNNEL_*` environment variables.
//! The defaults are the loopback ports of `funnel stack up`, so `eval "$(funnel stack env)"` is optional.

use std::path::PathBuf;

/// Default loopback ports of the local stack (chosen away from the services a machine may already run).
pub const DEFAULT_BROKER_PORT: u16 = 19092;
pub const DEFAULT_REGISTRY_PORT: u16 = 18081;
pub const DEFAULT_PG_PORT: u16 = 15432;
pub const DEFAULT_REDIS_PORT: u16 = 16379;
pub const DEFAULT_HTTP_PORT: u16 = 9464;
pub const DEFAULT_SMTP_PORT: u16 = 12525;

#[derive(clap::Args, Clone, Debug)]
pub struct Endpoints {
    /// Kafka-API bootstrap servers (Redpanda, Kafka, tansu).
    #[arg(long, env = "FUNNEL_BROKERS", default_value = "127.0.0.1:19092", global = true)]
    pub brokers: String,
    /// Confluent-compatible Schema Registry URL.
    #[arg(long = "schema-registry-url", env = "FUNNEL_SCHEMA_REGISTRY_URL", default_value = "http://127.0.0.1:18081", global = true)]
    pub registry_url: String,
    /// The olist source database (needs wal_level=logical for CDC).
    #[arg(long = "source-pg-url", env = "FUNNEL_SOURCE_PG_URL", default_value = "postgres://postgres@127.0.0.1:15432/olist", global = true)]
    pub source_pg_url: String,
    /// Redis URL (serving layer).
    #[arg(long = "redis-url", env = "FUNNEL_REDIS_URL", default_value = "redis://127.0.0.1:16379/", global = true)]
    pub redis_url: String,
    /// Address the HTTP servers (metrics, loader API, `serve`) listen on: loopback by default,
    /// 0.0.0.0 in a container.
    #[arg(long = "bind-address", env = "FUNNEL_BIND_ADDRESS", default_value = "127.0.0.1", global = true)]
    pub bind_address: String,
    /// Root directory of the Delta lake (bronze/, silver/, gold/ below it).
    #[arg(long = "lake-dir", env = "FUNNEL_LAKE_DIR", default_value = "./lake", global = true)]
    pub lake_dir: PathBuf,
}

impl Endpoints {
    /// The lake directory as an absolute path (Delta table URLs must be absolute).
    pub fn lake_root(&self) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.lake_dir)
            .map_err(|e| anyhow::anyhow!("cannot create lake dir {}: {e}", self.lake_dir.display()))?;
        Ok(std::fs::canonicalize(&self.lake_dir)?)
    }
}

/// "60" (seconds, as the relay's RETRY_BACKOFF_BASE), "250ms", "60s", "2m".
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| c.is_ascii_alphabetic()).map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration (e.g. 60, 250ms, 60s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range (0 to 24 h)"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
