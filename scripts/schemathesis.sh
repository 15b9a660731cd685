#!/usr/bin/env bash
# Property-based API test from the spec: schemathesis (pinned, in a virtual
# environment under target/) against a live `settle serve` with tokens, on a
# throwaway database of the shared PostgreSQL. Every operation, bounded in time;
# fails on any 5xx or any response the spec does not describe.
# Ends with "test result: ok. 1 passed; 0 failed" (or failed) for scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
work="$PWD/target/schemathesis"
venv="$work/venv"
db="settle_schemathesis_$$"
pg_url="postgres://postgres@127.0.0.1:5432"
mkdir -p "$work"

result() {
  if [ "$1" = ok ]; then echo "test result: ok. 1 passed; 0 failed"; else echo "test result: FAILED. 0 passed; 1 failed"; fi
}
fail() { echo "schemathesis.sh: $*" >&2; result failed; exit 1; }

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  rm -rf "$venv"
  python3 -m venv "$venv" || fail "python3 -m venv failed (install python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
    fail "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
fi

cargo build --locked -q -p settle-coordinator --bin settle || fail "building settle failed"
settle=target/debug/settle

# One token per role group: service for definitions, sagas and transactions,
# operator for the admin routes; and a reader everywhere, which reads and is
# refused (403) everything else.
token_of() { "$settle" token new "$1" "$2" | sed -n 's/^token: //p'; }
entry_of() { printf '%s:%s:%s\n' "$1" "$2" "$(printf '%s\n' "$3" | "$settle" token hash)"; }
service_token="$(token_of schemathesis-service service)"
operator_token="$(token_of schemathesis-operator operator)"
reader_token="$(token_of schemathesis-reader reader)"
[ -n "$service_token" ] && [ -n "$operator_token" ] && [ -n "$reader_token" ] || fail "settle token new printed no token"
tokens="$(entry_of schemathesis-service service "$service_token"),$(entry_of schemathesis-operator operator "$operator_token"),$(entry_of schemathesis-reader reader "$reader_token")"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

coordinator=""
cleanup() {
  [ -n "$coordinator" ] && kill "$coordinator" 2>/dev/null && wait "$coordinator" 2>/dev/null
  psql -q "$pg_url/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
}
trap cleanup EXIT

SETTLE__DATABASE__URL="$pg_url/$db" \
SETTLE__DATABASE__CREATE_IF_MISSING=true \
SETTLE__SERVER__LISTEN="127.0.0.1:$port" \
SETTLE__SERVER__MAX_WAIT=2s \
SETTLE__REDIS__KEY_PREFIX="settle-schemathesis-$$" \
SETTLE__COORDINATOR__INSTANCE_ID="schemathesis-$$" \
SETTLE__COORDINATOR__SAGAS_DIR=sagas \
SETTLE__AUTH__TOKENS="$tokens" \
SETTLE__LOG__LEVEL=warn \
  "$settle" serve > "$work/settle.log" 2>&1 &
coordinator=$!
for _ in $(seq 1 150); do
  curl -sf "$base/readyz" >/dev/null && break
  kill -0 "$coordinator" 2>/dev/null || { cat "$work/settle.log"; fail "the coordinator exited"; }
  sleep 0.2
done
curl -sf "$base/readyz" >/dev/null || fail "the coordinator did not become ready"
# The example definition (loaded from sagas/ at start) is there to be read and started.
curl -sf -H "Authorization: Bearer $service_token" "$base/v1/saga-definitions/order-checkout" >/dev/null ||
  fail "the example definition order-checkout is not registered"

run() { # token, filter arguments...
  local token="$1"; shift
  # From $work, so schemathesis keeps its .schemathesis/ cache under target/.
  (cd "$work" && timeout 300 "$venv/bin/schemathesis" run "$base/openapi.json" \
    --checks "${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance}" \
    --max-examples 30 --workers 1 --request-timeout 10 --generation-database none \
    --seed 1 --no-color --header "Authorization: Bearer $token" "$@") 2>&1 | tee -a "$work/run.log"
  return "${PIPESTATUS[0]}"
}
: > "$work/run.log"
run "$service_token" --exclude-path-regex '^/v1/admin/'; service_status=$?
run "$operator_token" --include-path-regex '^/v1/admin/'; operator_status=$?
run "$reader_token" --max-examples 10; reader_status=$?

echo "schemathesis (service token, all but /v1/admin): exit $service_status"
echo "schemathesis (operator token, /v1/admin): exit $operator_status"
echo "schemathesis (reader token, everything): exit $reader_status"
if [ "$service_status" = 0 ] && [ "$operator_status" = 0 ] && [ "$reader_status" = 0 ]; then result ok; else result failed; exit 1; fi
