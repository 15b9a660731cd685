//! The saga state machine: given the durable state of one saga, an event and a
//! clock reading, it updates the state and says which participant calls to make.
//!
//! The state it leaves behind already records the calls it decided on (a step
//! marked `running` with its attempt counted), so persisting the state once per
//! outcome also persists every intent; nothing is written separately before a call.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::{Endpoint, SagaSpec};
pub use super::Outcome;
use super::{Clock, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    Running,
    Compensating,
    Completed,
    Compensated,
    Stuck,
    /// An operator closed a stuck saga for good, with a note.
    Resolved,
}

impl SagaStatus {
    /// The spelling shared with the `transactions.state` CHECK constraint.
    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Stuck => "stuck",
            SagaStatus::Resolved => "resolved",
        }
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Resolved
        )
    }

    /// States in which the coordinator keeps driving the saga by itself.
    pub fn is_active(self) -> bool {
        matches!(self, SagaStatus::Running | SagaStatus::Compensating)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensating,
    Compensated,
    Skipped,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Compensating => "compensating",
            StepStatus::Compensated => "compensated",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// Which endpoint of a step a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Action,
    Compensation,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The saga was just created.
    Start,
    /// The saga was loaded from storage by a new owner: no call of it is in flight.
    Resume,
    /// A timer fired: retries may be due, the deadline may have passed.
    Tick,
    /// A participant call finished.
    Reply {
        step: usize,
        phase: Phase,
        outcome: Outcome,
    },
    /// Someone asked to cancel: a running saga compensates.
    Cancel,
    /// An operator fixed what made the saga stuck: compensation resumes with a
    /// fresh retry budget.
    OperatorRetry,
    /// An operator action that [`Saga::applies`] accepted, with the operator's note.
    Operator {
        action: super::operator::Action,
        note: Option<String>,
    },
}

/// A participant call the driver must make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub step: usize,
    pub phase: Phase,
    pub attempt: u32,
}

/// A change of the saga's own state, worth a line in the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Compensating {
        reason: String,
    },
    Completed,
    Compensated,
    Stuck {
        reason: String,
    },
    /// An operator sent a stuck saga back to compensation.
    Retrying,
    /// An operator resolved a stuck saga.
    Resolved,
}

/// What the driver does after an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Calls to make, only after the state is durable when `durable` is set.
    pub calls: Vec<Call>,
    /// The state changed in a way that must be written before the calls go out.
    pub durable: bool,
    pub transitions: Vec<Transition>,
}

