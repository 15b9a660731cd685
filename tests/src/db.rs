//! A fresh PostgreSQL database per test on the machine's server, dropped afterwards.

use tokio_postgres::NoTls;

/// The shared server; tests never reconfigure or restart it.
pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// The server test databases are made on: [`SERVER`], unless `SETTLE_TEST_POSTGRES_SERVER`
/// names another (`scripts/pg-instructions.sh` runs the benchmark against a
/// throwaway cluster under callgrind that way).
fn server() -> String {
    std::env::var("SETTLE_TEST_POSTGRES_SERVER").unwrap_or_else(|_| SERVER.to_string())
}

pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&format!("{}/postgres", server()), NoTls)
        .await
        .expect("PostgreSQL must be running on 127.0.0.1:5432, or where SETTLE_TEST_POSTGRES_SERVER says (see README: tests need it)");
    tokio::spawn(conn);
    client
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let name = crate::unique("settle_test");
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating the test database");
        TestDatabase {
            url: format!("{}/{name}", server()),
            name,
        }
    }

    /// A pool on this database, e.g. for the example participants or direct checks.
    pub fn pool(&self, size: usize) -> deadpool_postgres::Pool {
        let config: tokio_postgres::Config = self.url.parse().expect("test database URL");
        let manager = deadpool_postgres::Manager::new(config, NoTls);
        deadpool_postgres::Pool::builder(manager)
            .max_size(size)
            .build()
            .expect("building a test pool")
    }

    /// One query, for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropping runs outside any async context: use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&format!("{}/postgres", server()), NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
