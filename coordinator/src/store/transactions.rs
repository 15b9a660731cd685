//! Transaction rows (sagas and 2PC alike) once they exist (`store::create` makes
//! them): reads, lease renewal, recovery claims, release and cancel requests.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio_postgres::types::{Json, Type};
use uuid::Uuid;

use super::Result;

/// A timeline entry, appended in the same statement as the state it describes.
/// Absent values are left out of the statement's JSON (a missing key reads as NULL).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventRecord {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i32>,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

#[derive(Debug)]
pub enum Written {
    /// Durable. Carries whether a cancel has been requested meanwhile and, when
    /// the write put the transaction in a terminal state, the row as stored.
    Ok {
        cancel_requested: bool,
        finished: Option<Box<TransactionRow>>,
    },
    /// The fence no longer matches: another instance owns the transaction; stop.
    OwnershipLost,
}

/// A saga row as read back, for the API and for a new owner.
#[derive(Debug, Clone)]
pub struct TransactionRow {
    pub id: Uuid,
    /// `saga` or `twopc`.
    pub kind: String,
    /// The saga definition and version (sagas only).
    pub definition: Option<String>,
    pub version: Option<i32>,
    pub state: String,
    pub input: Value,
    /// The machine's state as stored: JSON text, parsed only into the machine
    /// that reads it (never into a `Value` tree first).
    pub progress: Box<RawValue>,
    pub reason: Option<String>,
    pub cancel_requested: bool,
    pub deadline: Option<SystemTime>,
    pub next_attempt_at: Option<SystemTime>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub fence: i64,
    /// The W3C trace context the transaction was started under, if any.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

pub(super) const COLUMNS: &str =
    "id, kind, definition, version, state, input, progress, reason, cancel_requested, \
     deadline, next_attempt_at, created_at, updated_at, fence, traceparent, tracestate";

impl TransactionRow {
    pub(super) fn from_row(row: &tokio_postgres::Row) -> Self {
        TransactionRow {
            id: row.get("id"),
            kind: row.get("kind"),
            definition: row.get("definition"),
            version: row.get("version"),
            state: row.get("state"),
            input: row.get("input"),
            progress: row.get::<_, Json<Box<RawValue>>>("progress").0,
            reason: row.get("reason"),
            cancel_requested: row.get("cancel_requested"),
            deadline: row.get("deadline"),
            next_attempt_at: row.get("next_attempt_at"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
            fence: row.get("fence"),
            traceparent: row.get("traceparent"),
            tracestate: row.get("tracestate"),
        }
    }
}

/// One transaction of any kind.
pub async fn get(pool: &Pool, id: Uuid) -> Result<Option<TransactionRow>> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!("SELECT {COLUMNS} FROM transactions WHERE id = $1"))
        .await?;
    Ok(client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|r| TransactionRow::from_row(&r)))
}

/// Takes over due work whose owner's lease has expired, using the database clock.
/// A stuck saga has no `next_attempt_at` and waits for an operator; a stuck 2PC
/// transaction keeps retrying its phase two, so it is claimed like any other.
/// Each claimed row gets a fresh fence, so the previous owner's writes now fail.
pub async fn claim_due(
    pool: &Pool,
    owner: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<TransactionRow>> {
    let client = pool.get().await?;
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE transactions
                SET owner = $1, fence = nextval('settle_fence'),
                    lease_until = now() + ($2::bigint * interval '1 millisecond')
              WHERE id IN (
                    SELECT id FROM transactions
                     WHERE state IN ('running', 'compensating', 'active', 'preparing', 'committing', 'aborting', 'stuck')
                       AND next_attempt_at <= now()
                       AND lease_until < now()
                       AND NOT paused
                     ORDER BY next_attempt_at
                     LIMIT $3
                     FOR UPDATE SKIP LOCKED)
            RETURNING {COLUMNS}"
        ))
        .await?;
    let lease_ms = lease.as_millis() as i64;
    let rows = client.query(&stmt, &[&owner, &lease_ms, &limit]).await?;
    Ok(rows.iter().map(TransactionRow::from_row).collect())
}

