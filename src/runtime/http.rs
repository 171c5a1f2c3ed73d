//! The processors' HTTP port: Prometheus `/metrics` and `/health`.

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::{health, metrics};

pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(|| async { metrics::render() }))
        .route(
            "/health",
            get(|| async {
                let status = if health::all_healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, Json(serde_json::json!({"status": if status == StatusCode::OK {"ok"} else {"failing"}, "processors": health::snapshot()}))).into_response()
            }),
        )
}

/// Serve `/metrics` and `/health` on 127.0.0.1:`port` in the background (port 0 disables it).
pub async fn spawn(port: u16) -> Result<()> {
    if port == 0 {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.with_context(|| format!("binding metrics port {port} (set --http-port)"))?;
    tracing::info!(port, "metrics and health on http://127.0.0.1:{port}/metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router()).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}
