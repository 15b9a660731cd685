//! Executes what the machines decide: one task per saga this instance owns makes
//! the participant calls, persists each outcome (fenced) before acting on it, and
//! keeps timers for retries; background loops renew leases and claim due work.

mod call;
mod operator;
mod recovery;
mod retention;
mod run;
mod twopc;
mod workflow;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::lock::{Locks, Token};
use crate::machine::saga::Saga;
use crate::machine::Clock;
use crate::metrics::{self, Metrics};
use crate::outbound::Outbound;
use crate::settings::Settings;
use crate::specs::{self, Specs};
use crate::store::{
    self,
    create::{Inserted, NewRow},
    transactions::EventRecord,
};
use crate::telemetry::TraceContext;
use workflow::{Event, SagaRun, Step, Workflow};

pub use operator::Acted;
pub use twopc::{branch_spec as twopc_branch_spec, CloseError, Closed, TxStartError};

/// Messages to a running saga task.
#[derive(Debug)]
enum Command {
    Cancel,
    OwnershipLost,
}

/// This instance's belief about how long it still owns a transaction, on the
/// monotonic clock (a paused process wakes up to an expired lease, not a fresh one).
#[derive(Debug)]
struct Lease {
    valid_until_ms: AtomicU64,
}

struct Owned {
    fence: i64,
    commands: mpsc::UnboundedSender<Command>,
    lease: Arc<Lease>,
    lock: Option<Token>,
}

/// Callers waiting for one transaction to settle.
#[derive(Default)]
struct Waiting {
    notify: Notify,
    /// The row as the write that finished the transaction stored it: terminal
    /// states never change, so it is what a read would return.
    finished: Mutex<Option<Box<store::transactions::TransactionRow>>>,
}

pub struct Driver {
    pool: Pool,
    locks: Arc<Locks>,
    specs: Arc<Specs>,
    http: Outbound,
    /// Secrets every participant call is signed with: the current one, then the one being retired.
    signing_secrets: Arc<[crate::settings::Secret]>,
    settings: Settings,
    owned: Mutex<HashMap<Uuid, Owned>>,
    waiters: Mutex<HashMap<Uuid, Arc<Waiting>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
    epoch: Instant,
    writer: writer::Writer<writer::StateWrites>,
    creator: writer::Writer<writer::Creations>,
    /// Permits for participant calls under way (`participants.max_concurrent_calls`).
    calls: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Definition(#[from] specs::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The idempotency key was used with a different request.
    #[error("idempotency key reused with a different request")]
    KeyReused,
    #[error("the coordinator is shutting down")]
    ShuttingDown,
}

/// A start: a new transaction, or the one an idempotency key already named.
#[derive(Debug)]
pub enum Started {
    New(Created),
    Existing(Uuid),
}

/// A transaction this start created, with what it stored.
#[derive(Debug)]
pub struct Created {
    row: Arc<NewRow>,
    fence: i64,
    created_at: std::time::SystemTime,
}

impl Created {
    pub fn id(&self) -> Uuid {
        self.row.id
    }

