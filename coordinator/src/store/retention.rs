//! Retention: finished transactions older than the configured age are deleted in
//! small batches (their events and branches go with them), so no batch holds long
//! locks and in-flight work is never touched.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::Result;

/// Deletes up to `batch` transactions that finished (and were created) longer than
/// `older_than` ago; returns how many.
pub async fn purge(pool: &Pool, older_than: Duration, batch: i64) -> Result<u64> {
    let client = pool.get().await?;
    let older_ms = older_than.as_millis() as i64;
    let n = client
        .execute(
            "DELETE FROM transactions WHERE id IN (
                SELECT id FROM transactions
                 WHERE state IN ('completed', 'compensated', 'committed', 'aborted', 'resolved')
                   AND created_at < now() - ($1::bigint * interval '1 millisecond')
                   AND updated_at < now() - ($1::bigint * interval '1 millisecond')
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
            &[&older_ms, &batch],
        )
        .await?;
    Ok(n)
}
