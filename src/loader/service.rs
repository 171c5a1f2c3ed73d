//! The data-loader service API, on the processor's HTTP port next to /metrics:
//! `GET /` (what this is), `GET /health` (each dependency), `POST /load` (re-snapshot and wait
//! for the integrity result), `POST /load-async` (a job id) and `GET /load/{id}` (its progress).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{health, Loader};

pub fn router(loader: Arc<Loader>) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/health", get(health_check))
        .route("/load", post(load))
        .route("/load-async", post(load_async))
        .route("/load/{id}", get(job))
        .with_state(loader)
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

async fn load(State(l): State<Arc<Loader>>) -> impl IntoResponse {
    let id = l.new_load_id();
    match l.load(&id).await {
        Ok(event) => (if event.succeeded() { StatusCode::OK } else { StatusCode::BAD_GATEWAY }, Json(serde_json::to_value(event).unwrap_or_default())),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"load_id": id, "error": format!("{e:#}")}))),
    }
}

async fn load_async(State(l): State<Arc<Loader>>) -> impl IntoResponse {
    let id = l.new_load_id();
    if let Ok(mut jobs) = l.jobs.lock() {
        jobs.insert(id.clone(), super::Job { load_id: id.clone(), status: "queued".into(), progress: "waiting for a running load".into(), result: None });
    }
    let (loader, job) = (l.clone(), id.clone());
    tokio::spawn(async move {
        if let Err(e) = loader.load(&job).await {
            tracing::error!(load_id = job, error = format!("{e:#}"), "load failed");
            if let Ok(mut jobs) = loader.jobs.lock() {
                jobs.insert(job.clone(), super::Job { load_id: job.clone(), status: "failed".into(), progress: format!("{e:#}"), result: None });
            }
        }
    });
    (StatusCode::ACCEPTED, Json(json!({"load_id": id, "status": format!("/load/{id}")})))
}

async fn job(State(l): State<Arc<Loader>>, Path(id): Path<String>) -> impl IntoResponse {
    match l.jobs.lock().ok().and_then(|j| j.get(&id).cloned()) {
        Some(job) => (StatusCode::OK, Json(serde_json::to_value(job).unwrap_or_default())),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no load {id}")}))),
    }
}
