//! Saga execution against a scripted participant: order, retries, compensation,
//! deadlines, parallel branches, outputs, idempotent starts and cancellation.

use std::time::Duration;

use serde_json::json;
use settle_tests::scripted::Answer;

use crate::support::{saga_yaml, World, WAIT};

fn paths(calls: &[settle_tests::scripted::Received]) -> Vec<String> {
    calls.iter().map(|c| c.path.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_runs_every_step_once_in_order() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "three",
        "",
        &[("a", None, true), ("b", None, true), ("c", None, true)],
    );
    world.register("three", &yaml).await;
    let saga = world
        .coordinator
        .client
        .start_saga("three", json!({ "order": 1 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "completed");
    assert!(saga
        .steps
        .iter()
        .all(|s| s.state == "succeeded" && s.attempts == 1));
    assert_eq!(paths(&world.participant.calls()), ["/a", "/b", "/c"]);
    let first = &world.participant.calls()[0];
    assert_eq!(first.saga_call().input, json!({ "order": 1 }));
    assert_eq!(first.saga_call().attempt, 1);
    assert_eq!(
        first.idempotency_key.as_deref(),
        Some(format!("{}:a:action", saga.id).as_str())
    );
    let traceparent = first.traceparent.clone().expect("traceparent sent");
    assert!(traceparent.starts_with(&format!("00-{}-", saga.id.simple())));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_failure_compensates_in_reverse_order() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "refusal",
        "",
        &[("a", None, true), ("b", None, true), ("c", None, true)],
    );
    world.register("refusal", &yaml).await;
    world.participant.push("/c", [Answer::status(409)]);
    let saga = world
        .coordinator
        .client
        .start_saga("refusal", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "compensated");
    assert_eq!(
        paths(&world.participant.calls()),
        ["/a", "/b", "/c", "/b/undo", "/a/undo"]
    );
    assert_eq!(saga.step("c").unwrap().state, "failed");
    assert_eq!(saga.step("c").unwrap().last_status, Some(409));
    assert_eq!(saga.step("a").unwrap().state, "compensated");
    assert!(saga.reason.unwrap().contains("step c refused"));
    let undo = &world.participant.calls_to("/b/undo")[0];
    assert_eq!(
        undo.idempotency_key.as_deref(),
        Some(format!("{}:b:compensation", saga.id).as_str())
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_the_same_key_then_succeed() {
    let world = World::start().await;
    let yaml = saga_yaml(&world, "flaky", "", &[("a", None, true), ("b", None, true)]);
    world.register("flaky", &yaml).await;
    world
        .participant
        .push("/b", [Answer::status(503), Answer::status(500)]);
    let saga = world
        .coordinator
        .client
        .start_saga("flaky", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "completed");
    let b_calls = world.participant.calls_to("/b");
    assert_eq!(b_calls.len(), 3);
    assert_eq!(
        b_calls
            .iter()
            .map(|c| c.saga_call().attempt)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(b_calls
        .windows(2)
        .all(|w| w[0].idempotency_key == w[1].idempotency_key));
    assert_eq!(saga.step("b").unwrap().attempts, 3);
    // Every attempt is on the timeline with its status code.
    let client = world.db.client().await;
    let rows = client
        .query(
            "SELECT attempt, status_code FROM events WHERE transaction_id = $1 AND kind = 'attempt' AND step = 'b' ORDER BY id",
            &[&saga.id],
        )
        .await
        .unwrap();
    let attempts: Vec<(i32, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(attempts, [(1, 503), (2, 500), (3, 200)]);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_compensate_the_step_that_may_have_applied() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "exhaust",
        "",
        &[("a", None, true), ("b", None, true), ("c", None, true)],
    );
    world.register("exhaust", &yaml).await;
    world.participant.set_default("/b", Answer::status(500));
    let saga = world
        .coordinator
        .client
        .start_saga("exhaust", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "compensated");
    assert_eq!(
        paths(&world.participant.calls()),
        ["/a", "/b", "/b", "/b", "/b/undo", "/a/undo"]
    );
    assert_eq!(saga.step("c").unwrap().state, "skipped");
    assert!(saga.reason.unwrap().contains("failed after 3 attempts"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_compensation_leaves_the_saga_stuck_with_the_last_error() {
    let world = World::start().await;
    let yaml = saga_yaml(&world, "stuck", "", &[("a", None, true), ("b", None, true)]);
    world.register("stuck", &yaml).await;
    world.participant.push("/b", [Answer::status(422)]);
    world
        .participant
        .set_default("/a/undo", Answer::status(502));
    let saga = world
        .coordinator
        .client
        .start_saga("stuck", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "stuck");
    assert_eq!(world.participant.calls_to("/a/undo").len(), 3);
    let a = saga.step("a").unwrap();
    assert_eq!(a.state, "compensating");
    assert_eq!(a.last_status, Some(502));
    assert!(a.last_error.as_deref().unwrap().contains("scripted 502"));
    assert!(saga
        .reason
        .unwrap()
        .contains("compensation of a failed after 3 attempts"));
    // A stuck saga is not picked up again by recovery: nothing more is called.
    let calls = world.participant.calls().len();
    let again = world
        .coordinator
        .client
        .wait_saga(saga.id, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(again.state, "stuck");
    assert_eq!(world.participant.calls().len(), calls);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_deadline_turns_it_to_compensation() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "slow",
        "timeout: 1s\n",
        &[("a", None, true), ("b", None, true)],
    );
    world.register("slow", &yaml).await;
    // b keeps saying "in progress": polls do not use up attempts, the deadline ends it.
    world.participant.set_default("/b", Answer::status(202));
    let saga = world
        .coordinator
        .client
        .start_saga("slow", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "compensated");
    assert_eq!(saga.reason.as_deref(), Some("deadline exceeded"));
    assert!(world.participant.calls_to("/b").len() > 3, "b was polled");
    // b may have started, so it is compensated too, before a.
    let tail: Vec<String> = paths(&world.participant.calls())
        .into_iter()
        .filter(|p| p.ends_with("/undo"))
        .collect();
    assert_eq!(tail, ["/b/undo", "/a/undo"]);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_branches_run_concurrently_and_join() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "branches",
        "",
        &[
            ("left", Some(&[]), true),
            ("right", Some(&[]), true),
            ("join", Some(&["left", "right"]), false),
        ],
    );
    world.register("branches", &yaml).await;
    world.participant.push(
        "/left",
        [Answer::ok(json!({ "side": "L" })).after(Duration::from_millis(300))],
    );
    world.participant.push(
        "/right",
        [Answer::ok(json!({ "side": "R" })).after(Duration::from_millis(300))],
    );
    let saga = world
        .coordinator
        .client
        .start_saga("branches", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "completed");
    let left = &world.participant.calls_to("/left")[0];
    let right = &world.participant.calls_to("/right")[0];
    assert!(
        right.started < left.finished.unwrap() && left.started < right.finished.unwrap(),
        "the branches overlapped"
    );
    let join = &world.participant.calls_to("/join")[0];
    assert!(join.started >= left.finished.unwrap() && join.started >= right.finished.unwrap());
    assert_eq!(join.saga_call().results["left"], json!({ "side": "L" }));
    assert_eq!(join.saga_call().results["right"], json!({ "side": "R" }));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_of_earlier_steps_reach_later_steps() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "outputs",
        "",
        &[("a", None, true), ("b", None, true), ("c", None, false)],
    );
    world.register("outputs", &yaml).await;
    world
        .participant
        .push("/a", [Answer::ok(json!({ "reservation": "r-1" }))]);
    world
        .participant
        .push("/b", [Answer::ok(json!({ "charge": 42 }))]);
    let saga = world
        .coordinator
        .client
        .start_saga("outputs", json!({ "sku": "x" }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "completed");
    let c = &world.participant.calls_to("/c")[0].saga_call();
    assert_eq!(c.results["a"], json!({ "reservation": "r-1" }));
    assert_eq!(c.results["b"], json!({ "charge": 42 }));
    assert_eq!(c.input, json!({ "sku": "x" }));
    assert_eq!(
        saga.step("b").unwrap().output,
        Some(json!({ "charge": 42 }))
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_saga_and_a_different_body_is_refused() {
    let world = World::start().await;
    let yaml = saga_yaml(&world, "idem", "", &[("a", None, true)]);
    world.register("idem", &yaml).await;
    let client = &world.coordinator.client;
    let (first, created) = client
        .start_saga_created("idem", json!({ "n": 1 }), Some("order-77"), Some(WAIT))
        .await
        .unwrap();
    assert!(created);
    let (again, created_again) = client
        .start_saga_created("idem", json!({ "n": 1 }), Some("order-77"), Some(WAIT))
        .await
        .unwrap();
    assert!(!created_again);
    assert_eq!(again.id, first.id);
    let err = client
        .start_saga("idem", json!({ "n": 2 }), Some("order-77"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("idempotency_key_reused"));
    assert_eq!(
        world.participant.calls_to("/a").len(),
        1,
        "the step ran once"
    );
    let count: i64 = crate::support::count(&world.db, "SELECT count(*) FROM transactions").await;
    assert_eq!(count, 1);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_compensates_a_running_saga_and_a_completed_one_refuses() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "cancel",
        "",
        &[("a", None, true), ("b", None, true)],
    );
    world.register("cancel", &yaml).await;
    world.participant.set_default("/b", Answer::status(202));
    let client = &world.coordinator.client;
    let saga = client
        .start_saga("cancel", json!({}), None, None)
        .await
        .unwrap();
    settle_tests::eventually("b to be polled", WAIT, || async {
        (!world.participant.calls_to("/b").is_empty()).then_some(())
    })
    .await;
    let cancelled = client.cancel_saga(saga.id).await.unwrap();
    assert!(cancelled.cancel_requested);
    let done = client.wait_saga(saga.id, WAIT).await.unwrap();
    assert_eq!(done.state, "compensated");
    assert_eq!(done.reason.as_deref(), Some("cancelled"));
    assert_eq!(world.participant.calls_to("/a/undo").len(), 1);
    assert_eq!(world.participant.calls_to("/b/undo").len(), 1);
    // Cancelling again is harmless.
    assert_eq!(
        client.cancel_saga(saga.id).await.unwrap().state,
        "compensated"
    );

    world.participant.set_default("/b", Answer::ok(json!({})));
    let completed = client
        .start_saga("cancel", json!({ "n": 2 }), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(completed.state, "completed");
    let err = client.cancel_saga(completed.id).await.unwrap_err();
    assert_eq!(err.code(), Some("saga_completed"));
    world.stop().await;
}
