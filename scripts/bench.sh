#!/usr/bin/env bash
# Settle against the naive durable-write ceiling, measured in the same minutes on
# the same machine (docs/PERFORMANCE.md says how to read the numbers):
#   1. R rounds (default 3), each: pgbench runs the 4-commit write pattern of a
#      3-step saga (bench/saga_writes.sql) at the same client count for 15 s, then
#      settle-bench runs N sagas against instant participants from C clients. The
#      ratio is taken per round and the median round is reported: on a shared
#      machine one binary's throughput varies by 20 % from run to run;
#   2. pgbench at 1 client for 5 s, then Settle's own statements for a saga under
#      pgbench at 1 client (settle-bench --pgbench-script), on Settle's schema;
#   3. settle-bench runs the same load again after loading 1,000,000 finished sagas;
#   4. settle-bench runs 1 client with --per-step-overhead;
#   5. settle-bench runs N one-shot 2PC transactions (two branches) from C clients;
#   6. when valgrind is installed, settle-bench --callgrind counts the coordinator's
#      instructions per saga (1,000 sagas, 8 clients), and scripts/pg-instructions.sh
#      Postgres's for Settle's statements and for the naive four commits, and for
#      a settle-bench run against its cluster: the figures that do not move with
#      the machine's load.
# It ends with a markdown table; the full outputs are kept in target/bench/.
# Usage: scripts/bench.sh [clients] [sagas] [rounds]   (defaults 32, 20000 and 3: shorter runs are dominated by warm-up)
set -euo pipefail
cd "$(dirname "$0")/.."
clients="${1:-32}"
sagas="${2:-20000}"
rounds="${3:-3}"
pg=(-h 127.0.0.1 -p 5432 -U postgres)
# pgbench over the transport the coordinator uses: plain TCP on loopback. libpq's
# default (sslmode=prefer) encrypts when the server offers TLS, as Debian's does,
# and that costs pgbench about a tenth of its throughput here.
export PGSSLMODE=disable
out="target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

scripts/services.sh
cargo build --release --locked -p settle-tests --bin settle-bench --bin settle-under-test

# `field NAME` reads NAME=<number> from a settle-bench line on stdin.
field() { sed -nE "s/.*[ (]$1=([0-9.]+).*/\1/p" | head -n1; }

# pgbench leaves dirty pages behind: flush them before each run so no checkpoint lands in it.
checkpoint() { psql "${pg[@]}" -qc "CHECKPOINT" >/dev/null 2>&1 || true; }

have_pgbench=1
if ! command -v pgbench >/dev/null || ! command -v psql >/dev/null; then
  have_pgbench=""
  echo "bench: pgbench or psql is not installed (apt-get install postgresql-client);" \
    "SKIPPING the pgbench ceiling, Settle is measured alone" >&2
else
  db="settle_pgbench_$$"
  psql "${pg[@]}" -qc "CREATE DATABASE $db"
  own_db="settle_statements_$$"
  trap 'psql "${pg[@]}" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "DROP DATABASE IF EXISTS $own_db WITH (FORCE)"' EXIT
  psql "${pg[@]}" -d "$db" -q -v ON_ERROR_STOP=1 -f bench/schema.sql
fi

# Rounds: "ratio settle pgbench round" per line, sorted by ratio afterwards.
: >"$out/rounds.txt"
for round in $(seq "$rounds"); do
  ceiling=""
  if [ -n "$have_pgbench" ]; then
    echo "bench: round $round/$rounds: pgbench, $clients clients, 15 s" >&2
    pgbench "${pg[@]}" -n -M prepared -c "$clients" -j 2 -T 15 -f bench/saga_writes.sql "$db" \
      >"$out/pgbench-$clients-$round.txt" 2>&1 || { cat "$out/pgbench-$clients-$round.txt" >&2; exit 1; }
    ceiling=$(awk '/^tps/ { printf "%.0f", $3 }' "$out/pgbench-$clients-$round.txt")
    echo "pgbench round=$round clients=$clients ceiling=$ceiling sagas/s" >&2
  fi
  checkpoint
  echo "bench: round $round/$rounds: settle-bench, $clients clients, $sagas sagas" >&2
  target/release/settle-bench --participants instant --sagas "$sagas" --clients "$clients" --rss \
    | tee "$out/settle-$clients-$round.txt" >&2
  checkpoint
  settle=$(grep '^bench ' "$out/settle-$clients-$round.txt" | field throughput)
  ratio=$(awk -v s="$settle" -v c="${ceiling:-0}" 'BEGIN { if (c > 0) printf "%.2f", s / c; else print "-" }')
  echo "$ratio $settle ${ceiling:--} $round" >>"$out/rounds.txt"
