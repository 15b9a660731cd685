//! PostgreSQL access. Every write to a transaction's state is conditional on the
//! writer's fence; a write that matches no row means the writer lost ownership.

pub mod admin;
pub mod batch;
pub mod create;
pub mod definitions;
pub mod json_text;
pub mod migrate;
pub mod outbox;
pub mod retention;
pub mod transactions;
pub mod twopc;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::machine::Millis;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to Postgres, named by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be had (server down, restarting, pool exhausted): retry later.
    #[error("database unavailable")]
    Unavailable(#[source] deadpool_postgres::PoolError),
    /// A statement failed; a retry may help if the connection dropped.
    #[error("database statement failed")]
    Query(#[from] tokio_postgres::Error),
    /// Postgres did not answer within `database.statement_timeout` (and
    /// [`SERVER_FIRST`]: a live server ends the statement itself first), and the
    /// connection was given up as dead. Whether the statement took effect is
    /// unknown: retry it on a new connection (every write is fenced or keyed, so
    /// a retry never applies twice what must happen once).
    #[error("the database did not answer within {0:?}")]
    Unanswered(Duration),
    /// The writer that batches state writes has stopped (the process is shutting down).
    #[error("the state writer has stopped")]
    Stopped,
    /// A stored row could not be understood (a bug or a manual edit).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl Error {
    /// The connection went away (the server closed it, shut down, restarted or is
    /// not yet accepting connections), rather than a statement being refused: a
    /// retry on a new connection may well succeed.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Unanswered(_) => true,
            Error::Query(q) => {
                q.is_closed()
                    || q.as_db_error().is_none_or(|db| {
                        let code = db.code().code();
                        // 08: connection exception; 57P01-57P03: the server is
                        // shutting down, crashed, or cannot accept connections yet.
                        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
                    })
            }
            Error::Stopped | Error::Corrupt(_) => false,
        }
    }

    /// Postgres ended the statement before it finished: it ran past the
    /// session's `statement_timeout` (waiting for a lock held elsewhere, say),
    /// or an operator cancelled it. Nothing it did remains, and the connection
    /// is fine: a retry may well succeed.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Query(q)
            if q.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED))
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Error::Unavailable(e)
    }
}

/// How much longer than the statement timeout [`within`] waits: Postgres ends
/// a statement of Settle's sessions at the timeout itself, and a live server's
/// cancellation (which keeps the connection) must arrive before the coordinator
/// gives the connection up as dead.
pub const SERVER_FIRST: Duration = Duration::from_secs(1);

/// `statement`'s answer, or `Unanswered` once `timeout` (and [`SERVER_FIRST`])
/// has passed without one, for the loops that must go on when a connection
/// hangs. The pooled connection it ran on is checked before it is handed out
/// again ([`pool`]).
pub async fn within<T>(
    timeout: Duration,
    statement: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout + SERVER_FIRST, statement)
        .await
        .unwrap_or(Err(Error::Unanswered(timeout)))
}

/// How long to wait for Postgres: to connect (and to check out a pooled
/// connection), and to answer a statement before its connection counts as dead.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub statement: Duration,
}

impl Timeouts {
    pub fn of(database: &crate::settings::DatabaseSettings) -> Timeouts {
        Timeouts {
            connect: database.connect_timeout,
            statement: database.statement_timeout,
        }
    }
}

/// Builds the connection pool. Connections are made lazily, so a database that is
/// down at start-up shows up as `Unavailable` errors, not a crash.
///
/// A pooled connection is checked with an empty query each time it is handed
/// out, within the connect timeout: one that stopped answering (a hung peer, a
/// network that drops packets without a reset) is thrown away there instead of
/// hanging the next statement sent on it.
///
/// Postgres ends a statement of these sessions that runs past the statement
/// timeout (waiting for a lock another session holds, a plan gone wrong), so an
/// API request answers `503 database_unavailable` instead of waiting as long as
/// the lock is held; migrations lift the bound on their own connection
/// ([`migrate::run`]).
pub fn pool(url: &str, size: usize, timeouts: Timeouts) -> anyhow::Result<Pool> {
    let config = bounded_sessions(url, timeouts)?;
    build_pool(config, size, timeouts, RecyclingMethod::Verified)
}

