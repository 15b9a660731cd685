//! The group-commit writer sends its batches on one connection per kind. When
//! Postgres closes those connections under load, the writer takes new ones:
//! state writes are retried, a start that failed is retried by its client with
//! the same idempotency key, and every saga ends completed, once, with every step
//! called (a repeated call carries the same idempotency key).

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::support::{count, saga_yaml, World, WAIT};

const CLIENTS: usize = 8;
const SAGAS_PER_CLIENT: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_finish_once_when_postgres_closes_the_writer_connections() {
    let world = World::start().await;
    world
        .register(
            "cut",
            &saga_yaml(&world, "cut", "", &[("a", None, true), ("b", None, true)]),
        )
        .await;
    let clients = join_all((0..CLIENTS).map(|c| {
        let client = world.coordinator.client.clone();
        async move {
            let mut retried = 0;
            for i in 0..SAGAS_PER_CLIENT {
                let key = format!("cut-{c}-{i}");
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match client
                        .start_saga("cut", json!({ "c": c, "i": i }), Some(&key), Some(WAIT))
                        .await
                    {
                        Ok(saga) => {
                            assert_eq!(saga.state, "completed", "{key}");
                            break;
                        }
                        Err(e) if e.code() == Some("database_unavailable") && attempts < 50 => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("{key}: {e}"),
                    }
                }
                // Spread the sagas over the cuts below.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            retried
        }
    }));
    let cuts = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let killed = count(
                &world.db,
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                      WHERE datname = '{}' AND pid <> pg_backend_pid()",
                    world.db.name
                ),
            )
            .await;
            assert!(killed > 0, "the coordinator's connections were cut");
        }
    };
    let (retried, ()) = tokio::join!(clients, cuts);
    let retried: usize = retried.into_iter().sum();

    let sagas = (CLIENTS * SAGAS_PER_CLIENT) as i64;
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM transactions").await,
        sagas,
        "one saga per idempotency key ({retried} starts retried)"
    );
    assert_eq!(
        count(
            &world.db,
            "SELECT count(*) FROM transactions WHERE state = 'completed'"
        )
        .await,
        sagas
    );
    for step in ["/a", "/b"] {
        let mut keys: Vec<String> = world
            .participant
            .calls_to(step)
            .into_iter()
            .filter_map(|c| c.idempotency_key)
            .collect();
        let calls = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len() as i64, sagas, "every saga called {step}");
        assert!(
            calls as i64 >= sagas,
            "{step}: {calls} calls for {sagas} sagas"
        );
    }
    world.stop().await;
}
