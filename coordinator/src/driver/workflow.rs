//! What the run loop needs from a kind of transaction, so that sagas and 2PC share
//! one loop: feed an event, say which calls to make and what to persist, and build
//! each outgoing participant request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use settle_participant::protocol::{
    classify_phase_two, classify_status, BranchCall, BranchPhase, CallRequest, Phase as WirePhase,
    StatusMeaning,
};
use uuid::Uuid;

use crate::machine::saga::{self, Saga};
use crate::machine::spec::SagaSpec;
use crate::machine::twopc::{self, TwoPc, TxPhase, Verdict};
use crate::machine::{Clock, Millis, Outcome};

pub(super) enum Event<C> {
    Start,
    Resume,
    Tick,
    Reply {
        call: C,
        outcome: Outcome,
    },
    Cancel,
    /// An operator action the machine accepted (see `machine::operator`).
    Operator {
        action: crate::machine::operator::Action,
        note: Option<String>,
    },
}

/// A machine decision in the loop's terms.
pub(super) struct Step<C> {
    pub calls: Vec<C>,
    pub durable: bool,
    /// Timeline entries: kind and optional reason.
    pub transitions: Vec<(&'static str, Option<String>)>,
    /// An interactive 2PC transaction must be closed with this verdict.
    pub close: Option<Verdict>,
}

/// One participant request, ready to send.
pub(super) struct Outgoing {
    pub url: String,
    pub timeout: Duration,
    pub body: bytes::Bytes,
    pub idempotency_key: String,
    pub label: String,
    pub phase: &'static str,
    pub attempt: u32,
    pub classify: fn(u16) -> StatusMeaning,
}

pub(super) trait Workflow: Send + Sync + 'static {
    type Call: Copy + Send + Sync + std::fmt::Debug + 'static;
    fn on(&mut self, event: Event<Self::Call>, clock: Clock) -> Step<Self::Call>;
    fn state(&self) -> &'static str;
    /// The loop keeps driving while this holds.
    fn is_active(&self) -> bool;
    /// A cancel request applies now.
    fn can_cancel(&self) -> bool;
    fn reason(&self) -> Option<&str>;
    fn wake_at(&self, now: Millis) -> Option<Millis>;
    fn next_timer(&self) -> Option<Millis>;
    /// The state as stored in `progress`: JSON text, serialized straight from the machine.
    fn progress(&self) -> serde_json::Result<Box<RawValue>>;
    fn outgoing(&self, id: Uuid, call: &Self::Call) -> Option<Outgoing>;
    /// `saga` or `twopc`, for metrics.
    fn kind(&self) -> &'static str;
    /// The saga definition's name (empty for 2PC), for metrics.
    fn definition(&self) -> &str;
}

/// A saga with what its calls need: the compiled definition and the input.
pub(super) struct SagaRun {
    pub spec: Arc<SagaSpec>,
    pub saga: Saga,
    pub input: Arc<Value>,
}

impl Workflow for SagaRun {
    type Call = saga::Call;

    fn on(&mut self, event: Event<saga::Call>, clock: Clock) -> Step<saga::Call> {
        let event = match event {
            Event::Start => saga::Event::Start,
            Event::Resume => saga::Event::Resume,
            Event::Tick => saga::Event::Tick,
            Event::Cancel => saga::Event::Cancel,
            Event::Operator { action, note } => saga::Event::Operator { action, note },
            Event::Reply { call, outcome } => saga::Event::Reply {
                step: call.step,
                phase: call.phase,
                outcome,
            },
        };
        let d = self.saga.handle(&self.spec, event, clock);
        Step {
            calls: d.calls,
            durable: d.durable,
            transitions: d
                .transitions
                .into_iter()
                .map(|t| match t {
                    saga::Transition::Compensating { reason } => ("compensating", Some(reason)),
                    saga::Transition::Completed => ("completed", None),
                    saga::Transition::Compensated => ("compensated", None),
                    saga::Transition::Stuck { reason } => ("stuck", Some(reason)),
                    saga::Transition::Retrying => {
                        ("compensating", Some("retried by an operator".into()))
                    }
                    saga::Transition::Resolved => ("resolved", self.saga.reason.clone()),
                })
                .collect(),
            close: None,
        }
    }

