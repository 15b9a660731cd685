//! The operators' queries: a filtered, keyset-paginated list ordered by creation
//! time (which never changes, so pages stay stable while transactions move) and
//! counts per state.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use uuid::Uuid;

use super::transactions::{EventRecord, TransactionRow, COLUMNS};
use super::Result;

/// What to list. Every field narrows the list; `None` does not filter.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub kind: Option<String>,
    pub state: Option<String>,
    pub definition: Option<String>,
    pub version: Option<i32>,
    /// Created longer ago than this.
    pub older_than: Option<Duration>,
    /// Not finished, and created longer ago than this.
    pub in_flight_longer_than: Option<Duration>,
    pub created_after: Option<SystemTime>,
    pub created_before: Option<SystemTime>,
    pub updated_after: Option<SystemTime>,
    pub updated_before: Option<SystemTime>,
    /// Search terms every match carries (`step:NAME`, `url:PREFIX`; see migration 0004).
    pub terms: Vec<String>,
    /// Ids between these two (inclusive): an id prefix.
    pub id_range: Option<(Uuid, Uuid)>,
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
    pub paused: bool,
}

/// The list query up to its ORDER BY; `$14` are search terms every match carries.
macro_rules! list_query {
    () => {
        "
SELECT id, kind, definition, version, state, reason, owner, created_at, updated_at, next_attempt_at, paused
  FROM transactions
 WHERE ($1::text IS NULL OR kind = $1)
   AND ($2::text IS NULL OR state = $2)
   AND ($3::text IS NULL OR definition = $3)
   AND ($4::bigint IS NULL OR created_at < now() - ($4 * interval '1 millisecond'))
   AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
   AND ($8::int IS NULL OR version = $8)
   AND ($9::bigint IS NULL OR (state IN ('running', 'compensating', 'stuck', 'active', 'preparing', 'committing', 'aborting')
                               AND created_at < now() - ($9 * interval '1 millisecond')))
   AND ($10::timestamptz IS NULL OR created_at >= $10)
   AND ($11::timestamptz IS NULL OR created_at < $11)
   AND ($12::timestamptz IS NULL OR updated_at >= $12)
   AND ($13::timestamptz IS NULL OR updated_at < $13)
   AND (cardinality($14::text[]) = 0 OR search_terms @> $14)
   AND ($15::uuid IS NULL OR id BETWEEN $15 AND $16::uuid)
"
    };
}

/// Walks the creation-time index newest first: right unless the search terms are rare.
const LIST: &str = concat!(list_query!(), " ORDER BY created_at DESC, id DESC LIMIT $7");

/// For rare search terms: the same order, spelled so that it cannot come from the
/// creation-time index, which leaves the planner the GIN index and a top-N sort.
/// (Its estimate for a term outside its statistics is 0.5% of the table, so it
/// would otherwise walk the creation-time index past a million rows for a term
/// that a hundred transactions carry.)
const LIST_RARE_TERMS: &str = concat!(
    list_query!(),
    " ORDER BY created_at + interval '0 seconds' DESC, id DESC LIMIT $7"
);

/// Search terms carried by fewer transactions than this count as rare.
const RARE_TERMS: i64 = 10_000;

/// Whether fewer than [`RARE_TERMS`] transactions carry all these terms (a capped count).
async fn terms_are_rare(client: &deadpool_postgres::Client, terms: &[String]) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM transactions WHERE search_terms @> $1 LIMIT $2) x",
            &[&terms, &RARE_TERMS],
        )
        .await?;
    Ok(row.get::<_, i64>(0) < RARE_TERMS)
}

