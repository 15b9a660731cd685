#!/usr/bin/env bash
# Postgres's own work per saga, counted in instructions: the one Postgres figure that
# does not move with the machine's load (docs/PERFORMANCE.md, "Postgres's share").
# A throwaway cluster (initdb on a free port, run as the postgres user) is started
# under `valgrind --tool=callgrind`; pgbench then runs, at 1 client, Settle's own
# statements for a saga (settle-bench --pgbench-script: the creation batch and three
# state-write batches of one, on a database migrated by settle-under-test) and the
# naive four commits (bench/saga_writes.sql). Each is run for 30 and for 130 sagas on
# a connection of its own, twice; the backend's user-space instructions per saga are
# the difference of the two counts divided by 100 (start-up, catalog loading and the
# first plans cancel out), and the second pair is reported (the first sets hint bits
# in a fresh database's catalogs). Then settle-bench itself runs 30 and 130 sagas at
# 1 client against the cluster (SETTLE_TEST_POSTGRES_SERVER; its coordinator in-process, its
# instant participants), twice: every backend's instructions are summed, so this
# counts what the coordinator's real statements with their real parameters cost,
# connections and background loops included (the creation and state-write backends
# are most of it). The cluster and its directory are removed at the end.
# Usage: scripts/pg-instructions.sh        (needs valgrind and pgbench; SETTLE_BIN=DIR measures another build)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind pgbench psql; do
  command -v "$tool" >/dev/null || { echo "pg-instructions: $tool is not installed" >&2; exit 1; }
done
# SETTLE_BIN: the directory of the settle-bench and settle-under-test to measure
# (another build's, for a before and after); by default this checkout's, built here.
bin_dir="${SETTLE_BIN:-target/release}"
[ -z "${SETTLE_BIN:-}" ] && cargo build --release --locked -p settle-tests --bin settle-bench --bin settle-under-test
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
dir=$(mktemp -d /tmp/settle-pg-instructions.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=()
[ "$(id -u)" = 0 ] && { chown postgres "$dir"; as_pg=(runuser -u postgres --); }
pg=(-h 127.0.0.1 -p "$port" -U postgres)
export PGSSLMODE=disable
server=""
cleanup() {
  if [ -n "$server" ]; then
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust >"$dir/initdb.log" 2>&1
cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
autovacuum = off
ssl = off
EOF
"${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" \
  "$bin/postgres" -D "$dir/data" >"$dir/server.log" 2>&1 &
server=$!
for _ in $(seq 120); do psql "${pg[@]}" -qAtc "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done

psql "${pg[@]}" -qc "CREATE DATABASE settle" -c "CREATE DATABASE naive"
SETTLE__DATABASE__URL="postgres://postgres@127.0.0.1:$port/settle" "$bin_dir/settle-under-test" migrate \
  >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; exit 1; }
psql "${pg[@]}" -d settle -qc "INSERT INTO saga_definitions (name, version, spec, digest) VALUES ('bench', 1, '{}', 'bench')"
psql "${pg[@]}" -d naive -q -v ON_ERROR_STOP=1 -f bench/schema.sql
"$bin_dir/settle-bench" --pgbench-script >"$dir/settle.sql"

# A backend writes its counts as it exits, after its client has gone. `files`
# lists the counts files there are; `counts_since LISTING` waits until the
# postmaster is back to its own processes, then prints the instruction count of
# every file that appeared since LISTING, one a line.
postmaster=$(head -n1 "$dir/data/postmaster.pid")
children() { pgrep -c -P "$postmaster" || true; }
files() { ls "$dir"/cg.* 2>/dev/null | sort || true; }
counts_since() {
  local file
  for _ in $(seq 100); do
    [ "$(children)" -le "$own" ] && break
    sleep 0.2
  done
  for file in $(comm -13 <(echo "$1") <(files)); do
    sed -n 's/^summary: //p' "$file"
  done
}
# `count SCRIPT DB N` runs N sagas on one connection and prints its backend's
# instructions: the largest count that appeared (psql's short sessions write small ones).
count() {
  local before
  before=$(files)
  pgbench "${pg[@]}" -n -M prepared -c 1 -t "$3" -f "$1" "$2" >"$dir/pgbench.log" 2>&1 \
    || { cat "$dir/pgbench.log" >&2; exit 1; }
  counts_since "$before" | sort -n | tail -n1
}
per_saga() {
  local short long
  for _ in 1 2; do
    short=$(count "$1" "$2" 30)
    long=$(count "$1" "$2" 130)
  done
  echo $(( (long - short) / 100 ))
}
# The postmaster's own processes, once the set-up's psql sessions have gone.
sleep 1
own=$(children)
# Under the planner settings of the writer's own sessions, which its statements' plans rely on.
writer_options=$("$bin_dir/settle-bench" --writer-options 2>/dev/null) && [ -n "$writer_options" ] \
  || { echo "pg-instructions: $bin_dir/settle-bench has no --writer-options (an older build)" >&2; exit 1; }
settle=$(PGOPTIONS="$writer_options" per_saga "$dir/settle.sql" settle)
naive=$(per_saga bench/saga_writes.sql naive)
echo "postgres instructions per saga: settle=$settle naive=$naive ratio=$(awk -v s="$settle" -v n="$naive" 'BEGIN { printf "%.2f", s / n }')"

# `coordinator N` runs N sagas through settle-bench on a database of its own and
# prints the instructions of every backend that ran meanwhile, summed.
coordinator() {
  local before
  before=$(files)
  SETTLE_TEST_POSTGRES_SERVER="postgres://postgres@127.0.0.1:$port" "$bin_dir/settle-bench" \
    --sagas "$1" --clients 1 --warmup 20 >"$dir/bench.log" 2>&1 || { cat "$dir/bench.log" >&2; exit 1; }
  counts_since "$before" | awk '{ sum += $1 } END { print sum + 0 }'
}
for _ in 1 2; do
  short=$(coordinator 30)
  long=$(coordinator 130)
done
[ "$long" -gt "$short" ] || {
  echo "pg-instructions: settle-bench ran nothing on the cluster (a build without SETTLE_TEST_POSTGRES_SERVER?)" >&2
  exit 1
}
echo "postgres instructions per saga, the coordinator's own statements (settle-bench, 1 client): $(( (long - short) / 100 ))"
