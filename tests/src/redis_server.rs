//! Redis for tests: key prefixes on the shared server, or a throwaway
//! `redis-server` on its own port that a test may stop and restart.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SHARED: &str = "redis://127.0.0.1:6379";

/// Deletes every key under `prefix` on the shared server.
pub async fn clean_prefix(prefix: &str) {
    let Ok(client) = redis::Client::open(SHARED) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}

/// Fails loudly when the shared Redis is not there.
pub async fn require_shared() {
    let client = redis::Client::open(SHARED).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must be running on 127.0.0.1:6379 (see README: tests need it)");
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("redis PING");
    assert_eq!(pong, "PONG");
}

pub struct ThrowawayRedis {
    pub port: u16,
    child: Option<Child>,
}

impl ThrowawayRedis {
    pub async fn start() -> ThrowawayRedis {
        let mut redis = ThrowawayRedis {
            port: crate::free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (see README)");
        self.child = Some(child);
        let url = self.url();
        crate::eventually(
            "the throwaway redis to answer",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url).ok()?;
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .ok()
                }
            },
        )
        .await;
    }

    /// Kills it hard, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
