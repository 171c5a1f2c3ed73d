//! `funnel campaigns serve` (default port 8090): the campaigns API, the public tracking and
//! unsubscribe routes, the planner (`planner`) and the gold campaign_stats sink.
//! - `/api/v1/campaigns…` — create, list, get, status, schedule, pause, resume, cancel, test
//!   send. Needs the API credentials (HTTP Basic user `funnel` + token, or bearer token).
//! - `/t/o/{token}` (open pixel), `/t/c/{token}` (click redirect), `/u/{token}` (GET: a page
//!   that changes nothing; POST: RFC 8058 one-click unsubscribe) — public, as mail clients
//!   call them without credentials: the signed token is the credential (`tracking`).
//! - `/health`, `/metrics`: open.
//!
//! Every change is a record on the campaign topics first; the answer comes once the view has
//! read it back, so a GET right after sees it and a restart rebuilds the same state.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};

use super::metrics::metrics;
use super::now_ms;
use super::model::{action, check_schedule, fmt_ms, parse_time, NewCampaign};
use super::records::{Codec, Task};
use super::sender::SenderConfig;
use super::smtp::Smtp;
use super::tracking::Links;
use super::view::View;
use crate::kafka::batch_producer::OutRecord;
use crate::runtime::auth::ApiCredentials;
use crate::runtime::http::json_error;

pub const DEFAULT_PORT: u16 = 8090;

#[derive(clap::Args, Clone, Debug)]
pub struct ServeConfig {
    #[arg(long, env = "FUNNEL_CAMPAIGNS_PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Largest request body accepted, in bytes (413 above it).
    #[arg(long = "max-body-bytes", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub sender: SenderConfig,
}

/// (campaign, recipient) → the clicks of the last seconds: (ms, url).
pub type RecentClicks = std::collections::HashMap<(String, String), Vec<(i64, String)>>;

pub struct Campaigns {
    pub codec: Arc<Codec>,
    pub view: View,
    pub producer: FutureProducer,
    pub links: Arc<Links>,
    pub smtp: Smtp,
    /// Serialises check-then-write of state changes (two requests cannot both pass the check).
    pub writes: tokio::sync::Mutex<()>,
    /// Recent clicks per (campaign, recipient): (ms, url), for the scanner check.
    pub clicks: std::sync::Mutex<RecentClicks>,
}

impl Campaigns {
    /// Produce, wait for the acknowledgements, then for the view to read the records back:
    /// for API changes, whose answer (and the next GET) must show them.
    pub async fn produce(&self, outs: &[OutRecord]) -> Result<()> {
        self.publish(outs).await?;
        self.view.catch_up().await
    }

    /// Produce and wait for the acknowledgements only: for tracking hits, which no answer
    /// reads back (a read-back per pixel would cost a catch-up of every campaign topic).
    pub async fn publish(&self, outs: &[OutRecord]) -> Result<()> {
        crate::kafka::batch_producer::produce_acked(&self.producer, outs).await
    }
}

pub fn router(c: Arc<Campaigns>, creds: ApiCredentials, max_body_bytes: usize) -> Router {
    let protected = Router::new()
        .route("/api/v1/campaigns", post(create).get(list))
        .route("/api/v1/campaigns/{id}", get(show))
        .route("/api/v1/campaigns/{id}/status", get(status))
        .route("/api/v1/campaigns/{id}/schedule", post(schedule))
        .route("/api/v1/campaigns/{id}/pause", post(|s, p| change(s, p, action::PAUSE)))
        .route("/api/v1/campaigns/{id}/resume", post(|s, p| change(s, p, action::RESUME)))
        .route("/api/v1/campaigns/{id}/cancel", post(|s, p| change(s, p, action::CANCEL)))
        .route("/api/v1/campaigns/{id}/test", post(test_send))
        .route_layer(axum::middleware::from_fn_with_state(creds, crate::runtime::auth::require));
    let open = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(|| async { crate::runtime::metrics::render() }))
        .merge(super::public::router());
    crate::runtime::http::with_json_errors(protected.merge(open).with_state(c), max_body_bytes)
}

