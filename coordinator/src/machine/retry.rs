//! Retry policy and backoff: exponential, capped, with full jitter.

use serde::{Deserialize, Serialize};

/// How often and how patiently a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Calls allowed before the call counts as failed (including the first).
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The cap on the wait after the `n`th consecutive failure (n ≥ 1):
    /// `min(max_backoff, initial * multiplier^(n-1))`.
    pub fn ceiling_ms(&self, n: u32) -> u64 {
        let exponent = n.saturating_sub(1).min(64) as i32;
        let raw = self.initial_backoff_ms as f64 * self.multiplier.powi(exponent);
        if raw.is_finite() && raw < self.max_backoff_ms as f64 {
            raw as u64
        } else {
            self.max_backoff_ms
        }
    }

    /// Full jitter: a wait drawn uniformly from `[0, ceiling]`, with `jitter` in `[0, 1)`.
    /// Never zero, so a retry storm cannot spin.
    pub fn delay_ms(&self, n: u32, jitter: f64) -> u64 {
        let jitter = jitter.clamp(0.0, 1.0);
        ((self.ceiling_ms(n) as f64 * jitter) as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=8).map(|n| policy.ceiling_ms(n)).collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
    }

    #[test]
    fn delay_is_full_jitter_within_the_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_ms(3, 0.0), 1);
        assert_eq!(policy.delay_ms(3, 0.5), 400);
        assert_eq!(policy.delay_ms(3, 0.999_999), 799);
        assert_eq!(policy.delay_ms(100, 0.5), 5_000);
    }

    #[test]
    fn huge_multipliers_saturate_at_the_cap() {
        let policy = RetryPolicy {
            multiplier: 10.0,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.ceiling_ms(1_000), 10_000);
    }
}
