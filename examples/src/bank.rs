//! The money-transfer example: an account service that takes part in 2PC transfers
//! as an XA participant ([`settle_participant::xa`]). `POST /prepare` applies a
//! branch's `{ "account", "delta" }` to `accounts` inside a Postgres prepared
//! transaction (voting no on an unknown account or an overdraft), `POST /commit` and
//! `POST /abort` finish it. A bank that crashes and restarts finds its prepared
//! transactions in Postgres, and settles them when the coordinator calls again.
//!
//! ```no_run
//! # async fn run(pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
//! use settle_examples::bank;
//! bank::setup(&pool, &[("alice", 1000), ("bob", 1000)]).await?;
//! let bank = bank::start(pool.clone(), "127.0.0.1", 0, None).await?;
//! let debit = bank.branch("debit", "alice", -100);
//! // ... put `debit` (and a credit somewhere else) into a transaction ...
//! println!("total {}", bank::total(&pool).await?);
//! bank.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use deadpool_postgres::Pool;
use serde::Deserialize;
use settle_participant::api::NewBranch;
use settle_participant::participant::{error_chain, BranchRequest, Reply};
use settle_participant::signature::Verifier;
use settle_participant::xa::{self, Vote, XaParticipant};
use tokio_postgres::Transaction;

/// The schema holding the accounts and the XA outcome table.
pub const SCHEMA: &str = "public";

/// Tables; safe to run again.
const SETUP_SQL: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id text PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);
";

// Not `ON CONFLICT DO NOTHING`: that waits for a prepared transaction holding the
// account's row (until the coordinator decides), where this only reads a snapshot.
const OPEN_ACCOUNT: &str = "
INSERT INTO accounts (id, balance)
SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE id = $1)";
// Compared as numeric, so that neither an overdraft nor an overflow gets as far as an
// error: both are a plain no vote.
const APPLY: &str = "
UPDATE accounts SET balance = balance + $2
WHERE id = $1 AND balance::numeric + $2::bigint BETWEEN 0 AND 9223372036854775807";
const BALANCE: &str = "SELECT balance FROM accounts WHERE id = $1";

/// A branch's payload: what to add to which account (negative to take money out).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub account: String,
    pub delta: i64,
}

/// Creates the tables (accounts and the XA outcome table) and opens the given
/// accounts with their balances, leaving accounts that exist as they are. Idempotent.
/// Fails when the server cannot prepare transactions (`max_prepared_transactions = 0`).
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
/// settle_examples::bank::setup(&pool, &[("alice", 1000)]).await?;
/// # Ok(()) }
/// ```
pub async fn setup(pool: &Pool, accounts: &[(&str, i64)]) -> anyhow::Result<()> {
    let mut client = pool
        .get()
        .await
        .context("connecting to the bank database")?;
    let tx = client.transaction().await.context("starting the set-up")?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('settle-examples bank setup'))")
        .await
        .context("locking the set-up")?;
    participant()?
        .ensure_table(&*tx)
        .await
        .context("setting up the XA participant")?;
    tx.batch_execute(SETUP_SQL)
        .await
        .context("creating the accounts table")?;
    for (account, balance) in accounts {
        tx.execute(OPEN_ACCOUNT, &[account, balance])
            .await
            .with_context(|| format!("opening account {account}"))?;
    }
    tx.commit().await.context("committing the set-up")?;
    Ok(())
}

/// A running account service.
pub struct Bank {
    pub addr: SocketAddr,
    server: crate::http::Running,
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Starts the account service on `bind_host:port` (0 picks a free port) as an
/// actix-web server spawned on the current tokio runtime. With a verifier, every call
/// must carry a valid `Settle-Signature`.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
/// let bank = settle_examples::bank::start(pool, "127.0.0.1", 7201, None).await?;
/// println!("bank at {}", bank.addr);
/// bank.stop().await;
/// # Ok(()) }
/// ```
pub async fn start(
    pool: Pool,
    bind_host: &str,
    port: u16,
    verifier: Option<Verifier>,
) -> anyhow::Result<Bank> {
    let state = web::Data::new(Accounts {
        pool,
        xa: participant()?,
    });
    let verifier = verifier.map(web::Data::new);
    let server = HttpServer::new(move || {
        let mut app = App::new().app_data(state.clone());
        if let Some(verifier) = &verifier {
            app = app.app_data(verifier.clone());
        }
        app.route("/prepare", web::post().to(prepare))
            .route("/commit", web::post().to(commit))
            .route("/abort", web::post().to(abort))
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            )
    })
    .workers(2)
    .disable_signals()
    .bind((bind_host, port))
    .with_context(|| format!("binding {bind_host}:{port}"))?;
    let addr = *server
        .addrs()
        .first()
        .with_context(|| format!("{bind_host}:{port} resolved to no address"))?;
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(%addr, "bank listening");
    Ok(Bank {
        addr,
        server: crate::http::Running { addr, handle, task },
    })
}

