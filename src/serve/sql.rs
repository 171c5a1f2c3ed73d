//! `GET /api/sql?q=SELECT…`: read-only SQL over the lake (`lake::query`), at most
//! `--sql-max-rows` rows (`truncated: true` says the result was cut) and `--sql-timeout-secs`
//! of running (408). Tables that cannot be opened are left out and listed in `skipped_tables`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::Serve;
use crate::lake::query::{self, QueryError};
use crate::runtime::http::json_error;

#[derive(serde::Deserialize)]
pub(super) struct SqlQuery {
    q: String,
}

pub(super) async fn sql(State(s): State<Arc<Serve>>, q: Result<Query<SqlQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(rejection) => return json_error(StatusCode::BAD_REQUEST, format!("{} (expected ?q=SELECT…)", rejection.body_text())),
    };
    let catalog = match s.catalog.get().await {
        Ok(c) => c,
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, format!("lake: {e:#}")),
    };
    match query::bounded(&catalog.ctx, &q.q, s.sql_limits).await {
        Err(e @ QueryError::Timeout(_)) => json_error(StatusCode::REQUEST_TIMEOUT, format!("{e} (--sql-timeout-secs)")),
        Err(QueryError::Refused(e)) => {
            let mut body = json!({"error_code": 400, "message": e});
            if !catalog.skipped.is_empty() {
                body["skipped_tables"] = json!(catalog.skipped);
            }
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Ok(answer) => {
            let columns: Vec<String> = answer.batches.first().map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect()).unwrap_or_default();
            match query::to_json(&answer.batches) {
                Ok(rows) => (
                    StatusCode::OK,
                    Json(json!({
                        "columns": columns,
                        "rows": rows,
                        "row_count": answer.rows,
                        "truncated": answer.truncated,
                        "row_limit": s.sql_limits.max_rows,
                        "skipped_tables": catalog.skipped,
                    })),
                )
                    .into_response(),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
            }
        }
    }
}