    /// The row as the creation stored it, without reading it back: what a start
    /// that does not wait answers with. The transaction may have moved on since.
    pub fn stored(&self) -> Result<store::transactions::TransactionRow, store::Error> {
        self.row.as_stored(self.fence, self.created_at)
    }
}

impl Driver {
    /// Must be called on the runtime that should run the saga tasks.
    pub fn new(
        pool: Pool,
        locks: Arc<Locks>,
        specs: Arc<Specs>,
        settings: Settings,
    ) -> anyhow::Result<Arc<Driver>> {
        let http = Outbound::new(
            settings.participants.ca_file.as_deref(),
            settings.participants.pool_idle_per_host,
        )?;
        let metrics = Arc::new(Metrics::new());
        let writer = writer::Writer::start(
            writer::StateWrites {
                stuck_webhook: settings.webhook.url.is_some(),
            },
            &settings,
            metrics.clone(),
        )?;
        let creator = writer::Writer::start(
            writer::Creations {
                owner: settings.coordinator.instance_id.clone(),
            },
            &settings,
            metrics.clone(),
        )?;
        Ok(Arc::new(Driver {
            calls: Arc::new(tokio::sync::Semaphore::new(
                settings.participants.max_concurrent_calls,
            )),
            writer,
            creator,
            metrics,
            pool,
            locks,
            specs,
            http,
            signing_secrets: [
                settings.participants.signing_secret.clone(),
                settings.participants.previous_signing_secret.clone(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            settings,
            owned: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
            epoch: Instant::now(),
        }))
    }

    /// A statement of a loop that must go on, bounded by `database.statement_timeout`.
    async fn within<T>(
        &self,
        statement: impl std::future::Future<Output = store::Result<T>>,
    ) -> store::Result<T> {
        store::within(self.settings.database.statement_timeout, statement).await
    }

    pub fn instance(&self) -> &str {
        &self.settings.coordinator.instance_id
    }

    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text exposition for `/metrics`.
    pub async fn render_metrics(&self) -> String {
        let (lock_held, lock_unreachable) = self.locks.acquire_failures();
        self.metrics
            .render(
                &self.pool,
                metrics::Snapshot {
                    owned: self.in_flight(),
                    lock_held,
                    lock_unreachable,
                },
            )
            .await
    }

    fn lease_duration(&self) -> Duration {
        self.settings.coordinator.lease
    }

    fn monotonic_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records that a lease write was sent at `sent_ms`: trust it for 80% of its length.
    fn lease_renewed(&self, lease: &Lease, sent_ms: u64) {
        let valid = sent_ms + self.lease_duration().as_millis() as u64 * 4 / 5;
        lease.valid_until_ms.fetch_max(valid, Ordering::Relaxed);
    }

    fn lease_valid(&self, lease: &Lease) -> bool {
        self.monotonic_ms() < lease.valid_until_ms.load(Ordering::Relaxed)
    }

    /// How many sagas this instance is driving right now.
    pub fn in_flight(&self) -> usize {
        self.owned.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Starts the background loops: lease renewal, recovery claims and retention.
    pub fn spawn_background(self: &Arc<Self>) {
        let me = self.clone();
        self.runtime.spawn(async move { me.renew_loop().await });
        let me = self.clone();
        self.runtime.spawn(async move { me.recovery_loop().await });
        let me = self.clone();
        self.runtime.spawn(async move { me.retention_loop().await });
        let deliverer = crate::webhook::Deliverer {
            pool: self.pool.clone(),
            http: self.http.clone(),
            settings: self.settings.webhook.clone(),
            metrics: self.metrics.clone(),
        };
        self.runtime
            .spawn(deliverer.run(self.shutdown.child_token()));
    }

    /// Creates a saga (one commit, shared with concurrent starts) and drives it
    /// at once, in this process.
    pub async fn start_saga(
        self: &Arc<Self>,
        definition: &str,
        input: Value,
        idempotency_key: Option<&str>,
        actor: &str,
        trace: Option<&TraceContext>,
    ) -> Result<Started, StartError> {
        if self.shutdown.is_cancelled() {
            return Err(StartError::ShuttingDown);
        }
        let mut spec = self.specs.latest(definition).await?;
        let input = Arc::new(input);
        let raw_input = serde_json::value::to_raw_value(&*input)
            .map_err(|e| store::Error::Corrupt(e.to_string()))?;
        let digest = request_digest(&[definition.as_bytes(), raw_input.get().as_bytes()]);
        loop {
            let id = Uuid::now_v7();
            let clock = self.clock();
            let mut run = SagaRun {
                saga: Saga::new(&spec, clock.now),
                spec: spec.clone(),
                input: input.clone(),
            };
            let mut first = run.on(Event::Start, clock);
            // The creation below is the durable write of this step.
            first.durable = false;
            let progress = run
                .progress()
                .map_err(|e| store::Error::Corrupt(e.to_string()))?;
            let sent_ms = self.monotonic_ms();
            let row = Arc::new(NewRow {
                id,
                kind: "saga",
                definition: Some(definition.to_string()),
                version: Some(spec.version),
                state: run.state(),
                input: raw_input.clone(),
                progress,
                idempotency_key: idempotency_key.map(str::to_owned),
                request_digest: digest.clone(),
                deadline_ms: run.saga.deadline,
                next_ms: run.wake_at(clock.now),
                lease_ms: self.lease_duration().as_millis() as i64,
                actor: actor.to_string(),
                traceparent: trace.map(TraceContext::traceparent),
                tracestate: trace.and_then(|t| t.tracestate.clone()),
            });
            return match self.creator.write(row.clone()).await? {
                Inserted::Created { fence, created_at } => {
                    tracing::info!(transaction_id = %id, definition, version = spec.version, "saga started");
                    self.metrics.started("saga", definition);
                    self.drive_created(id, fence, run, first, trace, sent_ms);
                    Ok(Started::New(Created {
                        row,
                        fence,
                        created_at,
                    }))
                }
                Inserted::Existing { id, same_request } if same_request => {
                    Ok(Started::Existing(id))
                }
                Inserted::Existing { .. } => Err(StartError::KeyReused),
                // Registered meanwhile, perhaps through another instance.
                Inserted::StaleVersion => {
                    spec = self.specs.newest(definition).await?;
                    continue;
                }
            };
        }
    }

    /// Asks a running saga to compensate. Returns its state at the time, or None
    /// when there is no such saga.
    pub async fn cancel(&self, id: Uuid, actor: &str) -> Result<Option<String>, store::Error> {
        let state = store::transactions::request_cancel(&self.pool, id, actor).await?;
        if state.as_deref() == Some("running") {
            let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(o) = owned.get(&id) {
                let _ = o.commands.send(Command::Cancel);
            }
        }
        Ok(state)
    }

    /// Waits until the transaction is settled (terminal or stuck) or `until` passes,
    /// and returns it as stored. While this instance drives the transaction it
    /// reads nothing: every state change and the task's end wake it, and the
    /// write that finishes the transaction hands over the stored row.
    /// Transactions another instance drives are polled.
    pub async fn wait(
        &self,
        id: Uuid,
        until: Instant,
    ) -> Result<Option<store::transactions::TransactionRow>, store::Error> {
        let waiting = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            waiters.entry(id).or_default().clone()
        };
        let result = async {
            loop {
                let notified = waiting.notify.notified();
                tokio::pin!(notified);
                // Registered before looking, so a wake-up between the look and the
                // wait is not lost.
                notified.as_mut().enable();
                let finished = waiting
                    .finished
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(row) = finished {
                    return Ok(Some(*row));
                }
                let driven_here = self.owns(id);
                if !driven_here || Instant::now() >= until {
                    let row = store::transactions::get(&self.pool, id).await?;
                    // A stuck saga waits for an operator; a stuck 2PC transaction keeps retrying.
                    let settled = row.as_ref().is_none_or(|r| {
                        crate::machine::FINISHED_STATES.contains(&r.state.as_str())
                            || (r.state == "stuck" && r.kind == "saga")
                    });
                    if settled || Instant::now() >= until {
                        return Ok(row);
                    }
                }
                let poll = Instant::now() + Duration::from_millis(500);
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(poll.min(until).into()) => {}
                }
            }
        }
        .await;
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.get(&id).is_some_and(|n| Arc::strong_count(n) <= 2) {
            waiters.remove(&id);
        }
        result
    }

    /// Whether a task of this instance is driving the transaction right now.
    fn owns(&self, id: Uuid) -> bool {
        let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        owned.contains_key(&id)
    }

    /// Wakes whoever waits for `id`, handing over the stored row when the write
    /// just made finished the transaction.
    fn notify_waiters(&self, id: Uuid, finished: Option<Box<store::transactions::TransactionRow>>) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = waiters.get(&id) {
            if finished.is_some() {
                *w.finished.lock().unwrap_or_else(|p| p.into_inner()) = finished;
            }
            w.notify.notify_waiters();
        }
    }

