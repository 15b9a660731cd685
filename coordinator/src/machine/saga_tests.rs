//! Table-driven tests and properties of the saga machine: events and clock values
//! in, calls and states out, with no Postgres or HTTP in sight.

use super::*;
use crate::machine::retry::RetryPolicy;
use crate::machine::spec::{Endpoint, SagaSpec, StepSpec};
use proptest::prelude::*;
use serde_json::json;

fn endpoint(url: &str, max_attempts: u32) -> Endpoint {
    Endpoint {
        url: url.to_string(),
        timeout_ms: 1_000,
        retry: RetryPolicy {
            max_attempts,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            multiplier: 2.0,
        },
    }
}

/// A spec from `(name, depends_on, has_compensation)` triples.
fn spec_of(steps: &[(&str, &[usize], bool)]) -> SagaSpec {
    SagaSpec {
        name: "test".into(),
        version: 1,
        timeout_ms: 60_000,
        steps: steps
            .iter()
            .map(|(name, deps, comp)| StepSpec {
                name: name.to_string(),
                action: endpoint(&format!("http://a/{name}"), 3),
                compensation: comp.then(|| endpoint(&format!("http://c/{name}"), 2)),
                depends_on: deps.to_vec(),
            })
            .collect(),
    }
}

fn checkout() -> SagaSpec {
    spec_of(&[
        ("reserve", &[], true),
        ("charge", &[0], true),
        ("ship", &[1], true),
    ])
}

fn action(step: usize, attempt: u32) -> Call {
    Call {
        step,
        phase: Phase::Action,
        attempt,
    }
}

fn compensation(step: usize, attempt: u32) -> Call {
    Call {
        step,
        phase: Phase::Compensation,
        attempt,
    }
}

fn done(step: usize) -> Event {
    Event::Reply {
        step,
        phase: Phase::Action,
        outcome: Outcome::Done(json!({ "step": step })),
    }
}

fn refused(step: usize) -> Event {
    Event::Reply {
        step,
        phase: Phase::Action,
        outcome: Outcome::Refused {
            status: 409,
            message: "no".into(),
        },
    }
}

fn transient(step: usize, phase: Phase) -> Event {
    Event::Reply {
        step,
        phase,
        outcome: Outcome::Transient {
            status: Some(503),
            error: "unavailable".into(),
        },
    }
}

fn compensated(step: usize) -> Event {
    Event::Reply {
        step,
        phase: Phase::Compensation,
        outcome: Outcome::Done(Value::Null),
    }
}

/// Feeds `(event, now)` pairs and returns the calls after each, plus the final saga.
fn run(spec: &SagaSpec, script: &[(Event, Millis)]) -> (Vec<Vec<Call>>, Saga) {
    let mut saga = Saga::new(spec, 0);
    let calls = script
        .iter()
        .map(|(event, now)| saga.handle(spec, event.clone(), Clock::at(*now)).calls)
        .collect();
    (calls, saga)
}

