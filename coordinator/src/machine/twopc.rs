//! The two-phase commit / TCC state machine. Presumed abort: a transaction with no
//! durable commit decision is aborted; the commit decision, with the full branch
//! list, is part of the state written before any branch hears `commit`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::retry::RetryPolicy;
use super::{Clock, Millis, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    /// Interactive: collecting branches until the client commits or aborts.
    Active,
    Preparing,
    Committing,
    Committed,
    Aborting,
    Aborted,
    /// Decided, but a branch has not acknowledged within its attempt budget;
    /// retries go on at the maximum backoff.
    Stuck,
    /// An operator closed a stuck transaction for good, with a note.
    Resolved,
}

impl TxStatus {
    /// The spelling shared with the `transactions.state` CHECK constraint.
    pub fn as_str(self) -> &'static str {
        match self {
            TxStatus::Active => "active",
            TxStatus::Preparing => "preparing",
            TxStatus::Committing => "committing",
            TxStatus::Committed => "committed",
            TxStatus::Aborting => "aborting",
            TxStatus::Aborted => "aborted",
            TxStatus::Stuck => "stuck",
            TxStatus::Resolved => "resolved",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TxStatus::Committed | TxStatus::Aborted | TxStatus::Resolved
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Commit,
    Abort,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Commit => "commit",
            Verdict::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    OneShot,
    Interactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchStatus {
    Registered,
    Preparing,
    Prepared,
    Refused,
    Committing,
    Committed,
    Aborting,
    Aborted,
}

impl BranchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BranchStatus::Registered => "registered",
            BranchStatus::Preparing => "preparing",
            BranchStatus::Prepared => "prepared",
            BranchStatus::Refused => "refused",
            BranchStatus::Committing => "committing",
            BranchStatus::Committed => "committed",
            BranchStatus::Aborting => "aborting",
            BranchStatus::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxPhase {
    Prepare,
    Commit,
    Abort,
}

/// A branch as registered: where to send each phase, and what to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchSpec {
    pub name: String,
    pub prepare_url: Option<String>,
    pub commit_url: String,
    pub abort_url: String,
    pub payload: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub spec: BranchSpec,
    pub status: BranchStatus,
    pub prepare_attempts: u32,
    pub prepare_failures: u32,
    pub phase_two_attempts: u32,
    pub phase_two_failures: u32,
    pub polls: u32,
    pub next_attempt_at: Option<Millis>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// A call to this branch is under way in this process; never persisted.
    #[serde(skip)]
    pub in_flight: bool,
}

impl Branch {
    fn new(spec: BranchSpec) -> Branch {
        Branch {
            spec,
            status: BranchStatus::Registered,
            prepare_attempts: 0,
            prepare_failures: 0,
            phase_two_attempts: 0,
            phase_two_failures: 0,
            polls: 0,
            next_attempt_at: None,
            last_status: None,
            last_error: None,
            in_flight: false,
        }
    }

    fn acknowledged(&self) -> bool {
        matches!(self.status, BranchStatus::Committed | BranchStatus::Aborted)
    }

    /// Whether an abort must reach this branch: anything but a refusal may have
    /// prepared (or, in TCC, tried) something.
    fn needs_abort(&self) -> bool {
        self.status != BranchStatus::Refused
    }
}

/// The whole durable state of one 2PC / TCC transaction (`transactions.progress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwoPc {
    pub mode: Mode,
    pub status: TxStatus,
    pub verdict: Option<Verdict>,
    pub deadline: Millis,
    pub reason: Option<String>,
    pub branches: Vec<Branch>,
    pub retry: RetryPolicy,
    pub call_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Just created: a one-shot transaction prepares every branch at once.
    Start,
    /// Loaded by a new owner: nothing is in flight. An undecided prepare phase aborts.
    Resume,
    Tick,
    Reply {
        branch: usize,
        phase: TxPhase,
        outcome: Outcome,
    },
    /// An operator action that [`TwoPc::applies`] accepted, with the operator's note.
    Operator {
        action: super::operator::Action,
        note: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub branch: usize,
    pub phase: TxPhase,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Preparing,
    Decided {
        verdict: Verdict,
        reason: Option<String>,
    },
    Finished {
        verdict: Verdict,
    },
    Stuck {
        reason: String,
    },
    /// An operator resolved a stuck transaction.
    Resolved,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub calls: Vec<Call>,
    pub durable: bool,
    pub transitions: Vec<Transition>,
    /// An interactive transaction reached its deadline: the driver must close it
    /// (with the branch list read under lock) as an abort.
    pub close: Option<Verdict>,
}

impl TwoPc {
    pub fn one_shot(
        branches: Vec<BranchSpec>,
        deadline: Millis,
        retry: RetryPolicy,
        call_timeout_ms: u64,
    ) -> TwoPc {
        TwoPc {
            mode: Mode::OneShot,
            status: TxStatus::Preparing,
            verdict: None,
            deadline,
            reason: None,
            branches: branches.into_iter().map(Branch::new).collect(),
            retry,
            call_timeout_ms,
        }
    }