done
# The median round (by ratio; by Settle's throughput without pgbench).
median=$(sort -n -k1,1 -k2,2 "$out/rounds.txt" | sed -n "$(( (rounds + 1) / 2 ))p")
read -r ratio throughput ceiling median_round <<<"$median"
[ "$ceiling" = "-" ] && ceiling=""
cp "$out/settle-$clients-$median_round.txt" "$out/settle-$clients.txt"
[ -n "$have_pgbench" ] && cp "$out/pgbench-$clients-$median_round.txt" "$out/pgbench-$clients.txt"
ceiling_lat="" one_lat="" own_lat=""
if [ -n "$have_pgbench" ]; then
  ceiling_lat=$(awk '/^latency average/ { print $4 }' "$out/pgbench-$clients.txt")
  echo "bench: pgbench, 1 client, 5 s" >&2
  pgbench "${pg[@]}" -n -M prepared -c 1 -T 5 -f bench/saga_writes.sql "$db" \
    >"$out/pgbench-1.txt" 2>&1 || { cat "$out/pgbench-1.txt" >&2; exit 1; }
  one_lat=$(awk '/^latency average/ { print $4 }' "$out/pgbench-1.txt")
  # The same at 1 client with Settle's own statements for a saga (settle-bench
  # --pgbench-script: the creation batch and three write batches of one, with their
  # events) on Settle's schema, under the writer sessions' planner settings: what
  # Postgres alone spends, without HTTP or the coordinator.
  echo "bench: Settle's statements under pgbench, 1 client, 5 s" >&2
  psql "${pg[@]}" -qc "CREATE DATABASE $own_db"
  SETTLE__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$own_db" target/release/settle-under-test migrate \
    >"$out/migrate.txt" 2>&1 || { cat "$out/migrate.txt" >&2; exit 1; }
  psql "${pg[@]}" -d "$own_db" -qc "INSERT INTO saga_definitions (name, version, spec, digest) VALUES ('bench', 1, '{}', 'bench')"
  target/release/settle-bench --pgbench-script >"$out/settle-statements.sql"
  PGOPTIONS="$(target/release/settle-bench --writer-options)" \
    pgbench "${pg[@]}" -n -M prepared -c 1 -T 5 -f "$out/settle-statements.sql" "$own_db" \
    >"$out/pgbench-settle-statements-1.txt" 2>&1 || { cat "$out/pgbench-settle-statements-1.txt" >&2; exit 1; }
  own_lat=$(awk '/^latency average/ { print $4 }' "$out/pgbench-settle-statements-1.txt")
fi

checkpoint
echo "bench: settle-bench, $clients clients, $sagas sagas, after 1,000,000 finished sagas" >&2
target/release/settle-bench --participants instant --sagas "$sagas" --clients "$clients" --history 1000000 \
  | tee "$out/settle-$clients-history.txt" >&2
checkpoint
echo "bench: settle-bench, 1 client, 1000 sagas" >&2
target/release/settle-bench --participants instant --sagas 1000 --per-step-overhead \
  | tee "$out/settle-1.txt" >&2

checkpoint
echo "bench: settle-bench --twopc, $clients clients, $sagas transactions" >&2
target/release/settle-bench --twopc --sagas "$sagas" --clients "$clients" \
  | tee "$out/settle-twopc-$clients.txt" >&2

instructions=""
pg_instructions=""
if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
  checkpoint
  echo "bench: settle-bench --callgrind, 8 clients, 1000 sagas" >&2
  target/release/settle-bench --participants instant --sagas 1000 --clients 8 --callgrind "$out/callgrind" \
    | tee "$out/settle-callgrind.txt" >&2
  instructions=$(grep '^instructions' "$out/settle-callgrind.txt" | sed -nE 's/.*per saga=([0-9]+).*/\1/p')
  if [ -n "$have_pgbench" ]; then
    echo "bench: scripts/pg-instructions.sh (Postgres under callgrind)" >&2
    scripts/pg-instructions.sh | tee "$out/pg-instructions.txt" >&2
    pg_instructions=$(grep '^postgres instructions' "$out/pg-instructions.txt" || true)
  fi
