//! Runs the money-transfer example's account services: "bank-a" (alice, 1000) and
//! "bank-b" (bob, 1000), each an XA participant on a database of its own. Nothing
//! lives in the process: a bank killed between prepare and commit finds its prepared
//! transactions in Postgres when it starts again.
//!
//! Environment:
//! - `SETTLE_BANK_A_URL`, `SETTLE_BANK_B_URL`: the banks' databases (created when
//!   missing); their server needs `max_prepared_transactions > 0`
//! - `SETTLE_BANK_A_PORT` (7201), `SETTLE_BANK_B_PORT` (7202), `SETTLE_BANK_HOST` (127.0.0.1)
//! - `SETTLE_BANKS`: which banks to run, `a,b` (default), `a` or `b`
//! - `SETTLE_SIGNING_SECRET`: when set, calls must be signed with it

use std::time::Duration;

use anyhow::Context;
use settle_examples::bank;
use settle_participant::signature::Verifier;
use tracing_subscriber::EnvFilter;

/// One bank's defaults.
struct BankDefaults {
    name: &'static str,
    /// The letter in its environment variables and in `SETTLE_BANKS`.
    letter: &'static str,
    url: &'static str,
    port: u16,
    /// The account it opens, and its opening balance.
    account: (&'static str, i64),
}

const BANKS: [BankDefaults; 2] = [
    BankDefaults {
        name: "bank-a",
        letter: "A",
        url: "postgres://postgres@127.0.0.1:5432/settle_bank_a",
        port: 7201,
        account: ("alice", 1000),
    },
    BankDefaults {
        name: "bank-b",
        letter: "B",
        url: "postgres://postgres@127.0.0.1:5432/settle_bank_b",
        port: 7202,
        account: ("bob", 1000),
    },
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let host = env_or("SETTLE_BANK_HOST", "127.0.0.1");
    let wanted = env_or("SETTLE_BANKS", "a,b");
    let wanted: Vec<String> = wanted
        .split(',')
        .map(|bank| bank.trim().to_ascii_uppercase())
        .collect();
    if wanted.is_empty() || wanted.iter().any(|bank| bank != "A" && bank != "B") {
        anyhow::bail!("SETTLE_BANKS must list a and/or b, e.g. \"a,b\" or \"a\"");
    }
    let verifier = std::env::var("SETTLE_SIGNING_SECRET")
        .ok()
        .filter(|secret| !secret.is_empty())
        .map(|secret| {
            Verifier::new(vec![secret.into_bytes()]).with_max_age(Duration::from_secs(300))
        });
    if verifier.is_none() {
        tracing::warn!("SETTLE_SIGNING_SECRET is not set: calls are accepted unsigned");
    }

    let mut running = Vec::new();
    for BankDefaults {
        name,
        letter,
        url: default_url,
        port: default_port,
        account,
    } in BANKS
    {
        if !wanted.iter().any(|bank| bank == letter) {
            continue;
        }
        let url = env_or(&format!("SETTLE_BANK_{letter}_URL"), default_url);
        let port = match std::env::var(format!("SETTLE_BANK_{letter}_PORT")) {
            Ok(text) => text
                .parse::<u16>()
                .with_context(|| format!("SETTLE_BANK_{letter}_PORT: {text:?} is not a port"))?,
            Err(_) => default_port,
        };
        let pool = settle_examples::connect(&url, 8)
            .await
            .with_context(|| format!("{name}: connecting to its database"))?;
        bank::setup(&pool, &[account])
            .await
            .with_context(|| format!("{name}: setting up"))?;
        let in_doubt = bank::prepared(&pool).await?;
        if !in_doubt.is_empty() {
            tracing::info!(
                bank = name,
                prepared = ?in_doubt,
                "prepared transactions are waiting for the coordinator's decision"
            );
        }
        let server = bank::start(pool, &host, port, verifier.clone())
            .await
            .with_context(|| format!("{name}: starting"))?;
        tracing::info!(bank = name, addr = %server.addr, "bank is up");
        running.push(server);
    }

    shutdown_signal().await?;
    tracing::info!("shutting down");
    for server in running {
        server.stop().await;
    }
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
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