#[test]
fn table_of_saga_scenarios() {
    struct Case {
        name: &'static str,
        spec: SagaSpec,
        script: Vec<(Event, Millis)>,
        calls: Vec<Vec<Call>>,
        status: SagaStatus,
        steps: Vec<StepStatus>,
    }
    use StepStatus::*;
    let cases = vec![
        Case {
            name: "happy path runs steps in dependency order",
            spec: checkout(),
            script: vec![(Event::Start, 0), (done(0), 1), (done(1), 2), (done(2), 3)],
            calls: vec![
                vec![action(0, 1)],
                vec![action(1, 1)],
                vec![action(2, 1)],
                vec![],
            ],
            status: SagaStatus::Completed,
            steps: vec![Succeeded, Succeeded, Succeeded],
        },
        Case {
            name: "a refusal compensates earlier steps in reverse order",
            spec: checkout(),
            script: vec![
                (Event::Start, 0),
                (done(0), 1),
                (done(1), 2),
                (refused(2), 3),
                (compensated(1), 4),
                (compensated(0), 5),
            ],
            calls: vec![
                vec![action(0, 1)],
                vec![action(1, 1)],
                vec![action(2, 1)],
                vec![compensation(1, 1)],
                vec![compensation(0, 1)],
                vec![],
            ],
            status: SagaStatus::Compensated,
            steps: vec![Compensated, Compensated, Failed],
        },
        Case {
            name: "a transient failure is retried after its backoff",
            spec: checkout(),
            script: vec![
                (Event::Start, 0),
                (transient(0, Phase::Action), 10),
                (Event::Tick, 20),
                (Event::Tick, 200),
                (done(0), 210),
            ],
            // jitter 0.5 of a 100 ms ceiling: due at 60
            calls: vec![
                vec![action(0, 1)],
                vec![],
                vec![],
                vec![action(0, 2)],
                vec![action(1, 1)],
            ],
            status: SagaStatus::Running,
            steps: vec![Succeeded, Running, Pending],
        },
        Case {
            name: "exhausted retries compensate the step that may have applied",
            spec: checkout(),
            script: vec![
                (Event::Start, 0),
                (done(0), 1),
                (transient(1, Phase::Action), 2),
                (Event::Tick, 5_000),
                (transient(1, Phase::Action), 5_001),
                (Event::Tick, 10_000),
                (transient(1, Phase::Action), 10_001),
                (compensated(1), 10_002),
                (compensated(0), 10_003),
            ],
            calls: vec![
                vec![action(0, 1)],
                vec![action(1, 1)],
                vec![],
                vec![action(1, 2)],
                vec![],
                vec![action(1, 3)],
                vec![compensation(1, 1)],
                vec![compensation(0, 1)],
                vec![],
            ],
            status: SagaStatus::Compensated,
            steps: vec![Compensated, Compensated, Skipped],
        },
        Case {
            name: "a compensation that keeps failing leaves the saga stuck",
            spec: checkout(),
            script: vec![
                (Event::Start, 0),
                (done(0), 1),
                (refused(1), 2),
                (transient(0, Phase::Compensation), 3),
                (Event::Tick, 5_000),
                (transient(0, Phase::Compensation), 5_001),
                (Event::Tick, 10_000),
            ],
            calls: vec![
                vec![action(0, 1)],
                vec![action(1, 1)],
                vec![compensation(0, 1)],
                vec![],
                vec![compensation(0, 2)],
                vec![],
                vec![],
            ],
            status: SagaStatus::Stuck,
            steps: vec![Compensating, Failed, Skipped],
        },
        Case {
            name: "the deadline turns a running saga to compensation",
            spec: checkout(),
            script: vec![(Event::Start, 0), (done(0), 1), (Event::Tick, 60_000)],
            calls: vec![vec![action(0, 1)], vec![action(1, 1)], vec![]],
            status: SagaStatus::Compensating,
            steps: vec![Succeeded, Running, Skipped],
        },
        Case {
            name: "compensation waits for the call in flight, then undoes it first",
            spec: checkout(),
            script: vec![
                (Event::Start, 0),
                (done(0), 1),
                (Event::Cancel, 2),
                (done(1), 3),
                (compensated(1), 4),
                (compensated(0), 5),
            ],
            calls: vec![
                vec![action(0, 1)],
                vec![action(1, 1)],
                vec![],
                vec![compensation(1, 1)],
                vec![compensation(0, 1)],
                vec![],
            ],
            status: SagaStatus::Compensated,
            steps: vec![Compensated, Compensated, Skipped],
        },
        Case {
            name: "independent branches start together and join",
            spec: spec_of(&[("a", &[], true), ("b", &[], true), ("join", &[0, 1], false)]),
            script: vec![(Event::Start, 0), (done(1), 1), (done(0), 2), (done(2), 3)],
            calls: vec![
                vec![action(0, 1), action(1, 1)],
                vec![],
                vec![action(2, 1)],
                vec![],
            ],
            status: SagaStatus::Completed,
            steps: vec![Succeeded, Succeeded, Succeeded],
        },
        Case {
            name: "in-progress answers are polled without using up attempts",
            spec: spec_of(&[("slow", &[], false)]),
            script: vec![
                (Event::Start, 0),
                (
                    Event::Reply {
                        step: 0,
                        phase: Phase::Action,
                        outcome: Outcome::InProgress { status: 202 },
                    },
                    1,
                ),
                (Event::Tick, 1_000),
                (
                    Event::Reply {
                        step: 0,
                        phase: Phase::Action,
                        outcome: Outcome::InProgress { status: 202 },
                    },
                    1_001,
                ),
                (Event::Tick, 2_000),
                (
                    Event::Reply {
                        step: 0,
                        phase: Phase::Action,
                        outcome: Outcome::InProgress { status: 202 },
                    },
                    2_001,
                ),
                (Event::Tick, 3_000),
                (done(0), 3_001),
            ],
            calls: vec![
                vec![action(0, 1)],
                vec![],
                vec![action(0, 2)],
                vec![],
                vec![action(0, 3)],
                vec![],
                vec![action(0, 4)],
                vec![],
            ],
            status: SagaStatus::Completed,
            steps: vec![Succeeded],
        },
        Case {
            name: "a resumed saga calls again what was in flight",
            spec: checkout(),
            script: vec![(Event::Start, 0), (done(0), 1), (Event::Resume, 2)],
            calls: vec![vec![action(0, 1)], vec![action(1, 1)], vec![action(1, 2)]],
            status: SagaStatus::Running,
            steps: vec![Succeeded, Running, Pending],
        },
        Case {
            name: "a resumed compensating saga compensates the step that may have started",
            spec: checkout(),
            script: vec![
                (Event::Start, 0),
                (done(0), 1),
                (Event::Cancel, 2),
                (Event::Resume, 3),
                (compensated(1), 4),
            ],
            calls: vec![
                vec![action(0, 1)],
                vec![action(1, 1)],
                vec![],
                vec![compensation(1, 1)],
                vec![compensation(0, 1)],
            ],
            status: SagaStatus::Compensating,
            steps: vec![Compensating, Compensated, Skipped],
        },
        Case {
            name: "a refused first step compensates nothing",
            spec: checkout(),
            script: vec![(Event::Start, 0), (refused(0), 1)],
            calls: vec![vec![action(0, 1)], vec![]],
            status: SagaStatus::Compensated,
            steps: vec![Failed, Skipped, Skipped],
        },
        Case {
            name: "a completed saga ignores a late cancel",
            spec: spec_of(&[("only", &[], true)]),
            script: vec![(Event::Start, 0), (done(0), 1), (Event::Cancel, 2)],
            calls: vec![vec![action(0, 1)], vec![], vec![]],
            status: SagaStatus::Completed,
            steps: vec![Succeeded],
        },
    ];
    for case in cases {
        let (calls, saga) = run(&case.spec, &case.script);
        assert_eq!(calls, case.calls, "calls: {}", case.name);
        assert_eq!(saga.status, case.status, "status: {}", case.name);
        let steps: Vec<StepStatus> = saga.steps.iter().map(|s| s.status).collect();
        assert_eq!(steps, case.steps, "steps: {}", case.name);
    }
}

