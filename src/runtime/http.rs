//! The processors' HTTP port: Prometheus `/metrics` and `/health`.

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::{health, metrics};

/// `/health` from the processors' own reports.
pub fn health_router() -> Router {
    Router::new().route(
            "/health",
            get(|| async {
                let status = if health::all_healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, Json(serde_json::json!({"status": if status == StatusCode::OK {"ok"} else {"failing"}, "processors": health::snapshot()}))).into_response()
            }),
    )
}

/// The JSON error every funnel HTTP API answers with.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> axum::response::Response {
    (status, Json(serde_json::json!({"error_code": status.as_u16(), "message": message.into()}))).into_response()
}

/// Request bodies larger than this get 413 unless a server sets its own limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The body limit, and JSON bodies for the answers the framework makes by itself (unknown
/// route, wrong method), like every other error of funnel's APIs.
pub fn with_json_errors(app: Router, max_body_bytes: usize) -> Router {
    app.fallback(|uri: axum::http::Uri| async move { json_error(StatusCode::NOT_FOUND, format!("no route {}", uri.path())) })
        .method_not_allowed_fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            json_error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
}

/// Serve `/metrics` and `routes` (by default `health_router`) on `address`:`port` in the
/// background (port 0 disables it). A service with its own API passes its routes, /health included.
pub async fn spawn(address: &str, port: u16, routes: Option<Router>) -> Result<()> {
    if port == 0 {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind((address, port)).await.with_context(|| format!("binding metrics port {address}:{port} (set --http-port, --bind-address)"))?;
    tracing::info!(port, "metrics and health on http://{address}:{port}/metrics");
    tokio::spawn(async move {
        let app = with_json_errors(Router::new().route("/metrics", get(|| async { metrics::render() })).merge(routes.unwrap_or_else(health_router)), DEFAULT_MAX_BODY_BYTES);
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}
