-- Lead conversion: one row per marketing-qualified lead first contacted in
-- [{{from}}, {{until}}), with what is known when the lead arrives (channel, landing page,
-- weekday of the first contact: 0 = Sunday) and the label: a deal won within {{horizon_days}} days of the first contact
-- and no later than {{label_until}}.
-- Source: the staged silver tables of the loader (latest per key, merged by mql_id).
SELECT
  q.mql_id AS key,
  COALESCE(NULLIF(q.origin, ''), 'Unknown') AS channel,
  COALESCE(q.landing_page_id, 'unknown') AS landing_page,
  CAST(CAST(date_part('dow', CAST(q.first_contact_date AS TIMESTAMP)) AS INT) AS VARCHAR) AS contact_weekday,
  CASE WHEN d.won_date IS NOT NULL
        AND CAST(d.won_date AS TIMESTAMP) <= CAST(q.first_contact_date AS TIMESTAMP) + INTERVAL '{{horizon_days}} days'
        AND CAST(d.won_date AS TIMESTAMP) <= {{label_until}}
       THEN 1 ELSE 0 END AS label
FROM silver_m_data_marketing_qualified_lead q
LEFT JOIN silver_m_data_closed_deal d ON d.mql_id = q.mql_id
WHERE CAST(q.first_contact_date AS TIMESTAMP) >= {{from}} AND CAST(q.first_contact_date AS TIMESTAMP) < {{until}}
ORDER BY q.mql_id
