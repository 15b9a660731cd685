//! The task that drives one owned transaction (saga or 2PC): events in, machine
//! decides, outcome written (fenced) before any call that depends on it goes out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::call::{self, Answered};
use super::workflow::{Event, Step, Workflow};
use super::{Command, Driver, Lease};
use crate::machine::twopc::Verdict;
use crate::machine::Outcome;
use crate::store::batch::StateWrite;
use crate::store::transactions::{EventRecord, TransactionRow, Written};
use crate::store::{self};
use crate::telemetry::TraceContext;

/// Everything a transaction's task holds.
pub(super) struct Run<W> {
    pub id: Uuid,
    pub fence: i64,
    pub w: W,
    /// The trace every participant call of this transaction belongs to.
    pub trace: TraceContext,
}

/// A finished participant call, reported back to its transaction's task.
struct Reply<C> {
    call: C,
    label: String,
    phase: &'static str,
    attempt: u32,
    answered: Answered,
}

/// Why a task ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Exit {
    Settled,
    Lost,
    Released,
    /// An interactive transaction is being closed; the closer drives it from here on.
    Handover(Verdict),
}

fn outcome_str(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done(_) => "done",
        Outcome::Refused { .. } => "refused",
        Outcome::InProgress { .. } => "in_progress",
        Outcome::Transient { .. } => "transient",
    }
}

