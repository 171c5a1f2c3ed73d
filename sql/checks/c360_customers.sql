-- Every person of the olist source (customer_unique_id) as customer 360 must show them: the
-- number of orders, revenue = Σ payment_value over all their orders whatever the status, the
-- average order value (mean payment total over the orders that have payments), the first and
-- last purchase time, items, delivered and canceled orders, the favourite category (most
-- items; ties by name, byte order), the mean review score over their reviewed orders (an
-- order's score: the mean of its reviews), the profile fields (the most recently changed
-- customer record of the person: the later transaction, ties — a snapshot — the greatest
-- customer_id), and the lifecycle stage and segment: the rules of sql/c360/4_customer_segment.sql
-- written again here, evaluated at the event time c360 reached, the latest purchase time of
-- any order (assumes the order holding it was not deleted: c360's clock never goes back).
-- Independent of funnel: straight from the source tables.
WITH pay AS (
    SELECT order_id, sum(payment_value) AS payment_total FROM ecommerce.order_payments GROUP BY order_id
), rev AS (
    SELECT order_id, avg(review_score) AS score FROM ecommerce.order_reviews WHERE review_score IS NOT NULL GROUP BY order_id
), items AS (
    SELECT order_id, count(*) AS n FROM ecommerce.order_items GROUP BY order_id
), cat AS (
    SELECT c.customer_unique_id AS customer_id, p.product_category_name AS category, count(*) AS n
      FROM ecommerce.order_items i
      JOIN ecommerce.orders o ON o.order_id = i.order_id
      JOIN ecommerce.customers c ON c.customer_id = o.customer_id
      JOIN ecommerce.products p ON p.product_id = i.product_id
     WHERE p.product_category_name IS NOT NULL
     GROUP BY 1, 2
), fav AS (
    SELECT DISTINCT ON (customer_id) customer_id, category
      FROM cat ORDER BY customer_id, n DESC, category COLLATE "C"
), profile AS (
    SELECT DISTINCT ON (customer_unique_id) customer_unique_id AS customer_id, customer_city AS city, customer_state AS state, customer_email AS email
      FROM ecommerce.customers
     ORDER BY customer_unique_id, xmin::text::bigint DESC, customer_id DESC
), person AS (
    SELECT c.customer_unique_id                 AS customer_id,
           count(o.order_id)                    AS order_count,
           coalesce(sum(p.payment_total), 0)    AS revenue,
           avg(p.payment_total)                 AS avg_order_value,
           min(o.order_purchase_timestamp)      AS first_order_at,
           max(o.order_purchase_timestamp)      AS last_order_at,
           coalesce(sum(i.n), 0)                AS items,
           count(o.order_id) FILTER (WHERE o.order_status = 'delivered') AS delivered_orders,
           count(o.order_id) FILTER (WHERE o.order_status = 'canceled')  AS canceled_orders,
           max(f.category)                      AS favourite_category,
           avg(r.score)                         AS review_avg
      FROM ecommerce.customers c
      LEFT JOIN ecommerce.orders o ON o.customer_id = c.customer_id
      LEFT JOIN pay p ON p.order_id = o.order_id
      LEFT JOIN rev r ON r.order_id = o.order_id
      LEFT JOIN items i ON i.order_id = o.order_id
      LEFT JOIN fav f ON f.customer_id = c.customer_unique_id
     GROUP BY c.customer_unique_id
), clock AS (
    SELECT max(order_purchase_timestamp) AS event_time FROM ecommerce.orders
)
SELECT x.customer_id, x.order_count, x.revenue, x.avg_order_value, x.first_order_at, x.last_order_at,
       x.items, x.delivered_orders, x.canceled_orders, x.favourite_category, x.review_avg,
       pr.city, pr.state, pr.email,
       CASE
         WHEN x.order_count = 0 THEN 'prospect'
         WHEN x.last_order_at < k.event_time - INTERVAL '180 days' THEN 'churn-risk'
         WHEN x.order_count - x.canceled_orders >= 2 AND x.revenue >= 200
              AND (x.review_avg IS NULL OR x.review_avg >= 4) THEN 'evangelist'
         ELSE 'customer'
       END AS lifecycle_stage,
       CASE
         WHEN x.order_count = 0 THEN 'new-lead'
         WHEN x.revenue >= 1000 AND x.last_order_at >= k.event_time - INTERVAL '180 days' THEN 'high-value-active'
         WHEN x.revenue >= 1000 THEN 'high-value-at-risk'
         WHEN x.order_count - x.canceled_orders >= 2 THEN 'repeat-buyer'
         WHEN x.last_order_at < k.event_time - INTERVAL '180 days' THEN 'dormant'
         ELSE 'one-time-buyer'
       END AS segment
  FROM person x
  JOIN profile pr ON pr.customer_id = x.customer_id
 CROSS JOIN clock k
 ORDER BY x.customer_id;
