#!/usr/bin/env python3
"""Prints the BENCHMARKS.md table from bench/results/*.json."""
import json, sys, pathlib

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
def load(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None
def st(name):
    r = load(name)
    return r["stats"] if r else None

pg = {c: load(f"pgbench-c{c}") for c in (1, 16, 64)}
rows = []
for c in (1, 16, 64):
    if pg[c]:
        rows.append((f"pgbench row-lock transaction, {c} clients", f"{pg[c]['tps']:.0f} tps", f"avg {pg[c]['latency_avg_ms']:.2f} ms", "baseline"))
def line(label, name, bar="", rate="req/s"):
    s = st(name)
    if s:
        rows.append((label, f"{s['throughput_rps']:.0f} {rate}", f"p50 {s['p50_ms']:.2f} / p99 {s['p99_ms']:.2f} ms, errors {s['errors']}", bar))
    return s
bare = line("bare actix-web JSON endpoint, 64 clients", "bare", "baseline")
f64 = line("flash sale, 64 clients", "flash-sale-c64", "", "orders/s")
line("flash sale, 256 clients", "flash-sale-c256", "", "orders/s")
cached = line("cached GET /products/{id}, 64 clients", "cached-product")
line("search, cached, 16 clients", "search-cached")
line("search (v1, with total) on 100k products, cache off, 1 client", "search-c1")
line("search (v1, with total) on 100k products, cache off, 4 clients", "search-c4")
search = line("search (v1, with total) on 100k products, cache off, 16 clients", "search")
search2 = line("search (v2 keyset, no total) on 100k products, cache off, 16 clients", "search-v2")
line("search (v1) on 100k products, cache off, 4 clients, every total counted (cache.search_totals=0)", "search-c4-counting", "contrast")
p1 = line("v2 page 1, cache off, 16 clients", "v2-page-1")
p90 = line("v2 page at row 90,000, cache off, 16 clients", "v2-page-90000")
line("v1 offset page at row 90,000 (contrast), cache off, 16 clients", "v1-offset-90000")
alone = line("product reads alone, 16 clients", "reads-alone")
storm = line("product reads during 50 concurrent logins, 16 clients", "reads-during-logins")
two = line("flash sale, two instances (1 HTTP worker each), 64 clients over both", "two-instances", "", "orders/s")
checkout_rounds = []
for r in (1, 2, 3):
    f = line(f"checkout round {r}: flash sale, 64 clients", f"checkout-round{r}-flash-sale-c64", "", "orders/s")
    c = load(f"checkout-round{r}-c64")
    if c:
        s = c["stats"]
        rows.append((f"checkout round {r}: holds, 64 clients back to back, each abandoned (expires after 1 s)",
                     f"{c['details']['holds_per_s']:.0f} holds/s",
                     f"p50 {s['p50_ms']:.2f} / p95 {s['p95_ms']:.2f} / p99 {s['p99_ms']:.2f} ms, errors {s['errors']}", ""))
    if f and c:
        checkout_rounds.append((c, f))
mix = load("checkout-mix-c64")
if mix:
    s, d = mix["stats"], mix["details"]
    rows.append(("checkout mix, 64 clients: 20% of holds abandoned, the rest confirmed after 200 ms",
                 f"{d['holds_per_s']:.0f} holds/s + {d['confirms_per_s']:.0f} confirms/s",
                 f"hold p50 {s['p50_ms']:.2f} / p95 {s['p95_ms']:.2f} / p99 {s['p99_ms']:.2f} ms; confirm p50 {d['confirm']['p50_ms']:.2f} / p95 {d['confirm']['p95_ms']:.2f} / p99 {d['confirm']['p99_ms']:.2f} ms", ""))
storms = [load(f"expiry-storm-round{r}") for r in (1, 2, 3)]
for r, e in enumerate(storms, 1):
    if e:
        d = e["details"]
        rows.append((f"expiry storm {r}: {d['holds_created']} holds due within {d['expires_at_spread_ms']:.0f} ms, 16 clients ordering another product",
                     f"all back {d['released_after_last_expiry_ms']:.0f} ms after the last expiry",
                     f"order p99 {d['orders_quiet']['p99_ms']:.2f} ms before, {d['orders_during_expiry']['p99_ms']:.2f} ms during", ""))

print("| workload | throughput | latency | |")
print("|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
bars = []
if f64 and pg[64]:
    ratio = f64["throughput_rps"] / max(pg[64]["tps"], 1)
    ok = ratio >= 25 and f64["p99_ms"] <= 50
    bars.append(("flash sale 64 clients >= 25x pgbench 64, p99 <= 50 ms", f"{ratio:.1f}x, p99 {f64['p99_ms']:.1f} ms", ok))
def median_ratio(pairs, num, den):
    """Median of num(a)/den(b) over the rounds' (a, b) pairs, and each pair as "a/b"."""
    ratios = sorted(num(a) / max(den(b), 1) for a, b in pairs)
    return ratios[len(ratios) // 2], ", ".join(f"{num(a):.0f}/{den(b):.0f}" for a, b in pairs)
rps = lambda s: s["throughput_rps"]
rounds = [(st(f"round{r}-flash-sale-c64"), load(f"round{r}-pgbench-c64")) for r in (1, 2, 3)]
rounds = [(f, p) for f, p in rounds if p and f]
if rounds:
    median, each = median_ratio(rounds, rps, lambda p: p["tps"])
    worst_p99 = max(f["p99_ms"] for f, _ in rounds)
    for bar in (25, 20):
        bars.append((f"flash sale 64 clients >= {bar}x pgbench 64, alternating rounds (median ratio), p99 <= 50 ms",
                     f"{median:.1f}x ({each}), p99 <= {worst_p99:.1f} ms", median >= bar and worst_p99 <= 50))
f256 = st("flash-sale-c256")
if f256:
    bars.append(("flash sale 256 clients >= 12,000 orders/s, p99 <= 30 ms", f"{f256['throughput_rps']:.0f}/s, p99 {f256['p99_ms']:.1f} ms", f256["throughput_rps"] >= 12000 and f256["p99_ms"] <= 30))
if cached and bare:
    r = cached["throughput_rps"] / max(bare["throughput_rps"], 1)
    bars.append(("cached read >= 50% of bare endpoint", f"{100*r:.0f}%", r >= 0.5))
for name, label in (("search-cached", "v1, cached, 16 clients"), ("search-c1", "v1, cache off, 1 client"), ("search-c4", "v1, cache off, 4 clients")):
    s = st(name)
    if s:
        bars.append((f"search p99 <= 20 ms on 100k products ({label})", f"{s['p99_ms']:.1f} ms", s["p99_ms"] <= 20))
if search:
    bars.append(("search p99 <= 20 ms on 100k products (v1, cache off, 16 clients)", f"{search['p99_ms']:.1f} ms", search["p99_ms"] <= 20))
if search2:
    bars.append(("search p99 <= 20 ms on 100k products (v2, cache off, 16 clients)", f"{search2['p99_ms']:.1f} ms", search2["p99_ms"] <= 20))
if p1 and p90:
    r = p90["p50_ms"] / max(p1["p50_ms"], 0.001)
    bars.append(("v2 page at row 90,000 within 2x of page 1 (p50)", f"{r:.2f}x", r <= 2))
if alone and storm:
    r = storm["p99_ms"] / max(alone["p99_ms"], 0.001)
    bars.append(("read p99 during login storm <= 3x without", f"{r:.2f}x", r <= 3))
rss = load("rss-flash-sale")
if rss:
    mb = rss["peak_rss_kb"] / 1024
    bars.append(("RSS <= 150 MB under the flash sale (peak)", f"{mb:.0f} MB", mb <= 150))
books = [load(n) for n in ("flash-sale-c64", "flash-sale-c256", "two-instances",
                          "round1-flash-sale-c64", "round2-flash-sale-c64", "round3-flash-sale-c64",
                          "round1-two-instances", "round2-two-instances", "round3-two-instances")]
for b in books:
    if b:
        d = b["details"]
        bars.append((f"books balance ({b['scenario']})", f"stock+sold=initial {d['stock_plus_sold_equals_initial']}, rows=201s {d['order_rows_equal_201s']}", d["stock_plus_sold_equals_initial"] and d["order_rows_equal_201s"] and d["stock_never_negative"]))
if two and f64:
    bars.append(("two instances: sum of throughput >= single instance (64 clients)", f"{two['throughput_rps']:.0f} vs {f64['throughput_rps']:.0f} orders/s", two["throughput_rps"] >= f64["throughput_rps"]))
pairs = [(st(f"round{r}-two-instances"), st(f"round{r}-flash-sale-c64")) for r in (1, 2, 3)]
pairs = [(t, f) for t, f in pairs if t and f]
if pairs:
    median, each = median_ratio(pairs, rps, rps)
    bars.append(("two instances >= single instance, alternating rounds (median ratio)", f"{median:.2f}x ({each})", median >= 1))
if checkout_rounds:
    ratios = sorted(c["details"]["holds_per_s"] / max(f["throughput_rps"], 1) for c, f in checkout_rounds)
    median = ratios[len(ratios) // 2]
    each = ", ".join(f"{c['details']['holds_per_s']:.0f}/{f['throughput_rps']:.0f}" for c, f in checkout_rounds)
    worst = max(c["stats"]["p99_ms"] for c, _ in checkout_rounds)
    bars.append(("checkout: holds/s >= 80% of the flash-sale orders/s (64 clients, alternating rounds, median), hold p99 <= 50 ms",
                 f"{100 * median:.0f}% ({each}), p99 <= {worst:.1f} ms", median >= 0.8 and worst <= 50))
    for c in [c for c, _ in checkout_rounds] + ([mix] if mix else []):
        d = c["details"]
        bars.append((f"books balance ({c['scenario']}): stock + reserved + ordered = initial, every hold settled",
                     f"{d['stock_plus_reserved_plus_ordered_equals_initial']}, rows=confirms {d['order_rows_equal_confirm_201s']}, settled {d['every_hold_settled']}",
                     d["stock_plus_reserved_plus_ordered_equals_initial"] and d["order_rows_equal_confirm_201s"] and d["every_hold_settled"]))
for e in storms:
    if e:
        d = e["details"]
        bars.append((f"10,000 holds due in one second all released within 2 s ({e['scenario']})",
                     f"{d['released_after_last_expiry_ms']:.0f} ms after the last expires_at ({d['released_after_first_expiry_ms']:.0f} ms after the first)",
                     d["released_after_last_expiry_ms"] <= 2000 and d["every_unit_back"] and d["holds_created"] >= 10000))
        bars.append((f"other product's order p99 during the expiry <= 3x before ({e['scenario']})",
                     f"{d['order_p99_ratio']:.2f}x", d["order_p99_ratio"] <= 3))
print("| bar | measured | met |")
print("|---|---|---|")
for b in bars:
    print(f"| {b[0]} | {b[1]} | {'yes' if b[2] else '**no**'} |")
