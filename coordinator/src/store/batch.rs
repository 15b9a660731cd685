//! Group commit: the state writes of many transactions in one statement and one
//! Postgres commit. Each write is still fenced and still durable before its caller
//! acts on it; a write whose fence no longer matches comes back as ownership lost.
//! A write that makes a transaction stuck also queues its webhook notification.
//! A write sent again after an unknown outcome adds its events only once.

use deadpool_postgres::ClientWrapper;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_postgres::Statement;
use uuid::Uuid;

use super::json_text::JsonText;
use super::transactions::{EventRecord, TransactionRow, Written};
use super::Result;
use crate::machine::Millis;

/// One transaction's new state, owned so that it can wait in a batch.
#[derive(Debug, Clone, Serialize)]
pub struct StateWrite {
    pub id: Uuid,
    pub fence: i64,
    /// Names this write (`Uuid::now_v7()` when it is made). Retries send it again
    /// under the same id: one that finds its write already applied (the first
    /// attempt committed, but its answer was lost) adds no second copy of the
    /// write's events.
    pub write_id: Uuid,
    pub state: &'static str,
    /// The machine's state as JSON text (`Workflow::progress`), never a `Value` tree.
    pub progress: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `next_attempt_at` in milliseconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_ms: Option<Millis>,
    /// `next_ms` is now or earlier (a call is under way). A stored moment that is
    /// earlier still is kept: recovery treats both alike (due), and an unchanged
    /// indexed column lets Postgres update the row without touching its indexes.
    pub due_now: bool,
    pub lease_ms: i64,
    /// The timeline events this write records, sent with it in the statement.
    pub events: Vec<EventRecord>,
}

/// A write as the statement reads it (its events included). `finished`: the write puts
/// the transaction in a terminal state, which never changes again, so the
/// statement hands back the whole row as stored and whoever waits for the end
/// needs no read of its own. `notify`: the write records a `stuck` transition and
/// a webhook is configured, so it queues its notification.
#[derive(Debug, Serialize)]
struct WriteRow<'a> {
    #[serde(flatten)]
    write: &'a StateWrite,
    finished: bool,
    notify: bool,
}

/// One `UPDATE` of the batch's rows, found by `id = ANY($2)`, the batch's ids:
/// a probe of the primary key per write, whatever the table's statistics say (a
/// plan made while they said "empty" once walked the whole key for every batch:
/// `hot_path` in the end-to-end tests). The writer's own connections
/// ([`super::writer_pool`]) plan neither a sequential scan nor a hash or merge
/// join, so the update joins the writes, sorted by id, to their rows by nested
/// loop, and whichever side drives it (the sorted writes, or the primary key's
/// scan in key order) the rows are locked in id order: batches and lease
/// renewals, which touch overlapping sets of rows, never deadlock. A row whose
/// fence no longer matches (rechecked on the newest version when another
/// statement changed the row meanwhile) is not updated: its write is reported
/// as lost.
///
/// A write whose `write_id` is the row's `last_write` was applied before (a retry
/// after an unknown outcome): it lands again, the same state, without a second
/// copy of its events or webhook notification. The update keeps the id it
/// replaces in `prev_write` and hands it back, which is how it tells.
///
/// Each write carries its own events, inserted for the rows updated (one
/// function scan per row, no join), and the outbox insert reads the write's
/// `notify`.
pub const WRITE_BATCH: &str = "
WITH t AS (
    UPDATE transactions t
       SET state = x.state, progress = x.progress, reason = x.reason,
           next_attempt_at = CASE
               WHEN x.due_now AND t.next_attempt_at <= to_timestamp(x.next_ms / 1000.0) THEN t.next_attempt_at
               ELSE to_timestamp(x.next_ms / 1000.0) END,
           updated_at = now(),
           lease_until = now() + (x.lease_ms * interval '1 millisecond'),
           prev_write = t.last_write,
           last_write = x.write_id
      FROM (SELECT * FROM jsonb_to_recordset($1::jsonb)
                AS x(id uuid, fence bigint, write_id uuid, state text, progress jsonb, reason text, next_ms bigint,
                     due_now boolean, lease_ms bigint, finished boolean, notify boolean, events jsonb)
             ORDER BY id) x
     WHERE t.id = ANY($2::uuid[]) AND t.id = x.id AND t.fence = x.fence
 RETURNING t.id, t.cancel_requested, t.kind, t.definition, t.version, t.state, t.input, t.progress, t.reason,
           t.deadline, t.next_attempt_at, t.created_at, t.updated_at, t.fence, t.traceparent, t.tracestate,
           x.finished, x.notify, x.events, t.prev_write IS NOT DISTINCT FROM x.write_id AS replay),
