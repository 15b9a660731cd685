//! Two-phase commit and TCC against scripted participants: votes, timeouts,
//! unreachable participants, phase-two retries, idempotent commit/abort, and the
//! interactive (TCC) flow end to end.

use std::time::Duration;

use serde_json::{json, Value};
use settle_participant::api::{NewBranch, NewTransaction, Transaction};
use settle_participant::client::Decision;
use settle_tests::scripted::{Answer, ScriptedParticipant};
use uuid::Uuid;

use crate::support::{World, WAIT};

fn branch(world: &World, name: &str, prepare: bool) -> NewBranch {
    NewBranch {
        name: name.into(),
        prepare_url: prepare.then(|| world.participant.url(&format!("/{name}/prepare"))),
        commit_url: world.participant.url(&format!("/{name}/commit")),
        abort_url: world.participant.url(&format!("/{name}/abort")),
        payload: Some(json!({ "branch": name })),
    }
}

fn one_shot(branches: Vec<NewBranch>, timeout: &str) -> NewTransaction {
    NewTransaction {
        participants: Some(branches),
        timeout: Some(timeout.into()),
    }
}

async fn finished(world: &World, id: Uuid) -> Transaction {
    world
        .coordinator
        .client
        .wait_transaction(id, WAIT)
        .await
        .unwrap()
}

