//! Operator actions as the machines see them: whether an action applies to a
//! transaction's current state (and why not), and the state changes it makes.
//! Pause and resume only flip the row's `paused` flag, so they are judged here
//! but change nothing in the machines.

use serde_json::Value;

use super::saga::{Saga, SagaStatus, StepStatus, Transition};
use super::spec::SagaSpec;
use super::twopc::{TwoPc, TxStatus, Verdict};

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Retry now: a stuck saga compensates again with a fresh budget; anything
    /// waiting on a backoff is called at once.
    Retry,
    Pause,
    Resume,
    /// Roll back: a running saga compensates, an undecided 2PC transaction aborts.
    Compensate,
    /// Mark a saga step done with this output (the operator fixed it by hand).
    Skip {
        step: String,
        output: Value,
    },
    /// Close a stuck transaction for good.
    Resolve,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Compensate => "compensate",
            Action::Skip { .. } => "skip",
            Action::Resolve => "resolve",
        }
    }
}

/// Whether an action applies to the state a transaction is in now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applies {
    Yes,
    /// Asked again: the action is already in effect, nothing to do.
    AlreadyInEffect,
    /// Does not apply, and why (for the operator).
    No(String),
}

impl Saga {
    /// Judges an action against this saga; `paused` is the row's flag.
    pub fn applies(&self, spec: &SagaSpec, action: &Action, paused: bool) -> Applies {
        let state = self.status.as_str();
        if self.status.is_terminal() {
            return match (action, self.status) {
                (Action::Resolve, SagaStatus::Resolved) => Applies::AlreadyInEffect,
                _ => Applies::No(format!("the saga is {state}: it is finished")),
            };
        }
        match action {
            Action::Pause if paused => Applies::AlreadyInEffect,
            Action::Pause if self.status == SagaStatus::Stuck => Applies::No(
                "the saga is stuck: it already waits for an operator, there is nothing to pause"
                    .into(),
            ),
            Action::Pause => Applies::Yes,
            Action::Resume if paused => Applies::Yes,
            Action::Resume => Applies::AlreadyInEffect,
            _ if paused => Applies::No(format!(
                "the saga is paused; resume it before you {}",
                action.name()
            )),
            Action::Retry => Applies::Yes,
            Action::Compensate => match self.status {
                SagaStatus::Running => Applies::Yes,
                SagaStatus::Compensating => Applies::AlreadyInEffect,
                _ => Applies::No(format!(
                    "the saga is {state}: its compensation already ran as far as it could; retry or resolve it"
                )),
            },
            Action::Skip { step, output } => {
                if self.status != SagaStatus::Running {
                    return Applies::No(format!(
                        "the saga is {state}: only steps of a running saga can be skipped"
                    ));
                }
                let Some(i) = self.steps.iter().position(|s| &s.name == step) else {
                    return Applies::No(format!("the saga has no step named '{step}'"));
                };
                if let Some(waiting) = self.unfinished_dependency(spec, i) {
                    return Applies::No(format!(
                        "step '{step}' waits for '{waiting}'; skip or finish that one first"
                    ));
                }
                let s = &self.steps[i];
                match s.status {
                    StepStatus::Pending | StepStatus::Running => Applies::Yes,
                    StepStatus::Succeeded if s.output.as_ref() == Some(output) => {
                        Applies::AlreadyInEffect
                    }
                    other => Applies::No(format!(
                        "step '{step}' is {}; only a pending or failing step can be skipped",
                        other.as_str()
                    )),
                }
            }
            Action::Resolve => match self.status {
                SagaStatus::Stuck => Applies::Yes,
                _ => Applies::No(format!(
                    "the saga is {state}; only a stuck transaction can be resolved"
                )),
            },
        }
    }

    /// A dependency of step `i` that has not succeeded: a step is never done before
    /// its dependencies, not even by an operator's hand.
    fn unfinished_dependency(&self, spec: &SagaSpec, i: usize) -> Option<&str> {
        spec.steps.get(i)?.depends_on.iter().find_map(|&d| {
            (self.steps[d].status != StepStatus::Succeeded).then_some(self.steps[d].name.as_str())
        })
    }

