//! Everything a chaos run stands up and then abuses: a throwaway Postgres cluster and
//! redis-server for the coordinators, 2–3 `settle serve` processes that reach
//! Postgres and Redis through proxies of their own, the example order participants
//! (ledger on the shared server) and two XA banks (ledger on a second throwaway
//! cluster that is never restarted), each participant behind a proxy too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::json;
use settle_examples::bank::{self, Bank};
use settle_examples::Participants;
use settle_tests::coordinator::CoordinatorProcess;
use settle_tests::db::TestDatabase;
use settle_tests::pg_cluster::{PgCluster, PgSettings};
use settle_tests::proxy::{Fault, Proxy};
use settle_tests::redis_server::ThrowawayRedis;

/// The coordinators' database on their throwaway cluster.
const COORDINATOR_DB: &str = "settle";
/// Accounts per bank, and what each opens with.
pub const ACCOUNTS_PER_BANK: usize = 16;
pub const OPENING_BALANCE: i64 = 10_000;
/// Stock the example inventory seeds for each sku.
pub const SEED_STOCK: i64 = 1_000_000;
pub const SKUS: [&str; 2] = ["widget", "gadget"];

/// How long to wait between polls everywhere in the harness.
pub const POLL: Duration = Duration::from_millis(100);

/// The coordinators' lease; pauses last longer than this.
pub const LEASE: Duration = Duration::from_secs(2);

/// The coordinators' environment: a lease short enough for takeovers to happen many
/// times a run, and retry budgets long enough that no fault the harness injects (all
/// of them heal within seconds) can exhaust a compensation or phase two.
const COORDINATOR_ENV: [(&str, &str); 6] = [
    ("SETTLE__COORDINATOR__LEASE", "2s"), // LEASE
    ("SETTLE__TWOPC__CALL_TIMEOUT", "2s"),
    ("SETTLE__TWOPC__MAX_ATTEMPTS", "200"),
    ("SETTLE__TWOPC__MAX_BACKOFF", "1s"),
    ("SETTLE__DATABASE__CONNECT_TIMEOUT", "2s"),
    ("SETTLE__REDIS__TIMEOUT", "1s"),
];

/// One coordinator process and the proxies between it and Postgres and Redis.
pub struct Slot {
    pub process: Option<CoordinatorProcess>,
    pub pg_proxy: Arc<Proxy>,
    pub redis_proxy: Arc<Proxy>,
    /// True while the nemesis restarts this coordinator: its proxies stay clean so
    /// the start-up migration and readiness check can get through.
    pub calm: Arc<AtomicBool>,
    pub paused: bool,
}

/// The running system under test and every handle the nemesis and checks need.
pub struct World {
    pub coordinator_cluster: PgCluster,
    bank_cluster: PgCluster,
    pub redis: ThrowawayRedis,
    /// Kept for its lifetime: dropping it drops the order participants' database.
    _orders_db: TestDatabase,
    pub orders_pool: Pool,
    pub bank_pools: [Pool; 2],
    pub slots: Vec<Slot>,
    /// Base URLs of the coordinators answering now, for the clients.
    pub urls: Arc<Mutex<Vec<String>>>,
    /// inventory, payments, shipping, bank a, bank b.
    pub participant_proxies: Vec<Arc<Proxy>>,
    orders: Option<Participants>,
    order_ports: [u16; 3],
    banks: [Option<Bank>; 2],
    bank_ports: [u16; 2],
    prefix: String,
    binary: PathBuf,
}

