#!/usr/bin/env bash
# Settle against the naive durable-write ceiling, measured in the same minutes on
# the same machine: pgbench running the 4-commit pattern of a 3-step saga, then
# settle-bench with instant participants at the same client count, then 1 client.
# Usage: scripts/bench.sh [clients] [sagas]
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-32}"
sagas="${2:-5000}"
scripts/services.sh
cargo build --release --locked -p settle-tests --bin settle-bench
db="settle_pgbench_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
psql -h 127.0.0.1 -U postgres -d "$db" -qc \
  "CREATE TABLE saga_rows (id uuid PRIMARY KEY, state text NOT NULL, progress jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
if command -v pgbench >/dev/null; then
  ceiling=$(pgbench -h 127.0.0.1 -U postgres -n -c "$clients" -j 2 -T 15 -f bench/saga_writes.sql "$db" 2>&1 \
    | awk '/^tps/ { printf "%.0f", $3 }')
  echo "pgbench clients=$clients ceiling=${ceiling} sagas/s (4 commits per saga)"
else
  ceiling=""
  echo "pgbench is not installed (apt-get install postgresql-contrib); no ceiling measured"
fi
line=$(target/release/settle-bench --participants instant --sagas "$sagas" --clients "$clients" | tail -n1)
echo "$line"
one=$(target/release/settle-bench --participants instant --sagas 500 --clients 1 | tail -n1)
echo "$one"
throughput=$(echo "$line" | sed -E 's/.*throughput=([0-9]+).*/\1/')
if [ -n "$ceiling" ]; then
  awk -v s="$throughput" -v c="$ceiling" 'BEGIN { printf "ratio settle/pgbench = %.2f\n", s / c }'
fi
