"""Commands that talk to a running cluster (`generate`, `verify-weights`, `status`), and the small
blocking JSON-over-HTTP helpers they, `up`'s live view and the tests use. Daemons use aiohttp."""

from __future__ import annotations

import argparse
import math
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NamedTuple

import orjson

from logdist import tls
from logdist.errors import ConfigError
from logdist.tools import term


class Reply(NamedTuple):
    status: int
    doc: Any  # parsed JSON, or the text when the body is not JSON
    headers: dict[str, str]


class Unreachable(OSError):
    """Nothing answered at the URL (connection refused, timeout, DNS)."""


#: the bearer token every request of this process sends (set_token: --token/--token-file)
_token: str | None = None


def add_token_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--token", metavar="TOKEN", help="bearer token to send (visible in `ps`: prefer --token-file)")
    g.add_argument("--token-file", metavar="FILE", help="file whose first token line is the bearer token to send")


def read_token(args: argparse.Namespace) -> str | None:
    """The token of --token or --token-file (its first line that is no blank nor # comment)."""
    tok: str | None = getattr(args, "token", None)
    path: str | None = getattr(args, "token_file", None)
    if path:
        from logdist.auth import read_token_file

        toks = read_token_file(path, "token-file")
        if not toks:
            raise ConfigError("token-file", f"{path!r} holds no token")
        tok = toks[0]
    return tok


def set_token(args: argparse.Namespace) -> None:
    global _token
    _token = read_token(args)


