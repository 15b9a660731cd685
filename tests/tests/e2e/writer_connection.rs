//! The group-commit writer sends its batches on one connection per kind. When
//! Postgres closes those connections under load, or they stop answering without
//! being closed, the writer takes new ones: state writes are retried, a start
//! that failed is retried by its client with the same idempotency key, and every
//! saga ends completed, once, with every step called (a repeated call carries the
//! same idempotency key).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use settle_participant::client::CoordinatorClient;
use settle_tests::proxy::Proxy;

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
                retried += complete(&client, "cut", &format!("cut-{c}-{i}")).await;
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
    assert_each_completed_once(&world, sagas, &format!("{retried} starts retried")).await;
    world.stop().await;
}

/// `sagas` sagas in all, one per idempotency key, each completed, and each step
/// called for each of them (a repeated call carries the same idempotency key).
async fn assert_each_completed_once(world: &World, sagas: i64, context: &str) {
    assert_eq!(
        count(&world.db, "SELECT count(*) FROM transactions").await,
        sagas,
        "one saga per idempotency key ({context})"
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
}

/// Starts a saga with `key` and waits for its end, starting it again (same key)
/// while the coordinator answers that its database is unavailable. Returns how
/// many starts were refused that way.
async fn complete(client: &CoordinatorClient, definition: &str, key: &str) -> usize {
    let mut refused = 0;
    loop {
        match client
            .start_saga(definition, json!({ "key": key }), Some(key), Some(WAIT))
            .await
        {
            Ok(saga) => {
                assert_eq!(saga.state, "completed", "{key}");
                return refused;
            }
            Err(e) if e.code() == Some("database_unavailable") && refused < 50 => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{key}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_finish_once_when_every_database_connection_stops_answering() {
    // Every connection of the coordinator goes through the proxy, which stalls
    // them all at once: no answer, no reset, no close, as when a peer hangs or
    // the network drops packets. Only new connections get through.
    let proxy = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:5432".parse().unwrap(),
    )
    .await
    .expect("proxy");
    let through = proxy.addr().to_string();
    let timeout = Duration::from_secs(1);
    let world = World::start_with(|s| {
        s.database.url = s.database.url.replace("127.0.0.1:5432", &through);
        s.database.statement_timeout = timeout;
        s.database.connect_timeout = timeout;
    })
    .await;
    world
        .register(
            "stall",
            &saga_yaml(&world, "stall", "", &[("a", None, true), ("b", None, true)]),
        )
        .await;
    let client = &world.coordinator.client;
    // Every kind of connection is open and in use before the stall.
    for i in 0..10 {
        complete(client, "stall", &format!("before-{i}")).await;
    }
    let opened = proxy.connections();
    proxy.stall_open_connections();

    let started = Instant::now();
    let refused: usize = join_all((0..CLIENTS).map(|c| async move {
        let mut refused = 0;
        for i in 0..5 {
            refused += complete(client, "stall", &format!("after-{c}-{i}")).await;
        }
        refused
    }))
    .await
    .into_iter()
    .sum();
    let took = started.elapsed();

    assert!(
        proxy.connections() > opened,
        "the coordinator opened new connections past the stalled ones"
    );
    let metrics = crate::metrics::scrape(&world.coordinator.base_url).await;
    for writer in ["creations", "state_writes"] {
        let key = format!("settle_db_connections_given_up_total{{writer=\"{writer}\"}}");
        assert_eq!(
            metrics.get(&key).copied(),
            Some(1.0),
            "{writer}: its one stalled connection was given up, once"
        );
    }
    let sagas = 10 + (CLIENTS * 5) as i64;
    assert_each_completed_once(
        &world,
        sagas,
        &format!("{refused} starts refused and retried, {took:?}"),
    )
    .await;
    world.stop().await;
    proxy.stop().await;
}
