#!/usr/bin/env bash
# The whole test suite, against real Postgres, Redis and NATS JetStream
# (started or installed when missing). Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

ensure_postgres
ensure_redis
# Unless the tests are pointed at another NATS server.
[ -n "${STOREFRONT_TEST_NATS:-}" ] || ensure_nats
# The Redis outage tests start and stop redis-server processes of their own,
# so they need the binary even when a Redis already answers on 6379.
ensure_redis_server_binary "error: the tests need the redis-server binary (the Redis outage tests run their own
servers on other ports), even with a Redis answering on 127.0.0.1:6379. Either:
  sudo apt-get install -y redis-server
or put any redis-server 6+ on PATH." || exit 1
# The tests that need an external tool skip themselves when it is missing,
# unless its STOREFRONT_REQUIRE_* switch is set (.ci/run sets all three:
# STOREFRONT_REQUIRE_BROWSER, STOREFRONT_REQUIRE_SCHEMATHESIS,
# STOREFRONT_REQUIRE_DIESEL); then the test fails, naming what to install.
# Debian's Chromium, for the headless check that /docs renders.
if ! command -v chromium >/dev/null; then
  apt_install chromium || echo "note: chromium is not installed and could not be (needs root and apt); the /docs browser test will be skipped (or fail, with STOREFRONT_REQUIRE_BROWSER set)" >&2
fi
if command -v chromium >/dev/null; then export STOREFRONT_REQUIRE_BROWSER=1; fi
# Schemathesis (PyPI, pinned) for the schema-driven fuzz test, in a venv kept
# between runs. STOREFRONT_SKIP_FUZZ=1 skips it (the test then says so, or
# fails with STOREFRONT_REQUIRE_SCHEMATHESIS set).
SCHEMATHESIS_VERSION=4.32.5
if [ -z "${STOREFRONT_SKIP_FUZZ:-}" ] && [ -z "${STOREFRONT_SCHEMATHESIS:-}" ]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/storefront/schemathesis-$SCHEMATHESIS_VERSION"
  if [ ! -x "$venv/bin/schemathesis" ]; then
    # Debian's python3 has the venv module without ensurepip (python3-venv),
    # and `python3 -m venv` then fails half-way: check for both.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      apt_install python3 python3-venv || true
    fi
    echo "==> installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv" >&2
    { python3 -m venv "$venv" && "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2; } || {
      rm -rf "$venv"
      cat >&2 <<MSG
error: could not install schemathesis $SCHEMATHESIS_VERSION (needs python3 with venv and
access to PyPI). Either:
  sudo apt-get install -y python3 python3-venv    # then run this again
or point STOREFRONT_SCHEMATHESIS at a schemathesis executable,
or skip the fuzz test with STOREFRONT_SKIP_FUZZ=1.
MSG
      exit 1
    }
  fi
  export STOREFRONT_SCHEMATHESIS="$venv/bin/schemathesis"
fi
# The diesel CLI (crates.io, pinned to the diesel in Cargo.lock), for the test
# that developers' `diesel migration run` / `redo` and `print-schema` work on
# migrations/ and reproduce src/db/schema.rs. Kept between runs like
# schemathesis; STOREFRONT_SKIP_DIESEL=1 skips that test (or makes it fail,
# with STOREFRONT_REQUIRE_DIESEL set).
DIESEL_CLI_VERSION=2.3.14
if [ -z "${STOREFRONT_SKIP_DIESEL:-}" ] && [ -z "${STOREFRONT_DIESEL:-}" ]; then
  root="${XDG_CACHE_HOME:-$HOME/.cache}/storefront/diesel-cli-$DIESEL_CLI_VERSION"
  if [ ! -x "$root/bin/diesel" ]; then
    # It links libpq (Debian: libpq-dev).
    if ! ls /usr/lib/*/libpq.so /usr/lib/libpq.so >/dev/null 2>&1; then
      apt_install libpq-dev || true
    fi
    echo "==> installing diesel_cli $DIESEL_CLI_VERSION from crates.io into $root" >&2
    cargo install -q --locked diesel_cli --version "=$DIESEL_CLI_VERSION" --no-default-features \
      --features postgres --root "$root" >&2 || {
      cat >&2 <<MSG
error: could not build diesel_cli $DIESEL_CLI_VERSION (it needs libpq's development files and
access to crates.io). Either:
  sudo apt-get install -y libpq-dev    # then run this again
or point STOREFRONT_DIESEL at a diesel executable,
or skip the diesel CLI test with STOREFRONT_SKIP_DIESEL=1.
MSG
      exit 1
    }
  fi
  export STOREFRONT_DIESEL="$root/bin/diesel"
fi
export STOREFRONT_TEST_PG="${STOREFRONT_TEST_PG:-$PG_URL_BASE}"
export STOREFRONT_TEST_REDIS="${STOREFRONT_TEST_REDIS:-redis://127.0.0.1:6379}"

echo "==> cargo test (Postgres: ${STOREFRONT_TEST_PG%%@*}@..., Redis: $STOREFRONT_TEST_REDIS)" >&2
# The binaries first: the instances test runs the workspace's load tester,
# which `cargo test` builds only as a test harness.
cargo build --workspace --bins
cargo test --all-targets "$@"

# Then, alone (it restarts the Postgres server every other test uses), the
# test that the service rides out a real database restart under load. It runs
# for the local Debian cluster when root, or with STOREFRONT_PG_RESTART set to
# the command that restarts your server; only for a full run.
if [ $# -eq 0 ] && [ -z "${STOREFRONT_PG_RESTART:-}" ] && as_root && command -v pg_ctlcluster >/dev/null &&
  [ -n "$(ls /etc/postgresql 2>/dev/null)" ] && [[ "$STOREFRONT_TEST_PG" == *@127.0.0.1:5432* || "$STOREFRONT_TEST_PG" == *@localhost:5432* ]]; then
  export STOREFRONT_PG_RESTART="pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n 1) main restart -m fast"
fi
if [ $# -eq 0 ] && [ -n "${STOREFRONT_PG_RESTART:-}" ]; then
  echo "==> Postgres restart under load (alone): $STOREFRONT_PG_RESTART" >&2
  cargo test --test api -- --ignored --exact reliability::the_server_recovers_after_a_postgres_restart_under_load
  wait_port 5432
elif [ $# -eq 0 ]; then
  echo "note: skipped the Postgres-restart test (needs root and the local Debian cluster, or STOREFRONT_PG_RESTART)" >&2
fi
