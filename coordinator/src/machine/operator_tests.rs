//! Table-driven tests of operator actions: which apply to which states (and why
//! not), and what each does to a saga or a 2PC transaction.

use super::*;
use crate::machine::retry::RetryPolicy;
use crate::machine::saga::{Call, Event, Phase};
use crate::machine::spec::{Endpoint, SagaSpec, StepSpec};
use crate::machine::twopc::{self, BranchSpec, TxPhase};
use crate::machine::{Clock, Outcome};
use serde_json::json;

fn endpoint(url: &str) -> Endpoint {
    Endpoint {
        url: url.to_string(),
        timeout_ms: 1_000,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            multiplier: 2.0,
        },
    }
}

fn checkout() -> SagaSpec {
    let step = |name: &str, deps: Vec<usize>| StepSpec {
        name: name.into(),
        action: endpoint(&format!("http://a/{name}")),
        compensation: Some(endpoint(&format!("http://c/{name}"))),
        depends_on: deps,
    };
    SagaSpec {
        name: "checkout".into(),
        version: 1,
        timeout_ms: 60_000,
        steps: vec![
            step("reserve", vec![]),
            step("charge", vec![0]),
            step("ship", vec![1]),
        ],
    }
}

fn reply(step: usize, phase: Phase, outcome: Outcome) -> Event {
    Event::Reply {
        step,
        phase,
        outcome,
    }
}

fn transient() -> Outcome {
    Outcome::Transient {
        status: Some(503),
        error: "down".into(),
    }
}

/// A saga in a named situation, with the spec it runs.
fn saga_in(situation: &str) -> Saga {
    let spec = checkout();
    let mut saga = Saga::new(&spec, 0);
    let script: Vec<(Event, i64)> = match situation {
        // reserve done, charge failed once and waits on its backoff
        "running" => vec![
            (Event::Start, 0),
            (reply(0, Phase::Action, Outcome::Done(json!("r"))), 1),
            (reply(1, Phase::Action, transient()), 2),
        ],
        "compensating" => vec![
            (Event::Start, 0),
            (reply(0, Phase::Action, Outcome::Done(json!("r"))), 1),
            (Event::Cancel, 2),
        ],
        "stuck" => vec![
            (Event::Start, 0),
            (reply(0, Phase::Action, Outcome::Done(json!("r"))), 1),
            (
                reply(
                    1,
                    Phase::Action,
                    Outcome::Refused {
                        status: 422,
                        message: "declined".into(),
                    },
                ),
                2,
            ),
            (
                reply(
                    0,
                    Phase::Compensation,
                    Outcome::Refused {
                        status: 409,
                        message: "no".into(),
                    },
                ),
                3,
            ),
        ],
        "completed" => vec![
            (Event::Start, 0),
            (reply(0, Phase::Action, Outcome::Done(json!(0))), 1),
            (reply(1, Phase::Action, Outcome::Done(json!(1))), 2),
            (reply(2, Phase::Action, Outcome::Done(json!(2))), 3),
        ],
        other => panic!("no situation {other}"),
    };
    for (event, now) in script {
        saga.handle(&spec, event, Clock::at(now));
    }
    saga
}

fn skip(step: &str) -> Action {
    Action::Skip {
        step: step.into(),
        output: json!({ "by": "hand" }),
    }
}

#[test]
fn table_of_what_applies_to_a_saga() {
    use Applies::{AlreadyInEffect as Already, Yes};
    let no = |why: &str| Applies::No(why.to_string());
    let cases: Vec<(&str, bool, Action, Applies)> = vec![
        ("running", false, Action::Retry, Yes),
        ("running", false, Action::Pause, Yes),
        ("running", true, Action::Pause, Already),
        ("running", false, Action::Resume, Already),
        ("running", true, Action::Resume, Yes),
        ("running", true, Action::Retry, no("the saga is paused; resume it before you retry")),
        ("running", false, Action::Compensate, Yes),
        ("running", false, skip("charge"), Yes),
        ("running", false, skip("ship"), no("step 'ship' waits for 'charge'; skip or finish that one first")),
        ("running", false, skip("nope"), no("the saga has no step named 'nope'")),
        ("running", false, skip("reserve"), no("step 'reserve' is succeeded; only a pending or failing step can be skipped")),
        ("running", false, Action::Resolve, no("the saga is running; only a stuck transaction can be resolved")),
        ("compensating", false, Action::Compensate, Already),
        ("compensating", false, Action::Retry, Yes),
        ("compensating", false, skip("charge"), no("the saga is compensating: only steps of a running saga can be skipped")),
        ("stuck", false, Action::Retry, Yes),
        ("stuck", false, Action::Resolve, Yes),
        ("stuck", false, Action::Pause, no("the saga is stuck: it already waits for an operator, there is nothing to pause")),
        ("stuck", false, Action::Compensate, no("the saga is stuck: its compensation already ran as far as it could; retry or resolve it")),
        ("completed", false, Action::Retry, no("the saga is completed: it is finished")),
        ("completed", false, Action::Resolve, no("the saga is completed: it is finished")),
    ];
    let spec = checkout();
    for (situation, paused, action, expected) in cases {
        let saga = saga_in(situation);
        assert_eq!(
            saga.applies(&spec, &action, paused),
            expected,
            "{} on a {situation} saga (paused: {paused})",
            action.name()
        );
    }
}

