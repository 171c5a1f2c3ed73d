//! A campaign's audience, evaluated when it starts: the explicit recipients, or the customers
//! of customer 360 (gold c360 in the lake, read with DataFusion) by lifecycle stage, segment and
//! the least repurchase propensity (gold c360_propensity).


use serde_json::{Map, Value};

use super::model::{valid_address, Audience};
use super::records::Definition;
use super::template::C360_FIELDS;

#[derive(Clone, Debug, PartialEq)]
pub struct Recipient {
    pub id: String,
    /// None or invalid: counted as skipped, with the reason.
    pub email: Option<String>,
    pub fields: Map<String, Value>,
}

impl Recipient {
    /// Why this recipient cannot be mailed, if it cannot.
    pub fn skip_reason(&self) -> Option<String> {
        match &self.email {
            None => Some("no e-mail address".into()),
            Some(e) if !valid_address(e) => Some(format!("invalid e-mail address {e:?}")),
            Some(_) => None,
        }
    }
}

pub async fn resolve(def: &Definition, lake: &crate::lake::location::Lake) -> Result<Vec<Recipient>, String> {
    let audience: Audience = serde_json::from_str(&def.audience).map_err(|e| format!("the stored audience is not understood: {e}"))?;
    match audience {
        Audience::Recipients(list) => {
            let mut seen = std::collections::HashSet::new();
            Ok(list
                .into_iter()
                .filter_map(|fields| {
                    let email = fields.get("email").and_then(Value::as_str).map(str::to_string);
                    let id = fields.get("id").and_then(Value::as_str).map(str::to_string).or_else(|| email.as_ref().map(|e| e.to_lowercase())).unwrap_or_default();
                    // One request per campaign × recipient, even when the list repeats one.
                    seen.insert(id.clone()).then_some(Recipient { id, email, fields })
                })
                .collect())
        }
        Audience::C360(q) => {
            let path = crate::c360::table_paths(lake)[2].clone();
            if !crate::lake::location::exists(&path).await.map_err(|e| format!("looking for gold c360 at {path}: {e:#}"))? {
                return Err(format!("customer 360 has no gold table yet ({path}): run `funnel run lake`"));
            }
            let ctx = deltalake::datafusion::prelude::SessionContext::new();
            crate::lake::query::register(&ctx, "c360", &path).await.map_err(|e| format!("opening gold c360: {e:#}"))?;
            let list = |col: &str, vals: &[String]| (!vals.is_empty()).then(|| format!("c360.{col} IN ({})", vals.iter().map(|v| format!("'{}'", v.replace('\'', "''"))).collect::<Vec<_>>().join(", ")));
            let mut filters: Vec<String> = [list("lifecycle_stage", &q.lifecycle_stage), list("segment", &q.segment)].into_iter().flatten().collect();
            let mut join = String::new();
            if let Some(min) = q.min_propensity {
                let scores = crate::propensity::run::gold_paths(lake)[0].clone();
                if !crate::lake::location::exists(&scores).await.map_err(|e| format!("looking for the propensity scores at {scores}: {e:#}"))? {
                    return Err(format!("no propensity scores yet ({scores}): train a customers model and run `funnel run propensity`"));
                }
                crate::lake::query::register(&ctx, "propensity", &scores).await.map_err(|e| format!("opening gold c360_propensity: {e:#}"))?;
                join = " JOIN propensity ON propensity.customer_id = c360.customer_id".into();
                filters.push(format!("propensity.score >= {min}"));
            }
            let sql = format!(
                "SELECT {}, c360.email AS email FROM c360{join}{} ORDER BY c360.customer_id{}",
                C360_FIELDS.iter().map(|f| format!("c360.{f} AS {f}")).collect::<Vec<_>>().join(", "),
                if filters.is_empty() { String::new() } else { format!(" WHERE {}", filters.join(" AND ")) },
                q.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default()
            );
            let rows = crate::lake::query::rows(&ctx, &sql).await.map_err(|e| format!("querying gold c360: {e:#}"))?;
            Ok(rows
                .into_iter()
                .map(|mut fields| {
                    let email = fields.remove("email").and_then(|v| v.as_str().map(str::to_string));
                    let id = fields.get("customer_id").and_then(Value::as_str).unwrap_or_default().to_string();
                    Recipient { id, email, fields }
                })
                .collect())
        }
    }
}