pub async fn list(pool: &Pool, filter: &Filter) -> Result<Vec<Listed>> {
    let client = pool.get().await?;
    let older_ms = filter.older_than.map(|d| d.as_millis() as i64);
    let (after_at, after_id) = match filter.after {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    let in_flight_ms = filter.in_flight_longer_than.map(|d| d.as_millis() as i64);
    let (low, high) = match filter.id_range {
        Some((low, high)) => (Some(low), Some(high)),
        None => (None, None),
    };
    let query = if !filter.terms.is_empty() && terms_are_rare(&client, &filter.terms).await? {
        LIST_RARE_TERMS
    } else {
        LIST
    };
    let rows = client
        .query(
            query,
            &[
                &filter.kind,
                &filter.state,
                &filter.definition,
                &older_ms,
                &after_at,
                &after_id,
                &filter.limit,
                &filter.version,
                &in_flight_ms,
                &filter.created_after,
                &filter.created_before,
                &filter.updated_after,
                &filter.updated_before,
                &filter.terms,
                &low,
                &high,
            ],
        )
        .await?;
    Ok(rows.iter().map(listed).collect())
}

/// Counts per state. In-flight states are always counted exactly (a small partial
/// index); finished states are counted exactly on small tables and estimated from
/// the planner's statistics on large ones, where counting would scan millions of
/// index entries on every page. Returns the counts and the states estimated.
pub async fn counts(pool: &Pool) -> Result<(BTreeMap<String, i64>, Vec<String>)> {
    let client = pool.get().await?;
    let stats = client
        .query_one(
            "SELECT c.reltuples::float8, s.most_common_vals::text::text[], s.most_common_freqs::float8[]
               FROM pg_class c
               LEFT JOIN pg_stats s ON s.schemaname = current_schema()
                    AND s.tablename = 'transactions' AND s.attname = 'state'
              WHERE c.oid = 'transactions'::regclass",
            &[],
        )
        .await?;
    let rows_estimate: f64 = stats.get(0);
    let common: Option<Vec<String>> = stats.get(1);
    let freqs: Option<Vec<f64>> = stats.get(2);
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    let mut estimated = Vec::new();
    let in_flight_only = rows_estimate > ESTIMATE_ABOVE_ROWS as f64;
    let sql = if in_flight_only {
        "SELECT state, count(*) FROM transactions WHERE state IN (
             'running', 'compensating', 'stuck', 'active', 'preparing', 'committing', 'aborting')
          GROUP BY state"
    } else {
        "SELECT state, count(*) FROM transactions GROUP BY state"
    };
    for row in client.query(sql, &[]).await? {
        counts.insert(row.get(0), row.get(1));
    }
    if in_flight_only {
        for (state, freq) in common
            .unwrap_or_default()
            .into_iter()
            .zip(freqs.unwrap_or_default())
        {
            if crate::machine::FINISHED_STATES.contains(&state.as_str()) {
                counts.insert(state.clone(), (freq * rows_estimate).round() as i64);
                estimated.push(state);
            }
        }
    }
    Ok((counts, estimated))
}

/// Above this many rows (by the planner's estimate), finished states are estimated.
const ESTIMATE_ABOVE_ROWS: i64 = 200_000;

/// One transaction's summary.
pub async fn one(pool: &Pool, id: Uuid) -> Result<Option<Listed>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT id, kind, definition, version, state, reason, owner, created_at, updated_at, next_attempt_at, paused
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
        paused: r.get(10),
    }
}

/// A transaction as an operator action sees it: the row and its `paused` flag.
pub async fn for_action(pool: &Pool, id: Uuid) -> Result<Option<(TransactionRow, bool)>> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS}, paused FROM transactions WHERE id = $1"),
            &[&id],
        )
        .await?;
    Ok(row.map(|r| (TransactionRow::from_row(&r), r.get("paused"))))
}

/// Takes a transaction over for an operator action, from whoever owned it under
/// `fence`: a fresh fence makes the previous owner's next write fail, so it stops.
/// `resume` also clears the pause and makes the transaction due at once, so that
/// recovery finishes the job if this instance dies before its first write.
/// None when the fence moved meanwhile (someone else acted first).
pub async fn take_over(
    pool: &Pool,
    id: Uuid,
    fence: i64,
    owner: &str,
    lease: Duration,
    resume: bool,
) -> Result<Option<i64>> {
    let client = pool.get().await?;
    let lease_ms = lease.as_millis() as i64;
    let row = client
        .query_opt(
            "UPDATE transactions
                SET owner = $3, fence = nextval('settle_fence'),
                    lease_until = now() + ($4::bigint * interval '1 millisecond'),
                    paused = paused AND NOT $5,
                    next_attempt_at = CASE WHEN $5 THEN now() ELSE next_attempt_at END
              WHERE id = $1 AND fence = $2
          RETURNING fence",
            &[&id, &fence, &owner, &lease_ms, &resume],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Pauses a transaction owned under `fence`: nobody owns it any more (the owner's
/// next write fails on the fresh fence), recovery leaves it alone, and the pause
/// is on its timeline. False when the fence moved meanwhile.
pub async fn pause(pool: &Pool, id: Uuid, fence: i64, event: &EventRecord) -> Result<bool> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "WITH t AS (
                UPDATE transactions
                   SET paused = true, owner = NULL, fence = nextval('settle_fence'),
                       lease_until = now(), next_attempt_at = NULL
                 WHERE id = $1 AND fence = $2
             RETURNING id)
             INSERT INTO events (transaction_id, kind, actor, detail)
             SELECT id, $3, $4, $5 FROM t",
            &[&id, &fence, &event.kind, &event.actor, &event.detail],
        )
        .await?;
    Ok(n == 1)
}

/// Appends one event to a transaction's timeline (no state changes with it). The
/// transaction's row is locked while the event is added: an event never outlives
/// its transaction (events carry no foreign key; see `retention::purge`), and one
/// for a transaction that is gone is not added.
pub async fn record_event(pool: &Pool, id: Uuid, event: &EventRecord) -> Result<()> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO events (transaction_id, kind, step, actor, detail)
             SELECT id, $2, $3, $4, $5 FROM transactions WHERE id = $1 FOR KEY SHARE",
            &[&id, &event.kind, &event.step, &event.actor, &event.detail],
        )
        .await?;
    Ok(())
}
