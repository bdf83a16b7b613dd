#!/usr/bin/env bash
# The events bar: the 64-client flash sale without subscribers, then with a
# webhook endpoint (a receiver the load tester runs) subscribed to
# order.created and the NATS JetStream sink on, in alternating rounds on two
# servers over one database. Each subscribed round reports how long after the
# sale's end the last order's event was delivered and published.
# Results: bench/results/events-*.json.
# Usage: bench/events.sh [seconds per sale, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
SECS="${1:-10}"
ROUNDS="${2:-3}"
ensure_postgres
ensure_nats

DB=storefront_bench_events
OUT=bench/results
mkdir -p "$OUT"
pg postgres "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
pg postgres "CREATE DATABASE $DB"
export DATABASE_URL="$PG_URL_BASE/$DB"
cargo build --release --locked
BIN=./target/release
$BIN/storefront seed --products 1000

# The sink's stream of this run (deleted at the end).
STREAM="STOREFRONT_BENCH_$$"
nats_delete_stream() { # name: a JetStream API request over the NATS protocol
  exec 3<>/dev/tcp/127.0.0.1/4222
  printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$1" >&3
  timeout 2 head -c 512 <&3 >/dev/null || true
  exec 3>&-
}

JWT_SECRET_RUN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Both servers deliver webhooks (every instance does): both must allow the
# load tester's receiver on 127.0.0.1.
start_server() { # port, log
  APP_ENVIRONMENT=production JWT_SECRET=$JWT_SECRET_RUN \
  APP__SERVER__HOST=127.0.0.1 PORT="$1" APP__RATE_LIMIT__ENABLED=false APP__WEBHOOKS__ALLOW_PRIVATE_TARGETS=true \
  RUST_LOG=warn $BIN/storefront serve > "$2" 2>&1 &
  echo $!
}
wait_ready() { # port
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && break; sleep 0.2; done
}
PLAIN=$(start_server 18090 "$OUT/server-events-plain.log")
SUBSCRIBED=$(NATS_URL=nats://127.0.0.1:4222 APP__EVENTS__NATS_STREAM="$STREAM" \
  APP__EVENTS__NATS_SUBJECT_PREFIX="storefront_bench_$$" start_server 18091 "$OUT/server-events-subscribed.log")
trap 'kill $PLAIN $SUBSCRIBED 2>/dev/null || true; nats_delete_stream "$STREAM"' EXIT
wait_ready 18090
wait_ready 18091

for r in $(seq 1 "$ROUNDS"); do
  $BIN/loadtest --base-url http://127.0.0.1:18090 --out "$OUT" \
    flash-sale --clients 64 --users 64 --seconds "$SECS" --name "events-round$r-none"
  $BIN/loadtest --base-url http://127.0.0.1:18091 --out "$OUT" \
    flash-sale --clients 64 --users 64 --seconds "$SECS" --webhook --jetstream --name "events-round$r-subscribed"
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(n): return json.load(open(f"{out}/{n}.json"))
ratios = []
print("| round | orders/s, no subscribers | orders/s, webhook + JetStream | ratio | p99 ms (none / subscribed) | last webhook after end, s | all published after, s |")
print("|---|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    a, b = load(f"events-round{r}-none"), load(f"events-round{r}-subscribed")
    sa, sb = a["stats"], b["stats"]
    ratio = sb["throughput_rps"] / sa["throughput_rps"]
    ratios.append(ratio)
    c = b["details"]
    print(f"| {r} | {sa['throughput_rps']:.0f} | {sb['throughput_rps']:.0f} | {ratio:.2f} | "
          f"{sa['p99_ms']:.1f} / {sb['p99_ms']:.1f} | "
          f"{c.get('webhook_lag_after_end_secs')} ({c.get('webhook_events')} events, all: {c.get('webhook_all_delivered')}) | "
          f"{c.get('jetstream_lag_after_end_secs')} (all: {c.get('jetstream_all_published')}) |")
print(f"\nmedian ratio: {statistics.median(ratios):.2f} (bar >= 0.85); every event within 10 s of the end: bar")
PY
