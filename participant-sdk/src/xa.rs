//! An XA-style 2PC participant on the participant's own Postgres (DESIGN.md §4):
//! prepare runs the business effect in a local transaction and ends it with
//! `PREPARE TRANSACTION '<gid>'` instead of `COMMIT`; commit is `COMMIT PREPARED`,
//! abort is `ROLLBACK PREPARED`. A prepared transaction lives in Postgres, not in the
//! participant process: it survives a participant crash and a Postgres restart, keeps
//! its row locks, and waits for the coordinator's decision.
//!
//! The server needs `max_prepared_transactions > 0` (the default is 0);
//! [`XaParticipant::ensure_table`] refuses to set up on a server without it.
//!
//! # Transaction ids
//!
//! The gid is `settle:{transaction_id}:{branch}`. Gids are string literals in SQL and
//! unique across the whole Postgres cluster, so they are only ever built from the UUID
//! and a branch name of letters, digits, `-`, `_` and `.` (the coordinator's own
//! naming rule), at most [`MAX_BRANCH_LEN`] bytes so the gid stays under Postgres'
//! 200-byte limit. Two participants sharing one Postgres cluster never collide: a
//! branch name is unique within its transaction.
//!
//! # Bookkeeping without a barrier inside the prepared transaction
//!
//! Nothing can be read from a prepared transaction before it commits, so the barrier
//! of [`crate::barrier`] does not fit. Instead a small table
//! `{schema}.settle_xa_outcome(transaction_id, branch, outcome, detail)` keeps one row
//! per branch, with `outcome` one of `prepared`, `committed`, `aborted`:
//!
//! - Prepare inserts `(tx, branch, 'prepared')` *inside* the transaction it prepares,
//!   before running the effect. The row commits or rolls back with the prepared
//!   transaction, and while it is prepared, its key is locked: anyone else inserting
//!   it waits.
//! - `COMMIT PREPARED` makes that row visible; commit then updates it to `committed`.
//!   A visible `prepared` row therefore always means committed (the update was lost
//!   to a crash).
//! - Abort records `(tx, branch, 'aborted')` in a transaction of its own, after
//!   `ROLLBACK PREPARED` or in place of it, so that a late prepare conflicts with it.
//! - A no vote rolls the effect back to a savepoint and commits the row as `aborted`
//!   with the reason: the participant may abort on its own until it has voted yes.
//!
//! # Cases
//!
//! | call | finds | does | answers |
//! |---|---|---|---|
//! | prepare | gid in `pg_prepared_xacts` (a duplicate) | nothing | yes (`Done`) |
//! | prepare | no row | insert, effect, `PREPARE TRANSACTION` | yes (`Done`) |
//! | prepare | no row, effect votes no | roll the effect back, commit the row as `aborted` | no (`Refuse`, the reason) |
//! | prepare | committed row `committed` / `prepared` | nothing (a duplicate after commit) | yes (`Done`) |
//! | prepare | committed row `aborted` | nothing (a hanging prepare, or a duplicate no) | no (`Refuse`, the stored reason) |
//! | prepare | the row locked by a prepare in flight or just prepared | waits up to the lock timeout | `Retry` (503) |
//! | commit | gid prepared | `COMMIT PREPARED`, row → `committed` | `Done` |
//! | commit | not prepared, row `committed` / `prepared` | row → `committed` (a duplicate) | `Done` |
//! | commit | not prepared, row `aborted` | nothing: a protocol error | `Refuse` ([`ALREADY_ABORTED`]) |
//! | commit | not prepared, no row | nothing: a protocol error | `Refuse` ([`NOT_PREPARED`]) |
//! | abort | gid prepared | `ROLLBACK PREPARED`, insert `aborted` | `Done` |
//! | abort | not prepared, no row | insert `aborted` (a null abort; a late prepare is refused) | `Done` |
//! | abort | not prepared, row `aborted` | nothing (a duplicate, or the no vote's abort) | `Done` |
//! | abort | not prepared, row `committed` / `prepared` | nothing: a protocol error | `Refuse` ([`ALREADY_COMMITTED`]) |
//! | abort | the row locked by a prepare in flight or just prepared | waits up to the lock timeout | `Retry` (503) |
//! | commit / abort | another session finishing the same gid | nothing | `Retry` (503) |
//!
//! The coordinator retries commit and abort until it gets a 2xx, so a `Retry` (and a
//! protocol-error refusal, which keeps a broken branch visible as stuck) is asked
//! again. Every wait on a lock, the effect's own included, is bounded by
//! `SET LOCAL lock_timeout` ([`XaParticipant::with_lock_timeout`]): an abort racing a
//! prepare in flight, or a prepare whose rows are held by another prepared
//! transaction, answers `Retry` instead of blocking an HTTP call forever.
//!
//! A participant that restarts needs no state of its own: its prepared transactions
//! are in Postgres ([`XaParticipant::prepared_branches`]), and the coordinator keeps
//! calling commit or abort until they are settled. An in-doubt participant can also
//! ask the coordinator with [`crate::client::CoordinatorClient::decision`].

