//! The lead dimension's business rules (mara example project, generation B `m_dim.lead`; see
//! `sql/checks/lead_dimension.sql` for the same rules as one SQL query over the source).

use apache_avro::types::Value;

use crate::avro::value::{nullable, nullable_text};
use crate::cdc::change::Change;

pub const UNKNOWN: &str = "Unknown";
pub const CLOSED: &str = "Is closed deal";
pub const NOT_CLOSED: &str = "Is not closed deal";
const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A marketing-qualified lead (marketing.marketing_qualified_leads).
#[derive(Clone, Debug, PartialEq)]
pub struct Mql {
    /// Days since the epoch.
    pub first_contact_date: Option<i32>,
    pub landing_page_id: Option<String>,
    pub origin: Option<String>,
}

impl Mql {
    pub fn from_change(c: &Change) -> Self {
        Mql {
            first_contact_date: match c.get("first_contact_date") {
                Some(Value::Date(d)) => Some(*d),
                _ => None,
            },
            landing_page_id: c.text("landing_page_id"),
            origin: c.text("origin"),
        }
    }
}

/// A closed deal (marketing.closed_deals), keyed by the lead's mql_id.
#[derive(Clone, Debug, PartialEq)]
pub struct Deal {
    pub seller_id: Option<String>,
    pub sdr_id: Option<String>,
    pub sr_id: Option<String>,
    /// Microseconds since the epoch (the source timestamp read as UTC).
    pub won_date: Option<i64>,
    pub business_segment: Option<String>,
    pub lead_type: Option<String>,
    pub lead_behaviour_profile: Option<String>,
    pub average_stock: Option<String>,
    pub business_type: Option<String>,
    pub declared_product_catalog_size: Option<f64>,
    pub declared_monthly_revenue: Option<f64>,
}

impl Deal {
    pub fn from_change(c: &Change) -> Self {
        let double = |n: &str| crate::avro::value::double(c.get(n));
        Deal {
            seller_id: c.text("seller_id"),
            sdr_id: c.text("sdr_id"),
            sr_id: c.text("sr_id"),
            won_date: match c.get("won_date") {
                Some(Value::TimestampMicros(t)) => Some(*t),
                _ => None,
            },
            business_segment: c.text("business_segment"),
            lead_type: c.text("lead_type"),
            lead_behaviour_profile: c.text("lead_behaviour_profile"),
            average_stock: c.text("average_stock"),
            business_type: c.text("business_type"),
            declared_product_catalog_size: double("declared_product_catalog_size"),
            declared_monthly_revenue: double("declared_monthly_revenue"),
        }
    }
}

/// A seller of ecommerce.sellers with its lifetime metrics (null when it has no order items).
#[derive(Clone, Debug, PartialEq)]
pub struct SellerMetrics {
    pub number_of_orders_lifetime: Option<i64>,
    pub revenue_lifetime: Option<f64>,
}

/// One row of m_dim.lead, in the reference's column order.
#[derive(Clone, Debug, PartialEq)]
pub struct Lead {
    pub lead_id: String,
    pub seller_fk: Option<String>,
    pub sales_development_representative_id: Option<String>,
    pub sales_representative_id: Option<String>,
    pub deal_date: Option<i64>,
    pub business_segment: String,
    pub lead_type: String,
    pub lead_behaviour_profile: String,
    pub average_stock: String,
    pub business_type: String,
    pub declared_product_catalog_size: f64,
    pub declared_monthly_revenue: f64,
    pub is_closed_deal: String,
    pub first_contact_date: Option<i32>,
    pub landing_page_id: Option<String>,
    pub advertising_channel: String,
    pub number_of_orders_lifetime: Option<i64>,
    pub revenue_lifetime: Option<f64>,
    pub days_to_closing_deal: Option<i32>,
}

impl Lead {
    /// MQL left join deal on mql_id, left join seller on the deal's seller_id.
    pub fn compute(lead_id: &str, mql: &Mql, deal: Option<&Deal>, seller: impl Fn(&str) -> Option<SellerMetrics>) -> Lead {
        let text = |f: fn(&Deal) -> &Option<String>| deal.and_then(|d| f(d).clone());
        let label = |f: fn(&Deal) -> &Option<String>| text(f).unwrap_or_else(|| UNKNOWN.to_string());
        let deal_date = deal.and_then(|d| d.won_date);
        let matched = deal.and_then(|d| d.seller_id.as_deref()).and_then(|s| seller(s).map(|m| (s.to_string(), m)));
        Lead {
            lead_id: lead_id.to_string(),
            seller_fk: matched.as_ref().map(|(s, _)| s.clone()),
            sales_development_representative_id: text(|d| &d.sdr_id),
            sales_representative_id: text(|d| &d.sr_id),
            deal_date,
            business_segment: label(|d| &d.business_segment),
            lead_type: label(|d| &d.lead_type),
            lead_behaviour_profile: label(|d| &d.lead_behaviour_profile),
            average_stock: label(|d| &d.average_stock),
            business_type: label(|d| &d.business_type),
            declared_product_catalog_size: deal.and_then(|d| d.declared_product_catalog_size).unwrap_or(0.0),
            declared_monthly_revenue: deal.and_then(|d| d.declared_monthly_revenue).unwrap_or(0.0),
            is_closed_deal: if deal_date.is_some() { CLOSED } else { NOT_CLOSED }.to_string(),
            first_contact_date: mql.first_contact_date,
            landing_page_id: mql.landing_page_id.clone(),
            advertising_channel: mql.origin.clone().unwrap_or_else(|| UNKNOWN.to_string()),
            number_of_orders_lifetime: matched.as_ref().and_then(|(_, m)| m.number_of_orders_lifetime),
            revenue_lifetime: matched.as_ref().and_then(|(_, m)| m.revenue_lifetime),
            // Calendar days between the dates (the won timestamp's date part), as in the reference.
            days_to_closing_deal: match (deal_date, mql.first_contact_date) {
                (Some(won), Some(first)) => Some((won.div_euclid(MICROS_PER_DAY) - first as i64) as i32),
                _ => None,
            },
        }
    }

