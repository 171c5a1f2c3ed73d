-- Customer repurchase: one row per person (customer_unique_id, the c360 customer_id) with at
-- least one order purchased at or before {{as_of}}, the features as they stood at {{as_of}},
-- and the label: another order purchased in ({{as_of}}, {{label_until}}].
-- Source: the bronze CDC tables ({{bronze}} = bronze_<CDC topic prefix>), latest change per key
-- (deleted rows left out). What counts as
-- known at {{as_of}}: an order from its purchase time, a delivery from its delivery time, a
-- review from its creation time. Olist has no cancellation time: an order purchased by
-- {{as_of}} whose status is canceled counts as canceled at {{as_of}}.
-- The definitions follow dom.customer.consolidated.v1 (sql/c360/3_customer_consolidated.sql),
-- which the scorer reads: revenue and order value from payments, the review average over the
-- orders' mean scores, the favourite category by item count (ties: by name).
WITH orders AS (
  SELECT order_id, customer_id, order_status AS status,
         CAST(order_purchase_timestamp AS TIMESTAMP) AS purchased_at,
         CAST(order_delivered_customer_date AS TIMESTAMP) AS delivered_at
  FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY _source_lsn DESC, _source_change_lsn DESC, _kafka_offset DESC) AS latest
        FROM {{bronze}}_ecommerce_orders) o
  WHERE latest = 1 AND _op <> 'd'
), customers AS (
  SELECT customer_id, customer_unique_id, customer_state
  FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY _source_lsn DESC, _source_change_lsn DESC, _kafka_offset DESC) AS latest
        FROM {{bronze}}_ecommerce_customers) c
  WHERE latest = 1 AND _op <> 'd'
), payments AS (
  SELECT order_id, SUM(CAST(payment_value AS DOUBLE)) AS payment_total
  FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id, payment_sequential ORDER BY _source_lsn DESC, _source_change_lsn DESC, _kafka_offset DESC) AS latest
        FROM {{bronze}}_ecommerce_order_payments) p
  WHERE latest = 1 AND _op <> 'd'
  GROUP BY order_id
), reviews AS (
  SELECT order_id, AVG(CAST(review_score AS DOUBLE)) AS score
  FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY review_id, order_id ORDER BY _source_lsn DESC, _source_change_lsn DESC, _kafka_offset DESC) AS latest
        FROM {{bronze}}_ecommerce_order_reviews) r
  WHERE latest = 1 AND _op <> 'd' AND review_score IS NOT NULL
    AND CAST(review_creation_date AS TIMESTAMP) <= {{as_of}}
  GROUP BY order_id
), items AS (
  SELECT order_id, product_id
  FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id, order_item_id ORDER BY _source_lsn DESC, _source_change_lsn DESC, _kafka_offset DESC) AS latest
        FROM {{bronze}}_ecommerce_order_items) i
  WHERE latest = 1 AND _op <> 'd'
), products AS (
  SELECT product_id, product_category_name AS category
  FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY product_id ORDER BY _source_lsn DESC, _source_change_lsn DESC, _kafka_offset DESC) AS latest
        FROM {{bronze}}_ecommerce_products) p
  WHERE latest = 1 AND _op <> 'd'
), person_orders AS (
  SELECT c.customer_unique_id AS person, c.customer_state AS state, o.*
  FROM orders o JOIN customers c ON c.customer_id = o.customer_id
  WHERE o.purchased_at IS NOT NULL
), known AS (
  SELECT * FROM person_orders WHERE purchased_at <= {{as_of}}
), category_items AS (
  SELECT k.person, p.category, COUNT(*) AS n
  FROM known k JOIN items i ON i.order_id = k.order_id JOIN products p ON p.product_id = i.product_id
  WHERE p.category IS NOT NULL
  GROUP BY k.person, p.category
), favourite AS (
  SELECT person, category FROM (
    SELECT person, category, ROW_NUMBER() OVER (PARTITION BY person ORDER BY n DESC, category) AS rank FROM category_items
  ) ranked WHERE rank = 1
), later AS (
  SELECT DISTINCT person FROM person_orders WHERE purchased_at > {{as_of}} AND purchased_at <= {{label_until}}
)
SELECT
  k.person AS key,
  MAX(k.state) AS state,
  MAX(f.category) AS favourite_category,
  CAST(COUNT(k.order_id) AS DOUBLE) AS order_count,
  COALESCE(SUM(pay.payment_total), 0.0) AS revenue,
  AVG(pay.payment_total) AS avg_order_value,
  AVG(r.score) AS review_avg,
  CAST(COUNT(k.order_id) FILTER (WHERE k.delivered_at IS NOT NULL AND k.delivered_at <= {{as_of}}) AS DOUBLE) AS delivered_orders,
  CAST(COUNT(k.order_id) FILTER (WHERE k.status = 'canceled') AS DOUBLE) AS canceled_orders,
  CAST(date_part('epoch', {{as_of}}) - date_part('epoch', MAX(k.purchased_at)) AS DOUBLE) / 86400.0 AS recency_days,
  CAST(date_part('epoch', {{as_of}}) - date_part('epoch', MIN(k.purchased_at)) AS DOUBLE) / 86400.0 AS tenure_days,
  CASE WHEN MAX(l.person) IS NULL THEN 0 ELSE 1 END AS label
FROM known k
LEFT JOIN payments pay ON pay.order_id = k.order_id
LEFT JOIN reviews r ON r.order_id = k.order_id
LEFT JOIN favourite f ON f.person = k.person
LEFT JOIN later l ON l.person = k.person
GROUP BY k.person
ORDER BY k.person