use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient, IsolationLevel, Transaction};
use uuid::Uuid;

use crate::barrier::{
    plain_identifier, ALREADY_ABORTED, ALREADY_COMMITTED, HANGING_PREPARE, NOT_PREPARED,
};
use crate::participant::Reply;
use crate::protocol::{BranchCall, BranchPhase};

/// Every gid this module makes starts with this.
pub const GID_PREFIX: &str = "settle:";
/// The longest branch name a gid can hold: `settle:` + UUID + `:` + branch stays
/// under Postgres' 200-byte limit.
pub const MAX_BRANCH_LEN: usize = 155;
/// How long a call waits for a lock before answering `Retry`, unless configured.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);
/// What a late prepare is told after its branch was rolled back.
pub const ABORTED: &str = "the branch was aborted";
/// What a call that lost a race for a lock is told: the coordinator asks again.
pub const BUSY: &str = "the branch is busy with another call; ask again";

/// Why the XA participant could not settle a call. Everything but
/// [`Error::PhaseMismatch`], [`Error::InvalidSchema`], [`Error::InvalidBranch`] and
/// [`Error::PreparedTransactionsDisabled`] is worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schema name is not a plain lower-case SQL identifier.
    #[error("{0:?} is not a plain schema name (lower-case letters, digits, _; at most 63)")]
    InvalidSchema(String),
    /// The branch name cannot be part of a gid.
    #[error(
        "branch {0:?} cannot name a prepared transaction: it must be 1 to {MAX_BRANCH_LEN} \
         letters, digits, '-', '_' or '.'"
    )]
    InvalidBranch(String),
    /// An endpoint got a call for another phase.
    #[error("the {endpoint} endpoint got a {got} call")]
    PhaseMismatch {
        endpoint: BranchPhase,
        got: BranchPhase,
    },
    /// The server runs with `max_prepared_transactions = 0`.
    #[error(
        "the participant's Postgres server has max_prepared_transactions = 0, so it cannot \
         prepare transactions: set max_prepared_transactions (at least the number of \
         concurrent transactions, e.g. 64) in postgresql.conf and restart the server"
    )]
    PreparedTransactionsDisabled,
    /// The participant's own SQL failed.
    #[error("XA participant database access failed")]
    Db(#[from] tokio_postgres::Error),
    /// The business effect failed; its transaction was rolled back, so a retry runs it again.
    #[error("the business effect failed")]
    Effect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An outcome row holds a value the participant never writes.
    #[error("the outcome row for {transaction_id}:{branch} holds {outcome:?}")]
    CorruptRecord {
        transaction_id: Uuid,
        branch: String,
        outcome: String,
    },
}

/// Shorthand for XA participant results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the call gave up waiting for a lock (`lock_timeout`), in the
    /// participant's SQL or in the effect's.
    fn lock_timed_out(&self) -> bool {
        match self {
            Error::Db(error) => chain_has_lock_timeout(error),
            Error::Effect(error) => chain_has_lock_timeout(&**error),
            _ => false,
        }
    }
}

fn chain_has_lock_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        let code = error
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code);
        if code == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return true;
        }
        next = error.source();
    }
    false
}

/// A prepare effect's vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Keep the work: the transaction is prepared and the coordinator hears yes (2xx).
    Yes,
    /// Throw the work away: the coordinator hears no (409) with this reason, and aborts.
    No(String),
}

/// Where a branch stands, as [`XaParticipant::outcome`] reads it. The names are the
/// ones the `outcome` column's CHECK constraint allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Prepared and waiting for the decision (in doubt).
    Prepared,
    Committed,
    Aborted,
}