fn paths(world: &World) -> Vec<String> {
    world
        .participant
        .calls()
        .into_iter()
        .map(|c| c.path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commits_when_every_participant_votes_yes() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let tx = client
        .create_transaction(&one_shot(
            vec![branch(&world, "a", true), branch(&world, "b", true)],
            "10s",
        ))
        .await
        .unwrap();
    assert_eq!(tx.mode, "one_shot");
    let tx = finished(&world, tx.id).await;
    assert_eq!(tx.state, "committed");
    assert_eq!(tx.decision.as_deref(), Some("commit"));
    let mut prepares: Vec<String> = paths(&world)
        .into_iter()
        .filter(|p| p.ends_with("prepare"))
        .collect();
    prepares.sort();
    assert_eq!(prepares, ["/a/prepare", "/b/prepare"]);
    let commit = &world.participant.calls_to("/a/commit")[0];
    let call = commit.branch_call();
    assert_eq!(call.payload, json!({ "branch": "a" }));
    assert_eq!(
        commit.idempotency_key.as_deref(),
        Some(format!("{}:a:commit", tx.id).as_str())
    );
    // Every commit came after every prepare: the decision needed all the votes.
    let last_prepare = world
        .participant
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("prepare"))
        .map(|c| c.finished.unwrap())
        .max()
        .unwrap();
    assert!(world
        .participant
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("commit"))
        .all(|c| c.started >= last_prepare));
    assert!(world.participant.calls_to("/a/abort").is_empty());
    assert_eq!(
        client.decision(tx.id).await.unwrap(),
        Some(Decision::Commit)
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_vote_aborts_and_nobody_hears_commit() {
    let world = World::start().await;
    world.participant.push("/b/prepare", [Answer::status(409)]);
    let tx = world
        .coordinator
        .client
        .create_transaction(&one_shot(
            vec![branch(&world, "a", true), branch(&world, "b", true)],
            "10s",
        ))
        .await
        .unwrap();
    let tx = finished(&world, tx.id).await;
    assert_eq!(tx.state, "aborted");
    assert!(tx.reason.as_deref().unwrap().contains("branch b voted no"));
    assert_eq!(world.participant.calls_to("/a/abort").len(), 1);
    assert!(
        world.participant.calls_to("/b/abort").is_empty(),
        "a no vote prepared nothing"
    );
    assert!(paths(&world).iter().all(|p| !p.ends_with("commit")));
    assert_eq!(tx.branch("b").unwrap().state, "refused");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_aborts_an_undecided_transaction() {
    let world = World::start().await;
    world
        .participant
        .set_default("/b/prepare", Answer::status(202));
    let tx = world
        .coordinator
        .client
        .create_transaction(&one_shot(
            vec![branch(&world, "a", true), branch(&world, "b", true)],
            "1s",
        ))
        .await
        .unwrap();
    let tx = finished(&world, tx.id).await;
    assert_eq!(tx.state, "aborted");
    assert_eq!(tx.reason.as_deref(), Some("timeout"));
    assert_eq!(world.participant.calls_to("/a/abort").len(), 1);
    assert_eq!(world.participant.calls_to("/b/abort").len(), 1);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_participant_aborts_the_transaction() {
    let world = World::start().await;
    let nowhere = format!("http://127.0.0.1:{}", settle_tests::free_port());
    let unreachable = NewBranch {
        name: "gone".into(),
        prepare_url: Some(format!("{nowhere}/prepare")),
        commit_url: format!("{nowhere}/commit"),
        abort_url: world.participant.url("/gone/abort"),
        payload: None,
    };
    let tx = world
        .coordinator
        .client
        .create_transaction(&one_shot(
            vec![branch(&world, "a", true), unreachable],
            "2s",
        ))
        .await
        .unwrap();
    let tx = finished(&world, tx.id).await;
    assert_eq!(tx.state, "aborted");
    let refused_connections = crate::support::count(
        &world.db,
        &format!(
            "SELECT count(*) FROM events WHERE transaction_id = '{}' AND step = 'gone' AND phase = 'prepare' AND error = 'connection failed'",
            tx.id
        ),
    )
    .await;
    assert!(
        refused_connections >= 1,
        "the prepare attempts recorded why they failed"
    );
    assert_eq!(world.participant.calls_to("/a/abort").len(), 1);
    assert!(world.participant.calls_to("/a/commit").is_empty());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_two_is_retried_until_the_participant_comes_back() {
    let world = World::start().await;
    let port = settle_tests::free_port();
    let later = NewBranch {
        name: "later".into(),
        prepare_url: Some(world.participant.url("/later/prepare")),
        commit_url: format!("http://127.0.0.1:{port}/later/commit"),
        abort_url: format!("http://127.0.0.1:{port}/later/abort"),
        payload: None,
    };
    let tx = world
        .coordinator
        .client
        .create_transaction(&one_shot(vec![branch(&world, "a", true), later], "10s"))
        .await
        .unwrap();
    let failed_commits = || async {
        crate::support::count(
            &world.db,
            &format!("SELECT count(*) FROM events WHERE transaction_id = '{}' AND step = 'later' AND phase = 'commit' AND error IS NOT NULL", tx.id),
        )
        .await
    };
    settle_tests::eventually("commit to fail a few times", WAIT, || async {
        (failed_commits().await >= 2).then_some(())
    })
    .await;
    let seen = world
        .coordinator
        .client
        .get_transaction(tx.id)
        .await
        .unwrap();
    assert_eq!(
        seen.state, "committing",
        "the decision stands while the participant is away"
    );
    let back = ScriptedParticipant::start_on(port).await;
    let tx = finished(&world, tx.id).await;
    assert_eq!(tx.state, "committed");
    assert_eq!(back.calls_to("/later/commit").len(), 1);
    assert!(tx.branch("later").unwrap().phase_two_attempts >= 3);
    back.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_acknowledges_flags_the_transaction_stuck_and_retries_go_on() {
    let world = World::start_with(|s| {
        s.twopc.max_attempts = 2;
        s.twopc.initial_backoff = Duration::from_millis(10);
        s.twopc.max_backoff = Duration::from_millis(200);
    })
    .await;
    let port = settle_tests::free_port();
    let away = NewBranch {
        name: "away".into(),
        prepare_url: Some(world.participant.url("/away/prepare")),
        commit_url: format!("http://127.0.0.1:{port}/away/commit"),
        abort_url: format!("http://127.0.0.1:{port}/away/abort"),
        payload: None,
    };
    let client = &world.coordinator.client;
    let tx = client
        .create_transaction(&one_shot(vec![away], "10s"))
        .await
        .unwrap();
    let stuck = settle_tests::eventually("the transaction to be flagged stuck", WAIT, || async {
        let seen = client.get_transaction(tx.id).await.ok()?;
        (seen.state == "stuck").then_some(seen)
    })
    .await;
    assert_eq!(
        stuck.decision.as_deref(),
        Some("commit"),
        "stuck keeps its decision"
    );
    assert!(stuck
        .reason
        .as_deref()
        .unwrap()
        .contains("has not acknowledged commit"));
    let stuck_events = crate::support::count(
        &world.db,
        &format!(
            "SELECT count(*) FROM events WHERE transaction_id = '{}' AND kind = 'stuck'",
            tx.id
        ),
    )
    .await;
    assert_eq!(stuck_events, 1);
    let back = ScriptedParticipant::start_on(port).await;
    let done = finished(&world, tx.id).await;
    assert_eq!(
        done.state, "committed",
        "retries went on after the stuck flag"
    );
    assert_eq!(back.calls_to("/away/commit").len(), 1);
    back.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_tcc_commits_every_registered_branch() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let tx = client
        .create_transaction(&NewTransaction {
            participants: None,
            timeout: Some("30s".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        (tx.mode.as_str(), tx.state.as_str()),
        ("interactive", "active")
    );
    // Each service does its Try, then registers its Confirm / Cancel.
    client
        .register_branch(tx.id, &branch(&world, "stock", false))
        .await
        .unwrap();
    let seen = client
        .register_branch(tx.id, &branch(&world, "wallet", false))
        .await
        .unwrap();
    assert_eq!(seen.branches.len(), 2);
    assert_eq!(seen.branch("wallet").unwrap().state, "registered");
    // Registering the same branch again is harmless.
    client
        .register_branch(tx.id, &branch(&world, "wallet", false))
        .await
        .unwrap();
    let committing = client.commit_transaction(tx.id).await.unwrap();
    assert_eq!(committing.decision.as_deref(), Some("commit"));
    let done = finished(&world, tx.id).await;
    assert_eq!(done.state, "committed");
    assert_eq!(world.participant.calls_to("/stock/commit").len(), 1);
    assert_eq!(world.participant.calls_to("/wallet/commit").len(), 1);
    assert!(
        world.participant.calls_to("/stock/prepare").is_empty(),
        "TCC branches were tried already"
    );
    let late = client
        .register_branch(tx.id, &branch(&world, "late", false))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some("transaction_not_active"));
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_abort_are_idempotent_and_never_contradict_the_decision() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let interactive = || NewTransaction {
        participants: None,
        timeout: Some("30s".into()),
    };

    let committed = client.create_transaction(&interactive()).await.unwrap();
    client
        .register_branch(committed.id, &branch(&world, "c", false))
        .await
        .unwrap();
    client.commit_transaction(committed.id).await.unwrap();
    client.commit_transaction(committed.id).await.unwrap();
    assert_eq!(finished(&world, committed.id).await.state, "committed");
    client.commit_transaction(committed.id).await.unwrap();
    let err = client.abort_transaction(committed.id).await.unwrap_err();
    assert_eq!(err.code(), Some("transaction_committed"));
    assert_eq!(world.participant.calls_to("/c/commit").len(), 1);

    let aborted = client.create_transaction(&interactive()).await.unwrap();
    client
        .register_branch(aborted.id, &branch(&world, "d", false))
        .await
        .unwrap();
    client.abort_transaction(aborted.id).await.unwrap();
    client.abort_transaction(aborted.id).await.unwrap();
    assert_eq!(finished(&world, aborted.id).await.state, "aborted");
    let err = client.commit_transaction(aborted.id).await.unwrap_err();
    assert_eq!(err.code(), Some("transaction_aborted"));
    assert_eq!(world.participant.calls_to("/d/abort").len(), 1);
    assert_eq!(
        client.decision(aborted.id).await.unwrap(),
        Some(Decision::Abort)
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_transaction_past_its_timeout_aborts_its_branches() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let tx = client
        .create_transaction(&NewTransaction {
            participants: None,
            timeout: Some("500ms".into()),
        })
        .await
        .unwrap();
    client
        .register_branch(tx.id, &branch(&world, "t", false))
        .await
        .unwrap();
    assert_eq!(
        client.decision(tx.id).await.unwrap(),
        None,
        "undecided while active"
    );
    let done = finished(&world, tx.id).await;
    assert_eq!(done.state, "aborted");
    assert_eq!(done.reason.as_deref(), Some("timeout"));
    assert_eq!(world.participant.calls_to("/t/abort").len(), 1);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transaction_requests_name_the_field() {
    let world = World::start().await;
    let base = &world.coordinator.base_url;
    let http = reqwest::Client::new();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({ "participants": [] }),
            422,
            "invalid_transaction",
            "participants",
        ),
        (
            json!({ "participants": [{ "name": "a", "commit_url": "http://h/c", "abort_url": "http://h/a" }] }),
            422,
            "invalid_transaction",
            "participants[0].prepare_url",
        ),
        (
            json!({ "participants": [{ "name": "a", "prepare_url": "ftp://h/p", "commit_url": "http://h/c", "abort_url": "http://h/a" }] }),
            422,
            "invalid_transaction",
            "participants[0].prepare_url",
        ),
        (
            json!({ "timeout": "forever" }),
            422,
            "invalid_transaction",
            "timeout",
        ),
        (
            json!({ "timeout": "1s", "colour": "red" }),
            422,
            "invalid_body",
            "",
        ),
    ];
    for (body, status, code, field) in cases {
        let response = http
            .post(format!("{base}/v1/transactions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{body}");
        assert_eq!(problem["field"].as_str().unwrap_or(""), field, "{body}");
    }
    let missing = http
        .post(format!(
            "{base}/v1/transactions/0190b6c2-5a1e-7000-8000-000000000001/commit"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        crate::support::count(&world.db, "SELECT count(*) FROM transactions").await,
        0
    );
    world.stop().await;
}
