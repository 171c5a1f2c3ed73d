-- Every person of the olist source (customer_unique_id) as customer 360 must show them: the
-- number of orders, revenue = Σ payment_value over all their orders whatever the status, the
-- first and last purchase time, the favourite category (most items; ties by name, byte order)
-- and the mean review score over their reviewed orders (an order's score: the mean of its
-- reviews). Independent of funnel: straight from the source tables.
WITH pay AS (
    SELECT order_id, sum(payment_value) AS payment_total FROM ecommerce.order_payments GROUP BY order_id
), rev AS (
    SELECT order_id, avg(review_score) AS score FROM ecommerce.order_reviews WHERE review_score IS NOT NULL GROUP BY order_id
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
)
SELECT c.customer_unique_id                 AS customer_id,
       count(o.order_id)                    AS order_count,
       coalesce(sum(p.payment_total), 0)    AS revenue,
       min(o.order_purchase_timestamp)      AS first_order_at,
       max(o.order_purchase_timestamp)      AS last_order_at,
       max(f.category)                      AS favourite_category,
       avg(r.score)                         AS review_avg
  FROM ecommerce.customers c
  LEFT JOIN ecommerce.orders o ON o.customer_id = c.customer_id
  LEFT JOIN pay p ON p.order_id = o.order_id
  LEFT JOIN rev r ON r.order_id = o.order_id
  LEFT JOIN fav f ON f.customer_id = c.customer_unique_id
 GROUP BY c.customer_unique_id
 ORDER BY c.customer_unique_id;
