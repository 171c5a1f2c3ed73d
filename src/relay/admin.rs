//! `/admin/v1/*`: CRUD of the relay's configuration — storefronts, sGTM configs, platforms and
//! platform credentials. JSON in and out; 404 for an unknown id, 409 for a duplicate or a row
//! still in use, 422 for a body that does not fit (unknown field, bad URL, missing setting).
//! Secrets (sGTM `api_secret`, custom header values, credential `secret`) are write-only:
//! stored as Fernet tokens and answered as `"********"`.
//!
//! Every change is a row change in `relay.*`, so it reaches the relay processors through CDC
//! within seconds, without a restart.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::destinations;
use super::service::Relay;
use crate::runtime::http::json_error;

pub const MASK: &str = "********";

pub fn router() -> Router<Arc<Relay>> {
    Router::new()
        .route("/admin/v1/storefronts", get(list_storefronts).post(create_storefront))
        .route("/admin/v1/storefronts/{id}", get(get_storefront).put(update_storefront).patch(update_storefront).delete(delete_storefront))
        .route("/admin/v1/sgtm-configs", get(list_sgtm).post(create_sgtm))
        .route("/admin/v1/sgtm-configs/{id}", get(get_sgtm).put(update_sgtm).patch(update_sgtm).delete(delete_sgtm))
        .route("/admin/v1/platforms", get(list_platforms).post(create_platform))
        .route("/admin/v1/platforms/{id}", get(get_platform).put(update_platform).patch(update_platform).delete(delete_platform))
        .route("/admin/v1/credentials", get(list_credentials).post(create_credential))
        .route("/admin/v1/credentials/{id}", get(get_credential).put(update_credential).patch(update_credential).delete(delete_credential))
}

type Answer = Result<Response, Response>;

/// A row id from the path; anything but an integer names no row (404, as JSON).
pub struct Id(pub i32);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|r| json_error(r.status(), r.body_text()))?;
        raw.parse().map(Id).map_err(|_| json_error(StatusCode::NOT_FOUND, format!("no row with id {raw:?}: ids are integers")))
    }
}

/// A JSON body as `T`: the framework's rejections (syntax 400, content type 415, size 413) and
/// fields that do not fit (422) as JSON errors.
pub fn body<T: DeserializeOwned>(body: Result<Json<Value>, JsonRejection>) -> Result<T, Response> {
    let Json(v) = body.map_err(|r| json_error(r.status(), r.body_text()))?;
    serde_json::from_value(v).map_err(|e| json_error(StatusCode::UNPROCESSABLE_ENTITY, format!("the body does not fit: {e}")))
}

fn unprocessable(msg: impl Into<String>) -> Response {
    json_error(StatusCode::UNPROCESSABLE_ENTITY, msg)
}

/// A database error as the answer it deserves: the request's fault (409, 422) or an outage (503).
pub fn db_error(what: &str, e: &tokio_postgres::Error) -> Response {
    let detail = e.as_db_error().map(|d| d.detail().unwrap_or(d.message()).to_string()).unwrap_or_default();
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => json_error(StatusCode::CONFLICT, format!("{what} already exists: {detail}")),
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => json_error(StatusCode::CONFLICT, format!("{what} is referenced or refers to a missing row: {detail}")),
        Some(c) if [SqlState::CHECK_VIOLATION, SqlState::NOT_NULL_VIOLATION, SqlState::STRING_DATA_RIGHT_TRUNCATION].contains(c) => {
            let constraint = e.as_db_error().and_then(|d| d.constraint()).map(|c| format!(" ({c})")).unwrap_or_default();
            unprocessable(format!("{what} does not satisfy the schema{constraint}: {}", e.as_db_error().map(|d| d.message()).unwrap_or_default()))
        }
        _ => {
            tracing::warn!(error = %e, what, "relay database unavailable");
            json_error(StatusCode::SERVICE_UNAVAILABLE, format!("the relay database is unavailable ({what}); retry"))
        }
    }
}

async fn client(s: &Relay) -> Result<deadpool_postgres::Object, Response> {
    s.pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "relay database unavailable");
        json_error(StatusCode::SERVICE_UNAVAILABLE, "the relay database is unavailable; retry")
    })
}

fn ts(r: &Row, col: &str) -> Value {
    json!(r.get::<_, chrono::DateTime<chrono::Utc>>(col).to_rfc3339())
}

