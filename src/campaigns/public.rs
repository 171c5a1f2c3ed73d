//! The routes mail clients call, without credentials: the signed token is the credential.
//! - `GET /t/o/{token}` — the open pixel (a 1×1 GIF, never cached).
//! - `GET /t/c/{token}` — records the click, then redirects (302) to the URL the token holds.
//! - `GET /u/{token}` — a page with a button; changes nothing (scanners GET every link).
//! - `POST /u/{token}` — RFC 8058 one-click unsubscribe: suppresses the address at once,
//!   answers 200 with no redirect.
//!
//! A forged or altered token gets 403 and records nothing. Every hit is recorded with its user
//! agent and whether it looks automated (`tracking::automated`) on campaign.engagement.v1.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::metrics::metrics;
use super::now_ms;
use super::records::{Engagement, Suppression};
use super::service::Campaigns;
use super::tracking::{automated, Claim, Hit, TokenKind, BURST_MS};
use crate::runtime::http::json_error;

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

pub fn router() -> Router<Arc<Campaigns>> {
    Router::new().route("/t/o/{token}", get(open)).route("/t/c/{token}", get(click)).route("/u/{token}", get(unsubscribe_page).post(unsubscribe))
}

fn refused() -> Response {
    json_error(StatusCode::FORBIDDEN, "this link is not valid (forged, altered or from another deployment)")
}


fn prefetch(h: &HeaderMap) -> bool {
    ["purpose", "sec-purpose", "x-purpose", "x-moz"].iter().any(|n| h.get(*n).and_then(|v| v.to_str().ok()).is_some_and(|v| v.to_ascii_lowercase().contains("prefetch") || v.to_ascii_lowercase().contains("preview")))
}

/// Judge and record one hit; an outage of the broker is logged, the visitor still gets the
/// pixel or the redirect (a lost open must not break a person's click).
async fn record(c: &Campaigns, kind: TokenKind, claim: &Claim, headers: &HeaderMap) -> Result<(), String> {
    let now = now_ms();
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let sent_at = c.view.read().ledger.get(&(claim.c.clone(), claim.r.clone())).filter(|e| e.status == super::records::status::SENT).map(|e| e.at);
    let burst = match (kind, &claim.u) {
        (TokenKind::Click, Some(url)) => {
            let mut clicks = c.clicks.lock().unwrap_or_else(|p| p.into_inner());
            let recent = clicks.entry((claim.c.clone(), claim.r.clone())).or_default();
            recent.retain(|(at, _)| now - at <= BURST_MS);
            let others = recent.iter().filter(|(_, u)| u != url).map(|(_, u)| u.clone()).collect::<std::collections::HashSet<_>>().len();
            recent.push((now, url.clone()));
            others
        }
        _ => 0,
    };
    let why = automated(&Hit { kind, user_agent: ua.as_deref(), prefetch_header: prefetch(headers), since_send_ms: sent_at.map(|s| now - s), other_links_in_burst: burst });
    let e = Engagement {
        campaign_id: claim.c.clone(),
        recipient_id: claim.r.clone(),
        kind: kind.as_str().into(),
        url: claim.u.clone(),
        user_agent: ua.map(|u| u.chars().take(512).collect()),
        automated: why.is_some(),
        automated_reason: why.map(str::to_string),
        at: now,
    };
    metrics().engagement.with_label_values(&[kind.as_str(), if why.is_some() { "true" } else { "false" }]).inc();
    let out = c.codec.engagement(&e).map_err(|e| format!("{e:#}"))?;
    c.publish(&[out]).await.map_err(|e| format!("{e:#}"))
}

async fn open(State(c): State<Arc<Campaigns>>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let Some(claim) = c.links.verify(TokenKind::Open, &token) else { return refused() };
    if let Err(e) = record(&c, TokenKind::Open, &claim, &headers).await {
        tracing::warn!(campaign = claim.c, error = e, "open not recorded");
    }
    ([(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store, max-age=0")], PIXEL).into_response()
}

async fn click(State(c): State<Arc<Campaigns>>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let Some(claim) = c.links.verify(TokenKind::Click, &token) else { return refused() };
    let Some(url) = claim.u.clone().filter(|u| u.starts_with("https://") || u.starts_with("http://")) else { return refused() };
    if let Err(e) = record(&c, TokenKind::Click, &claim, &headers).await {
        tracing::warn!(campaign = claim.c, error = e, "click not recorded");
    }
    (StatusCode::FOUND, [(header::LOCATION, url), (header::CACHE_CONTROL, "no-store".into())]).into_response()
}

async fn unsubscribe_page(State(c): State<Arc<Campaigns>>, Path(token): Path<String>) -> Response {
    if c.links.verify(TokenKind::Unsubscribe, &token).is_none() {
        return refused();
    }
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title><form method=post action=\"/u/{token}\">\
         <input type=hidden name=List-Unsubscribe value=One-Click><p>Stop receiving these e-mails?</p>\
         <button type=submit>Unsubscribe</button></form>"
    ))
    .into_response()
}

async fn unsubscribe(State(c): State<Arc<Campaigns>>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let Some(claim) = c.links.verify(TokenKind::Unsubscribe, &token) else { return refused() };
    let email = c.view.read().ledger.get(&(claim.c.clone(), claim.r.clone())).and_then(|e| e.email.clone()).unwrap_or_else(|| claim.r.clone());
    let s = Suppression { email: email.to_lowercase(), reason: "unsubscribe".into(), campaign_id: Some(claim.c.clone()), detail: None, at: now_ms() };
    let result = match c.codec.suppression(&s) {
        Ok(out) => c.publish(&[out]).await.map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("{e:#}")),
    };
    if let Err(e) = result {
        tracing::warn!(campaign = claim.c, error = e, "unsubscribe not recorded");
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "the unsubscribe could not be recorded right now; please try again");
    }
    if let Err(e) = record(&c, TokenKind::Unsubscribe, &claim, &headers).await {
        tracing::warn!(campaign = claim.c, error = e, "unsubscribe engagement not recorded (the address is suppressed)");
    }
    tracing::info!(campaign = claim.c, "recipient unsubscribed");
    StatusCode::OK.into_response()
}
