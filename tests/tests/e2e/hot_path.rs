//! The hot path stays index-backed and in place as `transactions` grows from
//! empty: a plan cached while the table held a few rows once had every group
//! commit scan the whole table (docs/PERFORMANCE.md), and writes between a saga's
//! start and its end are meant to be heap-only updates that touch no index.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use settle_tests::coordinator::CoordinatorProcess;
use settle_tests::db::TestDatabase;
use settle_tests::redis_server;
use settle_tests::scripted::ScriptedParticipant;

use crate::support::SETTLE_BIN;

const CLIENTS: usize = 16;
const SAGAS_PER_CLIENT: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_writes_reach_rows_by_key_and_update_them_in_place_as_the_table_grows() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let participant = ScriptedParticipant::start().await;
    let prefix = settle_tests::unique("hot");
    let mut coordinator =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let steps: Vec<_> = ["reserve", "charge", "notify"]
        .iter()
        .map(|name| json!({ "name": name, "action": { "url": participant.url(&format!("/{name}")) } }))
        .collect();
    coordinator
        .client
        .register_definition(
            "hot",
            &json!({ "name": "hot", "steps": steps }).to_string(),
            "application/json",
        )
        .await
        .unwrap();
    // Concurrent clients, so that the writer's statements run many times on
    // each of its connections while the table grows from nothing.
    let states = join_all((0..CLIENTS).map(|c| {
        let client = coordinator.client.clone();
        async move {
            let mut states = Vec::new();
            for i in 0..SAGAS_PER_CLIENT {
                let saga = client
                    .start_saga(
                        "hot",
                        json!({ "client": c, "i": i }),
                        None,
                        Some(Duration::from_secs(20)),
                    )
                    .await
                    .unwrap();
                states.push(saga.state);
            }
            states
        }
    }))
    .await;
    let sagas = CLIENTS * SAGAS_PER_CLIENT;
    assert_eq!(
        states
            .iter()
            .flatten()
            .filter(|s| *s == "completed")
            .count(),
        sagas,
        "every saga completed"
    );
    // Backends report their statistics when they exit.
    coordinator.signal("TERM");
    assert!(coordinator.wait_exit(Duration::from_secs(30)).await);
    let client = db.client().await;
    let (seq_scans, updates, hot_updates) = settle_tests::eventually(
        "the coordinator's backends to report their statistics",
        Duration::from_secs(15),
        || {
            let client = &client;
            async move {
                let row = client
                    .query_one(
                        "SELECT seq_scan, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                          WHERE relname = 'transactions'",
                        &[],
                    )
                    .await
                    .unwrap();
                let stats: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                (stats.1 >= 2 * sagas as i64).then_some(stats)
            }
        },
    )
    .await;
    eprintln!(
        "transactions: {seq_scans} sequential scans, {hot_updates} of {updates} updates heap-only"
    );
    // Three outcome writes per saga went out in a few hundred batches: one scan
    // per batch is what a plan cached on the small table did.
    assert!(
        seq_scans < 60,
        "{seq_scans} sequential scans of transactions for {sagas} sagas ({updates} updates)"
    );
    // The two writes before the last change no indexed column.
    assert!(
        hot_updates * 4 >= updates,
        "only {hot_updates} of {updates} updates were heap-only"
    );
    participant.stop().await;
    redis_server::clean_prefix(&prefix).await;
}
