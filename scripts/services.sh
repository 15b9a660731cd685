#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, user postgres, trust auth) and Redis
# (127.0.0.1:6379) answer: starts them when installed but stopped, installs them
# with apt-get when missing and INSTALL_MISSING=1 (CI does this), and otherwise
# says how to install them. With INSTALL_MISSING=1 it also installs headless
# Chromium and chromedriver for the dashboard's browser test; without it, it only
# says they are missing (the quick start does not need them, that test fails).
set -euo pipefail

log() { echo "services: $*" >&2; }

pg_answers() { command -v pg_isready >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q; }
redis_answers() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

install_packages() {
  if [ "${INSTALL_MISSING:-0}" != "1" ]; then
    log "missing: $*. Install with: sudo apt-get install -y $* (or run with INSTALL_MISSING=1)"
    exit 1
  fi
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if pg_answers; then return; fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    install_packages postgresql postgresql-client
    local installed_now=1
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  if [ "${installed_now:-0}" = "1" ]; then
    # A fresh install: let local TCP connections in as postgres without a password,
    # as the tests and the quick start expect.
    local hba="/etc/postgresql/${version}/main/pg_hba.conf"
    if ! grep -q "settle: trust loopback" "$hba"; then
      { echo "# settle: trust loopback"; echo "host all all 127.0.0.1/32 trust"; echo "host all all ::1/128 trust"; cat "$hba"; } > "$hba.new"
      mv "$hba.new" "$hba"
      chown postgres:postgres "$hba"
    fi
  fi
  log "starting PostgreSQL ${version}"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_answers && break; sleep 0.5; done
  pg_answers || { log "PostgreSQL did not come up"; exit 1; }
}

ensure_redis() {
  if redis_answers; then return; fi
  if ! command -v redis-server >/dev/null; then
    install_packages redis-server
  fi
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 40); do redis_answers && break; sleep 0.25; done
  redis_answers || { log "Redis did not come up"; exit 1; }
}

ensure_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return; fi
  if [ "${INSTALL_MISSING:-0}" != "1" ]; then
    log "chromium and chromedriver are missing: the dashboard browser test will fail. Install with: sudo apt-get install -y chromium chromium-driver"
    return
  fi
  install_packages chromium chromium-driver
}

# The TLS test makes its certificate with the openssl command.
ensure_openssl() {
  command -v openssl >/dev/null && return
  if [ "${INSTALL_MISSING:-0}" != "1" ]; then
    log "openssl is missing: the TLS test will fail. Install with: sudo apt-get install -y openssl"
    return
  fi
  install_packages openssl
}

ensure_postgres
ensure_redis
ensure_browser
ensure_openssl
log "PostgreSQL and Redis are answering"
