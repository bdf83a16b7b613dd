#!/usr/bin/env bash
# Starts storefront on 127.0.0.1:8080 (override with PORT). Without
# DATABASE_URL it uses a local Postgres, starting or installing it; without
# REDIS_URL it runs with the in-process cache and rate limiter.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

if [ -z "${DATABASE_URL:-}" ]; then
  ensure_postgres
  if ! pg postgres "SELECT 1 FROM pg_database WHERE datname = 'storefront'" | grep -q 1; then
    echo "==> creating database storefront" >&2
    pg postgres "CREATE DATABASE storefront"
  fi
  export DATABASE_URL="$PG_URL_BASE/storefront"
fi

cargo build --release --locked --bin storefront
./target/release/storefront migrate
# Demo data, once: categories, products, and the demo accounts it prints.
./target/release/storefront seed --products "${SEED_PRODUCTS:-1000}" --if-empty
exec ./target/release/storefront serve