impl Bank {
    /// `http://{addr}{path}`.
    ///
    /// ```no_run
    /// # fn run(bank: settle_examples::bank::Bank) {
    /// assert!(bank.url("/prepare").ends_with("/prepare"));
    /// # }
    /// ```
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A one-shot participant moving `delta` on `account` at this bank, for
    /// `POST /v1/transactions`.
    ///
    /// ```no_run
    /// # fn run(bank: settle_examples::bank::Bank) {
    /// let debit = bank.branch("debit", "alice", -100);
    /// assert_eq!(debit.payload, Some(serde_json::json!({ "account": "alice", "delta": -100 })));
    /// # }
    /// ```
    pub fn branch(&self, name: &str, account: &str, delta: i64) -> NewBranch {
        NewBranch {
            name: name.to_owned(),
            prepare_url: Some(self.url("/prepare")),
            commit_url: self.url("/commit"),
            abort_url: self.url("/abort"),
            payload: Some(serde_json::json!({ "account": account, "delta": delta })),
        }
    }

    /// Stops the server gracefully and waits for it to finish. Prepared transactions
    /// stay prepared, in Postgres.
    pub async fn stop(self) {
        crate::stop_all(vec![self.server]).await;
    }

    /// Stops the server the way a crash would, for chaos tests: calls in flight are
    /// cut off; prepared transactions stay prepared, in Postgres.
    pub async fn crash(self) {
        crate::crash_all(vec![self.server]).await;
    }
}

/// The sum of all balances.
pub async fn total(pool: &Pool) -> anyhow::Result<i64> {
    let client = pool
        .get()
        .await
        .context("connecting to the bank database")?;
    let row = client
        .query_one(
            "SELECT coalesce(sum(balance), 0)::bigint FROM accounts",
            &[],
        )
        .await
        .context("adding up the balances")?;
    Ok(row.try_get(0)?)
}

/// One account's committed balance (work in prepared transactions does not show).
pub async fn balance(pool: &Pool, account: &str) -> anyhow::Result<i64> {
    let client = pool
        .get()
        .await
        .context("connecting to the bank database")?;
    let row = client
        .query_opt(BALANCE, &[&account])
        .await
        .context("reading a balance")?
        .with_context(|| format!("no account {account:?}"))?;
    Ok(row.try_get(0)?)
}

/// The gids of the transactions prepared in this database and not yet finished.
pub async fn prepared(pool: &Pool) -> anyhow::Result<Vec<String>> {
    let client = pool
        .get()
        .await
        .context("connecting to the bank database")?;
    let rows = client
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
            &[],
        )
        .await
        .context("listing prepared transactions")?;
    rows.iter()
        .map(|row| row.try_get(0).context("reading a gid"))
        .collect()
}

/// The service's state.
struct Accounts {
    pool: Pool,
    xa: XaParticipant,
}

fn participant() -> anyhow::Result<XaParticipant> {
    XaParticipant::new(SCHEMA).context("the bank's XA participant")
}

/// A connection could not be had: transient, the coordinator retries.
fn unavailable(error: deadpool_postgres::PoolError) -> Reply {
    tracing::warn!(error = %error_chain(&error), "no database connection");
    Reply::Retry("the account database is unavailable".to_owned())
}

#[tracing::instrument(skip_all, fields(transaction_id = %request.call.transaction_id, branch = %request.call.branch))]
async fn prepare(state: web::Data<Accounts>, request: BranchRequest) -> Result<Reply, xa::Error> {
    let call = request.call;
    let transfer: Transfer = match serde_json::from_value(call.payload.clone()) {
        Ok(transfer) => transfer,
        Err(error) => return Ok(Reply::Invalid(format!("payload: {error}"))),
    };
    let mut db = match state.pool.get().await {
        Ok(db) => db,
        Err(error) => return Ok(unavailable(error)),
    };
    let reply = state
        .xa
        .prepare(&mut db, &call, async |tx| apply(tx, &transfer).await)
        .await?;
    tracing::info!(
        status = reply.status().as_u16(),
        account = transfer.account,
        delta = transfer.delta,
        "prepare"
    );
    Ok(reply)
}

/// Applies a transfer inside the transaction being prepared, or votes no.
async fn apply(tx: &Transaction<'_>, transfer: &Transfer) -> Result<Vote, tokio_postgres::Error> {
    let Transfer { account, delta } = transfer;
    if tx.execute(APPLY, &[account, delta]).await? == 1 {
        return Ok(Vote::Yes);
    }
    Ok(Vote::No(match tx.query_opt(BALANCE, &[account]).await? {
        None => format!("unknown account {account:?}"),
        Some(row) => {
            let balance: i64 = row.try_get(0)?;
            format!("account {account:?} holds {balance}, cannot apply {delta}")
        }
    }))
}

#[tracing::instrument(skip_all, fields(transaction_id = %request.call.transaction_id, branch = %request.call.branch))]
async fn commit(state: web::Data<Accounts>, request: BranchRequest) -> Result<Reply, xa::Error> {
    let mut db = match state.pool.get().await {
        Ok(db) => db,
        Err(error) => return Ok(unavailable(error)),
    };
    let reply = state.xa.commit(&mut db, &request.call).await?;
    tracing::info!(status = reply.status().as_u16(), "commit");
    Ok(reply)
}

#[tracing::instrument(skip_all, fields(transaction_id = %request.call.transaction_id, branch = %request.call.branch))]
async fn abort(state: web::Data<Accounts>, request: BranchRequest) -> Result<Reply, xa::Error> {
    let mut db = match state.pool.get().await {
        Ok(db) => db,
        Err(error) => return Ok(unavailable(error)),
    };
    let reply = state.xa.abort(&mut db, &request.call).await?;
    tracing::info!(status = reply.status().as_u16(), "abort");
    Ok(reply)
}