#[test]
fn table_of_what_operator_actions_do_to_a_saga() {
    struct Case {
        situation: &'static str,
        action: Action,
        status: SagaStatus,
        calls: Vec<Call>,
        transitions: Vec<Transition>,
    }
    let action = |step, attempt| Call {
        step,
        phase: Phase::Action,
        attempt,
    };
    let compensation = |step, attempt| Call {
        step,
        phase: Phase::Compensation,
        attempt,
    };
    let cases = vec![
        Case {
            situation: "running",
            action: Action::Retry,
            status: SagaStatus::Running,
            // charge waited on its backoff until 2 + delay; retry now calls it at once
            calls: vec![action(1, 2)],
            transitions: vec![],
        },
        Case {
            situation: "running",
            action: Action::Compensate,
            status: SagaStatus::Compensating,
            // charge's call may have applied: compensated first, then reserve
            calls: vec![compensation(1, 1)],
            transitions: vec![Transition::Compensating {
                reason: "compensated by an operator: because".into(),
            }],
        },
        Case {
            situation: "running",
            action: skip("charge"),
            status: SagaStatus::Running,
            calls: vec![action(2, 1)],
            transitions: vec![],
        },
        Case {
            situation: "stuck",
            action: Action::Retry,
            status: SagaStatus::Compensating,
            calls: vec![compensation(0, 2)],
            transitions: vec![Transition::Retrying],
        },
        Case {
            situation: "stuck",
            action: Action::Resolve,
            status: SagaStatus::Resolved,
            calls: vec![],
            transitions: vec![Transition::Resolved],
        },
    ];
    let spec = checkout();
    for case in cases {
        let mut saga = saga_in(case.situation);
        let decision = saga.handle(
            &spec,
            Event::Operator {
                action: case.action.clone(),
                note: Some("because".into()),
            },
            Clock::at(10),
        );
        let what = format!("{} on a {} saga", case.action.name(), case.situation);
        assert_eq!(saga.status, case.status, "status: {what}");
        assert_eq!(decision.calls, case.calls, "calls: {what}");
        assert_eq!(
            decision.transitions, case.transitions,
            "transitions: {what}"
        );
        assert!(decision.durable, "durable: {what}");
    }
}

#[test]
fn a_skipped_step_passes_the_operators_output_to_the_next_step() {
    let spec = checkout();
    let mut saga = saga_in("running");
    saga.handle(
        &spec,
        Event::Operator {
            action: skip("charge"),
            note: None,
        },
        Clock::at(10),
    );
    assert_eq!(saga.steps[1].status, StepStatus::Succeeded);
    assert_eq!(saga.results()["charge"], json!({ "by": "hand" }));
    // the late reply of the skipped step's earlier call changes nothing
    let before = saga.clone();
    saga.handle(
        &spec,
        reply(1, Phase::Action, Outcome::Done(json!("late"))),
        Clock::at(11),
    );
    assert_eq!(saga.steps[1].output, before.steps[1].output);
}

#[test]
fn a_resolved_saga_is_terminal_and_keeps_the_note() {
    let spec = checkout();
    let mut saga = saga_in("stuck");
    saga.handle(
        &spec,
        Event::Operator {
            action: Action::Resolve,
            note: Some("refunded by hand".into()),
        },
        Clock::at(10),
    );
    assert!(saga.status.is_terminal());
    assert_eq!(saga.reason.as_deref(), Some("refunded by hand"));
    assert_eq!(saga.wake_at(20), None);
    assert_eq!(
        saga.applies(&spec, &Action::Resolve, false),
        Applies::AlreadyInEffect
    );
}

fn branch(name: &str) -> BranchSpec {
    BranchSpec {
        name: name.into(),
        prepare_url: Some(format!("http://p/{name}/prepare")),
        commit_url: format!("http://p/{name}/commit"),
        abort_url: format!("http://p/{name}/abort"),
        payload: json!(null),
    }
}

