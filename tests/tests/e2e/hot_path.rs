//! The hot path stays index-backed and in place as `transactions` grows from
//! empty: a plan cached while the table held a few rows once had every group
//! commit scan the whole table (docs/PERFORMANCE.md), a plan cached after an
//! ANALYZE of the empty table could walk its whole primary key per batch, and
//! writes between a saga's start and its end are meant to be heap-only updates
//! that touch no index.

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
    // Statistics that say the table is empty while its pages are not, as an
    // ANALYZE after a purge leaves them: a plan made for no rows at all walks the
    // whole primary key once the table fills again.
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO transactions (id, kind, definition, version, state, input, progress,
                                       request_digest, lease_until, fence)
             SELECT gen_random_uuid(), 'saga', 'hot', 1, 'completed', '{}', '{}', 'x', now(), g
               FROM generate_series(1, 2000) g;
             DELETE FROM transactions;
             ANALYZE transactions;",
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
    // Each write probes the primary key for its own row (reading the entries of
    // its row's earlier versions too: about 11 per saga here); a plan that walks
    // the whole key per batch read 191,365 for these sagas.
    let key_reads: i64 = client
        .query_one(
            "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'transactions_pkey'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eprintln!("transactions_pkey: {key_reads} index entries read");
    assert!(
        key_reads < 40 * sagas as i64,
        "{key_reads} primary-key entries read for {sagas} sagas"
    );
    // The two writes before the last change no indexed column.
    assert!(
        hot_updates * 4 >= updates,
        "only {hot_updates} of {updates} updates were heap-only"
    );
    participant.stop().await;
    redis_server::clean_prefix(&prefix).await;
}
