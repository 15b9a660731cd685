#!/usr/bin/env bash
# Where a saga's time goes at 1 client: Postgres, the participants, or the
# coordinator's own hops (docs/PERFORMANCE.md, "What bounds it today"). Runs
# settle-bench at 1 client with the coordinator in its own process, captures
# loopback for 3 s in the middle of the run (tcpdump, which needs root), and splits
# each saga's time by the messages it is made of (bench/latency_split.py).
# Environment variables given to this script reach the coordinator process, so
# that a setting can be compared: TOKIO_WORKER_THREADS=1 scripts/latency-split.sh
# Usage: scripts/latency-split.sh [label]      (apt-get install tcpdump when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v tcpdump >/dev/null || { echo "latency-split: tcpdump is not installed (apt-get install tcpdump)" >&2; exit 1; }
label="${1:-as built}"
cargo build --release --locked -p settle-tests --bin settle-bench --bin settle-under-test
capture=$(mktemp /tmp/settle-latency.XXXXXX.pcap)
trap 'rm -f "$capture"' EXIT
(sleep 5; timeout 3 tcpdump -i lo -n -s 100 -w "$capture" 'tcp and (tcp[tcpflags] & tcp-push != 0)' 2>/dev/null || true) &
target/release/settle-bench --participants instant --sagas 2500 --per-step-overhead --coordinator process | grep '^added'
wait
python3 bench/latency_split.py "$capture" "$label"