impl Outcome {
    /// The spelling shared with the `settle_xa_outcome.outcome` CHECK constraint.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Prepared => "prepared",
            Outcome::Committed => "committed",
            Outcome::Aborted => "aborted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "prepared" => Some(Outcome::Prepared),
            "committed" => Some(Outcome::Committed),
            "aborted" => Some(Outcome::Aborted),
            _ => None,
        }
    }
}

/// A prepared transaction of this database that an [`XaParticipant`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedBranch {
    pub transaction_id: Uuid,
    pub branch: String,
    pub gid: String,
    /// When `PREPARE TRANSACTION` ran.
    pub prepared_at: SystemTime,
}

impl PreparedBranch {
    /// A call for this branch, for settling it without the coordinator's call (after
    /// asking the coordinator for the decision).
    ///
    /// ```
    /// use settle_participant::protocol::BranchPhase;
    /// use settle_participant::xa::PreparedBranch;
    /// let branch = PreparedBranch {
    ///     transaction_id: uuid::Uuid::nil(),
    ///     branch: "debit".into(),
    ///     gid: "settle:00000000-0000-0000-0000-000000000000:debit".into(),
    ///     prepared_at: std::time::SystemTime::UNIX_EPOCH,
    /// };
    /// assert_eq!(branch.call(BranchPhase::Commit).idempotency_key(), format!("{}:debit:commit", uuid::Uuid::nil()));
    /// ```
    pub fn call(&self, phase: BranchPhase) -> BranchCall {
        BranchCall {
            transaction_id: self.transaction_id,
            branch: self.branch.clone(),
            phase,
            attempt: 1,
            payload: serde_json::Value::Null,
        }
    }
}

/// The gid of a branch: `settle:{transaction_id}:{branch}`, or
/// [`Error::InvalidBranch`] when the branch name cannot be spliced into SQL safely.
///
/// ```
/// use settle_participant::xa::gid;
/// let id = uuid::Uuid::nil();
/// assert_eq!(gid(id, "debit").unwrap(), "settle:00000000-0000-0000-0000-000000000000:debit");
/// assert!(gid(id, "debit'; COMMIT PREPARED 'x").is_err());
/// assert!(gid(id, &"b".repeat(156)).is_err());
/// ```
pub fn gid(transaction_id: Uuid, branch: &str) -> Result<String> {
    let plain = !branch.is_empty()
        && branch.len() <= MAX_BRANCH_LEN
        && branch
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain {
        return Err(Error::InvalidBranch(branch.to_owned()));
    }
    Ok(format!("{GID_PREFIX}{transaction_id}:{branch}"))
}

/// The (transaction, branch) a gid made by [`gid`] names; `None` for other gids.
///
/// ```
/// use settle_participant::xa::{gid, parse_gid};
/// let id = uuid::Uuid::now_v7();
/// assert_eq!(parse_gid(&gid(id, "credit").unwrap()), Some((id, "credit".to_owned())));
/// assert_eq!(parse_gid("someone-else's"), None);
/// ```
pub fn parse_gid(text: &str) -> Option<(Uuid, String)> {
    let rest = text.strip_prefix(GID_PREFIX)?;
    let (id, branch) = rest.split_once(':')?;
    let id = Uuid::try_parse(id).ok()?;
    gid(id, branch).ok().filter(|made| made == text)?;
    Some((id, branch.to_owned()))
}

/// A gid as an SQL string literal. [`gid`] admits no quote, so the doubling is a
/// second line of defence only.
fn literal(gid: &str) -> String {
    format!("'{}'", gid.replace('\'', "''"))
}

/// An XA-style participant over one schema's `settle_xa_outcome` table.
///
/// ```no_run
/// use settle_participant::participant::{BranchRequest, Reply};
/// use settle_participant::xa::{Vote, XaParticipant};
///
/// async fn prepare(
///     xa: &XaParticipant,
///     db: &mut tokio_postgres::Client,
///     request: BranchRequest,
/// ) -> Result<Reply, settle_participant::xa::Error> {
///     xa.prepare(db, &request.call, async |tx| {
///         let debited = tx
///             .execute("UPDATE accounts SET balance = balance - 100 WHERE id = 'alice' AND balance >= 100", &[])
///             .await?;
///         Ok::<_, tokio_postgres::Error>(if debited == 1 { Vote::Yes } else { Vote::No("insufficient funds".into()) })
///     })
///     .await
/// }
/// ```
#[derive(Debug, Clone)]
pub struct XaParticipant {
    schema: String,
    lock_timeout: Duration,
    insert: String,
    select: String,
    refuse: String,
    mark_committed: String,
}

