//! Table-driven tests and properties of the 2PC / TCC machine.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 100,
        max_backoff_ms: 1_000,
        multiplier: 2.0,
    }
}

fn branch(name: &str, prepare: bool) -> BranchSpec {
    BranchSpec {
        name: name.into(),
        prepare_url: prepare.then(|| format!("http://p/{name}/prepare")),
        commit_url: format!("http://p/{name}/commit"),
        abort_url: format!("http://p/{name}/abort"),
        payload: json!({ "name": name }),
    }
}

fn one_shot(n: usize) -> TwoPc {
    let branches = (0..n).map(|i| branch(&format!("b{i}"), true)).collect();
    TwoPc::one_shot(branches, 10_000, policy(), 1_000)
}

fn reply(branch: usize, phase: TxPhase, outcome: Outcome) -> Event {
    Event::Reply {
        branch,
        phase,
        outcome,
    }
}

fn yes(b: usize) -> Event {
    reply(b, TxPhase::Prepare, Outcome::Done(json!(null)))
}

fn no(b: usize) -> Event {
    reply(
        b,
        TxPhase::Prepare,
        Outcome::Refused {
            status: 409,
            message: "no".into(),
        },
    )
}

fn ack(b: usize, phase: TxPhase) -> Event {
    reply(b, phase, Outcome::Done(json!(null)))
}

fn fail(b: usize, phase: TxPhase) -> Event {
    reply(
        b,
        phase,
        Outcome::Transient {
            status: Some(503),
            error: "down".into(),
        },
    )
}

fn call(branch: usize, phase: TxPhase, attempt: u32) -> Call {
    Call {
        branch,
        phase,
        attempt,
    }
}

#[test]
fn table_of_two_phase_scenarios() {
    use TxPhase::*;
    struct Case {
        name: &'static str,
        tx: TwoPc,
        script: Vec<(Event, Millis)>,
        calls: Vec<Vec<Call>>,
        status: TxStatus,
    }
    let cases = vec![
        Case {
            name: "all yes votes commit",
            tx: one_shot(2),
            script: vec![
                (Event::Start, 0),
                (yes(0), 1),
                (yes(1), 2),
                (ack(0, Commit), 3),
                (ack(1, Commit), 4),
            ],
            calls: vec![
                vec![call(0, Prepare, 1), call(1, Prepare, 1)],
                vec![],
                vec![call(0, Commit, 1), call(1, Commit, 1)],
                vec![],
                vec![],
            ],
            status: TxStatus::Committed,
        },
        Case {
            name: "a no vote aborts the others once their prepares answered",
            tx: one_shot(2),
            script: vec![
                (Event::Start, 0),
                (no(0), 1),
                (yes(1), 2),
                (ack(1, Abort), 3),
            ],
            calls: vec![
                vec![call(0, Prepare, 1), call(1, Prepare, 1)],
                vec![],
                vec![call(1, Abort, 1)],
                vec![],
            ],
            status: TxStatus::Aborted,
        },
        Case {
            name: "the timeout aborts an undecided transaction",
            tx: one_shot(1),
            script: vec![
                (Event::Start, 0),
                (reply(0, Prepare, Outcome::InProgress { status: 202 }), 5),
                (Event::Tick, 10_000),
                (ack(0, Abort), 10_001),
            ],
            calls: vec![
                vec![call(0, Prepare, 1)],
                vec![],
                vec![call(0, Abort, 1)],
                vec![],
            ],
            status: TxStatus::Aborted,
        },
        Case {
            name: "a prepare that keeps failing aborts",
            tx: one_shot(1),
            script: vec![
                (Event::Start, 0),
                (fail(0, Prepare), 1),
                (Event::Tick, 200),
                (fail(0, Prepare), 201),
                (Event::Tick, 500),
                (fail(0, Prepare), 501),
            ],
            calls: vec![
                vec![call(0, Prepare, 1)],
                vec![],
                vec![call(0, Prepare, 2)],
                vec![],
                vec![call(0, Prepare, 3)],
                vec![call(0, Abort, 1)],
            ],
            status: TxStatus::Aborting,
        },
        Case {
            name: "phase two is retried until acknowledged, and flagged stuck past its budget",
            tx: one_shot(1),
            script: vec![
                (Event::Start, 0),
                (yes(0), 1),
                (fail(0, Commit), 2),
                (Event::Tick, 500),
                (fail(0, Commit), 501),
                (Event::Tick, 1_000),
                (fail(0, Commit), 1_001),
                (Event::Tick, 2_001),
                (ack(0, Commit), 2_002),
            ],
            calls: vec![
                vec![call(0, Prepare, 1)],
                vec![call(0, Commit, 1)],
                vec![],
                vec![call(0, Commit, 2)],
                vec![],
                vec![call(0, Commit, 3)],
                vec![],
                vec![call(0, Commit, 4)],
                vec![],
            ],
            status: TxStatus::Committed,
        },
        Case {
            name: "a restart before the decision aborts (presumed abort)",
            tx: one_shot(2),
            script: vec![(Event::Start, 0), (yes(0), 1), (Event::Resume, 2)],
            calls: vec![
                vec![call(0, Prepare, 1), call(1, Prepare, 1)],
                vec![],
                vec![call(0, Abort, 1), call(1, Abort, 1)],
            ],
            status: TxStatus::Aborting,
        },
        Case {
            name: "a restart after the commit decision commits everything again",
            tx: one_shot(2),
            script: vec![
                (Event::Start, 0),
                (yes(0), 1),
                (yes(1), 2),
                (ack(0, Commit), 3),
                (Event::Resume, 4),
            ],
            calls: vec![
                vec![call(0, Prepare, 1), call(1, Prepare, 1)],
                vec![],
                vec![call(0, Commit, 1), call(1, Commit, 1)],
                vec![],
                vec![call(1, Commit, 2)],
            ],
            status: TxStatus::Committing,
        },
    ];
    for case in cases {
        let mut tx = case.tx;
        let calls: Vec<Vec<Call>> = case
            .script
            .into_iter()
            .map(|(e, now)| tx.handle(e, Clock { now, jitter: 0.5 }).calls)
            .collect();
        assert_eq!(calls, case.calls, "calls: {}", case.name);
        assert_eq!(tx.status, case.status, "status: {}", case.name);
    }
}

