#!/usr/bin/env bash
# Makes sure Postgres (and, with --redis, Redis) answer on 127.0.0.1.
# Sourced by scripts/run.sh and scripts/test.sh. When a service is missing it
# is started, or installed with apt when running as root; otherwise this
# stops with a message that says exactly what to do.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  return 1
}

as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  if ! as_root; then return 1; fi
  command -v apt-get >/dev/null || return 1
  echo "==> installing $* with apt" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# Sets PG_URL_BASE (a server URL without a database name).
ensure_postgres() {
  PG_URL_BASE="${PG_URL_BASE:-postgres://postgres:postgres@127.0.0.1:5432}"
  if port_open 5432; then return 0; fi
  local installed_now=0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql postgresql-contrib || {
      cat >&2 <<'MSG'
error: PostgreSQL is not running on 127.0.0.1:5432 and could not be installed
(installing needs root and apt). Either:
  sudo apt-get install -y postgresql postgresql-contrib
  sudo pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
  sudo -u postgres psql -c "ALTER USER postgres PASSWORD 'postgres'"
or point DATABASE_URL (run) / STOREFRONT_TEST_PG (tests) at a server you have.
MSG
      return 1
    }
    installed_now=1
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "==> starting PostgreSQL $version" >&2
  if as_root; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  else
    pg_ctlcluster "$version" main start >&2 || true
  fi
  wait_port 5432 || { echo "error: PostgreSQL did not come up on 127.0.0.1:5432 (see /var/log/postgresql)" >&2; return 1; }
  if [ "$installed_now" = 1 ]; then
    # A fresh Debian cluster wants a password over TCP; give postgres one.
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
  fi
}

# The redis-server binary, installed with apt when missing; otherwise prints
# $1 (what to do instead) and fails.
ensure_redis_server_binary() {
  command -v redis-server >/dev/null && return 0
  apt_install redis-server && return 0
  printf '%s\n' "$1" >&2
  return 1
}

ensure_redis() {
  if port_open 6379; then return 0; fi
  ensure_redis_server_binary "error: Redis is not running on 127.0.0.1:6379 and could not be installed
(installing needs root and apt). Either:
  sudo apt-get install -y redis-server && sudo service redis-server start
or start any Redis 6+ on 127.0.0.1:6379." || return 1
  echo "==> starting Redis" >&2
  local dir="${TMPDIR:-/tmp}/storefront-redis"
  mkdir -p "$dir"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" >&2
  wait_port 6379 || { echo "error: Redis did not come up on 127.0.0.1:6379 (see $dir/redis.log)" >&2; return 1; }
}

# psql against the server; PGPASSWORD from the URL is honoured by libpq.
pg() { psql "$PG_URL_BASE/${1}" -v ON_ERROR_STOP=1 -qAt -c "$2"; }

# NATS with JetStream on 127.0.0.1:4222 (the JetStream sink's tests publish
# and read events back): started when the binary is there, installed with apt
# when root, otherwise this says what to do.
ensure_nats() {
  if port_open 4222; then return 0; fi
  if ! command -v nats-server >/dev/null; then
    apt_install nats-server || {
      cat >&2 <<'MSG'
error: no NATS server with JetStream on 127.0.0.1:4222, and nats-server could not be
installed (installing needs root and apt). Either:
  sudo apt-get install -y nats-server
or start any nats-server 2.9+ with JetStream: nats-server -a 127.0.0.1 -p 4222 -js
or point STOREFRONT_TEST_NATS at one (nats://host:port).
MSG
      return 1
    }
  fi
  echo "==> starting nats-server with JetStream" >&2
  local dir="${TMPDIR:-/tmp}/storefront-nats"
  mkdir -p "$dir"
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$dir/jetstream" >"$dir/nats.log" 2>&1 &
  wait_port 4222 || { echo "error: nats-server did not come up on 127.0.0.1:4222 (see $dir/nats.log)" >&2; return 1; }
}
