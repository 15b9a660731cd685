#!/usr/bin/env bash
# One command from a fresh checkout to a running coordinator with the example
# order workflow: starts PostgreSQL/Redis if needed, builds, runs the example
# participants and the coordinator (which creates its database, migrates and loads
# sagas/), shows one order that completes and one that is compensated, then keeps
# serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
cargo build --locked -p settle-coordinator -p settle-examples
mkdir -p target/quickstart
target/debug/order-participants > target/quickstart/participants.log 2>&1 &
participants=$!
target/debug/settle serve > target/quickstart/settle.log 2>&1 &
coordinator=$!
trap 'kill $coordinator $participants 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:8080/readyz >/dev/null && break
  kill -0 $coordinator 2>/dev/null || { cat target/quickstart/settle.log; exit 1; }
  sleep 0.2
done
echo "coordinator ready on http://127.0.0.1:8080 (logs in target/quickstart/)"
echo
echo '$ curl -s -X POST "http://127.0.0.1:8080/v1/sagas?wait=10s" -H "Idempotency-Key: order-$RANDOM" -H "Content-Type: application/json" \'
echo "    -d '{\"definition\":\"order-checkout\",\"input\":{\"sku\":\"widget\",\"quantity\":2,\"amount\":120,\"customer\":\"ada\"}}'"
curl -s -X POST "http://127.0.0.1:8080/v1/sagas?wait=10s" -H "Idempotency-Key: order-$RANDOM$RANDOM" \
  -H "Content-Type: application/json" \
  -d '{"definition":"order-checkout","input":{"sku":"widget","quantity":2,"amount":120,"customer":"ada"}}'
echo; echo
echo '# payments declines amounts over 1000, so this one is compensated:'
echo '$ curl -s -X POST "http://127.0.0.1:8080/v1/sagas?wait=10s" -H "Content-Type: application/json" \'
echo "    -d '{\"definition\":\"order-checkout\",\"input\":{\"sku\":\"widget\",\"quantity\":1,\"amount\":5000,\"customer\":\"bob\"}}'"
curl -s -X POST "http://127.0.0.1:8080/v1/sagas?wait=10s" -H "Content-Type: application/json" \
  -d '{"definition":"order-checkout","input":{"sku":"widget","quantity":1,"amount":5000,"customer":"bob"}}'
echo; echo
echo "serving; press Ctrl-C to stop"
wait $coordinator
