//! The stuck-transaction webhook: a loop that claims due notifications from the
//! outbox (`store/outbox.rs`), POSTs each as signed JSON (`Settle-Signature`, the
//! same scheme as participant calls) and retries with capped exponential backoff
//! until the receiver answers 2xx. Delivery is at least once.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use settle_participant::protocol::SIGNATURE_HEADER;
use settle_participant::signature;
use tokio_util::sync::CancellationToken;

use crate::machine::retry::RetryPolicy;
use crate::metrics::Metrics;
use crate::outbound::{Failure, Outbound};
use crate::settings::WebhookSettings;
use crate::store::outbox;

/// Notifications sent per claim.
const CLAIM_BATCH: i64 = 32;
/// The most of a receiver's answer that is read (and then ignored).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The first pause after a failed delivery; doubled per attempt up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

pub struct Deliverer {
    pub pool: Pool,
    pub http: Outbound,
    pub settings: WebhookSettings,
    pub metrics: Arc<Metrics>,
}

impl Deliverer {
    /// Delivers until `shutdown`; does nothing when no `webhook.url` is configured.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(url) = self.settings.url.clone() else {
            return;
        };
        // A claim holds a notification for longer than one delivery can take.
        let hold = self.settings.timeout * 2 + Duration::from_secs(1);
        loop {
            let claimed = match outbox::claim(&self.pool, hold, CLAIM_BATCH).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming webhook notifications failed");
                    Vec::new()
                }
            };
            let full = claimed.len() as i64 >= CLAIM_BATCH;
            for n in claimed {
                self.deliver(&url, n).await;
            }
            let pause = if full {
                Duration::ZERO
            } else {
                self.settings.poll_interval
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    #[tracing::instrument(skip_all, fields(notification = n.id, attempt = n.attempts))]
    async fn deliver(&self, url: &str, n: outbox::Claimed) {
        let body = serde_json::to_vec(&n.payload).unwrap_or_default();
        let signed = self.settings.secret.as_ref().map(|secret| {
            signature::sign(secret.expose().as_bytes(), signature::now_unix(), &body)
        });
        let headers: Vec<(&str, &str)> = signed
            .iter()
            .map(|signed| (SIGNATURE_HEADER, signed.as_str()))
            .collect();
        let answer = self
            .http
            .post(
                url,
                &headers,
                body.into(),
                self.settings.timeout,
                MAX_RESPONSE_BYTES,
            )
            .await;
        let error = match answer {
            Ok(answer) if (200..300).contains(&answer.status) => None,
            // A receiver that took the notification and said too much about it.
            Err(Failure::BodyTooLarge { status, .. }) if (200..300).contains(&status) => None,
            Ok(answer) => Some(format!("status {}", answer.status)),
            Err(failure) => Some(failure.to_string()),
        };
        let stored = match &error {
            None => {
                self.metrics.webhook_delivery("delivered");
                tracing::info!("webhook delivered");
                outbox::delivered(&self.pool, n.id).await
            }
            Some(error) => {
                self.metrics.webhook_delivery("failed");
                let retry_in = backoff(n.attempts, self.settings.max_backoff);
                tracing::warn!(error = %error, retry_in_ms = retry_in.as_millis() as u64, "webhook delivery failed; will retry");
                outbox::failed(&self.pool, n.id, retry_in, error).await
            }
        };
        if let Err(e) = stored {
            // The claim's hold runs out and the notification is sent again: at least once.
            tracing::warn!(error = %e, "recording a webhook delivery failed");
        }
    }
}

/// The participants' exponential ceiling (`RetryPolicy`), with the jitter on its
/// upper half only, so a failing receiver is never asked again at once.
fn backoff(attempts: i32, max: Duration) -> Duration {
    let policy = RetryPolicy {
        max_attempts: u32::MAX,
        initial_backoff_ms: INITIAL_BACKOFF.as_millis() as u64,
        max_backoff_ms: max.as_millis() as u64,
        multiplier: 2.0,
    };
    let capped = Duration::from_millis(policy.ceiling_ms(attempts.max(1) as u32));
    capped / 2 + capped.mul_f64(rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(10);
        assert!(backoff(1, max) <= INITIAL_BACKOFF);
        assert!(backoff(1, max) >= INITIAL_BACKOFF / 2);
        assert!(backoff(4, max) >= INITIAL_BACKOFF * 4);
        assert!(backoff(30, max) <= max);
        assert!(backoff(30, max) >= max / 2);
    }
}