fn not_found(what: &str, id: i32) -> Response {
    json_error(StatusCode::NOT_FOUND, format!("no {what} with id {id}"))
}

fn one(what: &str, id: i32, row: Option<Row>, f: impl Fn(&Row) -> Value) -> Answer {
    row.map(|r| Json(f(&r)).into_response()).ok_or_else(|| not_found(what, id))
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn deleted(what: &str, id: i32, n: u64) -> Answer {
    if n == 0 {
        return Err(not_found(what, id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A storefront named by id or code, as its id (422 when there is none).
async fn storefront_ref(c: &deadpool_postgres::Object, id: Option<i32>, code: Option<&str>) -> Result<i32, Response> {
    let row = match (id, code) {
        (Some(id), _) => c.query_opt("SELECT id FROM relay.storefronts WHERE id = $1", &[&id]).await,
        (None, Some(code)) => c.query_opt("SELECT id FROM relay.storefronts WHERE code = $1", &[&code]).await,
        (None, None) => return Err(unprocessable("name the storefront: storefront_id or storefront_code")),
    }
    .map_err(|e| db_error("storefront", &e))?;
    row.map(|r| r.get(0)).ok_or_else(|| unprocessable(format!("no storefront {}", id.map(|i| i.to_string()).or(code.map(str::to_string)).unwrap_or_default())))
}

// ---- storefronts -------------------------------------------------------------------------

const STOREFRONT_COLS: &str = "id, code, name, is_active, created_at, updated_at";

fn storefront_json(r: &Row) -> Value {
    json!({"id": r.get::<_, i32>("id"), "code": r.get::<_, String>("code"), "name": r.get::<_, String>("name"),
           "is_active": r.get::<_, bool>("is_active"), "created_at": ts(r, "created_at"), "updated_at": ts(r, "updated_at")})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StorefrontBody {
    code: Option<String>,
    name: Option<String>,
    is_active: Option<bool>,
}

fn check_code(code: &Option<String>) -> Result<(), Response> {
    match code {
        Some(c) if c.is_empty() || c.len() > 50 || !c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-') => {
            Err(unprocessable(format!("code {c:?} must be 1–50 lowercase letters, digits, _ or -")))
        }
        _ => Ok(()),
    }
}

async fn list_storefronts(State(s): State<Arc<Relay>>) -> Answer {
    let rows = client(&s).await?.query(&format!("SELECT {STOREFRONT_COLS} FROM relay.storefronts ORDER BY id"), &[]).await.map_err(|e| db_error("storefronts", &e))?;
    Ok(Json(json!({"storefronts": rows.iter().map(storefront_json).collect::<Vec<_>>()})).into_response())
}

async fn get_storefront(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    let row = client(&s).await?.query_opt(&format!("SELECT {STOREFRONT_COLS} FROM relay.storefronts WHERE id = $1"), &[&id]).await.map_err(|e| db_error("storefront", &e))?;
    one("storefront", id, row, storefront_json)
}

async fn create_storefront(State(s): State<Arc<Relay>>, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: StorefrontBody = body(b)?;
    check_code(&b.code)?;
    let (Some(code), Some(name)) = (b.code, b.name) else { return Err(unprocessable("a storefront needs code and name")) };
    let row = client(&s)
        .await?
        .query_one(&format!("INSERT INTO relay.storefronts (code, name, is_active) VALUES ($1, $2, $3) RETURNING {STOREFRONT_COLS}"), &[&code, &name, &b.is_active.unwrap_or(true)])
        .await
        .map_err(|e| db_error("storefront", &e))?;
    Ok(created(storefront_json(&row)))
}

async fn update_storefront(State(s): State<Arc<Relay>>, Id(id): Id, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: StorefrontBody = body(b)?;
    check_code(&b.code)?;
    let sql = format!(
        "UPDATE relay.storefronts SET code = COALESCE($2, code), name = COALESCE($3, name), is_active = COALESCE($4, is_active), updated_at = now() WHERE id = $1 RETURNING {STOREFRONT_COLS}"
    );
    let row = client(&s).await?.query_opt(&sql, &[&id, &b.code, &b.name, &b.is_active]).await.map_err(|e| db_error("storefront", &e))?;
    one("storefront", id, row, storefront_json)
}

async fn delete_storefront(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    let n = client(&s).await?.execute("DELETE FROM relay.storefronts WHERE id = $1", &[&id]).await.map_err(|e| db_error("storefront (it has events: deactivate it instead)", &e))?;
    deleted("storefront", id, n)
}

// ---- sGTM configs ------------------------------------------------------------------------

const SGTM_COLS: &str = "c.id, c.storefront_id, s.code AS storefront_code, c.sgtm_url, c.client_type, c.measurement_id, c.api_secret_encrypted, \
     c.custom_endpoint_path, c.custom_headers_encrypted, c.is_active, c.created_at, c.updated_at";
const SGTM_FROM: &str = "relay.storefront_sgtm_config c JOIN relay.storefronts s ON s.id = c.storefront_id";

fn sgtm_json(keys: &super::crypto::Keyring, r: &Row) -> Value {
    let mut v = json!({"id": r.get::<_, i32>("id"), "storefront_id": r.get::<_, i32>("storefront_id"), "storefront_code": r.get::<_, String>("storefront_code"),
        "sgtm_url": r.get::<_, String>("sgtm_url"), "client_type": r.get::<_, String>("client_type"), "measurement_id": r.get::<_, Option<String>>("measurement_id"),
        "api_secret": r.get::<_, Option<String>>("api_secret_encrypted").map(|_| MASK), "custom_endpoint_path": r.get::<_, String>("custom_endpoint_path"),
        "is_active": r.get::<_, bool>("is_active"), "created_at": ts(r, "created_at"), "updated_at": ts(r, "updated_at")});
    // Header names are shown, their values (often tokens) are not.
    let headers = r.get::<_, Option<String>>("custom_headers_encrypted").map(|t| keys.decrypt(&t));
    v["custom_headers"] = match headers {
        None => json!({}),
        Some(Ok(plain)) => {
            let names: Map<String, Value> = serde_json::from_str::<Map<String, Value>>(plain.expose()).unwrap_or_default().keys().map(|k| (k.clone(), json!(MASK))).collect();
            Value::Object(names)
        }
        Some(Err(e)) => json!({"error": e.to_string()}),
    };
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SgtmBody {
    storefront_id: Option<i32>,
    storefront_code: Option<String>,
    sgtm_url: Option<String>,
    client_type: Option<String>,
    measurement_id: Option<String>,
    api_secret: Option<String>,
    custom_endpoint_path: Option<String>,
    custom_headers: Option<std::collections::BTreeMap<String, String>>,
    is_active: Option<bool>,
}

fn check_url(field: &str, u: &Option<String>) -> Result<(), Response> {
    if let Some(u) = u {
        match url::Url::parse(u) {
            Ok(p) if (p.scheme() == "http" || p.scheme() == "https") && p.host().is_some() && p.query().is_none() => {}
            _ => return Err(unprocessable(format!("{field} {u:?} must be an http(s) URL without a query"))),
        }
    }
    Ok(())
}

impl SgtmBody {
    fn check(&self) -> Result<(), Response> {
        check_url("sgtm_url", &self.sgtm_url)?;
        if let Some(t) = &self.client_type {
            if t != "ga4" && t != "custom" {
                return Err(unprocessable(format!("client_type {t:?} must be ga4 or custom")));
            }
        }
        if let Some(p) = &self.custom_endpoint_path {
            if !p.starts_with('/') || p.contains('?') {
                return Err(unprocessable(format!("custom_endpoint_path {p:?} must start with / and carry no query")));
            }
        }
        for (name, value) in self.custom_headers.iter().flatten() {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() || axum::http::HeaderValue::from_str(value).is_err() {
                return Err(unprocessable(format!("custom header {name:?} is not a valid HTTP header")));
            }
        }
        Ok(())
    }
}

async fn list_sgtm(State(s): State<Arc<Relay>>) -> Answer {
    let rows = client(&s).await?.query(&format!("SELECT {SGTM_COLS} FROM {SGTM_FROM} ORDER BY c.id"), &[]).await.map_err(|e| db_error("sgtm configs", &e))?;
    Ok(Json(json!({"sgtm_configs": rows.iter().map(|r| sgtm_json(&s.keys, r)).collect::<Vec<_>>()})).into_response())
}

async fn fetch_sgtm(s: &Relay, c: &deadpool_postgres::Object, id: i32) -> Answer {
    let row = c.query_opt(&format!("SELECT {SGTM_COLS} FROM {SGTM_FROM} WHERE c.id = $1"), &[&id]).await.map_err(|e| db_error("sgtm config", &e))?;
    one("sgtm config", id, row, |r| sgtm_json(&s.keys, r))
}

async fn get_sgtm(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    fetch_sgtm(&s, &client(&s).await?, id).await
}

async fn create_sgtm(State(s): State<Arc<Relay>>, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: SgtmBody = body(b)?;
    b.check()?;
    let (Some(url), Some(client_type)) = (&b.sgtm_url, &b.client_type) else { return Err(unprocessable("an sgtm config needs sgtm_url and client_type")) };
    if client_type == "ga4" && (b.measurement_id.is_none() || b.api_secret.is_none()) {
        return Err(unprocessable("client_type ga4 needs measurement_id and api_secret"));
    }
    let c = client(&s).await?;
    let storefront = storefront_ref(&c, b.storefront_id, b.storefront_code.as_deref()).await?;
    let secret = b.api_secret.as_deref().map(|x| s.keys.encrypt(x));
    let headers = b.custom_headers.as_ref().map(|h| s.keys.encrypt(&serde_json::to_string(h).unwrap_or_default()));
    let row = c
        .query_one(
            "INSERT INTO relay.storefront_sgtm_config (storefront_id, sgtm_url, client_type, measurement_id, api_secret_encrypted, custom_endpoint_path, custom_headers_encrypted, is_active) \
             VALUES ($1, $2, $3, $4, $5, COALESCE($6, '/collect'), $7, $8) RETURNING id",
            &[&storefront, url, client_type, &b.measurement_id, &secret, &b.custom_endpoint_path, &headers, &b.is_active.unwrap_or(true)],
        )
        .await
        .map_err(|e| db_error("sgtm config for this storefront", &e))?;
    fetch_sgtm(&s, &c, row.get(0)).await.map(|r| (StatusCode::CREATED, r).into_response())
}

async fn update_sgtm(State(s): State<Arc<Relay>>, Id(id): Id, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: SgtmBody = body(b)?;
    b.check()?;
    if b.storefront_id.is_some() || b.storefront_code.is_some() {
        return Err(unprocessable("an sgtm config cannot move to another storefront: delete it and create one there"));
    }
    let secret = b.api_secret.as_deref().map(|x| s.keys.encrypt(x));
    let headers = b.custom_headers.as_ref().map(|h| s.keys.encrypt(&serde_json::to_string(h).unwrap_or_default()));
    let c = client(&s).await?;
    let n = c
        .execute(
            "UPDATE relay.storefront_sgtm_config SET sgtm_url = COALESCE($2, sgtm_url), client_type = COALESCE($3, client_type), measurement_id = COALESCE($4, measurement_id), \
             api_secret_encrypted = COALESCE($5, api_secret_encrypted), custom_endpoint_path = COALESCE($6, custom_endpoint_path), \
             custom_headers_encrypted = COALESCE($7, custom_headers_encrypted), is_active = COALESCE($8, is_active), updated_at = now() WHERE id = $1",
            &[&id, &b.sgtm_url, &b.client_type, &b.measurement_id, &secret, &b.custom_endpoint_path, &headers, &b.is_active],
        )
        .await
        .map_err(|e| db_error("sgtm config", &e))?;
    if n == 0 {
        return Err(not_found("sgtm config", id));
    }
    fetch_sgtm(&s, &c, id).await
}

async fn delete_sgtm(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    let n = client(&s).await?.execute("DELETE FROM relay.storefront_sgtm_config WHERE id = $1", &[&id]).await.map_err(|e| db_error("sgtm config", &e))?;
    deleted("sgtm config", id, n)
}

// ---- platforms ---------------------------------------------------------------------------

fn platform_json(r: &Row) -> Value {
    storefront_json(r)
}

async fn list_platforms(State(s): State<Arc<Relay>>) -> Answer {
    let rows = client(&s).await?.query(&format!("SELECT {STOREFRONT_COLS} FROM relay.ad_analytics_platforms ORDER BY id"), &[]).await.map_err(|e| db_error("platforms", &e))?;
    Ok(Json(json!({"platforms": rows.iter().map(platform_json).collect::<Vec<_>>()})).into_response())
}

async fn get_platform(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    let row = client(&s).await?.query_opt(&format!("SELECT {STOREFRONT_COLS} FROM relay.ad_analytics_platforms WHERE id = $1"), &[&id]).await.map_err(|e| db_error("platform", &e))?;
    one("platform", id, row, platform_json)
}

async fn create_platform(State(s): State<Arc<Relay>>, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: StorefrontBody = body(b)?;
    check_code(&b.code)?;
    let (Some(code), Some(name)) = (b.code, b.name) else { return Err(unprocessable("a platform needs code and name")) };
    let row = client(&s)
        .await?
        .query_one(&format!("INSERT INTO relay.ad_analytics_platforms (code, name, is_active) VALUES ($1, $2, $3) RETURNING {STOREFRONT_COLS}"), &[&code, &name, &b.is_active.unwrap_or(true)])
        .await
        .map_err(|e| db_error("platform", &e))?;
    Ok(created(platform_json(&row)))
}

async fn update_platform(State(s): State<Arc<Relay>>, Id(id): Id, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: StorefrontBody = body(b)?;
    if b.code.is_some() {
        return Err(unprocessable("a platform's code names its adapter and cannot change"));
    }
    let sql = format!("UPDATE relay.ad_analytics_platforms SET name = COALESCE($2, name), is_active = COALESCE($3, is_active), updated_at = now() WHERE id = $1 RETURNING {STOREFRONT_COLS}");
    let row = client(&s).await?.query_opt(&sql, &[&id, &b.name, &b.is_active]).await.map_err(|e| db_error("platform", &e))?;
    one("platform", id, row, platform_json)
}

async fn delete_platform(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    let n = client(&s).await?.execute("DELETE FROM relay.ad_analytics_platforms WHERE id = $1", &[&id]).await.map_err(|e| db_error("platform (credentials use it)", &e))?;
    deleted("platform", id, n)
}

// ---- credentials -------------------------------------------------------------------------

const CRED_COLS: &str = "c.id, c.storefront_id, s.code AS storefront_code, c.platform_id, p.code AS platform, c.config, c.is_active, c.created_at, c.updated_at";
const CRED_FROM: &str = "relay.platform_credentials c JOIN relay.storefronts s ON s.id = c.storefront_id JOIN relay.ad_analytics_platforms p ON p.id = c.platform_id";

fn credential_json(r: &Row) -> Value {
    json!({"id": r.get::<_, i32>("id"), "storefront_id": r.get::<_, i32>("storefront_id"), "storefront_code": r.get::<_, String>("storefront_code"),
        "platform_id": r.get::<_, i32>("platform_id"), "platform": r.get::<_, String>("platform"),
        "config": serde_json::from_str::<Value>(&r.get::<_, String>("config")).unwrap_or(json!({})), "secret": MASK,
        "is_active": r.get::<_, bool>("is_active"), "created_at": ts(r, "created_at"), "updated_at": ts(r, "updated_at")})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    storefront_id: Option<i32>,
    storefront_code: Option<String>,
    platform_id: Option<i32>,
    platform: Option<String>,
    config: Option<Map<String, Value>>,
    secret: Option<String>,
    is_active: Option<bool>,
}

/// A credential's settings: flat, every required key present, no secret in the clear (the
/// config travels through CDC topics as it is; secrets belong in `secret`, encrypted).
fn check_config(platform: &str, config: &Map<String, Value>) -> Result<(), Response> {
    let Some(required) = destinations::required_config(platform) else {
        return Err(unprocessable(format!("no adapter for platform {platform:?} (adapters: {})", destinations::known_platforms())));
    };
    for key in required {
        if !matches!(config.get(*key), Some(Value::String(s)) if !s.trim().is_empty()) {
            return Err(unprocessable(format!("{platform} credentials need config.{key} (a non-empty string)")));
        }
    }
    for (k, v) in config {
        let lower = k.to_lowercase();
        if ["token", "secret", "password", "authorization"].iter().any(|w| lower.contains(w)) {
            return Err(unprocessable(format!("config.{k} looks like a secret: send it as secret (stored encrypted), not in config")));
        }
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(unprocessable(format!("config.{k} must be a string, number or boolean")));
        }
    }
    check_url("config.api_base_url", &config.get("api_base_url").and_then(Value::as_str).map(str::to_string))
}

async fn platform_ref(c: &deadpool_postgres::Object, id: Option<i32>, code: Option<&str>) -> Result<(i32, String), Response> {
    let row = match (id, code) {
        (Some(id), _) => c.query_opt("SELECT id, code FROM relay.ad_analytics_platforms WHERE id = $1", &[&id]).await,
        (None, Some(code)) => c.query_opt("SELECT id, code FROM relay.ad_analytics_platforms WHERE code = $1", &[&code]).await,
        (None, None) => return Err(unprocessable("name the platform: platform_id or platform (its code)")),
    }
    .map_err(|e| db_error("platform", &e))?;
    row.map(|r| (r.get(0), r.get(1))).ok_or_else(|| unprocessable(format!("no platform {}", id.map(|i| i.to_string()).or(code.map(str::to_string)).unwrap_or_default())))
}

async fn fetch_credential(c: &deadpool_postgres::Object, id: i32) -> Answer {
    let row = c.query_opt(&format!("SELECT {CRED_COLS} FROM {CRED_FROM} WHERE c.id = $1"), &[&id]).await.map_err(|e| db_error("credential", &e))?;
    one("credential", id, row, credential_json)
}

async fn list_credentials(State(s): State<Arc<Relay>>) -> Answer {
    let rows = client(&s).await?.query(&format!("SELECT {CRED_COLS} FROM {CRED_FROM} ORDER BY c.id"), &[]).await.map_err(|e| db_error("credentials", &e))?;
    Ok(Json(json!({"credentials": rows.iter().map(credential_json).collect::<Vec<_>>()})).into_response())
}

async fn get_credential(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    fetch_credential(&client(&s).await?, id).await
}

async fn create_credential(State(s): State<Arc<Relay>>, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: CredentialBody = body(b)?;
    let c = client(&s).await?;
    let (platform_id, platform) = platform_ref(&c, b.platform_id, b.platform.as_deref()).await?;
    let config = b.config.unwrap_or_default();
    check_config(&platform, &config)?;
    let Some(secret) = b.secret.filter(|x| !x.trim().is_empty()) else { return Err(unprocessable(format!("{platform} credentials need secret (the access token or api_secret)"))) };
    let storefront = storefront_ref(&c, b.storefront_id, b.storefront_code.as_deref()).await?;
    let row = c
        .query_one(
            "INSERT INTO relay.platform_credentials (storefront_id, platform_id, config, secret_encrypted, is_active) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&storefront, &platform_id, &Value::Object(config).to_string(), &s.keys.encrypt(&secret), &b.is_active.unwrap_or(true)],
        )
        .await
        .map_err(|e| db_error("credential for this storefront and platform", &e))?;
    fetch_credential(&c, row.get(0)).await.map(|r| (StatusCode::CREATED, r).into_response())
}

async fn update_credential(State(s): State<Arc<Relay>>, Id(id): Id, b: Result<Json<Value>, JsonRejection>) -> Answer {
    let b: CredentialBody = body(b)?;
    if b.storefront_id.is_some() || b.storefront_code.is_some() || b.platform_id.is_some() || b.platform.is_some() {
        return Err(unprocessable("a credential cannot move to another storefront or platform: delete it and create one there"));
    }
    let c = client(&s).await?;
    let Some(row) = c.query_opt(&format!("SELECT {CRED_COLS} FROM {CRED_FROM} WHERE c.id = $1"), &[&id]).await.map_err(|e| db_error("credential", &e))? else {
        return Err(not_found("credential", id));
    };
    let config = match &b.config {
        Some(cfg) => {
            check_config(&row.get::<_, String>("platform"), cfg)?;
            Some(Value::Object(cfg.clone()).to_string())
        }
        None => None,
    };
    if matches!(&b.secret, Some(x) if x.trim().is_empty()) {
        return Err(unprocessable("secret must not be empty"));
    }
    let secret = b.secret.as_deref().map(|x| s.keys.encrypt(x));
    c.execute(
        "UPDATE relay.platform_credentials SET config = COALESCE($2, config), secret_encrypted = COALESCE($3, secret_encrypted), is_active = COALESCE($4, is_active), updated_at = now() WHERE id = $1",
        &[&id, &config, &secret, &b.is_active],
    )
    .await
    .map_err(|e| db_error("credential", &e))?;
    fetch_credential(&c, id).await
}

async fn delete_credential(State(s): State<Arc<Relay>>, Id(id): Id) -> Answer {
    let n = client(&s).await?.execute("DELETE FROM relay.platform_credentials WHERE id = $1", &[&id]).await.map_err(|e| db_error("credential", &e))?;
    deleted("credential", id, n)
}
