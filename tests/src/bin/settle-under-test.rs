//! The `settle` program, built inside the test crate so that end-to-end tests can
//! start it as a real process (and SIGKILL it) via `CARGO_BIN_EXE_settle-under-test`.
//! It is the same entry point as `coordinator/src/main.rs`.

fn main() -> std::process::ExitCode {
    settle_coordinator::cli::main()
}
