//! Redis locks per transaction, taken whenever an instance takes over work it did
//! not create. The lock keeps two instances from calling participants for the same
//! transaction at once; the Postgres fence keeps state correct even when the lock
//! is lost, so an unreachable Redis degrades the coordinator instead of stopping it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis did not answer: carry on with Postgres leases alone.
    #[error("redis unreachable")]
    Unreachable(#[from] redis::RedisError),
    #[error("redis did not answer in time")]
    TimedOut,
}

/// Proof of holding a lock: releasing or renewing needs the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

/// Deletes the key only when it still holds our token.
const RELEASE: &str = r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end"#;
/// Extends the key only when it still holds our token.
const RENEW: &str = r#"if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end"#;

pub struct Locks {
    manager: ConnectionManager,
    prefix: String,
    timeout: Duration,
    reachable: AtomicBool,
    release: redis::Script,
    renew: redis::Script,
    /// Acquisitions refused because another instance held the lock (for `/metrics`).
    held_failures: AtomicU64,
    /// Acquisitions that got no answer from Redis (for `/metrics`).
    unreachable_failures: AtomicU64,
}

impl Locks {
    /// Connects lazily: a Redis that is down at start-up only makes the instance degraded.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Locks> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("redis.url is not a valid Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("setting up the Redis connection: {e}"))?;
        Ok(Locks {
            manager,
            prefix: prefix.to_string(),
            timeout,
            reachable: AtomicBool::new(true),
            release: redis::Script::new(RELEASE),
            renew: redis::Script::new(RENEW),
            held_failures: AtomicU64::new(0),
            unreachable_failures: AtomicU64::new(0),
        })
    }

    fn key(&self, id: Uuid) -> String {
        format!("{}:lock:tx:{id}", self.prefix)
    }

    /// Whether the last Redis call got an answer.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Unreachable(e)),
            Err(_) => Err(Error::TimedOut),
        };
        let reachable = result.is_ok();
        if self.reachable.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                tracing::info!("redis reachable again; locks are back");
            } else {
                tracing::warn!("redis unreachable; running on Postgres leases and fences alone");
            }
        }
        result
    }

    /// `SET key token NX PX ttl`: `Some(token)` when taken, `None` when another holds it.
    pub async fn acquire(&self, id: Uuid, ttl: Duration) -> Result<Option<Token>> {
        let token = Token(Uuid::new_v4().simple().to_string());
        let mut conn = self.manager.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(id))
            .arg(&token.0)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        let reply: Option<String> =
            self.bounded(cmd.query_async(&mut conn))
                .await
                .inspect_err(|_| {
                    self.unreachable_failures.fetch_add(1, Ordering::Relaxed);
                })?;
        if reply.is_none() {
            self.held_failures.fetch_add(1, Ordering::Relaxed);
        }
        Ok(reply.map(|_| token))
    }

    /// Failed acquisitions so far: (held by another instance, Redis unreachable).
    pub fn acquire_failures(&self) -> (u64, u64) {
        (
            self.held_failures.load(Ordering::Relaxed),
            self.unreachable_failures.load(Ordering::Relaxed),
        )
    }

    /// Extends a held lock; `false` means it was lost (expired or taken).
    pub async fn renew(&self, id: Uuid, token: &Token, ttl: Duration) -> Result<bool> {
        let mut conn = self.manager.clone();
        let mut invocation = self.renew.key(self.key(id));
        invocation.arg(&token.0).arg(ttl.as_millis() as u64);
        let n: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(n == 1)
    }

    /// Compare-and-delete: never removes a lock someone else took over.
    pub async fn release(&self, id: Uuid, token: &Token) -> Result<()> {
        let mut conn = self.manager.clone();
        let mut invocation = self.release.key(self.key(id));
        invocation.arg(&token.0);
        let _: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// Time left on someone else's lock, to know when to look again.
    pub async fn remaining(&self, id: Uuid) -> Result<Option<Duration>> {
        let mut conn = self.manager.clone();
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(self.key(id));
        let ms: i64 = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    /// A round trip for readiness checks.
    pub async fn ping(&self) -> bool {
        let mut conn = self.manager.clone();
        let cmd = redis::cmd("PING");
        self.bounded(cmd.query_async::<String>(&mut conn))
            .await
            .is_ok()
    }
}
