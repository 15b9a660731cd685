//! Example participants for Settle's order-checkout saga, built on the participant
//! SDK: inventory (`/reservations`), payments (`/charges`) and shipping
//! (`/shipments`), each with its own schema, barrier and ledger in one database.
//!
//! End-to-end tests set up the schemas, start the three servers on free ports and
//! register a definition pointing at them:
//!
//! ```no_run
//! # async fn run(pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
//! settle_examples::setup(&pool).await?;
//! let participants = settle_examples::start(pool.clone(), "127.0.0.1", [0, 0, 0], None).await?;
//! let definition = participants.order_checkout_definition();
//! // ... register `definition` (JSON) with the coordinator and run sagas ...
//! participants.stop().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::json;
use settle_participant::barrier::Barrier;
use settle_participant::signature::Verifier;
use tokio_postgres::NoTls;

pub mod bank;
mod http;
pub mod inventory;
pub mod ledger;
pub mod payments;
pub mod shipping;

pub use http::{Error, Service};

/// The ports the example participants listen on by default: inventory, payments, shipping.
pub const DEFAULT_PORTS: [u16; 3] = [7101, 7102, 7103];

/// The name of the saga [`Participants::order_checkout_definition`] describes.
pub const ORDER_CHECKOUT: &str = "order-checkout";

/// Creates the three schemas, their tables and barrier tables, and seeds stock
/// (`widget` and `gadget`, 1 000 000 each). Idempotent, and safe to run from
/// several processes at once.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
/// settle_examples::setup(&pool).await?;
/// settle_examples::setup(&pool).await?; // changes nothing
/// # Ok(()) }
/// ```
pub async fn setup(pool: &Pool) -> anyhow::Result<()> {
    let mut client = pool
        .get()
        .await
        .context("connecting to the participant database")?;
    let tx = client.transaction().await.context("starting the set-up")?;
    // Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog.
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtext('settle-examples setup'))")
        .await
        .context("locking the set-up")?;
    for (schema, sql) in [
        (inventory::SCHEMA, inventory::SETUP_SQL),
        (payments::SCHEMA, payments::SETUP_SQL),
        (shipping::SCHEMA, shipping::SETUP_SQL),
    ] {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("creating the {schema} tables"))?;
        Barrier::new(schema)?
            .ensure_table(&*tx)
            .await
            .with_context(|| format!("creating the {schema} barrier table"))?;
    }
    tx.commit().await.context("committing the set-up")?;
    Ok(())
}

/// The three running participant servers.
pub struct Participants {
    pub inventory: SocketAddr,
    pub payments: SocketAddr,
    pub shipping: SocketAddr,
    servers: Vec<http::Running>,
}

impl std::fmt::Debug for Participants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participants")
            .field("inventory", &self.inventory)
            .field("payments", &self.payments)
            .field("shipping", &self.shipping)
            .finish_non_exhaustive()
    }
}

/// Starts inventory, payments and shipping on `bind_host` and `ports` (in that order;
/// 0 picks a free port) as actix-web servers spawned on the current tokio runtime.
/// With a verifier, every call must carry a valid `Settle-Signature`.
///
/// ```no_run
/// # async fn run(pool: deadpool_postgres::Pool) -> anyhow::Result<()> {
/// let participants = settle_examples::start(pool, "127.0.0.1", [0, 0, 0], None).await?;
/// println!("inventory at {}", participants.inventory);
/// participants.stop().await;
/// # Ok(()) }
/// ```
pub async fn start(
    pool: Pool,
    bind_host: &str,
    ports: [u16; 3],
    verifier: Option<Verifier>,
) -> anyhow::Result<Participants> {
    let [inventory_port, payments_port, shipping_port] = ports;
    let mut servers = Vec::with_capacity(3);
    for (schema, port, routes) in [
        (
            inventory::SCHEMA,
            inventory_port,
            inventory::routes as fn(&mut _),
        ),
        (payments::SCHEMA, payments_port, payments::routes),
        (shipping::SCHEMA, shipping_port, shipping::routes),
    ] {
        let service = Service {
            pool: pool.clone(),
            barrier: Barrier::new(schema)?,
        };
        match http::serve(bind_host, port, service, verifier.clone(), routes) {
            Ok(running) => {
                tracing::info!(participant = schema, addr = %running.addr, "listening");
                servers.push(running);
            }
            Err(error) => {
                // Do not leave the servers already started running.
                stop_all(servers).await;
                return Err(error.context(format!("starting the {schema} participant")));
            }
        }
    }
    Ok(Participants {
        inventory: servers[0].addr,
        payments: servers[1].addr,
        shipping: servers[2].addr,
        servers,
    })
}

