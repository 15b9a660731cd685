//! `?wait=` answers with the row the finishing write stored, without reading it
//! back: the answer must be exactly what a read returns afterwards, for sagas
//! that complete or compensate and for 2PC transactions, and a stuck saga (which
//! is not terminal) is still answered.

use serde_json::{json, Value};
use settle_tests::scripted::Answer;

use crate::support::{saga_yaml, World};

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    json_of(http.post(url).json(&body).send().await.unwrap()).await
}

async fn json_of(response: reqwest::Response) -> Value {
    assert!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Starts a saga with `?wait=20s`, then reads it: both answers, as JSON.
async fn waited_and_read(
    world: &World,
    http: &reqwest::Client,
    definition: &str,
) -> (Value, Value) {
    let base = &world.coordinator.base_url;
    let waited = post(
        http,
        format!("{base}/v1/sagas?wait=20s"),
        json!({ "definition": definition, "input": { "order": 7, "note": "ü" } }),
    )
    .await;
    let id = waited["id"].as_str().unwrap();
    let read = json_of(
        http.get(format!("{base}/v1/sagas/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    (waited, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_for_answer_is_what_a_read_returns_afterwards() {
    let world = World::start().await;
    let http = reqwest::Client::new();
    world
        .register(
            "waited",
            &saga_yaml(
                &world,
                "waited",
                "",
                &[("a", None, true), ("b", None, true)],
            ),
        )
        .await;
    world
        .participant
        .push("/a", [Answer::ok(json!({ "reserved": 3 }))]);

    let (waited, read) = waited_and_read(&world, &http, "waited").await;
    assert_eq!(waited["state"], "completed");
    assert_eq!(waited, read, "a completed saga");

    world.participant.push("/b", [Answer::status(409)]);
    let (waited, read) = waited_and_read(&world, &http, "waited").await;
    assert_eq!(waited["state"], "compensated");
    assert_eq!(waited, read, "a compensated saga");

    // Stuck is not terminal (an operator may retry it): answered from a read.
    world.participant.push("/b", [Answer::status(409)]);
    world
        .participant
        .set_default("/a/undo", Answer::status(422));
    let (waited, read) = waited_and_read(&world, &http, "waited").await;
    assert_eq!(waited["state"], "stuck");
    assert_eq!(waited, read, "a stuck saga");

    let base = &world.coordinator.base_url;
    let waited = post(
        &http,
        format!("{base}/v1/transactions?wait=20s"),
        json!({
            "participants": [{
                "name": "x",
                "prepare_url": world.participant.url("/x/prepare"),
                "commit_url": world.participant.url("/x/commit"),
                "abort_url": world.participant.url("/x/abort"),
            }],
            "timeout": "10s",
        }),
    )
    .await;
    let id = waited["id"].as_str().unwrap();
    let read = json_of(
        http.get(format!("{base}/v1/transactions/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(waited["state"], "committed");
    assert_eq!(waited, read, "a committed 2PC transaction");
    world.stop().await;
}