pub async fn run(ep: &crate::config::Endpoints, stack_dir: &std::path::Path, lake: crate::lake::location::Lake, topics: super::topics::CampaignTopics, cfg: &ServeConfig) -> Result<()> {
    let creds = ApiCredentials::load(stack_dir)?;
    let links = Arc::new(Links::load(stack_dir, &cfg.sender.public_url)?);
    let registry = crate::registry::RegistryClient::waiting_for(&ep.registry_url, super::planner::PROCESSOR);
    let codec = Arc::new(Codec::open(&registry, &topics).await?);
    let view = super::view::follow(&ep.brokers, codec.clone(), super::topics::Kind::ALL).await?;
    let producer: FutureProducer = crate::kafka::producer_config(&ep.brokers, None).create()?;
    let smtp = Smtp::new(&cfg.sender.smtp_url, 2, Duration::from_secs(cfg.sender.timeout_s))?;
    let planner = super::planner::Planner::open(&ep.brokers, codec.clone(), view.clone(), lake.clone()).await?;
    tokio::spawn(planner.run());
    tokio::spawn(super::stats_sink::run(ep.brokers.clone(), ep.registry_url.clone(), lake, topics.clone()));
    let c = Arc::new(Campaigns { codec, view, producer, links, smtp, writes: Default::default(), clicks: Default::default() });
    let app = router(c, creds, cfg.max_body_bytes);
    let listener = tokio::net::TcpListener::bind((ep.bind_address.as_str(), cfg.port)).await.with_context(|| format!("binding {}:{} (set --port, --bind-address)", ep.bind_address, cfg.port))?;
    tracing::info!(port = cfg.port, "campaigns serving http://{}:{}/ (/api/v1/campaigns, tracking /t/*, unsubscribe /u/*)", ep.bind_address, cfg.port);
    axum::serve(listener, app).with_graceful_shutdown(async { crate::runtime::shutdown::wait().await }).await?;
    Ok(())
}

fn body(b: Result<Json<Value>, JsonRejection>) -> Result<Value, Box<Response>> {
    b.map(|Json(v)| v).map_err(|r| Box::new(json_error(r.status(), r.body_text())))
}