else
  echo "bench: valgrind is not installed; SKIPPING the instruction count" >&2
fi

line=$(grep '^bench ' "$out/settle-$clients.txt")
twopc_line=$(grep '^bench ' "$out/settle-twopc-$clients.txt")
history_line=$(grep '^bench ' "$out/settle-$clients-history.txt")
one=$(grep '^bench ' "$out/settle-1.txt")
added=$(grep '^added latency' "$out/settle-1.txt" | field p50)
rtt=$(grep '^added latency' "$out/settle-1.txt" | sed -nE 's/.*round trip p50 ([0-9.]+)ms.*/\1/p')
throughput=$(field throughput <<<"$line")
rss=$(grep '^rss' "$out/settle-$clients.txt" | sed -nE 's/.*=([0-9]+)MB.*/\1/p')

echo
echo "Settle vs pgbench, $(date -u +%Y-%m-%d), $(nproc) cores; outputs in $out"
echo
echo "| measurement | figure |"
echo "|---|---|"
echo "| Settle, instant participants, $clients clients, $sagas sagas | $throughput sagas/s, p50 $(field p50 <<<"$line") ms, p99 $(field p99 <<<"$line") ms, p999 $(field p999 <<<"$line") ms |"
if [ -n "$ceiling" ]; then
  echo "| pgbench ceiling, 4 commits per saga, $clients clients | $ceiling sagas/s, average latency $ceiling_lat ms |"
  echo "| ratio Settle / pgbench, median of $rounds rounds | $ratio (each round Settle / pgbench: $(sort -n -k4,4 "$out/rounds.txt" | awk '{ printf "%s%s / %s = %s", (NR > 1 ? "; " : ""), $2, $3, $1 }')) |"
else
  echo "| pgbench ceiling | not measured: pgbench is not installed |"
fi
history_throughput=$(field throughput <<<"$history_line")
echo "| Settle, same load, with 1,000,000 finished sagas (2,000,000 events) in the tables | $history_throughput sagas/s ($(awk -v h="$history_throughput" -v e="$throughput" 'BEGIN { printf "%.2f", h / e }') of the empty-table figure), p50 $(field p50 <<<"$history_line") ms, p99 $(field p99 <<<"$history_line") ms |"
echo "| Settle, 1 client, 1000 sagas | p50 $(field p50 <<<"$one") ms, p99 $(field p99 <<<"$one") ms per 3-step saga |"
echo "| added latency per step, 1 client | $added ms (participant round trip p50 $rtt ms subtracted) |"
if [ -n "$one_lat" ]; then
  echo "| pgbench, 1 client: 4 commits in a row | $one_lat ms average ($(awk -v l="$one_lat" 'BEGIN { printf "%.2f", l / 4 }') ms per commit) |"
  echo "| pgbench, 1 client: Settle's own 4 statements for a saga, on its schema (no HTTP, no coordinator) | $own_lat ms average ($(awk -v o="$own_lat" -v l="$one_lat" 'BEGIN { printf "%+.2f", (o - l) / 3 }') ms per step against the 4 plain commits) |"
fi
echo "| Settle 2PC, one-shot, 2 branches (prepare, commit), $clients clients, $sagas transactions | $(field throughput <<<"$twopc_line") transactions/s, p50 $(field p50 <<<"$twopc_line") ms, p99 $(field p99 <<<"$twopc_line") ms |"
if [ -n "$instructions" ]; then
  echo "| coordinator instructions per saga (callgrind, user space, 1000 sagas, 8 clients) | $instructions |"
fi
if [ -n "$pg_instructions" ]; then
  echo "| Postgres instructions per saga, 1 client (scripts/pg-instructions.sh: backend user space) | Settle's statements $(sed -nE 's/.*settle=([0-9]+).*/\1/p' <<<"$pg_instructions"), the naive four commits $(sed -nE 's/.*naive=([0-9]+).*/\1/p' <<<"$pg_instructions") ($(sed -nE 's/.*ratio=([0-9.]+).*/\1/p' <<<"$pg_instructions") ×) |"
  echo "| Postgres instructions per saga, the coordinator's own statements and parameters (settle-bench at 1 client against the cluster, every backend) | $(grep "own statements" "$out/pg-instructions.txt" | sed -nE 's/.*: ([0-9]+)$/\1/p') |"
fi
echo "| peak RSS, bench process (coordinator, clients, participants), $clients clients | $rss MB |"