    fn clock(&self) -> Clock {
        Clock {
            now: store::wall_clock_millis(),
            jitter: rand::random::<f64>(),
        }
    }

    /// Drives a transaction this instance has just created, under the fence its
    /// creation got, in the caller's trace or one of its own.
    fn drive_created<W: Workflow>(
        self: &Arc<Self>,
        id: Uuid,
        fence: i64,
        w: W,
        first: Step<W::Call>,
        trace: Option<&TraceContext>,
        sent_ms: u64,
    ) {
        let trace = trace
            .cloned()
            .unwrap_or_else(|| TraceContext::of_transaction(id));
        self.adopt(
            run::Run {
                id,
                fence,
                w,
                trace,
            },
            (first, Vec::new()),
            None,
            sent_ms,
        );
    }

    /// Registers a transaction as owned here and spawns its task.
    fn adopt<W: Workflow>(
        self: &Arc<Self>,
        run: run::Run<W>,
        first: (Step<W::Call>, Vec<EventRecord>),
        lock: Option<Token>,
        sent_ms: u64,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let lease = Arc::new(Lease {
            valid_until_ms: AtomicU64::new(0),
        });
        self.lease_renewed(&lease, sent_ms);
        let previous = {
            let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            owned.insert(
                run.id,
                Owned {
                    fence: run.fence,
                    commands: tx,
                    lease: lease.clone(),
                    lock,
                },
            )
        };
        if let Some(previous) = previous {
            let _ = previous.commands.send(Command::OwnershipLost);
        }
        let me = self.clone();
        self.tasks.spawn_on(
            async move { me.drive(run, first, rx, lease).await },
            &self.runtime,
        );
    }

