//! Graceful shutdown: SIGTERM stops new work, lets calls in flight finish and
//! records them, and gives owned sagas back so another instance takes them at once.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use settle_tests::coordinator::CoordinatorProcess;
use settle_tests::db::TestDatabase;
use settle_tests::redis_server;
use settle_tests::scripted::{Answer, ScriptedParticipant};

use crate::support::SETTLE_BIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_calls_in_flight_and_hands_the_sagas_over() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let participant = ScriptedParticipant::start().await;
    participant.set_default(
        "/slow",
        Answer::ok(json!({ "done": true })).after(Duration::from_millis(800)),
    );
    let prefix = settle_tests::unique("term");
    let mut first =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let definition = json!({
        "name": "graceful",
        "steps": [
            { "name": "fast", "action": { "url": participant.url("/fast") } },
            { "name": "slow", "action": { "url": participant.url("/slow") } },
            { "name": "last", "action": { "url": participant.url("/last") } }
        ]
    });
    first
        .client
        .register_definition("graceful", &definition.to_string(), "application/json")
        .await
        .unwrap();
    let ids: Vec<_> = join_all((0..5).map(|i| {
        let client = first.client.clone();
        async move {
            client
                .start_saga("graceful", json!({ "i": i }), None, None)
                .await
                .unwrap()
                .id
        }
    }))
    .await;
    settle_tests::eventually(
        "the slow calls to be in flight",
        Duration::from_secs(20),
        || async { (participant.calls_to("/slow").len() == 5).then_some(()) },
    )
    .await;
    first.signal("TERM");
    assert!(
        first.wait_exit(Duration::from_secs(30)).await,
        "settle exits cleanly on SIGTERM"
    );
    let log = first.log_text();
    assert!(log.contains("released at shutdown"), "{log}");

    let client = db.client().await;
    let rows = client
        .query("SELECT state, owner, progress FROM transactions", &[])
        .await
        .unwrap();
    for row in &rows {
        let state: String = row.get(0);
        let owner: Option<String> = row.get(1);
        let progress: serde_json::Value = row.get(2);
        if state == "running" {
            assert_eq!(owner, None, "handed back, not left to lease expiry");
        }
        assert_eq!(
            progress["steps"][1]["status"], "succeeded",
            "the call in flight finished and was recorded"
        );
    }

    let second =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    for id in &ids {
        let saga = second
            .client
            .wait_saga(*id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(saga.state, "completed");
    }
    assert_eq!(
        participant.calls_to("/slow").len(),
        5,
        "no call in flight was repeated"
    );
    drop(second);
    participant.stop().await;
    redis_server::clean_prefix(&prefix).await;
}
