//! The data-loader service API, on the processor's HTTP port next to /metrics:
//! `GET /` (what this is), `GET /health` (each dependency), `POST /load` (re-snapshot and wait
//! for the integrity result), `POST /load-async` (a job id) and `GET /load/{id}` (its progress).
//! Every route but `/health` (and `/metrics`) needs the API credentials (`runtime::auth`): a
//! load re-reads the source tables, so it is an operator's action, not anyone's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{health, Loader};
use crate::runtime::auth::ApiCredentials;
use crate::runtime::http::json_error;

pub fn router(loader: Arc<Loader>, creds: ApiCredentials) -> Router {
    let protected = Router::new()
        .route("/", get(info))
        .route("/load", post(load))
        .route("/load-async", post(load_async))
        .route("/load/{id}", get(job))
        .route_layer(axum::middleware::from_fn_with_state(creds, crate::runtime::auth::require));
    protected.route("/health", get(health_check)).with_state(loader)
}

async fn info(State(l): State<Arc<Loader>>) -> impl IntoResponse {
    Json(json!({
        "service": "funnel data loader",
        "version": env!("CARGO_PKG_VERSION"),
        "staged_tables": super::STAGED.iter().map(|t| json!({"source": t.source, "silver": l.silver_path(t)})).collect::<Vec<_>>(),
        "endpoints": {
            "GET /health": "broker, schema registry, source database and lake, each reported",
            "POST /load": "re-snapshot the marketing tables, wait for staging and return the load event",
            "POST /load-async": "same, in the background: returns a load_id",
            "GET /load/{id}": "progress and result of a load",
            "GET /metrics": "Prometheus metrics",
        },
    }))
}

async fn health_check(State(l): State<Arc<Loader>>) -> impl IntoResponse {
    let checks = health::check_all(&l.ep, &l.lake).await;
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.dependency.as_str()).collect();
    let processors_ok = crate::runtime::health::all_healthy();
    let ok = failing.is_empty() && processors_ok;
    let body = json!({
        "status": if ok { "ok" } else { "failing" },
        "failing": failing,
        "dependencies": checks,
        "processors": l.processors_health(),
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// 429: too many loads already waiting or running.
fn busy(waiting: usize) -> axum::response::Response {
    json_error(StatusCode::TOO_MANY_REQUESTS, format!("{waiting} loads are already queued or running (at most {}); ask again when one finished", super::jobs::MAX_WAITING))
}

async fn load(State(l): State<Arc<Loader>>) -> axum::response::Response {
    let id = l.new_load_id();
    if let Err(waiting) = l.jobs.try_queue(&id) {
        return busy(waiting);
    }
    // The load runs in its own task: a client that goes away does not cancel it halfway
    // (its job would stay unfinished and its slot undropped).
    let (loader, job) = (l.clone(), id.clone());
    let outcome = tokio::spawn(async move { loader.load(&job).await }).await.unwrap_or_else(|e| Err(anyhow::anyhow!("load task ended: {e}")));
    match outcome {
        Ok(event) => (if event.succeeded() { StatusCode::OK } else { StatusCode::BAD_GATEWAY }, Json(serde_json::to_value(event).unwrap_or_default())).into_response(),
        Err(e) => {
            l.jobs.set(&id, "failed", format!("{e:#}"), None);
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error_code": 500, "load_id": id, "message": format!("{e:#}")}))).into_response()
        }
    }
}

async fn load_async(State(l): State<Arc<Loader>>) -> axum::response::Response {
    let id = l.new_load_id();
    if let Err(waiting) = l.jobs.try_queue(&id) {
        return busy(waiting);
    }
    let (loader, job) = (l.clone(), id.clone());
    tokio::spawn(async move {
        if let Err(e) = loader.load(&job).await {
            tracing::error!(load_id = job, error = format!("{e:#}"), "load failed");
            loader.jobs.set(&job, "failed", format!("{e:#}"), None);
        }
    });
    (StatusCode::ACCEPTED, Json(json!({"load_id": id, "status": format!("/load/{id}")}))).into_response()
}

async fn job(State(l): State<Arc<Loader>>, Path(id): Path<String>) -> axum::response::Response {
    match l.jobs.get(&id) {
        Some(job) => (StatusCode::OK, Json(serde_json::to_value(job).unwrap_or_default())).into_response(),
        None => json_error(StatusCode::NOT_FOUND, format!("no load {id} (finished loads are kept for an hour)")),
    }
}
