//! Operator actions (retry now, pause, resume, compensate, skip, resolve). The
//! machine judges whether an action applies; the operator then takes the
//! transaction over like a recovery claim (Redis lock, fresh fence, so whoever
//! drove it stops at its next write), writes the new state with an event naming
//! the actor and the note, and drives it from here if it still needs driving.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::run::Run;
use super::workflow::{Event, SagaRun, Step, TxRun, Workflow};
use super::{Closed, Command, Driver};
use crate::lock::Token;
use crate::machine::operator::{Action, Applies};
use crate::machine::twopc::{TwoPc, TxStatus, Verdict};
use crate::store::batch::StateWrite;
use crate::store::transactions::TransactionRow;
use crate::store::{
    self,
    transactions::{EventRecord, Written},
};

/// What an operator action came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acted {
    /// Applied and durable; the transaction is now in this state.
    Done {
        state: String,
    },
    /// Asked again: already in effect, nothing written.
    AlreadyInEffect {
        state: String,
    },
    /// Does not apply to the transaction as it is, and why.
    NotApplicable(String),
    /// Another instance holds the transaction's lock, or acted on it meanwhile.
    Busy,
    NotFound,
}

fn corrupt(e: impl std::fmt::Display) -> store::Error {
    store::Error::Corrupt(e.to_string())
}

/// A stored transaction read once, judged and then driven from the same copy.
enum Loaded {
    Saga(SagaRun),
    Tx(TwoPc),
}

