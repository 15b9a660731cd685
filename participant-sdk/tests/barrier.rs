//! The barrier against a real PostgreSQL: duplicates, null compensation, hanging
//! actions, refusals and concurrent action/compensation pairs. Each test makes its
//! own database and drops it afterwards; a missing Postgres fails the test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use settle_participant::barrier::{self, Barrier, HANGING_ACTION};
use settle_participant::participant::Reply;
use settle_participant::protocol::{CallRequest, Phase};
use tokio::sync::Notify;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

mod common;

use common::connect;

async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::with_database("barrier_test", "shop", "step", test).await
}

fn call(transaction_id: Uuid, phase: Phase, attempt: u32) -> CallRequest {
    CallRequest {
        transaction_id,
        saga: "order-checkout".to_owned(),
        step: "charge-payment".to_owned(),
        phase,
        attempt,
        input: json!({ "amount": 25 }),
        results: Map::new(),
    }
}

/// Writes a ledger row for the call, as a business effect would.
async fn book(
    tx: &Transaction<'_>,
    call: &CallRequest,
    amount: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO ledger (transaction_id, step, phase, amount) VALUES ($1, $2, $3, $4)",
        &[
            &call.transaction_id,
            &call.step,
            &call.phase.as_str(),
            &amount,
        ],
    )
    .await?;
    Ok(())
}

/// How many ledger rows the transaction has, per phase.
async fn booked(db: &Client, transaction_id: Uuid) -> (i64, i64) {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE phase = 'action'), count(*) FILTER (WHERE phase = 'compensation')
             FROM ledger WHERE transaction_id = $1",
            &[&transaction_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The barrier rows of a transaction as (phase, origin, status).
async fn barrier_rows(db: &Client, transaction_id: Uuid) -> Vec<(String, String, Option<i16>)> {
    db.query(
        "SELECT phase, origin, status FROM shop.settle_barrier WHERE transaction_id = $1 ORDER BY phase",
        &[&transaction_id],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

/// A charge action that books 25 and answers with the attempt that ran it.
async fn charge(barrier: &Barrier, db: &mut Client, call: &CallRequest, runs: &AtomicU32) -> Reply {
    barrier
        .action(db, call, async |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            book(tx, call, 25).await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(
                json!({ "charged_by_attempt": call.attempt }),
            ))
        })
        .await
        .expect("the action settles")
}

/// A refund compensation that books -25.
async fn refund(barrier: &Barrier, db: &mut Client, call: &CallRequest, runs: &AtomicU32) -> Reply {
    barrier
        .compensation(db, call, async |tx| {
            runs.fetch_add(1, Ordering::SeqCst);
            book(tx, call, -25).await?;
            Ok::<_, tokio_postgres::Error>(Reply::Done(
                json!({ "refunded_by_attempt": call.attempt }),
            ))
        })
        .await
        .expect("the compensation settles")
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[tokio::test]
async fn a_duplicate_action_applies_once_and_returns_the_first_result() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let id = Uuid::now_v7();
        let runs = AtomicU32::new(0);

        let first = charge(&barrier, &mut db, &call(id, Phase::Action, 1), &runs).await;
        let again = charge(&barrier, &mut db, &call(id, Phase::Action, 2), &runs).await;

        assert_eq!(first, Reply::Done(json!({ "charged_by_attempt": 1 })));
        assert_eq!(again, first);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(booked(&db, id).await, (1, 0));
        assert_eq!(
            barrier_rows(&db, id).await,
            [(s("action"), s("action"), Some(200))]
        );
    })
    .await;
}

