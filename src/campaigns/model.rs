//! A campaign as submitted, its validation, and its state machine:
//! draft → scheduled → running ⇄ paused → finished | cancelled | failed.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::records::{Definition, Task};
use super::template::{Templates, BUILTINS, C360_FIELDS};

/// The original service's MAX_BATCH_SIZE: send requests per batch unless the campaign says.
pub const MAX_BATCH_SIZE: i32 = 100;
pub const DEFAULT_EXPIRE_AFTER_S: i64 = 24 * 3600;
/// Recipients an explicit list may hold (larger audiences belong in customer 360).
pub const MAX_LISTED_RECIPIENTS: usize = 100_000;
pub const LIFECYCLE_STAGES: &[&str] = &["prospect", "customer", "evangelist", "churn-risk"];
pub const SEGMENTS: &[&str] = &["new-lead", "high-value-active", "high-value-at-risk", "repeat-buyer", "dormant", "one-time-buyer"];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    /// From mailbox: `news@shop.example` or `Shop <news@shop.example>`.
    pub sender: String,
    pub subject: String,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub batch_size: Option<i64>,
    pub audience: Audience,
    /// RFC 3339; absent: the campaign stays a draft until scheduled.
    #[serde(default)]
    pub scheduled_at: Option<String>,
    #[serde(default)]
    pub expire_after_seconds: Option<i64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Audience {
    /// Explicit recipients: objects with `email` (required), `id` (optional, else the address)
    /// and any fields the templates use.
    Recipients(Vec<Map<String, Value>>),
    /// Customers of customer 360 (gold c360) by lifecycle stage and segment (empty = any).
    C360(C360Query),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct C360Query {
    #[serde(default)]
    pub lifecycle_stage: Vec<String>,
    #[serde(default)]
    pub segment: Vec<String>,
    /// At most this many customers (by customer_id order).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Only customers whose current repurchase propensity (gold c360_propensity, from
    /// `funnel run propensity`) is at least this, in [0, 1].
    #[serde(default)]
    pub min_propensity: Option<f64>,
}

/// Parse an address as lettre does (RFC 5322 addr-spec).
pub fn valid_address(s: &str) -> bool {
    s.parse::<lettre::Address>().is_ok()
}

/// RFC 3339 → ms since the epoch.
pub fn parse_time(field: &str, s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp_millis()).map_err(|e| format!("{field}: {s:?} is not an RFC 3339 time ({e})"))
}

/// A schedule must not lie in the past (a little clock skew allowed).
pub fn check_schedule(at_ms: i64, now_ms: i64) -> Result<(), String> {
    if at_ms < now_ms - 5_000 {
        return Err(format!("scheduled_at {} is in the past", fmt_ms(at_ms)));
    }
    Ok(())
}

pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_else(|| ms.to_string())
}

