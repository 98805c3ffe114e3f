#!/usr/bin/env bash
# Make sure the services the test suite's CI runs use are up on this machine:
# PostgreSQL (127.0.0.1:5432, user postgres without password, database "test"),
# Redis (127.0.0.1:6379), RabbitMQ (127.0.0.1:5672, guest/guest), and Debian's Chromium
# for the browser tests. Starts what is stopped; installs from Debian's packages what
# is missing (needs root). Fails, naming the service, when one cannot be made ready.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PG_DATABASE=test

say() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "installing $*"
  apt-get install -y -qq "$@" >/dev/null
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND until it succeeds, or fail.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${seconds}s"
    sleep 1
  done
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# --- PostgreSQL --------------------------------------------------------------------------
pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }
pg_ok() { psql -h 127.0.0.1 -U postgres -w -d postgres -tAc 'select 1' >/dev/null 2>&1; }

ensure_postgresql() {
  if pg_ok; then say "PostgreSQL is up"; else
    if [ -z "$(pg_version)" ] || ! command -v pg_ctlcluster >/dev/null; then
      apt_install postgresql
    fi
    local version
    version=$(pg_version)
    [ -n "$version" ] || die "PostgreSQL: no cluster under /etc/postgresql after install"
    if ! port_open 127.0.0.1 5432; then
      say "starting PostgreSQL $version"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
      wait_for 60 "PostgreSQL" port_open 127.0.0.1 5432
    fi
    if ! pg_ok; then
      # A fresh Debian cluster asks for a password over TCP; the test suite connects
      # as postgres without one, as on the project's machines.
      local hba="/etc/postgresql/$version/main/pg_hba.conf"
      say "allowing password-less local TCP connections in $hba"
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
      pg_ctlcluster --skip-systemctl-redirect "$version" main reload
      wait_for 30 "PostgreSQL (trust auth)" pg_ok
    fi
    say "PostgreSQL is up"
  fi
  if [ "$(psql -h 127.0.0.1 -U postgres -w -d postgres -tAc \
      "select 1 from pg_database where datname = '$PG_DATABASE'")" != 1 ]; then
    say "creating database $PG_DATABASE"
    createdb -h 127.0.0.1 -U postgres -w "$PG_DATABASE"
  fi
}

# --- Redis -------------------------------------------------------------------------------
redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
  if redis_ok; then say "Redis is up"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  redis_ok && { say "Redis is up"; return; }  # the package may have started it
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 30 "Redis" redis_ok
  say "Redis is up"
}

# --- RabbitMQ ----------------------------------------------------------------------------
rabbitmq_ok() { port_open 127.0.0.1 5672; }

ensure_rabbitmq() {
  if rabbitmq_ok; then say "RabbitMQ is up"; return; fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  if ! rabbitmq_ok; then
    say "starting RabbitMQ"
    rabbitmq-server -detached
  fi
  wait_for 120 "RabbitMQ" rabbitmq_ok
  say "RabbitMQ is up"
}

# --- Chromium (browser tests) ------------------------------------------------------------
ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then say "Chromium is installed"; return; fi
  apt_install chromium
  [ -x /usr/bin/chromium ] || die "Chromium: /usr/bin/chromium missing after install"
  say "Chromium is installed"
}

ensure_postgresql
ensure_redis
ensure_rabbitmq
ensure_chromium