#[test]
fn an_operator_retry_resumes_a_stuck_compensation_with_a_fresh_budget() {
    let spec = checkout();
    let (_, mut saga) = run(
        &spec,
        &[
            (Event::Start, 0),
            (done(0), 1),
            (refused(1), 2),
            (transient(0, Phase::Compensation), 3),
            (Event::Tick, 5_000),
            (transient(0, Phase::Compensation), 5_001),
        ],
    );
    assert_eq!(saga.status, SagaStatus::Stuck);
    assert_eq!(
        saga.wake_at(6_000),
        None,
        "stuck sagas wait for an operator"
    );
    let decision = saga.handle(&spec, Event::OperatorRetry, Clock::at(6_000));
    assert_eq!(decision.calls, vec![compensation(0, 3)]);
    assert_eq!(decision.transitions, vec![Transition::Retrying]);
    assert_eq!(saga.steps[0].compensation_failures, 0);
    saga.handle(&spec, compensated(0), Clock::at(6_001));
    assert_eq!(saga.status, SagaStatus::Compensated);
    // Only a stuck saga can be retried.
    assert_eq!(
        saga.handle(&spec, Event::OperatorRetry, Clock::at(6_002)),
        Decision::default()
    );
}

#[test]
fn outputs_and_reasons_are_kept() {
    let spec = checkout();
    let (_, saga) = run(&spec, &[(Event::Start, 0), (done(0), 1), (refused(1), 2)]);
    assert_eq!(saga.steps[0].output, Some(json!({ "step": 0 })));
    assert_eq!(saga.reason.as_deref(), Some("step charge refused: no"));
    assert_eq!(saga.steps[1].last_status, Some(409));
}

