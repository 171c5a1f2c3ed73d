//! `funnel serve` (default port 5000): funnel's HTTP front. Every route but `/health` needs the
//! API credentials (`runtime::auth`).
//! - `POST /topics/{topic}` — JSON in, Avro out, like Confluent's REST Proxy (see `produce`):
//!   public input topics only, all records of a request in one Kafka transaction.
//! - `GET /api/sql?q=SELECT…` — read-only SQL over the lake, bounded in rows and time (see `sql`).
//! - `GET /` — the customer 360 page: consolidated customers from Redis with search, segment and
//!   lifecycle filters, refreshing live; `GET /api/customers?q=&segment=&stage=&limit=` is its
//!   data (see `c360::view`).

pub mod produce;
mod sql;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::config::Endpoints;
use crate::kafka::batch_producer::{BatchProducer, Delivery};
use crate::lake::query::{CachedCatalog, Limits};
use crate::registry::RegistryClient;
use crate::runtime::auth::ApiCredentials;
use crate::runtime::http::json_error;
use crate::topology::names::TopicNames;

pub const DEFAULT_PORT: u16 = 5000;

const PAGE: &str = include_str!("c360.html");

#[derive(clap::Args, Clone, Debug)]
pub struct ServeConfig {
    #[arg(long, env = "FUNNEL_SERVE_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Key prefix of the consolidated view in Redis (as given to `funnel run cache`).
    #[arg(long = "redis-prefix", env = "FUNNEL_REDIS_PREFIX", default_value = "c360")]
    pub redis_prefix: String,
    /// Where topology/topics.toml says which topics are public inputs (the only ones
    /// `POST /topics` writes).
    #[arg(long, default_value = ".")]
    pub topology_dir: PathBuf,
    /// Largest request body accepted, in bytes (413 above it).
    #[arg(long = "max-body-bytes", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// /api/sql: rows returned at most (the answer says when it was cut).
    #[arg(long = "sql-max-rows", default_value_t = 10_000)]
    pub sql_max_rows: usize,
    /// /api/sql: seconds a query may run before it is stopped.
    #[arg(long = "sql-timeout-secs", default_value_t = 30.0)]
    pub sql_timeout_secs: f64,
    /// /api/sql: the table catalog is rebuilt at most this often (queries see the lake as of
    /// at most this many seconds ago).
    #[arg(long = "sql-catalog-secs", default_value_t = 10.0)]
    pub sql_catalog_secs: f64,
    #[command(flatten)]
    pub ns: crate::topology::names::NamespaceArg,
}

/// How `POST /topics` may write a topic.
#[derive(Clone, Copy, Debug)]
struct TopicPolicy {
    compacted: bool,
}

struct Serve {
    registry: RegistryClient,
    /// One transaction at a time per producer: requests take turns.
    producer: tokio::sync::Mutex<BatchProducer>,
    /// The public input topics (namespaced) and how to write them.
    public: HashMap<String, TopicPolicy>,
    catalog: CachedCatalog,
    sql_limits: Limits,
    redis: redis::Client,
    redis_prefix: String,
}

/// This host's name, for a transactional id no other instance shares.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length; gethostname NUL-terminates within it on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    }
}

pub async fn run(ep: &Endpoints, stack_dir: &std::path::Path, cfg: &ServeConfig) -> Result<()> {
    let creds = ApiCredentials::load(stack_dir)?;
    let topology = crate::topology::Topology::load(&cfg.topology_dir)?;
    let names = TopicNames::new("olist", &cfg.ns.namespace);
    let public: HashMap<String, TopicPolicy> = topology.topics.iter().filter(|t| t.public).map(|t| (names.owned(&t.name), TopicPolicy { compacted: t.compacted() })).collect();
    let transactional_id = names.owned(&format!("funnel-serve-{}-{}", hostname(), cfg.port));
    let lake = ep.lake()?;
    let state = Arc::new(Serve {
        registry: RegistryClient::new(&ep.registry_url),
        producer: tokio::sync::Mutex::new(BatchProducer::new(&ep.brokers, &transactional_id, Delivery::ExactlyOnce).await?),
        public,
        catalog: CachedCatalog::new(&lake, Duration::from_secs_f64(cfg.sql_catalog_secs.max(0.0))),
        sql_limits: Limits { max_rows: cfg.sql_max_rows, timeout: Duration::from_secs_f64(cfg.sql_timeout_secs.max(0.001)) },
        redis: redis::Client::open(ep.redis_url.as_str()).with_context(|| format!("redis url {}", ep.redis_url))?,
        redis_prefix: cfg.redis_prefix.clone(),
    });
    let protected = Router::new()
        .route("/", get(|| async { axum::response::Html(PAGE) }))
        .route("/api/customers", get(customers))
        .route("/topics/{topic}", post(produce::produce))
        .route("/api/sql", get(sql::sql))
        .with_state(state)
        .route_layer(axum::middleware::from_fn_with_state(creds, crate::runtime::auth::require));
    let app = crate::runtime::http::with_json_errors(protected.merge(crate::runtime::http::health_router()), cfg.max_body_bytes);
    let address = ep.bind_address.as_str();
    let port = cfg.port;
    let listener = tokio::net::TcpListener::bind((address, port)).await.with_context(|| format!("binding {address}:{port} (set --port, --bind-address)"))?;
    tracing::info!(port, "serving http://{address}:{port}/ (the customer 360 page, POST /topics/{{topic}}, GET /api/sql?q=)");
    axum::serve(listener, app).with_graceful_shutdown(async { crate::runtime::shutdown::wait().await }).await?;
    Ok(())
}

async fn customers(State(s): State<Arc<Serve>>, f: Result<Query<crate::c360::view::Filter>, axum::extract::rejection::QueryRejection>) -> Response {
    let f = match f {
        Ok(Query(f)) => f,
        Err(rejection) => return json_error(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    if let Some(sort) = f.sort.as_deref().filter(|s| !s.is_empty() && !matches!(*s, "revenue" | "propensity")) {
        return json_error(StatusCode::BAD_REQUEST, format!("sort: {sort:?} is neither revenue nor propensity"));
    }
    let mut con = match s.redis.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}")),
    };
    match crate::c360::view::query(&mut con, &s.redis_prefix, &f).await {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")),
    }
}