impl Driver {
    /// Judges `action` against the transaction's current state and applies it.
    #[tracing::instrument(skip_all, fields(transaction_id = %id, action = action.name()))]
    pub async fn operate(
        self: &Arc<Self>,
        id: Uuid,
        action: Action,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Acted, store::Error> {
        let Some((row, paused)) = store::admin::for_action(&self.pool, id).await? else {
            return Ok(Acted::NotFound);
        };
        let loaded = if row.kind == "saga" {
            Loaded::Saga(self.saga_run(&row).await?)
        } else {
            Loaded::Tx(serde_json::from_str(row.progress.get()).map_err(corrupt)?)
        };
        let judged = match &loaded {
            Loaded::Saga(run) => run.saga.applies(&run.spec, &action, paused),
            Loaded::Tx(tx) => tx.applies(&action, paused),
        };
        match judged {
            Applies::No(why) => return Ok(Acted::NotApplicable(why)),
            Applies::AlreadyInEffect => return Ok(Acted::AlreadyInEffect { state: row.state }),
            Applies::Yes => {}
        }
        let record = EventRecord {
            kind: operator_event_kind(&action),
            step: match &action {
                Action::Skip { step, .. } => Some(step.clone()),
                _ => None,
            },
            actor: actor.to_string(),
            detail: Some(match &action {
                Action::Skip { output, .. } => {
                    serde_json::json!({ "note": note, "output": output })
                }
                _ => serde_json::json!({ "note": note }),
            }),
            ..EventRecord::default()
        };
        if row.kind == "twopc" && row.state == TxStatus::Active.as_str() {
            // Rolling back an interactive transaction is closing it: the close reads
            // the registered branches under lock (only compensate applies here).
            let acted = self.abort_active(id, actor, note).await?;
            if matches!(acted, Acted::Done { .. }) {
                store::admin::record_event(&self.pool, id, &record).await?;
            }
            return Ok(acted);
        }
        let lock = match self.operator_lock(id).await {
            Some(lock) => lock,
            None => return Ok(Acted::Busy),
        };
        if action == Action::Pause {
            let paused = store::admin::pause(&self.pool, id, row.fence, &record).await?;
            self.stop_local(id);
            self.release_lock(id, lock).await;
            tracing::info!(actor, "paused by an operator");
            return Ok(if paused {
                Acted::Done { state: row.state }
            } else {
                Acted::Busy
            });
        }
        let sent_ms = self.monotonic_ms();
        let resume = action == Action::Resume;
        let Some(fence) = store::admin::take_over(
            &self.pool,
            id,
            row.fence,
            self.instance(),
            self.lease_duration(),
            resume,
        )
        .await?
        else {
            self.release_lock(id, lock).await;
            return Ok(Acted::Busy);
        };
        self.stop_local(id);
        let note = note.map(str::to_owned);
        let trace = super::recovery::trace_of(&row);
        let acted = match loaded {
            Loaded::Saga(run) => {
                self.apply(id, fence, trace, run, action, note, record, lock, sent_ms)
                    .await?
            }
            Loaded::Tx(tx) => {
                self.apply(
                    id,
                    fence,
                    trace,
                    TxRun { tx },
                    action,
                    note,
                    record,
                    lock,
                    sent_ms,
                )
                .await?
            }
        };
        tracing::info!(actor, ?acted, "operator action");
        Ok(acted)
    }

    /// Feeds the action to the machine, writes the result (fenced) before answering,
    /// and drives the transaction on if it still needs driving.
    #[allow(clippy::too_many_arguments)]
    async fn apply<W: Workflow>(
        self: &Arc<Self>,
        id: Uuid,
        fence: i64,
        trace: crate::telemetry::TraceContext,
        mut w: W,
        action: Action,
        note: Option<String>,
        record: EventRecord,
        lock: Option<Token>,
        sent_ms: u64,
    ) -> Result<Acted, store::Error> {
        let clock = self.clock();
        // A resumed transaction is loaded like a recovery claim (an undecided 2PC
        // presumes abort); any other action is fed as itself. Nothing of the
        // previous owner's is in flight here: `in_flight` is never stored.
        let mut step: Step<W::Call> = if action == Action::Resume {
            w.on(Event::Resume, clock)
        } else {
            w.on(Event::Operator { action, note }, clock)
        };
        let mut events = vec![record];
        events.extend(self.transition_records(&step.transitions));
        let next_ms = w.wake_at(clock.now);
        let write = StateWrite {
            id,
            fence,
            write_id: Uuid::now_v7(),
            state: w.state(),
            progress: w.progress().map_err(corrupt)?,
            reason: w.reason().map(str::to_owned),
            next_ms,
            due_now: next_ms.is_some_and(|at| at <= clock.now),
            lease_ms: self.lease_duration().as_millis() as i64,
            events,
        };
        let finished = match self.writer.write(Arc::new(write)).await? {
            Written::Ok { finished, .. } => finished,
            Written::OwnershipLost => {
                self.release_lock(id, lock).await;
                return Ok(Acted::Busy);
            }
        };
        self.notify_waiters(id, finished);
        let state = w.state().to_string();
        if w.is_active() {
            step.durable = false;
            step.transitions.clear();
            self.adopt(
                Run {
                    id,
                    fence,
                    trace,
                    w,
                },
                (step, Vec::new()),
                lock,
                sent_ms,
            );
        } else {
            store::transactions::release(&self.pool, id, fence, Duration::ZERO).await?;
            self.release_lock(id, lock).await;
        }
        Ok(Acted::Done { state })
    }

    async fn saga_run(&self, row: &TransactionRow) -> Result<SagaRun, store::Error> {
        let spec = match (row.definition.as_deref(), row.version) {
            (Some(name), Some(version)) => self.specs.get(name, version).await.map_err(corrupt)?,
            _ => return Err(corrupt("a saga without a definition")),
        };
        Ok(SagaRun {
            spec,
            saga: serde_json::from_str(row.progress.get()).map_err(corrupt)?,
            input: Arc::new(row.input.clone()),
        })
    }

    async fn abort_active(
        self: &Arc<Self>,
        id: Uuid,
        actor: &str,
        note: Option<&str>,
    ) -> Result<Acted, store::Error> {
        let reason = match note {
            Some(n) => format!("aborted by an operator: {n}"),
            None => "aborted by an operator".to_string(),
        };
        match self
            .close_transaction(id, Verdict::Abort, Some(reason), actor, None)
            .await
        {
            Ok(Closed::Now) => Ok(Acted::Done {
                state: TxStatus::Aborting.as_str().into(),
            }),
            Ok(Closed::Already { state, verdict }) => Ok(match verdict {
                Some(Verdict::Abort) => Acted::AlreadyInEffect { state },
                _ => Acted::NotApplicable(format!(
                    "the transaction is {state}: it was closed meanwhile"
                )),
            }),
            Ok(Closed::NotFound) => Ok(Acted::NotFound),
            Err(e) => Err(corrupt(e)),
        }
    }

    /// The Redis lock for an operator action: the one this instance already holds
    /// for a transaction it drives, or a fresh one. None when another instance holds
    /// it; `Some(None)` when Redis is away (the fence still guards the state).
    async fn operator_lock(&self, id: Uuid) -> Option<Option<Token>> {
        let held = {
            let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            owned.get_mut(&id).map(|o| o.lock.take())
        };
        if let Some(token) = held {
            return Some(token);
        }
        match self.locks.acquire(id, self.lease_duration()).await {
            Ok(Some(token)) => Some(Some(token)),
            Ok(None) => None,
            Err(_) => Some(None),
        }
    }

    async fn release_lock(&self, id: Uuid, lock: Option<Token>) {
        if let Some(token) = lock {
            let _ = self.locks.release(id, &token).await;
        }
    }

    /// Tells this instance's task for the transaction, if any, that it lost it.
    fn stop_local(&self, id: Uuid) {
        let removed = {
            let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
            owned.remove(&id)
        };
        if let Some(o) = removed {
            let _ = o.commands.send(Command::OwnershipLost);
        }
    }
}

fn operator_event_kind(action: &Action) -> &'static str {
    match action {
        Action::Retry => "operator_retry",
        Action::Pause => "operator_pause",
        Action::Resume => "operator_resume",
        Action::Compensate => "operator_compensate",
        Action::Skip { .. } => "operator_skip",
        Action::Resolve => "operator_resolve",
    }
}
