//! The idempotency barrier over the participant's own Postgres (DESIGN.md §3, §4): a
//! `settle_barrier` row per (transaction, step, phase), written in the same local
//! transaction as the business effect, so duplicates, null compensations and hanging
//! actions are harmless. Saga steps use the phases `action` and `compensation`; 2PC
//! and TCC branches use `prepare`, `commit` and `abort` in the same table, with the
//! branch name in the `step` column.
//!
//! Concurrency: the primary key makes a concurrent action/compensation pair for the
//! same step serialize. The second `INSERT ... ON CONFLICT DO NOTHING` on the
//! `(transaction_id, step, 'action')` key waits for the first transaction to commit or
//! roll back, and then either conflicts (and reads the committed row) or inserts. That
//! is why every barrier transaction runs at READ COMMITTED: each statement sees what
//! the transaction it waited for committed. Prepare and abort pair up the same way.
//! A commit claims the prepare slot too (and backs out if it got it: the prepare never
//! ran); commit and abort of one branch then both lock the prepare row before looking
//! for each other's row, so a coordinator that sent both could never get both applied.

use serde_json::Value;
use tokio_postgres::{Client, GenericClient, IsolationLevel, Row, Transaction};
use uuid::Uuid;

use crate::participant::Reply;
use crate::protocol::{BranchCall, CallRequest};

/// The refusal a late action gets when its compensation has already been recorded.
pub const HANGING_ACTION: &str = "compensated before the action arrived";
/// The refusal a late prepare (or TCC Try) gets when its abort has already been recorded.
pub const HANGING_PREPARE: &str = "aborted before the prepare arrived";
/// The refusal of a commit whose prepare never ran or voted no: a protocol error.
pub const NOT_PREPARED: &str = "commit of a branch that was never prepared";
/// The refusal of a commit arriving after the branch was aborted: a protocol error.
pub const ALREADY_ABORTED: &str = "commit of a branch that was already aborted";
/// The refusal of an abort arriving after the branch was committed: a protocol error.
pub const ALREADY_COMMITTED: &str = "abort of a branch that was already committed";

/// Why the barrier could not settle a call. Every variant is worth a retry by the
/// coordinator except [`Error::PhaseMismatch`] and [`Error::InvalidSchema`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schema name is not a plain lower-case SQL identifier.
    #[error("{0:?} is not a plain schema name (lower-case letters, digits, _; at most 63)")]
    InvalidSchema(String),
    /// An endpoint got a call for another phase (an action endpoint a compensation,
    /// a commit endpoint an abort, ...).
    #[error("the {endpoint} endpoint got a {got} call")]
    PhaseMismatch {
        endpoint: &'static str,
        got: &'static str,
    },
    /// The barrier's own SQL failed.
    #[error("barrier database access failed")]
    Db(#[from] tokio_postgres::Error),
    /// The business effect failed; nothing was recorded, so a retry runs it again.
    #[error("the business effect failed")]
    Effect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored row holds a status the barrier never writes.
    #[error("the barrier row for {transaction_id}:{step}:{phase} holds status {status:?}")]
    CorruptRecord {
        transaction_id: Uuid,
        step: String,
        phase: &'static str,
        status: Option<i16>,
    },
}

/// Shorthand for barrier results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The calls of one kind of transaction, by the names the `phase` column stores.
#[derive(Debug, Clone, Copy)]
struct Calls {
    /// The call that does the work: a saga action, a 2PC prepare (TCC Try).
    forward: &'static str,
    /// The call that undoes it: a compensation, a 2PC abort (TCC Cancel).
    undo: &'static str,
    /// The call that makes the work final, if there is one: 2PC commit (TCC Confirm).
    finish: Option<&'static str>,
    /// The refusal of a forward call arriving after its undo.
    hanging: &'static str,
}

const SAGA: Calls = Calls {
    forward: "action",
    undo: "compensation",
    finish: None,
    hanging: HANGING_ACTION,
};

/// The phase that makes a prepared 2PC branch final.
const COMMIT: &str = "commit";

const TWO_PHASE: Calls = Calls {
    forward: "prepare",
    undo: "abort",
    finish: Some(COMMIT),
    hanging: HANGING_PREPARE,
};