    /// Forgets a saga this task owned, releasing its Redis lock.
    async fn disown(&self, id: Uuid, fence: i64) {
        let removed = {
            let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            match owned.get(&id) {
                Some(o) if o.fence == fence => owned.remove(&id),
                _ => None,
            }
        };
        if let Some(Owned {
            lock: Some(token), ..
        }) = removed
        {
            if let Err(e) = self.locks.release(id, &token).await {
                tracing::debug!(transaction_id = %id, error = %e, "lock release skipped");
            }
        }
    }

    /// Stops taking work, lets calls in flight finish (bounded by `timeout`), and
    /// gives every owned transaction back so another instance can take it at once.
    pub async fn shutdown(&self, timeout: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.in_flight(),
                "shutdown timeout: leaving the rest to lease expiry"
            );
        }
    }
}

/// Hex SHA-256 over the parts of a request, to tell a replay from a different
/// request under the same idempotency key.
fn request_digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{self, Format};

    /// Every transaction in flight keeps its task's future for its whole life, so
    /// a rare await on a large future (a pooled query, a Redis call) left inline
    /// widens all of them: 3.5 KB more per task was 35 MB more RSS with 10,000 in
    /// flight. Such awaits are boxed; this keeps them so. (Debug build, when
    /// written: 1,488 bytes; 2,248 with `disown` inline, 2,904 with the release at
    /// shutdown inline, 6,544 with the ownership check's bounded renewal inline.)
    #[tokio::test]
    async fn a_transaction_task_stays_small() {
        let settings = Settings::defaults();
        let pool = store::pool(
            &settings.database.url,
            1,
            store::Timeouts::of(&settings.database),
        )
        .expect("a pool (it connects lazily)");
        let locks = Locks::new(&settings.redis.url, "size-test", settings.redis.timeout)
            .expect("a Redis client (it connects lazily)");
        let specs = Arc::new(Specs::new(pool.clone()));
        let driver = Driver::new(pool, Arc::new(locks), specs, settings).expect("a driver");
        let yaml =
            "name: small\nsteps:\n  - name: a\n    action: { url: \"http://127.0.0.1:9/a\" }\n";
        let doc = definition::parse(yaml.as_bytes(), Format::Yaml).expect("a definition");
        let spec = Arc::new(definition::compile(&doc, 1).expect("a valid definition"));
        let clock = driver.clock();
        let mut w = SagaRun {
            saga: Saga::new(&spec, clock.now),
            spec,
            input: Arc::new(Value::Null),
        };
        let first = w.on(Event::Start, clock);
        let run = run::Run {
            id: Uuid::nil(),
            fence: 1,
            w,
            trace: TraceContext::of_transaction(Uuid::nil()),
        };
        let (_commands, rx) = mpsc::unbounded_channel();
        let lease = Arc::new(Lease {
            valid_until_ms: AtomicU64::new(0),
        });
        let task = driver.clone().drive(run, (first, Vec::new()), rx, lease);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 2_000,
            "a saga's task future is {size} bytes: box the rare awaits in `Driver::drive`"
        );
    }
}
