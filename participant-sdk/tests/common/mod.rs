//! Shared by the SDK's database tests: a fresh database per test on the real
//! PostgreSQL, with a barrier and a `ledger` table, dropped afterwards even when
//! the test panics. A missing Postgres fails the test.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use settle_participant::barrier::Barrier;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// The server's URL without a database name.
pub fn server() -> String {
    std::env::var("SETTLE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub async fn connect(dbname: &str) -> Client {
    let params = format!("{}/{dbname}", server());
    let (client, connection) = tokio_postgres::connect(&params, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must be running for these tests ({params}): {e}"));
    tokio::spawn(connection);
    client
}

/// Runs `test` against a fresh database holding a barrier in `schema` and an empty
/// `ledger(transaction_id, {key_column}, phase, amount)`, then drops the database.
pub async fn with_database<F, Fut>(prefix: &str, schema: &str, key_column: &str, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    let admin = connect("postgres").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating the test database");
    {
        let db = connect(&name).await;
        let barrier = Barrier::new(schema).unwrap();
        barrier
            .ensure_table(&db)
            .await
            .expect("creating the barrier table");
        // Idempotent: a second set-up changes nothing.
        barrier
            .ensure_table(&db)
            .await
            .expect("re-running the set-up");
        db.batch_execute(&format!(
            "CREATE TABLE ledger (transaction_id uuid NOT NULL, {key_column} text NOT NULL, phase text NOT NULL, amount bigint NOT NULL)"
        ))
        .await
        .expect("creating the ledger");
    }
    let outcome = AssertUnwindSafe(test(name.clone())).catch_unwind().await;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("dropping the test database");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