/// One step's durable state. Zero counters, `false` and absent values are left
/// out of the stored JSON (and read back as such): a saga's progress is written
/// at every step, and most of these fields are at their default most of the time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub name: String,
    pub status: StepStatus,
    /// Action calls made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Transient action failures, counted against the action's retry policy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// Consecutive "in progress" answers, for the polling backoff.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub polls: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compensation_attempts: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compensation_failures: u32,
    /// Set when the step failed by exhausting its retries: the action may have
    /// applied, so it is compensated; a refused step is not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub may_have_applied: bool,
    /// Order in which steps were first called and completed, for compensation order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_seq: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_seq: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A call of this step is under way in this process. Never persisted: a
    /// loaded saga has nothing in flight.
    #[serde(skip)]
    pub in_flight: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The whole durable state of one saga (persisted as `transactions.progress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    pub status: SagaStatus,
    pub deadline: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: Vec<StepState>,
    /// Counter behind `started_seq` / `completed_seq`.
    pub seq: u32,
}

impl Saga {
    /// A saga that has not started any step yet; feed it [`Event::Start`].
    pub fn new(spec: &SagaSpec, now: Millis) -> Saga {
        Saga {
            status: SagaStatus::Running,
            deadline: now.saturating_add(spec.timeout_ms),
            reason: None,
            seq: 0,
            steps: spec
                .steps
                .iter()
                .map(|s| StepState {
                    name: s.name.clone(),
                    status: StepStatus::Pending,
                    attempts: 0,
                    failures: 0,
                    polls: 0,
                    compensation_attempts: 0,
                    compensation_failures: 0,
                    may_have_applied: false,
                    started_seq: None,
                    completed_seq: None,
                    next_attempt_at: None,
                    output: None,
                    last_status: None,
                    last_error: None,
                    in_flight: false,
                })
                .collect(),
        }
    }

    /// Applies one event. The only entry point that changes a saga.
    pub fn handle(&mut self, spec: &SagaSpec, event: Event, clock: Clock) -> Decision {
        let mut decision = Decision::default();
        if self.status.is_terminal() {
            return decision;
        }
        match event {
            Event::Start => decision.durable = true,
            Event::Resume => {
                for step in &mut self.steps {
                    step.in_flight = false;
                }
            }
            Event::Tick => {}
            Event::Reply {
                step,
                phase,
                outcome,
            } => {
                if step >= self.steps.len() || !self.steps[step].in_flight {
                    // A reply nobody is waiting for (a stale call of a previous owner): ignore it.
                    return decision;
                }
                decision.durable = true;
                match phase {
                    Phase::Action => self.action_replied(spec, step, outcome, clock, &mut decision),
                    Phase::Compensation => {
                        self.compensation_replied(spec, step, outcome, clock, &mut decision)
                    }
                }
            }
            Event::Cancel => {
                if self.status == SagaStatus::Running {
                    self.enter_compensation("cancelled".to_string(), &mut decision);
                }
            }
            Event::OperatorRetry => {
                self.operator_event(spec, super::operator::Action::Retry, None, &mut decision)
            }
            Event::Operator { action, note } => {
                self.operator_event(spec, action, note, &mut decision)
            }
        }
        self.advance(spec, clock, &mut decision);
        decision
    }

    /// When the saga next needs attention if nobody is driving it: `now` while a
    /// call may be in flight, the earliest retry or the deadline otherwise, and
    /// never once it is terminal or stuck.
    pub fn wake_at(&self, now: Millis) -> Option<Millis> {
        if !self.status.is_active() {
            return None;
        }
        let mut wake: Option<Millis> = match self.status {
            SagaStatus::Running => Some(self.deadline),
            _ => None,
        };
        for step in &self.steps {
            let waiting = matches!(step.status, StepStatus::Running | StepStatus::Compensating);
            if !waiting {
                continue;
            }
            let at = if step.in_flight {
                now
            } else {
                step.next_attempt_at.unwrap_or(now)
            };
            wake = Some(wake.map_or(at, |w| w.min(at)));
        }
        Some(wake.unwrap_or(now))
    }

    /// When this process should next look at the saga by itself: the earliest
    /// retry or poll not yet under way, and the deadline while running.
    pub fn next_timer(&self) -> Option<Millis> {
        if !self.status.is_active() {
            return None;
        }
        let deadline = (self.status == SagaStatus::Running).then_some(self.deadline);
        self.steps
            .iter()
            .filter(|s| {
                !s.in_flight && matches!(s.status, StepStatus::Running | StepStatus::Compensating)
            })
            .filter_map(|s| s.next_attempt_at)
            .chain(deadline)
            .min()
    }

    /// Outputs of the steps that have succeeded, by name: what the next calls receive.
    pub fn results(&self) -> serde_json::Map<String, Value> {
        self.steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .filter_map(|s| Some((s.name.clone(), s.output.clone()?)))
            .collect()
    }

    /// Steps whose action may have taken effect and that have a compensation, in
    /// the order they are compensated: unfinished steps first, then reverse completion order.
    pub fn compensation_order(&self, spec: &SagaSpec) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.steps.len())
            .filter(|&i| spec.steps[i].compensation.is_some() && self.needs_compensation(i))
            .collect();
        order.sort_by_key(|&i| {
            let s = &self.steps[i];
            (
                std::cmp::Reverse(s.completed_seq.map_or(u32::MAX, |c| c)),
                std::cmp::Reverse(s.started_seq.unwrap_or(0)),
            )
        });
        order
    }

    fn needs_compensation(&self, i: usize) -> bool {
        let s = &self.steps[i];
        match s.status {
            StepStatus::Succeeded
            | StepStatus::Running
            | StepStatus::Compensating
            | StepStatus::Compensated => true,
            StepStatus::Failed => s.may_have_applied,
            StepStatus::Pending | StepStatus::Skipped => false,
        }
    }

    fn action_replied(
        &mut self,
        spec: &SagaSpec,
        i: usize,
        outcome: Outcome,
        clock: Clock,
        decision: &mut Decision,
    ) {
        let running = self.status == SagaStatus::Running;
        let policy = spec.steps[i].action.retry;
        let step = &mut self.steps[i];
        step.in_flight = false;
        step.next_attempt_at = None;
        match outcome {
            Outcome::Done(output) => {
                self.seq += 1;
                let step = &mut self.steps[i];
                step.status = StepStatus::Succeeded;
                step.completed_seq = Some(self.seq);
                step.output = Some(output);
                step.last_error = None;
                step.polls = 0;
            }
            Outcome::Refused { status, message } => {
                step.status = StepStatus::Failed;
                step.may_have_applied = false;
                step.last_status = Some(status);
                step.last_error = Some(message.clone());
                let reason = format!("step {} refused: {message}", step.name);
                if running {
                    self.enter_compensation(reason, decision);
                }
            }
            Outcome::InProgress { status } => {
                step.last_status = Some(status);
                step.polls += 1;
                if running {
                    step.next_attempt_at =
                        Some(clock.now + policy.delay_ms(step.polls, clock.jitter) as i64);
                }
            }
            Outcome::Transient { status, error } => {
                step.last_status = status;
                step.last_error = Some(error.clone());
                step.failures += 1;
                step.polls = 0;
                if step.failures >= policy.max_attempts {
                    step.status = StepStatus::Failed;
                    step.may_have_applied = true;
                    let reason = format!(
                        "step {} failed after {} attempts: {error}",
                        step.name, step.failures
                    );
                    if running {
                        self.enter_compensation(reason, decision);
                    }
                } else if running {
                    step.next_attempt_at =
                        Some(clock.now + policy.delay_ms(step.failures, clock.jitter) as i64);
                }
            }
        }
    }

    fn compensation_replied(
        &mut self,
        spec: &SagaSpec,
        i: usize,
        outcome: Outcome,
        clock: Clock,
        decision: &mut Decision,
    ) {
        let Some(endpoint) = spec.steps[i].compensation.as_ref() else {
            return;
        };
        let policy = endpoint.retry;
        let step = &mut self.steps[i];
        step.in_flight = false;
        step.next_attempt_at = None;
        match outcome {
            Outcome::Done(_) => {
                step.status = StepStatus::Compensated;
                step.last_error = None;
                step.polls = 0;
            }
            Outcome::Refused { status, message } => {
                step.last_status = Some(status);
                step.last_error = Some(message.clone());
                let reason = format!("compensation of {} refused: {message}", step.name);
                self.become_stuck(reason, decision);
            }
            Outcome::InProgress { status } => {
                step.last_status = Some(status);
                step.polls += 1;
                step.next_attempt_at =
                    Some(clock.now + policy.delay_ms(step.polls, clock.jitter) as i64);
            }
            Outcome::Transient { status, error } => {
                step.last_status = status;
                step.last_error = Some(error.clone());
                step.compensation_failures += 1;
                step.polls = 0;
                if step.compensation_failures >= policy.max_attempts {
                    let reason = format!(
                        "compensation of {} failed after {} attempts: {error}",
                        step.name, step.compensation_failures
                    );
                    self.become_stuck(reason, decision);
                } else {
                    step.next_attempt_at = Some(
                        clock.now
                            + policy.delay_ms(step.compensation_failures, clock.jitter) as i64,
                    );
                }
            }
        }
    }

    fn operator_event(
        &mut self,
        spec: &SagaSpec,
        action: super::operator::Action,
        note: Option<String>,
        decision: &mut Decision,
    ) {
        let before = self.clone();
        decision
            .transitions
            .extend(self.operate(spec, action, note));
        decision.durable |= *self != before;
    }

    /// Turns a running saga to compensation; the transition for the timeline.
    pub(super) fn enter_compensation_for(&mut self, reason: String) -> Transition {
        let mut decision = Decision::default();
        self.enter_compensation(reason, &mut decision);
        decision
            .transitions
            .pop()
            .unwrap_or(Transition::Compensating {
                reason: String::new(),
            })
    }

    fn enter_compensation(&mut self, reason: String, decision: &mut Decision) {
        self.status = SagaStatus::Compensating;
        self.reason = Some(reason.clone());
        for step in &mut self.steps {
            if step.status == StepStatus::Pending {
                step.status = StepStatus::Skipped;
            }
            if step.status == StepStatus::Running && !step.in_flight {
                // No more forward retries; the step is compensated instead.
                step.next_attempt_at = None;
            }
        }
        decision.durable = true;
        decision
            .transitions
            .push(Transition::Compensating { reason });
    }

    fn become_stuck(&mut self, reason: String, decision: &mut Decision) {
        self.status = SagaStatus::Stuck;
        self.reason = Some(reason.clone());
        decision.durable = true;
        decision.transitions.push(Transition::Stuck { reason });
    }

    fn advance(&mut self, spec: &SagaSpec, clock: Clock, decision: &mut Decision) {
        if self.status == SagaStatus::Running && clock.now >= self.deadline {
            self.enter_compensation("deadline exceeded".to_string(), decision);
        }
        match self.status {
            SagaStatus::Running => self.advance_forward(spec, clock, decision),
            SagaStatus::Compensating => self.advance_compensation(spec, clock, decision),
            _ => {}
        }
    }

    fn advance_forward(&mut self, spec: &SagaSpec, clock: Clock, decision: &mut Decision) {
        if self.steps.iter().all(|s| s.status == StepStatus::Succeeded) {
            self.status = SagaStatus::Completed;
            self.reason = None;
            decision.durable = true;
            decision.transitions.push(Transition::Completed);
            return;
        }
        for i in 0..self.steps.len() {
            let ready = match self.steps[i].status {
                StepStatus::Pending => spec.steps[i]
                    .depends_on
                    .iter()
                    .all(|&d| self.steps[d].status == StepStatus::Succeeded),
                StepStatus::Running => {
                    !self.steps[i].in_flight
                        && self.steps[i]
                            .next_attempt_at
                            .is_none_or(|at| at <= clock.now)
                }
                _ => false,
            };
            if !ready {
                continue;
            }
            if self.steps[i].status == StepStatus::Pending {
                // The intent rides on the state written with this decision.
                self.seq += 1;
                self.steps[i].started_seq = Some(self.seq);
                self.steps[i].status = StepStatus::Running;
                decision.durable = true;
            }
            let step = &mut self.steps[i];
            step.attempts += 1;
            step.in_flight = true;
            step.next_attempt_at = None;
            decision.calls.push(Call {
                step: i,
                phase: Phase::Action,
                attempt: step.attempts,
            });
        }
    }

    fn advance_compensation(&mut self, spec: &SagaSpec, clock: Clock, decision: &mut Decision) {
        // Reverse order is only known once every action call in flight has answered.
        if self
            .steps
            .iter()
            .any(|s| s.in_flight && s.status == StepStatus::Running)
        {
            return;
        }
        let next = self
            .compensation_order(spec)
            .into_iter()
            .find(|&i| self.steps[i].status != StepStatus::Compensated);
        let Some(i) = next else {
            for step in &mut self.steps {
                if step.status == StepStatus::Running {
                    // Could not finish and has nothing to undo it with.
                    step.status = StepStatus::Failed;
                }
            }
            self.status = SagaStatus::Compensated;
            decision.durable = true;
            decision.transitions.push(Transition::Compensated);
            return;
        };
        let step = &mut self.steps[i];
        if step.in_flight || step.next_attempt_at.is_some_and(|at| at > clock.now) {
            return;
        }
        if step.status != StepStatus::Compensating {
            step.status = StepStatus::Compensating;
            step.polls = 0;
        }
        step.compensation_attempts += 1;
        step.in_flight = true;
        step.next_attempt_at = None;
        decision.calls.push(Call {
            step: i,
            phase: Phase::Compensation,
            attempt: step.compensation_attempts,
        });
    }

    /// The endpoint a call goes to.
    pub fn endpoint<'s>(spec: &'s SagaSpec, call: &Call) -> Option<&'s Endpoint> {
        let step = spec.steps.get(call.step)?;
        match call.phase {
            Phase::Action => Some(&step.action),
            Phase::Compensation => step.compensation.as_ref(),
        }
    }
}

#[cfg(test)]
#[path = "saga_tests.rs"]
mod tests;