impl XaParticipant {
    /// A participant keeping its outcome rows in `{schema}.settle_xa_outcome`. The
    /// schema must be a plain lower-case identifier, since it is spliced into the SQL.
    ///
    /// ```
    /// use settle_participant::xa::XaParticipant;
    /// assert!(XaParticipant::new("public").is_ok());
    /// assert!(XaParticipant::new("public; DROP TABLE x").is_err());
    /// ```
    pub fn new(schema: &str) -> Result<Self> {
        if !plain_identifier(schema) {
            return Err(Error::InvalidSchema(schema.to_owned()));
        }
        let table = format!("{schema}.settle_xa_outcome");
        Ok(XaParticipant {
            schema: schema.to_owned(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            insert: format!(
                "INSERT INTO {table} (transaction_id, branch, outcome, detail) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
            ),
            select: format!(
                "SELECT outcome, detail FROM {table} WHERE transaction_id = $1 AND branch = $2"
            ),
            refuse: format!(
                "UPDATE {table} SET outcome = $3, detail = $4, updated_at = now() \
                 WHERE transaction_id = $1 AND branch = $2"
            ),
            mark_committed: format!(
                "UPDATE {table} SET outcome = $3, updated_at = now() \
                 WHERE transaction_id = $1 AND branch = $2 AND outcome = $4"
            ),
        })
    }

    /// The same participant, giving up on a lock after `timeout` (at least 1 ms)
    /// instead of [`DEFAULT_LOCK_TIMEOUT`]. Keep it well under the coordinator's call
    /// timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let xa = settle_participant::xa::XaParticipant::new("public").unwrap()
    ///     .with_lock_timeout(Duration::from_millis(250));
    /// assert_eq!(xa.lock_timeout(), Duration::from_millis(250));
    /// ```
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a call waits for a lock before answering `Retry`.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The schema the outcome table lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// SQL creating the schema and its `settle_xa_outcome` table if they are missing.
    ///
    /// ```
    /// let sql = settle_participant::xa::XaParticipant::new("bank").unwrap().create_table_sql();
    /// assert!(sql.contains("CREATE TABLE IF NOT EXISTS bank.settle_xa_outcome"));
    /// ```
    pub fn create_table_sql(&self) -> String {
        let schema = &self.schema;
        format!(
            "SELECT pg_advisory_xact_lock(hashtext('settle_xa_outcome:{schema}'));
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.settle_xa_outcome (
    transaction_id uuid NOT NULL,
    branch text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('prepared', 'committed', 'aborted')),
    detail text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, branch)
);"
        )
    }

    /// Checks that the server can prepare transactions
    /// ([`Error::PreparedTransactionsDisabled`] if not), then creates the schema and
    /// the outcome table if they are missing. Works on a `Client` or in a `Transaction`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let (client, connection) =
    ///     tokio_postgres::connect("host=127.0.0.1 port=5499 user=postgres", tokio_postgres::NoTls).await?;
    /// tokio::spawn(connection);
    /// settle_participant::xa::XaParticipant::new("public")?.ensure_table(&client).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ensure_table<C: GenericClient>(&self, client: &C) -> Result<()> {
        let allowed: i32 = client
            .query_one(
                "SELECT current_setting('max_prepared_transactions')::int",
                &[],
            )
            .await?
            .try_get(0)?;
        if allowed == 0 {
            return Err(Error::PreparedTransactionsDisabled);
        }
        client.batch_execute(&self.create_table_sql()).await?;
        Ok(())
    }

    /// Prepares a branch: runs `effect` in a local transaction, which the vote decides.
    ///
    /// - [`Vote::Yes`] ends the transaction with `PREPARE TRANSACTION` and answers
    ///   `Done({"outcome": "prepared", "gid": ...})`; the work stays invisible, its row
    ///   locks held, until [`XaParticipant::commit`] or [`XaParticipant::abort`].
    /// - [`Vote::No`] rolls the effect back, records the branch as aborted and answers
    ///   `Refuse(reason)`.
    /// - An `Err` rolls everything back and records nothing, so a retry runs `effect`
    ///   again; a lock timeout (in `effect` too) answers `Retry`.
    ///
    /// Duplicates and late calls are answered from Postgres without running `effect`;
    /// see the module documentation for every case.
    ///
    /// ```no_run
    /// # async fn run(xa: settle_participant::xa::XaParticipant, db: &mut tokio_postgres::Client,
    /// #     call: settle_participant::protocol::BranchCall) -> Result<(), settle_participant::xa::Error> {
    /// use settle_participant::xa::Vote;
    /// let reply = xa
    ///     .prepare(db, &call, async |tx| {
    ///         tx.execute("INSERT INTO bookings (seat) VALUES ('12A')", &[]).await?;
    ///         Ok::<_, tokio_postgres::Error>(Vote::Yes)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(skip_all, fields(transaction_id = %call.transaction_id, branch = %call.branch))]
    pub async fn prepare<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Vote, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        expect_phase(call, BranchPhase::Prepare)?;
        let gid = match gid(call.transaction_id, &call.branch) {
            Ok(gid) => gid,
            Err(error) => return Ok(Reply::Invalid(error.to_string())),
        };
        busy_means_retry(self.prepare_branch(client, call, &gid, effect).await)
    }

    async fn prepare_branch<F, E>(
        &self,
        client: &mut Client,
        call: &BranchCall,
        gid: &str,
        effect: F,
    ) -> Result<Reply>
    where
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Vote, E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // A duplicate of a prepare that succeeded: its row is inside the prepared
        // transaction, where no one can read it (and inserting it would wait for it).
        if is_prepared(client, gid).await? {
            tracing::info!(gid, "prepare again: already prepared");
            return Ok(prepared(gid));
        }
        let (id, branch) = (call.transaction_id, call.branch.as_str());
        let mut tx = self.begin(client).await?;
        let claimed = tx
            .execute(
                &self.insert,
                &[&id, &branch, &Outcome::Prepared.as_str(), &None::<&str>],
            )
            .await?
            == 1;
        if !claimed {
            let stored = self.stored(&tx, id, branch).await?;
            tx.commit().await?;
            return Ok(match stored {
                // Visible `prepared` rows were committed (see the module docs).
                Some((Outcome::Committed | Outcome::Prepared, _)) => {
                    tracing::info!(gid, "prepare again: already committed");
                    prepared(gid)
                }
                Some((Outcome::Aborted, detail)) => {
                    tracing::info!(gid, "refused a prepare: the branch was aborted");
                    Reply::Refuse(detail.unwrap_or_else(|| HANGING_PREPARE.to_owned()))
                }
                // The row was there a moment ago and outcome rows are never deleted.
                None => Reply::Retry(BUSY.to_owned()),
            });
        }
        let vote = {
            let savepoint = tx.savepoint("settle_xa_effect").await?;
            match effect(&savepoint).await {
                Ok(Vote::Yes) => {
                    savepoint.commit().await?;
                    Vote::Yes
                }
                Ok(Vote::No(reason)) => {
                    savepoint.rollback().await?;
                    Vote::No(reason)
                }
                // Dropping `tx` rolls everything back.
                Err(error) => return Err(Error::Effect(error.into())),
            }
        };
        match vote {
            Vote::Yes => {
                let prepare = format!("PREPARE TRANSACTION {}", literal(gid));
                let result = tx.batch_execute(&prepare).await;
                // Whether PREPARE TRANSACTION succeeded (the work now belongs to the
                // prepared transaction) or failed (Postgres rolled it back), the
                // session is outside any transaction: the guard must not send a
                // ROLLBACK of its own. A top-level guard owns no heap memory, so
                // forgetting it leaks nothing.
                std::mem::forget(tx);
                result?;
                tracing::info!(gid, "prepared");
                Ok(prepared(gid))
            }
            Vote::No(reason) => {
                tx.execute(
                    &self.refuse,
                    &[&id, &branch, &Outcome::Aborted.as_str(), &reason],
                )
                .await?;
                tx.commit().await?;
                tracing::info!(gid, reason, "voted no");
                Ok(Reply::Refuse(reason))
            }
        }
    }

    /// Commits a prepared branch with `COMMIT PREPARED` and answers
    /// `Done({"outcome": "committed"})`, for the first call and every duplicate. A
    /// branch that was never prepared, or was aborted, is refused (a protocol error
    /// that the coordinator's retries keep visible).
    ///
    /// ```no_run
    /// # async fn run(xa: settle_participant::xa::XaParticipant, db: &mut tokio_postgres::Client,
    /// #     call: settle_participant::protocol::BranchCall) -> Result<(), settle_participant::xa::Error> {
    /// let reply = xa.commit(db, &call).await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(skip_all, fields(transaction_id = %call.transaction_id, branch = %call.branch))]
    pub async fn commit(&self, client: &mut Client, call: &BranchCall) -> Result<Reply> {
        expect_phase(call, BranchPhase::Commit)?;
        let Ok(gid) = gid(call.transaction_id, &call.branch) else {
            // No prepare could have used this name.
            return Ok(Reply::Refuse(NOT_PREPARED.to_owned()));
        };
        busy_means_retry(self.commit_branch(client, call, &gid).await)
    }

    async fn commit_branch(
        &self,
        client: &mut Client,
        call: &BranchCall,
        gid: &str,
    ) -> Result<Reply> {
        let (id, branch) = (call.transaction_id, call.branch.as_str());
        match finish_prepared(client, "COMMIT", gid).await? {
            Finished::Done => {
                self.mark_committed(client, id, branch).await?;
                tracing::info!(gid, "committed");
                return Ok(committed());
            }
            Finished::Busy => return Ok(Reply::Retry(BUSY.to_owned())),
            Finished::NotPrepared => {}
        }
        match self.stored(&*client, id, branch).await? {
            Some((Outcome::Committed, _)) => Ok(committed()),
            Some((Outcome::Prepared, _)) => {
                // Committed before, but the outcome update was lost.
                self.mark_committed(client, id, branch).await?;
                Ok(committed())
            }
            Some((Outcome::Aborted, _)) => {
                tracing::warn!(gid, "refused a commit: the branch was aborted");
                Ok(Reply::Refuse(ALREADY_ABORTED.to_owned()))
            }
            None => {
                tracing::warn!(gid, "refused a commit: the branch was never prepared");
                Ok(Reply::Refuse(NOT_PREPARED.to_owned()))
            }
        }
    }

    /// Aborts a branch: `ROLLBACK PREPARED` when it is prepared, and in every case
    /// records it as aborted so that a late prepare is refused. Answers
    /// `Done({"outcome": "aborted"})` for the first call, a null abort (nothing was
    /// prepared) and every duplicate; refuses an abort of a committed branch.
    ///
    /// ```no_run
    /// # async fn run(xa: settle_participant::xa::XaParticipant, db: &mut tokio_postgres::Client,
    /// #     call: settle_participant::protocol::BranchCall) -> Result<(), settle_participant::xa::Error> {
    /// let reply = xa.abort(db, &call).await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(skip_all, fields(transaction_id = %call.transaction_id, branch = %call.branch))]
    pub async fn abort(&self, client: &mut Client, call: &BranchCall) -> Result<Reply> {
        expect_phase(call, BranchPhase::Abort)?;
        busy_means_retry(self.abort_branch(client, call).await)
    }

    async fn abort_branch(&self, client: &mut Client, call: &BranchCall) -> Result<Reply> {
        let (id, branch) = (call.transaction_id, call.branch.as_str());
        // A name no gid can hold was never prepared: only the record is needed.
        let mut detail = HANGING_PREPARE;
        if let Ok(gid) = gid(id, branch) {
            match finish_prepared(client, "ROLLBACK", &gid).await? {
                Finished::Done => {
                    tracing::info!(gid, "rolled back");
                    detail = ABORTED;
                }
                Finished::Busy => return Ok(Reply::Retry(BUSY.to_owned())),
                Finished::NotPrepared => {}
            }
        }
        // Waits (up to the lock timeout) for a prepare in flight, which holds the key.
        let tx = self.begin(client).await?;
        let recorded = tx
            .execute(
                &self.insert,
                &[&id, &branch, &Outcome::Aborted.as_str(), &detail],
            )
            .await?
            == 1;
        let stored = if recorded {
            None
        } else {
            self.stored(&tx, id, branch).await?
        };
        tx.commit().await?;
        match stored {
            None if recorded => {
                if detail == HANGING_PREPARE {
                    tracing::info!("null abort: nothing was prepared");
                }
                Ok(aborted())
            }
            Some((Outcome::Aborted, _)) => Ok(aborted()),
            Some((Outcome::Committed | Outcome::Prepared, _)) => {
                tracing::warn!("refused an abort: the branch was committed");
                Ok(Reply::Refuse(ALREADY_COMMITTED.to_owned()))
            }
            None => Ok(Reply::Retry(BUSY.to_owned())),
        }
    }

    /// Where a branch stands: prepared (in doubt), committed, aborted, or `None` when
    /// this participant never heard of it.
    ///
    /// ```no_run
    /// # async fn run(xa: settle_participant::xa::XaParticipant, db: tokio_postgres::Client) -> Result<(), settle_participant::xa::Error> {
    /// use settle_participant::xa::Outcome;
    /// let id = uuid::Uuid::now_v7();
    /// assert_eq!(xa.outcome(&db, id, "debit").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn outcome<C: GenericClient>(
        &self,
        client: &C,
        transaction_id: Uuid,
        branch: &str,
    ) -> Result<Option<Outcome>> {
        if let Ok(gid) = gid(transaction_id, branch) {
            if is_prepared(client, &gid).await? {
                return Ok(Some(Outcome::Prepared));
            }
        }
        Ok(self
            .stored(client, transaction_id, branch)
            .await?
            .map(|(outcome, _)| match outcome {
                // Visible `prepared` rows were committed.
                Outcome::Prepared | Outcome::Committed => Outcome::Committed,
                Outcome::Aborted => Outcome::Aborted,
            }))
    }

    /// The branches prepared in this database and not yet committed or aborted,
    /// oldest first. A restarted participant needs nothing else: the coordinator keeps
    /// calling until each is settled, or the participant asks for the decision itself.
    ///
    /// ```no_run
    /// # async fn run(xa: settle_participant::xa::XaParticipant, mut db: tokio_postgres::Client,
    /// #     coordinator: settle_participant::client::CoordinatorClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use settle_participant::client::Decision;
    /// use settle_participant::protocol::BranchPhase;
    /// for branch in xa.prepared_branches(&db).await? {
    ///     match coordinator.decision(branch.transaction_id).await? {
    ///         Some(Decision::Commit) => drop(xa.commit(&mut db, &branch.call(BranchPhase::Commit)).await?),
    ///         Some(Decision::Abort) => drop(xa.abort(&mut db, &branch.call(BranchPhase::Abort)).await?),
    ///         None => {} // not decided yet: the coordinator will call
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn prepared_branches<C: GenericClient>(
        &self,
        client: &C,
    ) -> Result<Vec<PreparedBranch>> {
        let rows = client
            .query(
                "SELECT gid, prepared FROM pg_prepared_xacts \
                 WHERE database = current_database() AND starts_with(gid, $1) \
                 ORDER BY prepared, gid",
                &[&GID_PREFIX],
            )
            .await?;
        let mut branches = Vec::with_capacity(rows.len());
        for row in rows {
            let gid: String = row.try_get(0)?;
            if let Some((transaction_id, branch)) = parse_gid(&gid) {
                branches.push(PreparedBranch {
                    transaction_id,
                    branch,
                    gid,
                    prepared_at: row.try_get(1)?,
                });
            }
        }
        Ok(branches)
    }

    /// A READ COMMITTED transaction whose lock waits end after the lock timeout.
    async fn begin<'a>(&self, client: &'a mut Client) -> Result<Transaction<'a>> {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await?;
        let millis = format!("{}ms", self.lock_timeout.as_millis().max(1));
        tx.execute("SELECT set_config('lock_timeout', $1, true)", &[&millis])
            .await?;
        Ok(tx)
    }

    /// The committed outcome row of a branch.
    async fn stored<C: GenericClient>(
        &self,
        client: &C,
        transaction_id: Uuid,
        branch: &str,
    ) -> Result<Option<(Outcome, Option<String>)>> {
        let Some(row) = client
            .query_opt(&self.select, &[&transaction_id, &branch])
            .await?
        else {
            return Ok(None);
        };
        let outcome: String = row.try_get(0)?;
        let detail: Option<String> = row.try_get(1)?;
        match Outcome::parse(&outcome) {
            Some(parsed) => Ok(Some((parsed, detail))),
            None => Err(Error::CorruptRecord {
                transaction_id,
                branch: branch.to_owned(),
                outcome,
            }),
        }
    }

    async fn mark_committed(
        &self,
        client: &Client,
        transaction_id: Uuid,
        branch: &str,
    ) -> Result<()> {
        client
            .execute(
                &self.mark_committed,
                &[
                    &transaction_id,
                    &branch,
                    &Outcome::Committed.as_str(),
                    &Outcome::Prepared.as_str(),
                ],
            )
            .await?;
        Ok(())
    }
}