/// Takes a stuck saga for an operator action: nobody drives a stuck saga, so the
/// caller becomes its owner under a fresh fence. None when it is not stuck.
pub async fn take_stuck(
    pool: &Pool,
    id: Uuid,
    owner: &str,
    lease: Duration,
) -> Result<Option<TransactionRow>> {
    let client = pool.get().await?;
    let lease_ms = lease.as_millis() as i64;
    let row = client
        .query_opt(
            &format!(
                "UPDATE transactions
                    SET owner = $2, fence = nextval('settle_fence'),
                        lease_until = now() + ($3::bigint * interval '1 millisecond')
                  WHERE id = $1 AND kind = 'saga' AND state = 'stuck'
                RETURNING {COLUMNS}"
            ),
            &[&id, &owner, &lease_ms],
        )
        .await?;
    Ok(row.as_ref().map(TransactionRow::from_row))
}

/// Extends the leases of everything this instance drives in one statement.
/// Returns the ids still owned, each with its cancel flag; the rest were lost.
pub async fn renew(
    pool: &Pool,
    owned: &[(Uuid, i64)],
    lease: Duration,
) -> Result<Vec<(Uuid, bool)>> {
    if owned.is_empty() {
        return Ok(vec![]);
    }
    let client = pool.get().await?;
    // Planned per call and reached through the primary key row by row, like the
    // batched state writes (store::batch): a plan cached while the table was
    // small would scan it whole.
    let ids: Vec<Uuid> = owned.iter().map(|o| o.0).collect();
    let fences: Vec<i64> = owned.iter().map(|o| o.1).collect();
    let lease_ms = lease.as_millis() as i64;
    let rows = client
        .query_typed(
            "WITH x AS (SELECT * FROM unnest($1::uuid[], $2::int8[]) AS x(id, fence) ORDER BY id),
                  lk AS (SELECT x.id, x.fence FROM x CROSS JOIN LATERAL (
                             SELECT t.id FROM transactions t WHERE t.id = x.id AND t.fence = x.fence FOR UPDATE) l)
             UPDATE transactions t
                SET lease_until = now() + ($3::bigint * interval '1 millisecond')
               FROM lk
              WHERE t.id = ANY(ARRAY(SELECT id FROM lk)) AND t.id = lk.id AND t.fence = lk.fence
          RETURNING t.id, t.cancel_requested",
            &[
                (&ids, Type::UUID_ARRAY),
                (&fences, Type::INT8_ARRAY),
                (&lease_ms, Type::INT8),
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Gives a transaction back: any instance may claim it once `after` has passed.
pub async fn release(pool: &Pool, id: Uuid, fence: i64, after: Duration) -> Result<bool> {
    let client = pool.get().await?;
    let after_ms = after.as_millis() as i64;
    let n = client
        .execute(
            "UPDATE transactions
                SET owner = NULL, lease_until = now() + ($3::bigint * interval '1 millisecond') - interval '1 millisecond'
              WHERE id = $1 AND fence = $2",
            &[&id, &fence, &after_ms],
        )
        .await?;
    Ok(n == 1)
}

/// Records a cancel request on a running saga. It is a request, not a state
/// change: the owner (or whoever claims the saga next) turns it into compensation.
/// Returns the saga's state, or None when there is no such saga.
pub async fn request_cancel(pool: &Pool, id: Uuid, actor: &str) -> Result<Option<String>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "WITH t AS (
                UPDATE transactions
                   SET cancel_requested = true, next_attempt_at = LEAST(COALESCE(next_attempt_at, now()), now())
                 WHERE id = $1 AND kind = 'saga' AND state = 'running' AND NOT cancel_requested
                RETURNING id),
             e AS (INSERT INTO events (transaction_id, kind, actor) SELECT id, 'cancel_requested', $2 FROM t)
             SELECT state FROM transactions WHERE id = $1 AND kind = 'saga'",
            &[&id, &actor],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// The timeline of one transaction, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub at: String,
    pub kind: String,
    pub step: Option<String>,
    pub phase: Option<String>,
    pub attempt: Option<i32>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: Option<i32>,
    pub actor: String,
    pub detail: Option<Value>,
}

pub async fn events(pool: &Pool, id: Uuid) -> Result<Vec<StoredEvent>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT at, kind, step, phase, attempt, status_code, error, duration_ms, actor, detail
               FROM events WHERE transaction_id = $1 ORDER BY id",
            &[&id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| StoredEvent {
            at: super::rfc3339(r.get(0)),
            kind: r.get(1),
            step: r.get(2),
            phase: r.get(3),
            attempt: r.get(4),
            status_code: r.get(5),
            error: r.get(6),
            duration_ms: r.get(7),
            actor: r.get(8),
            detail: r.get(9),
        })
        .collect())
}
