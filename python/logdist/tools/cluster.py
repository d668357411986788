"""Commands that talk to a running cluster (`generate`, `verify-weights`, `status`), and the small
blocking JSON-over-HTTP helpers they, `up`'s live view and the tests use. Daemons use aiohttp."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NamedTuple

import orjson

from logdist.errors import ConfigError
from logdist.tools import term


class Reply(NamedTuple):
    status: int
    doc: Any  # parsed JSON, or the text when the body is not JSON
    headers: dict[str, str]


class Unreachable(OSError):
    """Nothing answered at the URL (connection refused, timeout, DNS)."""


def request(method: str, url: str, body: Any = None, timeout: float = 5.0, raw: bytes | None = None) -> Reply:
    """One request; HTTP error statuses are returned, not raised. Raises Unreachable."""
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return _reply(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return _reply(e.code, e.read(), dict(e.headers))
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise Unreachable(f"{method} {url}: {reason}") from None


def _reply(status: int, body: bytes, headers: dict[str, str]) -> Reply:
    try:
        doc: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = body.decode("utf-8", "replace")
    return Reply(status, doc, headers)


def get(url: str, timeout: float = 5.0) -> Reply:
    return request("GET", url, timeout=timeout)


def post(url: str, body: Any = None, timeout: float = 5.0) -> Reply:
    return request("POST", url, body if body is not None else {}, timeout=timeout)


def base_url(url: str) -> str:
    """http://h:p/anything -> http://h:p (admin endpoints live at the root)."""
    p = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return f"{p.scheme}://{p.netloc}"


def analyzer_base(url: str) -> str:
    """An analyzer's base URL from its base or its /analyze endpoint URL."""
    u = url if "://" in url else f"http://{url}"
    u = u.rstrip("/")
    return u[: -len("/analyze")] if u.endswith("/analyze") else u


# --- generate ---------------------------------------------------------------------------------


def add_generate(p: argparse.ArgumentParser) -> None:
    from logdist.emitter.oneshot import add_oneshot_arguments

    add_oneshot_arguments(p)


def run_generate(args: argparse.Namespace) -> int:
    from logdist.emitter.oneshot import run_oneshot

    return run_oneshot(args)


# --- verify-weights ---------------------------------------------------------------------------


def add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", default="http://127.0.0.1:8081", help="distributor URL (its /api/v1/metrics lists analyzers)"
    )
    p.add_argument(
        "--analyzer",
        action="append",
        metavar="ID=URL[@WEIGHT]",
        help="check these analyzers directly instead of asking the distributor (repeatable)",
    )
    p.add_argument("--expected", type=int, default=None, help="messages expected in total (default: accepted)")
    p.add_argument("--tolerance", type=float, default=1.0, metavar="PP", help="allowed share error, points (1.0)")
    p.add_argument("--check", action="store_true", help="exit 1 if a share or the total is off")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _parse_analyzer_arg(text: str) -> dict[str, Any]:
    aid, sep, rest = text.partition("=")
    if not sep or not aid or not rest:
        raise ConfigError("analyzer", f"expected ID=URL[@WEIGHT], got {text!r}")
    url, _, w = rest.partition("@")
    try:
        weight = float(w) if w else 1.0
    except ValueError:
        raise ConfigError("analyzer", f"weight of {aid!r} is not a number: {w!r}") from None
    return {"id": aid, "url": url, "weight": weight}


def verify_weights(
    url: str | None,
    analyzers: list[dict[str, Any]] | None = None,
    expected: int | None = None,
    tolerance_pp: float = 1.0,
) -> dict[str, Any]:
    """Each analyzer's unique processed count (its own /processed) and share, against its weight."""
    accepted = None
    if analyzers is None:
        assert url is not None
        r = get(base_url(url) + "/api/v1/metrics")
        if r.status != 200 or not isinstance(r.doc, dict):
            raise Unreachable(f"GET {base_url(url)}/api/v1/metrics answered {r.status}")
        analyzers = [
            {"id": a["id"], "url": a.get("url") or a.get("endpoint", ""), "weight": float(a.get("weight", 0))}
            for a in r.doc.get("analyzers", [])
        ]
        accepted = (r.doc.get("totals") or {}).get("accepted")
    total_weight = sum(a["weight"] for a in analyzers) or 1.0
    rows = []
    for a in analyzers:
        row: dict[str, Any] = {"id": a["id"], "url": analyzer_base(a["url"]), "weight": a["weight"]}
        row["expected_share"] = a["weight"] / total_weight
        try:
            p = get(row["url"] + "/processed", timeout=3.0)
            ok = p.status == 200 and isinstance(p.doc, dict)
            row["processed"] = int(p.doc.get("processed_count", 0)) if ok else None
            row["duplicates"] = int(p.doc.get("duplicates", 0)) if ok else None
            row["error"] = None if ok else f"HTTP {p.status}"
        except Unreachable as exc:
            row["processed"] = row["duplicates"] = None
            row["error"] = str(exc)
        rows.append(row)
    total = sum(r["processed"] or 0 for r in rows)
    for row in rows:
        row["share"] = (row["processed"] or 0) / total if total else None
        row["diff_pp"] = (row["share"] - row["expected_share"]) * 100 if row["share"] is not None else None
        row["ok"] = row["diff_pp"] is not None and abs(row["diff_pp"]) <= tolerance_pp
    if expected is None:
        expected = accepted
    return {
        "analyzers": rows,
        "total_processed": total,
        "expected_total": expected,
        "total_ok": expected is None or total == expected,
        "shares_ok": bool(rows) and all(r["ok"] for r in rows),
        "tolerance_pp": tolerance_pp,
    }


