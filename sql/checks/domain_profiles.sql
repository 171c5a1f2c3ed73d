-- One profile per person (customer_unique_id) with the location of their most recently changed
-- customer record; right after a snapshot every record has the same source position and the
-- greatest customer_id wins (the domain processor's tie-break). The address is the one
-- `funnel seed` gives each person (olist has none).
SELECT DISTINCT ON (customer_unique_id)
       customer_unique_id       AS customer_id,
       customer_city            AS city,
       customer_state           AS state,
       customer_zip_code_prefix AS zip_code_prefix,
       customer_email           AS email
  FROM ecommerce.customers
 ORDER BY customer_unique_id, customer_id DESC;
