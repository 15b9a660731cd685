//! The `settle` command line: `serve`, `migrate`, and the operator commands `tx` and `def`.

mod filters;
mod ops;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::settings::Settings;
use crate::{store, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "settle",
    version,
    about = "Settle: a distributed transaction coordinator"
)]
pub struct Cli {
    /// Configuration file (default: ./settle.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Log as JSON lines (overrides log.json).
    #[arg(long, global = true)]
    pub json_logs: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per run: the size of the filters in `Tx` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the coordinator: HTTP API, saga driver and recovery.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect and act on transactions through a running coordinator's admin API.
    Tx {
        #[command(flatten)]
        target: ops::Target,
        #[command(subcommand)]
        command: ops::Tx,
    },
    /// List, show and register saga definitions through a running coordinator.
    Def {
        #[command(flatten)]
        target: ops::Target,
        #[command(subcommand)]
        command: ops::Def,
    },
}

/// The whole `settle` program: what `main` runs.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("settle: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settle: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if cli.json_logs {
        settings.log.json = true;
    }
    telemetry::init(&settings.log);
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Tx { target, command } => ops::tx(&target, command).await,
        Command::Def { target, command } => ops::def(&target, command).await,
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    shutdown_signal().await;
    tracing::info!("shutting down: finishing calls in flight and giving back owned transactions");
    handle.stop().await;
    server.await??;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    if settings.database.create_if_missing {
        store::create_database_if_missing(&settings.database.url).await?;
    }
    let pool = store::pool(&settings.database.url, 1, settings.database.connect_timeout)?;
    let applied = store::migrate::run(&pool).await?;
    tracing::info!(applied, "migrations up to date");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
