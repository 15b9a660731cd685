//! The `settle` binary: everything lives in the library; see `settle_coordinator::cli`.

fn main() -> std::process::ExitCode {
    settle_coordinator::cli::main()
}
