//! The task that drives one owned saga: events in, machine decides, outcome
//! written (fenced) before any call that depends on it goes out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use settle_participant::protocol::{CallRequest, Phase as WirePhase};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{call, Command, Driver, Lease};
use crate::machine::saga::{Call, Decision, Event, Outcome, Phase, Saga, Transition};
use crate::machine::spec::SagaSpec;
use crate::store::sagas::{EventRecord, Outcome as Write, Written};
use crate::store::{self};

/// Everything a saga task holds.
pub(super) struct Run {
    pub id: Uuid,
    pub spec: Arc<SagaSpec>,
    pub saga: Saga,
    pub input: Arc<Value>,
    pub fence: i64,
}

impl Run {
    pub fn new(id: Uuid, spec: Arc<SagaSpec>, saga: Saga, input: Arc<Value>, fence: i64) -> Run {
        Run {
            id,
            spec,
            saga,
            input,
            fence,
        }
    }
}

/// A finished participant call, reported back to its saga's task.
struct Reply {
    call: Call,
    answered: call::Answered,
}

/// Why a saga task ended.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    Settled,
    Lost,
    Released,
}

fn phase_str(phase: Phase) -> &'static str {
    match phase {
        Phase::Action => "action",
        Phase::Compensation => "compensation",
    }
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
    #[tracing::instrument(name = "saga", skip_all, fields(transaction_id = %run.id))]
    pub(super) async fn drive(
        self: Arc<Self>,
        mut run: Run,
        first: (Decision, Vec<EventRecord>),
        mut commands: mpsc::UnboundedReceiver<Command>,
        lease: Arc<Lease>,
    ) {
        let (reply_tx, mut replies) = mpsc::unbounded_channel::<Reply>();
        let mut in_flight = 0usize;
        let mut pending: Option<(Decision, Vec<EventRecord>)> = Some(first);
        let mut cancel_next = false;
        let exit = loop {
            if let Some((decision, events)) = pending.take() {
                let before = run.saga.status;
                if decision.durable || !events.is_empty() {
                    match self.persist(&run, &events, &lease).await {
                        Ok(cancel_requested) => cancel_next |= cancel_requested,
                        Err(exit) => break exit,
                    }
                }
                if before != run.saga.status || !run.saga.status.is_active() {
                    self.notify_waiters(run.id);
                }
                if !decision.calls.is_empty() && !self.shutdown.is_cancelled() {
                    if !self.confirm_ownership(&run, &lease).await {
                        break Exit::Lost;
                    }
                    for c in decision.calls {
                        self.dispatch(&run, c, reply_tx.clone());
                        in_flight += 1;
                    }
                }
            }
            if !run.saga.status.is_active() && in_flight == 0 {
                break Exit::Settled;
            }
            if self.shutdown.is_cancelled() && in_flight == 0 {
                break Exit::Released;
            }
            if cancel_next && run.saga.status == crate::machine::saga::SagaStatus::Running {
                cancel_next = false;
                pending = Some(self.handle(&mut run, Event::Cancel, Vec::new()));
                continue;
            }
            cancel_next = false;
            let timer = run.saga.next_timer().map(|at| {
                let wait = (at - store::wall_clock_millis()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            let draining = self.shutdown.is_cancelled();
            tokio::select! {
                Some(reply) = replies.recv() => {
                    in_flight -= 1;
                    let record = self.attempt_record(&run, &reply);
                    let event = Event::Reply {
                        step: reply.call.step,
                        phase: reply.call.phase,
                        outcome: reply.answered.outcome,
                    };
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
            Exit::Settled => tracing::info!(state = run.saga.status.as_str(), "saga settled"),
            Exit::Lost => tracing::warn!("ownership lost: another instance owns this transaction now; stopping without further calls"),
            Exit::Released => {
                match store::sagas::release(&self.pool, run.id, run.fence, Duration::ZERO).await {
                    Ok(_) => tracing::info!("released at shutdown"),
                    Err(e) => tracing::warn!(error = %e, "release at shutdown failed; the lease will expire"),
                }
            }
        }
        self.disown(run.id, run.fence).await;
        self.notify_waiters(run.id);
    }

    /// Applies an event to the machine and turns its transitions into timeline entries.
    fn handle(
        &self,
        run: &mut Run,
        event: Event,
        mut events: Vec<EventRecord>,
    ) -> (Decision, Vec<EventRecord>) {
        let decision = run.saga.handle(&run.spec, event, self.clock());
        events.extend(self.transition_records(&decision));
        (decision, events)
    }

    /// Timeline entries for the saga-level changes a decision made.
    pub(super) fn transition_records(&self, decision: &Decision) -> Vec<EventRecord> {
        let mut events = Vec::new();
        for t in &decision.transitions {
            let (kind, error) = match t {
                Transition::Compensating { reason } => ("compensating", Some(reason.clone())),
                Transition::Completed => ("completed", None),
                Transition::Compensated => ("compensated", None),
                Transition::Stuck { reason } => ("stuck", Some(reason.clone())),
            };
            match t {
                Transition::Stuck { reason } => tracing::warn!(reason = %reason, "saga stuck"),
                Transition::Compensating { reason } => {
                    tracing::info!(reason = %reason, "saga compensating")
                }
                _ => {}
            }
            events.push(EventRecord {
                kind,
                error,
                actor: self.instance().to_string(),
                ..EventRecord::default()
            });
        }
        events
    }

    fn attempt_record(&self, run: &Run, reply: &Reply) -> EventRecord {
        let (error, status) = match &reply.answered.outcome {
            Outcome::Done(_) | Outcome::InProgress { .. } => (None, reply.answered.status),
            Outcome::Refused { status, message } => (Some(message.clone()), Some(*status)),
            Outcome::Transient { status, error } => (Some(error.clone()), *status),
        };
        EventRecord {
            kind: "attempt",
            step: run.spec.steps.get(reply.call.step).map(|s| s.name.clone()),
            phase: Some(phase_str(reply.call.phase)),
            attempt: Some(reply.call.attempt as i32),
            status_code: status.map(i32::from),
            error,
            duration_ms: Some(reply.answered.duration.as_millis().min(i32::MAX as u128) as i32),
            actor: self.instance().to_string(),
            detail: Some(serde_json::json!({ "outcome": outcome_str(&reply.answered.outcome) })),
        }
    }

    /// Writes the saga's state (fenced). Retries while the database is away, for as
    /// long as this instance can still believe it owns the saga.
    async fn persist(
        &self,
        run: &Run,
        events: &[EventRecord],
        lease: &Lease,
    ) -> Result<bool, Exit> {
        let progress = match serde_json::to_value(&run.saga) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode saga state");
                return Err(Exit::Released);
            }
        };
        let now = store::wall_clock_millis();
        let write = Write {
            id: run.id,
            fence: run.fence,
            state: run.saga.status.as_str(),
            progress: &progress,
            reason: run.saga.reason.as_deref(),
            next_attempt_at: run.saga.wake_at(now),
            lease: self.lease_duration(),
            events,
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            let sent_ms = self.monotonic_ms();
            match store::sagas::write(&self.pool, &write).await {
                Ok(Written::Ok { cancel_requested }) => {
                    self.lease_renewed(lease, sent_ms);
                    return Ok(cancel_requested);
                }
                Ok(Written::OwnershipLost) => return Err(Exit::Lost),
                Err(e) => {
                    if !self.lease_valid(lease) {
                        tracing::warn!(error = %e, "cannot persist and the lease has run out; leaving the saga to recovery");
                        return Err(Exit::Lost);
                    }
                    tracing::warn!(error = %e, "persisting saga state failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Before calling participants: is the lease still ours? A process that was
    /// paused finds its lease expired here and must prove ownership again.
    async fn confirm_ownership(&self, run: &Run, lease: &Lease) -> bool {
        if self.lease_valid(lease) {
            return true;
        }
        let sent_ms = self.monotonic_ms();
        match store::sagas::renew(&self.pool, &[(run.id, run.fence)], self.lease_duration()).await {
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

    fn dispatch(&self, run: &Run, c: Call, replies: mpsc::UnboundedSender<Reply>) {
        let Some(endpoint) = Saga::endpoint(&run.spec, &c) else {
            return;
        };
        let request = CallRequest {
            transaction_id: run.id,
            saga: run.spec.name.clone(),
            step: run.spec.steps[c.step].name.clone(),
            phase: match c.phase {
                Phase::Action => WirePhase::Action,
                Phase::Compensation => WirePhase::Compensation,
            },
            attempt: c.attempt,
            input: (*run.input).clone(),
            results: run.saga.results(),
        };
        let http = self.http.clone();
        let url = endpoint.url.clone();
        let timeout = Duration::from_millis(endpoint.timeout_ms);
        let secret = self.settings.participants.signing_secret.clone();
        let max = self.settings.participants.max_response_bytes;
        let span = tracing::info_span!("call", step = %request.step, phase = phase_str(c.phase), attempt = c.attempt);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let answered =
                    call::post(&http, &url, timeout, &request, secret.as_ref(), max).await;
                tracing::debug!(status = ?answered.status, outcome = outcome_str(&answered.outcome), "participant answered");
                let _ = replies.send(Reply { call: c, answered });
            },
            span,
        ));
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
