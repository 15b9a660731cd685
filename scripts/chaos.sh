#!/usr/bin/env bash
# A chaos run of any length: `scripts/chaos.sh SEED DURATION`, e.g.
# `scripts/chaos.sh 42 10m`. Starts its own throwaway Postgres clusters and Redis
# (the shared services on 5432 and 6379 hold only the order participants' ledger),
# three coordinators behind fault-injecting proxies, and prints one summary line:
#   chaos seed=42 txns=... kills=... pauses=... pg_restarts=... redis_flushes=... net_faults=... lost=0 duplicated=0 violations=0
# It exits non-zero on any violation, each printed on stderr before the summary.
# Coordinator logs are kept in target/test-artifacts/proc_*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: scripts/chaos.sh SEED DURATION [--coordinators 2|3] [--clients N]" >&2
    exit 2
fi
seed="$1"
duration="$2"
shift 2
scripts/services.sh
cargo build -p settle-tests --locked --bin settle-chaos --bin settle-under-test
exec target/debug/settle-chaos --seed "$seed" --duration "$duration" "$@"