#[test]
fn wake_at_tracks_retries_deadline_and_calls_in_flight() {
    let spec = checkout();
    let mut saga = Saga::new(&spec, 0);
    saga.handle(&spec, Event::Start, Clock::at(0));
    assert_eq!(saga.wake_at(5), Some(5), "a call is in flight");
    saga.handle(&spec, transient(0, Phase::Action), Clock::at(10));
    assert_eq!(saga.wake_at(11), Some(60), "the retry is due at 10 + 50");
    let (_, done_saga) = run(
        &spec,
        &[(Event::Start, 0), (done(0), 1), (done(1), 2), (done(2), 3)],
    );
    assert_eq!(done_saga.wake_at(4), None);
}

#[test]
fn stale_replies_are_ignored() {
    let spec = checkout();
    let mut saga = Saga::new(&spec, 0);
    saga.handle(&spec, Event::Start, Clock::at(0));
    let decision = saga.handle(&spec, done(2), Clock::at(1));
    assert_eq!(decision, Decision::default());
    assert_eq!(saga.steps[2].status, StepStatus::Pending);
}

#[test]
fn state_round_trips_through_storage_without_calls_in_flight() {
    let spec = checkout();
    let (_, saga) = run(&spec, &[(Event::Start, 0), (done(0), 1)]);
    assert!(saga.steps[1].in_flight);
    let stored = serde_json::to_value(&saga).unwrap();
    let loaded: Saga = serde_json::from_value(stored).unwrap();
    assert!(!loaded.steps[1].in_flight);
    assert_eq!(loaded.steps[1].status, StepStatus::Running);
}

#[test]
fn stored_state_leaves_defaults_out_and_reads_the_full_form_too() {
    let spec = checkout();
    let (_, saga) = run(&spec, &[(Event::Start, 0), (done(0), 1)]);
    let stored = serde_json::to_value(&saga).unwrap();
    let pending = &stored["steps"][2];
    assert_eq!(
        pending,
        &serde_json::json!({ "name": pending["name"], "status": "pending" }),
        "a step not yet called stores its name and status only"
    );
    assert!(stored.get("reason").is_none());
    assert_eq!(stored["steps"][0]["attempts"], 1);

    // Progress written before defaults were left out (every field present).
    let mut full = stored.clone();
    for step in full["steps"].as_array_mut().unwrap() {
        let step = step.as_object_mut().unwrap();
        for (field, default) in [
            ("attempts", serde_json::json!(0)),
            ("failures", serde_json::json!(0)),
            ("polls", serde_json::json!(0)),
            ("compensation_attempts", serde_json::json!(0)),
            ("compensation_failures", serde_json::json!(0)),
            ("may_have_applied", serde_json::json!(false)),
            ("started_seq", serde_json::Value::Null),
            ("completed_seq", serde_json::Value::Null),
            ("next_attempt_at", serde_json::Value::Null),
            ("output", serde_json::Value::Null),
            ("last_status", serde_json::Value::Null),
            ("last_error", serde_json::Value::Null),
        ] {
            step.entry(field).or_insert(default);
        }
    }
    full["reason"] = serde_json::Value::Null;
    let from_full: Saga = serde_json::from_value(full).unwrap();
    let from_compact: Saga = serde_json::from_value(stored).unwrap();
    assert_eq!(from_full, from_compact);
}

// ---- properties -------------------------------------------------------------

/// A random DAG: each step depends on a random subset of earlier steps.
fn arb_spec() -> impl Strategy<Value = SagaSpec> {
    (1usize..=6)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(proptest::collection::vec(any::<bool>(), 6), n),
                proptest::collection::vec(any::<bool>(), n),
            )
        })
        .prop_map(|(deps, comps)| {
            let n = comps.len();
            let steps = (0..n)
                .map(|i| StepSpec {
                    name: format!("s{i}"),
                    action: endpoint(&format!("http://a/{i}"), 2),
                    compensation: (comps[i] || i % 2 == 0)
                        .then(|| endpoint(&format!("http://c/{i}"), 2)),
                    depends_on: (0..i).filter(|&d| deps[i][d]).collect(),
                })
                .collect();
            SagaSpec {
                name: "prop".into(),
                version: 1,
                timeout_ms: 5_000,
                steps,
            }
        })
}

