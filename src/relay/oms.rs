//! The OMS batch body of `POST /v1/events`, exactly as the original service documents it
//! (`../shared/data/relay/README.md`): `{count, data: [...], next_index, next_url, ...}`.
//!
//! Two kinds of bad input, answered differently:
//! - A body that is not that shape — not an object, `data` not a list, an item that is not an
//!   object, a known field of the wrong JSON type (`order_revenue: "abc"`, `event_name: 5`) —
//!   is a sender bug: the whole request is refused (422) and nothing is written.
//! - An item that is well-typed but cannot be relayed — a required field missing or empty, a
//!   time that does not parse or lies in the future, an unknown or inactive storefront — is
//!   rejected alone, with its index and reason; the batch's other items are accepted.
//!
//! `count` is the sender's total over all its pages, not the length of `data`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

/// Known string fields (null = absent). Any other field passes through untouched.
const STRING_FIELDS: &[&str] = &["t-value", "storefront_id", "event_name", "event_time", "order_id", "event_id", "session_id", "order_created_date", "order_ship_date", "currency"];
const NUMBER_FIELDS: &[&str] = &["order_revenue"];
/// An event time further ahead than this is refused: the platforms reject future times.
pub const MAX_FUTURE_SECS: i64 = 600;

#[derive(Clone, Debug, PartialEq)]
pub struct OmsEvent {
    /// Position in `data`.
    pub index: usize,
    pub storefront_code: String,
    /// `event_name`, trimmed and lowercased.
    pub event_type: String,
    /// The payload's `event_id` when it carries one, else `order_id`.
    pub event_id: String,
    pub event_time: DateTime<Utc>,
    /// The item as sent.
    pub payload: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct OmsBatch {
    /// The sender's total over all pages (`count`), when given.
    pub count: Option<u64>,
    pub received: usize,
    pub events: Vec<OmsEvent>,
    pub rejected: Vec<Rejected>,
}

/// Parse and check a batch body. `Err` refuses the whole request with that reason.
pub fn parse_batch(body: &Value, now: DateTime<Utc>) -> Result<OmsBatch, String> {
    let Value::Object(top) = body else { return Err(format!("the body must be a JSON object with a data list, not {}", kind(body))) };
    let count = match top.get("count") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => return Err(format!("count must be a non-negative integer (the sender's total over all pages), not {}", kind(other))),
    };
    let data = match top.get("data") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err("data is missing: the events go in a list named data".into()),
        Some(other) => return Err(format!("data must be a list of events, not {}", kind(other))),
    };
    let mut batch = OmsBatch { count, received: data.len(), ..Default::default() };
    for (index, item) in data.iter().enumerate() {
        let Value::Object(fields) = item else { return Err(format!("data[{index}] must be an object, not {}", kind(item))) };
        check_types(index, fields)?;
        match event(index, fields, now) {
            Ok(e) => batch.events.push(e),
            Err(reason) => batch.rejected.push(Rejected { index, reason }),
        }
    }
    Ok(batch)
}

fn check_types(index: usize, fields: &Map<String, Value>) -> Result<(), String> {
    for (name, v) in fields {
        let ok = if STRING_FIELDS.contains(&name.as_str()) || name.starts_with("utm_") {
            matches!(v, Value::String(_) | Value::Null)
        } else if NUMBER_FIELDS.contains(&name.as_str()) {
            matches!(v, Value::Number(_) | Value::Null)
        } else {
            true
        };
        if !ok {
            let want = if NUMBER_FIELDS.contains(&name.as_str()) { "a number" } else { "a string" };
            return Err(format!("data[{index}].{name} must be {want}, not {}", kind(v)));
        }
    }
    Ok(())
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn event(index: usize, fields: &Map<String, Value>, now: DateTime<Utc>) -> Result<OmsEvent, String> {
    let required = |name: &str| text(fields, name).ok_or_else(|| format!("missing field {name}"));
    let storefront = required("storefront_id")?;
    let event_type = required("event_name")?.to_lowercase();
    if event_type.len() > 50 || !event_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("event_name {event_type:?} must be letters, digits and _ (at most 50)"));
    }
    let event_id = match (text(fields, "event_id"), text(fields, "order_id")) {
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return Err("missing field order_id (or event_id)".into()),
    };
    if event_id.len() > 100 {
        return Err("event id (event_id or order_id) is longer than 100 characters".into());
    }
    if storefront.len() > 50 {
        return Err("storefront_id is longer than 50 characters".into());
    }
    let event_time = parse_time(required("event_time")?).ok_or_else(|| format!("bad time: event_time {:?} is not an ISO 8601 date-time", required("event_time").unwrap_or_default()))?;
    if (event_time - now).num_seconds() > MAX_FUTURE_SECS {
        return Err(format!("bad time: event_time {} is in the future", event_time.to_rfc3339()));
    }
    for name in ["order_created_date", "order_ship_date"] {
        if let Some(t) = text(fields, name) {
            parse_time(t).ok_or_else(|| format!("bad time: {name} {t:?} is not an ISO 8601 date-time"))?;
        }
    }
    Ok(OmsEvent { index, storefront_code: storefront.to_string(), event_type, event_id: event_id.to_string(), event_time, payload: fields.clone() })
}

