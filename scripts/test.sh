#!/usr/bin/env bash
# The whole test suite, against real Postgres and Redis (started or installed
# when missing). Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

ensure_postgres
ensure_redis
# Debian's Chromium, for the headless check that /docs renders.
if ! command -v chromium >/dev/null; then
  apt_install chromium || echo "note: chromium is not installed and could not be (needs root and apt); the /docs browser test will be skipped" >&2
fi
if command -v chromium >/dev/null; then export STOREFRONT_REQUIRE_BROWSER=1; fi
export STOREFRONT_TEST_PG="${STOREFRONT_TEST_PG:-$PG_URL_BASE}"
export STOREFRONT_TEST_REDIS="${STOREFRONT_TEST_REDIS:-redis://127.0.0.1:6379}"

echo "==> cargo test (Postgres: ${STOREFRONT_TEST_PG%%@*}@..., Redis: $STOREFRONT_TEST_REDIS)" >&2
cargo test --all-targets "$@"