impl Participants {
    /// `http://{addr}{path}` for one of the participants' addresses.
    ///
    /// ```
    /// let addr = "127.0.0.1:7101".parse().unwrap();
    /// assert_eq!(settle_examples::Participants::url(addr, "/reservations"), "http://127.0.0.1:7101/reservations");
    /// ```
    pub fn url(addr: SocketAddr, path: &str) -> String {
        format!("http://{addr}{path}")
    }

    /// The order-checkout saga definition (JSON text) wired to these servers:
    /// `reserve-inventory` → `charge-payment` → `ship-order`, each with its
    /// compensation. Register it with `PUT /v1/saga-definitions/order-checkout`.
    ///
    /// ```no_run
    /// # async fn run(participants: settle_examples::Participants, client: settle_participant::client::CoordinatorClient) -> anyhow::Result<()> {
    /// let definition = participants.order_checkout_definition();
    /// client.register_definition("order-checkout", &definition, "application/json").await?;
    /// # Ok(()) }
    /// ```
    pub fn order_checkout_definition(&self) -> String {
        let step = |name: &str, addr: SocketAddr, action: &str, compensation: &str| {
            json!({
                "name": name,
                "action": { "url": Self::url(addr, action) },
                "compensation": { "url": Self::url(addr, compensation) },
            })
        };
        json!({
            "name": ORDER_CHECKOUT,
            "description": "reserve stock, charge the card, book shipping",
            "steps": [
                step("reserve-inventory", self.inventory, "/reservations", "/reservations/release"),
                step("charge-payment", self.payments, "/charges", "/refunds"),
                step("ship-order", self.shipping, "/shipments", "/shipments/cancel"),
            ],
        })
        .to_string()
    }

    /// Stops the three servers gracefully and waits for them to finish.
    pub async fn stop(self) {
        stop_all(self.servers).await;
    }

    /// Stops the three servers the way a crash would, for chaos tests: calls in
    /// flight are cut off, not finished (what they committed stays committed).
    pub async fn crash(self) {
        crash_all(self.servers).await;
    }
}

/// Stops servers without waiting for the calls in flight, and waits until their
/// ports are closed.
pub(crate) async fn crash_all(servers: Vec<http::Running>) {
    for server in servers {
        server.handle.stop(false).await;
        let _ = server.task.await;
    }
}

async fn stop_all(servers: Vec<http::Running>) {
    for server in servers {
        server.handle.stop(true).await;
        match server.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, addr = %server.addr, "participant server failed")
            }
            Err(error) => {
                tracing::warn!(%error, addr = %server.addr, "participant server task failed")
            }
        }
    }
}

/// Connects to the participant database at `url` (a `postgres://` URL or libpq
/// key=value string), creating the database first if it does not exist.
///
/// ```no_run
/// # async fn run() -> anyhow::Result<()> {
/// let pool = settle_examples::connect("postgres://postgres@127.0.0.1:5432/settle_examples", 16).await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str, max_connections: usize) -> anyhow::Result<Pool> {
    let config = tokio_postgres::Config::from_str(url).context("parsing the database URL")?;
    if let Some(dbname) = config.get_dbname() {
        create_database_if_missing(&config, dbname).await?;
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // A call that cannot get a connection soon answers "retry later" instead of
    // queueing behind calls whose coordinator already gave up on them.
    let pool = Pool::builder(manager)
        .max_size(max_connections)
        .wait_timeout(Some(std::time::Duration::from_millis(500)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .context("building the connection pool")?;
    // Fail here, with the cause, rather than on the first call.
    drop(
        pool.get()
            .await
            .context("connecting to the participant database")?,
    );
    Ok(pool)
}

async fn create_database_if_missing(
    config: &tokio_postgres::Config,
    dbname: &str,
) -> anyhow::Result<()> {
    let plain = !dbname.is_empty()
        && dbname.len() <= 63
        && dbname.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && dbname
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        // Cannot be spliced into CREATE DATABASE safely; assume it exists.
        return Ok(());
    }
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin
        .connect(NoTls)
        .await
        .context("connecting to the postgres database to create the participant database")?;
    let connection = tokio::spawn(connection);
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&dbname],
        )
        .await
        .context("looking for the participant database")?
        .try_get(0)?;
    if !exists {
        match client
            .batch_execute(&format!("CREATE DATABASE {dbname}"))
            .await
        {
            Ok(()) => tracing::info!(database = dbname, "created the participant database"),
            // Another process created it between the check and here.
            Err(error)
                if error.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(error) => return Err(error).context("creating the participant database"),
        }
    }
    drop(client);
    connection.await.context("closing the admin connection")??;
    Ok(())
}
