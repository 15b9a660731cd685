//! Definition registration: versions, no-op re-registration, validation errors
//! that name the field, and running sagas keeping the version they started with.

use std::time::Duration;

use serde_json::{json, Value};
use settle_tests::scripted::Answer;

use crate::support::{saga_yaml, World, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_versioned_and_running_sagas_keep_theirs() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let v1 = saga_yaml(
        &world,
        "versioned",
        "",
        &[("a", None, true), ("b", None, true)],
    );
    let (def, created) = client
        .register_definition_yaml("versioned", &v1)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(def.version, 1);
    let (same, created) = client
        .register_definition_yaml("versioned", &v1)
        .await
        .unwrap();
    assert!(!created, "the same content is a no-op");
    assert_eq!(same.version, 1);
    // The same content as JSON is still the same definition.
    let (same_json, created) = client
        .register_definition(
            "versioned",
            &serde_json::to_string(&def.spec).unwrap(),
            "application/json",
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(same_json.digest, def.digest);

    world.participant.push(
        "/b",
        [Answer::ok(json!({})).after(Duration::from_millis(500))],
    );
    let running = client
        .start_saga("versioned", json!({}), None, None)
        .await
        .unwrap();
    let v2 = saga_yaml(
        &world,
        "versioned",
        "timeout: 90s\n",
        &[("a", None, true), ("b", None, true), ("c", None, false)],
    );
    let (def2, created) = client
        .register_definition_yaml("versioned", &v2)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(def2.version, 2);
    let finished = client.wait_saga(running.id, WAIT).await.unwrap();
    assert_eq!(finished.state, "completed");
    assert_eq!(finished.version, 1);
    assert_eq!(finished.steps.len(), 2, "the running saga kept version 1");
    let newer = client
        .start_saga("versioned", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(newer.version, 2);
    assert_eq!(newer.steps.len(), 3);

    let latest = client.get_definition("versioned").await.unwrap();
    assert_eq!(latest.version, 2);
    let listed = client.list_definitions().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].latest_version, 2);
    let http = reqwest::Client::new();
    let old: Value = http
        .get(format!(
            "{}/v1/saga-definitions/versioned/versions/1",
            world.coordinator.base_url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(old["version"], 1);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_definitions_get_a_422_naming_the_field_and_nothing_is_stored() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let cases = [
        ("name: bad\nsteps:\n  - { name: a, action: { url: 'http://127.0.0.1:1/a' }, colour: red }\n", "steps[0].colour"),
        ("name: bad\nsteps:\n  - { name: a, action: { url: 'http://127.0.0.1:1/a' } }\n  - { name: a, action: { url: 'http://127.0.0.1:1/b' } }\n", "steps[1].name"),
        ("name: bad\nsteps:\n  - { name: a, depends_on: [b], action: { url: 'http://127.0.0.1:1/a' } }\n  - { name: b, depends_on: [a], action: { url: 'http://127.0.0.1:1/b' } }\n", "steps[0].depends_on"),
        ("name: bad\nsteps:\n  - { name: a, depends_on: [ghost], action: { url: 'http://127.0.0.1:1/a' } }\n", "steps[0].depends_on[0]"),
        ("name: bad\nsteps:\n  - { name: a, action: { url: 'file:///etc/passwd' } }\n", "steps[0].action.url"),
        ("name: bad\nsteps:\n  - { name: a, action: { url: 'http://127.0.0.1:1/a', timeout: 0ms } }\n", "steps[0].action.timeout"),
        ("name: bad\nretry: { max_attempts: 0 }\nsteps:\n  - { name: a, action: { url: 'http://127.0.0.1:1/a' } }\n", "retry.max_attempts"),
        ("name: bad\ntimeout: 1000d\nsteps:\n  - { name: a, action: { url: 'http://127.0.0.1:1/a' } }\n", "timeout"),
        ("name: other\nsteps:\n  - { name: a, action: { url: 'http://127.0.0.1:1/a' } }\n", "name"),
        ("name: bad\nsteps: [ {\n", ""),
    ];
    for (yaml, field) in cases {
        let err = client
            .register_definition_yaml("bad", yaml)
            .await
            .expect_err(yaml);
        match &err {
            settle_participant::client::Error::Api { status, problem } => {
                assert_eq!(*status, 422, "{yaml}");
                assert_eq!(problem.code, "invalid_definition", "{yaml}");
                assert_eq!(
                    problem.field.as_deref().unwrap_or(""),
                    field,
                    "{yaml}: {}",
                    problem.detail
                );
            }
            other => panic!("{yaml}: expected a problem, got {other}"),
        }
    }
    let stored: i64 =
        crate::support::count(&world.db, "SELECT count(*) FROM saga_definitions").await;
    assert_eq!(stored, 0);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_in_the_sagas_directory_are_loaded_at_start_up() {
    use settle_tests::coordinator::{test_settings, TestCoordinator};
    let db = settle_tests::db::TestDatabase::create().await;
    let mut settings = test_settings(&db.url, settle_tests::redis_server::SHARED);
    settings.coordinator.sagas_dir =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sagas"));
    let coordinator = TestCoordinator::start(settings.clone()).await;
    let def = coordinator
        .client
        .get_definition("order-checkout")
        .await
        .unwrap();
    assert_eq!(def.version, 1);
    coordinator.stop().await;
    // Starting again with the same files registers nothing new.
    let again = TestCoordinator::start(settings).await;
    assert_eq!(
        again
            .client
            .get_definition("order-checkout")
            .await
            .unwrap()
            .version,
        1
    );
    again.stop().await;
}