#[derive(Debug, Clone)]
enum Move {
    /// Answer the `n`th outstanding call with an outcome kind 0..4.
    Reply(usize, u8),
    /// Let time pass and tick.
    Wait(u16),
    Cancel,
    /// The process dies: outstanding calls are lost, the saga is reloaded.
    Crash,
    /// An operator takes the saga over (outstanding calls are lost, as in a crash)
    /// and acts, if the action applies: 0 retry, 1 compensate, 2 skip step n, 3 resolve.
    Operator(u8, usize),
}

fn arb_moves() -> impl Strategy<Value = Vec<Move>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0usize..8, 0u8..4).prop_map(|(n, k)| Move::Reply(n, k)),
            3 => (1u16..3_000).prop_map(Move::Wait),
            1 => Just(Move::Cancel),
            1 => Just(Move::Crash),
            1 => (0u8..4, 0usize..8).prop_map(|(k, n)| Move::Operator(k, n)),
        ],
        0..60,
    )
}

fn outcome_of(kind: u8, phase: Phase) -> Outcome {
    match (kind, phase) {
        (0, _) | (3, Phase::Compensation) => Outcome::Done(json!(1)),
        (1, Phase::Action) => Outcome::Refused {
            status: 409,
            message: "no".into(),
        },
        (1, Phase::Compensation) | (2, _) => Outcome::Transient {
            status: Some(500),
            error: "boom".into(),
        },
        _ => Outcome::InProgress { status: 202 },
    }
}

/// Everything the properties look at, recorded while a random history plays out.
struct History {
    saga: Saga,
    /// Action calls with the step statuses at the moment they were issued.
    action_calls: Vec<(usize, Vec<StepStatus>)>,
    /// Compensation calls in issue order, with completion seqs at the time.
    compensation_calls: Vec<usize>,
    /// Steps whose action was ever called and not refused in every call.
    started: std::collections::BTreeSet<usize>,
    calls_after_terminal: usize,
    status_changes_after_terminal: usize,
}

