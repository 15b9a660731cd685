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
    /// Make API tokens and the hashes `auth.tokens` stores.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token and the `auth.tokens` entry that accepts it.
    New {
        /// The token's name: the actor recorded in timelines.
        name: String,
        /// service, operator or reader.
        role: String,
    },
    /// Read a token from standard input and print its `sha256:…` hash.
    Hash,
}

/// `settle token …`: needs no configuration, so it runs before any is loaded.
fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::New { name, role } => {
            anyhow::ensure!(
                crate::auth::Role::parse(&role).is_some(),
                "role: '{role}' is not service, operator or reader"
            );
            anyhow::ensure!(
                !name.is_empty() && !name.contains([':', ',']),
                "name: must be non-empty, without ':' or ','"
            );
            let token = crate::auth::new_token();
            let hash = crate::auth::hash_token(&token);
            println!("token: {token}");
            println!("# settle.toml (keep the token itself out of it):");
            println!("[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nhash = \"{hash}\"");
            println!("# or in the environment:");
            println!("SETTLE__AUTH__TOKENS={name}:{role}:{hash}");
        }
        TokenCommand::Hash => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let token = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            println!("{}", crate::auth::hash_token(token));
        }
    }
    Ok(())
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
    let load = || -> anyhow::Result<Settings> {
        let mut settings = Settings::load(cli.config.as_deref())?;
        if cli.json_logs {
            settings.log.json = true;
        }
        telemetry::init(&settings.log);
        Ok(settings)
    };
    match cli.command {
        Command::Serve => serve(load()?).await,
        Command::Migrate => migrate(load()?).await,
        // The operator commands talk to a coordinator; they need no configuration of their own.
        Command::Tx { target, command } => ops::tx(&target, command).await,
        Command::Def { target, command } => ops::def(&target, command).await,
        Command::Token { command } => token(command),
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
    let pool = store::pool(
        &settings.database.url,
        1,
        store::Timeouts::of(&settings.database),
    )?;
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
