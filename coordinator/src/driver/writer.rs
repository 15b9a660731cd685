//! Group commit. Transaction tasks hand their creations and state writes here and
//! wait; they leave in batches (one statement, one commit each), so that
//! concurrent transactions share commits. Each kind has one connection, and a few
//! batches are sent on it at once (pipelined): Postgres runs them one after the
//! other without waiting for the coordinator in between. Whoever waits gets its
//! answer only once its batch is durable. A connection that leaves a batch
//! unanswered past the statement timeout is given up for a new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, OnceCell};
use tokio_postgres::Statement;

use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::batch::{self, StateWrite};
use crate::store::create::{self, Inserted, NewRow};
use crate::store::{self, transactions::Written};

/// One kind of write that can share a statement with others of its kind.
pub(super) trait Batch: Send + Sync + 'static {
    /// The writer's name in metrics.
    const NAME: &'static str;
    /// The one statement a batch is, prepared once per connection.
    const STATEMENT: &'static str;
    type Item: Send + Sync + 'static;
    type Answer: Send + 'static;
    /// Writes `items` in one statement ([`Batch::STATEMENT`], prepared on
    /// `client`); answers per item, in order.
    fn commit<'a>(
        &'a self,
        client: &'a ClientWrapper,
        statement: &'a Statement,
        items: &'a [&'a Self::Item],
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, store::Result<Vec<Self::Answer>>>;
}

/// Fenced state writes with their timeline events (`store::batch`).
pub(super) struct StateWrites {
    /// Queue a webhook notification with every write that makes a transaction stuck.
    pub stuck_webhook: bool,
}

impl Batch for StateWrites {
    const NAME: &'static str = "state_writes";
    const STATEMENT: &'static str = batch::WRITE_BATCH;
    type Item = StateWrite;
    type Answer = Written;
    fn commit<'a>(
        &'a self,
        client: &'a ClientWrapper,
        statement: &'a Statement,
        items: &'a [&'a StateWrite],
        metrics: &'a Metrics,
    ) -> BoxFuture<'a, store::Result<Vec<Written>>> {
        metrics.write_batch(items.len());
        batch::write(client, statement, items, self.stuck_webhook).boxed()
    }
}

/// New transactions, owned by this instance (`store::create`).
pub(super) struct Creations {
    pub owner: String,
}

impl Batch for Creations {
    const NAME: &'static str = "creations";
    const STATEMENT: &'static str = create::CREATE_BATCH;
    type Item = NewRow;
    type Answer = Inserted;
    fn commit<'a>(
        &'a self,
        client: &'a ClientWrapper,
        statement: &'a Statement,
        items: &'a [&'a NewRow],
        _metrics: &'a Metrics,
    ) -> BoxFuture<'a, store::Result<Vec<Inserted>>> {
        create::create(client, statement, &self.owner, items).boxed()
    }
}

struct Pending<B: Batch> {
    item: Arc<B::Item>,
    done: oneshot::Sender<store::Result<B::Answer>>,
}

pub(super) struct Writer<B: Batch> {
    queue: mpsc::UnboundedSender<Pending<B>>,
}

/// The one connection a writer sends its batches on.
struct Connection {
    client: Option<deadpool_postgres::Client>,
    /// A batch on it went unanswered past the statement timeout: nothing more
    /// is sent on it, and it never goes back into the pool.
    given_up: AtomicBool,
    /// The writer's statement, prepared on this connection at its first batch.
    statement: OnceCell<Statement>,
    /// Counts it when it is given up, under the writer's name.
    metrics: Arc<Metrics>,
    writer: &'static str,
}

impl Connection {
    fn new(
        client: deadpool_postgres::Client,
        metrics: Arc<Metrics>,
        writer: &'static str,
    ) -> Connection {
        Connection {
            client: Some(client),
            given_up: AtomicBool::new(false),
            statement: OnceCell::new(),
            metrics,
            writer,
        }
    }

    fn usable(&self) -> bool {
        !self.given_up.load(Ordering::Relaxed)
            && self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    fn client(&self) -> &ClientWrapper {
        self.client
            .as_ref()
            .expect("a connection keeps its client until dropped")
    }

    /// Writes `items` as one batch of `kind` on this connection, within `timeout`
    /// (the planner settings and the statement's preparation, the first time,
    /// included).
    async fn commit<B: Batch>(
        &self,
        kind: &B,
        items: &[&B::Item],
        timeout: Duration,
    ) -> store::Result<Vec<B::Answer>> {
        let client = self.client();
        self.answer(timeout, async {
            let statement = self
                .statement
                .get_or_try_init(|| async {
                    // The plan the statement is written for (store::writer_pool).
                    client
                        .batch_execute(&store::writer_planning_commands())
                        .await?;
                    client.prepare(B::STATEMENT).await
                })
                .await?;
            kind.commit(client, statement, items, &self.metrics).await
        })
        .await
    }

    /// `statement`'s answer, or `Unanswered` once `timeout` has passed without
    /// one; the connection is then given up, whatever became of the statement,
    /// and whatever is still to be sent on it fails the same way at once.
    async fn answer<T>(
        &self,
        timeout: Duration,
        statement: impl std::future::Future<Output = store::Result<T>>,
    ) -> store::Result<T> {
        if self.given_up.load(Ordering::Relaxed) {
            return Err(store::Error::Unanswered(timeout));
        }
        let answer = store::within(timeout, statement).await;
        if matches!(answer, Err(store::Error::Unanswered(_)))
            && !self.given_up.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                ?timeout,
                writer = self.writer,
                "the database left a batch unanswered; giving up its connection"
            );
            self.metrics.connection_given_up(self.writer);
        }
        answer
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if *self.given_up.get_mut() {
            if let Some(client) = self.client.take() {
                // Out of the pool for good; the socket closes once its task ends
                // (at the latest when TCP gives up on it).
                drop(deadpool_postgres::Client::take(client));
            }
        }
    }
}

