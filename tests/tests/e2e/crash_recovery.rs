//! A coordinator process is SIGKILLed with sagas mid-flight; a new one on the same
//! database finishes every saga, and the participants' ledgers show each action
//! applied once and each compensation applied once.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use settle_examples::{ledger, Participants};
use settle_tests::coordinator::CoordinatorProcess;
use settle_tests::db::TestDatabase;
use settle_tests::redis_server::{self, ThrowawayRedis};
use settle_tests::scripted::{Answer, ScriptedParticipant};
use uuid::Uuid;

use crate::support::{Shop, SETTLE_BIN};

/// Order checkout with a slow fraud check in the middle, so that sagas are
/// caught between steps when the coordinator dies.
fn slow_checkout(participants: &Participants, fraud: &ScriptedParticipant) -> String {
    let url = |addr, path| Participants::url(addr, path);
    json!({
        "name": "slow-checkout",
        "timeout": "120s",
        "retry": { "max_attempts": 20, "initial_backoff": "50ms", "max_backoff": "500ms" },
        "steps": [
            { "name": "reserve-inventory",
              "action": { "url": url(participants.inventory, "/reservations") },
              "compensation": { "url": url(participants.inventory, "/reservations/release") } },
            { "name": "fraud-check",
              "action": { "url": fraud.url("/fraud-check") },
              "compensation": { "url": fraud.url("/fraud-check/undo") } },
            { "name": "charge-payment",
              "action": { "url": url(participants.payments, "/charges") },
              "compensation": { "url": url(participants.payments, "/refunds") } },
            { "name": "ship-order",
              "action": { "url": url(participants.shipping, "/shipments") },
              "compensation": { "url": url(participants.shipping, "/shipments/cancel") } }
        ]
    })
    .to_string()
}

