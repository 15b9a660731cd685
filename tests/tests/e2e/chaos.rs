//! A short `settle-chaos` run with a fixed seed: kills, pauses, Postgres and Redis
//! restarts, participant crashes and network faults for a few seconds, then the
//! ledger checks. The longer runs are in scripts/test.sh and scripts/chaos.sh.

use std::process::Command;

const CHAOS_BIN: &str = env!("CARGO_BIN_EXE_settle-chaos");

#[test]
fn a_short_chaos_run_loses_nothing_doubles_nothing_and_violates_nothing() {
    let output = Command::new(CHAOS_BIN)
        .args([
            "--seed",
            "3",
            "--duration",
            "8s",
            "--coordinators",
            "2",
            "--clients",
            "6",
        ])
        .output()
        .expect("running settle-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "settle-chaos failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("chaos seed=3 txns=")
            && summary.ends_with(" lost=0 duplicated=0 violations=0"),
        "unexpected summary line {summary:?}\n{stderr}"
    );
    let txns: u64 = summary
        .split_whitespace()
        .find_map(|field| field.strip_prefix("txns="))
        .and_then(|n| n.parse().ok())
        .expect("a txns= field");
    assert!(txns > 0, "the run started no transaction:\n{stderr}");
}