/// ISO 8601 / RFC 3339; a time without offset is UTC (the contract's times are UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"].iter().find_map(|f| NaiveDateTime::parse_from_str(s, f).ok()).map(|t| t.and_utc())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        parse_time("2026-01-16T00:00:00Z").unwrap()
    }

    #[test]
    fn the_documented_sample_parses_with_count_apart_from_data() {
        let body: Value = serde_json::from_str(include_str!("../../tests/fixtures/relay/oms-batch-sample.json")).unwrap();
        let b = parse_batch(&body, now()).unwrap();
        assert_eq!((b.count, b.received, b.events.len(), b.rejected.len()), (Some(4000), 3, 3, 0));
        let p = &b.events[2];
        assert_eq!((p.storefront_code.as_str(), p.event_type.as_str(), p.event_id.as_str()), ("bosley", "purchase_completed", "2025020100003333"));
        assert_eq!(p.payload["t-value"], "bosleyaffiliate_0123");
        assert_eq!(p.event_time, parse_time("2026-01-15T10:25:00Z").unwrap());
    }

    #[test]
    fn items_without_what_relaying_needs_are_rejected_alone() {
        let body = json!({"count": 9, "data": [
            {"storefront_id": "a", "event_name": "x", "event_time": "2026-01-15T10:00:00Z", "order_id": "1"},
            {"event_name": "x", "event_time": "2026-01-15T10:00:00Z", "order_id": "2"},
            {"storefront_id": "a", "event_name": "x", "event_time": "yesterday", "order_id": "3"},
            {"storefront_id": "a", "event_name": "x", "event_time": "2026-01-15T10:00:00Z"},
            {"storefront_id": "a", "event_name": "x", "event_time": "2026-02-15T10:00:00Z", "order_id": "5"},
            {"storefront_id": "a", "event_name": "x", "event_time": "2026-01-15 10:00:00", "event_id": "e6", "extra": [1, {"k": 2}]},
        ]});
        let b = parse_batch(&body, now()).unwrap();
        assert_eq!(b.events.iter().map(|e| e.index).collect::<Vec<_>>(), vec![0, 5]);
        let reasons: Vec<(usize, &str)> = b.rejected.iter().map(|r| (r.index, r.reason.as_str())).collect();
        assert_eq!(reasons[0], (1, "missing field storefront_id"));
        assert!(reasons[1].0 == 2 && reasons[1].1.starts_with("bad time: event_time"), "{reasons:?}");
        assert_eq!(reasons[2], (3, "missing field order_id (or event_id)"));
        assert!(reasons[3].0 == 4 && reasons[3].1.contains("in the future"), "{reasons:?}");
        assert_eq!(b.events[1].event_id, "e6");
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_refused_whole() {
        for (body, want) in [
            (json!([1]), "the body must be a JSON object"),
            (json!({"count": 1}), "data is missing"),
            (json!({"data": {"a": 1}}), "data must be a list of events, not an object"),
            (json!({"count": "4000", "data": []}), "count must be a non-negative integer"),
            (json!({"data": [{"storefront_id": "a"}, 7]}), "data[1] must be an object, not a number"),
            (json!({"data": [{"storefront_id": "a", "order_revenue": "80.79"}]}), "data[0].order_revenue must be a number, not a string"),
            (json!({"data": [{"event_name": 5}]}), "data[0].event_name must be a string, not a number"),
            (json!({"data": [{"utm_source": ["fb"]}]}), "data[0].utm_source must be a string, not a list"),
        ] {
            let err = parse_batch(&body, now()).unwrap_err();
            assert!(err.starts_with(want), "{body}: {err}");
        }
    }
}
