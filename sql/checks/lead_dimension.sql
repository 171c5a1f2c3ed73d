-- m_dim.lead recomputed from the olist source database, independently of funnel's processors.
-- Generation B of the mara example project's lead logic (../shared/notes/lead-dimension.md):
-- every MQL, left joined with its closed deal, left joined with the deal seller's lifetime
-- metrics. Seller metrics count every order item whatever the order's status; a seller without
-- items gets NULL metrics, and so does a lead whose deal names a seller missing from sellers.
-- The tests run this query and compare it column by column with gold/m_dim.lead and the
-- marketing.lead.v1 topic.
WITH item_metrics AS (
    SELECT seller_id,
           count(DISTINCT order_id)             AS number_of_orders_lifetime,
           sum(price) + sum(freight_value)      AS revenue_lifetime
      FROM ecommerce.order_items
     GROUP BY seller_id
), seller AS (
    SELECT s.seller_id, m.number_of_orders_lifetime, m.revenue_lifetime
      FROM ecommerce.sellers s
      LEFT JOIN item_metrics m ON m.seller_id = s.seller_id
)
SELECT m.mql_id                                        AS lead_id,
       s.seller_id                                     AS seller_fk,
       d.sdr_id                                        AS sales_development_representative_id,
       d.sr_id                                         AS sales_representative_id,
       d.won_date                                      AS deal_date,
       coalesce(d.business_segment, 'Unknown')         AS business_segment,
       coalesce(d.lead_type, 'Unknown')                AS lead_type,
       coalesce(d.lead_behaviour_profile, 'Unknown')   AS lead_behaviour_profile,
       coalesce(d.average_stock, 'Unknown')            AS average_stock,
       coalesce(d.business_type, 'Unknown')            AS business_type,
       coalesce(d.declared_product_catalog_size, 0)    AS declared_product_catalog_size,
       coalesce(d.declared_monthly_revenue, 0)         AS declared_monthly_revenue,
       CASE WHEN d.won_date IS NOT NULL THEN 'Is closed deal' ELSE 'Is not closed deal' END AS is_closed_deal,
       m.first_contact_date                            AS first_contact_date,
       m.landing_page_id                               AS landing_page_id,
       coalesce(m.origin, 'Unknown')                   AS advertising_channel,
       s.number_of_orders_lifetime                     AS number_of_orders_lifetime,
       s.revenue_lifetime                              AS revenue_lifetime,
       d.won_date::date - m.first_contact_date         AS days_to_closing_deal
  FROM marketing.marketing_qualified_leads m
  LEFT JOIN marketing.closed_deals d ON d.mql_id = m.mql_id
  LEFT JOIN seller s ON s.seller_id = d.seller_id
 ORDER BY lead_id;
