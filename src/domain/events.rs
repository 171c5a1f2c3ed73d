//! The domain events as Rust values, one way to build their Avro records whatever produces
//! them (the olist mapping, `funnel seed events`).

use std::collections::HashMap;

use apache_avro::types::Value;

use crate::avro::value::{nullable, nullable_text as text};

#[derive(Clone, Debug, Default, PartialEq)]
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

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderItem {
    pub item_id: i32,
    pub product_id: Option<String>,
    pub seller_id: Option<String>,
    pub price: Option<f64>,
    pub freight: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
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
            ("source".into(), Value::String(self.source.clone())),
        ])
    }
}