    pub fn interactive(deadline: Millis, retry: RetryPolicy, call_timeout_ms: u64) -> TwoPc {
        TwoPc {
            mode: Mode::Interactive,
            status: TxStatus::Active,
            verdict: None,
            deadline,
            reason: None,
            branches: Vec::new(),
            retry,
            call_timeout_ms,
        }
    }

    pub fn handle(&mut self, event: Event, clock: Clock) -> Decision {
        let mut decision = Decision::default();
        if self.status.is_terminal() {
            return decision;
        }
        match event {
            Event::Start => decision.durable = true,
            Event::Resume => {
                for b in &mut self.branches {
                    b.in_flight = false;
                }
                if self.status == TxStatus::Preparing {
                    // Presumed abort: nobody can know the votes that were in flight.
                    self.decide(
                        Verdict::Abort,
                        Some("coordinator restarted before the decision".into()),
                        &mut decision,
                    );
                }
            }
            Event::Tick => {}
            Event::Reply {
                branch,
                phase,
                outcome,
            } => {
                if branch >= self.branches.len() || !self.branches[branch].in_flight {
                    return decision;
                }
                decision.durable = true;
                self.branches[branch].in_flight = false;
                match phase {
                    TxPhase::Prepare => self.prepare_replied(branch, outcome, clock, &mut decision),
                    TxPhase::Commit | TxPhase::Abort => {
                        self.phase_two_replied(branch, outcome, clock, &mut decision)
                    }
                }
            }
            Event::Operator { action, note } => self.operate(action, note, &mut decision),
        }
        self.advance(clock, &mut decision);
        decision
    }

    /// Closes an interactive transaction with the branches registered so far: the
    /// client's commit (prepare what has a prepare URL, then commit) or an abort.
    pub fn close(
        &mut self,
        verdict: Verdict,
        branches: Vec<BranchSpec>,
        reason: Option<String>,
        clock: Clock,
    ) -> Decision {
        let mut decision = Decision::default();
        if self.status != TxStatus::Active {
            return decision;
        }
        decision.durable = true;
        self.branches = branches.into_iter().map(Branch::new).collect();
        match verdict {
            Verdict::Abort => self.decide(Verdict::Abort, reason, &mut decision),
            Verdict::Commit => {
                for b in &mut self.branches {
                    if b.spec.prepare_url.is_none() {
                        // A TCC branch registers after its Try succeeded: that is its yes vote.
                        b.status = BranchStatus::Prepared;
                    }
                }
                if self
                    .branches
                    .iter()
                    .any(|b| b.status == BranchStatus::Registered)
                {
                    self.status = TxStatus::Preparing;
                    decision.transitions.push(Transition::Preparing);
                } else {
                    self.decide(Verdict::Commit, None, &mut decision);
                }
            }
        }
        self.advance(clock, &mut decision);
        decision
    }

    /// When the transaction next needs attention if nobody drives it.
    pub fn wake_at(&self, now: Millis) -> Option<Millis> {
        if self.status.is_terminal() {
            return None;
        }
        let deadline =
            matches!(self.status, TxStatus::Active | TxStatus::Preparing).then_some(self.deadline);
        let branches = self
            .branches
            .iter()
            .filter(|b| !b.acknowledged())
            .filter_map(|b| {
                if b.in_flight {
                    Some(now)
                } else {
                    b.next_attempt_at
                }
            });
        let waiting_phase_two = self.verdict.is_some()
            && self
                .branches
                .iter()
                .any(|b| !b.acknowledged() && b.next_attempt_at.is_none());
        branches
            .chain(deadline)
            .chain(waiting_phase_two.then_some(now))
            .min()
    }

    /// The earliest retry or deadline this process should wake for.
    pub fn next_timer(&self) -> Option<Millis> {
        if self.status.is_terminal() {
            return None;
        }
        let deadline =
            matches!(self.status, TxStatus::Active | TxStatus::Preparing).then_some(self.deadline);
        self.branches
            .iter()
            .filter(|b| !b.in_flight && !b.acknowledged())
            .filter_map(|b| b.next_attempt_at)
            .chain(deadline)
            .min()
    }