fn tx_reply(branch: usize, phase: TxPhase, outcome: Outcome) -> twopc::Event {
    twopc::Event::Reply {
        branch,
        phase,
        outcome,
    }
}

/// A 2PC transaction in a named situation.
fn tx_in(situation: &str) -> TwoPc {
    let policy = RetryPolicy {
        max_attempts: 2,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
        multiplier: 2.0,
    };
    if situation == "active" {
        return TwoPc::interactive(10_000, policy, 1_000);
    }
    let mut tx = TwoPc::one_shot(vec![branch("a"), branch("b")], 10_000, policy, 1_000);
    let yes = |b| tx_reply(b, TxPhase::Prepare, Outcome::Done(json!(null)));
    let mut script = vec![(twopc::Event::Start, 0)];
    match situation {
        "preparing" => script.push((yes(0), 1)),
        "committing" | "stuck" => {
            script.push((yes(0), 1));
            script.push((yes(1), 2));
            script.push((tx_reply(0, TxPhase::Commit, transient()), 3));
            if situation == "stuck" {
                script.push((twopc::Event::Tick, 2_000));
                script.push((tx_reply(0, TxPhase::Commit, transient()), 2_001));
            }
        }
        "aborting" => script.push((
            tx_reply(
                0,
                TxPhase::Prepare,
                Outcome::Refused {
                    status: 409,
                    message: "no".into(),
                },
            ),
            1,
        )),
        other => panic!("no situation {other}"),
    }
    for (event, now) in script {
        tx.handle(event, Clock::at(now));
    }
    tx
}

#[test]
fn table_of_what_applies_to_a_two_phase_transaction() {
    use Applies::{AlreadyInEffect as Already, Yes};
    let cases: Vec<(&str, Action, Applies)> = vec![
        ("active", Action::Compensate, Yes),
        ("active", Action::Pause, Applies::No("the transaction is active: it waits for its client, there is nothing to pause".into())),
        ("preparing", Action::Compensate, Yes),
        ("preparing", Action::Pause, Yes),
        ("preparing", Action::Retry, Applies::No("the transaction is preparing: votes are being collected; retry applies once it is decided".into())),
        ("committing", Action::Retry, Yes),
        ("committing", Action::Compensate, Applies::No("the transaction is committing: the commit decision is durable and can no longer be rolled back".into())),
        ("committing", Action::Resolve, Applies::No("the transaction is committing; only a stuck transaction can be resolved".into())),
        ("aborting", Action::Compensate, Already),
        ("stuck", Action::Resolve, Yes),
        ("stuck", skip("a"), Applies::No("skip applies to saga steps; 2PC branches cannot be skipped".into())),
    ];
    for (situation, action, expected) in cases {
        let tx = tx_in(situation);
        assert_eq!(tx.status.as_str(), situation, "situation {situation}");
        assert_eq!(
            tx.applies(&action, false),
            expected,
            "{} on a {situation} transaction",
            action.name()
        );
    }
}

#[test]
fn table_of_what_operator_actions_do_to_a_two_phase_transaction() {
    let operator = |action| twopc::Event::Operator {
        action,
        note: Some("because".into()),
    };
    // compensate: an undecided transaction aborts; the branch that voted yes hears abort
    let mut tx = tx_in("preparing");
    let d = tx.handle(operator(Action::Compensate), Clock::at(5));
    assert_eq!(tx.status, TxStatus::Aborting);
    assert_eq!(tx.verdict, Some(Verdict::Abort));
    assert!(d.durable);
    assert_eq!(
        tx.reason.as_deref(),
        Some("aborted by an operator: because")
    );
    // retry now: phase two goes out at once instead of after its backoff
    let mut tx = tx_in("committing");
    assert!(tx.branches[0].next_attempt_at.is_some_and(|at| at > 5));
    let d = tx.handle(operator(Action::Retry), Clock::at(5));
    assert_eq!(
        d.calls,
        vec![twopc::Call {
            branch: 0,
            phase: TxPhase::Commit,
            attempt: 2
        }]
    );
    // resolve: a stuck transaction stops retrying for good
    let mut tx = tx_in("stuck");
    let d = tx.handle(operator(Action::Resolve), Clock::at(3_000));
    assert_eq!(tx.status, TxStatus::Resolved);
    assert_eq!(d.transitions, vec![twopc::Transition::Resolved]);
    assert_eq!(tx.wake_at(3_001), None);
}
