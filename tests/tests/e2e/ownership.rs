//! Several coordinators on one database: a paused owner loses its transactions to
//! another instance once its lease expires, and when it wakes up its late writes
//! are refused by the fence and it calls no participant again.

use std::time::Duration;

use serde_json::json;
use settle_tests::coordinator::CoordinatorProcess;
use settle_tests::db::TestDatabase;
use settle_tests::redis_server;
use settle_tests::scripted::{Answer, ScriptedParticipant};

use crate::support::SETTLE_BIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_out_and_calls_nobody_after_it_wakes() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let participant = ScriptedParticipant::start().await;
    // The first call of the slow step outlives the pause; the retry by the new owner is quick.
    participant.push(
        "/slow",
        [Answer::ok(json!({ "by": "first" })).after(Duration::from_secs(4))],
    );
    let prefix = settle_tests::unique("pause");
    let first =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let definition = json!({
        "name": "pausable",
        "steps": [
            { "name": "before", "action": { "url": participant.url("/before") } },
            { "name": "slow", "action": { "url": participant.url("/slow"), "timeout": "30s" } },
            { "name": "after", "action": { "url": participant.url("/after") } }
        ]
    });
    first
        .client
        .register_definition("pausable", &definition.to_string(), "application/json")
        .await
        .unwrap();
    let saga = first
        .client
        .start_saga("pausable", json!({}), None, None)
        .await
        .unwrap();
    settle_tests::eventually(
        "the slow call to be under way",
        Duration::from_secs(20),
        || async { (!participant.calls_to("/slow").is_empty()).then_some(()) },
    )
    .await;
    first.signal("STOP");

    let second =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let done = second
        .client
        .wait_saga(saga.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        done.state, "completed",
        "the second instance took over and finished"
    );
    let owner: String = db
        .client()
        .await
        .query_one("SELECT owner FROM transactions WHERE id = $1", &[&saga.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, second.instance);

    first.signal("CONT");
    settle_tests::eventually(
        "the first instance to notice it lost ownership",
        Duration::from_secs(20),
        || async { first.log_text().contains("ownership lost").then_some(()) },
    )
    .await;
    // Its late reply changed nothing, and it called nobody again.
    let after = second.client.get_saga(saga.id).await.unwrap();
    assert_eq!(after.state, "completed");
    assert_eq!(
        after.step("slow").unwrap().attempts,
        done.step("slow").unwrap().attempts
    );
    assert_eq!(participant.calls_to("/before").len(), 1);
    assert_eq!(
        participant.calls_to("/slow").len(),
        2,
        "the paused call and the new owner's retry"
    );
    assert_eq!(
        participant.calls_to("/after").len(),
        1,
        "only the new owner called the last step"
    );
    let events = crate::support::count(
        &db,
        &format!("SELECT count(*) FROM events WHERE transaction_id = '{}' AND actor = '{}' AND kind = 'attempt' AND step = 'slow'", saga.id, first.instance),
    )
    .await;
    assert_eq!(
        events, 0,
        "the first instance's late outcome was never written"
    );
    drop(first);
    drop(second);
    participant.stop().await;
    redis_server::clean_prefix(&prefix).await;
}
