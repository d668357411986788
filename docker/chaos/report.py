"""Chaos-suite verdict: compares what the distributor accepted with what the analyzers processed.

    python report.py --out DIR --config docker/config/distributor.json [--metrics URL-or-file://] [--steps FILE]

Reads DIR/acked (the driver's accepted packets), DIR/ids/*.ids (the recorder's acknowledged ids,
one file per analyzer process), DIR/driver.json. Prints the table and exits 1 when an accepted
message was not processed, or the driver did not complete.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import urllib.request
from collections import Counter


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--metrics", help="distributor /api/v1/metrics: a URL, or file:// of a saved answer (optional)")
    ap.add_argument("--durability", default="?")
    ap.add_argument("--incomplete", action="append", default=[], help="a reason the run did not complete")
    args = ap.parse_args()

    accepted: set[str] = set()
    acked_path = os.path.join(args.out, "acked")
    if os.path.exists(acked_path):
        with open(acked_path, encoding="utf-8") as f:
            for line in f:
                pid, _, count = line.strip().partition(" ")
                if pid:
                    accepted.update(f"{pid}-{i}" for i in range(int(count)))

    deliveries: Counter[str] = Counter()
    per_analyzer: dict[str, Counter[str]] = {}
    for path in sorted(glob.glob(os.path.join(args.out, "ids", "*.ids"))):
        name = os.path.basename(path).rsplit("-", 1)[0]
        c = per_analyzer.setdefault(name, Counter())
        with open(path, encoding="utf-8") as f:
            for line in f:
                mid = line.strip()
                if mid:
                    deliveries[mid] += 1
                    c[mid] += 1
    processed = set(deliveries)
    lost = accepted - processed
    extra = processed - accepted  # processed although the driver never saw a 2xx: not a loss
    duplicates = sum(deliveries.values()) - len(processed)

    with open(args.config, encoding="utf-8") as f:
        weights = {a["id"]: float(a["weight"]) for a in json.load(f)["analyzers"]}
    total_w = sum(weights.values()) or 1.0

    driver: dict[str, object] = {}
    dpath = os.path.join(args.out, "driver.json")
    if os.path.exists(dpath):
        with open(dpath, encoding="utf-8") as f:
            driver = json.load(f)
    incomplete = list(args.incomplete)
    if not driver:
        incomplete.append("the traffic driver wrote no summary")
    elif not driver.get("complete"):
        incomplete.append(f"the traffic driver gave up on {driver.get('given_up')} packet(s)")

    metrics: dict[str, object] = {}
    if args.metrics:
        try:
            metrics = json.load(urllib.request.urlopen(args.metrics, timeout=5))
        except (OSError, ValueError) as e:
            print(f"(distributor metrics unavailable: {e})")

    print()
    print(f"chaos result (durability {args.durability})")
    print("-" * 64)
    rows = [
        ("accepted (2xx to the driver)", len(accepted)),
        ("processed (unique ids acked by analyzers)", len(processed)),
        ("duplicates (deliveries beyond the first)", duplicates),
        ("lost (accepted, never processed)", len(lost)),
        ("processed, 2xx not seen by the driver", len(extra)),
    ]
    for label, value in rows:
        print(f"  {label:<46} {value:>12}")
    if driver:
        print(f"  {'driver retries (errors by kind)':<46} {driver.get('retries'):>12}  {driver.get('errors')}")
    print()
    print(f"  {'analyzer':<12} {'weight':>7} {'expected':>9} {'delivered':>10} {'share':>7} {'unique':>9}")
    all_deliveries = sum(deliveries.values()) or 1
    for name in sorted(set(weights) | set(per_analyzer)):
        c = per_analyzer.get(name, Counter())
        n = sum(c.values())
        w = weights.get(name, 0.0)
        print(f"  {name:<12} {w:>7.2f} {w / total_w:>9.1%} {n:>10} {n / all_deliveries:>7.1%} {len(c):>9}")
    m_an = metrics.get("analyzers") if isinstance(metrics, dict) else None
    if isinstance(m_an, list) and m_an:
        print()
        print("  distributor's view (since its last start): id, acked, share, expected_share, state")
        for a in m_an:
            if isinstance(a, dict):
                print(
                    f"    {a.get('id')!s:<12} acked={a.get('acked')!s:<8} share={a.get('share')!s:<22} "
                    f"expected={a.get('expected_share')!s:<8} state={a.get('state')}"
                )
        print(f"    totals: {metrics.get('totals')}")
    if lost:
        sample = sorted(lost)[:10]
        print(f"\n  LOST {len(lost)} accepted message(s), e.g. {sample}")
    for why in incomplete:
        print(f"\n  INCOMPLETE: {why}")
    ok = not lost and not incomplete and bool(accepted)
    print("-" * 64)
    print("  VERDICT:", "PASS (nothing accepted was lost)" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
