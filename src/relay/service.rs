//! `funnel relay serve` (default port 8088): the relay's HTTP side.
//! - `POST /v1/events` — an OMS batch (`oms`), recorded in the inbox (`inbox`); the answer says
//!   how many events were accepted, how many were duplicates, and why each rejected one was.
//! - `/admin/v1/*` — the configuration (`admin`).
//! - `/health` (alive) and `/health/ready` (the database answers), `/metrics`: without auth.
//! Every other route needs the API credentials (HTTP Basic, user `funnel` and the token, or a
//! bearer token — `runtime::auth`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::crypto::Keyring;
use super::metrics::metrics;
use super::{admin, inbox, oms};
use crate::runtime::auth::ApiCredentials;
use crate::runtime::http::json_error;

pub const DEFAULT_PORT: u16 = 8088;

#[derive(clap::Args, Clone, Debug)]
pub struct RelayServeConfig {
    #[arg(long, env = "FUNNEL_RELAY_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Largest request body accepted, in bytes (413 above it). An OMS page of 4000 events is
    /// about 2 MB.
    #[arg(long = "max-body-bytes", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Database connections the service keeps.
    #[arg(long = "pool-size", default_value_t = 8)]
    pub pool_size: usize,
}

pub struct Relay {
    pub pool: deadpool_postgres::Pool,
    pub keys: Arc<Keyring>,
}

/// The service's routes (tests and `funnel demo` build it too).
pub fn router(relay: Arc<Relay>, creds: ApiCredentials, max_body_bytes: usize) -> Router {
    let protected = Router::new()
        .route("/v1/events", post(post_events))
        .merge(admin::router())
        .route_layer(axum::middleware::from_fn_with_state(creds, crate::runtime::auth::require));
    let open = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(|| async { crate::runtime::metrics::render() }));
    crate::runtime::http::with_json_errors(protected.merge(open).with_state(relay), max_body_bytes)
}

/// Serve until shutdown; the relay schema is migrated first.
pub async fn run(pg_url: &str, bind: &str, stack_dir: &std::path::Path, cfg: &RelayServeConfig) -> Result<()> {
    let creds = ApiCredentials::load(stack_dir)?;
    let keys = Arc::new(Keyring::load(stack_dir)?);
    super::db::migrate(pg_url).await?;
    let relay = Arc::new(Relay { pool: super::db::pool(pg_url, cfg.pool_size)?, keys });
    let app = router(relay, creds, cfg.max_body_bytes);
    let listener = tokio::net::TcpListener::bind((bind, cfg.port)).await.with_context(|| format!("binding {bind}:{} (set --port, --bind-address)", cfg.port))?;
    tracing::info!(port = cfg.port, "relay serving http://{bind}:{}/ (POST /v1/events, /admin/v1/*)", cfg.port);
    axum::serve(listener, app).with_graceful_shutdown(async { crate::runtime::shutdown::wait().await }).await?;
    Ok(())
}

async fn ready(State(s): State<Arc<Relay>>) -> Response {
    let check = async {
        let c = s.pool.get().await.map_err(|e| e.to_string())?;
        c.query_one("SELECT 1 FROM relay.schema_migrations LIMIT 1", &[]).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(_)) => Json(json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("the relay database is not ready: {e}")),
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "the relay database did not answer within 5 s"),
    }
}

async fn post_events(State(s): State<Arc<Relay>>, b: Result<Json<Value>, JsonRejection>) -> Response {
    let Json(body) = match b {
        Ok(b) => b,
        Err(r) => return json_error(r.status(), r.body_text()),
    };
    let batch = match oms::parse_batch(&body, chrono::Utc::now()) {
        Ok(b) => b,
        Err(reason) => {
            metrics().ingested.with_label_values(&["refused_batch"]).inc();
            return json_error(StatusCode::UNPROCESSABLE_ENTITY, reason);
        }
    };
    // The request is recorded in its own task: a client that hangs up mid-request cannot cancel
    // it between the decision and the answer (the insert is one statement either way).
    let task = tokio::spawn(async move {
        let c = s.pool.get().await.map_err(|e| e.to_string())?;
        let mut codes: Vec<&str> = batch.events.iter().map(|e| e.storefront_code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        let known = inbox::storefronts(&c, &codes).await.map_err(|e| e.to_string())?;
        let mut rejected = batch.rejected;
        let events = inbox::check_storefronts(batch.events, &known, &mut rejected);
        rejected.sort_by_key(|r| r.index);
        let inserted = inbox::record(&c, &events).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((batch.count, batch.received, events.len() as u64, inserted, rejected))
    });
    match task.await {
        Ok(Ok((count, received, valid, accepted, rejected))) => {
            let m = &metrics().ingested;
            m.with_label_values(&["accepted"]).inc_by(accepted);
            m.with_label_values(&["duplicate"]).inc_by(valid - accepted);
            m.with_label_values(&["rejected"]).inc_by(rejected.len() as u64);
            tracing::debug!(received, accepted, duplicates = valid - accepted, rejected = rejected.len(), "OMS batch recorded");
            Json(json!({"received": received, "count": count, "accepted": accepted, "duplicates": valid - accepted, "rejected": rejected})).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "relay database unavailable: OMS batch not recorded");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "the relay database is unavailable: nothing was recorded, send the batch again")
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("recording the batch failed: {e}")),
    }
}