#[tokio::test]
async fn a_compensation_before_its_action_succeeds_without_effect() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let id = Uuid::now_v7();
        let runs = AtomicU32::new(0);

        let reply = refund(&barrier, &mut db, &call(id, Phase::Compensation, 1), &runs).await;
        let again = refund(&barrier, &mut db, &call(id, Phase::Compensation, 2), &runs).await;

        assert_eq!(reply, Reply::Done(Value::Null));
        assert_eq!(again, reply);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(booked(&db, id).await, (0, 0));
        assert_eq!(
            barrier_rows(&db, id).await,
            [
                (s("action"), s("compensation"), None),
                (s("compensation"), s("compensation"), Some(200))
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn an_action_after_its_compensation_is_refused_and_applies_nothing() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let id = Uuid::now_v7();
        let runs = AtomicU32::new(0);

        refund(&barrier, &mut db, &call(id, Phase::Compensation, 1), &runs).await;
        let late = charge(&barrier, &mut db, &call(id, Phase::Action, 1), &runs).await;

        assert_eq!(late, Reply::Refuse(HANGING_ACTION.to_owned()));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(booked(&db, id).await, (0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_compensation_applies_once_and_returns_the_first_result() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let id = Uuid::now_v7();
        let (charges, refunds) = (AtomicU32::new(0), AtomicU32::new(0));

        charge(&barrier, &mut db, &call(id, Phase::Action, 1), &charges).await;
        let first = refund(
            &barrier,
            &mut db,
            &call(id, Phase::Compensation, 1),
            &refunds,
        )
        .await;
        let again = refund(
            &barrier,
            &mut db,
            &call(id, Phase::Compensation, 2),
            &refunds,
        )
        .await;

        assert_eq!(first, Reply::Done(json!({ "refunded_by_attempt": 1 })));
        assert_eq!(again, first);
        assert_eq!(refunds.load(Ordering::SeqCst), 1);
        assert_eq!(booked(&db, id).await, (1, 1));
    })
    .await;
}

#[tokio::test]
async fn a_refused_action_applies_nothing_and_a_duplicate_gets_the_same_refusal() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let id = Uuid::now_v7();
        let runs = AtomicU32::new(0);
        let declining = async |db: &mut Client, call: &CallRequest| {
            barrier
                .action(db, call, async |tx| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Written, then undone by the refusal.
                    book(tx, call, 5000).await?;
                    Ok::<_, tokio_postgres::Error>(Reply::Refuse(format!(
                        "attempt {} declined",
                        call.attempt
                    )))
                })
                .await
                .expect("the refusal settles")
        };

        let first = declining(&mut db, &call(id, Phase::Action, 1)).await;
        let again = declining(&mut db, &call(id, Phase::Action, 2)).await;

        assert_eq!(first, Reply::Refuse(s("attempt 1 declined")));
        assert_eq!(again, first);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(booked(&db, id).await, (0, 0));

        // Compensating a refused action is a null compensation.
        let refunds = AtomicU32::new(0);
        let reply = refund(
            &barrier,
            &mut db,
            &call(id, Phase::Compensation, 1),
            &refunds,
        )
        .await;
        assert_eq!(reply, Reply::Done(Value::Null));
        assert_eq!(refunds.load(Ordering::SeqCst), 0);
        assert_eq!(booked(&db, id).await, (0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_failed_or_unfinished_effect_records_nothing_so_the_retry_runs_again() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let id = Uuid::now_v7();
        let runs = AtomicU32::new(0);

        let failed = barrier
            .action(&mut db, &call(id, Phase::Action, 1), async |tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                book(tx, &call(id, Phase::Action, 1), 25).await?;
                Err::<Reply, Box<dyn std::error::Error + Send + Sync>>(
                    "the card network timed out".into(),
                )
            })
            .await;
        assert!(
            matches!(failed, Err(barrier::Error::Effect(_))),
            "{failed:?}"
        );

        let unfinished = barrier
            .action(&mut db, &call(id, Phase::Action, 2), async |tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                book(tx, &call(id, Phase::Action, 2), 25).await?;
                Ok::<_, tokio_postgres::Error>(Reply::InProgress)
            })
            .await
            .unwrap();
        assert_eq!(unfinished, Reply::InProgress);
        assert_eq!(booked(&db, id).await, (0, 0));
        assert!(barrier_rows(&db, id).await.is_empty());

        let done = charge(&barrier, &mut db, &call(id, Phase::Action, 3), &runs).await;
        assert_eq!(done, Reply::Done(json!({ "charged_by_attempt": 3 })));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(booked(&db, id).await, (1, 0));
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_refuses_a_call_for_the_other_phase() {
    with_database(async |name| {
        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let runs = AtomicU32::new(0);
        let result = barrier
            .action(
                &mut db,
                &call(Uuid::now_v7(), Phase::Compensation, 1),
                async |_tx| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, tokio_postgres::Error>(Reply::Done(Value::Null))
                },
            )
            .await;
        assert!(
            matches!(result, Err(barrier::Error::PhaseMismatch { .. })),
            "{result:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    })
    .await;
}

/// Waits until the backend `pid` is blocked on a lock, or fails after a deadline.
async fn wait_until_blocked(observer: &Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: bool = observer
            .query_one(
                "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} never blocked on the barrier row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a charge whose effect holds its transaction open until the compensation on
/// `other` is blocked behind it, then finishes with `outcome`.
async fn compensation_racing_an_action(
    name: &str,
    outcome: Reply,
) -> (Uuid, Reply, Reply, u32, u32) {
    let barrier = Barrier::new("shop").unwrap();
    let (mut first, mut second, observer) = (
        connect(name).await,
        connect(name).await,
        connect(name).await,
    );
    let second_pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let id = Uuid::now_v7();
    let (action_call, compensation_call) =
        (call(id, Phase::Action, 1), call(id, Phase::Compensation, 1));
    let (charges, refunds) = (AtomicU32::new(0), AtomicU32::new(0));
    let effect_started = Notify::new();

    let action = barrier.action(&mut first, &action_call, async |tx| {
        charges.fetch_add(1, Ordering::SeqCst);
        book(tx, &action_call, 25).await?;
        effect_started.notify_one();
        wait_until_blocked(&observer, second_pid).await;
        Ok::<_, tokio_postgres::Error>(outcome)
    });
    let compensation = async {
        effect_started.notified().await;
        refund(&barrier, &mut second, &compensation_call, &refunds).await
    };
    let (action, compensation) = tokio::join!(action, compensation);
    let action = action.expect("the action settles");
    (
        id,
        action,
        compensation,
        charges.into_inner(),
        refunds.into_inner(),
    )
}

#[tokio::test]
async fn a_compensation_racing_its_action_waits_for_it_and_then_undoes_it() {
    with_database(async |name| {
        let (id, action, compensation, charges, refunds) =
            compensation_racing_an_action(&name, Reply::Done(json!({ "charged": 25 }))).await;
        assert_eq!(action, Reply::Done(json!({ "charged": 25 })));
        assert_eq!(
            compensation,
            Reply::Done(json!({ "refunded_by_attempt": 1 }))
        );
        assert_eq!((charges, refunds), (1, 1));
        assert_eq!(booked(&connect(&name).await, id).await, (1, 1));
    })
    .await;
}

#[tokio::test]
async fn a_compensation_racing_an_unfinished_action_is_null_and_blocks_the_retry() {
    with_database(async |name| {
        let (id, action, compensation, _, refunds) =
            compensation_racing_an_action(&name, Reply::InProgress).await;
        assert_eq!(action, Reply::InProgress);
        assert_eq!(compensation, Reply::Done(Value::Null));
        assert_eq!(refunds, 0);

        let mut db = connect(&name).await;
        let barrier = Barrier::new("shop").unwrap();
        let retry = charge(
            &barrier,
            &mut db,
            &call(id, Phase::Action, 2),
            &AtomicU32::new(0),
        )
        .await;
        assert_eq!(retry, Reply::Refuse(HANGING_ACTION.to_owned()));
        assert_eq!(booked(&db, id).await, (0, 0));
    })
    .await;
}

#[tokio::test]
async fn concurrent_action_and_compensation_pairs_leave_the_ledger_consistent() {
    with_database(async |name| {
        let barrier = Barrier::new("shop").unwrap();
        let (mut a, mut b) = (connect(&name).await, connect(&name).await);
        let mut both = 0;
        for round in 0..40u32 {
            let id = Uuid::now_v7();
            let (charges, refunds) = (AtomicU32::new(0), AtomicU32::new(0));
            let (action_call, compensation_call) =
                (call(id, Phase::Action, 1), call(id, Phase::Compensation, 1));
            // Alternate which call is polled first so both orders occur.
            let (action, compensation) = if round % 2 == 0 {
                tokio::join!(
                    charge(&barrier, &mut a, &action_call, &charges),
                    refund(&barrier, &mut b, &compensation_call, &refunds)
                )
            } else {
                let (compensation, action) = tokio::join!(
                    refund(&barrier, &mut b, &compensation_call, &refunds),
                    charge(&barrier, &mut a, &action_call, &charges)
                );
                (action, compensation)
            };
            let ledger = booked(&a, id).await;
            match action {
                Reply::Done(_) => {
                    assert_eq!(
                        ledger,
                        (1, 1),
                        "round {round}: the action ran, so it was undone"
                    );
                    assert_eq!(
                        compensation,
                        Reply::Done(json!({ "refunded_by_attempt": 1 }))
                    );
                    both += 1;
                }
                Reply::Refuse(reason) => {
                    assert_eq!(reason, HANGING_ACTION, "round {round}");
                    assert_eq!(ledger, (0, 0), "round {round}: neither effect applied");
                    assert_eq!(compensation, Reply::Done(Value::Null));
                }
                other => panic!("round {round}: unexpected action reply {other:?}"),
            }
            assert_eq!(
                (charges.into_inner(), refunds.into_inner()),
                (ledger.0 as u32, ledger.1 as u32)
            );
        }
        // Not an assertion about scheduling, just a record for whoever reads the log.
        println!("{both} of 40 rounds ran the action first");
    })
    .await;
}
