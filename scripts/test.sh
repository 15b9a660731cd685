#!/usr/bin/env bash
# The whole test suite: unit, property, SDK and end-to-end tests against the real
# PostgreSQL and Redis on this machine (started here when they are stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo test --workspace --locked "$@"