/// `url`'s connection settings, with Postgres's `statement_timeout` of its
/// sessions set to the statement timeout, after any options `url` gives.
fn bounded_sessions(url: &str, timeouts: Timeouts) -> anyhow::Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| anyhow::anyhow!("database.url is not a valid PostgreSQL URL: {e}"))?;
    let ours = format!("-c statement_timeout={}", timeouts.statement.as_millis());
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {ours}"),
        _ => ours,
    };
    config.options(&options);
    Ok(config)
}

/// The planner settings of the writer's sessions, name and value (see
/// [`writer_pool`]).
pub const WRITER_PLANNING: [(&str, &str); 3] = [
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// [`WRITER_PLANNING`] as `SET` commands: the writer sends them on each of its
/// connections before it prepares its statement, so its plans are made under
/// them even behind a pooler that drops connection options.
pub fn writer_planning_commands() -> String {
    WRITER_PLANNING
        .iter()
        .map(|(name, value)| format!("SET {name} = {value};"))
        .collect()
}

/// [`WRITER_PLANNING`] as connection options (`-c name=value`), for the tools
/// that run the writer's statements under pgbench (`settle-bench --writer-options`).
pub fn writer_planning_options() -> String {
    WRITER_PLANNING
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pool of the group-commit writer (`store::batch`), whose statements reach
/// every row through its primary key. Its sessions never plan a sequential scan,
/// nor a hash or merge join ([`WRITER_PLANNING`], set by the writer on each
/// connection): a plan cached while the table held a few rows (the writer's
/// statement is prepared once per connection, and Postgres keeps a generic plan
/// after five runs) would otherwise go on scanning the whole table for every
/// batch until the next ANALYZE, which on a busy new database was a minute of
/// throughput falling by two thirds. Nested loops also keep the order the write
/// statement locks its rows in.
///
/// Postgres ends a statement of these sessions that runs past the statement
/// timeout, the same bound after which the writer gives the connection up
/// (`driver::writer`), so a statement the writer stopped waiting for does not
/// hold its row locks on for long. The writer holds its connection for good and
/// checks it by the answers it gets, so it is never checked at checkout.
pub fn writer_pool(url: &str, size: usize, timeouts: Timeouts) -> anyhow::Result<Pool> {
    let config = bounded_sessions(url, timeouts)?;
    build_pool(config, size, timeouts, RecyclingMethod::Fast)
}

fn build_pool(
    mut config: tokio_postgres::Config,
    size: usize,
    timeouts: Timeouts,
    recycling_method: RecyclingMethod,
) -> anyhow::Result<Pool> {
    let connect_timeout = timeouts.connect;
    config.connect_timeout(connect_timeout);
    // Data sent and not acknowledged for this long (the server's host or the
    // network gone without a reset) closes the connection, wherever it is used.
    config.tcp_user_timeout(timeouts.statement);
    if config.get_application_name().is_none() {
        config.application_name("settle");
    }
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method });
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(connect_timeout))
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .build()?)
}

/// Creates the database named in `url` when it does not exist yet, connecting to
/// the `postgres` maintenance database on the same server.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let config = tokio_postgres::Config::from_str(url)?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to PostgreSQL to create database {name}: {e}"))?;
    let conn = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match client
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await
        {
            Ok(()) => tracing::info!(database = %name, "created database"),
            // Another instance created it a moment ago.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(anyhow::anyhow!("creating database {name}: {e}")),
        }
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}

pub fn to_time(ms: Millis) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH
    }
}

pub fn to_millis(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// RFC 3339 with milliseconds, as every API timestamp is written.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The instance's wall clock in milliseconds: the one place the coordinator reads it.
pub fn wall_clock_millis() -> Millis {
    to_millis(SystemTime::now())
}