    /// The record of `schemas/marketing/marketing.lead.v1-value.avsc`.
    pub fn to_value(&self) -> Value {
        let s = nullable_text;
        Value::Record(vec![
            ("lead_id".into(), Value::String(self.lead_id.clone())),
            ("seller_fk".into(), s(&self.seller_fk)),
            ("sales_development_representative_id".into(), s(&self.sales_development_representative_id)),
            ("sales_representative_id".into(), s(&self.sales_representative_id)),
            ("deal_date".into(), nullable(self.deal_date.map(Value::TimestampMicros))),
            ("business_segment".into(), Value::String(self.business_segment.clone())),
            ("lead_type".into(), Value::String(self.lead_type.clone())),
            ("lead_behaviour_profile".into(), Value::String(self.lead_behaviour_profile.clone())),
            ("average_stock".into(), Value::String(self.average_stock.clone())),
            ("business_type".into(), Value::String(self.business_type.clone())),
            ("declared_product_catalog_size".into(), Value::Double(self.declared_product_catalog_size)),
            ("declared_monthly_revenue".into(), Value::Double(self.declared_monthly_revenue)),
            ("is_closed_deal".into(), Value::String(self.is_closed_deal.clone())),
            ("first_contact_date".into(), nullable(self.first_contact_date.map(Value::Date))),
            ("landing_page_id".into(), s(&self.landing_page_id)),
            ("advertising_channel".into(), Value::String(self.advertising_channel.clone())),
            ("number_of_orders_lifetime".into(), nullable(self.number_of_orders_lifetime.map(Value::Long))),
            ("revenue_lifetime".into(), nullable(self.revenue_lifetime.map(Value::Double))),
            ("days_to_closing_deal".into(), nullable(self.days_to_closing_deal.map(Value::Int))),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mql() -> Mql {
        Mql { first_contact_date: Some(17_500), landing_page_id: Some("lp".into()), origin: None }
    }

    #[test]
    fn open_lead_gets_unknown_labels_zero_declared_and_no_seller() {
        let l = Lead::compute("m1", &mql(), None, |_| panic!("no deal, no seller lookup"));
        assert_eq!(l.advertising_channel, UNKNOWN);
        assert_eq!((l.business_segment.as_str(), l.is_closed_deal.as_str()), (UNKNOWN, NOT_CLOSED));
        assert_eq!((l.declared_monthly_revenue, l.seller_fk.clone(), l.days_to_closing_deal), (0.0, None, None));
    }

    #[test]
    fn closed_deal_counts_calendar_days_and_copies_matched_seller_metrics() {
        let deal = Deal {
            seller_id: Some("s1".into()),
            sdr_id: None,
            sr_id: None,
            // 17_502 days + 23:59 → still day 17_502.
            won_date: Some(17_502 * MICROS_PER_DAY + 86_340_000_000),
            business_segment: Some("pet".into()),
            lead_type: None,
            lead_behaviour_profile: None,
            average_stock: None,
            business_type: None,
            declared_product_catalog_size: None,
            declared_monthly_revenue: Some(5.0),
        };
        let m = SellerMetrics { number_of_orders_lifetime: Some(3), revenue_lifetime: Some(10.5) };
        let l = Lead::compute("m1", &mql(), Some(&deal), |s| (s == "s1").then(|| m.clone()));
        assert_eq!((l.days_to_closing_deal, l.is_closed_deal.as_str()), (Some(2), CLOSED));
        assert_eq!((l.seller_fk.as_deref(), l.number_of_orders_lifetime, l.revenue_lifetime), (Some("s1"), Some(3), Some(10.5)));
        let unmatched = Lead::compute("m1", &mql(), Some(&deal), |_| None);
        assert_eq!((unmatched.seller_fk, unmatched.number_of_orders_lifetime, unmatched.revenue_lifetime), (None, None, None));
        assert_eq!(unmatched.lead_type, UNKNOWN);
    }
}
