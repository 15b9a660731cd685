//! The idempotency barrier over the participant's own Postgres (DESIGN.md §3): a
//! `settle_barrier` row per (transaction, step, phase), written in the same local
//! transaction as the business effect, so duplicates, null compensations and hanging
//! actions are harmless.
//!
//! Concurrency: the primary key makes a concurrent action/compensation pair for the
//! same step serialize. The second `INSERT ... ON CONFLICT DO NOTHING` on the
//! `(transaction_id, step, 'action')` key waits for the first transaction to commit or
//! roll back, and then either conflicts (and reads the committed row) or inserts. That
//! is why every barrier transaction runs at READ COMMITTED: each statement sees what
//! the transaction it waited for committed.

use serde_json::Value;
use tokio_postgres::{Client, GenericClient, IsolationLevel, Transaction};
use uuid::Uuid;

use crate::participant::Reply;
use crate::protocol::{CallRequest, Phase};

/// The refusal a late action gets when its compensation has already been recorded.
pub const HANGING_ACTION: &str = "compensated before the action arrived";

/// Why the barrier could not settle a call. Every variant is worth a retry by the
/// coordinator except [`Error::PhaseMismatch`] and [`Error::InvalidSchema`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schema name is not a plain lower-case SQL identifier.
    #[error("{0:?} is not a plain schema name (lower-case letters, digits, _; at most 63)")]
    InvalidSchema(String),
    /// An action endpoint got a compensation call, or the other way round.
    #[error("the {endpoint} endpoint got a {got} call")]
    PhaseMismatch { endpoint: Phase, got: Phase },
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
        phase: Phase,
        status: Option<i16>,
    },
}

/// Shorthand for barrier results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    record: String,
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
        let plain = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(Error::InvalidSchema(schema.to_owned()));
        }
        let table = format!("{schema}.settle_barrier");
        Ok(Barrier {
            schema: schema.to_owned(),
            insert: format!(
                "INSERT INTO {table} (transaction_id, step, phase, origin) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING"
            ),
            select: format!(
                "SELECT origin, status, body FROM {table} \
                 WHERE transaction_id = $1 AND step = $2 AND phase = $3"
            ),
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
    phase text NOT NULL CHECK (phase IN ('action', 'compensation')),
    origin text NOT NULL CHECK (origin IN ('action', 'compensation')),
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
        expect_phase(call, Phase::Action)?;
        let key = Key::of(call);
        let tx = begin(client).await?;
        let inserted = self.insert(&tx, &key, Phase::Action, Phase::Action).await?;
        if !inserted {
            let stored = self.stored(&tx, &key, Phase::Action).await?;
            tx.commit().await?;
            if stored.origin == Phase::Compensation.as_str() {
                tracing::info!(transaction_id = %key.id, step = key.step, "refused a hanging action");
                return Ok(Reply::Refuse(HANGING_ACTION.to_owned()));
            }
            return stored.reply(&key, Phase::Action);
        }
        self.run(tx, &key, Phase::Action, effect).await
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
        expect_phase(call, Phase::Compensation)?;
        let key = Key::of(call);
        let tx = begin(client).await?;
        // Claims the action slot first: an action arriving later sees this origin and
        // is refused, and one in flight makes this statement wait for its outcome.
        let action_never_ran = self
            .insert(&tx, &key, Phase::Action, Phase::Compensation)
            .await?;
        let fresh = self
            .insert(&tx, &key, Phase::Compensation, Phase::Compensation)
            .await?;
        if !fresh {
            let stored = self.stored(&tx, &key, Phase::Compensation).await?;
            tx.commit().await?;
            return stored.reply(&key, Phase::Compensation);
        }
        let null = action_never_ran || {
            let action = self.stored(&tx, &key, Phase::Action).await?;
            action.origin == Phase::Compensation.as_str()
                || matches!(action.status, Some(409 | 422))
        };
        if null {
            self.record(&tx, &key, Phase::Compensation, &Reply::Done(Value::Null))
                .await?;
            tx.commit().await?;
            tracing::info!(transaction_id = %key.id, step = key.step, "null compensation");
            return Ok(Reply::Done(Value::Null));
        }
        self.run(tx, &key, Phase::Compensation, effect).await
    }

    /// Runs `effect` in a savepoint of `tx`, whose barrier row for `phase` is fresh,
    /// and settles the transaction according to the reply.
    async fn run<F, E>(
        &self,
        mut tx: Transaction<'_>,
        key: &Key<'_>,
        phase: Phase,
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
        phase: Phase,
        origin: Phase,
    ) -> Result<bool> {
        let rows = tx
            .execute(
                &self.insert,
                &[&key.id, &key.step, &phase.as_str(), &origin.as_str()],
            )
            .await?;
        Ok(rows == 1)
    }

    async fn stored(&self, tx: &Transaction<'_>, key: &Key<'_>, phase: Phase) -> Result<Stored> {
        let row = tx
            .query_one(&self.select, &[&key.id, &key.step, &phase.as_str()])
            .await?;
        Ok(Stored {
            origin: row.try_get(0)?,
            status: row.try_get(1)?,
            body: row.try_get(2)?,
        })
    }

    async fn record(
        &self,
        tx: &Transaction<'_>,
        key: &Key<'_>,
        phase: Phase,
        reply: &Reply,
    ) -> Result<()> {
        let (status, body): (i16, Value) = match reply {
            Reply::Done(output) => (200, output.clone()),
            Reply::Refuse(message) => (409, Value::String(message.clone())),
            Reply::Invalid(message) => (422, Value::String(message.clone())),
            // Never recorded: `run` rolls these back.
            Reply::InProgress | Reply::Retry(_) => return Ok(()),
        };
        tx.execute(
            &self.record,
            &[&key.id, &key.step, &phase.as_str(), &status, &body],
        )
        .await?;
        Ok(())
    }
}

/// The (transaction, step) a call is about.
struct Key<'a> {
    id: Uuid,
    step: &'a str,
}

impl<'a> Key<'a> {
    fn of(call: &'a CallRequest) -> Self {
        Key {
            id: call.transaction_id,
            step: &call.step,
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
    /// The reply the first call got, rebuilt from the row.
    fn reply(self, key: &Key<'_>, phase: Phase) -> Result<Reply> {
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

fn expect_phase(call: &CallRequest, endpoint: Phase) -> Result<()> {
    if call.phase == endpoint {
        Ok(())
    } else {
        Err(Error::PhaseMismatch {
            endpoint,
            got: call.phase,
        })
    }
}

async fn begin(client: &mut Client) -> Result<Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await?)
}