impl Driver {
    #[tracing::instrument(name = "transaction", skip_all, fields(transaction_id = %run.id))]
    pub(super) async fn drive<W: Workflow>(
        self: Arc<Self>,
        mut run: Run<W>,
        first: (Step<W::Call>, Vec<EventRecord>),
        mut commands: mpsc::UnboundedReceiver<Command>,
        lease: Arc<Lease>,
    ) {
        run.trace.link(&tracing::Span::current());
        // Boxed: an unbounded channel allocates room for 32 messages up front, and
        // with 10,000 transactions in flight that room is paid 10,000 times.
        let (reply_tx, mut replies) = mpsc::unbounded_channel::<Box<Reply<W::Call>>>();
        let mut in_flight = 0usize;
        let mut pending = Some(first);
        let mut cancel_next = false;
        // When each step (and phase) was first called, for the step latency metric.
        let mut step_started: HashMap<(String, &'static str), Instant> = HashMap::new();
        let exit = loop {
            if let Some((step, events)) = pending.take() {
                let before = run.w.state();
                let mut finished = None;
                if step.durable || !events.is_empty() {
                    match self.persist(&run, events, &lease).await {
                        Ok((cancel_requested, stored)) => {
                            cancel_next |= cancel_requested;
                            finished = stored;
                        }
                        Err(exit) => break exit,
                    }
                    for (transition, _) in &step.transitions {
                        self.metrics
                            .transition(run.w.kind(), run.w.definition(), transition);
                    }
                    self.pause_for_fault_injection(&step).await;
                }
                if before != run.w.state() || !run.w.is_active() {
                    self.notify_waiters(run.id, finished);
                }
                if let Some(verdict) = step.close {
                    break Exit::Handover(verdict);
                }
                if !step.calls.is_empty() && !self.shutdown.is_cancelled() {
                    if !self.confirm_ownership(run.id, run.fence, &lease).await {
                        break Exit::Lost;
                    }
                    for c in step.calls {
                        if self.dispatch(&run, c, reply_tx.clone()) {
                            in_flight += 1;
                        }
                    }
                }
            }
            if !run.w.is_active() && in_flight == 0 {
                break Exit::Settled;
            }
            if self.shutdown.is_cancelled() && in_flight == 0 {
                break Exit::Released;
            }
            if cancel_next && run.w.can_cancel() {
                cancel_next = false;
                pending = Some(self.handle(&mut run, Event::Cancel, Vec::new()));
                continue;
            }
            cancel_next = false;
            let timer = run.w.next_timer().map(|at| {
                let wait = (at - store::wall_clock_millis()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let draining = self.shutdown.is_cancelled();
            tokio::select! {
                Some(reply) = replies.recv() => {
                    in_flight -= 1;
                    let key = (reply.label.clone(), reply.phase);
                    let sent = Instant::now().checked_sub(reply.answered.duration).unwrap_or_else(Instant::now);
                    if matches!(reply.answered.outcome, Outcome::Done(_) | Outcome::Refused { .. }) {
                        let first = step_started.remove(&key).unwrap_or(sent);
                        self.metrics.step(run.w.definition(), &reply.label, reply.phase, first.elapsed());
                    } else {
                        step_started.entry(key).or_insert(sent);
                    }
                    let record = self.attempt_record(&reply);
                    let Reply { call, answered, .. } = *reply;
                    let event = Event::Reply { call, outcome: answered.outcome };
                    pending = Some(self.handle(&mut run, event, vec![record]));
                }
                Some(command) = commands.recv() => match command {
                    Command::Cancel => cancel_next = true,
                    Command::OwnershipLost => break Exit::Lost,
                },
                _ = sleep_until(timer), if timer.is_some() && !draining => {
                    pending = Some(self.handle(&mut run, Event::Tick, Vec::new()));
                }
                _ = self.shutdown.cancelled(), if !draining => {}
            }
        };
        match exit {
            Exit::Settled => tracing::info!(state = run.w.state(), "transaction settled"),
            Exit::Lost => tracing::warn!(
                "ownership lost: another instance owns this transaction now; stopping without further calls"
            ),
            // The awaits here and below are boxed: inline, each would widen the
            // future of every transaction task for its whole life, though it runs
            // once at its end (RSS with 10,000 in flight: 114 -> 99-103 MB).
            Exit::Released => {
                match Box::pin(store::transactions::release(&self.pool, run.id, run.fence, Duration::ZERO)).await {
                    Ok(_) => tracing::info!("released at shutdown"),
                    Err(e) => tracing::warn!(error = %e, "release at shutdown failed; the lease will expire"),
                }
            }
            Exit::Handover(verdict) => {
                let me = self.clone();
                let id = run.id;
                let actor = self.instance().to_string();
                tokio::spawn(async move {
                    if let Err(e) = me.close_transaction(id, verdict, Some("timeout".into()), &actor, None).await {
                        tracing::warn!(transaction_id = %id, error = %e, "closing at the deadline failed; recovery will retry");
                    }
                });
            }
        }
        Box::pin(self.disown(run.id, run.fence)).await;
        self.notify_waiters(run.id, None);
    }

    /// Applies an event to the machine and turns its transitions into timeline entries.
    pub(super) fn handle<W: Workflow>(
        &self,
        run: &mut Run<W>,
        event: Event<W::Call>,
        mut events: Vec<EventRecord>,
    ) -> (Step<W::Call>, Vec<EventRecord>) {
        let step = run.w.on(event, self.clock());
        events.extend(self.transition_records(&step.transitions));
        (step, events)
    }

    /// Timeline entries (and log lines) for the transaction-level changes of a step.
    pub(super) fn transition_records(
        &self,
        transitions: &[(&'static str, Option<String>)],
    ) -> Vec<EventRecord> {
        transitions
            .iter()
            .map(|(kind, reason)| {
                match (*kind, reason) {
                    ("stuck", Some(reason)) => {
                        tracing::warn!(reason = %reason, "transaction stuck")
                    }
                    (kind, Some(reason)) => tracing::info!(reason = %reason, "{kind}"),
                    (kind, None) => tracing::info!("{kind}"),
                }
                EventRecord {
                    kind,
                    error: reason.clone(),
                    actor: self.instance().to_string(),
                    ..EventRecord::default()
                }
            })
            .collect()
    }

    fn attempt_record<C>(&self, reply: &Reply<C>) -> EventRecord {
        let (error, status) = match &reply.answered.outcome {
            Outcome::Done(_) | Outcome::InProgress { .. } => (None, reply.answered.status),
            Outcome::Refused { status, message } => (Some(message.clone()), Some(*status)),
            Outcome::Transient { status, error } => (Some(error.clone()), *status),
        };
        EventRecord {
            kind: "attempt",
            step: Some(reply.label.clone()),
            phase: Some(reply.phase),
            attempt: Some(reply.attempt as i32),
            status_code: status.map(i32::from),
            error,
            duration_ms: Some(reply.answered.duration.as_millis().min(i32::MAX as u128) as i32),
            actor: self.instance().to_string(),
            detail: Some(serde_json::json!({ "outcome": outcome_str(&reply.answered.outcome) })),
        }
    }

    /// Writes the state (fenced). Retries while the database is away, for as long
    /// as this instance can still believe it owns the transaction. Says whether a
    /// cancel was requested meanwhile, and hands back the stored row when the
    /// write finished the transaction.
    async fn persist<W: Workflow>(
        &self,
        run: &Run<W>,
        events: Vec<EventRecord>,
        lease: &Lease,
    ) -> Result<(bool, Option<Box<TransactionRow>>), Exit> {
        let progress = match run.w.progress() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the transaction's state");
                return Err(Exit::Released);
            }
        };
        let now = store::wall_clock_millis();
        let next_ms = run.w.wake_at(now);
        let write = Arc::new(StateWrite {
            id: run.id,
            fence: run.fence,
            write_id: Uuid::now_v7(),
            state: run.w.state(),
            progress,
            reason: run.w.reason().map(str::to_owned),
            next_ms,
            due_now: next_ms.is_some_and(|at| at <= now),
            lease_ms: self.lease_duration().as_millis() as i64,
            events,
        });
        let mut backoff = Duration::from_millis(50);
        loop {
            let sent_ms = self.monotonic_ms();
            match self.writer.write(write.clone()).await {
                Ok(Written::Ok {
                    cancel_requested,
                    finished,
                }) => {
                    self.lease_renewed(lease, sent_ms);
                    return Ok((cancel_requested, finished));
                }
                Ok(Written::OwnershipLost) => return Err(Exit::Lost),
                Err(e) => {
                    if !self.lease_valid(lease) {
                        tracing::warn!(error = %e, "cannot persist and the lease has run out; leaving it to recovery");
                        return Err(Exit::Lost);
                    }
                    tracing::warn!(error = %e, "persisting state failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Before calling participants: is the lease still ours? A process that was
    /// paused finds its lease expired here and must prove ownership again.
    pub(super) async fn confirm_ownership(&self, id: Uuid, fence: i64, lease: &Lease) -> bool {
        if self.lease_valid(lease) {
            return true;
        }
        let sent_ms = self.monotonic_ms();
        // Boxed: this rare path would otherwise widen every transaction task's
        // future by the size of the renewal and its timeout (tens of MB at
        // 10,000 in flight).
        match self
            .within(Box::pin(store::transactions::renew(
                &self.pool,
                &[(id, fence)],
                self.lease_duration(),
            )))
            .await
        {
            Ok(kept) if !kept.is_empty() => {
                self.lease_renewed(lease, sent_ms);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm ownership; not calling participants");
                false
            }
        }
    }

    /// Sends one call in its own task; its reply comes back on `replies`.
    fn dispatch<W: Workflow>(
        &self,
        run: &Run<W>,
        c: W::Call,
        replies: mpsc::UnboundedSender<Box<Reply<W::Call>>>,
    ) -> bool {
        let Some(out) = run.w.outgoing(run.id, &c) else {
            tracing::error!(call = ?c, "no endpoint for a call the machine asked for");
            return false;
        };
        let http = self.http.clone();
        let secrets = self.signing_secrets.clone();
        let max = self.settings.participants.max_response_bytes;
        let permits = self.calls.clone();
        let trace = run.trace.clone();
        let metrics = self.metrics.clone();
        let definition = run.w.definition().to_string();
        let span = tracing::info_span!("call", step = %out.label, phase = out.phase, attempt = out.attempt);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let permit = permits.acquire_owned().await;
                let answered = call::post(&http, &out, &trace, &secrets, max).await;
                drop(permit);
                metrics.call(
                    &definition,
                    &out.label,
                    out.phase,
                    answered.duration,
                    answered.error_class,
                );
                tracing::debug!(status = ?answered.status, outcome = outcome_str(&answered.outcome), "participant answered");
                let _ = replies.send(Box::new(Reply {
                    call: c,
                    label: out.label,
                    phase: out.phase,
                    attempt: out.attempt,
                    answered,
                }));
            },
            span,
        ));
        true
    }

    /// Test-only fault injection (`testing.pause_at`): stop dead right after a
    /// durable commit decision, so that a test can SIGKILL the process there.
    async fn pause_for_fault_injection<C>(&self, step: &Step<C>) {
        let Some(point) = self.settings.testing.pause_at.as_deref() else {
            return;
        };
        if point == "commit-decided" && step.transitions.iter().any(|(k, _)| *k == "decided_commit")
        {
            tracing::warn!("fault injection: paused after a durable commit decision");
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
