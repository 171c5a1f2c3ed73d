//! The domain events as Rust values, one way to build their Avro records whatever produces
//! them (the olist mapping, `funnel seed events`).

use std::collections::HashMap;

use apache_avro::types::Value;

use serde::{Deserialize, Serialize};

use crate::avro::value::{double, field, long, nullable, nullable_text as text, text as text_of};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub customer_id: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip_code_prefix: Option<String>,
    /// Microseconds since the epoch.
    pub signup_at: Option<i64>,
    pub attributes: HashMap<String, String>,
    pub source: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub item_id: i32,
    pub product_id: Option<String>,
    pub seller_id: Option<String>,
    pub price: Option<f64>,
    pub freight: Option<f64>,
    /// The product's category (null when unknown).
    pub category: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub customer_id: Option<String>,
    pub status: Option<String>,
    /// purchased, approved, delivered to carrier, delivered to customer, estimated delivery
    /// (microseconds since the epoch).
    pub times: [Option<i64>; 5],
    pub items: Vec<OrderItem>,
    pub item_total: f64,
    pub payment_total: Option<f64>,
    /// Mean score of the order's reviews (1–5; null without reviews).
    pub review_score: Option<f64>,
    pub source: String,
}

pub fn key(field: &str, id: &str) -> Value {
    Value::Record(vec![(field.into(), Value::String(id.to_string()))])
}

impl Profile {
    /// The record of `schemas/dom/dom.customer.profile.upsert.v1-value.avsc`.
    pub fn to_value(&self) -> Value {
        Value::Record(vec![
            ("customer_id".into(), Value::String(self.customer_id.clone())),
            ("first_name".into(), text(&self.first_name)),
            ("last_name".into(), text(&self.last_name)),
            ("email".into(), text(&self.email)),
            ("city".into(), text(&self.city)),
            ("state".into(), text(&self.state)),
            ("zip_code_prefix".into(), text(&self.zip_code_prefix)),
            ("signup_at".into(), nullable(self.signup_at.map(Value::TimestampMicros))),
            ("attributes".into(), Value::Map(self.attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())),
            ("source".into(), Value::String(self.source.clone())),
        ])
    }
}

impl Order {
    /// The record of `schemas/dom/dom.order.v1-value.avsc`.
    pub fn to_value(&self) -> Value {
        let ts = |t: Option<i64>| nullable(t.map(Value::TimestampMicros));
        let double = |x: Option<f64>| nullable(x.map(Value::Double));
        let items = self
            .items
            .iter()
            .map(|i| {
                Value::Record(vec![
                    ("item_id".into(), Value::Int(i.item_id)),
                    ("product_id".into(), text(&i.product_id)),
                    ("seller_id".into(), text(&i.seller_id)),
                    ("price".into(), double(i.price)),
                    ("freight".into(), double(i.freight)),
                    ("category".into(), text(&i.category)),
                ])
            })
            .collect();
        Value::Record(vec![
            ("order_id".into(), Value::String(self.order_id.clone())),
            ("customer_id".into(), text(&self.customer_id)),
            ("status".into(), text(&self.status)),
            ("purchased_at".into(), ts(self.times[0])),
            ("approved_at".into(), ts(self.times[1])),
            ("delivered_carrier_at".into(), ts(self.times[2])),
            ("delivered_customer_at".into(), ts(self.times[3])),
            ("estimated_delivery_at".into(), ts(self.times[4])),
            ("items".into(), Value::Array(items)),
            ("item_total".into(), Value::Double(self.item_total)),
            ("payment_total".into(), double(self.payment_total)),
            ("review_score".into(), double(self.review_score)),
            ("source".into(), Value::String(self.source.clone())),
        ])
    }
}

fn record_fields<'a>(v: &'a Value, what: &str) -> Result<&'a [(String, Value)], String> {
    match crate::avro::value::unwrap_union(v) {
        Value::Record(fields) => Ok(fields),
        other => Err(format!("{what}: expected a record, got {other:?}")),
    }
}