/// The barrier for one schema's `settle_barrier` table.
///
/// ```no_run
/// use settle_participant::barrier::Barrier;
/// use settle_participant::participant::{ParticipantCall, Reply};
///
/// async fn charge(
///     barrier: &Barrier,
///     db: &mut tokio_postgres::Client,
///     call: ParticipantCall,
/// ) -> Result<Reply, settle_participant::barrier::Error> {
///     let id = call.call.transaction_id;
///     barrier
///         .action(db, &call.call, async |tx| {
///             tx.execute("INSERT INTO payments.charges (transaction_id) VALUES ($1)", &[&id])
///                 .await?;
///             Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::json!({ "charge_id": id })))
///         })
///         .await
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Barrier {
    schema: String,
    insert: String,
    select: String,
    select_for_update: String,
    record: String,
}

/// True for a plain lower-case SQL identifier, safe to splice into SQL unquoted.
pub(crate) fn plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Barrier {
    /// A barrier on `{schema}.settle_barrier`. The schema must be a plain lower-case
    /// identifier, since it is spliced into the SQL.
    ///
    /// ```
    /// use settle_participant::barrier::Barrier;
    /// assert!(Barrier::new("payments").is_ok());
    /// assert!(Barrier::new("payments; DROP TABLE x").is_err());
    /// ```
    pub fn new(schema: &str) -> Result<Self> {
        if !plain_identifier(schema) {
            return Err(Error::InvalidSchema(schema.to_owned()));
        }
        let table = format!("{schema}.settle_barrier");
        let select = format!(
            "SELECT origin, status, body FROM {table} \
             WHERE transaction_id = $1 AND step = $2 AND phase = $3"
        );
        Ok(Barrier {
            schema: schema.to_owned(),
            insert: format!(
                "INSERT INTO {table} (transaction_id, step, phase, origin) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING"
            ),
            select_for_update: format!("{select} FOR UPDATE"),
            select,
            record: format!(
                "UPDATE {table} SET status = $4, body = $5 \
                 WHERE transaction_id = $1 AND step = $2 AND phase = $3"
            ),
        })
    }

    /// The schema this barrier lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// SQL creating the schema and its `settle_barrier` table if they are missing.
    /// An advisory lock keeps concurrent set-ups from racing on the catalog.
    ///
    /// ```
    /// let sql = settle_participant::barrier::Barrier::new("inventory").unwrap().create_table_sql();
    /// assert!(sql.contains("CREATE TABLE IF NOT EXISTS inventory.settle_barrier"));
    /// ```
    pub fn create_table_sql(&self) -> String {
        let schema = &self.schema;
        format!(
            "SELECT pg_advisory_xact_lock(hashtext('settle_barrier:{schema}'));
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.settle_barrier (
    transaction_id uuid NOT NULL,
    step text NOT NULL,
    phase text NOT NULL
        CHECK (phase IN ('action', 'compensation', 'prepare', 'commit', 'abort')),
    origin text NOT NULL
        CHECK (origin IN ('action', 'compensation', 'prepare', 'commit', 'abort')),
    status smallint,
    body jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, step, phase)
);"
        )
    }

    /// Creates the schema and the barrier table if they are missing. Works on a
    /// `tokio_postgres::Client` or inside a `Transaction`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let (client, connection) =
    ///     tokio_postgres::connect("host=127.0.0.1 user=postgres", tokio_postgres::NoTls).await?;
    /// tokio::spawn(connection);
    /// settle_participant::barrier::Barrier::new("payments")?.ensure_table(&client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ensure_table<C: GenericClient>(&self, client: &C) -> Result<()> {
        client.batch_execute(&self.create_table_sql()).await?;
        Ok(())
    }

    /// Runs an action's `effect` at most once per (transaction, step), in one local
    /// transaction with its barrier row.
    ///
    /// - A duplicate gets the first call's stored reply without running `effect`.
    /// - An action whose compensation was recorded first is refused with
    ///   [`HANGING_ACTION`] and does nothing.
    /// - `Done` commits the effect; `Refuse`/`Invalid` roll the effect back but record
    ///   the refusal; `InProgress`/`Retry` and an `Err` record nothing, so the next call
    ///   runs `effect` again.
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, call: settle_participant::protocol::CallRequest)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let reply = Barrier::new("inventory")?
    ///     .action(db, &call, async |tx| {
    ///         let moved = tx
    ///             .execute("UPDATE inventory.stock SET available = available - 1 WHERE sku = 'widget' AND available > 0", &[])
    ///             .await?;
    ///         Ok::<_, tokio_postgres::Error>(if moved == 1 {
    ///             Reply::Done(serde_json::json!({ "reserved": 1 }))
    ///         } else {
    ///             Reply::Refuse("out of stock".into())
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn action<F, E>(
        &self,
        client: &mut Client,
        call: &CallRequest,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        expect_phase(SAGA.forward, call.phase.as_str())?;
        self.forward(client, &Key::step(call), SAGA, effect).await
    }

    /// Runs a compensation's `effect` at most once per (transaction, step), in one
    /// local transaction with its barrier row.
    ///
    /// - If the action never ran, or was refused, this is a null compensation: it is
    ///   recorded (so a late action is refused) and answers `Done(null)` without
    ///   running `effect`.
    /// - A duplicate gets the first call's stored reply without running `effect`.
    /// - Otherwise `effect` runs with the same outcome rules as [`Barrier::action`].
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, call: settle_participant::protocol::CallRequest)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let id = call.transaction_id;
    /// let reply = Barrier::new("payments")?
    ///     .compensation(db, &call, async |tx| {
    ///         tx.execute("UPDATE payments.charges SET refunded = true WHERE transaction_id = $1", &[&id])
    ///             .await?;
    ///         Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::json!({ "refunded": true })))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn compensation<F, E>(
        &self,
        client: &mut Client,
        call: &CallRequest,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        expect_phase(SAGA.undo, call.phase.as_str())?;
        self.undo(client, &Key::step(call), SAGA, effect).await
    }

    /// Runs a 2PC prepare's `effect` at most once per (transaction, branch), in one
    /// local transaction with its barrier row: the barrier counterpart of
    /// [`Barrier::action`]. `Done` is a yes vote, `Refuse`/`Invalid` a no vote.
    ///
    /// - A duplicate gets the first call's stored vote without running `effect`.
    /// - A prepare whose abort was recorded first is refused with [`HANGING_PREPARE`]
    ///   and does nothing.
    ///
    /// The effect commits locally at once, so it should only reserve (freeze funds,
    /// hold stock) what [`Barrier::commit`] makes final and [`Barrier::abort`] releases.
    /// For a prepare that keeps the work itself uncommitted, see [`crate::xa`].
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, call: settle_participant::protocol::BranchCall)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let id = call.transaction_id;
    /// let reply = Barrier::new("wallet")?
    ///     .prepare(db, &call, async |tx| {
    ///         let held = tx
    ///             .execute(
    ///                 "UPDATE wallet.accounts SET frozen = frozen + 100 WHERE id = 'alice' AND balance - frozen >= 100",
    ///                 &[],
    ///             )
    ///             .await?;
    ///         Ok::<_, tokio_postgres::Error>(if held == 1 {
    ///             Reply::Done(serde_json::json!({ "hold": id }))
    ///         } else {
    ///             Reply::Refuse("insufficient funds".into())
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn prepare<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        expect_phase(TWO_PHASE.forward, call.phase.as_str())?;
        self.forward(client, &Key::branch(call), TWO_PHASE, effect)
            .await
    }

    /// Runs a 2PC commit's `effect` at most once per (transaction, branch), in one
    /// local transaction with its barrier row.
    ///
    /// - A duplicate gets the first call's stored reply without running `effect`.
    /// - A commit whose prepare never ran, or voted no, is a protocol error: it is
    ///   refused with [`NOT_PREPARED`], and nothing is recorded.
    /// - A commit after the branch's abort is refused with [`ALREADY_ABORTED`], and
    ///   nothing is recorded.
    /// - Otherwise `effect` runs with the same outcome rules as [`Barrier::action`].
    ///   The coordinator retries a commit until it gets a 2xx, so the effect should
    ///   not refuse: a refusal is recorded, and the branch ends up stuck for an operator.
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, call: settle_participant::protocol::BranchCall)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let reply = Barrier::new("wallet")?
    ///     .commit(db, &call, async |tx| {
    ///         tx.execute(
    ///             "UPDATE wallet.accounts SET frozen = frozen - 100, balance = balance - 100 WHERE id = 'alice'",
    ///             &[],
    ///         )
    ///         .await?;
    ///         Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::Value::Null))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn commit<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        expect_phase(COMMIT, call.phase.as_str())?;
        self.finish(client, &Key::branch(call), TWO_PHASE, COMMIT, effect)
            .await
    }

    /// Runs a 2PC abort's `effect` at most once per (transaction, branch): the barrier
    /// counterpart of [`Barrier::compensation`].
    ///
    /// - If the prepare never ran, or voted no, this is a null abort: it is recorded
    ///   (so a late prepare is refused with [`HANGING_PREPARE`]) and answers
    ///   `Done(null)` without running `effect`.
    /// - A duplicate gets the first call's stored reply without running `effect`.
    /// - An abort after the branch's commit is refused with [`ALREADY_COMMITTED`], and
    ///   nothing is recorded.
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, call: settle_participant::protocol::BranchCall)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let reply = Barrier::new("wallet")?
    ///     .abort(db, &call, async |tx| {
    ///         tx.execute("UPDATE wallet.accounts SET frozen = frozen - 100 WHERE id = 'alice'", &[])
    ///             .await?;
    ///         Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::Value::Null))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn abort<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        expect_phase(TWO_PHASE.undo, call.phase.as_str())?;
        self.undo(client, &Key::branch(call), TWO_PHASE, effect)
            .await
    }

    /// TCC Try: [`Barrier::prepare`] under its TCC name. The service calls it itself,
    /// with a [`BranchCall`] of phase `prepare` that it builds, around registering its
    /// branch with the coordinator. Trying first and registering second leaves a Try
    /// that nobody cancels if the service dies in between; registering first is safe
    /// too, since a Cancel that overtakes the Try is recorded as a null cancel and the
    /// late Try is refused with [`HANGING_PREPARE`].
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, transaction_id: uuid::Uuid)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::protocol::{BranchCall, BranchPhase};
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let call = BranchCall {
    ///     transaction_id,
    ///     branch: "hold-seat".into(),
    ///     phase: BranchPhase::Prepare,
    ///     attempt: 1,
    ///     payload: serde_json::json!({ "seat": "12A" }),
    /// };
    /// let reply = Barrier::new("seats")?
    ///     .try_(db, &call, async |tx| {
    ///         tx.execute("UPDATE seats.seats SET held_by = $1 WHERE seat = '12A' AND held_by IS NULL", &[&transaction_id])
    ///             .await?;
    ///         Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::Value::Null))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn try_<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.prepare(client, call, effect).await
    }

    /// TCC Confirm: [`Barrier::commit`] under its TCC name, for the branch's
    /// `commit_url`.
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, call: settle_participant::protocol::BranchCall)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let id = call.transaction_id;
    /// let reply = Barrier::new("seats")?
    ///     .confirm(db, &call, async |tx| {
    ///         tx.execute("UPDATE seats.seats SET sold = true WHERE held_by = $1", &[&id]).await?;
    ///         Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::Value::Null))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn confirm<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.commit(client, call, effect).await
    }

    /// TCC Cancel: [`Barrier::abort`] under its TCC name, for the branch's
    /// `abort_url`; a Cancel whose Try never ran is a null cancel.
    ///
    /// ```no_run
    /// # async fn run(db: &mut tokio_postgres::Client, call: settle_participant::protocol::BranchCall)
    /// # -> Result<(), settle_participant::barrier::Error> {
    /// use settle_participant::{barrier::Barrier, participant::Reply};
    /// let id = call.transaction_id;
    /// let reply = Barrier::new("seats")?
    ///     .cancel(db, &call, async |tx| {
    ///         tx.execute("UPDATE seats.seats SET held_by = NULL WHERE held_by = $1", &[&id]).await?;
    ///         Ok::<_, tokio_postgres::Error>(Reply::Done(serde_json::Value::Null))
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.abort(client, call, effect).await
    }

    /// An action or a prepare: runs `effect` unless the call is a duplicate or comes
    /// after its undo.
    async fn forward<F, E>(
        &self,
        client: &mut Client,
        key: &Key<'_>,
        calls: Calls,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tx = begin(client).await?;
        let inserted = self.insert(&tx, key, calls.forward, calls.forward).await?;
        if !inserted {
            let stored = self.stored(&tx, key, calls.forward).await?;
            tx.commit().await?;
            if stored.origin == calls.undo {
                tracing::info!(
                    transaction_id = %key.id,
                    step = key.step,
                    phase = calls.forward,
                    "refused a hanging call"
                );
                return Ok(Reply::Refuse(calls.hanging.to_owned()));
            }
            return stored.reply(key, calls.forward);
        }
        self.run(tx, key, calls.forward, effect).await
    }

    /// A compensation or an abort: runs `effect` when the forward call's work is there
    /// to undo, records a null undo when it is not.
    async fn undo<F, E>(
        &self,
        client: &mut Client,
        key: &Key<'_>,
        calls: Calls,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tx = begin(client).await?;
        // Claims the forward slot first: a forward call arriving later sees this
        // origin and is refused, and one in flight makes this statement wait for its
        // outcome.
        let forward_never_ran = self.insert(&tx, key, calls.forward, calls.undo).await?;
        let fresh = self.insert(&tx, key, calls.undo, calls.undo).await?;
        if !fresh {
            let stored = self.stored(&tx, key, calls.undo).await?;
            tx.commit().await?;
            return stored.reply(key, calls.undo);
        }
        let null = forward_never_ran
            || {
                let forward = match calls.finish {
                    None => self.stored(&tx, key, calls.forward).await?,
                    Some(finish) => {
                        // The lock orders this call after a finish call in flight, which
                        // locks the same row; its row is then visible here.
                        let forward = self.stored_for_update(&tx, key, calls.forward).await?;
                        if self.find(&tx, key, finish).await?.is_some() {
                            tx.rollback().await?;
                            tracing::warn!(transaction_id = %key.id, step = key.step, "refused an abort after commit");
                            return Ok(Reply::Refuse(ALREADY_COMMITTED.to_owned()));
                        }
                        forward
                    }
                };
                forward.origin == calls.undo || matches!(forward.status, Some(409 | 422))
            };
        if null {
            self.record(&tx, key, calls.undo, &Reply::Done(Value::Null))
                .await?;
            tx.commit().await?;
            tracing::info!(transaction_id = %key.id, step = key.step, phase = calls.undo, "null undo");
            return Ok(Reply::Done(Value::Null));
        }
        self.run(tx, key, calls.undo, effect).await
    }

    /// A commit (the `finish` phase of `calls`): runs `effect` when the prepare voted
    /// yes and no abort came first.
    async fn finish<F, E>(
        &self,
        client: &mut Client,
        key: &Key<'_>,
        calls: Calls,
        finish: &'static str,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tx = begin(client).await?;
        if !self.insert(&tx, key, finish, finish).await? {
            let stored = self.stored(&tx, key, finish).await?;
            tx.commit().await?;
            return stored.reply(key, finish);
        }
        // Claiming the forward slot waits for a forward call in flight; getting it
        // means the forward call never ran, and the rollback below leaves no trace.
        let refusal = if self.insert(&tx, key, calls.forward, finish).await? {
            Some(NOT_PREPARED)
        } else {
            let forward = self.stored_for_update(&tx, key, calls.forward).await?;
            if forward.origin == calls.undo {
                Some(ALREADY_ABORTED)
            } else {
                match forward.status {
                    Some(200) if self.find(&tx, key, calls.undo).await?.is_some() => {
                        Some(ALREADY_ABORTED)
                    }
                    Some(200) => None,
                    Some(409 | 422) => Some(NOT_PREPARED),
                    status => {
                        return Err(Error::CorruptRecord {
                            transaction_id: key.id,
                            step: key.step.to_owned(),
                            phase: calls.forward,
                            status,
                        })
                    }
                }
            }
        };
        if let Some(reason) = refusal {
            tx.rollback().await?;
            tracing::warn!(transaction_id = %key.id, step = key.step, reason, "refused a commit");
            return Ok(Reply::Refuse(reason.to_owned()));
        }
        self.run(tx, key, finish, effect).await
    }

    /// Runs `effect` in a savepoint of `tx`, whose barrier row for `phase` is fresh,
    /// and settles the transaction according to the reply.
    async fn run<F, E>(
        &self,
        mut tx: Transaction<'_>,
        key: &Key<'_>,
        phase: &'static str,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Reply, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The savepoint lets a refusal undo the business writes (even a failed
        // statement) while keeping the barrier row that records the refusal.
        let outcome = {
            let savepoint = tx.savepoint("settle_barrier_effect").await?;
            match effect(&savepoint).await {
                Ok(reply @ Reply::Done(_)) => {
                    savepoint.commit().await?;
                    Ok(reply)
                }
                Ok(reply) => {
                    savepoint.rollback().await?;
                    Ok(reply)
                }
                Err(error) => Err(error.into()),
            }
        };
        match outcome {
            Ok(reply @ (Reply::Done(_) | Reply::Refuse(_) | Reply::Invalid(_))) => {
                self.record(&tx, key, phase, &reply).await?;
                tx.commit().await?;
                Ok(reply)
            }
            Ok(reply @ (Reply::InProgress | Reply::Retry(_))) => {
                tx.rollback().await?;
                Ok(reply)
            }
            Err(error) => {
                if let Err(rollback) = tx.rollback().await {
                    // The connection is likely gone; the server rolls back on its own.
                    tracing::warn!(error = %rollback, "rolling back after a failed effect");
                }
                Err(Error::Effect(error))
            }
        }
    }

    async fn insert(
        &self,
        tx: &Transaction<'_>,
        key: &Key<'_>,
        phase: &'static str,
        origin: &'static str,
    ) -> Result<bool> {
        let rows = tx
            .execute(&self.insert, &[&key.id, &key.step, &phase, &origin])
            .await?;
        Ok(rows == 1)
    }

    /// The row for `phase`, which must exist.
    async fn stored(
        &self,
        tx: &Transaction<'_>,
        key: &Key<'_>,
        phase: &'static str,
    ) -> Result<Stored> {
        let row = tx
            .query_one(&self.select, &[&key.id, &key.step, &phase])
            .await?;
        Stored::from_row(&row)
    }

    /// The row for `phase`, which must exist, locked until `tx` ends.
    async fn stored_for_update(
        &self,
        tx: &Transaction<'_>,
        key: &Key<'_>,
        phase: &'static str,
    ) -> Result<Stored> {
        let row = tx
            .query_one(&self.select_for_update, &[&key.id, &key.step, &phase])
            .await?;
        Stored::from_row(&row)
    }

    /// The row for `phase`, if there is one.
    async fn find(
        &self,
        tx: &Transaction<'_>,
        key: &Key<'_>,
        phase: &'static str,
    ) -> Result<Option<Stored>> {
        let row = tx
            .query_opt(&self.select, &[&key.id, &key.step, &phase])
            .await?;
        row.as_ref().map(Stored::from_row).transpose()
    }

    async fn record(
        &self,
        tx: &Transaction<'_>,
        key: &Key<'_>,
        phase: &'static str,
        reply: &Reply,
    ) -> Result<()> {
        let (status, body): (i16, Value) = match reply {
            Reply::Done(output) => (200, output.clone()),
            Reply::Refuse(message) => (409, Value::String(message.clone())),
            Reply::Invalid(message) => (422, Value::String(message.clone())),
            // Never recorded: `run` rolls these back.
            Reply::InProgress | Reply::Retry(_) => return Ok(()),
        };
        tx.execute(&self.record, &[&key.id, &key.step, &phase, &status, &body])
            .await?;
        Ok(())
    }
}