e AS (
    INSERT INTO events (transaction_id, kind, step, phase, attempt, status_code, error, duration_ms, actor, detail)
    SELECT t.id, ev.kind, ev.step, ev.phase, ev.attempt, ev.status_code, ev.error, ev.duration_ms, ev.actor, ev.detail
      FROM t CROSS JOIN LATERAL jsonb_to_recordset(t.events) AS ev(kind text, step text, phase text, attempt int,
           status_code int, error text, duration_ms int, actor text, detail jsonb)
     WHERE NOT t.replay),
o AS (
    INSERT INTO webhook_outbox (transaction_id, event, payload)
    SELECT t.id, 'transaction.stuck', jsonb_build_object(
               'event', 'transaction.stuck', 'id', t.id, 'kind', t.kind, 'definition', t.definition,
               'state', t.state, 'reason', t.reason,
               'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))
      FROM t
     WHERE t.notify AND NOT t.replay)
SELECT id, cancel_requested, finished, kind, definition, version, state,
       CASE WHEN finished THEN input END AS input, CASE WHEN finished THEN progress END AS progress,
       reason, deadline, next_attempt_at, created_at, updated_at, fence, traceparent, tracestate
  FROM t";

/// Writes every state in one statement (one commit) and says, per write in order,
/// whether it landed or its fence was stale, with the stored row of each write
/// that finished its transaction. With `stuck_webhook`, a write that
/// records a `stuck` transition also queues its webhook notification in the
/// outbox, in the same statement: the notification exists exactly when the
/// stuck state is durable.
///
/// `statement` is [`WRITE_BATCH`] prepared on `client`: the writer prepares it
/// once per connection and keeps it, instead of looking it up by its text
/// (hashing some 2 KB of SQL) in the connection's statement cache per batch.
pub async fn write(
    client: &ClientWrapper,
    statement: &Statement,
    writes: &[&StateWrite],
    stuck_webhook: bool,
) -> Result<Vec<Written>> {
    let states: Vec<WriteRow> = writes
        .iter()
        .map(|&write| WriteRow {
            write,
            finished: crate::machine::FINISHED_STATES.contains(&write.state),
            notify: stuck_webhook
                && write.state == "stuck"
                && write.events.iter().any(|event| event.kind == "stuck"),
        })
        .collect();
    // Serialized straight from the writes: no intermediate JSON tree.
    let states = JsonText::of(&states)?;
    // The same ids again, as an array: the update's bound (see WRITE_BATCH).
    let ids: Vec<Uuid> = writes.iter().map(|w| w.id).collect();
    let rows = client.query(statement, &[&states, &ids]).await?;
    // Sorted by id and searched, rather than hashed: a batch holds at most a few
    // hundred rows, and SipHashing each id cost more than the search.
    let mut landed: Vec<(Uuid, bool, Option<Box<TransactionRow>>)> = rows
        .iter()
        .map(|r| {
            let finished = r
                .get::<_, bool>("finished")
                .then(|| Box::new(TransactionRow::from_row(r)));
            (r.get("id"), r.get("cancel_requested"), finished)
        })
        .collect();
    landed.sort_unstable_by_key(|(id, ..)| *id);
    Ok(writes
        .iter()
        .map(
            |w| match landed.binary_search_by_key(&w.id, |(id, ..)| *id) {
                Ok(at) => Written::Ok {
                    cancel_requested: landed[at].1,
                    finished: landed[at].2.take(),
                },
                Err(_) => Written::OwnershipLost,
            },
        )
        .collect())
}
