#!/usr/bin/env bash
# One command that shows two-phase commit moving money between two banks: starts a
# throwaway PostgreSQL cluster for the banks (port 5499, max_prepared_transactions=16,
# under /tmp), the two XA account services of bank-participants (bank-a: alice,
# bank-b: bob, 1000 each) and a coordinator on 127.0.0.1:8090 (its own database on
# the shared server at 127.0.0.1:5432); then transfers 100 from alice to bob (both
# banks vote yes: committed) and 5000 (bank-a votes no: aborted), printing the
# balances after each. Everything it started is stopped and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT=5499
COORDINATOR=http://127.0.0.1:8090
BANK_A=http://127.0.0.1:7201
BANK_B=http://127.0.0.1:7202
logs=target/transfer-demo
mkdir -p "$logs"

say() { echo "transfer-demo: $*" >&2; }

scripts/services.sh
cargo build --locked -p settle-coordinator -p settle-examples

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
[ -n "$pg_bin" ] || { say "PostgreSQL is not installed (see scripts/services.sh)"; exit 1; }
if "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  say "something already answers on port $PG_PORT; stop it first"; exit 1
fi
for port in 7201 7202 8090; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    say "something already listens on port $port; stop it first"; exit 1
  fi
done

# initdb and postgres refuse to run as root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster="$(mktemp -d /tmp/settle-transfer-demo-XXXXXX)"
banks=""
coordinator=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$coordinator" ] && kill "$coordinator" 2>/dev/null
  [ -n "$banks" ] && kill "$banks" 2>/dev/null
  wait 2>/dev/null || true
  if [ -f "$cluster/data/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$cluster/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$cluster"
}
trap cleanup EXIT INT TERM
[ "$(id -u)" = 0 ] && chown postgres:postgres "$cluster"

say "starting a throwaway PostgreSQL cluster for the banks on port $PG_PORT"
(cd "$cluster" && as_postgres "$pg_bin/initdb" -D "$cluster/data" -U postgres -A trust \
  -E UTF8 --locale=C --no-instructions) > "$logs/initdb.log" 2>&1 \
  || { cat "$logs/initdb.log"; exit 1; }
cat >> "$cluster/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$cluster'
max_prepared_transactions = 16
EOF
(cd "$cluster" && as_postgres "$pg_bin/pg_ctl" -D "$cluster/data" -l "$cluster/postgres.log" -w start) \
  > /dev/null || { cat "$cluster/postgres.log"; exit 1; }

SETTLE_BANK_A_URL="postgres://postgres@127.0.0.1:$PG_PORT/bank_a" \
SETTLE_BANK_B_URL="postgres://postgres@127.0.0.1:$PG_PORT/bank_b" \
  target/debug/bank-participants > "$logs/banks.log" 2>&1 &
banks=$!
SETTLE__SERVER__LISTEN=127.0.0.1:8090 \
SETTLE__DATABASE__URL=postgres://postgres@127.0.0.1:5432/settle_transfer_demo \
  target/debug/settle serve > "$logs/settle.log" 2>&1 &
coordinator=$!

# Waits until $1 answers 2xx; $2 is the process behind it, $3 its log.
wait_for() {
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { say "$1 did not come up:"; cat "$3"; exit 1; }
    sleep 0.2
  done
  say "$1 did not answer within 30s:"; cat "$3"; exit 1
}
wait_for "$BANK_A/healthz" "$banks" "$logs/banks.log"
wait_for "$BANK_B/healthz" "$banks" "$logs/banks.log"
wait_for "$COORDINATOR/readyz" "$coordinator" "$logs/settle.log"
say "banks on $BANK_A and $BANK_B, coordinator on $COORDINATOR (logs in $logs/)"

balance() {
  "$pg_bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -Atc \
    "SELECT balance FROM accounts WHERE id = '$2'"
}
prepared() {
  "$pg_bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc \
    "SELECT count(*) FROM pg_prepared_xacts"
}
balances() {
  echo "  alice (bank-a): $(balance bank_a alice)   bob (bank-b): $(balance bank_b bob)   prepared transactions left: $(prepared)"
}

# A one-shot transaction: debit alice at bank-a, credit bob at bank-b.
transfer() {
  local amount=$1 body created id
  body=$(cat <<EOF
{"timeout": "30s", "participants": [
  {"name": "debit-alice", "prepare_url": "$BANK_A/prepare", "commit_url": "$BANK_A/commit",
   "abort_url": "$BANK_A/abort", "payload": {"account": "alice", "delta": -$amount}},
  {"name": "credit-bob", "prepare_url": "$BANK_B/prepare", "commit_url": "$BANK_B/commit",
   "abort_url": "$BANK_B/abort", "payload": {"account": "bob", "delta": $amount}}]}
EOF
)
  echo "\$ curl -s -X POST $COORDINATOR/v1/transactions -H 'Content-Type: application/json' -d '<transfer of $amount from alice to bob>'"
  created=$(curl -s -X POST "$COORDINATOR/v1/transactions" -H 'Content-Type: application/json' -d "$body")
  id=$(printf '%s' "$created" | sed -n 's/.*"id": *"\([0-9a-f-]\{36\}\)".*/\1/p')
  if [ -z "$id" ]; then
    say "the coordinator did not create the transaction:"; echo "$created"; exit 1
  fi
  echo "\$ curl -s '$COORDINATOR/v1/transactions/$id?wait=10s'"
  curl -s "$COORDINATOR/v1/transactions/$id?wait=10s"
  echo
}

echo
echo "# before:"
balances
echo
echo "# 100 from alice to bob: both banks prepare and vote yes, so the coordinator commits"
transfer 100
balances
echo
echo "# 5000 from alice to bob: bank-a votes no (alice holds too little), so the coordinator aborts"
transfer 5000
balances
