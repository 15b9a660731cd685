//! Group creation (`store::create`): many starts share one statement, yet each
//! keeps its own answer: created, the earlier transaction its idempotency key
//! names (even one created in the same batch), or refused as made under a
//! definition version that is no longer the newest, with nothing written.

use serde_json::json;
use serde_json::value::{to_raw_value, RawValue};
use settle_coordinator::store::create::{self, Inserted, NewRow};
use settle_coordinator::store::transactions::{self, TransactionRow};
use uuid::Uuid;

use crate::support::{count, saga_yaml, World, WAIT};

fn raw(value: serde_json::Value) -> Box<RawValue> {
    to_raw_value(&value).unwrap()
}

fn saga_row(version: i32, key: Option<&str>, digest: &str) -> NewRow {
    NewRow {
        id: Uuid::now_v7(),
        kind: "saga",
        definition: Some("grouped".into()),
        version: Some(version),
        state: "running",
        input: raw(json!({ "n": 1 })),
        progress: raw(json!({ "steps": {} })),
        idempotency_key: key.map(str::to_owned),
        request_digest: digest.into(),
        deadline_ms: 4_102_444_800_000,
        next_ms: Some(4_102_444_800_000),
        lease_ms: 60_000,
        actor: "group-test".into(),
        traceparent: None,
        tracestate: None,
    }
}

/// Every column alike; the progress as JSON (Postgres keeps `jsonb` in its own
/// spelling, which parses to the same document).
fn assert_same_row(built: &TransactionRow, read: &TransactionRow) {
    let progress = |r: &TransactionRow| -> serde_json::Value {
        serde_json::from_str(r.progress.get()).unwrap()
    };
    assert_eq!(progress(built), progress(read), "progress of {}", read.id);
    let columns = |r: &TransactionRow| {
        format!(
            "{} {} {:?} {:?} {} {} {:?} {} {:?} {:?} {:?} {:?} {} {:?} {:?}",
            r.id,
            r.kind,
            r.definition,
            r.version,
            r.state,
            r.input,
            r.reason,
            r.cancel_requested,
            r.deadline,
            r.next_attempt_at,
            r.created_at,
            r.updated_at,
            r.fence,
            r.traceparent,
            r.tracestate
        )
    };
    assert_eq!(columns(built), columns(read));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_answers_each_creation_on_its_own() {
    let world = World::start().await;
    let steps = [("a", None, true)];
    world
        .register("grouped", &saga_yaml(&world, "grouped", "", &steps))
        .await;
    let v2 = world
        .register(
            "grouped",
            &saga_yaml(&world, "grouped", "timeout: 90s\n", &steps),
        )
        .await;
    assert_eq!(v2, 2);
    let pool = world.db.pool(2);

    let plain = saga_row(2, None, "d-plain");
    let keyed = saga_row(2, Some("k-1"), "d-keyed");
    let same_key_same_body = saga_row(2, Some("k-1"), "d-keyed");
    let same_key_other_body = saga_row(2, Some("k-1"), "d-other");
    let stale = saga_row(1, Some("k-stale"), "d-stale");
    let mut twopc = saga_row(0, None, "d-twopc");
    twopc.kind = "twopc";
    twopc.definition = None;
    twopc.version = None;
    let batch = [
        &plain,
        &keyed,
        &same_key_same_body,
        &same_key_other_body,
        &stale,
        &twopc,
    ];
    let client = pool.get().await.unwrap();
    let statement = client.prepare(create::CREATE_BATCH).await.unwrap();
    let answers = create::create(&client, &statement, "group-owner", &batch)
        .await
        .unwrap();

    assert!(matches!(answers[0], Inserted::Created { .. }));
    assert!(matches!(answers[1], Inserted::Created { .. }));
    assert_eq!(
        answers[2],
        Inserted::Existing {
            id: keyed.id,
            same_request: true
        },
        "a key first used in the same batch names that batch's transaction"
    );
    assert_eq!(
        answers[3],
        Inserted::Existing {
            id: keyed.id,
            same_request: false
        }
    );
    assert_eq!(answers[4], Inserted::StaleVersion);
    assert!(matches!(answers[5], Inserted::Created { .. }));

    let fences: Vec<i64> = answers
        .iter()
        .filter_map(|a| match a {
            Inserted::Created { fence, .. } => Some(*fence),
            _ => None,
        })
        .collect();
    let mut distinct = fences.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "each creation has its own fence");

    // A start that does not wait answers with the row as its creation stored
    // it, built without a read: it must be the row a read returns.
    for (new, answer) in [
        (&plain, &answers[0]),
        (&keyed, &answers[1]),
        (&twopc, &answers[5]),
    ] {
        let Inserted::Created { fence, created_at } = answer else {
            unreachable!("checked above")
        };
        let built = new.as_stored(*fence, *created_at).unwrap();
        let read = transactions::get(&pool, new.id).await.unwrap().unwrap();
        assert_same_row(&built, &read);
    }

    assert_eq!(
        count(&world.db, "SELECT count(*) FROM transactions").await,
        3
    );
    assert_eq!(
        count(
            &world.db,
            "SELECT count(*) FROM events WHERE kind = 'started' AND actor = 'group-test'"
        )
        .await,
        3,
        "one started event per created transaction, none for the others"
    );
    assert_eq!(
        count(
            &world.db,
            "SELECT count(*) FROM transactions WHERE owner = 'group-owner' AND lease_until > now()"
        )
        .await,
        3,
        "created owned by the creator, under a lease"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_uses_a_version_registered_through_another_instance() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register(
            "shared",
            &saga_yaml(&world, "shared", "", &[("a", None, true)]),
        )
        .await;
    let first = client
        .start_saga("shared", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(first.version, 1);

    // This instance has version 1 in hand; another one registers version 2.
    let mut settings =
        settle_tests::coordinator::test_settings(&world.db.url, settle_tests::redis_server::SHARED);
    settings.redis.key_prefix = world.coordinator.settings.redis.key_prefix.clone();
    let other = settle_tests::coordinator::TestCoordinator::start(settings).await;
    let v2 = saga_yaml(
        &world,
        "shared",
        "",
        &[("a", None, true), ("b", None, true)],
    );
    let (registered, created) = other
        .client
        .register_definition_yaml("shared", &v2)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(registered.version, 2);

    let second = client
        .start_saga("shared", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(second.version, 2, "the start learned the newer version");
    assert_eq!(second.state, "completed");
    assert_eq!(second.steps.len(), 2);
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM transactions").await,
        2,
        "the refused creation left nothing behind"
    );
    assert_eq!(
        count(
            &world.db,
            "SELECT count(*) FROM events WHERE kind = 'started'"
        )
        .await,
        2
    );
    other.stop().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_with_one_key_make_one_saga() {
    let world = World::start().await;
    world
        .register("once", &saga_yaml(&world, "once", "", &[("a", None, true)]))
        .await;
    let client = &world.coordinator.client;
    let starts = (0..24)
        .map(|_| client.start_saga_created("once", json!({ "n": 7 }), Some("order-1"), Some(WAIT)));
    let answers: Vec<_> = futures_util::future::join_all(starts).await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|(_, created)| *created).count(), 1);
    assert!(answers.iter().all(|(saga, _)| saga.id == answers[0].0.id));
    assert!(answers.iter().all(|(saga, _)| saga.state == "completed"));
    assert_eq!(
        world.participant.calls_to("/a").len(),
        1,
        "the step ran once"
    );
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM transactions").await,
        1
    );
    world.stop().await;
}