    fn prepare_replied(
        &mut self,
        i: usize,
        outcome: Outcome,
        clock: Clock,
        decision: &mut Decision,
    ) {
        let undecided = self.verdict.is_none();
        let policy = self.retry;
        let b = &mut self.branches[i];
        b.next_attempt_at = None;
        match outcome {
            Outcome::Done(_) => {
                b.status = BranchStatus::Prepared;
                b.last_error = None;
                b.polls = 0;
            }
            Outcome::Refused { status, message } => {
                b.status = BranchStatus::Refused;
                b.last_status = Some(status);
                b.last_error = Some(message.clone());
                let reason = format!("branch {} voted no: {message}", b.spec.name);
                if undecided {
                    self.decide(Verdict::Abort, Some(reason), decision);
                }
            }
            Outcome::InProgress { status } => {
                b.last_status = Some(status);
                b.polls += 1;
                b.next_attempt_at = Some(clock.now + policy.delay_ms(b.polls, clock.jitter) as i64);
            }
            Outcome::Transient { status, error } => {
                b.last_status = status;
                b.last_error = Some(error.clone());
                b.prepare_failures += 1;
                if b.prepare_failures >= policy.max_attempts {
                    let reason = format!(
                        "prepare of {} failed after {} attempts: {error}",
                        b.spec.name, b.prepare_failures
                    );
                    if undecided {
                        self.decide(Verdict::Abort, Some(reason), decision);
                    }
                } else {
                    b.next_attempt_at =
                        Some(clock.now + policy.delay_ms(b.prepare_failures, clock.jitter) as i64);
                }
            }
        }
    }

    fn phase_two_replied(
        &mut self,
        i: usize,
        outcome: Outcome,
        clock: Clock,
        decision: &mut Decision,
    ) {
        let policy = self.retry;
        let stuck = self.status == TxStatus::Stuck;
        let verdict = self.verdict.unwrap_or(Verdict::Abort);
        let b = &mut self.branches[i];
        b.next_attempt_at = None;
        match outcome {
            Outcome::Done(_) => {
                b.status = match verdict {
                    Verdict::Commit => BranchStatus::Committed,
                    Verdict::Abort => BranchStatus::Aborted,
                };
                b.last_error = None;
                b.polls = 0;
            }
            Outcome::InProgress { status } => {
                b.last_status = Some(status);
                b.polls += 1;
                b.next_attempt_at = Some(clock.now + policy.delay_ms(b.polls, clock.jitter) as i64);
            }
            Outcome::Refused {
                status,
                message: error,
            }
            | Outcome::Transient {
                status: Some(status),
                error,
            } => {
                b.last_status = Some(status);
                b.last_error = Some(error);
                b.phase_two_failures += 1;
            }
            Outcome::Transient {
                status: None,
                error,
            } => {
                b.last_status = None;
                b.last_error = Some(error);
                b.phase_two_failures += 1;
            }
        }
        let b = &mut self.branches[i];
        if !b.acknowledged() && b.next_attempt_at.is_none() {
            let delay = if b.phase_two_failures >= policy.max_attempts {
                policy.max_backoff_ms
            } else {
                policy.delay_ms(b.phase_two_failures, clock.jitter)
            };
            b.next_attempt_at = Some(clock.now + delay as i64);
            if b.phase_two_failures >= policy.max_attempts && !stuck {
                let reason = format!(
                    "branch {} has not acknowledged {} after {} attempts: {}",
                    b.spec.name,
                    verdict.as_str(),
                    b.phase_two_failures,
                    b.last_error.clone().unwrap_or_default()
                );
                self.status = TxStatus::Stuck;
                self.reason = Some(reason.clone());
                decision.transitions.push(Transition::Stuck { reason });
            }
        }
    }

