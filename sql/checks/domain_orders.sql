-- Every olist order as the domain topics carry it (latest state of dom.order.created.v1 /
-- dom.order.updated.v1): the person (customer_unique_id), status, purchase time, the number of
-- items, Σ price + freight and Σ payment_value (NULL when the order has no payment).
WITH items AS (
    SELECT order_id, count(*) AS items, sum(coalesce(price, 0) + coalesce(freight_value, 0)) AS item_total
      FROM ecommerce.order_items GROUP BY order_id
), pay AS (
    SELECT order_id, sum(payment_value) AS payment_total FROM ecommerce.order_payments GROUP BY order_id
)
SELECT o.order_id,
       c.customer_unique_id          AS customer_id,
       o.order_status                AS status,
       o.order_purchase_timestamp    AS purchased_at,
       coalesce(i.items, 0)          AS items,
       coalesce(i.item_total, 0)     AS item_total,
       p.payment_total               AS payment_total
  FROM ecommerce.orders o
  LEFT JOIN ecommerce.customers c ON c.customer_id = o.customer_id
  LEFT JOIN items i ON i.order_id = o.order_id
  LEFT JOIN pay p ON p.order_id = o.order_id
 ORDER BY o.order_id;
