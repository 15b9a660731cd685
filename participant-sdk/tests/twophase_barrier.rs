//! The barrier's 2PC / TCC calls against a real PostgreSQL: duplicate prepares, null
//! aborts, prepares after their abort, commits applied once, duplicate commits and
//! aborts, and the protocol errors (commit without prepare, commit after abort, abort
//! after commit), alone and racing. Each test makes its own database and drops it
//! afterwards; a missing Postgres fails the test.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};
use settle_participant::barrier::{
    self, Barrier, ALREADY_ABORTED, ALREADY_COMMITTED, HANGING_PREPARE, NOT_PREPARED,
};
use settle_participant::participant::Reply;
use settle_participant::protocol::{BranchCall, BranchPhase};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

mod common;

use common::connect;

async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::with_database("twophase_barrier_test", "wallet", "branch", test).await
}

fn call(transaction_id: Uuid, phase: BranchPhase, attempt: u32) -> BranchCall {
    BranchCall {
        transaction_id,
        branch: "debit".to_owned(),
        phase,
        attempt,
        payload: json!({ "account": "alice", "delta": -25 }),
    }
}

/// Writes a ledger row for the call, as a business effect would.
async fn book(
    tx: &Transaction<'_>,
    call: &BranchCall,
    amount: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO ledger (transaction_id, branch, phase, amount) VALUES ($1, $2, $3, $4)",
        &[
            &call.transaction_id,
            &call.branch,
            &call.phase.as_str(),
            &amount,
        ],
    )
    .await?;
    Ok(())
}

