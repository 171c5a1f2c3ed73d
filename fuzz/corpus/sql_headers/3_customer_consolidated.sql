-- One row per customer: profile fields and aggregates over the customer's current orders.
-- Revenue is the sum of payment totals over all the customer's orders, whatever their status.
-- Computed per micro-batch for the customers the batch touched (affected_customers), over
-- their orders as they stand after the batch (customer_orders, customer_order_items: from
-- the engine's state). The favourite category is the one with the most items (ties: by name).
CREATE TABLE customer_consolidated
  WITH (KAFKA_TOPIC = 'dom.customer.consolidated.v1', KEY = 'customer_id')
AS WITH category_items AS (
  SELECT customer_id, category, COUNT(*) AS n
  FROM customer_order_items WHERE category IS NOT NULL
  GROUP BY customer_id, category
), favourite AS (
  SELECT customer_id, category FROM (
    SELECT customer_id, category, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY n DESC, category) AS rank
    FROM category_items
  ) ranked WHERE rank = 1
)
SELECT
  k.customer_id,
  MAX(p.first_name) AS first_name, MAX(p.last_name) AS last_name, MAX(p.email) AS email,
  MAX(p.city) AS city, MAX(p.state) AS state, MAX(p.signup_at) AS signup_at,
  COUNT(o.order_id) AS order_count,
  COALESCE(SUM(o.payment_total), 0.0) AS revenue,
  AVG(o.payment_total) AS avg_order_value,
  MIN(o.purchased_at) AS first_order_at,
  MAX(o.purchased_at) AS last_order_at,
  COALESCE(SUM(o.item_count), 0) AS items,
  COUNT(o.order_id) FILTER (WHERE o.status = 'delivered') AS delivered_orders,
  COUNT(o.order_id) FILTER (WHERE o.status = 'canceled') AS canceled_orders,
  MAX(f.category) AS favourite_category,
  AVG(o.review_score) AS review_avg
FROM affected_customers k
LEFT JOIN customer_profile p ON p.customer_id = k.customer_id
LEFT JOIN customer_orders o ON o.customer_id = k.customer_id
LEFT JOIN favourite f ON f.customer_id = k.customer_id
GROUP BY k.customer_id;