fn unavailable(e: anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{e:#}"), "campaign change not recorded");
    json_error(StatusCode::SERVICE_UNAVAILABLE, "the broker did not take the change: nothing was recorded, try again")
}


fn new_id() -> String {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    format!("cmp-{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

async fn create(State(c): State<Arc<Campaigns>>, b: Result<Json<Value>, JsonRejection>) -> Response {
    let v = match body(b) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let new: NewCampaign = match serde_json::from_value(v) {
        Ok(n) => n,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    let id = new_id();
    let now = now_ms();
    let (def, scheduled) = match new.validate(&id, now) {
        Ok(x) => x,
        Err(reason) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, reason),
    };
    let mut outs = vec![];
    let encoded = c.codec.definition(&def).and_then(|d| {
        outs.push(d);
        if let Some(at) = scheduled {
            outs.push(c.codec.task(&Task { scheduled_at: Some(at), ..Task::new(&id, action::SCHEDULE, now) })?);
        }
        Ok(())
    });
    if let Err(e) = encoded {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the campaign: {e:#}"));
    }
    let _w = c.writes.lock().await;
    if let Err(e) = c.produce(&outs).await {
        return unavailable(e);
    }
    metrics().lifecycle.with_label_values(&["created"]).inc();
    tracing::info!(campaign = id, name = def.name, scheduled = scheduled.map(fmt_ms).unwrap_or_default(), "campaign created");
    (StatusCode::CREATED, Json(describe(&c, &id).unwrap_or_default())).into_response()
}

/// The campaign as the API shows it (None: unknown).
fn describe(c: &Campaigns, id: &str) -> Option<Value> {
    let v = c.view.read();
    let camp = v.campaigns.get(id)?;
    let d = camp.definition.as_ref()?;
    let audience: Value = serde_json::from_str(&d.audience).unwrap_or(Value::Null);
    let l = &camp.life;
    Some(json!({
        "id": id, "name": d.name, "sender": d.sender, "subject": d.subject, "html": d.html_template, "text": d.text_template,
        "batch_size": d.batch_size, "audience": audience, "fields": d.fields, "expire_after_seconds": d.expire_after_ms / 1000,
        "created_at": fmt_ms(d.created_at), "state": l.state.as_str(), "scheduled_at": l.scheduled_at.map(fmt_ms),
        "started_at": l.started_at.map(fmt_ms), "ended_at": l.ended_at.map(fmt_ms), "detail": l.detail,
    }))
}

fn not_found(id: &str) -> Response {
    json_error(StatusCode::NOT_FOUND, format!("no campaign {id}"))
}

async fn list(State(c): State<Arc<Campaigns>>) -> Response {
    let v = c.view.read();
    let items: Vec<Value> = v
        .campaigns
        .iter()
        .filter_map(|(id, camp)| camp.definition.as_ref().map(|d| json!({"id": id, "name": d.name, "state": camp.life.state.as_str(), "created_at": fmt_ms(d.created_at)})))
        .collect();
    Json(json!({"campaigns": items})).into_response()
}

async fn show(State(c): State<Arc<Campaigns>>, Path(id): Path<String>) -> Response {
    match describe(&c, &id) {
        Some(v) => Json(v).into_response(),
        None => not_found(&id),
    }
}

async fn status(State(c): State<Arc<Campaigns>>, Path(id): Path<String>) -> Response {
    if let Err(e) = c.view.catch_up().await {
        return unavailable(e);
    }
    let v = c.view.read();
    let Some(camp) = v.campaigns.get(&id).filter(|x| x.definition.is_some()) else { return not_found(&id) };
    let s = camp.stats(&id, now_ms());
    let pending = (s.requested - camp.done()).max(0);
    Json(json!({
        "id": id, "name": s.name, "state": s.state, "detail": camp.life.detail,
        "recipients": {"requested": s.requested, "pending": pending, "sent": s.sent, "retrying": s.retrying, "failed": s.failed,
                       "bounced": s.bounced, "suppressed": s.suppressed, "skipped": s.skipped, "cancelled": s.cancelled},
        "engagement": {"opens": s.opens, "unique_opens": s.unique_opens, "unique_human_opens": s.unique_human_opens,
                       "clicks": s.clicks, "unique_clicks": s.unique_clicks, "unique_human_clicks": s.unique_human_clicks,
                       "unsubscribes": s.unsubscribes},
    }))
    .into_response()
}

/// Check the transition against the current state and record it.
async fn transition(c: &Campaigns, id: &str, task: Task) -> Response {
    let _w = c.writes.lock().await;
    if let Err(e) = c.view.catch_up().await {
        return unavailable(e);
    }
    let next = {
        let v = c.view.read();
        match v.campaigns.get(id).filter(|x| x.definition.is_some()) {
            None => return not_found(id),
            Some(camp) => camp.life.next(&task.action),
        }
    };
    if let Err(reason) = next {
        return json_error(StatusCode::CONFLICT, reason);
    }
    let out = match c.codec.task(&task) {
        Ok(o) => o,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the task: {e:#}")),
    };
    if let Err(e) = c.produce(&[out]).await {
        return unavailable(e);
    }
    metrics().lifecycle.with_label_values(&[&task.action]).inc();
    tracing::info!(campaign = id, action = task.action, "campaign lifecycle");
    Json(describe(c, id).unwrap_or_default()).into_response()
}

async fn change(State(c): State<Arc<Campaigns>>, Path(id): Path<String>, action: &'static str) -> Response {
    transition(&c, &id, Task::new(&id, action, now_ms())).await
}

async fn schedule(State(c): State<Arc<Campaigns>>, Path(id): Path<String>, b: Result<Json<Value>, JsonRejection>) -> Response {
    let v = match body(b) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let at = match v.get("scheduled_at").and_then(Value::as_str) {
        Some(s) => match parse_time("scheduled_at", s) {
            Ok(at) => at,
            Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, e),
        },
        None => return json_error(StatusCode::UNPROCESSABLE_ENTITY, "scheduled_at: required (RFC 3339 time)"),
    };
    let now = now_ms();
    if let Err(e) = check_schedule(at, now) {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    transition(&c, &id, Task { scheduled_at: Some(at), ..Task::new(&id, action::SCHEDULE, now) }).await
}

/// Render the campaign for one address (fields from the body) and send it now; not recorded
/// in the ledger, no tracking.
async fn test_send(State(c): State<Arc<Campaigns>>, Path(id): Path<String>, b: Result<Json<Value>, JsonRejection>) -> Response {
    let v = match body(b) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(email) = v.get("email").and_then(Value::as_str).map(str::to_string) else {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "email: required");
    };
    if !super::model::valid_address(&email) {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, format!("email: {email:?} is not a valid address"));
    }
    let mut fields = match v.get("fields") {
        None => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, "fields: must be an object"),
    };
    let Some(def) = c.view.read().campaigns.get(&id).and_then(|x| x.definition.clone()) else { return not_found(&id) };
    let from: lettre::message::Mailbox = match def.sender.parse() {
        Ok(f) => f,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, format!("sender: {e}")),
    };
    let templates = match super::template::Templates::compile(&def.subject, def.html_template.as_deref(), def.text_template.as_deref(), None) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    for (k, val) in [("campaign_id", id.clone()), ("campaign_name", def.name.clone()), ("recipient_id", email.clone()), ("email", email.clone()), ("unsubscribe_url", format!("{}/u/test", c.links.base_url))] {
        fields.insert(k.into(), val.into());
    }
    let rendered = match templates.render(&fields) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, format!("campaign {id}: {e}")),
    };
    let message_id = super::smtp::message_id(&id, &format!("test:{email}"), &from);
    let parts = super::smtp::MailParts { from: &from, to: &email, rendered, message_id: message_id.clone(), campaign_id: &id, campaign_name: &def.name, recipient_id: "test", unsubscribe_url: None };
    let message = match super::smtp::build(parts) {
        Ok(m) => m,
        Err(e) => return json_error(StatusCode::UNPROCESSABLE_ENTITY, e),
    };
    match c.smtp.send(&message).await {
        super::smtp::Reply::Judged { verdict: crate::retry::Verdict::Delivered, code, detail } => Json(json!({"sent": true, "message_id": message_id, "smtp_code": code, "smtp_reply": detail})).into_response(),
        super::smtp::Reply::Judged { code, detail, .. } => json_error(StatusCode::BAD_GATEWAY, format!("the SMTP server refused the test mail: {} {detail}", code.unwrap_or_default())),
        super::smtp::Reply::Unavailable(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("the SMTP server is unavailable: {e}")),
    }
}
