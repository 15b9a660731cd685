//! Helpers for Settle's end-to-end tests: throwaway databases and Redis servers,
//! coordinators in process or as real processes, scriptable participant servers,
//! and waiting on conditions with a deadline. Everything is real; nothing is mocked.

pub mod coordinator;
pub mod db;
pub mod instant;
pub mod pg_cluster;
pub mod pgbench_script;
pub mod proxy;
pub mod redis_server;
pub mod scripted;
pub mod webdriver;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it yields a value, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A short unique name for databases, key prefixes and instance ids.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// Where tests keep logs of the processes they start.
pub fn artifacts_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("creating target/test-artifacts");
    dir
}