impl<B: Batch> Writer<B> {
    /// Starts the batching loop on the current runtime, with a connection of its
    /// own (so a burst of starts never waits behind the state writes of running
    /// sagas, nor the reverse): at most `coordinator.write_batch_max` items per
    /// statement and `coordinator.write_concurrency` statements under way at
    /// once on it. Its pool has room for a second connection, to replace one
    /// that broke while statements on it were still finishing. A batch left
    /// unanswered for `database.statement_timeout` fails as `Unanswered`, and
    /// the next one goes out on a new connection.
    pub fn start(kind: B, settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Writer<B>> {
        let pool = store::writer_pool(
            &settings.database.url,
            2,
            store::Timeouts::of(&settings.database),
        )?;
        let max_batch = settings.coordinator.write_batch_max;
        let pipeline = settings.coordinator.write_concurrency.max(1);
        let timeout = settings.database.statement_timeout;
        let (queue, mut pending) = mpsc::unbounded_channel::<Pending<B>>();
        let kind = Arc::new(kind);
        tokio::spawn(async move {
            let mut connection: Option<Arc<Connection>> = None;
            // The batches under way, polled by this task rather than spawned: a
            // batch's answer reaches its callers without a hop through a task of
            // its own (at one write at a time, each hop is a wake-up of another
            // thread).
            let mut in_flight = FuturesUnordered::new();
            loop {
                tokio::select! {
                    biased;
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                    // While every slot is busy, items pile up and the next batch is larger.
                    first = pending.recv(), if in_flight.len() < pipeline => {
                        let Some(first) = first else { break };
                        let current = match connection.as_ref().filter(|c| c.usable()) {
                            Some(current) => current.clone(),
                            None => {
                                // Batches still under way are on the connection that
                                // went bad; their answers wait for this, bounded by
                                // the pool's own timeouts.
                                connection = None;
                                match pool.get().await {
                                    Ok(client) => {
                                        let fresh = Connection::new(client, metrics.clone(), B::NAME);
                                        connection.insert(Arc::new(fresh)).clone()
                                    }
                                    Err(e) => {
                                        let _ = first.done.send(Err(e.into()));
                                        continue;
                                    }
                                }
                            }
                        };
                        let mut batch = vec![first];
                        while batch.len() < max_batch.max(1) {
                            match pending.try_recv() {
                                Ok(p) => batch.push(p),
                                Err(_) => break,
                            }
                        }
                        let kind = kind.clone();
                        in_flight.push(async move { commit(&*kind, &current, timeout, batch).await });
                    }
                }
            }
            // The queue is closed: finish what is under way.
            while in_flight.next().await.is_some() {}
        });
        Ok(Writer { queue })
    }

    /// Queues an item and waits until it is durable (or refused). Shared, so
    /// that a caller retrying after a failed batch sends it again without copying it.
    pub async fn write(&self, item: Arc<B::Item>) -> store::Result<B::Answer> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { item, done })
            .map_err(|_| store::Error::Stopped)?;
        answer.await.map_err(|_| store::Error::Stopped)?
    }
}

async fn commit<B: Batch>(
    kind: &B,
    connection: &Connection,
    timeout: Duration,
    batch: Vec<Pending<B>>,
) {
    let (items, waiting): (Vec<Arc<B::Item>>, Vec<_>) =
        batch.into_iter().map(|p| (p.item, p.done)).unzip();
    let refs: Vec<&B::Item> = items.iter().map(|w| &**w).collect();
    match connection.commit(kind, &refs, timeout).await {
        Ok(answers) => {
            for (done, answer) in waiting.into_iter().zip(answers) {
                let _ = done.send(Ok(answer));
            }
        }
        Err(store::Error::Unanswered(after)) => {
            // The connection is given up: each caller retries on the next one.
            for done in waiting {
                let _ = done.send(Err(store::Error::Unanswered(after)));
            }
        }
        Err(e) if items.len() == 1 => {
            if let Some(done) = waiting.into_iter().next() {
                let _ = done.send(Err(e));
            }
        }
        Err(e) => {
            // One bad item must not sink the others: write them one by one.
            tracing::warn!(error = %e, size = items.len(), "batched write failed; retrying its items one by one");
            for (item, done) in refs.into_iter().zip(waiting) {
                let answer = connection
                    .commit(kind, &[item], timeout)
                    .await
                    .and_then(|mut a| {
                        a.pop().ok_or_else(|| {
                            store::Error::Corrupt("a batch of one had no answer".into())
                        })
                    });
                let _ = done.send(answer);
            }
        }
    }
}