    /// Applies an operator action (pause and resume change nothing here). An
    /// active interactive transaction is rolled back through [`TwoPc::close`], which
    /// needs the registered branches.
    fn operate(
        &mut self,
        action: super::operator::Action,
        note: Option<String>,
        decision: &mut Decision,
    ) {
        use super::operator::Action;
        match action {
            Action::Retry => {
                for b in &mut self.branches {
                    if !b.acknowledged() && !b.in_flight && b.next_attempt_at.is_some() {
                        b.next_attempt_at = None;
                        decision.durable = true;
                    }
                }
            }
            Action::Compensate if self.status == TxStatus::Preparing => {
                let reason = match note {
                    Some(n) => format!("aborted by an operator: {n}"),
                    None => "aborted by an operator".to_string(),
                };
                self.decide(Verdict::Abort, Some(reason), decision);
            }
            Action::Resolve if self.status == TxStatus::Stuck => {
                self.status = TxStatus::Resolved;
                if note.is_some() {
                    self.reason = note;
                }
                for b in &mut self.branches {
                    b.next_attempt_at = None;
                }
                decision.durable = true;
                decision.transitions.push(Transition::Resolved);
            }
            _ => {}
        }
    }

    fn decide(&mut self, verdict: Verdict, reason: Option<String>, decision: &mut Decision) {
        if self.verdict.is_some() {
            return;
        }
        self.verdict = Some(verdict);
        self.status = match verdict {
            Verdict::Commit => TxStatus::Committing,
            Verdict::Abort => TxStatus::Aborting,
        };
        if reason.is_some() {
            self.reason = reason.clone();
        }
        for b in &mut self.branches {
            b.next_attempt_at = None;
            b.polls = 0;
        }
        decision.durable = true;
        decision
            .transitions
            .push(Transition::Decided { verdict, reason });
    }

    fn advance(&mut self, clock: Clock, decision: &mut Decision) {
        match self.status {
            TxStatus::Active if clock.now >= self.deadline => {
                decision.close = Some(Verdict::Abort);
            }
            TxStatus::Preparing => {
                if clock.now >= self.deadline {
                    self.decide(Verdict::Abort, Some("timeout".into()), decision);
                } else if self
                    .branches
                    .iter()
                    .all(|b| b.status == BranchStatus::Prepared)
                {
                    self.decide(Verdict::Commit, None, decision);
                } else {
                    for (i, b) in self.branches.iter_mut().enumerate() {
                        let due = b.next_attempt_at.is_none_or(|at| at <= clock.now);
                        let ready =
                            matches!(b.status, BranchStatus::Registered | BranchStatus::Preparing);
                        if ready && due && !b.in_flight && b.spec.prepare_url.is_some() {
                            b.status = BranchStatus::Preparing;
                            b.prepare_attempts += 1;
                            b.in_flight = true;
                            decision.calls.push(Call {
                                branch: i,
                                phase: TxPhase::Prepare,
                                attempt: b.prepare_attempts,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        if self.verdict.is_some() && !self.status.is_terminal() {
            self.advance_phase_two(clock, decision);
        }
    }

    fn advance_phase_two(&mut self, clock: Clock, decision: &mut Decision) {
        let verdict = self.verdict.unwrap_or(Verdict::Abort);
        // Prepares still in flight answer first, so an abort never overtakes them.
        if self
            .branches
            .iter()
            .any(|b| b.in_flight && b.status == BranchStatus::Preparing)
        {
            return;
        }
        let mut pending = false;
        for (i, b) in self.branches.iter_mut().enumerate() {
            if b.acknowledged() || (verdict == Verdict::Abort && !b.needs_abort()) {
                continue;
            }
            pending = true;
            let due = b.next_attempt_at.is_none_or(|at| at <= clock.now);
            if b.in_flight || !due {
                continue;
            }
            b.status = match verdict {
                Verdict::Commit => BranchStatus::Committing,
                Verdict::Abort => BranchStatus::Aborting,
            };
            b.phase_two_attempts += 1;
            b.in_flight = true;
            let phase = match verdict {
                Verdict::Commit => TxPhase::Commit,
                Verdict::Abort => TxPhase::Abort,
            };
            decision.calls.push(Call {
                branch: i,
                phase,
                attempt: b.phase_two_attempts,
            });
        }
        if !pending {
            self.status = match verdict {
                Verdict::Commit => TxStatus::Committed,
                Verdict::Abort => TxStatus::Aborted,
            };
            decision.durable = true;
            decision.transitions.push(Transition::Finished { verdict });
        }
    }

    /// The URL a call goes to.
    pub fn url(&self, call: &Call) -> Option<&str> {
        let b = self.branches.get(call.branch)?;
        match call.phase {
            TxPhase::Prepare => b.spec.prepare_url.as_deref(),
            TxPhase::Commit => Some(&b.spec.commit_url),
            TxPhase::Abort => Some(&b.spec.abort_url),
        }
    }
}

#[cfg(test)]
#[path = "twopc_tests.rs"]
mod tests;
