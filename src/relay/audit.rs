//! The attempt audit in `relay.event_attempts`, and the final status of each inbox row.
//! Written by the delivery workers after their outputs (retries, dead letters, attempt records)
//! were acknowledged and before their input offsets commit, idempotently (`attempt_id`).

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::delivery::Attempt;

/// What the audit knows of one (event, destination).
#[derive(Debug, Default)]
pub struct Progress {
    /// Delivered or skipped in some round: nothing more to send.
    pub done: bool,
    /// The highest attempt number recorded, per round (`replay`).
    pub last_attempt: HashMap<i32, i32>,
}

/// The audit of each (event, destination) among `events`. A delivery request whose attempt the
/// audit already holds (same round, same or a later number) was made before: it is a re-sent
/// record — a CDC re-send, or a batch re-processed after a crash — and is not sent again. So a
/// chain of retries never forks, and nothing ended is sent twice.
pub async fn progress(c: &tokio_postgres::Client, events: &[i64]) -> Result<HashMap<(i64, String), Progress>, tokio_postgres::Error> {
    if events.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = c
        .query(
            "SELECT marketing_event_id, destination, replay, max(attempt_number), bool_or(status IN ('delivered', 'skipped')) FROM relay.event_attempts \
             WHERE marketing_event_id = ANY($1) GROUP BY 1, 2, 3",
            &[&events],
        )
        .await?;
    let mut out: HashMap<(i64, String), Progress> = HashMap::new();
    for r in rows {
        let p = out.entry((r.get(0), r.get(1))).or_default();
        p.done |= r.get::<_, bool>(4);
        p.last_attempt.insert(r.get(2), r.get(3));
    }
    Ok(out)
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
    let replay: Vec<i32> = attempts.iter().map(|a| a.replay).collect();
    let status: Vec<&str> = attempts.iter().map(|a| a.status.as_str()).collect();
    let code: Vec<Option<i32>> = attempts.iter().map(|a| a.status_code).collect();
    let latency: Vec<Option<i32>> = attempts.iter().map(|a| a.latency_ms).collect();
    let excerpt: Vec<Option<&str>> = attempts.iter().map(|a| a.response_excerpt.as_deref()).collect();
    let class: Vec<Option<&str>> = attempts.iter().map(|a| a.error_class.as_deref()).collect();
    let level: Vec<Option<&str>> = attempts.iter().map(|a| a.skipped_level.as_deref()).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = attempts.iter().map(|a| chrono::DateTime::from_timestamp_millis(a.attempted_at_ms).unwrap_or_default()).collect();
    let params: [&(dyn ToSql + Sync); 12] = [&ids, &events, &dest, &number, &status, &code, &latency, &excerpt, &class, &level, &at, &replay];
    c.execute(
        "INSERT INTO relay.event_attempts (attempt_id, marketing_event_id, destination, attempt_number, status, status_code, latency_ms, response_excerpt, error_class, skipped_level, attempted_at, replay) \
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::text[], $6::int[], $7::int[], $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::int[]) \
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
