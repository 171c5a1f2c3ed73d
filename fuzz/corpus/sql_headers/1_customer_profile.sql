-- The latest profile per customer: a TABLE over the upsert topic, as in ksqlDB.
-- LATEST_BY = 'source_position': a change applies only when its (partition, offset) is newer
-- than the stored one, so the result does not depend on batching or replays.
-- NULLS = 'keep' overwrites with nulls; 'ignore' keeps the previous value of a null column
-- (ksqlDB's LATEST_BY_OFFSET default).
CREATE TABLE customer_profile
  WITH (KAFKA_TOPIC = 'dom.customer.profile.upsert.v1', KEY = 'customer_id',
        LATEST_BY = 'source_position', NULLS = 'keep')
AS SELECT customer_id, first_name, last_name, email, city, state, zip_code_prefix, signup_at
FROM profile_changes;
