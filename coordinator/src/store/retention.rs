//! Retention: finished transactions older than the configured age are deleted in
//! small batches (their events and branches go with them), so no batch holds long
//! locks and in-flight work is never touched.

use std::time::Duration;

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::Result;

/// Deletes up to `batch` transactions that finished (and were created) longer than
/// `older_than` ago, with their timelines; returns how many.
///
/// Events carry no foreign key (migration 0008): the timelines are deleted here,
/// by a second statement of the same database transaction. Its snapshot is taken
/// after the transactions' rows are gone, so it sees every event committed for
/// them, and none can come later: events are only ever added for a row that the
/// adding statement updates or locks, which a deleted row no longer allows.
/// Branches still go by their foreign key's cascade.
pub async fn purge(pool: &Pool, older_than: Duration, batch: i64) -> Result<u64> {
    let mut client = pool.get().await?;
    let older_ms = older_than.as_millis() as i64;
    let tx = client.transaction().await?;
    let gone: Vec<Uuid> = tx
        .query(
            "DELETE FROM transactions WHERE id IN (
                SELECT id FROM transactions
                 WHERE state IN ('completed', 'compensated', 'committed', 'aborted', 'resolved')
                   AND created_at < now() - ($1::bigint * interval '1 millisecond')
                   AND updated_at < now() - ($1::bigint * interval '1 millisecond')
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id",
            &[&older_ms, &batch],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if !gone.is_empty() {
        tx.execute(
            "DELETE FROM events WHERE transaction_id = ANY($1)",
            &[&gone],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(gone.len() as u64)
}
