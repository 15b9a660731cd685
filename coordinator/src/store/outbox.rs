//! The webhook outbox: notifications queued in the same statement as the state
//! they announce (see `batch.rs`), claimed by deliverers with `FOR UPDATE SKIP
//! LOCKED` so that instances do not send the same one at once, deleted once delivered.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::Value;

use super::Result;

/// A notification claimed for delivery.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub payload: Value,
    /// Including this one.
    pub attempts: i32,
}

/// Claims due notifications: each is pushed `hold` into the future, so no other
/// instance picks it up while this one is sending it (an instance that dies
/// mid-delivery leaves it due again once `hold` has passed: at least once).
pub async fn claim(pool: &Pool, hold: Duration, limit: i64) -> Result<Vec<Claimed>> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(
            "UPDATE webhook_outbox
                SET attempts = attempts + 1,
                    next_attempt_at = now() + ($1::bigint * interval '1 millisecond')
              WHERE id IN (
                    SELECT id FROM webhook_outbox
                     WHERE next_attempt_at <= now()
                     ORDER BY next_attempt_at
                     LIMIT $2
                     FOR UPDATE SKIP LOCKED)
            RETURNING id, payload, attempts",
        )
        .await?;
    let hold_ms = hold.as_millis() as i64;
    let rows = client.query(&stmt, &[&hold_ms, &limit]).await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            id: r.get(0),
            payload: r.get(1),
            attempts: r.get(2),
        })
        .collect())
}

/// Delivered: the notification is gone.
pub async fn delivered(pool: &Pool, id: i64) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute("DELETE FROM webhook_outbox WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// Not delivered: try again after `retry_in`, keeping the reason for operators.
pub async fn failed(pool: &Pool, id: i64, retry_in: Duration, error: &str) -> Result<()> {
    let client = pool.get().await?;
    let retry_ms = retry_in.as_millis() as i64;
    client
        .execute(
            "UPDATE webhook_outbox
                SET next_attempt_at = now() + ($2::bigint * interval '1 millisecond'), last_error = $3
              WHERE id = $1",
            &[&id, &retry_ms, &error],
        )
        .await?;
    Ok(())
}
