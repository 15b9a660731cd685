//! Runs the example order-checkout participants (inventory, payments, shipping) as
//! one process, for the quick start and for trying sagas by hand.

use std::time::Duration;

use anyhow::Context;
use settle_participant::signature::Verifier;
use tracing_subscriber::EnvFilter;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/settle_examples";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let url = env_or("SETTLE_EXAMPLES_DATABASE_URL", DEFAULT_DATABASE_URL);
    let host = env_or("SETTLE_EXAMPLES_HOST", "127.0.0.1");
    let ports = match std::env::var("SETTLE_EXAMPLES_PORTS") {
        Ok(text) => parse_ports(&text).context("SETTLE_EXAMPLES_PORTS")?,
        Err(_) => settle_examples::DEFAULT_PORTS,
    };
    let verifier = std::env::var("SETTLE_SIGNING_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())
        .map(|secret| {
            Verifier::new(vec![secret.into_bytes()]).with_max_age(Duration::from_secs(300))
        });
    if verifier.is_none() {
        tracing::warn!("SETTLE_SIGNING_SECRET is not set: calls are accepted unsigned");
    }

    let pool = settle_examples::connect(&url, 16).await?;
    settle_examples::setup(&pool).await?;
    let participants = settle_examples::start(pool, &host, ports, verifier).await?;
    tracing::info!(
        inventory = %participants.inventory,
        payments = %participants.payments,
        shipping = %participants.shipping,
        "order participants are up"
    );

    shutdown_signal().await?;
    tracing::info!("shutting down");
    participants.stop().await;
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// `7101,7102,7103` → inventory, payments, shipping.
fn parse_ports(text: &str) -> anyhow::Result<[u16; 3]> {
    let ports = text
        .split(',')
        .map(|port| {
            port.trim()
                .parse::<u16>()
                .with_context(|| format!("{port:?} is not a port"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ports
        .try_into()
        .map_err(|ports: Vec<u16>| anyhow::anyhow!("expected 3 ports, got {}", ports.len()))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("listening for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("listening for ctrl-c")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("listening for ctrl-c")?;
    Ok(())
}
