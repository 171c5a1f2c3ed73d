-- ec_dim.seller's lifetime metrics recomputed from the olist source (generation B): every
-- seller of ecommerce.sellers; distinct orders, items and price + freight over all its order
-- items whatever the order's status; NULL metrics for a seller without items.
SELECT s.seller_id,
       m.number_of_orders_lifetime,
       m.number_of_order_items_lifetime,
       m.revenue_lifetime
  FROM ecommerce.sellers s
  LEFT JOIN (
        SELECT seller_id,
               count(DISTINCT order_id)        AS number_of_orders_lifetime,
               count(*)                        AS number_of_order_items_lifetime,
               sum(price) + sum(freight_value) AS revenue_lifetime
          FROM ecommerce.order_items
         GROUP BY seller_id
  ) m ON m.seller_id = s.seller_id
 ORDER BY s.seller_id;