    fn state(&self) -> &'static str {
        self.saga.status.as_str()
    }
    fn is_active(&self) -> bool {
        self.saga.status.is_active()
    }
    fn can_cancel(&self) -> bool {
        self.saga.status == saga::SagaStatus::Running
    }
    fn reason(&self) -> Option<&str> {
        self.saga.reason.as_deref()
    }
    fn wake_at(&self, now: Millis) -> Option<Millis> {
        self.saga.wake_at(now)
    }
    fn next_timer(&self) -> Option<Millis> {
        self.saga.next_timer()
    }
    fn progress(&self) -> serde_json::Result<Box<RawValue>> {
        serde_json::value::to_raw_value(&self.saga)
    }

    fn outgoing(&self, id: Uuid, call: &saga::Call) -> Option<Outgoing> {
        let endpoint = Saga::endpoint(&self.spec, call)?;
        let step = &self.spec.steps[call.step].name;
        let phase = match call.phase {
            saga::Phase::Action => WirePhase::Action,
            saga::Phase::Compensation => WirePhase::Compensation,
        };
        let request = CallRequest {
            transaction_id: id,
            saga: self.spec.name.clone(),
            step: step.clone(),
            phase,
            attempt: call.attempt,
            input: (*self.input).clone(),
            results: self.saga.results(),
        };
        Some(Outgoing {
            url: endpoint.url.clone(),
            timeout: Duration::from_millis(endpoint.timeout_ms),
            body: serde_json::to_vec(&request).ok()?.into(),
            idempotency_key: request.idempotency_key(),
            label: step.clone(),
            phase: phase.as_str(),
            attempt: call.attempt,
            classify: classify_status,
        })
    }

    fn kind(&self) -> &'static str {
        "saga"
    }
    fn definition(&self) -> &str {
        &self.spec.name
    }
}

/// A 2PC / TCC transaction.
pub(super) struct TxRun {
    pub tx: TwoPc,
}

impl Workflow for TxRun {
    type Call = twopc::Call;

    fn on(&mut self, event: Event<twopc::Call>, clock: Clock) -> Step<twopc::Call> {
        let event = match event {
            Event::Start => twopc::Event::Start,
            Event::Resume => twopc::Event::Resume,
            Event::Tick | Event::Cancel => twopc::Event::Tick,
            Event::Operator { action, note } => twopc::Event::Operator { action, note },
            Event::Reply { call, outcome } => twopc::Event::Reply {
                branch: call.branch,
                phase: call.phase,
                outcome,
            },
        };
        let d = self.tx.handle(event, clock);
        step_of(d)
    }

    fn state(&self) -> &'static str {
        self.tx.status.as_str()
    }
    fn is_active(&self) -> bool {
        !self.tx.status.is_terminal()
    }
    fn can_cancel(&self) -> bool {
        false
    }
    fn reason(&self) -> Option<&str> {
        self.tx.reason.as_deref()
    }
    fn wake_at(&self, now: Millis) -> Option<Millis> {
        self.tx.wake_at(now)
    }
    fn next_timer(&self) -> Option<Millis> {
        self.tx.next_timer()
    }
    fn progress(&self) -> serde_json::Result<Box<RawValue>> {
        serde_json::value::to_raw_value(&self.tx)
    }

    fn outgoing(&self, id: Uuid, call: &twopc::Call) -> Option<Outgoing> {
        let url = self.tx.url(call)?.to_string();
        let branch = &self.tx.branches.get(call.branch)?.spec;
        let (phase, classify): (BranchPhase, fn(u16) -> StatusMeaning) = match call.phase {
            TxPhase::Prepare => (BranchPhase::Prepare, classify_status),
            TxPhase::Commit => (BranchPhase::Commit, classify_phase_two),
            TxPhase::Abort => (BranchPhase::Abort, classify_phase_two),
        };
        let request = BranchCall {
            transaction_id: id,
            branch: branch.name.clone(),
            phase,
            attempt: call.attempt,
            payload: branch.payload.clone(),
        };
        Some(Outgoing {
            url,
            timeout: Duration::from_millis(self.tx.call_timeout_ms),
            body: serde_json::to_vec(&request).ok()?.into(),
            idempotency_key: request.idempotency_key(),
            label: branch.name.clone(),
            phase: phase.as_str(),
            attempt: call.attempt,
            classify,
        })
    }

    fn kind(&self) -> &'static str {
        "twopc"
    }
    fn definition(&self) -> &str {
        ""
    }
}

/// A 2PC machine decision in the loop's terms.
pub(super) fn step_of(d: twopc::Decision) -> Step<twopc::Call> {
    Step {
        calls: d.calls,
        durable: d.durable,
        transitions: d
            .transitions
            .into_iter()
            .map(|t| match t {
                twopc::Transition::Preparing => ("preparing", None),
                twopc::Transition::Decided {
                    verdict: Verdict::Commit,
                    reason,
                } => ("decided_commit", reason),
                twopc::Transition::Decided {
                    verdict: Verdict::Abort,
                    reason,
                } => ("decided_abort", reason),
                twopc::Transition::Finished {
                    verdict: Verdict::Commit,
                } => ("committed", None),
                twopc::Transition::Finished {
                    verdict: Verdict::Abort,
                } => ("aborted", None),
                twopc::Transition::Stuck { reason } => ("stuck", Some(reason)),
                twopc::Transition::Resolved => ("resolved", None),
            })
            .collect(),
        close: d.close,
    }
}
