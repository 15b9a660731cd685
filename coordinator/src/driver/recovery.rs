//! Background loops: renewing the leases (and Redis locks) of everything this
//! instance drives, and claiming due work whose owner is gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::workflow::{Event, SagaRun, TxRun, Workflow};
use super::{run::Run, Command, Driver};
use crate::machine::saga::Saga;
use crate::machine::twopc::TwoPc;
use crate::store::{
    self,
    transactions::{EventRecord, TransactionRow},
};
use crate::telemetry::TraceContext;

/// The trace a stored transaction's calls belong to, whoever drives it.
pub(super) fn trace_of(row: &TransactionRow) -> TraceContext {
    TraceContext::stored_or_own(
        row.id,
        row.traceparent.as_deref(),
        row.tracestate.as_deref(),
    )
}

impl Driver {
    pub(super) async fn renew_loop(self: Arc<Self>) {
        let every = self.lease_duration() / 3;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.renew_once().await;
        }
    }

    async fn renew_once(&self) {
        let snapshot: Vec<(uuid::Uuid, i64)> = {
            let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            owned.iter().map(|(id, o)| (*id, o.fence)).collect()
        };
        if snapshot.is_empty() {
            return;
        }
        let sent_ms = self.monotonic_ms();
        let kept = match self
            .within(store::transactions::renew(
                &self.pool,
                &snapshot,
                self.lease_duration(),
            ))
            .await
        {
            Ok(kept) => kept.into_iter().collect::<HashMap<_, _>>(),
            Err(e) => {
                tracing::warn!(error = %e, count = snapshot.len(), "lease renewal failed");
                return;
            }
        };
        let mut locks = Vec::new();
        {
            let owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            for (id, fence) in &snapshot {
                let Some(o) = owned.get(id).filter(|o| o.fence == *fence) else {
                    continue;
                };
                match kept.get(id) {
                    Some(cancel_requested) => {
                        self.lease_renewed(&o.lease, sent_ms);
                        if *cancel_requested {
                            let _ = o.commands.send(Command::Cancel);
                        }
                        if let Some(token) = &o.lock {
                            locks.push((*id, token.clone()));
                        }
                    }
                    None => {
                        let _ = o.commands.send(Command::OwnershipLost);
                    }
                }
            }
        }
        for (id, token) in locks {
            match self.locks.renew(id, &token, self.lease_duration()).await {
                Ok(true) => {}
                Ok(false) => {
                    // Said once: the token is dropped, so later renewals go by the fence alone.
                    tracing::warn!(transaction_id = %id, "redis lock lost; the Postgres fence still guards this transaction");
                    let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(o) = owned.get_mut(&id) {
                        if o.lock.as_ref() == Some(&token) {
                            o.lock = None;
                        }
                    }
                }
                Err(_) => break,
            }
        }
    }

    pub(super) async fn recovery_loop(self: Arc<Self>) {
        let every = self.settings.coordinator.recovery_interval;
        loop {
            let claimed = match self
                .within(store::transactions::claim_due(
                    &self.pool,
                    self.instance(),
                    self.lease_duration(),
                    self.settings.coordinator.claim_batch,
                ))
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "recovery claim failed");
                    Vec::new()
                }
            };
            let full_batch = claimed.len() as i64 >= self.settings.coordinator.claim_batch;
            if !claimed.is_empty() {
                tracing::info!(count = claimed.len(), "claimed due transactions");
            }
            let sent_ms = self.monotonic_ms();
            let now = std::time::SystemTime::now();
            for row in claimed {
                let due = row.next_attempt_at.unwrap_or(now);
                self.metrics
                    .recovery_claim(now.duration_since(due).unwrap_or_default());
                self.take_over(row, sent_ms).await;
            }
            // A full batch means more may be waiting: claim again at once.
            let pause = if full_batch { Duration::ZERO } else { every };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    #[tracing::instrument(skip_all, fields(transaction_id = %row.id))]
    async fn take_over(self: &Arc<Self>, row: TransactionRow, sent_ms: u64) {
        let lock = match self.locks.acquire(row.id, self.lease_duration()).await {
            Ok(Some(token)) => Some(token),
            Ok(None) => {
                // Someone still holds the lock: their lease only just expired. Look again later.
                let wait = self
                    .locks
                    .remaining(row.id)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(self.lease_duration());
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    "transaction locked by another instance; backing off"
                );
                let _ = store::transactions::release(&self.pool, row.id, row.fence, wait).await;
                return;
            }
            Err(_) => None,
        };
        let clock = self.clock();
        let recovered = EventRecord {
            kind: "recovered",
            actor: self.instance().to_string(),
            detail: Some(serde_json::json!({ "locked": lock.is_some() })),
            ..EventRecord::default()
        };
        tracing::info!(kind = %row.kind, state = %row.state, "recovering transaction");
        if row.kind == "twopc" {
            let Some(tx) = self.readable::<TwoPc>(&row).await else {
                return;
            };
            let mut run = TxRun { tx };
            let step = run.on(Event::Resume, clock);
            let mut events = vec![recovered];
            events.extend(self.transition_records(&step.transitions));
            self.adopt(
                Run {
                    id: row.id,
                    fence: row.fence,
                    w: run,
                    trace: trace_of(&row),
                },
                (step, events),
                lock,
                sent_ms,
            );
            return;
        }
        let (Some(definition), Some(version)) = (row.definition.as_deref(), row.version) else {
            tracing::error!("saga row without a definition; leaving it for an operator");
            return;
        };
        let spec = match self.specs.get(definition, version).await {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the saga's definition; retrying later");
                let _ = store::transactions::release(
                    &self.pool,
                    row.id,
                    row.fence,
                    self.lease_duration(),
                )
                .await;
                return;
            }
        };
        let Some(saga) = self.readable::<Saga>(&row).await else {
            return;
        };
        let mut run = SagaRun {
            spec,
            saga,
            input: Arc::new(row.input.clone()),
        };
        let mut step = run.on(Event::Resume, clock);
        if row.cancel_requested {
            let cancel = run.on(Event::Cancel, clock);
            step.calls.extend(cancel.calls);
            step.durable |= cancel.durable;
            step.transitions.extend(cancel.transitions);
        }
        let mut events = vec![recovered];
        events.extend(self.transition_records(&step.transitions));
        self.adopt(
            Run {
                id: row.id,
                fence: row.fence,
                w: run,
                trace: trace_of(&row),
            },
            (step, events),
            lock,
            sent_ms,
        );
    }

    /// The stored state of a claimed row, or None (released for an hour, logged)
    /// when it cannot be read.
    async fn readable<T: serde::de::DeserializeOwned>(&self, row: &TransactionRow) -> Option<T> {
        match serde_json::from_str(row.progress.get()) {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::error!(error = %e, "stored state is unreadable; leaving it for an operator");
                let _ = store::transactions::release(
                    &self.pool,
                    row.id,
                    row.fence,
                    Duration::from_secs(3600),
                )
                .await;
                None
            }
        }
    }
}
