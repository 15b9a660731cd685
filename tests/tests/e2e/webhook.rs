//! The stuck webhook: queued in the write that makes a saga stuck, POSTed signed
//! like participant calls, retried until the receiver answers 2xx, then gone from
//! the outbox, sent once by one of several instances; nothing is queued when no
//! webhook is configured. Also `/readyz` naming a pending migration and an
//! unreachable Postgres.

use std::time::Duration;

use serde_json::{json, Value};
use settle_coordinator::settings::Secret;
use settle_participant::signature::{self, Verifier};
use settle_tests::coordinator::{test_settings, TestCoordinator};
use settle_tests::pg_cluster::{PgCluster, PgSettings};
use settle_tests::redis_server;
use settle_tests::scripted::{Answer, ScriptedParticipant};

use crate::support::{count, saga_yaml, World, WAIT};

const SECRET: &str = "webhook-test-secret";

/// A saga of `a` then `b`, where b refuses and a's compensation refuses too: stuck.
async fn make_stuck(world: &World, name: &str) -> uuid::Uuid {
    let yaml = saga_yaml(world, name, "", &[("a", None, true), ("b", None, true)]);
    world.register(name, &yaml).await;
    world.participant.push("/b", [Answer::status(409)]);
    world.participant.push("/a/undo", [Answer::status(422)]);
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
async fn the_stuck_webhook_is_signed_and_retried_until_delivered() {
    let receiver = ScriptedParticipant::start().await;
    receiver.push("/hook", [Answer::status(500)]);
    let hook = receiver.url("/hook");
    let world = World::start_with(|s| {
        s.participants.signing_secret = Some(Secret::new(SECRET));
        s.webhook.url = Some(hook);
        s.webhook.secret = s.participants.signing_secret.clone();
        s.webhook.max_backoff = Duration::from_millis(200);
        s.webhook.poll_interval = Duration::from_millis(50);
    })
    .await;
    let id = make_stuck(&world, "hooked").await;

    let calls = settle_tests::eventually("a delivery after a 500", WAIT, || async {
        let calls = receiver.calls_to("/hook");
        (calls.len() >= 2).then_some(calls)
    })
    .await;
    settle_tests::eventually("the outbox to be empty once delivered", WAIT, || async {
        (count(&world.db, "SELECT count(*) FROM webhook_outbox").await == 0).then_some(())
    })
    .await;
    let calls_now = receiver.calls_to("/hook");
    assert_eq!(
        calls_now.len(),
        2,
        "one failed attempt, one delivery, no more"
    );
    for call in &calls {
        let verified = Verifier::new(vec![SECRET.as_bytes().to_vec()]).verify(
            call.signature.as_deref(),
            &call.raw_body,
            signature::now_unix(),
        );
        assert_eq!(verified, Ok(()), "signed like participant calls");
        assert_eq!(
            call.body, calls[0].body,
            "the retry sends the same notification"
        );
    }
    let body: &Value = &calls[1].body;
    assert_eq!(body["event"], "transaction.stuck");
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["kind"], "saga");
    assert_eq!(body["definition"], "hooked");
    assert_eq!(body["state"], "stuck");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    let at = body["at"].as_str().unwrap();
    let b = at.as_bytes();
    assert!(
        at.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && at.ends_with('Z'),
        "at is RFC 3339 UTC with milliseconds: {at}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        7,
        "exactly event, id, kind, definition, state, reason, at"
    );
    // The deliveries are on /metrics too.
    let samples = crate::metrics::scrape(&world.coordinator.base_url).await;
    assert_eq!(
        samples[r#"settle_webhook_deliveries_total{result="failed"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"settle_webhook_deliveries_total{result="delivered"}"#],
        1.0
    );
    assert_eq!(samples["settle_transactions_stuck"], 1.0);
    assert_eq!(samples["settle_webhook_outbox_pending"], 0.0);
    world.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_queued_for_a_webhook_when_none_is_configured() {
    let world = World::start().await;
    make_stuck(&world, "unhooked").await;
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM webhook_outbox").await,
        0
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_migration_that_is_not_applied() {
    let world = World::start().await;
    let base = world.coordinator.base_url.clone();
    world
        .db
        .client()
        .await
        .execute("DELETE FROM settle_migrations WHERE version = 5", &[])
        .await
        .unwrap();
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(
        body["checks"]["migrations"],
        "pending: migration(s) 5 not applied; run `settle migrate`"
    );
    assert_eq!(body["checks"]["redis"], "ok");
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_a_stuck_notification_once() {
    let receiver = ScriptedParticipant::start().await;
    let hook = receiver.url("/hook");
    let configure = |s: &mut settle_coordinator::settings::Settings| {
        s.webhook.url = Some(hook.clone());
        s.webhook.poll_interval = Duration::from_millis(20);
    };
    let world = World::start_with(configure).await;
    let mut second_settings = test_settings(&world.db.url, redis_server::SHARED);
    configure(&mut second_settings);
    let second = TestCoordinator::start(second_settings).await;
    make_stuck(&world, "hooked-twice").await;
    settle_tests::eventually("the notification to be delivered", WAIT, || async {
        (count(&world.db, "SELECT count(*) FROM webhook_outbox").await == 0
            && !receiver.calls_to("/hook").is_empty())
        .then_some(())
    })
    .await;
    // Delivered rows are deleted, so nothing is left that either instance could send again.
    assert_eq!(receiver.calls_to("/hook").len(), 1);
    assert_eq!(
        receiver.calls_to("/hook")[0].signature,
        None,
        "no secret, no signature"
    );
    second.stop().await;
    world.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_why_when_postgres_is_unreachable() {
    redis_server::require_shared().await;
    let mut cluster = PgCluster::start(PgSettings::default()).await;
    let mut settings = test_settings(&cluster.url("settle"), redis_server::SHARED);
    settings.database.connect_timeout = Duration::from_millis(500);
    let coordinator = TestCoordinator::start(settings).await;
    let readyz = format!("{}/readyz", coordinator.base_url);
    let ready = reqwest::get(&readyz).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    cluster.stop().await;
    let response = reqwest::get(&readyz).await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    let postgres = body["checks"]["postgres"].as_str().unwrap();
    assert!(postgres.starts_with("unreachable: "), "{postgres}");
    assert_eq!(
        body["checks"]["migrations"],
        "unknown: postgres is unreachable"
    );
    assert_eq!(body["checks"]["redis"], "ok");
    coordinator.stop().await;
}
