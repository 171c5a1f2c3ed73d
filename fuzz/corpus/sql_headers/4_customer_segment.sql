-- Lifecycle stage and marketing segment from behaviour (orders, spend, recency, reviews),
-- evaluated against event time:
-- stream_clock.stream_time is the latest order purchase time the engine has seen, never the
-- wall clock, so replays and old datasets (olist is 2016-2018) get the same answer.
-- RECOMPUTE_AT makes the engine re-evaluate a customer when event time passes that moment
-- (an event-time timer), so 'churn-risk' appears without a new event for the customer.
-- Both columns are also carried in dom.customer.consolidated.v1; this topic gets a record
-- only when one of them changes.
CREATE TABLE customer_segment
  WITH (KAFKA_TOPIC = 'dom.customer.segment.v1', KEY = 'customer_id',
        EMIT = 'changes', RECOMPUTE_AT = 'last_order_at + 180 days')
AS SELECT
  c.customer_id,
  CASE
    WHEN c.order_count = 0 THEN 'prospect'
    WHEN c.last_order_at < s.stream_time - INTERVAL '180 days' THEN 'churn-risk'
    WHEN c.order_count - c.canceled_orders >= 2 AND c.revenue >= 200
         AND (c.review_avg IS NULL OR c.review_avg >= 4) THEN 'evangelist'
    ELSE 'customer'
  END AS lifecycle_stage,
  CASE
    WHEN c.order_count = 0 THEN 'new-lead'
    WHEN c.revenue >= 1000 AND c.last_order_at >= s.stream_time - INTERVAL '180 days' THEN 'high-value-active'
    WHEN c.revenue >= 1000 THEN 'high-value-at-risk'
    WHEN c.order_count - c.canceled_orders >= 2 THEN 'repeat-buyer'
    WHEN c.last_order_at < s.stream_time - INTERVAL '180 days' THEN 'dormant'
    ELSE 'one-time-buyer'
  END AS segment
FROM customer_consolidated c CROSS JOIN stream_clock s;
