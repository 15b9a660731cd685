//! Logging set-up: human-readable lines by default, JSON with `log.json = true`.
//! Spans carry `transaction_id`, so every line about a transaction names it.

use tracing_subscriber::EnvFilter;

use crate::settings::LogSettings;

pub fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = if log.json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (tests start several applications in one process): keep the first.
    let _ = result;
}