    /// Applies an action that [`Saga::applies`] accepted (pause and resume change nothing here).
    pub(super) fn operate(
        &mut self,
        spec: &SagaSpec,
        action: Action,
        note: Option<String>,
    ) -> Vec<Transition> {
        let mut transitions = Vec::new();
        match action {
            Action::Retry if self.status == SagaStatus::Stuck => {
                for step in &mut self.steps {
                    step.in_flight = false;
                    if step.status == StepStatus::Compensating {
                        step.compensation_failures = 0;
                        step.polls = 0;
                        step.next_attempt_at = None;
                    }
                }
                self.status = SagaStatus::Compensating;
                transitions.push(Transition::Retrying);
            }
            Action::Retry => {
                // Retry now: whatever waits on a backoff is due at once.
                for step in &mut self.steps {
                    if matches!(step.status, StepStatus::Running | StepStatus::Compensating)
                        && !step.in_flight
                    {
                        step.next_attempt_at = None;
                    }
                }
            }
            Action::Compensate if self.status == SagaStatus::Running => {
                let reason = match note {
                    Some(n) => format!("compensated by an operator: {n}"),
                    None => "compensated by an operator".to_string(),
                };
                transitions.push(self.enter_compensation_for(reason));
            }
            Action::Skip { step, output } => {
                let Some(i) = self.steps.iter().position(|s| s.name == step) else {
                    return transitions;
                };
                if !matches!(
                    self.steps[i].status,
                    StepStatus::Pending | StepStatus::Running
                ) || self.steps[i].in_flight
                    || self.unfinished_dependency(spec, i).is_some()
                {
                    return transitions;
                }
                self.seq += 1;
                let seq = self.seq;
                let s = &mut self.steps[i];
                s.started_seq.get_or_insert(seq);
                s.completed_seq = Some(seq);
                s.status = StepStatus::Succeeded;
                s.output = Some(output);
                s.next_attempt_at = None;
                s.last_error = None;
                s.polls = 0;
            }
            Action::Resolve if self.status == SagaStatus::Stuck => {
                self.status = SagaStatus::Resolved;
                self.reason = note.or(self.reason.take());
                for step in &mut self.steps {
                    step.next_attempt_at = None;
                }
                transitions.push(Transition::Resolved);
            }
            _ => {}
        }
        transitions
    }
}

impl TwoPc {
    /// Judges an action against this transaction; `paused` is the row's flag.
    pub fn applies(&self, action: &Action, paused: bool) -> Applies {
        let state = self.status.as_str();
        if self.status.is_terminal() {
            return match (action, self.status) {
                (Action::Resolve, TxStatus::Resolved) => Applies::AlreadyInEffect,
                _ => Applies::No(format!("the transaction is {state}: it is finished")),
            };
        }
        let active = self.status == TxStatus::Active;
        match action {
            Action::Skip { .. } => {
                Applies::No("skip applies to saga steps; 2PC branches cannot be skipped".into())
            }
            Action::Pause if paused => Applies::AlreadyInEffect,
            Action::Pause if active => Applies::No(
                "the transaction is active: it waits for its client, there is nothing to pause"
                    .into(),
            ),
            Action::Pause => Applies::Yes,
            Action::Resume if paused => Applies::Yes,
            Action::Resume => Applies::AlreadyInEffect,
            _ if paused => Applies::No(format!(
                "the transaction is paused; resume it before you {}",
                action.name()
            )),
            Action::Retry if active => Applies::No(
                "the transaction is active: it waits for its client to commit or abort".into(),
            ),
            // A new owner cannot know the votes in flight and would presume abort.
            Action::Retry if self.status == TxStatus::Preparing => Applies::No(
                "the transaction is preparing: votes are being collected; retry applies once it is decided".into(),
            ),
            Action::Retry => Applies::Yes,
            Action::Compensate => match (self.status, self.verdict) {
                (TxStatus::Active | TxStatus::Preparing, None) => Applies::Yes,
                (_, Some(Verdict::Abort)) => Applies::AlreadyInEffect,
                _ => Applies::No(format!(
                    "the transaction is {state}: the commit decision is durable and can no longer be rolled back"
                )),
            },
            Action::Resolve => match self.status {
                TxStatus::Stuck => Applies::Yes,
                _ => Applies::No(format!(
                    "the transaction is {state}; only a stuck transaction can be resolved"
                )),
            },
        }
    }
}

#[cfg(test)]
#[path = "operator_tests.rs"]
mod tests;