/// How `COMMIT PREPARED` / `ROLLBACK PREPARED` went.
enum Finished {
    Done,
    /// No prepared transaction has this gid (any more, or yet).
    NotPrepared,
    /// Another session is finishing it right now.
    Busy,
}

/// Runs `{verb} PREPARED '<gid>'` (`verb` is `COMMIT` or `ROLLBACK`). These cannot run
/// in a transaction block, so they go on their own.
async fn finish_prepared(client: &Client, verb: &'static str, gid: &str) -> Result<Finished> {
    match client
        .batch_execute(&format!("{verb} PREPARED {}", literal(gid)))
        .await
    {
        Ok(()) => Ok(Finished::Done),
        Err(error) if error.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
            Ok(Finished::NotPrepared)
        }
        // "prepared transaction with identifier ... is busy"
        Err(error) if error.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) => {
            Ok(Finished::Busy)
        }
        Err(error) => Err(error.into()),
    }
}

async fn is_prepared<C: GenericClient>(client: &C, gid: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts \
             WHERE gid = $1 AND database = current_database())",
            &[&gid],
        )
        .await?
        .try_get(0)?)
}

/// A lock timeout is a lost race, not a failure: the coordinator asks again.
fn busy_means_retry(result: Result<Reply>) -> Result<Reply> {
    match result {
        Err(error) if error.lock_timed_out() => {
            tracing::info!("gave up waiting for a lock; asking the coordinator to retry");
            Ok(Reply::Retry(BUSY.to_owned()))
        }
        other => other,
    }
}

