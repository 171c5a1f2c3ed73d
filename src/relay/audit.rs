//! The attempt audit in `relay.event_attempts`, and the final status of each inbox row.
//! Written by the delivery workers before they commit their input offsets, idempotently
//! (`attempt_id`), so a re-processed batch writes nothing twice.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::delivery::Attempt;

/// The latest final status (delivered, failed or skipped) of each (event, destination) among
/// `events` that has one: a re-sent request for it is not sent again — except a failed one
/// that `replay-dlq` sends back.
pub async fn finished(c: &tokio_postgres::Client, events: &[i64]) -> Result<HashMap<(i64, String), String>, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = c
        .query(
            "SELECT DISTINCT ON (marketing_event_id, destination) marketing_event_id, destination, status FROM relay.event_attempts \
             WHERE marketing_event_id = ANY($1) AND status <> 'retrying' ORDER BY marketing_event_id, destination, attempted_at DESC, id DESC",
            &[&events],
        )
        .await?;
    Ok(rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect())
}

/// Record the attempts, then close the events whose every planned destination has ended, by
/// each destination's latest final attempt: `failed` if one failed, else `delivered` if one was
/// delivered, else `skipped` (a replayed delivery turns a failed event delivered).
pub async fn record(c: &tokio_postgres::Client, attempts: &[Attempt]) -> Result<(), tokio_postgres::Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = attempts.iter().map(Attempt::attempt_id).collect();
    let events: Vec<i64> = attempts.iter().map(|a| a.event_pk).collect();
    let dest: Vec<&str> = attempts.iter().map(|a| a.destination.as_str()).collect();
    let number: Vec<i32> = attempts.iter().map(|a| a.attempt_number).collect();
    let status: Vec<&str> = attempts.iter().map(|a| a.status.as_str()).collect();
    let code: Vec<Option<i32>> = attempts.iter().map(|a| a.status_code).collect();
    let latency: Vec<Option<i32>> = attempts.iter().map(|a| a.latency_ms).collect();
    let excerpt: Vec<Option<&str>> = attempts.iter().map(|a| a.response_excerpt.as_deref()).collect();
    let class: Vec<Option<&str>> = attempts.iter().map(|a| a.error_class.as_deref()).collect();
    let level: Vec<Option<&str>> = attempts.iter().map(|a| a.skipped_level.as_deref()).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = attempts.iter().map(|a| chrono::DateTime::from_timestamp_millis(a.attempted_at_ms).unwrap_or_default()).collect();
    let params: [&(dyn ToSql + Sync); 11] = [&ids, &events, &dest, &number, &status, &code, &latency, &excerpt, &class, &level, &at];
    c.execute(
        "INSERT INTO relay.event_attempts (attempt_id, marketing_event_id, destination, attempt_number, status, status_code, latency_ms, response_excerpt, error_class, skipped_level, attempted_at) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::text[], $6::int[], $7::int[], $8::text[], $9::text[], $10::text[], $11::timestamptz[]) \
         ON CONFLICT (attempt_id) DO NOTHING",
        &params,
    )
    .await?;
    let mut planned: Vec<(i64, i32)> = attempts.iter().filter(|a| a.status != super::delivery::Status::Retrying).map(|a| (a.event_pk, a.planned)).collect();
    planned.sort_unstable();
    planned.dedup();
    let (pks, counts): (Vec<i64>, Vec<i32>) = planned.into_iter().unzip();
    c.execute(
        "UPDATE relay.marketing_events m SET status = x.status, updated_at = now() FROM ( \
           SELECT a.marketing_event_id AS id, p.planned, count(*) AS finals, \
                  CASE WHEN bool_or(a.status = 'failed') THEN 'failed' WHEN bool_or(a.status = 'delivered') THEN 'delivered' ELSE 'skipped' END AS status \
           FROM (SELECT DISTINCT ON (marketing_event_id, destination) marketing_event_id, destination, status FROM relay.event_attempts \
                 WHERE marketing_event_id = ANY($1) AND status <> 'retrying' ORDER BY marketing_event_id, destination, attempted_at DESC, id DESC) a \
           JOIN unnest($1::bigint[], $2::int[]) AS p(id, planned) ON p.id = a.marketing_event_id \
           GROUP BY a.marketing_event_id, p.planned) x \
         WHERE m.id = x.id AND x.finals >= x.planned AND m.status IS DISTINCT FROM x.status",
        &[&pks, &counts],
    )
    .await?;
    Ok(())
}
