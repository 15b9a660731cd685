//! Operator actions end to end: retry now, pause and resume, compensate (saga and
//! 2PC), skip with an operator's output, resolve, and bulk actions by filter, each
//! with its 409 when it does not apply and its idempotent repeat.

use std::time::Duration;

use serde_json::{json, Value};
use settle_participant::api::{BulkAction, NewBranch, NewTransaction};
use settle_participant::client::Error;
use settle_tests::scripted::Answer;
use uuid::Uuid;

use crate::support::{saga_yaml, World, WAIT};

/// A saga of steps on the scripted participant with its own retry policy.
pub fn yaml_with_retry(world: &World, name: &str, retry: &str, steps: &[(&str, bool)]) -> String {
    let mut yaml = format!("name: {name}\ntimeout: 1h\nretry: {retry}\nsteps:\n");
    for (step, compensation) in steps {
        yaml.push_str(&format!(
            "  - name: {step}\n    action: {{ url: \"{}\", timeout: 2s }}\n",
            world.participant.url(&format!("/{step}"))
        ));
        if *compensation {
            yaml.push_str(&format!(
                "    compensation: {{ url: \"{}\" }}\n",
                world.participant.url(&format!("/{step}/undo"))
            ));
        }
    }
    yaml
}

async fn act(world: &World, id: Uuid, action: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/admin/transactions/{id}/{action}",
            world.coordinator.base_url
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn events_of(
    world: &World,
    id: Uuid,
    kind: &str,
) -> Vec<settle_participant::api::TimelineEvent> {
    world
        .coordinator
        .client
        .admin_transaction(id)
        .await
        .unwrap()
        .events
        .into_iter()
        .filter(|e| e.kind == kind)
        .collect()
}

/// Polls until `check` holds, a bounded number of times.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gave up waiting until {what}");
}