/// How many ledger rows the transaction has: (prepare, commit, abort).
async fn booked(db: &Client, transaction_id: Uuid) -> (i64, i64, i64) {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE phase = 'prepare'),
                    count(*) FILTER (WHERE phase = 'commit'),
                    count(*) FILTER (WHERE phase = 'abort')
             FROM ledger WHERE transaction_id = $1",
            &[&transaction_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The barrier rows of a transaction as (phase, origin, status).
async fn barrier_rows(db: &Client, transaction_id: Uuid) -> Vec<(String, String, Option<i16>)> {
    db.query(
        "SELECT phase, origin, status FROM wallet.settle_barrier WHERE transaction_id = $1 ORDER BY phase",
        &[&transaction_id],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

/// Counts of effect runs per call.
#[derive(Default)]
struct Runs {
    prepare: AtomicU32,
    commit: AtomicU32,
    abort: AtomicU32,
}

impl Runs {
    fn get(&self) -> (u32, u32, u32) {
        (
            self.prepare.load(Ordering::SeqCst),
            self.commit.load(Ordering::SeqCst),
            self.abort.load(Ordering::SeqCst),
        )
    }
}

/// A prepare that freezes 25 (votes yes) and answers with the attempt that ran it.
async fn freeze(barrier: &Barrier, db: &mut Client, call: &BranchCall, runs: &Runs) -> Reply {
    barrier
        .prepare(db, call, async |tx| {
            runs.prepare.fetch_add(1, Ordering::SeqCst);
            book(tx, call, 25).await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(
                json!({ "frozen_by_attempt": call.attempt }),
            ))
        })
        .await
        .expect("the prepare settles")
}

/// A prepare that votes no, after writing something the refusal must undo.
async fn decline(barrier: &Barrier, db: &mut Client, call: &BranchCall, runs: &Runs) -> Reply {
    barrier
        .prepare(db, call, async |tx| {
            runs.prepare.fetch_add(1, Ordering::SeqCst);
            book(tx, call, 5000).await?;
            Ok::<_, tokio_postgres::Error>(Reply::Refuse(format!(
                "attempt {} finds insufficient funds",
                call.attempt
            )))
        })
        .await
        .expect("the no vote settles")
}

/// A commit that books the debit.
async fn settle(barrier: &Barrier, db: &mut Client, call: &BranchCall, runs: &Runs) -> Reply {
    barrier
        .commit(db, call, async |tx| {
            runs.commit.fetch_add(1, Ordering::SeqCst);
            book(tx, call, -25).await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(
                json!({ "committed_by_attempt": call.attempt }),
            ))
        })
        .await
        .expect("the commit settles")
}

/// An abort that releases the frozen 25.
async fn release(barrier: &Barrier, db: &mut Client, call: &BranchCall, runs: &Runs) -> Reply {
    barrier
        .abort(db, call, async |tx| {
            runs.abort.fetch_add(1, Ordering::SeqCst);
            book(tx, call, -25).await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(
                json!({ "released_by_attempt": call.attempt }),
            ))
        })
        .await
        .expect("the abort settles")
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[tokio::test]
async fn a_duplicate_prepare_runs_once_and_returns_the_first_vote() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let (id, runs) = (Uuid::now_v7(), Runs::default());

        let first = freeze(&barrier, &mut db, &call(id, BranchPhase::Prepare, 1), &runs).await;
        let again = freeze(&barrier, &mut db, &call(id, BranchPhase::Prepare, 2), &runs).await;

        assert_eq!(first, Reply::Done(json!({ "frozen_by_attempt": 1 })));
        assert_eq!(again, first);
        assert_eq!(runs.get(), (1, 0, 0));
        assert_eq!(booked(&db, id).await, (1, 0, 0));
        assert_eq!(
            barrier_rows(&db, id).await,
            [(s("prepare"), s("prepare"), Some(200))]
        );
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_no_vote_returns_the_first_refusal_and_applies_nothing() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let (id, runs) = (Uuid::now_v7(), Runs::default());

        let first = decline(&barrier, &mut db, &call(id, BranchPhase::Prepare, 1), &runs).await;
        let again = decline(&barrier, &mut db, &call(id, BranchPhase::Prepare, 2), &runs).await;

        assert_eq!(
            first,
            Reply::Refuse(s("attempt 1 finds insufficient funds"))
        );
        assert_eq!(again, first);
        assert_eq!(runs.get(), (1, 0, 0));
        assert_eq!(booked(&db, id).await, (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn an_abort_before_its_prepare_is_null_and_the_late_prepare_is_refused() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let (id, runs) = (Uuid::now_v7(), Runs::default());

        let abort = release(&barrier, &mut db, &call(id, BranchPhase::Abort, 1), &runs).await;
        let late = freeze(&barrier, &mut db, &call(id, BranchPhase::Prepare, 1), &runs).await;

        assert_eq!(abort, Reply::Done(Value::Null));
        assert_eq!(late, Reply::Refuse(HANGING_PREPARE.to_owned()));
        assert_eq!(runs.get(), (0, 0, 0));
        assert_eq!(booked(&db, id).await, (0, 0, 0));
        assert_eq!(
            barrier_rows(&db, id).await,
            [
                (s("abort"), s("abort"), Some(200)),
                (s("prepare"), s("abort"), None)
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn an_abort_after_a_no_vote_is_null() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let (id, runs) = (Uuid::now_v7(), Runs::default());

        decline(&barrier, &mut db, &call(id, BranchPhase::Prepare, 1), &runs).await;
        let abort = release(&barrier, &mut db, &call(id, BranchPhase::Abort, 1), &runs).await;

        assert_eq!(abort, Reply::Done(Value::Null));
        assert_eq!(runs.get(), (1, 0, 0));
        assert_eq!(booked(&db, id).await, (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_commit_applies_once_and_a_duplicate_returns_the_first_result() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let (id, runs) = (Uuid::now_v7(), Runs::default());

        freeze(&barrier, &mut db, &call(id, BranchPhase::Prepare, 1), &runs).await;
        let first = settle(&barrier, &mut db, &call(id, BranchPhase::Commit, 1), &runs).await;
        let again = settle(&barrier, &mut db, &call(id, BranchPhase::Commit, 2), &runs).await;

        assert_eq!(first, Reply::Done(json!({ "committed_by_attempt": 1 })));
        assert_eq!(again, first);
        assert_eq!(runs.get(), (1, 1, 0));
        assert_eq!(booked(&db, id).await, (1, 1, 0));
        assert_eq!(
            barrier_rows(&db, id).await,
            [
                (s("commit"), s("commit"), Some(200)),
                (s("prepare"), s("prepare"), Some(200))
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn an_abort_undoes_a_prepare_once_and_a_duplicate_returns_the_first_result() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let (id, runs) = (Uuid::now_v7(), Runs::default());

        freeze(&barrier, &mut db, &call(id, BranchPhase::Prepare, 1), &runs).await;
        let first = release(&barrier, &mut db, &call(id, BranchPhase::Abort, 1), &runs).await;
        let again = release(&barrier, &mut db, &call(id, BranchPhase::Abort, 2), &runs).await;

        assert_eq!(first, Reply::Done(json!({ "released_by_attempt": 1 })));
        assert_eq!(again, first);
        assert_eq!(runs.get(), (1, 0, 1));
        assert_eq!(booked(&db, id).await, (1, 0, 1));
    })
    .await;
}

#[tokio::test]
async fn a_commit_without_a_yes_vote_is_refused_and_records_nothing() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let (id, runs) = (Uuid::now_v7(), Runs::default());

        let early = settle(&barrier, &mut db, &call(id, BranchPhase::Commit, 1), &runs).await;
        assert_eq!(early, Reply::Refuse(NOT_PREPARED.to_owned()));
        assert!(barrier_rows(&db, id).await.is_empty(), "nothing recorded");

        // The refusal left no trace: the prepare and a retried commit go through.
        freeze(&barrier, &mut db, &call(id, BranchPhase::Prepare, 1), &runs).await;
        let retried = settle(&barrier, &mut db, &call(id, BranchPhase::Commit, 2), &runs).await;
        assert_eq!(retried, Reply::Done(json!({ "committed_by_attempt": 2 })));
        assert_eq!(runs.get(), (1, 1, 0));

        let declined = Uuid::now_v7();
        decline(
            &barrier,
            &mut db,
            &call(declined, BranchPhase::Prepare, 1),
            &runs,
        )
        .await;
        let after_no = settle(
            &barrier,
            &mut db,
            &call(declined, BranchPhase::Commit, 1),
            &runs,
        )
        .await;
        assert_eq!(after_no, Reply::Refuse(NOT_PREPARED.to_owned()));
        assert_eq!(booked(&db, declined).await, (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn commit_and_abort_of_one_branch_exclude_each_other() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let runs = Runs::default();

        let committed = Uuid::now_v7();
        freeze(
            &barrier,
            &mut db,
            &call(committed, BranchPhase::Prepare, 1),
            &runs,
        )
        .await;
        settle(
            &barrier,
            &mut db,
            &call(committed, BranchPhase::Commit, 1),
            &runs,
        )
        .await;
        let abort = release(
            &barrier,
            &mut db,
            &call(committed, BranchPhase::Abort, 1),
            &runs,
        )
        .await;
        assert_eq!(abort, Reply::Refuse(ALREADY_COMMITTED.to_owned()));
        assert_eq!(booked(&db, committed).await, (1, 1, 0));

        let aborted = Uuid::now_v7();
        freeze(
            &barrier,
            &mut db,
            &call(aborted, BranchPhase::Prepare, 1),
            &runs,
        )
        .await;
        release(
            &barrier,
            &mut db,
            &call(aborted, BranchPhase::Abort, 1),
            &runs,
        )
        .await;
        let commit = settle(
            &barrier,
            &mut db,
            &call(aborted, BranchPhase::Commit, 1),
            &runs,
        )
        .await;
        assert_eq!(commit, Reply::Refuse(ALREADY_ABORTED.to_owned()));
        assert_eq!(booked(&db, aborted).await, (1, 0, 1));

        let never_prepared = Uuid::now_v7();
        release(
            &barrier,
            &mut db,
            &call(never_prepared, BranchPhase::Abort, 1),
            &runs,
        )
        .await;
        let commit = settle(
            &barrier,
            &mut db,
            &call(never_prepared, BranchPhase::Commit, 1),
            &runs,
        )
        .await;
        assert_eq!(commit, Reply::Refuse(ALREADY_ABORTED.to_owned()));
    })
    .await;
}

#[tokio::test]
async fn racing_commit_and_abort_of_one_branch_never_both_apply() {
    with_database(async |name| {
        let barrier = Barrier::new("wallet").unwrap();
        let (mut a, mut b) = (connect(&name).await, connect(&name).await);
        let mut commits_won = 0;
        for round in 0..30u32 {
            let (id, runs) = (Uuid::now_v7(), Runs::default());
            freeze(&barrier, &mut a, &call(id, BranchPhase::Prepare, 1), &runs).await;
            let (commit_call, abort_call) = (
                call(id, BranchPhase::Commit, 1),
                call(id, BranchPhase::Abort, 1),
            );
            let (commit, abort) = if round % 2 == 0 {
                tokio::join!(
                    settle(&barrier, &mut a, &commit_call, &runs),
                    release(&barrier, &mut b, &abort_call, &runs)
                )
            } else {
                let (abort, commit) = tokio::join!(
                    release(&barrier, &mut b, &abort_call, &runs),
                    settle(&barrier, &mut a, &commit_call, &runs)
                );
                (commit, abort)
            };
            match (&commit, &abort) {
                (Reply::Done(_), Reply::Refuse(reason)) => {
                    assert_eq!(reason, ALREADY_COMMITTED, "round {round}");
                    assert_eq!(booked(&a, id).await, (1, 1, 0), "round {round}");
                    commits_won += 1;
                }
                (Reply::Refuse(reason), Reply::Done(_)) => {
                    assert_eq!(reason, ALREADY_ABORTED, "round {round}");
                    assert_eq!(booked(&a, id).await, (1, 0, 1), "round {round}");
                }
                other => panic!("round {round}: both or neither applied: {other:?}"),
            }
            let (_, commits, aborts) = runs.get();
            assert_eq!(commits + aborts, 1, "round {round}: one effect ran");
        }
        // Not an assertion about scheduling, just a record for whoever reads the log.
        println!("the commit won {commits_won} of 30 rounds");
    })
    .await;
}

#[tokio::test]
async fn racing_prepare_and_abort_pairs_leave_the_ledger_consistent() {
    with_database(async |name| {
        let barrier = Barrier::new("wallet").unwrap();
        let (mut a, mut b) = (connect(&name).await, connect(&name).await);
        for round in 0..30u32 {
            let (id, runs) = (Uuid::now_v7(), Runs::default());
            let (prepare_call, abort_call) = (
                call(id, BranchPhase::Prepare, 1),
                call(id, BranchPhase::Abort, 1),
            );
            let (prepare, abort) = if round % 2 == 0 {
                tokio::join!(
                    freeze(&barrier, &mut a, &prepare_call, &runs),
                    release(&barrier, &mut b, &abort_call, &runs)
                )
            } else {
                let (abort, prepare) = tokio::join!(
                    release(&barrier, &mut b, &abort_call, &runs),
                    freeze(&barrier, &mut a, &prepare_call, &runs)
                );
                (prepare, abort)
            };
            match prepare {
                Reply::Done(_) => {
                    assert_eq!(booked(&a, id).await, (1, 0, 1), "round {round}: undone");
                    assert_eq!(abort, Reply::Done(json!({ "released_by_attempt": 1 })));
                }
                Reply::Refuse(reason) => {
                    assert_eq!(reason, HANGING_PREPARE, "round {round}");
                    assert_eq!(booked(&a, id).await, (0, 0, 0), "round {round}");
                    assert_eq!(abort, Reply::Done(Value::Null));
                }
                other => panic!("round {round}: unexpected prepare reply {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn tcc_try_confirm_and_cancel_are_prepare_commit_and_abort() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let hold = async |db: &mut Client, call: &BranchCall| {
            barrier
                .try_(db, call, async |tx| {
                    book(tx, call, 25).await?;
                    Ok::<_, tokio_postgres::Error>(Reply::Done(Value::Null))
                })
                .await
                .unwrap()
        };
        let unbook = async |db: &mut Client, call: &BranchCall, confirm: bool| {
            let effect = async |tx: &Transaction<'_>| {
                book(tx, call, -25).await?;
                Ok::<_, tokio_postgres::Error>(Reply::Done(json!({ "phase": call.phase })))
            };
            if confirm {
                barrier.confirm(db, call, effect).await.unwrap()
            } else {
                barrier.cancel(db, call, effect).await.unwrap()
            }
        };

        let confirmed = Uuid::now_v7();
        assert_eq!(
            hold(&mut db, &call(confirmed, BranchPhase::Prepare, 1)).await,
            Reply::Done(Value::Null)
        );
        let reply = unbook(&mut db, &call(confirmed, BranchPhase::Commit, 1), true).await;
        assert_eq!(reply, Reply::Done(json!({ "phase": "commit" })));
        assert_eq!(booked(&db, confirmed).await, (1, 1, 0));

        let cancelled = Uuid::now_v7();
        hold(&mut db, &call(cancelled, BranchPhase::Prepare, 1)).await;
        let reply = unbook(&mut db, &call(cancelled, BranchPhase::Abort, 1), false).await;
        assert_eq!(reply, Reply::Done(json!({ "phase": "abort" })));
        assert_eq!(booked(&db, cancelled).await, (1, 0, 1));

        // A Cancel that overtakes the Try (the service registered first): null, and
        // the Try is then refused.
        let overtaken = Uuid::now_v7();
        let reply = unbook(&mut db, &call(overtaken, BranchPhase::Abort, 1), false).await;
        assert_eq!(reply, Reply::Done(Value::Null));
        assert_eq!(
            hold(&mut db, &call(overtaken, BranchPhase::Prepare, 1)).await,
            Reply::Refuse(HANGING_PREPARE.to_owned())
        );
        assert_eq!(booked(&db, overtaken).await, (0, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_refuses_a_call_for_another_phase() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("wallet").unwrap();
        let runs = Runs::default();
        let id = Uuid::now_v7();
        let result = barrier
            .commit(&mut db, &call(id, BranchPhase::Abort, 1), async |_tx| {
                runs.commit.fetch_add(1, Ordering::SeqCst);
                Ok::<_, tokio_postgres::Error>(Reply::Done(Value::Null))
            })
            .await;
        assert!(
            matches!(
                result,
                Err(barrier::Error::PhaseMismatch {
                    endpoint: "commit",
                    got: "abort"
                })
            ),
            "{result:?}"
        );
        let result = barrier
            .prepare(&mut db, &call(id, BranchPhase::Commit, 1), async |_tx| {
                runs.prepare.fetch_add(1, Ordering::SeqCst);
                Ok::<_, tokio_postgres::Error>(Reply::Done(Value::Null))
            })
            .await;
        assert!(
            matches!(result, Err(barrier::Error::PhaseMismatch { .. })),
            "{result:?}"
        );
        assert_eq!(runs.get(), (0, 0, 0));
        assert!(barrier_rows(&db, id).await.is_empty());
    })
    .await;
}
