#!/usr/bin/env bash
# The whole test suite: unit, property, SDK and end-to-end tests against the real
# PostgreSQL and Redis on this machine (started here when they are stopped).
# Ends with one summary line: "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh || exit 1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
scripts/schemathesis.sh 2>&1 | tee -a "$log"; [ "${PIPESTATUS[0]}" = 0 ] || status=1
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