def run_verify(args: argparse.Namespace) -> int:
    analyzers = [_parse_analyzer_arg(a) for a in args.analyzer] if args.analyzer else None
    try:
        res = verify_weights(args.url, analyzers, args.expected, args.tolerance)
    except Unreachable as exc:
        print(f"logdist verify-weights: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(res).decode())
    else:
        rows = [
            [
                r["id"],
                f"{r['weight']:g}",
                term.pct(r["expected_share"]),
                term.num(r["processed"]) if r["error"] is None else "unreachable",
                term.pct(r["share"]),
                "-" if r["diff_pp"] is None else f"{r['diff_pp']:+.2f}",
                "ok" if r["ok"] else "OFF",
            ]
            for r in res["analyzers"]
        ]
        print(term.table(["analyzer", "weight", "expected", "processed", "share", "diff pp", ""], rows, "lrrrrrl"))
        exp = res["expected_total"]
        line = f"total processed {term.num(res['total_processed'])}"
        if exp is not None:
            line += f" / expected {term.num(exp)} " + ("(ok)" if res["total_ok"] else "(MISMATCH)")
        print(line)
        for r in res["analyzers"]:
            if r["error"]:
                print(f"  {r['id']}: {r['error']}")
    if args.check and not (res["shares_ok"] and res["total_ok"]):
        return 1
    return 0


# --- status -----------------------------------------------------------------------------------


def add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8081", help="distributor URL")
    p.add_argument("--json", action="store_true", help="print the raw metrics as JSON")


def run_status(args: argparse.Namespace) -> int:
    base = base_url(args.url)
    try:
        health = get(base + "/health")
        metrics = get(base + "/api/v1/metrics")
        queue = get(base + "/queue")
    except Unreachable as exc:
        print(f"logdist status: {exc}", file=sys.stderr)
        return 1
    m = metrics.doc if isinstance(metrics.doc, dict) else {}
    q = queue.doc if isinstance(queue.doc, dict) else {}
    h = health.doc if isinstance(health.doc, dict) else {}
    if args.json:
        print(orjson.dumps({"health": h, "queue": q, "metrics": m}).decode())
        return 0 if health.status == 200 else 1
    t = m.get("totals") or {}
    print(
        f"distributor {base}: {h.get('status', health.status)}  backend {m.get('backend', h.get('backend', '?'))}  "
        f"durability {m.get('durability', h.get('durability', '?'))}  uptime {term.num(m.get('uptime_s'))} s"
    )
    age = q.get("oldest_age_s")
    print(
        f"queue {term.num(q.get('size'))} (oldest {'-' if age is None else f'{age:.1f} s'})  "
        f"accepted {term.num(t.get('accepted'))}  acked {term.num(t.get('acked'))}  "
        f"rejected {term.num(t.get('rejected'))}  duplicate packets {term.num(t.get('duplicate_packets'))}  "
        f"dead letters {term.num(t.get('dead_letters'))}"
    )
    rows = []
    for a in m.get("analyzers", []):
        lat = a.get("latency_ms") or {}
        rows.append(
            [
                a.get("id"),
                a.get("state"),
                f"{a.get('weight', 0):g}",
                term.pct(a.get("expected_share")),
                term.pct(a.get("share")),
                term.num(a.get("routed")),
                term.num(a.get("acked")),
                term.num(a.get("failed")),
                term.num(a.get("retried")),
                term.num(a.get("rerouted")),
                term.num(a.get("queued")),
                term.num(a.get("dead_lettered")),
                "-" if lat.get("p99") is None else f"{lat['p99']:.1f}",
            ]
        )
    headers = ["analyzer", "state", "weight", "expected", "share", "routed", "acked", "failed", "retried"]
    headers += ["rerouted", "queued", "dead", "p99 ms"]
    print(term.table(headers, rows, "llrrrrrrrrrrr"))
    return 0 if health.status == 200 else 1


# --- dlq --------------------------------------------------------------------------------------


def add_dlq(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "replay"), help="list the dead letters, or replay them")
    p.add_argument("ids", nargs="*", metavar="ID", help="replay only these dead letters (default: all)")
    p.add_argument("--url", default="http://127.0.0.1:8081", help="distributor URL")
    p.add_argument("--json", action="store_true", help="print the distributor's answer as JSON")


def run_dlq(args: argparse.Namespace) -> int:
    base = base_url(args.url)
    try:
        if args.action == "list":
            if args.ids:
                raise ConfigError("ids", "only `replay` takes ids")
            r = get(base + "/api/v1/dead-letters")
        else:
            r = post(base + "/api/v1/dead-letters/replay", {"ids": args.ids} if args.ids else {}, timeout=60.0)
    except Unreachable as exc:
        print(f"logdist dlq: {exc}", file=sys.stderr)
        return 1
    if r.status != 200 or not isinstance(r.doc, dict):
        print(f"logdist dlq: the distributor answered {r.status}: {r.doc}", file=sys.stderr)
        return 1
    doc = r.doc
    if args.json:
        print(orjson.dumps(doc).decode())
    elif args.action == "list":
        rows = [
            [d.get("id"), d.get("analyzer"), d.get("status"), term.num(d.get("count")), (d.get("detail") or "")[:60]]
            for d in doc.get("dead_letters", [])
        ]
        print(term.table(["id", "analyzer", "status", "messages", "detail"], rows, "llrrl"))
        print(f"{term.num(doc.get('count'))} dead letters, {term.num(doc.get('messages'))} messages")
    else:
        print(f"replayed {term.num(doc.get('replayed'))} dead letters ({term.num(doc.get('messages'))} messages)")
        if doc.get("missing"):
            print(f"not found: {', '.join(map(str, doc['missing']))}")
    return 1 if args.action == "replay" and doc.get("missing") else 0
