//! W3C trace context: a `traceparent` given when a transaction starts reaches every
//! participant call (same trace id, a new span id per call, `tracestate` passed on),
//! survives recovery by another instance, and an invalid one is ignored.

use std::time::Duration;

use serde_json::{json, Value};
use settle_tests::coordinator::{test_settings, TestCoordinator};
use settle_tests::db::TestDatabase;
use settle_tests::redis_server;
use settle_tests::scripted::{Answer, Received, ScriptedParticipant};
use uuid::Uuid;

use crate::support::{saga_yaml, World, WAIT};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// POST /v1/sagas with the given trace headers; returns the saga as answered.
async fn start_traced(base: &str, definition: &str, headers: &[(&str, &str)]) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/sagas?wait=20s"))
        .json(&json!({ "definition": definition, "input": {} }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

/// The trace id and span id of a call's `traceparent`.
fn trace_of(call: &Received) -> (String, String) {
    let header = call
        .traceparent
        .clone()
        .expect("a traceparent on every call");
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_given_on_post_sagas_reaches_every_participant_call() {
    let world = World::start().await;
    let yaml = saga_yaml(
        &world,
        "traced",
        "",
        &[("a", None, true), ("b", None, true)],
    );
    world.register("traced", &yaml).await;
    world.participant.push("/b", [Answer::status(409)]);
    let saga = start_traced(
        &world.coordinator.base_url,
        "traced",
        &[
            ("traceparent", TRACEPARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(saga["state"], "compensated");
    let calls = world.participant.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/a/undo"]);
    let mut spans = Vec::new();
    for call in &calls {
        let (trace, span) = trace_of(call);
        assert_eq!(trace, TRACE_ID, "{}", call.path);
        assert_ne!(
            span, "00f067aa0ba902b7",
            "each call is a new span under the caller's"
        );
        assert_eq!(call.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        spans.push(span);
    }
    spans.sort();
    spans.dedup();
    assert_eq!(spans.len(), calls.len(), "one span per call");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_is_ignored_and_the_saga_traces_under_its_own_id() {
    let world = World::start().await;
    let yaml = saga_yaml(&world, "untraced", "", &[("a", None, false)]);
    world.register("untraced", &yaml).await;
    let saga = start_traced(
        &world.coordinator.base_url,
        "untraced",
        &[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "ignored=with-the-traceparent"),
        ],
    )
    .await;
    assert_eq!(saga["state"], "completed");
    let id: Uuid = saga["id"].as_str().unwrap().parse().unwrap();
    let calls = world.participant.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(trace_of(&calls[0]).0, id.simple().to_string());
    assert_eq!(calls[0].tracestate, None);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_given_on_post_transactions_reaches_every_branch() {
    let world = World::start().await;
    let p = &world.participant;
    let branch = |name: &str| {
        json!({
            "name": name,
            "prepare_url": p.url(&format!("/{name}/prepare")),
            "commit_url": p.url(&format!("/{name}/commit")),
            "abort_url": p.url(&format!("/{name}/abort")),
        })
    };
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/transactions?wait=20s",
            world.coordinator.base_url
        ))
        .header("traceparent", TRACEPARENT)
        .json(&json!({ "participants": [branch("x"), branch("y")] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let tx: Value = response.json().await.unwrap();
    assert_eq!(tx["state"], "committed");
    let calls = p.calls();
    assert_eq!(calls.len(), 4, "two prepares, two commits");
    for call in &calls {
        assert_eq!(trace_of(call).0, TRACE_ID, "{}", call.path);
        assert_eq!(call.tracestate, None);
    }
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_survives_recovery_by_another_instance() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let participant = ScriptedParticipant::start().await;
    let first = TestCoordinator::start(test_settings(&db.url, redis_server::SHARED)).await;
    let world_like = crate::support::World {
        db,
        coordinator: first,
        participant,
    };
    // a keeps failing (transiently) while the first instance owns the saga.
    let yaml = saga_yaml(
        &world_like,
        "handed-over",
        "",
        &[("a", None, true), ("b", None, true)],
    )
    .replace(
        "max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms",
        "max_attempts: 1000, initial_backoff: 50ms, max_backoff: 100ms",
    );
    world_like.register("handed-over", &yaml).await;
    world_like
        .participant
        .set_default("/a", Answer::status(503));
    let response = reqwest::Client::new()
        .post(format!("{}/v1/sagas", world_like.coordinator.base_url))
        .header("traceparent", TRACEPARENT)
        .json(&json!({ "definition": "handed-over", "input": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let saga: Value = response.json().await.unwrap();
    let id: Uuid = saga["id"].as_str().unwrap().parse().unwrap();
    settle_tests::eventually("a few failed attempts at a", WAIT, || async {
        (world_like.participant.calls_to("/a").len() >= 2).then_some(())
    })
    .await;

    // The first instance goes away; a second one claims the saga and finishes it.
    let crate::support::World {
        db,
        coordinator: first,
        participant,
    } = world_like;
    first.stop().await;
    participant.set_default("/a", Answer::ok(json!({})));
    let second = TestCoordinator::start(test_settings(&db.url, redis_server::SHARED)).await;
    let saga = second
        .client
        .wait_saga(id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(saga.state, "completed");
    let recovered = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM events WHERE transaction_id = $1 AND kind = 'recovered' AND actor = $2",
            &[&id, &second.settings.coordinator.instance_id],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(recovered, 1, "the second instance recovered the saga");
    let samples = crate::metrics::scrape(&second.base_url).await;
    assert_eq!(samples["settle_recovery_claims_total"], 1.0);
    assert_eq!(samples["settle_recovery_lag_seconds_count"], 1.0);
    let b_calls = participant.calls_to("/b");
    assert_eq!(
        b_calls.len(),
        1,
        "b was called once, by the second instance"
    );
    for call in participant.calls() {
        assert_eq!(trace_of(&call).0, TRACE_ID, "{}", call.path);
    }
    second.stop().await;
    participant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_transaction_started_untraced_takes_the_trace_of_its_commit() {
    let world = World::start().await;
    let base = world.coordinator.base_url.clone();
    let http = reqwest::Client::new();
    let tx: Value = http
        .post(format!("{base}/v1/transactions"))
        .json(&json!({ "timeout": "30s" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = tx["id"].as_str().unwrap().to_string();
    let p = &world.participant;
    let registered = http
        .post(format!("{base}/v1/transactions/{id}/branches"))
        .json(&json!({
            "name": "x",
            "commit_url": p.url("/x/commit"),
            "abort_url": p.url("/x/abort"),
        }))
        .send()
        .await
        .unwrap();
    assert!(registered.status().is_success(), "{}", registered.status());
    let committed = http
        .post(format!("{base}/v1/transactions/{id}/commit?wait=20s"))
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "k=v")
        .send()
        .await
        .unwrap();
    assert!(committed.status().is_success(), "{}", committed.status());
    let committed: Value = committed.json().await.unwrap();
    assert_eq!(committed["state"], "committed");
    let calls = p.calls_to("/x/commit");
    assert_eq!(calls.len(), 1);
    assert_eq!(trace_of(&calls[0]).0, TRACE_ID);
    assert_eq!(calls[0].tracestate.as_deref(), Some("k=v"));
    world.stop().await;
}