fn play(spec: &SagaSpec, moves: &[Move]) -> History {
    let mut now: Millis = 0;
    let mut saga = Saga::new(spec, now);
    let mut outstanding: Vec<Call> = Vec::new();
    let mut history = History {
        saga: saga.clone(),
        action_calls: vec![],
        compensation_calls: vec![],
        started: Default::default(),
        calls_after_terminal: 0,
        status_changes_after_terminal: 0,
    };
    let apply = |saga: &mut Saga,
                 event: Event,
                 now: Millis,
                 outstanding: &mut Vec<Call>,
                 history: &mut History| {
        let before = saga.status;
        let decision = saga.handle(spec, event, Clock { now, jitter: 0.3 });
        // Dependencies as they stand when the calls go out.
        let snapshot: Vec<StepStatus> = saga.steps.iter().map(|s| s.status).collect();
        if before.is_terminal() {
            history.calls_after_terminal += decision.calls.len();
            if saga.status != before {
                history.status_changes_after_terminal += 1;
            }
        }
        for call in decision.calls {
            match call.phase {
                Phase::Action => {
                    history.action_calls.push((call.step, snapshot.clone()));
                    history.started.insert(call.step);
                }
                Phase::Compensation => history.compensation_calls.push(call.step),
            }
            outstanding.push(call);
        }
    };
    apply(&mut saga, Event::Start, now, &mut outstanding, &mut history);
    for mv in moves {
        match mv {
            Move::Reply(n, kind) => {
                if outstanding.is_empty() {
                    continue;
                }
                let call = outstanding.remove(n % outstanding.len());
                now += 1;
                let event = Event::Reply {
                    step: call.step,
                    phase: call.phase,
                    outcome: outcome_of(*kind, call.phase),
                };
                apply(&mut saga, event, now, &mut outstanding, &mut history);
            }
            Move::Wait(ms) => {
                now += *ms as Millis;
                apply(&mut saga, Event::Tick, now, &mut outstanding, &mut history);
            }
            Move::Cancel => apply(
                &mut saga,
                Event::Cancel,
                now,
                &mut outstanding,
                &mut history,
            ),
            Move::Operator(kind, n) => {
                let action = match kind {
                    0 => crate::machine::operator::Action::Retry,
                    1 => crate::machine::operator::Action::Compensate,
                    2 => crate::machine::operator::Action::Skip {
                        step: spec.steps[n % spec.steps.len()].name.clone(),
                        output: json!("by hand"),
                    },
                    _ => crate::machine::operator::Action::Resolve,
                };
                if saga.applies(spec, &action, false) != crate::machine::operator::Applies::Yes {
                    continue;
                }
                outstanding.clear();
                let stored = serde_json::to_value(&saga).unwrap();
                saga = serde_json::from_value(stored).unwrap();
                let event = Event::Operator { action, note: None };
                apply(&mut saga, event, now, &mut outstanding, &mut history);
            }
            Move::Crash => {
                outstanding.clear();
                let stored = serde_json::to_value(&saga).unwrap();
                saga = serde_json::from_value(stored).unwrap();
                apply(
                    &mut saga,
                    Event::Resume,
                    now,
                    &mut outstanding,
                    &mut history,
                );
            }
        }
    }
    // Drain: answer everything successfully until the saga settles.
    for _ in 0..200 {
        if let Some(call) = outstanding.pop() {
            now += 1;
            let event = Event::Reply {
                step: call.step,
                phase: call.phase,
                outcome: Outcome::Done(json!(1)),
            };
            apply(&mut saga, event, now, &mut outstanding, &mut history);
        } else {
            now += 20_000;
            apply(&mut saga, Event::Tick, now, &mut outstanding, &mut history);
            if outstanding.is_empty() {
                break;
            }
        }
    }
    for _ in 0..3 {
        apply(
            &mut saga,
            Event::Cancel,
            now,
            &mut outstanding,
            &mut history,
        );
        apply(
            &mut saga,
            Event::Tick,
            now + 1,
            &mut outstanding,
            &mut history,
        );
    }
    history.saga = saga;
    history
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_step_never_runs_before_its_dependencies_succeeded(spec in arb_spec(), moves in arb_moves()) {
        let history = play(&spec, &moves);
        for (step, statuses) in &history.action_calls {
            for &dep in &spec.steps[*step].depends_on {
                prop_assert_eq!(statuses[dep], StepStatus::Succeeded,
                    "step {} called while dependency {} was {:?}", step, dep, statuses[dep]);
            }
        }
    }

    #[test]
    fn compensations_run_in_reverse_completion_order(spec in arb_spec(), moves in arb_moves()) {
        let history = play(&spec, &moves);
        let saga = &history.saga;
        let mut firsts: Vec<usize> = Vec::new();
        for &step in &history.compensation_calls {
            if !firsts.contains(&step) {
                firsts.push(step);
            }
        }
        let completed: Vec<u32> = firsts
            .iter()
            .filter_map(|&s| saga.steps[s].completed_seq)
            .collect();
        prop_assert!(completed.windows(2).all(|w| w[0] > w[1]),
            "compensation order {:?} has completion seqs {:?}", firsts, completed);
        // Unfinished steps (no completion) are compensated before any finished one.
        if let Some(first_finished) = firsts.iter().position(|&s| saga.steps[s].completed_seq.is_some()) {
            prop_assert!(firsts[first_finished..].iter().all(|&s| saga.steps[s].completed_seq.is_some()));
        }
    }

    #[test]
    fn a_compensated_saga_has_every_started_step_compensated(spec in arb_spec(), moves in arb_moves()) {
        let history = play(&spec, &moves);
        let saga = &history.saga;
        if saga.status == SagaStatus::Compensated {
            for &step in &history.started {
                let state = &saga.steps[step];
                let refused = state.status == StepStatus::Failed && !state.may_have_applied;
                if spec.steps[step].compensation.is_some() && !refused {
                    prop_assert_eq!(state.status, StepStatus::Compensated,
                        "started step {} ended {:?}", step, state.status);
                }
            }
        }
    }

    #[test]
    fn terminal_states_are_terminal(spec in arb_spec(), moves in arb_moves()) {
        let history = play(&spec, &moves);
        prop_assert_eq!(history.calls_after_terminal, 0);
        prop_assert_eq!(history.status_changes_after_terminal, 0);
    }

    #[test]
    fn every_saga_settles_once_participants_answer(spec in arb_spec(), moves in arb_moves()) {
        let history = play(&spec, &moves);
        prop_assert!(
            history.saga.status.is_terminal() || history.saga.status == SagaStatus::Stuck,
            "ended {:?}", history.saga.status
        );
    }
}
