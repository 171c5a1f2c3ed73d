-- Every person of the olist source (customer_unique_id) as customer 360 must show them: the
-- number of orders, revenue = Σ payment_value over all their orders whatever the status, and
-- the first and last purchase time. Independent of funnel: straight from the source tables.
WITH pay AS (
    SELECT order_id, sum(payment_value) AS payment_total FROM ecommerce.order_payments GROUP BY order_id
)
SELECT c.customer_unique_id                 AS customer_id,
       count(o.order_id)                    AS order_count,
       coalesce(sum(p.payment_total), 0)    AS revenue,
       min(o.order_purchase_timestamp)      AS first_order_at,
       max(o.order_purchase_timestamp)      AS last_order_at
  FROM ecommerce.customers c
  LEFT JOIN ecommerce.orders o ON o.customer_id = c.customer_id
  LEFT JOIN pay p ON p.order_id = o.order_id
 GROUP BY c.customer_unique_id
 ORDER BY c.customer_unique_id;
