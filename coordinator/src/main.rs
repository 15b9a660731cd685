//! The `settle` binary: parse the command line, then hand over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = settle_coordinator::cli::Cli::parse();
    match settle_coordinator::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("settle: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
