//! The retention loop: purges finished transactions past `retention.finished_after`
//! in batches, with a log line per batch. Every instance may run it; SKIP LOCKED
//! keeps them out of each other's way.

use std::sync::Arc;

use super::Driver;
use crate::store;

impl Driver {
    pub(super) async fn retention_loop(self: Arc<Self>) {
        let settings = self.settings.retention.clone();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(settings.interval) => {}
            }
            loop {
                match store::retention::purge(&self.pool, settings.finished_after, settings.batch)
                    .await
                {
                    Ok(0) => break,
                    Ok(n) => {
                        tracing::info!(purged = n, "purged finished transactions past retention");
                        self.metrics.purged(n);
                        if (n as i64) < settings.batch || self.shutdown.is_cancelled() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention purge failed; trying again next round");
                        break;
                    }
                }
            }
        }
    }
}