#[test]
fn closing_an_interactive_transaction_commits_tcc_branches_directly() {
    let mut tx = TwoPc::interactive(10_000, policy(), 1_000);
    let d = tx.handle(Event::Start, Clock::at(0));
    assert!(d.calls.is_empty());
    assert_eq!(tx.status, TxStatus::Active);
    let d = tx.close(
        Verdict::Commit,
        vec![branch("a", false), branch("b", false)],
        None,
        Clock::at(1),
    );
    assert!(d.durable);
    assert_eq!(tx.status, TxStatus::Committing);
    assert_eq!(
        d.calls,
        vec![call(0, TxPhase::Commit, 1), call(1, TxPhase::Commit, 1)]
    );
}

#[test]
fn closing_with_prepare_urls_prepares_first() {
    let mut tx = TwoPc::interactive(10_000, policy(), 1_000);
    let d = tx.close(
        Verdict::Commit,
        vec![branch("a", true), branch("b", false)],
        None,
        Clock::at(1),
    );
    assert_eq!(tx.status, TxStatus::Preparing);
    assert_eq!(d.calls, vec![call(0, TxPhase::Prepare, 1)]);
    let d = tx.handle(yes(0), Clock::at(2));
    assert_eq!(
        d.calls,
        vec![call(0, TxPhase::Commit, 1), call(1, TxPhase::Commit, 1)]
    );
}

#[test]
fn an_interactive_transaction_past_its_deadline_asks_to_be_closed() {
    let mut tx = TwoPc::interactive(100, policy(), 1_000);
    assert_eq!(tx.handle(Event::Tick, Clock::at(50)).close, None);
    assert_eq!(
        tx.handle(Event::Tick, Clock::at(100)).close,
        Some(Verdict::Abort)
    );
    let d = tx.close(
        Verdict::Abort,
        vec![branch("a", false)],
        Some("timeout".into()),
        Clock::at(101),
    );
    assert_eq!(d.calls, vec![call(0, TxPhase::Abort, 1)]);
    assert_eq!(tx.reason.as_deref(), Some("timeout"));
}

#[test]
fn a_stuck_transaction_keeps_retrying_at_the_maximum_backoff() {
    let mut tx = one_shot(1);
    tx.handle(Event::Start, Clock::at(0));
    tx.handle(yes(0), Clock::at(1));
    let mut now = 2;
    for _ in 0..3 {
        tx.handle(fail(0, TxPhase::Commit), Clock::at(now));
        now = tx.next_timer().unwrap();
        tx.handle(Event::Tick, Clock::at(now));
    }
    assert_eq!(tx.status, TxStatus::Stuck);
    assert!(tx
        .reason
        .as_deref()
        .unwrap()
        .contains("has not acknowledged commit"));
    tx.handle(fail(0, TxPhase::Commit), Clock::at(now));
    assert_eq!(tx.next_timer(), Some(now + 1_000));
    assert_eq!(tx.verdict, Some(Verdict::Commit));
}

// ---- properties -------------------------------------------------------------

#[derive(Debug, Clone)]
enum Move {
    Reply(usize, u8),
    Wait(u16),
    Crash,
}