/// The (transaction, step or branch) a call is about.
struct Key<'a> {
    id: Uuid,
    step: &'a str,
}

impl<'a> Key<'a> {
    fn step(call: &'a CallRequest) -> Self {
        Key {
            id: call.transaction_id,
            step: &call.step,
        }
    }

    fn branch(call: &'a BranchCall) -> Self {
        Key {
            id: call.transaction_id,
            step: &call.branch,
        }
    }
}

/// A barrier row as read back.
struct Stored {
    origin: String,
    status: Option<i16>,
    body: Option<Value>,
}

impl Stored {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(Stored {
            origin: row.try_get(0)?,
            status: row.try_get(1)?,
            body: row.try_get(2)?,
        })
    }

    /// The reply the first call got, rebuilt from the row.
    fn reply(self, key: &Key<'_>, phase: &'static str) -> Result<Reply> {
        let message = |body: Option<Value>| match body {
            Some(Value::String(message)) => message,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        match self.status {
            Some(200) => Ok(Reply::Done(self.body.unwrap_or(Value::Null))),
            Some(409) => Ok(Reply::Refuse(message(self.body))),
            Some(422) => Ok(Reply::Invalid(message(self.body))),
            status => Err(Error::CorruptRecord {
                transaction_id: key.id,
                step: key.step.to_owned(),
                phase,
                status,
            }),
        }
    }
}

fn expect_phase(endpoint: &'static str, got: &'static str) -> Result<()> {
    if endpoint == got {
        Ok(())
    } else {
        Err(Error::PhaseMismatch { endpoint, got })
    }
}

async fn begin(client: &mut Client) -> Result<Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BranchPhase, Phase};

    #[test]
    fn the_phase_column_spells_phases_as_the_wire_does() {
        assert_eq!(SAGA.forward, Phase::Action.as_str());
        assert_eq!(SAGA.undo, Phase::Compensation.as_str());
        assert_eq!(TWO_PHASE.forward, BranchPhase::Prepare.as_str());
        assert_eq!(TWO_PHASE.finish, Some(BranchPhase::Commit.as_str()));
        assert_eq!(TWO_PHASE.undo, BranchPhase::Abort.as_str());
    }
}