fn assert_not_applicable(answer: &(u16, Value), mentions: &str) {
    assert_eq!(answer.0, 409, "{answer:?}");
    assert_eq!(answer.1["code"], "action_not_applicable", "{answer:?}");
    assert!(
        answer.1["detail"].as_str().unwrap().contains(mentions),
        "the reason says why: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_now_calls_a_backed_off_step_at_once() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register(
            "slow-retry",
            &yaml_with_retry(
                &world,
                "slow-retry",
                "{ max_attempts: 5, initial_backoff: 30m, max_backoff: 30m }",
                &[("a", false)],
            ),
        )
        .await;
    world.participant.set_default("/a", Answer::status(503));
    let saga = client
        .start_saga("slow-retry", json!({}), None, None)
        .await
        .unwrap();
    until("the first attempt failed", || async {
        !events_of(&world, saga.id, "attempt").await.is_empty()
    })
    .await;
    // The next attempt is half an hour away; the participant is fixed now.
    world.participant.set_default("/a", Answer::ok(json!({})));
    let answer = act(&world, saga.id, "retry", json!({ "note": "fixed a" })).await;
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(answer.1["action"], "retry");
    assert_eq!(answer.1["state"], "running");
    let done = client.wait_saga(saga.id, WAIT).await.unwrap();
    assert_eq!(
        done.state, "completed",
        "retried at once, not in 30 minutes"
    );
    let retries = events_of(&world, saga.id, "operator_retry").await;
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].detail.as_ref().unwrap()["note"], "fixed a");
    // A finished saga has nothing to retry.
    assert_not_applicable(&act(&world, saga.id, "retry", json!({})).await, "completed");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_retries_until_resume_restarts_them() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let fast = "{ max_attempts: 100, initial_backoff: 5ms, max_backoff: 10ms }";
    world
        .register(
            "pausable",
            &yaml_with_retry(&world, "pausable", fast, &[("a", false)]),
        )
        .await;
    world
        .register(
            "witness",
            &yaml_with_retry(&world, "witness", fast, &[("w", false)]),
        )
        .await;
    world.participant.set_default("/a", Answer::status(503));
    world.participant.set_default("/w", Answer::status(503));
    let saga = client
        .start_saga("pausable", json!({}), None, None)
        .await
        .unwrap();
    until("a is being retried", || async {
        world.participant.calls_to("/a").len() >= 2
    })
    .await;
    let answer = act(&world, saga.id, "pause", json!({ "note": "a is down" })).await;
    assert_eq!(answer.0, 200, "{answer:?}");
    let paused_at = world.participant.calls_to("/a").len();
    let listed = client
        .admin_list(&[("id_prefix", &saga.id.simple().to_string())])
        .await
        .unwrap();
    assert!(listed.items[0].paused);
    // Pausing again is already in effect: 200, and no second event.
    assert_eq!(act(&world, saga.id, "pause", json!({})).await.0, 200);
    assert_eq!(events_of(&world, saga.id, "operator_pause").await.len(), 1);
    // Other actions wait for the resume.
    assert_not_applicable(
        &act(&world, saga.id, "compensate", json!({})).await,
        "paused",
    );

    // While another saga goes through many retry cycles (and recovery polls many
    // times), the paused one hears nothing more (one call may have been under way).
    let witness = client
        .start_saga("witness", json!({}), None, None)
        .await
        .unwrap();
    until("the witness saga retried 20 times", || async {
        world.participant.calls_to("/w").len() >= 20
    })
    .await;
    let calls = world.participant.calls_to("/a").len();
    assert!(
        calls <= paused_at + 1,
        "no retries while paused: {paused_at} then {calls}"
    );
    assert_eq!(client.get_saga(saga.id).await.unwrap().state, "running");

    world
        .participant
        .set_default("/a", Answer::ok(json!({ "ok": true })));
    let answer = act(&world, saga.id, "resume", json!({ "note": "a is back" })).await;
    assert_eq!(answer.0, 200, "{answer:?}");
    let done = client.wait_saga(saga.id, WAIT).await.unwrap();
    assert_eq!(done.state, "completed");
    assert_eq!(events_of(&world, saga.id, "operator_resume").await.len(), 1);
    // Not paused any more: resuming again is already in effect; pausing a finished saga is not.
    assert_not_applicable(&act(&world, saga.id, "pause", json!({})).await, "finished");
    client.cancel_saga(witness.id).await.unwrap();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensate_rolls_a_running_saga_back() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register(
            "rollback",
            &yaml_with_retry(
                &world,
                "rollback",
                "{ max_attempts: 100, initial_backoff: 5ms, max_backoff: 10ms }",
                &[("x", true), ("y", true)],
            ),
        )
        .await;
    world.participant.set_default("/y", Answer::status(503));
    // The undo of x keeps saying "in progress", so the saga stays compensating.
    world
        .participant
        .set_default("/x/undo", Answer::status(202));
    let saga = client
        .start_saga("rollback", json!({}), None, None)
        .await
        .unwrap();
    until("y is being retried", || async {
        !world.participant.calls_to("/y").is_empty()
    })
    .await;
    let answer = act(
        &world,
        saga.id,
        "compensate",
        json!({ "note": "customer called" }),
    )
    .await;
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(answer.1["state"], "compensating");
    until("x is being undone", || async {
        !world.participant.calls_to("/x/undo").is_empty()
    })
    .await;
    // Asked again while compensating: in effect already, no second event.
    let again = act(&world, saga.id, "compensate", json!({})).await;
    assert_eq!(
        (again.0, again.1["state"].as_str()),
        (200, Some("compensating"))
    );
    assert_eq!(
        events_of(&world, saga.id, "operator_compensate")
            .await
            .len(),
        1
    );
    world
        .participant
        .set_default("/x/undo", Answer::ok(json!({})));
    let done = client.wait_saga(saga.id, WAIT).await.unwrap();
    assert_eq!(done.state, "compensated");
    assert!(done.reason.unwrap().contains("customer called"));
    assert_not_applicable(
        &act(&world, saga.id, "compensate", json!({})).await,
        "finished",
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensate_aborts_an_active_two_phase_transaction() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let p = &world.participant;
    let id = world
        .open_interactive(&NewBranch {
            name: "stock".into(),
            prepare_url: None,
            commit_url: p.url("/stock/confirm"),
            abort_url: p.url("/stock/cancel"),
            payload: None,
        })
        .await;
    let answer = act(
        &world,
        id,
        "compensate",
        json!({ "note": "order withdrawn" }),
    )
    .await;
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(answer.1["state"], "aborting");
    let done = client.wait_transaction(id, WAIT).await.unwrap();
    assert_eq!(done.state, "aborted");
    assert_eq!(p.calls_to("/stock/cancel").len(), 1);
    assert!(p.calls_to("/stock/confirm").is_empty());
    let recorded = events_of(&world, id, "operator_compensate").await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].detail.as_ref().unwrap()["note"],
        "order withdrawn"
    );
    // Aborted and finished: nothing left to compensate, and no commit either.
    assert_eq!(act(&world, id, "compensate", json!({})).await.0, 409);
    assert!(matches!(
        client.commit_transaction(id).await,
        Err(Error::Api { status: 409, .. })
    ));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensate_aborts_a_preparing_transaction_and_refuses_a_committing_one() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let p = &world.participant;
    // a votes yes at once; b's prepare answers "in progress" until told otherwise.
    p.set_default("/b/prepare", Answer::status(202));
    let branch = |name: &str| NewBranch {
        name: name.into(),
        prepare_url: Some(p.url(&format!("/{name}/prepare"))),
        commit_url: p.url(&format!("/{name}/commit")),
        abort_url: p.url(&format!("/{name}/abort")),
        payload: None,
    };
    let tx = client
        .create_transaction(&NewTransaction {
            participants: Some(vec![branch("a"), branch("b")]),
            timeout: Some("10m".into()),
        })
        .await
        .unwrap();
    until("b was asked to prepare", || async {
        !p.calls_to("/b/prepare").is_empty()
    })
    .await;
    let answer = act(&world, tx.id, "compensate", json!({})).await;
    assert_eq!(answer.0, 200, "{answer:?}");
    let done = client.wait_transaction(tx.id, WAIT).await.unwrap();
    assert_eq!(done.state, "aborted");
    assert!(p.calls_to("/a/commit").is_empty());
    assert_eq!(
        events_of(&world, tx.id, "operator_compensate").await.len(),
        1
    );

    // Once committed, there is nothing to roll back.
    p.set_default("/b/prepare", Answer::ok(json!({})));
    let committed = client
        .create_transaction(&NewTransaction {
            participants: Some(vec![branch("a"), branch("b")]),
            timeout: Some("10m".into()),
        })
        .await
        .unwrap();
    let committed = client.wait_transaction(committed.id, WAIT).await.unwrap();
    assert_eq!(committed.state, "committed");
    assert_not_applicable(
        &act(&world, committed.id, "compensate", json!({})).await,
        "finished",
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_marks_a_failing_step_done_and_the_saga_completes_with_its_output() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register(
            "by-hand",
            &yaml_with_retry(
                &world,
                "by-hand",
                "{ max_attempts: 100, initial_backoff: 10ms, max_backoff: 50ms }",
                &[("label", true), ("ship", true)],
            ),
        )
        .await;
    world.participant.set_default("/label", Answer::status(503));
    let saga = client
        .start_saga("by-hand", json!({}), None, None)
        .await
        .unwrap();
    until("label is failing", || async {
        !world.participant.calls_to("/label").is_empty()
    })
    .await;
    // Bad requests first: no step, an unknown field, a step that does not exist.
    let missing = act(&world, saga.id, "skip", json!({ "note": "x" })).await;
    assert_eq!(missing.0, 422, "{missing:?}");
    let unknown = act(
        &world,
        saga.id,
        "skip",
        json!({ "step": "label", "colour": 1 }),
    )
    .await;
    assert_eq!(unknown.0, 422, "{unknown:?}");
    assert_not_applicable(
        &act(&world, saga.id, "skip", json!({ "step": "nope" })).await,
        "no step named 'nope'",
    );

    let output = json!({ "tracking": "HAND-42" });
    let answer = act(
        &world,
        saga.id,
        "skip",
        json!({ "step": "label", "output": output, "note": "label printed by hand" }),
    )
    .await;
    assert_eq!(answer.0, 200, "{answer:?}");
    let done = client.wait_saga(saga.id, WAIT).await.unwrap();
    assert_eq!(done.state, "completed");
    let ship = world.participant.calls_to("/ship");
    assert_eq!(ship.len(), 1);
    assert_eq!(ship[0].saga_call().results["label"], output);
    let skipped = events_of(&world, saga.id, "operator_skip").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].step.as_deref(), Some("label"));
    assert_eq!(skipped[0].detail.as_ref().unwrap()["output"], output);
    assert_not_applicable(
        &act(
            &world,
            saga.id,
            "skip",
            json!({ "step": "label", "output": output }),
        )
        .await,
        "finished",
    );
    world.stop().await;
}

