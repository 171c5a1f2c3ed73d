-- Each order event joined with the customer's profile as of that moment (stream-table LEFT
-- JOIN, as in ksqlDB): an order that arrives before its profile carries null profile columns
-- and is not changed later; a profile update affects later orders only.
-- REEMIT_ON_TABLE_CHANGE = true goes beyond ksqlDB: a profile change re-emits the customer's
-- orders (event_type 'profile-changed') with the new profile.
CREATE STREAM customer_order_enriched
  WITH (KAFKA_TOPIC = 'dom.customer.order.enriched.v1', KEY = 'order_id',
        REEMIT_ON_TABLE_CHANGE = false)
AS SELECT
  o.order_id, o.event_type, o.customer_id, o.status,
  o.purchased_at, o.approved_at, o.delivered_customer_at, o.estimated_delivery_at,
  o.item_count, o.item_total, o.payment_total,
  p.first_name, p.last_name, p.email, p.city, p.state,
  o.source_topic, o.source_partition, o.source_offset
FROM order_events o
LEFT JOIN customer_profile p ON o.customer_id = p.customer_id;
