//! The group-commit writer. Transaction tasks hand their state writes here and
//! wait; writes leave in batches (one statement, one commit each), a few batches
//! at a time, so that concurrent transactions share commits. Whoever waits gets
//! its answer only once its batch is durable.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::Metrics;
use crate::store::batch::{self, StateWrite};
use crate::store::{self, transactions::Written};

struct Pending {
    write: Arc<StateWrite>,
    done: oneshot::Sender<store::Result<Written>>,
}

pub(super) struct Writer {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Writer {
    /// Starts the batching loop on `runtime`: at most `max_batch` writes per
    /// statement and `concurrency` statements under way at once; `stuck_webhook`
    /// queues a webhook notification with every write that makes a transaction stuck.
    pub fn start(
        pool: Pool,
        max_batch: usize,
        concurrency: usize,
        stuck_webhook: bool,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Writer {
        let (queue, mut pending) = mpsc::unbounded_channel::<Pending>();
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        runtime.spawn(async move {
            loop {
                // Take a slot first: while every slot is busy, writes pile up and
                // the next batch is larger.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = pending.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < max_batch.max(1) {
                    match pending.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                metrics.write_batch(batch.len());
                let pool = pool.clone();
                tokio::spawn(async move {
                    commit(&pool, batch, stuck_webhook).await;
                    drop(slot);
                });
            }
        });
        Writer { queue }
    }

    /// Queues a write and waits until it is durable (or refused by its fence).
    /// Shared, so that a caller retrying after a failed batch sends it again
    /// without copying it.
    pub async fn write(&self, write: Arc<StateWrite>) -> store::Result<Written> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { write, done })
            .map_err(|_| store::Error::Stopped)?;
        answer.await.map_err(|_| store::Error::Stopped)?
    }
}

async fn commit(pool: &Pool, batch: Vec<Pending>, stuck_webhook: bool) {
    let (writes, waiting): (Vec<Arc<StateWrite>>, Vec<_>) =
        batch.into_iter().map(|p| (p.write, p.done)).unzip();
    let refs: Vec<&StateWrite> = writes.iter().map(|w| &**w).collect();
    match batch::write(pool, &refs, stuck_webhook).await {
        Ok(results) => {
            for (done, result) in waiting.into_iter().zip(results) {
                let _ = done.send(Ok(result));
            }
        }
        Err(e) if writes.len() == 1 => {
            if let Some(done) = waiting.into_iter().next() {
                let _ = done.send(Err(e));
            }
        }
        Err(e) => {
            // One bad write must not sink the others: write them one by one.
            tracing::warn!(error = %e, size = writes.len(), "batched write failed; retrying its writes one by one");
            for (write, done) in refs.into_iter().zip(waiting) {
                let result = batch::write(pool, &[write], stuck_webhook).await;
                let _ = done.send(result.map(|mut r| r.pop().unwrap_or(Written::OwnershipLost)));
            }
        }
    }
}