impl NewCampaign {
    /// Check everything and make the definition (and the schedule, if any). Every error names
    /// the field; nothing is written on an error.
    pub fn validate(self, campaign_id: &str, now_ms: i64) -> Result<(Definition, Option<i64>), String> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err("name: 1 to 200 characters".into());
        }
        self.sender.parse::<lettre::message::Mailbox>().map_err(|e| format!("sender: {:?} is not an address ({e})", self.sender))?;
        if self.subject.trim().is_empty() {
            return Err("subject: must not be empty".into());
        }
        if self.html.is_none() && self.text.is_none() {
            return Err("html or text: a campaign needs at least one body".into());
        }
        let batch_size = self.batch_size.unwrap_or(MAX_BATCH_SIZE as i64);
        if !(1..=10_000).contains(&batch_size) {
            return Err(format!("batch_size: {batch_size} is out of range (1 to 10000)"));
        }
        let expire_s = self.expire_after_seconds.unwrap_or(DEFAULT_EXPIRE_AFTER_S);
        if !(1..=30 * 86_400).contains(&expire_s) {
            return Err(format!("expire_after_seconds: {expire_s} is out of range (1 to 2592000)"));
        }
        let available: Vec<String> = match &self.audience {
            Audience::Recipients(list) => check_recipients(list)?,
            Audience::C360(q) => {
                check_values("audience.c360.lifecycle_stage", &q.lifecycle_stage, LIFECYCLE_STAGES)?;
                check_values("audience.c360.segment", &q.segment, SEGMENTS)?;
                if let Some(p) = q.min_propensity.filter(|p| !(0.0..=1.0).contains(p)) {
                    return Err(format!("audience.c360.min_propensity: {p} is not a probability (0 to 1)"));
                }
                C360_FIELDS.iter().map(|s| s.to_string()).collect()
            }
        };
        let templates = Templates::compile(&self.subject, self.html.as_deref(), self.text.as_deref(), None)?;
        let fields = templates.fields();
        if let Some(unknown) = fields.iter().find(|f| !available.contains(f)) {
            return Err(format!(
                "campaign {name:?}: the templates use the field {unknown}, which the audience does not have (fields: {}; always: {})",
                available.join(", "),
                BUILTINS.join(", ")
            ));
        }
        let scheduled = match &self.scheduled_at {
            Some(s) => {
                let at = parse_time("scheduled_at", s)?;
                check_schedule(at, now_ms)?;
                Some(at)
            }
            None => None,
        };
        let audience = serde_json::to_string(&self.audience).map_err(|e| e.to_string())?;
        let def = Definition {
            campaign_id: campaign_id.to_string(),
            name: name.to_string(),
            sender: self.sender.clone(),
            subject: self.subject,
            html_template: self.html,
            text_template: self.text,
            batch_size: batch_size as i32,
            audience,
            fields,
            expire_after_ms: expire_s * 1000,
            created_at: now_ms,
        };
        Ok((def, scheduled))
    }
}

fn check_values(field: &str, values: &[String], allowed: &[&str]) -> Result<(), String> {
    match values.iter().find(|v| !allowed.contains(&v.as_str())) {
        Some(v) => Err(format!("{field}: unknown value {v:?} (one of {})", allowed.join(", "))),
        None => Ok(()),
    }
}

/// Every recipient needs a valid `email`; returns the fields all of them can offer.
fn check_recipients(list: &[Map<String, Value>]) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("audience.recipients: the list is empty".into());
    }
    if list.len() > MAX_LISTED_RECIPIENTS {
        return Err(format!("audience.recipients: {} recipients, at most {MAX_LISTED_RECIPIENTS} (use a c360 audience)", list.len()));
    }
    let mut fields: Vec<String> = vec![];
    for (i, r) in list.iter().enumerate() {
        match r.get("email") {
            Some(Value::String(e)) if valid_address(e) => {}
            Some(v) => return Err(format!("audience.recipients[{i}].email: {v} is not a valid address")),
            None => return Err(format!("audience.recipients[{i}]: no email")),
        }
        if let Some(id) = r.get("id") {
            if !id.is_string() || id.as_str().is_some_and(str::is_empty) {
                return Err(format!("audience.recipients[{i}].id: must be a non-empty string"));
            }
        }
        for k in r.keys() {
            if !fields.contains(k) {
                fields.push(k.clone());
            }
        }
    }
    Ok(fields)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Draft,
    Scheduled,
    Running,
    Paused,
    Finished,
    Cancelled,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Draft => "draft",
            State::Scheduled => "scheduled",
            State::Running => "running",
            State::Paused => "paused",
            State::Finished => "finished",
            State::Cancelled => "cancelled",
            State::Failed => "failed",
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, State::Finished | State::Cancelled | State::Failed)
    }
}

/// Task actions.
pub mod action {
    pub const SCHEDULE: &str = "schedule";
    pub const START: &str = "start";
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    pub const CANCEL: &str = "cancel";
    pub const FINISH: &str = "finish";
    pub const FAIL: &str = "fail";
}

/// A campaign's state as the fold of its tasks.
#[derive(Clone, Debug, Serialize)]
pub struct Lifecycle {
    pub state: State,
    pub scheduled_at: Option<i64>,
    pub started_at: Option<i64>,
    /// Recipients of the expanded audience (known once started).
    pub requested: Option<i64>,
    pub ended_at: Option<i64>,
    pub detail: Option<String>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { state: State::Draft, scheduled_at: None, started_at: None, requested: None, ended_at: None, detail: None }
    }
}