fn prepared(gid: &str) -> Reply {
    Reply::Done(json!({ "outcome": Outcome::Prepared.as_str(), "gid": gid }))
}

fn committed() -> Reply {
    Reply::Done(json!({ "outcome": Outcome::Committed.as_str() }))
}

fn aborted() -> Reply {
    Reply::Done(json!({ "outcome": Outcome::Aborted.as_str() }))
}

fn expect_phase(call: &BranchCall, endpoint: BranchPhase) -> Result<()> {
    if call.phase == endpoint {
        Ok(())
    } else {
        Err(Error::PhaseMismatch {
            endpoint,
            got: call.phase,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_fit_postgres_and_round_trip() {
        let id = Uuid::now_v7();
        let longest = "b".repeat(MAX_BRANCH_LEN);
        let made = gid(id, &longest).unwrap();
        assert!(made.len() < 200, "{} bytes", made.len());
        assert_eq!(parse_gid(&made), Some((id, longest)));
        assert_eq!(
            parse_gid(&gid(id, "a.b-c_d").unwrap()),
            Some((id, "a.b-c_d".to_owned()))
        );
    }

    #[test]
    fn branch_names_that_could_escape_the_literal_are_refused() {
        let id = Uuid::nil();
        for bad in ["", "a'b", "a b", "a:b", "ünïcode", "a\\b", "a;b"] {
            assert!(
                matches!(gid(id, bad), Err(Error::InvalidBranch(_))),
                "{bad:?}"
            );
        }
        assert!(gid(id, &"b".repeat(MAX_BRANCH_LEN + 1)).is_err());
    }

    #[test]
    fn foreign_gids_are_not_parsed() {
        let id = Uuid::nil();
        assert_eq!(parse_gid("settle:not-a-uuid:debit"), None);
        assert_eq!(parse_gid(&format!("other:{id}:debit")), None);
        assert_eq!(parse_gid(&format!("settle:{id}:")), None);
        assert_eq!(parse_gid(&format!("settle:{id}:a:b")), None);
        // Upper-case UUIDs parse as UUIDs, but are not what `gid` makes.
        let lettered = Uuid::parse_str("0190b6c2-5a1e-7000-8000-00000000abcd").unwrap();
        let upper = format!("settle:{}:debit", lettered.to_string().to_uppercase());
        assert_eq!(parse_gid(&upper), None);
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(literal("a'b"), "'a''b'");
        assert_eq!(literal("settle:x"), "'settle:x'");
    }

    #[test]
    fn outcomes_spell_the_check_constraint() {
        let sql = XaParticipant::new("public").unwrap().create_table_sql();
        for outcome in [Outcome::Prepared, Outcome::Committed, Outcome::Aborted] {
            assert!(sql.contains(&format!("'{}'", outcome.as_str())));
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
    }
}