def request(method: str, url: str, body: Any = None, timeout: float = 5.0, raw: bytes | None = None) -> Reply:
    """One request; HTTP error statuses are returned, not raised. Raises Unreachable.
    A POST/PUT/PATCH/DELETE says application/json even when bodiless (admin requests must)."""
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None or method in ("POST", "PUT", "PATCH", "DELETE"):
        req.add_header("Content-Type", "application/json")
    if _token is not None:
        req.add_header("Authorization", f"Bearer {_token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls.tools_context()) as r:  # --cacert
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
#
# Random routing puts each message on analyzer i with probability p_i (its weight's share), so
# of n messages analyzer i gets Binomial(n, p_i): at n = 800 and p = 0.1 the standard deviation
# is 1.06 points, and a fixed 1-point tolerance flags a correct distributor most of the time.
# The check instead gives each analyzer the exact binomial interval that holds its count with
# probability 1 - alpha/k (k analyzers, Bonferroni), so a correct distributor is flagged with
# probability at most alpha (0.001) whatever n is, and the interval narrows as n grows. The
# chi-square goodness-of-fit p-value over all analyzers is printed beside it.


def _log_pmf(x: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * math.log(p) + (n - x) * math.log1p(-p)


def binomial_interval(n: int, p: float, tail: float) -> tuple[int, int]:
    """The smallest lo and hi with P(X < lo) <= tail and P(X > hi) <= tail, X ~ Binomial(n, p),
    summed exactly over the window where the mass is (mean +- 12 sd; beyond it < 1e-30)."""
    if n == 0 or p <= 0.0:
        return 0, 0
    if p >= 1.0:
        return n, n
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    x0, x1 = max(0, int(mean - 12 * sd - 10)), min(n, int(mean + 12 * sd + 10))
    pmf = [math.exp(_log_pmf(x, n, p)) for x in range(x0, x1 + 1)]
    lo, acc = x0, 0.0
    for i, m in enumerate(pmf):
        if acc + m > tail:
            lo = x0 + i
            break
        acc += m
    hi, acc = x1, 0.0
    for i in range(len(pmf) - 1, -1, -1):
        if acc + pmf[i] > tail:
            hi = x0 + i
            break
        acc += pmf[i]
    return lo, hi


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) (series below a + 1, continued
    fraction above, as in Numerical Recipes' gammq)."""
    if x <= 0.0:
        return 1.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b, c, d = x + 1.0 - a, 1.0 / tiny, 1.0 / (x + 1.0 - a)
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(log_front) * h)


def chi_square(counts: list[int], shares: list[float]) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of the counts against the expected shares, over
    the analyzers expected to get messages."""
    n = sum(counts)
    cells = [(c, s * n) for c, s in zip(counts, shares, strict=True) if s > 0]
    if n == 0 or len(cells) < 2:
        return 0.0, 0, 1.0
    stat = sum((c - e) ** 2 / e for c, e in cells)
    df = len(cells) - 1
    return stat, df, gamma_q(df / 2.0, stat / 2.0)


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
    p.add_argument(
        "--expect",
        action="append",
        metavar="ID=WEIGHT",
        help="the shares to check against (repeatable; normalized; default: the configured weights)",
    )
    p.add_argument("--expected", type=int, default=None, help="messages expected in total (default: accepted)")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.001,
        help="false-alarm probability of the share check for a correct distributor (0.001: 99.9%%)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        metavar="PP",
        help="a fixed allowed share error in points instead of the binomial intervals",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a share or the total is off")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_token_arguments(p)
    tls.add_cacert_argument(p)


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


def _parse_expect(items: list[str]) -> dict[str, float]:
    out = {}
    for text in items:
        aid, sep, w = text.partition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = -1.0
        if not sep or not aid or not math.isfinite(weight) or weight < 0:
            raise ConfigError("expect", f"expected ID=WEIGHT with a weight >= 0, got {text!r}")
        out[aid] = weight
    if not sum(out.values()) > 0:
        raise ConfigError("expect", "the expected weights sum to 0")
    return out


def _judge(rows: list[dict[str, Any]], total: int, alpha: float, tolerance_pp: float | None) -> None:
    """Sets each row's share, diff_pp, interval (counts and shares) and ok."""
    tail = alpha / (2 * max(1, len(rows)))
    for row in rows:
        p = row["expected_share"]
        row["share"] = (row["processed"] or 0) / total if total else None
        row["diff_pp"] = (row["share"] - p) * 100 if row["share"] is not None else None
        if tolerance_pp is not None:
            lo = max(0, math.ceil(total * (p - tolerance_pp / 100) - 1e-9))
            hi = min(total, math.floor(total * (p + tolerance_pp / 100) + 1e-9))
        else:
            lo, hi = binomial_interval(total, p, tail)
        row["interval"] = [lo, hi]
        row["interval_share"] = [lo / total, hi / total] if total else [p, p]
        count = row["processed"]
        row["ok"] = row["error"] is None and count is not None and total > 0 and lo <= count <= hi


def verify_weights(
    url: str | None,
    analyzers: list[dict[str, Any]] | None = None,
    expected: int | None = None,
    tolerance_pp: float | None = None,
    alpha: float = 0.001,
    expect: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Each analyzer's unique processed count (its own /processed) and share, judged against its
    expected share (its weight's, or `expect`'s) by the binomial interval at family-wise
    1 - alpha (or by a fixed `tolerance_pp`)."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be in (0, 1), got {alpha!r}")
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
    if expect is not None:
        unknown = sorted(set(expect) - {a["id"] for a in analyzers})
        if unknown:
            raise ConfigError("expect", f"no such analyzer: {', '.join(unknown)}")
    weights = [a["weight"] if expect is None else expect.get(a["id"], 0.0) for a in analyzers]
    total_weight = sum(weights) or 1.0
    rows = []
    for a, w in zip(analyzers, weights, strict=True):
        row: dict[str, Any] = {"id": a["id"], "url": analyzer_base(a["url"]), "weight": a["weight"]}
        row["expected_share"] = w / total_weight
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
    _judge(rows, total, alpha, tolerance_pp)
    stat, df, p_value = chi_square([r["processed"] or 0 for r in rows], [r["expected_share"] for r in rows])
    if expected is None:
        expected = accepted
    return {
        "analyzers": rows,
        "total_processed": total,
        "expected_total": expected,
        "total_ok": expected is None or total == expected,
        "shares_ok": bool(rows) and all(r["ok"] for r in rows),
        "method": "binomial" if tolerance_pp is None else "fixed",
        "alpha": alpha,
        "tolerance_pp": tolerance_pp,
        "chi_square": {"statistic": stat, "df": df, "p_value": p_value},
    }


def _print_verify(res: dict[str, Any]) -> None:
    rows = [
        [
            r["id"],
            f"{r['weight']:g}",
            term.pct(r["expected_share"]),
            term.num(r["processed"]) if r["error"] is None else "unreachable",
            term.pct(r["share"]),
            "-" if r["diff_pp"] is None else f"{r['diff_pp']:+.2f}",
            f"{term.pct(r['interval_share'][0])} - {term.pct(r['interval_share'][1])}",
            f"{term.num(r['interval'][0])} - {term.num(r['interval'][1])}",
            "ok" if r["ok"] else "OFF",
        ]
        for r in res["analyzers"]
    ]
    headers = ["analyzer", "weight", "expected", "processed", "share", "diff pp", "allowed share", "allowed count", ""]
    print(term.table(headers, rows, "lrrrrrrrl"))
    exp = res["expected_total"]
    line = f"total processed {term.num(res['total_processed'])}"
    if exp is not None:
        line += f" / expected {term.num(exp)} " + ("(ok)" if res["total_ok"] else "(MISMATCH)")
    print(line)
    k = max(1, len(res["analyzers"]))
    if res["method"] == "binomial":
        conf = (1 - res["alpha"]) * 100
        rule = (
            f"allowed: the exact binomial interval of each count at {100 - (100 - conf) / k:.6g}% "
            f"({conf:g}% for all {k} together)"
        )
    else:
        rule = f"allowed: a fixed +-{res['tolerance_pp']:g} points"
    chi = res["chi_square"]
    print(f"{rule}; chi-square {chi['statistic']:.2f} over {chi['df']} df, p = {chi['p_value']:.3g}")
    off = [r["id"] for r in res["analyzers"] if not r["ok"]]
    verdict = "OK" if res["shares_ok"] and res["total_ok"] else "OFF"
    why = []
    if off:
        why.append(f"outside the interval: {', '.join(off)}")
    if not res["total_ok"]:
        why.append("total mismatch")
    print(f"verdict: {verdict}" + (f" ({'; '.join(why)})" if why else ""))
    for r in res["analyzers"]:
        if r["error"]:
            print(f"  {r['id']}: {r['error']}")


def run_verify(args: argparse.Namespace) -> int:
    set_token(args)
    tls.use_cacert(args)
    analyzers = [_parse_analyzer_arg(a) for a in args.analyzer] if args.analyzer else None
    expect = _parse_expect(args.expect) if args.expect else None
    try:
        res = verify_weights(args.url, analyzers, args.expected, args.tolerance, args.alpha, expect)
    except Unreachable as exc:
        print(f"logdist verify-weights: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(res).decode())
    else:
        _print_verify(res)
    if args.check and not (res["shares_ok"] and res["total_ok"]):
        return 1
    return 0


# --- status -----------------------------------------------------------------------------------


def add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8081", help="distributor URL")
    p.add_argument("--json", action="store_true", help="print the raw metrics as JSON")
    add_token_arguments(p)
    tls.add_cacert_argument(p)


def run_status(args: argparse.Namespace) -> int:
    set_token(args)
    tls.use_cacert(args)
    base = base_url(args.url)
    try:
        health = get(base + "/health")
        metrics = get(base + "/api/v1/metrics")
        queue = get(base + "/queue")
    except Unreachable as exc:
        print(f"logdist status: {exc}", file=sys.stderr)
        return 1
    if metrics.status in (401, 403):  # /health is open, the figures are not: say why
        print(f"logdist status: {base} answered {metrics.status}: {metrics.doc} (--token)", file=sys.stderr)
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
    add_token_arguments(p)
    tls.add_cacert_argument(p)


def run_dlq(args: argparse.Namespace) -> int:
    set_token(args)
    tls.use_cacert(args)
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
