//! The operator CLI (`settle tx …`, `settle def …`) against a live coordinator:
//! the same admin API, tables for people and JSON with `--json`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use settle_coordinator::store::migrate;
use settle_tests::db::TestDatabase;
use settle_tests::scripted::Answer;

use crate::support::{count, saga_yaml, World, SETTLE_BIN, WAIT};

async fn settle(world: &World, args: &[&str]) -> String {
    let output = tokio::process::Command::new(SETTLE_BIN)
        .args(args)
        .args(["--url", &world.coordinator.base_url])
        .env("SETTLE__LOG__LEVEL", "warn")
        .output()
        .await
        .expect("running settle");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "settle {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_show_and_retry_from_the_command_line() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    let dir = settle_tests::artifacts_dir().join(settle_tests::unique("cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fragile.yaml");
    std::fs::write(
        &file,
        saga_yaml(
            &world,
            "fragile",
            "",
            &[("x", None, true), ("y", None, true)],
        ),
    )
    .unwrap();
    let registered = settle(&world, &["def", "register", file.to_str().unwrap()]).await;
    assert!(registered.contains("fragile v1 registered"), "{registered}");
    assert!(settle(&world, &["def", "list"]).await.contains("fragile"));

    world.participant.set_default("/y", Answer::status(409));
    world
        .participant
        .set_default("/x/undo", Answer::status(500));
    let stuck = client
        .start_saga("fragile", json!({}), None, Some(WAIT))
        .await
        .unwrap();
    assert_eq!(stuck.state, "stuck");

    let table = settle(&world, &["tx", "list", "--state", "stuck"]).await;
    assert!(
        table.contains(&stuck.id.to_string()) && table.contains("stuck=1"),
        "{table}"
    );
    let page: Value =
        serde_json::from_str(&settle(&world, &["tx", "list", "--state", "stuck", "--json"]).await)
            .unwrap();
    assert_eq!(page["items"][0]["id"], stuck.id.to_string());
    let shown = settle(&world, &["tx", "show", &stuck.id.to_string()]).await;
    assert!(
        shown.contains("timeline:") && shown.contains("compensation of x failed"),
        "{shown}"
    );

    world
        .participant
        .set_default("/x/undo", Answer::ok(json!({})));
    let retried = settle(
        &world,
        &[
            "tx",
            "retry",
            &stuck.id.to_string(),
            "--note",
            "fixed by hand",
        ],
    )
    .await;
    assert!(retried.contains("compensating"), "{retried}");
    assert_eq!(
        client.wait_saga(stuck.id, WAIT).await.unwrap().state,
        "compensated"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_filter_pause_resume_skip_resolve_and_bulk_from_the_command_line() {
    let world = World::start().await;
    let client = &world.coordinator.client;
    world
        .register(
            "manual",
            &crate::admin_actions::yaml_with_retry(
                &world,
                "manual",
                "{ max_attempts: 100, initial_backoff: 10ms, max_backoff: 50ms }",
                &[("label", false), ("ship", false)],
            ),
        )
        .await;
    world.participant.set_default("/label", Answer::status(503));
    let saga = client
        .start_saga("manual", json!({}), None, None)
        .await
        .unwrap();
    let id = saga.id.to_string();
    let prefix = &saga.id.simple().to_string()[..16];
    let found = settle(
        &world,
        &[
            "tx",
            "list",
            "--step",
            "label",
            "--id-prefix",
            prefix,
            "--state",
            "running",
        ],
    )
    .await;
    assert!(found.contains(&id), "{found}");
    let none = settle(&world, &["tx", "list", "--step", "nope", "--json"]).await;
    let none: Value = serde_json::from_str(&none).unwrap();
    assert_eq!(none["items"].as_array().unwrap().len(), 0);

    let paused = settle(
        &world,
        &["tx", "pause", &id, "--note", "label printer jammed"],
    )
    .await;
    assert!(paused.contains("pause applied"), "{paused}");
    let listed = settle(&world, &["tx", "list", "--id-prefix", prefix]).await;
    assert!(listed.contains("running (paused)"), "{listed}");
    let resumed = settle(&world, &["tx", "resume", &id]).await;
    assert!(resumed.contains("resume applied, now running"), "{resumed}");
    let skipped = settle(
        &world,
        &[
            "tx",
            "skip",
            &id,
            "--step",
            "label",
            "--output",
            r#"{"label":"by hand"}"#,
        ],
    )
    .await;
    assert!(skipped.contains("skip label applied"), "{skipped}");
    assert_eq!(
        client.wait_saga(saga.id, WAIT).await.unwrap().state,
        "completed"
    );

    // A 409 is an error with the reason, and a non-zero exit.
    let refused = tokio::process::Command::new(SETTLE_BIN)
        .args(["tx", "resolve", &id, "--url", &world.coordinator.base_url])
        .env("SETTLE__LOG__LEVEL", "warn")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the saga is completed: it is finished"),
        "{stderr}"
    );

    let dry = settle(
        &world,
        &[
            "tx",
            "bulk",
            "resolve",
            "--definition",
            "manual",
            "--dry-run",
            "--json",
        ],
    )
    .await;
    let dry: Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(
        (dry["matched"].as_u64(), dry["applied"].as_u64()),
        (Some(1), Some(0))
    );
    let applied = settle(&world, &["tx", "bulk", "resolve", "--definition", "manual"]).await;
    assert!(
        applied.contains("matched 1, applied 0, skipped 1"),
        "{applied}"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_out_another_instances_migrations_past_the_statement_timeout() {
    // Every other session ends a statement after `database.statement_timeout`;
    // migrations must not, or an instance starting while another migrates (or
    // a migration rewriting a large table) would fail.
    let db = TestDatabase::create().await;
    let other_instance = db.client().await;
    other_instance
        .execute("SELECT pg_advisory_lock($1)", &[&migrate::MIGRATION_LOCK])
        .await
        .unwrap();
    let migrating = tokio::process::Command::new(SETTLE_BIN)
        .arg("migrate")
        .env("SETTLE__DATABASE__URL", &db.url)
        .env("SETTLE__DATABASE__STATEMENT_TIMEOUT", "300ms")
        .env("SETTLE__LOG__LEVEL", "warn")
        .kill_on_drop(true)
        .output();
    let release = async {
        let waiting_since = Instant::now();
        while count(
            &db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await
            == 0
        {
            assert!(
                waiting_since.elapsed() < Duration::from_secs(60),
                "settle migrate never waited for the lock"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Well past the statement timeout, then the other instance is done.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        other_instance
            .execute("SELECT pg_advisory_unlock($1)", &[&migrate::MIGRATION_LOCK])
            .await
            .unwrap();
    };
    let (output, ()) = tokio::join!(migrating, release);
    let output = output.expect("running settle migrate");
    assert!(
        output.status.success(),
        "settle migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let applied = count(&db, "SELECT count(*) FROM settle_migrations").await;
    assert_eq!(applied, migrate::versions().count() as i64);
}