/// A saga that gets stuck: y refuses, x's undo fails every time.
async fn stuck_saga(world: &World, name: &str) -> Uuid {
    world
        .register(
            name,
            &saga_yaml(world, name, "", &[("x", None, true), ("y", None, true)]),
        )
        .await;
    world.participant.set_default("/y", Answer::status(409));
    world
        .participant
        .set_default("/x/undo", Answer::status(500));
    let saga = world
        .coordinator
        .client
        .start_saga(name, json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(saga.state, "stuck");
    saga.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_closes_a_stuck_saga_with_a_note() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let id = stuck_saga(&world, "stuck-one").await;
    assert_not_applicable(&act(&world, id, "pause", json!({})).await, "stuck");
    let answer = act(&world, id, "resolve", json!({ "note": "refunded by hand" })).await;
    assert_eq!(answer.0, 200, "{answer:?}");
    assert_eq!(answer.1["state"], "resolved");
    let again = act(&world, id, "resolve", json!({ "note": "twice" })).await;
    assert_eq!(
        (again.0, again.1["state"].as_str()),
        (200, Some("resolved"))
    );
    let resolved = events_of(&world, id, "operator_resolve").await;
    assert_eq!(resolved.len(), 1, "the repeat adds no event");
    assert_eq!(resolved[0].actor, "api");
    assert_eq!(
        resolved[0].detail.as_ref().unwrap()["note"],
        "refunded by hand"
    );
    let saga = client.wait_saga(id, WAIT).await.unwrap();
    assert_eq!(
        saga.state, "resolved",
        "a resolved saga is settled for waiters"
    );
    assert_eq!(saga.reason.as_deref(), Some("refunded by hand"));
    let listed = client.admin_list(&[("state", "resolved")]).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_not_applicable(&act(&world, id, "retry", json!({})).await, "finished");
    // Unknown actions and bodies are refused before anything happens.
    assert_eq!(act(&world, id, "explode", json!({})).await.0, 404);
    assert_eq!(
        act(&world, id, "resolve", json!({ "colour": "red" }))
            .await
            .0,
        422
    );
    let long_note = "x".repeat(2001);
    assert_eq!(
        act(&world, id, "resolve", json!({ "note": long_note }))
            .await
            .0,
        422
    );
    let nobody = act(&world, Uuid::now_v7(), "resolve", json!({})).await;
    assert_eq!(
        (nobody.0, nobody.1["code"].as_str()),
        (404, Some("transaction_not_found"))
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_count_with_a_dry_run_and_then_apply() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let mut stuck = Vec::new();
    stuck.push(stuck_saga(&world, "stuck-bulk").await);
    for _ in 0..2 {
        let saga = client
            .start_saga("stuck-bulk", json!({}), None, Some(WAIT))
            .await
            .unwrap();
        stuck.push(saga.id);
    }
    world
        .register(
            "fine",
            &saga_yaml(&world, "fine", "", &[("ok", None, false)]),
        )
        .await;
    let fine = client
        .start_saga("fine", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(fine.state, "completed");

    let dry = client
        .admin_bulk(
            "resolve",
            &[("state", "stuck")],
            &BulkAction {
                dry_run: true,
                note: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((dry.matched, dry.applied, dry.skipped), (3, 0, 0));
    assert!(dry.dry_run);
    assert_eq!(
        client
            .admin_list(&[("state", "stuck")])
            .await
            .unwrap()
            .items
            .len(),
        3,
        "a dry run changes nothing"
    );
    // Only the sagas with a step x match; all three are resolved.
    let all = client
        .admin_bulk(
            "resolve",
            &[("kind", "saga"), ("step", "x")],
            &BulkAction {
                dry_run: false,
                note: Some("cleanup after the refund outage".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!((all.matched, all.applied, all.skipped), (3, 3, 0));
    let everything = client
        .admin_bulk("resolve", &[], &BulkAction::default())
        .await
        .unwrap();
    assert_eq!(
        (everything.matched, everything.applied, everything.skipped),
        (4, 0, 4)
    );
    for id in stuck {
        assert_eq!(client.get_saga(id).await.unwrap().state, "resolved");
    }
    let base = &world.coordinator.base_url;
    let http = reqwest::Client::new();
    let skip = http
        .post(format!("{base}/v1/admin/transactions/actions/skip"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(skip.status().as_u16(), 400, "skip is not available in bulk");
    let unknown = http
        .post(format!("{base}/v1/admin/transactions/actions/resolve"))
        .json(&json!({ "dry_run": true, "force": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 422);
    let bad_filter = http
        .post(format!(
            "{base}/v1/admin/transactions/actions/resolve?older_than=banana"
        ))
        .json(&json!({ "dry_run": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_filter.status().as_u16(), 400);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_two_phase_commit_is_retried_now_paused_resumed_and_resolved() {
    let world = World::start_with(|s| {
        s.twopc.max_attempts = 2;
        s.twopc.initial_backoff = Duration::from_millis(10);
        // Once stuck, phase two is retried every half hour: only "retry now" is quicker.
        s.twopc.max_backoff = Duration::from_secs(1800);
    })
    .await;
    let client = &world.coordinator.client;
    let p = &world.participant;
    p.set_default("/a/commit", Answer::status(503));
    let branch = |name: &str| NewBranch {
        name: name.into(),
        prepare_url: Some(p.url(&format!("/{name}/prepare"))),
        commit_url: p.url(&format!("/{name}/commit")),
        abort_url: p.url(&format!("/{name}/abort")),
        payload: None,
    };
    let new = || NewTransaction {
        participants: Some(vec![branch("a"), branch("b")]),
        timeout: Some("10m".into()),
    };
    let tx = client.create_transaction(&new()).await.unwrap();
    until("the transaction is stuck", || async {
        client.get_transaction(tx.id).await.unwrap().state == "stuck"
    })
    .await;
    // Pause and resume: still stuck, still owned by nobody in between.
    assert_eq!(
        act(
            &world,
            tx.id,
            "pause",
            json!({ "note": "a is being fixed" })
        )
        .await
        .0,
        200
    );
    assert!(
        client
            .admin_list(&[("state", "stuck")])
            .await
            .unwrap()
            .items[0]
            .paused
    );
    assert_not_applicable(&act(&world, tx.id, "retry", json!({})).await, "paused");
    assert_eq!(act(&world, tx.id, "resume", json!({})).await.0, 200);

    // Fixed: retry now sends the commit at once instead of in half an hour.
    p.set_default("/a/commit", Answer::ok(json!({})));
    let answer = act(&world, tx.id, "retry", json!({ "note": "a redeployed" })).await;
    assert_eq!(answer.0, 200, "{answer:?}");
    let done = client.wait_transaction(tx.id, WAIT).await.unwrap();
    assert_eq!(done.state, "committed");
    assert_not_applicable(&act(&world, tx.id, "resolve", json!({})).await, "finished");

    // Another one stuck for good is resolved by hand.
    p.set_default("/a/commit", Answer::status(503));
    let tx = client.create_transaction(&new()).await.unwrap();
    until("the second transaction is stuck", || async {
        client.get_transaction(tx.id).await.unwrap().state == "stuck"
    })
    .await;
    let answer = act(
        &world,
        tx.id,
        "resolve",
        json!({ "note": "committed in a's console" }),
    )
    .await;
    assert_eq!(
        (answer.0, answer.1["state"].as_str()),
        (200, Some("resolved"))
    );
    assert_eq!(
        client.get_transaction(tx.id).await.unwrap().state,
        "resolved"
    );
    world.stop().await;
}
