//! Money transfers between two XA account services (real `PREPARE TRANSACTION` in
//! a throwaway PostgreSQL cluster) while the coordinator is SIGKILLed at the three
//! crash points of two-phase commit. After each, money is conserved and no
//! prepared transaction is left behind in any participant database.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::json;
use settle_examples::bank::{self, Bank};
use settle_participant::api::{NewBranch, NewTransaction};
use settle_tests::coordinator::CoordinatorProcess;
use settle_tests::db::TestDatabase;
use settle_tests::pg_cluster::{PgCluster, PgSettings};
use settle_tests::redis_server;
use settle_tests::scripted::{Answer, ScriptedParticipant};
use uuid::Uuid;

use crate::support::SETTLE_BIN;

/// Two banks, each with its own database on a cluster that allows prepared transactions.
struct Banks {
    a_pool: Pool,
    b_pool: Pool,
    a: Bank,
    b: Bank,
    _cluster: PgCluster,
}

impl Banks {
    async fn open() -> Banks {
        let cluster = PgCluster::start(PgSettings::default()).await;
        let a_pool = settle_examples::connect(&cluster.url("bank_a"), 4)
            .await
            .unwrap();
        let b_pool = settle_examples::connect(&cluster.url("bank_b"), 4)
            .await
            .unwrap();
        bank::setup(&a_pool, &[("alice", 1000)]).await.unwrap();
        bank::setup(&b_pool, &[("bob", 1000)]).await.unwrap();
        let a = bank::start(a_pool.clone(), "127.0.0.1", 0, None)
            .await
            .unwrap();
        let b = bank::start(b_pool.clone(), "127.0.0.1", 0, None)
            .await
            .unwrap();
        Banks {
            a_pool,
            b_pool,
            a,
            b,
            _cluster: cluster,
        }
    }

    fn transfer(&self, amount: i64) -> Vec<NewBranch> {
        vec![
            self.a.branch("debit", "alice", -amount),
            self.b.branch("credit", "bob", amount),
        ]
    }

    async fn balances(&self) -> (i64, i64) {
        (
            bank::balance(&self.a_pool, "alice").await.unwrap(),
            bank::balance(&self.b_pool, "bob").await.unwrap(),
        )
    }

    async fn prepared(&self) -> usize {
        bank::prepared(&self.a_pool).await.unwrap().len()
            + bank::prepared(&self.b_pool).await.unwrap().len()
    }