async fn states(db: &TestDatabase) -> Vec<(Uuid, String)> {
    db.client()
        .await
        .query("SELECT id, state FROM transactions ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Starts orders `from..from + count` (every third one declined by payments) without waiting.
async fn start_orders(
    client: &settle_participant::client::CoordinatorClient,
    from: usize,
    count: usize,
) -> Vec<(Uuid, bool)> {
    let starts = (from..from + count).map(|i| {
        let declined = i % 3 == 0;
        let amount = if declined { 5000 } else { 100 };
        async move {
            let saga = client
                .start_saga(
                    "slow-checkout",
                    json!({ "sku": "widget", "quantity": 1, "amount": amount, "customer": format!("c{i}") }),
                    Some(&format!("crash-order-{i}")),
                    None,
                )
                .await
                .unwrap();
            (saga.id, declined)
        }
    });
    join_all(starts).await
}

/// Every saga ended as its input says, and every effect happened exactly as often as it should.
async fn check_ledgers(
    pool: &deadpool_postgres::Pool,
    db: &TestDatabase,
    orders: &[(Uuid, bool)],
    stock_before: i64,
) {
    let final_states: std::collections::HashMap<Uuid, String> =
        states(db).await.into_iter().collect();
    let mut reserved = 0;
    for (id, declined) in orders {
        let state = &final_states[id];
        let reservation = ledger::reservations(pool, *id).await.unwrap();
        let charge = ledger::charges(pool, *id).await.unwrap();
        let shipment = ledger::shipments(pool, *id).await.unwrap();
        if *declined {
            assert_eq!(state, "compensated", "declined order {id}");
            let r = reservation.expect("the reservation was made before the decline");
            assert_eq!(r.releases, 1, "released exactly once: {id}");
            assert!(charge.is_none(), "a declined order is never charged: {id}");
            assert!(shipment.is_none());
        } else {
            assert_eq!(state, "completed", "good order {id}");
            let r = reservation.expect("reserved");
            assert_eq!(r.releases, 0);
            reserved += r.quantity;
            let c = charge.expect("charged");
            assert_eq!(c.refunds, 0);
            let s = shipment.expect("shipped");
            assert_eq!(s.cancellations, 0);
        }
        for schema in ["inventory", "payments", "shipping"] {
            let rows = ledger::barrier_rows(pool, schema, *id).await.unwrap();
            let mut keys: Vec<_> = rows.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
            let n = keys.len();
            keys.dedup();
            assert_eq!(keys.len(), n, "one barrier row per step and phase");
        }
    }
    assert_eq!(
        ledger::stock(pool, "widget").await.unwrap(),
        stock_before - reserved,
        "stock moved exactly once per kept reservation"
    );
}

async fn all_settled(db: &TestDatabase, count: usize) -> Option<()> {
    let s = states(db).await;
    (s.len() == count
        && s.iter()
            .all(|(_, st)| st == "completed" || st == "compensated"))
    .then_some(())
}

async fn shop_with_fraud_check(delay: Duration) -> (Shop, ScriptedParticipant) {
    let shop = Shop::open().await;
    let fraud = ScriptedParticipant::start().await;
    fraud.set_default(
        "/fraud-check",
        Answer::ok(json!({ "score": 1 })).after(delay),
    );
    (shop, fraud)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_leaves_nothing_unfinished_and_nothing_doubled() {
    redis_server::require_shared().await;
    let (shop, fraud) = shop_with_fraud_check(Duration::from_millis(400)).await;
    let Shop {
        db,
        pool,
        participants,
        stock_before,
    } = &shop;
    let prefix = settle_tests::unique("crash");

    let mut first =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    first
        .client
        .register_definition(
            "slow-checkout",
            &slow_checkout(participants, &fraud),
            "application/json",
        )
        .await
        .unwrap();
    let orders = start_orders(&first.client, 0, 30).await;
    settle_tests::eventually(
        "fraud checks to be under way",
        Duration::from_secs(20),
        || async { (fraud.calls_to("/fraud-check").len() >= 10).then_some(()) },
    )
    .await;
    first.kill9();
    let unfinished = states(db)
        .await
        .iter()
        .filter(|(_, s)| s == "running" || s == "compensating")
        .count();
    assert!(unfinished > 0, "the kill caught sagas mid-flight");

    let second =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    settle_tests::eventually(
        "every saga to settle after recovery",
        Duration::from_secs(60),
        || all_settled(db, orders.len()),
    )
    .await;
    check_ledgers(pool, db, &orders, *stock_before).await;
    let recovered: i64 = db
        .client()
        .await
        .query_one(
            "SELECT count(DISTINCT transaction_id) FROM events WHERE kind = 'recovered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        recovered as usize >= unfinished,
        "the second coordinator recovered what the first left"
    );
    let logs = second.log_text();
    assert!(
        logs.contains("recovering transaction"),
        "recovery is logged"
    );
    assert!(
        logs.contains("transaction_id"),
        "log lines carry the transaction id"
    );
    drop(second);
    fraud.stop().await;
    shop.close().await;
    redis_server::clean_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_finish_and_recover_while_redis_is_down_and_readiness_says_degraded() {
    let (shop, fraud) = shop_with_fraud_check(Duration::from_millis(300)).await;
    let Shop {
        db,
        pool,
        participants,
        stock_before,
    } = &shop;
    let mut redis = ThrowawayRedis::start().await;

    let mut first =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, &redis.url(), "settle", &[]).await;
    first
        .client
        .register_definition(
            "slow-checkout",
            &slow_checkout(participants, &fraud),
            "application/json",
        )
        .await
        .unwrap();
    let mut orders = start_orders(&first.client, 0, 12).await;
    redis.kill();
    // The instance that created the sagas keeps driving them without Redis.
    let more = start_orders(&first.client, 12, 6).await;
    orders.extend(more);
    settle_tests::eventually(
        "fraud checks under way",
        Duration::from_secs(20),
        || async { (fraud.calls_to("/fraud-check").len() >= 6).then_some(()) },
    )
    .await;
    // Crash it too: recovery must work on Postgres leases alone.
    first.kill9();
    let second = CoordinatorProcess::spawn(SETTLE_BIN, &db.url, &redis.url(), "settle", &[]).await;
    let ready = reqwest::get(format!("{}/readyz", second.base_url))
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200, "degraded is still ready");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert!(body["checks"]["redis"]
        .as_str()
        .unwrap()
        .starts_with("unreachable"));
    settle_tests::eventually(
        "every saga to settle without redis",
        Duration::from_secs(60),
        || all_settled(db, orders.len()),
    )
    .await;
    check_ledgers(pool, db, &orders, *stock_before).await;

    redis.restart().await;
    settle_tests::eventually(
        "readiness to recover with redis",
        Duration::from_secs(20),
        || async {
            let body: Value = reqwest::get(format!("{}/readyz", second.base_url))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (body["status"] == "ready").then_some(())
        },
    )
    .await;
    drop(second);
    fraud.stop().await;
    shop.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_step_is_called_before_the_outcome_it_depends_on_is_durable() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let participant = ScriptedParticipant::start().await;
    let prefix = settle_tests::unique("batch-kill");
    let mut first =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let steps: Vec<Value> = (1..=4)
        .map(|k| json!({ "name": format!("s{k}"), "action": { "url": participant.url(&format!("/s{k}")) } }))
        .collect();
    first
        .client
        .register_definition(
            "chain",
            &json!({ "name": "chain", "steps": steps }).to_string(),
            "application/json",
        )
        .await
        .unwrap();
    // Closed-loop clients keep many sagas in flight, so that group commits carry many
    // outcomes at once when the process dies.
    let load: Vec<_> = (0..8)
        .map(|_| {
            let client = first.client.clone();
            tokio::spawn(async move {
                for _ in 0..10_000 {
                    if client
                        .start_saga("chain", json!({}), None, None)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    settle_tests::eventually("load to build up", Duration::from_secs(30), || async {
        (participant.calls().len() >= 400).then_some(())
    })
    .await;
    first.kill9();
    for task in load {
        let _ = task.await;
    }
    // What the database holds now is exactly what was durable when the process died.
    let rows = db
        .client()
        .await
        .query("SELECT id, progress FROM transactions", &[])
        .await
        .unwrap();
    let durable: std::collections::HashMap<Uuid, Value> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut checked = 0;
    for call in participant.calls() {
        let request = call.saga_call();
        let k: usize = request.step[1..].parse().unwrap();
        let progress = &durable[&request.transaction_id];
        let status = |i: usize| {
            progress["steps"][i - 1]["status"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_ne!(
            status(k),
            "pending",
            "s{k} of {} was called before its start was durable",
            request.transaction_id
        );
        if k > 1 {
            assert_eq!(
                status(k - 1),
                "succeeded",
                "s{k} of {} was called before s{} succeeded durably",
                request.transaction_id,
                k - 1
            );
        }
        checked += 1;
    }
    assert!(checked >= 400);
    participant.stop().await;
    redis_server::clean_prefix(&prefix).await;
}