impl World {
    pub async fn build(coordinators: usize) -> anyhow::Result<World> {
        let binary = std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("settle-under-test"))
            .filter(|path| path.exists())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "settle-under-test must be built next to settle-chaos \
                     (cargo build -p settle-tests --bins)"
                )
            })?;
        let coordinator_cluster = PgCluster::start(PgSettings::default()).await;
        coordinator_cluster.create_database(COORDINATOR_DB).await;
        let bank_cluster = PgCluster::start(PgSettings::default()).await;
        let redis = ThrowawayRedis::start().await;

        let orders_db = TestDatabase::create().await;
        let orders_pool = participant_pool(&orders_db.url, 16)?;
        settle_examples::setup(&orders_pool).await?;
        let orders = settle_examples::start(orders_pool.clone(), "127.0.0.1", [0; 3], None).await?;
        let order_ports = [
            orders.inventory.port(),
            orders.payments.port(),
            orders.shipping.port(),
        ];

        let mut bank_pools = Vec::new();
        let mut banks = Vec::new();
        for (index, letter) in ["a", "b"].into_iter().enumerate() {
            let pool =
                settle_examples::connect(&bank_cluster.url(&format!("bank_{letter}")), 8).await?;
            let accounts: Vec<(String, i64)> = (0..ACCOUNTS_PER_BANK)
                .map(|n| (account(index, n), OPENING_BALANCE))
                .collect();
            let accounts: Vec<(&str, i64)> =
                accounts.iter().map(|(a, b)| (a.as_str(), *b)).collect();
            bank::setup(&pool, &accounts).await?;
            banks.push(Some(bank::start(pool.clone(), "127.0.0.1", 0, None).await?));
            bank_pools.push(pool);
        }
        let bank_ports = [
            banks[0].as_ref().map_or(0, |b| b.addr.port()),
            banks[1].as_ref().map_or(0, |b| b.addr.port()),
        ];

        let mut participant_proxies = Vec::new();
        for port in order_ports.iter().chain(&bank_ports) {
            participant_proxies.push(Arc::new(Proxy::start(loopback(0), loopback(*port)).await?));
        }

        let prefix = settle_tests::unique("chaos");
        let mut world = World {
            slots: Vec::new(),
            urls: Arc::new(Mutex::new(Vec::new())),
            coordinator_cluster,
            bank_cluster,
            redis,
            _orders_db: orders_db,
            orders_pool,
            bank_pools: [bank_pools.remove(0), bank_pools.remove(0)],
            participant_proxies,
            orders: Some(orders),
            order_ports,
            banks: [banks.remove(0), banks.remove(0)],
            bank_ports,
            prefix,
            binary,
        };
        for _ in 0..coordinators {
            let pg_proxy = Arc::new(
                Proxy::start(loopback(0), loopback(world.coordinator_cluster.port)).await?,
            );
            let redis_proxy =
                Arc::new(Proxy::start(loopback(0), loopback(world.redis.port)).await?);
            world.slots.push(Slot {
                process: None,
                pg_proxy,
                redis_proxy,
                calm: Arc::new(AtomicBool::new(false)),
                paused: false,
            });
        }
        for index in 0..coordinators {
            world.start_coordinator(index).await?;
        }
        world.register_definition().await?;
        Ok(world)
    }

    /// The coordinators' database, straight to the cluster (no proxy), for checks.
    pub fn coordinator_db_url(&self) -> String {
        self.coordinator_cluster.url(COORDINATOR_DB)
    }

    /// The banks' cluster's `postgres` database, for diagnostics.
    pub fn bank_cluster_url(&self) -> String {
        self.bank_cluster.url("postgres")
    }

    /// Starts (again) the coordinator of slot `index`, with its proxies calm until it
    /// answers. Retries a start that a fault got in the way of.
    pub async fn start_coordinator(&mut self, index: usize) -> anyhow::Result<()> {
        let slot = &mut self.slots[index];
        slot.calm.store(true, Ordering::SeqCst);
        slot.pg_proxy.set_fault(Fault::None);
        slot.redis_proxy.set_fault(Fault::None);
        let db_url = format!(
            "postgres://postgres@{}/{COORDINATOR_DB}",
            slot.pg_proxy.addr()
        );
        let redis_url = format!("redis://{}", slot.redis_proxy.addr());
        let mut last_error = None;
        for _ in 0..3 {
            let binary = self.binary.to_string_lossy().into_owned();
            let (db_url, redis_url, prefix) =
                (db_url.clone(), redis_url.clone(), self.prefix.clone());
            // `spawn` fails the caller by panicking; a task turns that into an error.
            let started = tokio::spawn(async move {
                CoordinatorProcess::spawn(&binary, &db_url, &redis_url, &prefix, &COORDINATOR_ENV)
                    .await
            })
            .await;
            match started {
                Ok(process) => {
                    self.urls
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(process.base_url.clone());
                    let slot = &mut self.slots[index];
                    slot.process = Some(process);
                    slot.paused = false;
                    slot.calm.store(false, Ordering::SeqCst);
                    return Ok(());
                }
                Err(error) => last_error = Some(error),
            }
        }
        anyhow::bail!("coordinator {index} would not start: {last_error:?}")
    }

    /// SIGKILLs the coordinator of slot `index` (continuing it first if paused).
    pub fn kill_coordinator(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let Some(mut process) = slot.process.take() {
            self.urls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|url| *url != process.base_url);
            process.kill9();
        }
        slot.paused = false;
    }

    pub fn pause_coordinator(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let Some(process) = &slot.process {
            process.signal("STOP");
            slot.paused = true;
        }
    }

    pub fn resume_coordinator(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if let Some(process) = slot.process.as_ref().filter(|_| slot.paused) {
            process.signal("CONT");
            slot.paused = false;
        }
    }

    /// Crashes the example order participants and brings them back on the same ports.
    pub async fn crash_order_participants(&mut self, down: Duration) -> anyhow::Result<()> {
        if let Some(orders) = self.orders.take() {
            orders.crash().await;
        }
        tokio::time::sleep(down).await;
        self.orders = Some(
            settle_examples::start(
                self.orders_pool.clone(),
                "127.0.0.1",
                self.order_ports,
                None,
            )
            .await?,
        );
        Ok(())
    }

    /// Crashes bank `index` and brings it back on the same port.
    pub async fn crash_bank(&mut self, index: usize, down: Duration) -> anyhow::Result<()> {
        if let Some(bank) = self.banks[index].take() {
            bank.crash().await;
        }
        tokio::time::sleep(down).await;
        self.banks[index] = Some(
            bank::start(
                self.bank_pools[index].clone(),
                "127.0.0.1",
                self.bank_ports[index],
                None,
            )
            .await?,
        );
        Ok(())
    }

    /// Removes the fault from every proxy and brings every coordinator back.
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        for proxy in &self.participant_proxies {
            proxy.set_fault(Fault::None);
        }
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            slot.calm.store(true, Ordering::SeqCst);
            slot.pg_proxy.set_fault(Fault::None);
            slot.redis_proxy.set_fault(Fault::None);
            self.resume_coordinator(index);
            if self.slots[index].process.is_none() {
                self.start_coordinator(index).await?;
            }
            self.slots[index].calm.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Registers the order-checkout saga, its participants reached through their
    /// proxies, on any coordinator that answers.
    async fn register_definition(&self) -> anyhow::Result<()> {
        let url = |proxy: usize, path: &str| {
            format!("http://{}{path}", self.participant_proxies[proxy].addr())
        };
        let step = |name: &str, proxy: usize, action: &str, compensation: &str| {
            json!({
                "name": name,
                "action": { "url": url(proxy, action), "timeout": "2s" },
                "compensation": {
                    "url": url(proxy, compensation),
                    "timeout": "2s",
                    // Compensations must outlast every fault the harness injects.
                    "retry": { "max_attempts": 500 }
                },
            })
        };
        let definition = json!({
            "name": settle_examples::ORDER_CHECKOUT,
            "description": "reserve stock, charge the card, book shipping (chaos)",
            "timeout": "30s",
            "retry": { "max_attempts": 8, "initial_backoff": "100ms", "max_backoff": "1s", "multiplier": 2.0 },
            "steps": [
                step("reserve-inventory", 0, "/reservations", "/reservations/release"),
                step("charge-payment", 1, "/charges", "/refunds"),
                step("ship-order", 2, "/shipments", "/shipments/cancel"),
            ],
        })
        .to_string();
        let first = self.slots[0]
            .process
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no coordinator to register the definition with"))?;
        first
            .client
            .register_definition(
                settle_examples::ORDER_CHECKOUT,
                &definition,
                "application/json",
            )
            .await?;
        Ok(())
    }

    /// The URL of participant proxy `index` and `path`.
    pub fn participant_url(&self, index: usize, path: &str) -> String {
        format!("http://{}{path}", self.participant_proxies[index].addr())
    }

    /// Stops the coordinators before the clusters they use go away.
    pub async fn shut_down(mut self) {
        for index in 0..self.slots.len() {
            self.kill_coordinator(index);
        }
        if let Some(orders) = self.orders.take() {
            orders.stop().await;
        }
        for bank in self.banks.iter_mut().filter_map(Option::take) {
            bank.stop().await;
        }
    }
}

/// A participant's pool that gives up waiting for a connection after a while, so
/// that calls the coordinator has long given up on (their handlers keep running after
/// the caller hung up) cannot queue without bound behind the ones that matter; the
/// participant answers "retry" instead.
fn participant_pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    Ok(Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_millis(500)))
        .create_timeout(Some(Duration::from_secs(2)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

/// The name of account `n` at bank `bank` (0 = a, 1 = b).
pub fn account(bank: usize, n: usize) -> String {
    format!("{}{n}", if bank == 0 { "a" } else { "b" })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
