//! The inbox, `relay.marketing_events`: where `POST /v1/events` records what it accepted.
//!
//! The table is the relay's one entry point (an outbox): the API inserts, the OMS may insert
//! directly, and CDC of the table is the only path to `relay.event.received.v1`. So an event
//! is accepted exactly when its row commits — a crash right after the answer loses nothing,
//! a crash before it leaves nothing half-written (one statement per request) — and the same
//! event posted twice, or posted and written directly, is one row (unique identity index).

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::oms::{OmsEvent, Rejected};

/// Whether each storefront of a batch is active, by code (an unknown code is absent).
pub async fn storefronts(c: &tokio_postgres::Client, codes: &[&str]) -> Result<HashMap<String, bool>, tokio_postgres::Error> {
    let rows = c.query("SELECT code, is_active FROM relay.storefronts WHERE code = ANY($1)", &[&codes]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Events of unknown or inactive storefronts, rejected with their reason; the others kept.
pub fn check_storefronts(events: Vec<OmsEvent>, known: &HashMap<String, bool>, rejected: &mut Vec<Rejected>) -> Vec<OmsEvent> {
    events
        .into_iter()
        .filter(|e| {
            let reason = match known.get(&e.storefront_code) {
                None => format!("unknown storefront {:?}", e.storefront_code),
                Some(false) => format!("storefront {:?} is inactive", e.storefront_code),
                Some(true) => return true,
            };
            rejected.push(Rejected { index: e.index, reason });
            false
        })
        .collect()
}

/// Insert the events in one statement (all or nothing); returns how many were new — the rest
/// were already recorded (duplicates).
pub async fn record(c: &tokio_postgres::Client, events: &[OmsEvent]) -> Result<u64, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let codes: Vec<&str> = events.iter().map(|e| e.storefront_code.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<String> = events.iter().map(|e| serde_json::Value::Object(e.payload.clone()).to_string()).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = events.iter().map(|e| e.event_time).collect();
    let params: [&(dyn ToSql + Sync); 5] = [&ids, &codes, &types, &payloads, &times];
    // Rows keep the batch's order (ids ascending), so CDC emits one storefront's events in order.
    c.execute(
        "INSERT INTO relay.marketing_events (event_id, storefront_code, event_type, event_payload, source_system, event_time) \
         SELECT e, s, t, p, 'oms', et FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) WITH ORDINALITY AS u(e, s, t, p, et, n) ORDER BY n \
         ON CONFLICT (storefront_code, event_type, event_id) DO NOTHING",
        &params,
    )
    .await
}
