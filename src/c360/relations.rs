//! The relations the c360 SQL reads, built as Arrow batches from the micro-batch and from the
//! state of the keys it touches (never from the whole state):
//!
//! | relation             | rows                                                               |
//! |----------------------|--------------------------------------------------------------------|
//! | `profile_changes`    | latest stored profile of each customer the batch involves          |
//! | `customer_profile`   | result of `customer_profile.sql` over `profile_changes`            |
//! | `order_events`       | the batch's order events (created, updated, deleted, re-emits)     |
//! | `affected_customers` | customers whose aggregates the batch may change                    |
//! | `customer_orders`    | current (not deleted) orders of the affected customers             |
//! | `customer_order_items` | their items: customer, order, product, category, price           |
//! | `customer_consolidated` | result of `customer_consolidated.sql` (for the segment query)   |
//! | `stream_clock`       | one row: `stream_time`, the latest order purchase time seen        |

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Float64Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;

use crate::domain::events::{Order, Profile};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn ts_builder(n: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC")
}

pub fn profile_changes(profiles: &[&Profile]) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("first_name", DataType::Utf8, true),
        Field::new("last_name", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("zip_code_prefix", DataType::Utf8, true),
        Field::new("signup_at", ts(), true),
        Field::new("attributes", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
    ]);
    let n = profiles.len();
    let mut text: Vec<StringBuilder> = (0..7).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut signup = ts_builder(n);
    let mut attributes = StringBuilder::with_capacity(n, n * 32);
    let mut source = StringBuilder::with_capacity(n, n * 8);
    for p in profiles {
        text[0].append_value(&p.customer_id);
        for (b, v) in text[1..].iter_mut().zip([&p.first_name, &p.last_name, &p.email, &p.city, &p.state, &p.zip_code_prefix]) {
            b.append_option(v.as_deref());
        }
        signup.append_option(p.signup_at);
        // Sorted, so equal maps give equal text.
        let sorted: std::collections::BTreeMap<_, _> = p.attributes.iter().collect();
        attributes.append_value(serde_json::to_string(&sorted).unwrap_or_default());
        source.append_value(&p.source);
    }
    let mut columns: Vec<ArrayRef> = text.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    columns.push(Arc::new(signup.finish()));
    columns.push(Arc::new(attributes.finish()));
    columns.push(Arc::new(source.finish()));
    RecordBatch::try_new(Arc::new(schema), columns)
}

/// Where an order event came from (`order_events` carries it for the enriched stream).
pub struct EventRow<'a> {
    pub order: &'a Order,
    pub event_type: &'static str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

fn order_fields() -> Vec<Field> {
    vec![
        Field::new("order_id", DataType::Utf8, false),
        Field::new("customer_id", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("purchased_at", ts(), true),
        Field::new("approved_at", ts(), true),
        Field::new("delivered_carrier_at", ts(), true),
        Field::new("delivered_customer_at", ts(), true),
        Field::new("estimated_delivery_at", ts(), true),
        Field::new("item_count", DataType::Int64, false),
        Field::new("item_total", DataType::Float64, false),
        Field::new("payment_total", DataType::Float64, true),
        Field::new("review_score", DataType::Float64, true),
        Field::new("source", DataType::Utf8, false),
    ]
}

fn order_columns(orders: &[&Order]) -> Vec<ArrayRef> {
    let n = orders.len();
    let mut ids = StringBuilder::with_capacity(n, n * 32);
    let mut customers = StringBuilder::with_capacity(n, n * 32);
    let mut status = StringBuilder::with_capacity(n, n * 10);
    let mut times: Vec<TimestampMicrosecondBuilder> = (0..5).map(|_| ts_builder(n)).collect();
    let mut item_count = Int64Builder::with_capacity(n);
    let mut item_total = Float64Builder::with_capacity(n);
    let mut payment = Float64Builder::with_capacity(n);
    let mut review = Float64Builder::with_capacity(n);
    let mut source = StringBuilder::with_capacity(n, n * 8);
    for o in orders {
        ids.append_value(&o.order_id);
        customers.append_option(o.customer_id.as_deref());
        status.append_option(o.status.as_deref());
        for (b, t) in times.iter_mut().zip(o.times) {
            b.append_option(t);
        }
        item_count.append_value(o.items.len() as i64);
        item_total.append_value(o.item_total);
        payment.append_option(o.payment_total);
        review.append_option(o.review_score);
        source.append_value(&o.source);
    }
    let mut columns: Vec<ArrayRef> = vec![Arc::new(ids.finish()), Arc::new(customers.finish()), Arc::new(status.finish())];
    columns.extend(times.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(item_count.finish()));
    columns.push(Arc::new(item_total.finish()));
    columns.push(Arc::new(payment.finish()));
    columns.push(Arc::new(review.finish()));
    columns.push(Arc::new(source.finish()));
    columns
}

pub fn customer_orders(orders: &[&Order]) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(Arc::new(Schema::new(order_fields())), order_columns(orders))
}

pub fn customer_order_items(orders: &[&Order]) -> Result<RecordBatch, ArrowError> {
    let schema = Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, true),
        Field::new("order_id", DataType::Utf8, false),
        Field::new("product_id", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
    ]);
    let mut text: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
    let mut price = Float64Builder::new();
    for o in orders {
        for i in &o.items {
            text[0].append_option(o.customer_id.as_deref());
            text[1].append_value(&o.order_id);
            text[2].append_option(i.product_id.as_deref());
            text[3].append_option(i.category.as_deref());
            price.append_option(i.price);
        }
    }
    let mut columns: Vec<ArrayRef> = text.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    columns.push(Arc::new(price.finish()));
    RecordBatch::try_new(Arc::new(schema), columns)
}

pub fn order_events(events: &[EventRow<'_>]) -> Result<RecordBatch, ArrowError> {
    let mut fields = order_fields();
    fields.extend([
        Field::new("event_type", DataType::Utf8, false),
        Field::new("source_topic", DataType::Utf8, false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
    ]);
    let orders: Vec<&Order> = events.iter().map(|e| e.order).collect();
    let mut columns = order_columns(&orders);
    let n = events.len();
    let mut event_type = StringBuilder::with_capacity(n, n * 8);
    let mut topic = StringBuilder::with_capacity(n, n * 24);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    for e in events {
        event_type.append_value(e.event_type);
        topic.append_value(e.topic);
        partition.append_value(e.partition);
        offset.append_value(e.offset);
    }
    columns.extend([Arc::new(event_type.finish()) as ArrayRef, Arc::new(topic.finish()), Arc::new(partition.finish()), Arc::new(offset.finish())]);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

pub fn affected_customers(ids: &[&str]) -> Result<RecordBatch, ArrowError> {
    let mut b = StringBuilder::with_capacity(ids.len(), ids.len() * 32);
    for id in ids {
        b.append_value(id);
    }
    RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("customer_id", DataType::Utf8, false)])), vec![Arc::new(b.finish())])
}

pub fn stream_clock(stream_time: Option<i64>) -> Result<RecordBatch, ArrowError> {
    let mut b = ts_builder(1);
    b.append_option(stream_time);
    RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("stream_time", ts(), true)])), vec![Arc::new(b.finish())])
}
