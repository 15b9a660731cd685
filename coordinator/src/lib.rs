//! Settle's coordinator as a library: the `settle` binary is thin glue over these modules.

pub mod allow;
pub mod app;
pub mod auth;
pub mod cli;
pub mod definition;
pub mod driver;
pub mod http;
pub mod lock;
pub mod machine;
pub mod metrics;
pub mod outbound;
pub mod settings;
pub mod specs;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webhook;
