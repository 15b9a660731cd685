//! Group creation: many new transactions in one statement and one commit, each
//! with its `started` event. A saga is created only under the newest version of
//! its definition, so a start needs no read of its own to learn that version.

use std::time::SystemTime;

use deadpool_postgres::ClientWrapper;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_postgres::Statement;
use uuid::Uuid;

use super::json_text::JsonText;
use super::transactions::TransactionRow;
use super::Result;
use crate::machine::Millis;

/// A transaction about to be created, owned so that it can wait in a batch.
#[derive(Debug, Serialize)]
pub struct NewRow {
    pub id: Uuid,
    /// `saga` or `twopc`.
    pub kind: &'static str,
    /// The saga definition and the version believed to be its newest (sagas only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    pub state: &'static str,
    /// The request's input as JSON text: the same bytes its digest was taken of.
    pub input: Box<RawValue>,
    pub progress: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub request_digest: String,
    pub deadline_ms: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_ms: Option<Millis>,
    pub lease_ms: i64,
    pub actor: String,
    /// The caller's W3C trace context, when it sent a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl NewRow {
    /// The row this creation stored, as a read of it right after would return
    /// it, built from the creation itself: a start that answers at once needs
    /// no read of its own. `fence` and `created_at` are what the statement
    /// handed back ([`Inserted::Created`]).
    pub fn as_stored(&self, fence: i64, created_at: SystemTime) -> Result<TransactionRow> {
        Ok(TransactionRow {
            id: self.id,
            kind: self.kind.to_string(),
            definition: self.definition.clone(),
            version: self.version,
            state: self.state.to_string(),
            input: serde_json::from_str(self.input.get())
                .map_err(|e| super::Error::Corrupt(e.to_string()))?,
            progress: self.progress.clone(),
            reason: None,
            cancel_requested: false,
            deadline: Some(super::to_time(self.deadline_ms)),
            next_attempt_at: self.next_ms.map(super::to_time),
            created_at,
            updated_at: created_at,
            fence,
            traceparent: self.traceparent.clone(),
            tracestate: self.tracestate.clone(),
        })
    }
}

/// What became of one creation.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The transaction now exists, owned by the caller under this fence, stored
    /// at `created_at` (the database's clock).
    Created { fence: i64, created_at: SystemTime },
    /// The idempotency key was used before; `same_request` says whether with the same body.
    Existing { id: Uuid, same_request: bool },
    /// The saga's definition has a newer version than the one given: nothing was
    /// written; start again with the newest.
    StaleVersion,
}

/// Rows are inserted in idempotency-key order, so that two batches racing for
/// the same keys wait for each other instead of deadlocking. A saga row is
/// inserted only when no newer version of its definition exists; the statement's
/// snapshot decides, exactly as a read of `max(version)` just before would.
/// Its search terms (the operators' filters by step and URL) are its definition
/// version's, or for a 2PC transaction those of the branches it starts with.
/// Each row inserted gets its `started` event, chosen by id from the inserted
/// ids (the writer's sessions plan no hash join: a join of the two lists would
/// be a nested loop over both).
pub const CREATE_BATCH: &str = "
WITH x AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb)
        AS x(id uuid, kind text, definition text, version int, state text, input jsonb, progress jsonb,
             idempotency_key text, request_digest text, deadline_ms bigint, next_ms bigint, lease_ms bigint,
             actor text, traceparent text, tracestate text)),
t AS (
    INSERT INTO transactions (id, kind, definition, version, state, input, progress, idempotency_key,
        request_digest, deadline, next_attempt_at, owner, lease_until, fence, traceparent, tracestate,
        search_terms)
    SELECT x.id, x.kind, x.definition, x.version, x.state, x.input, x.progress, x.idempotency_key,
           x.request_digest, to_timestamp(x.deadline_ms / 1000.0), to_timestamp(x.next_ms / 1000.0), $2,
           now() + (x.lease_ms * interval '1 millisecond'), nextval('settle_fence'), x.traceparent, x.tracestate,
           CASE WHEN x.kind = 'saga'
                THEN coalesce((SELECT d.search_terms FROM saga_definitions d
                                WHERE d.name = x.definition AND d.version = x.version), '{}')
                ELSE coalesce(settle_branch_terms(x.progress), '{}') END
      FROM x
     WHERE x.kind <> 'saga' OR NOT EXISTS (
           SELECT 1 FROM saga_definitions d WHERE d.name = x.definition AND d.version > x.version)
     ORDER BY x.idempotency_key NULLS LAST, x.id
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, fence, created_at),
e AS (
    INSERT INTO events (transaction_id, kind, actor, detail)
    SELECT x.id, 'started', x.actor,
           jsonb_strip_nulls(jsonb_build_object('kind', x.kind, 'definition', x.definition, 'version', x.version))
      FROM x
     WHERE x.id = ANY(ARRAY(SELECT id FROM t)))
SELECT id, fence, created_at FROM t";

/// Creates every transaction it can in one statement (one commit), owned by
/// `owner`, and says per creation, in order, what became of it. `statement` is
/// [`CREATE_BATCH`] prepared on `client` (see [`super::batch::write`]).
pub async fn create(
    client: &ClientWrapper,
    statement: &Statement,
    owner: &str,
    rows: &[&NewRow],
) -> Result<Vec<Inserted>> {
    let created: std::collections::HashMap<Uuid, (i64, SystemTime)> = client
        .query(statement, &[&JsonText::of(rows)?, &owner])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    // Rows that were not inserted: their key was taken (by an earlier start,
    // perhaps in this very batch), or their definition has a newer version.
    let keys: Vec<&str> = rows
        .iter()
        .filter(|r| !created.contains_key(&r.id))
        .filter_map(|r| r.idempotency_key.as_deref())
        .collect();
    let mut existing = std::collections::HashMap::new();
    if !keys.is_empty() {
        let stmt = client
            .prepare_cached(
                "SELECT idempotency_key, id, request_digest FROM transactions WHERE idempotency_key = ANY($1)",
            )
            .await?;
        for row in client.query(&stmt, &[&keys]).await? {
            let key: String = row.get(0);
            existing.insert(key, (row.get::<_, Uuid>(1), row.get::<_, String>(2)));
        }
    }
    Ok(rows
        .iter()
        .map(|r| {
            if let Some(&(fence, created_at)) = created.get(&r.id) {
                return Inserted::Created { fence, created_at };
            }
            match r.idempotency_key.as_ref().and_then(|k| existing.get(k)) {
                Some((id, digest)) => Inserted::Existing {
                    id: *id,
                    same_request: *digest == r.request_digest,
                },
                None => Inserted::StaleVersion,
            }
        })
        .collect())
}