impl Lifecycle {
    /// The state after `action`, or why it is not allowed now.
    pub fn next(&self, action: &str) -> Result<State, String> {
        use State::*;
        let s = self.state;
        let to = match (action, s) {
            (action::SCHEDULE, Draft | Scheduled) => Scheduled,
            (action::START, Scheduled) => Running,
            // A start whose transaction was cut short is made again (same requests).
            (action::START, Running | Paused) => s,
            (action::PAUSE, Running) => Paused,
            (action::RESUME, Paused) => Running,
            (action::CANCEL, Draft | Scheduled | Running | Paused) => Cancelled,
            (action::FINISH, Running) => Finished,
            (action::FAIL, Draft | Scheduled | Running | Paused) => Failed,
            _ => return Err(format!("cannot {action} a campaign that is {}", s.as_str())),
        };
        Ok(to)
    }

    /// Apply a task; one that is not allowed in the current state changes nothing (two
    /// clients racing: the first in the topic wins).
    pub fn apply(&mut self, t: &Task) -> bool {
        let Ok(to) = self.next(&t.action) else { return false };
        match t.action.as_str() {
            action::SCHEDULE => self.scheduled_at = t.scheduled_at,
            action::START => {
                self.started_at = self.started_at.or(Some(t.at));
                if t.requested.is_some() {
                    self.requested = t.requested;
                }
            }
            _ => {}
        }
        if to.is_final() {
            self.ended_at = Some(t.at);
            self.detail = t.detail.clone();
        }
        self.state = to;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn campaign(v: Value) -> Result<(Definition, Option<i64>), String> {
        serde_json::from_value::<NewCampaign>(v).map_err(|e| e.to_string())?.validate("c1", 1_800_000_000_000)
    }

    #[test]
    fn validation_names_the_field() {
        let ok = json!({"name": "n", "sender": "Shop <news@shop.example>", "subject": "Hi {{ city }}", "text": "x", "audience": {"c360": {"segment": ["dormant"]}}});
        let (d, s) = campaign(ok.clone()).unwrap();
        assert_eq!((d.batch_size, d.fields.clone(), s), (100, vec!["city".to_string()], None));
        let with = |k: &str, v: Value| {
            let mut o = ok.clone();
            o[k] = v;
            campaign(o).unwrap_err()
        };
        assert!(with("subject", json!("Hi {{ shoe_size }}")).contains("field shoe_size"));
        assert!(with("sender", json!("not an address")).starts_with("sender:"));
        assert!(with("audience", json!({"c360": {"segment": ["vip"]}})).contains("unknown value \"vip\""));
        assert!(with("audience", json!({"recipients": [{"email": "a@b.example"}, {"email": "nope"}]})).starts_with("audience.recipients[1].email"));
        assert!(with("scheduled_at", json!("2020-01-01T00:00:00Z")).contains("in the past"));
        assert!(with("scheduled_at", json!("tomorrow")).starts_with("scheduled_at:"));
        assert!(with("batch_size", json!(0)).starts_with("batch_size"));
        assert!(campaign(json!({"name": "n", "sender": "a@b.example", "subject": "s", "text": "t", "audience": {"c360": {}}, "colour": 1})).unwrap_err().contains("unknown field `colour`"));
        let listed = json!({"name": "n", "sender": "a@b.example", "subject": "Hi {{ nick }}", "text": "t", "audience": {"recipients": [{"email": "x@y.example", "nick": "X"}]}});
        assert_eq!(campaign(listed).unwrap().0.fields, vec!["nick".to_string()]);
    }

    #[test]
    fn transitions_follow_the_state_machine() {
        let mut l = Lifecycle::default();
        let t = |a: &str| Task::new("c", a, 1);
        assert!(!l.apply(&t(action::PAUSE)));
        assert!(l.apply(&Task { scheduled_at: Some(5), ..t(action::SCHEDULE) }));
        assert!(l.apply(&Task { requested: Some(10), ..t(action::START) }));
        assert_eq!((l.state, l.requested), (State::Running, Some(10)));
        assert!(l.apply(&t(action::PAUSE)));
        assert!(!l.apply(&t(action::FINISH)));
        assert!(l.apply(&t(action::RESUME)));
        assert!(l.apply(&t(action::FINISH)));
        assert!(!l.apply(&t(action::CANCEL)));
        assert_eq!(l.state, State::Finished);
    }
}
