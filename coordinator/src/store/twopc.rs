//! 2PC / TCC specifics: registering TCC branches while a transaction is active, and
//! closing an interactive transaction, which reads the branch list under the row
//! lock so that no branch can slip in after the decision.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::Value;
use uuid::Uuid;

use super::transactions::EventRecord;
use super::{to_time, Result};
use crate::machine::twopc::BranchSpec;
use crate::machine::Millis;

/// What a branch registration found.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    Added,
    /// The same branch (same name and URLs) was registered before: nothing to do.
    AlreadyThere,
    /// A different branch already uses this name.
    NameTaken,
    /// The transaction is no longer active (or is not a 2PC transaction); carries its state.
    NotActive(String),
    NotFound,
}

/// Adds a TCC branch while the transaction is `active`. The `FOR SHARE` lock
/// serializes against [`close`], which locks the row `FOR UPDATE`.
pub async fn add_branch(
    pool: &Pool,
    id: Uuid,
    branch: &BranchSpec,
    actor: &str,
) -> Result<Registered> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "WITH t AS (SELECT id FROM transactions WHERE id = $1 AND kind = 'twopc' AND state = 'active' FOR SHARE),
                  b AS (INSERT INTO branches (transaction_id, name, prepare_url, commit_url, abort_url, payload)
                        SELECT id, $2, $3, $4, $5, $6 FROM t
                        ON CONFLICT (transaction_id, name) DO NOTHING
                        RETURNING transaction_id),
                  e AS (INSERT INTO events (transaction_id, kind, step, actor)
                        SELECT transaction_id, 'branch_registered', $2, $7 FROM b)
             SELECT (SELECT count(*) FROM b) AS added, (SELECT count(*) FROM t) AS active",
            &[
                &id,
                &branch.name,
                &branch.prepare_url,
                &branch.commit_url,
                &branch.abort_url,
                &branch.payload,
                &actor,
            ],
        )
        .await?;
    let (added, active): (i64, i64) = row.map_or((0, 0), |r| (r.get(0), r.get(1)));
    if added == 1 {
        return Ok(Registered::Added);
    }
    if active == 1 {
        let existing = client
            .query_one(
                "SELECT prepare_url, commit_url, abort_url, payload FROM branches WHERE transaction_id = $1 AND name = $2",
                &[&id, &branch.name],
            )
            .await?;
        let same = existing.get::<_, Option<String>>(0) == branch.prepare_url
            && existing.get::<_, String>(1) == branch.commit_url
            && existing.get::<_, String>(2) == branch.abort_url
            && existing.get::<_, Value>(3) == branch.payload;
        return Ok(if same {
            Registered::AlreadyThere
        } else {
            Registered::NameTaken
        });
    }
    let state = client
        .query_opt(
            "SELECT state FROM transactions WHERE id = $1 AND kind = 'twopc'",
            &[&id],
        )
        .await?;
    Ok(match state {
        Some(r) => Registered::NotActive(r.get(0)),
        None => Registered::NotFound,
    })
}

/// The registered branches of an interactive transaction, in registration order.
pub async fn branches(pool: &Pool, id: Uuid) -> Result<Vec<BranchSpec>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT name, prepare_url, commit_url, abort_url, payload FROM branches WHERE transaction_id = $1 ORDER BY position",
            &[&id],
        )
        .await?;
    Ok(rows.iter().map(branch_of).collect())
}

fn branch_of(r: &tokio_postgres::Row) -> BranchSpec {
    BranchSpec {
        name: r.get(0),
        prepare_url: r.get(1),
        commit_url: r.get(2),
        abort_url: r.get(3),
        payload: r.get(4),
    }
}

/// The new state an interactive transaction closes into.
#[derive(Debug)]
pub struct ClosedState {
    pub state: &'static str,
    pub progress: Value,
    pub reason: Option<String>,
    pub next_attempt_at: Option<Millis>,
    pub events: Vec<EventRecord>,
}

#[derive(Debug)]
pub enum Closed<T> {
    /// Closed now; this instance owns it under `fence` and must drive it.
    Now {
        fence: i64,
        value: T,
        /// The stored W3C `traceparent` and `tracestate`, when the transaction was started with them.
        trace: (Option<String>, Option<String>),
    },
    /// It was closed before (or never was interactive): its state and progress.
    Already {
        state: String,
        progress: Value,
    },
    NotFound,
}

/// Closes an active interactive transaction in one database transaction: locks the
/// row, reads every registered branch, lets `decide` compute the new state, writes
/// it and takes ownership with a fresh fence; the branches it closed with become its
/// search terms (the operators' filters by step and URL). Branch registrations wait on the lock
/// and then find the transaction no longer active. A transaction started without a
/// trace context adopts `trace` (the closing request's `traceparent`, `tracestate`).
pub async fn close<T>(
    pool: &Pool,
    id: Uuid,
    owner: &str,
    lease: Duration,
    trace: (Option<&str>, Option<&str>),
    decide: impl FnOnce(Value, Vec<BranchSpec>) -> Option<(ClosedState, T)>,
) -> Result<Closed<T>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT state, progress, fence FROM transactions WHERE id = $1 AND kind = 'twopc' FOR UPDATE",
            &[&id],
        )
        .await?
    else {
        return Ok(Closed::NotFound);
    };
    let state: String = row.get(0);
    let progress: Value = row.get(1);
    let fence: i64 = row.get(2);
    if state != "active" {
        return Ok(Closed::Already { state, progress });
    }
    let rows = tx
        .query(
            "SELECT name, prepare_url, commit_url, abort_url, payload FROM branches WHERE transaction_id = $1 ORDER BY position",
            &[&id],
        )
        .await?;
    let branches = rows.iter().map(branch_of).collect();
    let Some((closed, value)) = decide(progress.clone(), branches) else {
        return Ok(Closed::Already { state, progress });
    };
    let events = serde_json::to_value(&closed.events).unwrap_or(Value::Array(vec![]));
    let lease_ms = lease.as_millis() as i64;
    let row = tx
        .query_one(
            "WITH t AS (
                UPDATE transactions
                   SET state = $3, progress = $4, reason = $5, next_attempt_at = $6, updated_at = now(),
                       owner = $7, fence = nextval('settle_fence'),
                       lease_until = now() + ($8::bigint * interval '1 millisecond'),
                       tracestate = CASE WHEN traceparent IS NULL THEN $11 ELSE tracestate END,
                       traceparent = COALESCE(traceparent, $10),
                       search_terms = CASE WHEN $3 <> 'active'
                                           THEN coalesce(settle_branch_terms($4), '{}') ELSE search_terms END
                 WHERE id = $1 AND fence = $2
                RETURNING id, fence, traceparent, tracestate),
             e AS (
                INSERT INTO events (transaction_id, kind, step, phase, attempt, status_code, error, duration_ms, actor, detail)
                SELECT t.id, x.kind, x.step, x.phase, x.attempt, x.status_code, x.error, x.duration_ms, x.actor, x.detail
                  FROM t, jsonb_to_recordset($9::jsonb) AS x(kind text, step text, phase text, attempt int,
                       status_code int, error text, duration_ms int, actor text, detail jsonb))
             SELECT fence, traceparent, tracestate FROM t",
            &[
                &id,
                &fence,
                &closed.state,
                &closed.progress,
                &closed.reason,
                &closed.next_attempt_at.map(to_time),
                &owner,
                &lease_ms,
                &events,
                &trace.0,
                &trace.1,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(Closed::Now {
        fence: row.get(0),
        value,
        trace: (row.get(1), row.get(2)),
    })
}
