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
/// The local S3-compatible server (moto) for lakes on object storage.
pub const DEFAULT_S3_PORT: u16 = 19100;
/// The bucket `funnel stack up` creates on it.
pub const STACK_S3_BUCKET: &str = "funnel";

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
    /// Root of the Delta lake (bronze/, silver/, gold/ below it): a directory, or
    /// s3://bucket/prefix on S3 or an S3-compatible server (AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ALLOW_HTTP from the environment).
    #[arg(long = "lake-dir", env = "FUNNEL_LAKE_DIR", default_value = "./lake", global = true, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub lake_dir: String,
    /// Directory of the propensity model artefacts (files, on a local disk): default
    /// <lake-dir>/models for a local lake; required when the lake is on object storage.
    #[arg(long = "models-dir", env = "FUNNEL_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
}

impl Endpoints {
    /// The lake (a local directory is created when missing).
    pub fn lake(&self) -> anyhow::Result<crate::lake::location::Lake> {
        crate::lake::location::Lake::parse(&self.lake_dir)
    }

    /// Where model artefacts are stored (created when missing).
    pub fn models_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = match (&self.models_dir, self.lake()?.local_dir()) {
            (Some(d), _) => d.clone(),
            (None, Some(lake)) => lake.join("models"),
            (None, None) => anyhow::bail!("the lake {} is on object storage and model artefacts are local files: set --models-dir (FUNNEL_MODELS_DIR)", self.lake_dir),
        };
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create the models directory {}: {e}", dir.display()))?;
        Ok(dir)
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