fn required(fields: &[(String, Value)], name: &str, what: &str) -> Result<String, String> {
    text_of(field(fields, name)).map(str::to_string).ok_or_else(|| format!("{what}: field {name} is missing or not a string"))
}

fn opt_text(fields: &[(String, Value)], name: &str) -> Option<String> {
    text_of(field(fields, name)).map(str::to_string)
}

impl Profile {
    /// Read a decoded profile record (any compatible version of the schema).
    pub fn from_value(v: &Value) -> Result<Profile, String> {
        let f = record_fields(v, "profile")?;
        let attributes = match field(f, "attributes") {
            Some(Value::Map(m)) => m.iter().filter_map(|(k, v)| text_of(Some(v)).map(|s| (k.clone(), s.to_string()))).collect(),
            _ => HashMap::new(),
        };
        Ok(Profile {
            customer_id: required(f, "customer_id", "profile")?,
            first_name: opt_text(f, "first_name"),
            last_name: opt_text(f, "last_name"),
            email: opt_text(f, "email"),
            city: opt_text(f, "city"),
            state: opt_text(f, "state"),
            zip_code_prefix: opt_text(f, "zip_code_prefix"),
            signup_at: long(field(f, "signup_at")),
            attributes,
            source: opt_text(f, "source").unwrap_or_default(),
        })
    }
}

/// A money or score field: NaN and infinities are refused (they would not survive JSON state
/// or Redis scores, and no order has them).
fn finite(fields: &[(String, Value)], name: &str, what: &str) -> Result<Option<f64>, String> {
    match double(field(fields, name)) {
        Some(x) if !x.is_finite() => Err(format!("{what}: {name} is {x}, not a finite number")),
        x => Ok(x),
    }
}

impl Order {
    /// Read a decoded order record (any compatible version of the schema).
    pub fn from_value(v: &Value) -> Result<Order, String> {
        let f = record_fields(v, "order")?;
        let items = match field(f, "items") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    let i = record_fields(i, "order item")?;
                    Ok(OrderItem {
                        item_id: long(field(i, "item_id")).ok_or("order item: item_id missing")? as i32,
                        product_id: opt_text(i, "product_id"),
                        seller_id: opt_text(i, "seller_id"),
                        price: finite(i, "price", "order item")?,
                        freight: finite(i, "freight", "order item")?,
                        category: opt_text(i, "category"),
                    })
                })
                .collect::<Result<Vec<_>, String>>()?,
            _ => vec![],
        };
        let ts = |name: &str| long(field(f, name));
        Ok(Order {
            order_id: required(f, "order_id", "order")?,
            customer_id: opt_text(f, "customer_id"),
            status: opt_text(f, "status"),
            times: [ts("purchased_at"), ts("approved_at"), ts("delivered_carrier_at"), ts("delivered_customer_at"), ts("estimated_delivery_at")],
            items,
            item_total: finite(f, "item_total", "order")?.unwrap_or(0.0),
            payment_total: finite(f, "payment_total", "order")?,
            review_score: finite(f, "review_score", "order")?,
            source: opt_text(f, "source").unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_profile_round_trip_through_avro_values() {
        let o = Order {
            order_id: "o1".into(),
            customer_id: Some("c1".into()),
            status: Some("delivered".into()),
            times: [Some(1), None, Some(3), None, Some(5)],
            items: vec![OrderItem { item_id: 1, product_id: Some("p".into()), seller_id: None, price: Some(10.5), freight: Some(1.25), category: Some("toys".into()) }],
            item_total: 11.75,
            payment_total: None,
            review_score: Some(4.5),
            source: "seed".into(),
        };
        assert_eq!(Order::from_value(&o.to_value()), Ok(o));
        let mut p = Profile { customer_id: "c1".into(), city: Some("x".into()), signup_at: Some(7), source: "http".into(), ..Default::default() };
        p.attributes.insert("k".into(), "v".into());
        assert_eq!(Profile::from_value(&p.to_value()), Ok(p));
        assert!(Order::from_value(&Value::Null).is_err());
        let nan = Order { payment_total: Some(f64::NAN), ..Default::default() };
        assert!(Order::from_value(&nan.to_value()).unwrap_err().contains("not a finite number"));
    }
}
