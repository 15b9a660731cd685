//! The operators' queries: a filtered, keyset-paginated list ordered by creation
//! time (which never changes, so pages stay stable while transactions move) and
//! counts per state.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::Result;

/// What to list. Every field narrows the list; `None` does not filter.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub kind: Option<String>,
    pub state: Option<String>,
    pub definition: Option<String>,
    /// Created longer ago than this.
    pub older_than: Option<Duration>,
    /// Continue after this (created_at, id).
    pub after: Option<(SystemTime, Uuid)>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct Listed {
    pub id: Uuid,
    pub kind: String,
    pub definition: Option<String>,
    pub version: Option<i32>,
    pub state: String,
    pub reason: Option<String>,
    pub owner: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub next_attempt_at: Option<SystemTime>,
}

const LIST: &str = "
SELECT id, kind, definition, version, state, reason, owner, created_at, updated_at, next_attempt_at
  FROM transactions
 WHERE ($1::text IS NULL OR kind = $1)
   AND ($2::text IS NULL OR state = $2)
   AND ($3::text IS NULL OR definition = $3)
   AND ($4::bigint IS NULL OR created_at < now() - ($4 * interval '1 millisecond'))
   AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $7";

pub async fn list(pool: &Pool, filter: &Filter) -> Result<Vec<Listed>> {
    let client = pool.get().await?;
    let older_ms = filter.older_than.map(|d| d.as_millis() as i64);
    let (after_at, after_id) = match filter.after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    let rows = client
        .query(
            LIST,
            &[
                &filter.kind,
                &filter.state,
                &filter.definition,
                &older_ms,
                &after_at,
                &after_id,
                &filter.limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(listed).collect())
}

/// Transactions per state.
pub async fn counts(pool: &Pool) -> Result<BTreeMap<String, i64>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT state, count(*) FROM transactions GROUP BY state",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One transaction's summary.
pub async fn one(pool: &Pool, id: Uuid) -> Result<Option<Listed>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT id, kind, definition, version, state, reason, owner, created_at, updated_at, next_attempt_at
               FROM transactions WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(listed))
}

fn listed(r: &tokio_postgres::Row) -> Listed {
    Listed {
        id: r.get(0),
        kind: r.get(1),
        definition: r.get(2),
        version: r.get(3),
        state: r.get(4),
        reason: r.get(5),
        owner: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
        next_attempt_at: r.get(9),
    }
}