fn arb_moves() -> impl Strategy<Value = Vec<Move>> {
    proptest::collection::vec(
        prop_oneof![
            6 => (0usize..8, 0u8..4).prop_map(|(n, k)| Move::Reply(n, k)),
            3 => (1u16..3_000).prop_map(Move::Wait),
            1 => Just(Move::Crash),
        ],
        0..60,
    )
}

fn outcome(kind: u8) -> Outcome {
    match kind {
        0 => Outcome::Done(json!(null)),
        1 => Outcome::Refused {
            status: 409,
            message: "no".into(),
        },
        2 => Outcome::Transient {
            status: Some(500),
            error: "boom".into(),
        },
        _ => Outcome::InProgress { status: 202 },
    }
}

struct History {
    tx: TwoPc,
    commits: Vec<usize>,
    aborts: Vec<usize>,
    yes_votes: std::collections::BTreeSet<usize>,
    verdicts: Vec<Verdict>,
}

fn play(n: usize, moves: &[Move]) -> History {
    let mut tx = one_shot(n);
    let mut now: Millis = 0;
    let mut outstanding: Vec<Call> = Vec::new();
    let mut h = History {
        tx: tx.clone(),
        commits: vec![],
        aborts: vec![],
        yes_votes: Default::default(),
        verdicts: vec![],
    };
    let apply =
        |tx: &mut TwoPc, e: Event, now: Millis, outstanding: &mut Vec<Call>, h: &mut History| {
            if let Event::Reply {
                branch,
                phase: TxPhase::Prepare,
                outcome: Outcome::Done(_),
            } = &e
            {
                if tx.branches[*branch].in_flight {
                    h.yes_votes.insert(*branch);
                }
            }
            let d = tx.handle(e, Clock { now, jitter: 0.3 });
            for c in d.calls {
                match c.phase {
                    TxPhase::Commit => h.commits.push(c.branch),
                    TxPhase::Abort => h.aborts.push(c.branch),
                    TxPhase::Prepare => {}
                }
                outstanding.push(c);
            }
            if let Some(v) = tx.verdict {
                h.verdicts.push(v);
            }
        };
    apply(&mut tx, Event::Start, now, &mut outstanding, &mut h);
    for mv in moves {
        match mv {
            Move::Reply(i, kind) => {
                if outstanding.is_empty() {
                    continue;
                }
                let c = outstanding.remove(i % outstanding.len());
                now += 1;
                apply(
                    &mut tx,
                    reply(c.branch, c.phase, outcome(*kind)),
                    now,
                    &mut outstanding,
                    &mut h,
                );
            }
            Move::Wait(ms) => {
                now += *ms as Millis;
                apply(&mut tx, Event::Tick, now, &mut outstanding, &mut h);
            }
            Move::Crash => {
                outstanding.clear();
                tx = serde_json::from_value(serde_json::to_value(&tx).unwrap()).unwrap();
                apply(&mut tx, Event::Resume, now, &mut outstanding, &mut h);
            }
        }
    }
    for _ in 0..300 {
        if let Some(c) = outstanding.pop() {
            now += 1;
            apply(
                &mut tx,
                reply(c.branch, c.phase, Outcome::Done(json!(null))),
                now,
                &mut outstanding,
                &mut h,
            );
        } else {
            now += 20_000;
            apply(&mut tx, Event::Tick, now, &mut outstanding, &mut h);
            if outstanding.is_empty() {
                break;
            }
        }
    }
    h.tx = tx;
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_participant_hears_commit_unless_every_vote_was_yes(n in 1usize..5, moves in arb_moves()) {
        let h = play(n, &moves);
        if !h.commits.is_empty() {
            prop_assert_eq!(h.yes_votes.len(), n, "commit sent with votes {:?}", h.yes_votes);
            prop_assert!(h.tx.branches.iter().all(|b| b.status != BranchStatus::Refused));
        }
    }

    #[test]
    fn once_decided_the_decision_never_changes(n in 1usize..5, moves in arb_moves()) {
        let h = play(n, &moves);
        prop_assert!(h.verdicts.windows(2).all(|w| w[0] == w[1]), "{:?}", h.verdicts);
        prop_assert!(h.commits.is_empty() || h.aborts.is_empty(), "both commit and abort were sent");
    }

    #[test]
    fn every_participant_eventually_hears_the_decision(n in 1usize..5, moves in arb_moves()) {
        let h = play(n, &moves);
        prop_assert!(h.tx.status.is_terminal(), "ended {:?}", h.tx.status);
        for (i, b) in h.tx.branches.iter().enumerate() {
            match h.tx.verdict {
                Some(Verdict::Commit) => prop_assert_eq!(b.status, BranchStatus::Committed),
                Some(Verdict::Abort) if b.status != BranchStatus::Refused => {
                    prop_assert_eq!(b.status, BranchStatus::Aborted, "branch {}", i)
                }
                Some(Verdict::Abort) => {}
                None => prop_assert!(false, "undecided"),
            }
        }
    }
}