    async fn close(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

fn audit(participant: &ScriptedParticipant) -> NewBranch {
    NewBranch {
        name: "audit".into(),
        prepare_url: Some(participant.url("/audit/prepare")),
        commit_url: participant.url("/audit/commit"),
        abort_url: participant.url("/audit/abort"),
        payload: None,
    }
}

async fn state_of(db: &TestDatabase, id: Uuid) -> String {
    db.client()
        .await
        .query_one("SELECT state FROM transactions WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

async fn start(process: &CoordinatorProcess, participants: Vec<NewBranch>) -> Uuid {
    process
        .client
        .create_transaction(&NewTransaction {
            participants: Some(participants),
            timeout: Some("60s".into()),
        })
        .await
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_some_prepares_before_the_decision_recovery_aborts() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let banks = Banks::open().await;
    let participant = ScriptedParticipant::start().await;
    participant.set_default(
        "/audit/prepare",
        Answer::ok(json!({})).after(Duration::from_secs(5)),
    );
    let prefix = settle_tests::unique("crash-a");
    let mut first =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let mut branches = banks.transfer(100);
    branches.push(audit(&participant));
    let id = start(&first, branches).await;
    settle_tests::eventually(
        "both banks to have prepared, the audit vote pending",
        Duration::from_secs(20),
        || async {
            (banks.prepared().await == 2 && !participant.calls_to("/audit/prepare").is_empty())
                .then_some(())
        },
    )
    .await;
    first.kill9();
    assert_eq!(state_of(&db, id).await, "preparing");

    let second =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let done = second
        .client
        .wait_transaction(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.state, "aborted");
    assert_eq!(done.decision.as_deref(), Some("abort"));
    assert_eq!(banks.balances().await, (1000, 1000), "nothing moved");
    assert_eq!(
        banks.prepared().await,
        0,
        "no prepared transaction left behind"
    );
    drop(second);
    participant.stop().await;
    banks.close().await;
    redis_server::clean_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_durable_decision_before_phase_two_recovery_commits_all() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let banks = Banks::open().await;
    let prefix = settle_tests::unique("crash-b");
    let mut first = CoordinatorProcess::spawn(
        SETTLE_BIN,
        &db.url,
        redis_server::SHARED,
        &prefix,
        &[("SETTLE__TESTING__PAUSE_AT", "commit-decided")],
    )
    .await;
    let id = start(&first, banks.transfer(100)).await;
    settle_tests::eventually(
        "the coordinator to stop right after deciding",
        Duration::from_secs(20),
        || async {
            first
                .log_text()
                .contains("paused after a durable commit decision")
                .then_some(())
        },
    )
    .await;
    first.kill9();
    assert_eq!(
        state_of(&db, id).await,
        "committing",
        "the decision was durable"
    );
    assert_eq!(banks.prepared().await, 2, "no participant heard commit yet");
    assert_eq!(banks.balances().await, (1000, 1000));

    let second =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let done = second
        .client
        .wait_transaction(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.state, "committed");
    assert_eq!(banks.balances().await, (900, 1100));
    assert_eq!(banks.prepared().await, 0);
    drop(second);
    banks.close().await;
    redis_server::clean_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_phase_two_recovery_finishes_it() {
    redis_server::require_shared().await;
    let db = TestDatabase::create().await;
    let banks = Banks::open().await;
    let participant = ScriptedParticipant::start().await;
    participant.set_default(
        "/audit/commit",
        Answer::ok(json!({})).after(Duration::from_secs(5)),
    );
    let prefix = settle_tests::unique("crash-c");
    let mut first =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let mut branches = banks.transfer(100);
    branches.push(audit(&participant));
    let id = start(&first, branches).await;
    settle_tests::eventually(
        "the banks to commit while the audit commit hangs",
        Duration::from_secs(20),
        || async {
            (banks.prepared().await == 0 && !participant.calls_to("/audit/commit").is_empty())
                .then_some(())
        },
    )
    .await;
    first.kill9();
    assert_eq!(state_of(&db, id).await, "committing");

    let second =
        CoordinatorProcess::spawn(SETTLE_BIN, &db.url, redis_server::SHARED, &prefix, &[]).await;
    let done = second
        .client
        .wait_transaction(id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.state, "committed");
    assert!(
        participant.calls_to("/audit/commit").len() >= 2,
        "phase two was sent again after the crash"
    );
    assert_eq!(
        banks.balances().await,
        (900, 1100),
        "money moved exactly once"
    );
    assert_eq!(banks.prepared().await, 0);
    drop(second);
    participant.stop().await;
    banks.close().await;
    redis_server::clean_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_would_overdraw_aborts_and_moves_nothing() {
    let world = crate::support::World::start().await;
    let banks = Banks::open().await;
    let client = &world.coordinator.client;
    let ok = client
        .create_transaction(&NewTransaction {
            participants: Some(banks.transfer(300)),
            timeout: Some("10s".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        client
            .wait_transaction(ok.id, Duration::from_secs(20))
            .await
            .unwrap()
            .state,
        "committed"
    );
    let too_much = client
        .create_transaction(&NewTransaction {
            participants: Some(banks.transfer(5000)),
            timeout: Some("10s".into()),
        })
        .await
        .unwrap();
    let done = client
        .wait_transaction(too_much.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.state, "aborted");
    assert!(done
        .reason
        .as_deref()
        .unwrap()
        .contains("branch debit voted no"));
    assert_eq!(banks.balances().await, (700, 1300));
    assert_eq!(banks.prepared().await, 0);
    banks.close().await;
    world.stop().await;
}
