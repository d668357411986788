"""`logdist distributor --workers N`: N distributor processes share one port (SO_REUSEPORT).

One Python process routes about a million messages a second on one core; the kernel spreads
connections over N processes, so N cores can work. Each worker is a whole distributor (queues,
router, retries, its own write-ahead log and dead letters in <state_dir>/worker-<i>), so every
guarantee holds per worker. What the workers must agree on is kept in step here:

* the supervisor (the process started by the user) starts the workers, forwards SIGTERM, SIGINT
  and SIGHUP (a config reload reaches every worker), and restarts a worker that dies (it then
  replays its own write-ahead log, as after any crash);
* every worker also listens on a private loopback control port. A change made through the admin
  API on one worker (register, patch, delete an analyzer; replay dead letters) is applied there
  and then sent to the others; a read of /health, /queue, /api/v1/metrics, /metrics or
  /api/v1/dead-letters gathers every worker's figures into one answer.

Each worker keeps its own (emitter_id, packet_id) dedup window: a retried packet that arrives
on another connection may reach another worker and be delivered again; the analyzers'
message-id dedup counts it once (as after any redelivery).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from logdist.daemon import PUBLIC_UP

log = logging.getLogger("logdist.workers")

PEER_HEADER = "X-Logdist-Peer"
_MUTATING = ("POST", "PATCH", "DELETE")


@dataclass(frozen=True)
class Peers:
    """This worker's index and every worker's control port (this one's included)."""

    index: int
    ports: tuple[int, ...]

    @property
    def others(self) -> list[tuple[int, int]]:
        return [(i, p) for i, p in enumerate(self.ports) if i != self.index]


PEERS = web.AppKey("peers", Peers)
SESSION = web.AppKey("peer_session", aiohttp.ClientSession)


def parse_worker(spec: str) -> tuple[int, int]:
    i, _, n = spec.partition("/")
    index, count = int(i), int(n)
    if not 0 <= index < count:
        raise ValueError(f"bad --worker {spec!r}")
    return index, count


# --- the workers' side: fan-out of admin changes, gathering of figures --------------------------


async def _ask(
    app: web.Application, method: str, path_qs: str, body: bytes, ctype: str | None, timeout: float
) -> list[Any]:
    """The request on every other worker: [(index, status, JSON or text or None, error text)]."""
    peers = app[PEERS]
    session = app[SESSION]
    headers = {PEER_HEADER: str(peers.index)}
    if ctype:
        headers["Content-Type"] = ctype

    async def one(i: int, port: int) -> tuple[int, int, Any, str]:
        try:
            async with session.request(method, f"http://127.0.0.1:{port}{path_qs}", data=body or None,
                                       headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as r:  # fmt: skip
                raw = await r.read()
                try:
                    return i, r.status, orjson.loads(raw) if "json" in r.content_type else raw.decode(), ""
                except ValueError:  # orjson.JSONDecodeError, UnicodeDecodeError
                    return i, r.status, None, raw[:200].decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return i, 0, None, f"{type(exc).__name__}: {exc}"

    return list(await asyncio.gather(*(one(i, p) for i, p in peers.others)))


def _sum(values: Sequence[Any]) -> Any:
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(nums) if nums else (values[0] if values else None)


def merge_health(mine: dict[str, Any], others: list[dict[str, Any]], index: int) -> dict[str, Any]:
    every = [mine, *others]
    out = dict(mine)
    bad = [h["status"] for h in every if h.get("status") != "ok"]
    out["status"] = bad[0] if bad else "ok"
    out["held"] = sum(h.get("held", 0) for h in every)
    out["eligible"] = min(h.get("eligible", 0) for h in every)  # eligible on every worker
    out.pop("worker", None)
    out.pop("pid", None)
    out["workers"] = sorted(
        ({"worker": h.get("worker", index), **{k: h.get(k) for k in ("status", "held", "pid")}} for h in every),
        key=lambda w: w["worker"],
    )
    return out


def merge_queue(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    out: dict[str, Any] = {k: _sum([q.get(k) for q in every]) for k in mine}
    ages = [q["oldest_age_s"] for q in every if q.get("oldest_age_s") is not None]
    out["oldest_age_s"] = max(ages) if ages else None
    out["workers"] = len(every)
    return out


_ROW_MAX = ("consecutive_failures",)
_ROW_KEEP = ("id", "url", "endpoint", "weight", "state", "eligible", "last_error", "expected_share", "saturated")


def merge_snapshot(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    out = dict(mine)
    out["totals"] = {k: _sum([s["totals"].get(k) for s in every]) for k in mine["totals"]}
    rows: dict[str, list[dict[str, Any]]] = {}
    for s in every:
        for r in s["analyzers"]:
            rows.setdefault(r["id"], []).append(r)
    merged = []
    for rs in rows.values():
        first = rs[0]
        row: dict[str, Any] = {}
        for k, v in first.items():
            if k in _ROW_KEEP:
                row[k] = v
            elif k in _ROW_MAX:
                row[k] = max(r.get(k) or 0 for r in rs)
            elif k == "latency_ms":
                row[k] = {q: max((r[k][q] for r in rs if r[k].get(q) is not None), default=None) for q in v}
            else:
                row[k] = _sum([r.get(k) for r in rs])
        row["saturated"] = any(r.get("saturated") for r in rs)
        row["eligible"] = any(r.get("eligible") for r in rs)
        merged.append(row)
    acked = sum(r["acked"] for r in merged)
    for r in merged:
        r["share"] = round(r["acked"] / acked, 6) if acked else 0.0
    out["analyzers"] = merged
    out["queue_size"] = _sum([s.get("queue_size") for s in every])
    out["store"] = [s.get("store") for s in every]
    out["workers"] = len(every)
    out["per_worker"] = sorted(
        (
            {
                "worker": s.get("worker"),
                "accepted": s["totals"]["accepted"],
                "acked": s["totals"]["acked"],
                "held": s["totals"]["held"],
                "analyzers": {
                    r["id"]: {"weight": r["weight"], "state": r["state"], "routed": r["routed"]} for r in s["analyzers"]
                },
            }
            for s in every
        ),
        key=lambda w: (w["worker"] is None, w["worker"]),
    )
    out.pop("worker", None)
    return out


def merge_prometheus(texts: list[tuple[int, str]]) -> str:
    """Every worker's exposition, each sample labelled worker="<i>", grouped by family."""
    order: list[str] = []
    head: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for index, text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                family = parts[2] if len(parts) > 2 else family
                if family not in head:
                    order.append(family)
                    head[family] = []
                    samples[family] = []
                if line not in head[family]:
                    head[family].append(line)
                continue
            if not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            label = f'worker="{index}"'
            if name.endswith("{}"):
                name = f"{name[:-2]}{{{label}}}"
            elif name.endswith("}"):
                name = f"{name[:-1]},{label}}}"
            else:
                name = f"{name}{{{label}}}"
            samples.setdefault(family, []).append(f"{name} {value}")
            if family not in head:
                order.append(family)
                head[family] = []
    out: list[str] = []
    for f in order:
        out.extend(head[f])
        out.extend(samples.get(f, []))
    return "\n".join(out) + "\n"


def merge_dead_letters(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    letters = sorted((m for d in every for m in d["dead_letters"]), key=lambda m: (m["time"], m["id"]))
    return {"dead_letters": letters, "count": len(letters), "messages": sum(d["messages"] for d in every)}


def merge_replay(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    missing = set(mine["missing"])
    for d in others:
        missing &= set(d["missing"])  # missing only if no worker had it
    return {
        "replayed": sum(d["replayed"] for d in every),
        "messages": sum(d["messages"] for d in every),
        "missing": [m for m in mine["missing"] if m in missing],
    }


_GATHER: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]] = {
    "/queue": merge_queue,
    "/api/v1/metrics": merge_snapshot,
    "/api/v1/dead-letters": merge_dead_letters,
}
# a key each answer must have to be merged (an error answer has {"error", "detail"} instead)
_SHAPE = {"/queue": "size", "/api/v1/metrics": "totals", "/api/v1/dead-letters": "dead_letters", "/health": "status"}
GATHER_TIMEOUT = 1.5  # a slow worker must not make the others' /health miss a probe's deadline
CHANGE_TIMEOUT = 5.0


def _from_peer(request: web.Request) -> bool:
    """A forwarded request: the header counts only on this worker's private control port."""
    if PEER_HEADER not in request.headers:
        return False
    sockname: Any = request.transport.get_extra_info("sockname") if request.transport else None
    peers = request.app[PEERS]
    return isinstance(sockname, tuple) and sockname[1] == peers.ports[peers.index]


def _fans_out(method: str, path: str) -> bool:
    return method in _MUTATING and (path.startswith("/api/v1/analyzers") or path == "/api/v1/dead-letters/replay")


@web.middleware
async def fanout(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Installed on workers only: keeps admin changes and figures whole across the workers."""
    if _from_peer(request):
        return await handler(request)
    method, path, app = request.method, request.path, request.app
    if _fans_out(method, path):
        body = await request.read()  # kept by aiohttp: the handler reads it again
        resp = await handler(request)
        if resp.status >= 300 and not (method == "DELETE" and resp.status == 404):
            return resp
        answers = await _ask(app, method, request.path_qs, body, request.headers.get("Content-Type"), CHANGE_TIMEOUT)
        failed = [f"worker {i}: {status or ''} {err or data}".strip() for i, status, data, err in answers
                  if not 200 <= status < 300 and not (method == "DELETE" and status == 404)]  # fmt: skip
        if failed:
            log.error("%s %s not applied on every worker: %s", method, path, "; ".join(failed))
        if not isinstance(resp, web.Response) or resp.body is None:
            return resp
        mine = orjson.loads(resp.body)  # type: ignore[arg-type]
        if path == "/api/v1/dead-letters/replay":
            ok = [d for _, status, d, _ in answers if status == 200 and isinstance(d, dict) and "replayed" in d]
            mine = merge_replay(mine, ok)
        elif method == "DELETE" and resp.status == 404:
            if all(status == 404 for _, status, _, _ in answers):
                return resp
            mine = {"removed": request.match_info.get("id"), "rerouted": 0}
        if method == "DELETE":  # what every worker rerouted
            mine["rerouted"] = mine.get("rerouted", 0) + sum(
                d.get("rerouted", 0) for _, status, d, _ in answers if status == 200 and isinstance(d, dict)
            )
        if failed:
            mine["worker_errors"] = failed
        return web.Response(body=orjson.dumps(mine), status=200 if resp.status == 404 else resp.status,
                            content_type="application/json")  # fmt: skip
    if method != "GET" or (path not in _GATHER and path not in ("/health", "/metrics")):
        return await handler(request)
    resp = await handler(request)
    if not isinstance(resp, web.Response) or resp.body is None:
        return resp
    answers = await _ask(app, "GET", request.path_qs, b"", None, GATHER_TIMEOUT)
    index = app[PEERS].index
    if path == "/metrics":
        texts = [(index, resp.text or "")] + [(i, d) for i, s, d, _ in answers if s == 200 and isinstance(d, str)]
        return web.Response(text=merge_prometheus(sorted(texts)), content_type="text/plain", charset="utf-8")
    mine = orjson.loads(resp.body)  # type: ignore[arg-type]
    if not isinstance(mine, dict) or _SHAPE[path] not in mine:
        return resp

    def usable(s: int, d: Any) -> bool:
        return isinstance(d, dict) and s in (200, 503) and _SHAPE[path] in d

    others = [d for _, s, d, _ in answers if usable(s, d)]
    lost = [i for i, s, d, _ in answers if not usable(s, d)]
    if path == "/health":
        merged = merge_health(mine, others, index)
        for i in lost:
            merged["workers"].append({"worker": i, "status": "unreachable", "held": None, "pid": None})
        if lost:
            merged["status"] = merged["status"] if merged["status"] != "ok" else "degraded"
        ok = merged["status"] == "ok"
        return web.Response(body=orjson.dumps(merged), status=200 if ok else 503, content_type="application/json")
    merged = _GATHER[path](mine, others)
    if lost:
        merged["unreachable_workers"] = lost
    return web.Response(body=orjson.dumps(merged), status=resp.status, content_type="application/json")


async def catch_up(app: web.Application) -> None:
    """Take the analyzer set (ids, endpoints, weights, enabled) from a running peer before this
    worker takes traffic: a worker restarted after a crash gets the admin changes made since
    the config file was read, not only the file."""
    from logdist.config import ConfigError, parse_analyzer
    from logdist.distributor.engine import ENGINE

    engine = app[ENGINE]
    session = app[SESSION]
    for i, port in app[PEERS].others:
        try:
            async with session.get(f"http://127.0.0.1:{port}/api/v1/analyzers", headers={PEER_HEADER: "sync"},
                                   timeout=aiohttp.ClientTimeout(total=2)) as r:  # fmt: skip
                if r.status != 200:
                    continue
                doc = await r.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            continue  # not up (yet): every worker starting together reads the same file anyway
        try:
            t, rc = engine.cfg.timeout, engine.cfg.retry_count
            specs = [
                parse_analyzer({k: a[k] for k in _SPEC_KEYS if k in a}, default_timeout_ms=t, default_retry_count=rc)
                for a in doc["analyzers"]
            ]
        except (ConfigError, KeyError, TypeError) as exc:
            log.error("worker %d: unreadable analyzer list (%s); keeping the config file's", i, exc)
            continue
        wanted = {s.id: s for s in specs}
        changed = [aid for aid in engine.analyzer_ids() if aid not in wanted]
        for aid in changed:
            engine.remove_analyzer(aid)
        for spec in specs:
            if not engine.has_analyzer(spec.id) or engine.analyzer_spec(spec.id).to_json() != spec.to_json():
                engine.add_analyzer(spec)
                changed.append(spec.id)
        if changed:
            log.info("analyzers taken from worker %d: %s", i, ", ".join(changed))
        return


_SPEC_KEYS = ("id", "url", "endpoint", "weight", "timeout", "retry_count", "enabled")


def install(app: web.Application, peers: Peers) -> None:
    """Make `app` a worker: the fan-out middleware, a client session for the peers, and a
    catch-up with a running peer's analyzers at startup (before the ports open)."""
    app[PEERS] = peers
    app[PUBLIC_UP] = asyncio.Event()  # health says "starting" until the shared port listens
    app.middlewares.append(fanout)

    async def session(app: web.Application) -> Any:
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.on_startup.append(catch_up)


# --- state left by a run with another worker count ---------------------------------------------


def orphans(state_dir: str | Path, index: int, n: int, worker: bool) -> list[Path]:
    """State dirs whose write-ahead log and dead letters this process takes over: those a run
    with another --workers count left. A single distributor takes every <state>/worker-<k>;
    worker i of n takes <state> itself (a single distributor's) if i == 0, and every
    <state>/worker-<k> with k >= n and k % n == i."""
    root = Path(state_dir)
    found = []
    if root.is_dir():
        for p in root.iterdir():
            k = p.name.removeprefix("worker-")
            if p.name.startswith("worker-") and k.isdigit() and p.is_dir():
                found.append((int(k), p))
    found.sort()
    if not worker:
        return [p for _, p in found]
    mine = [p for k, p in found if k >= n and k % n == index]
    return ([root] if index == 0 else []) + mine


def take_over_dead_letters(src_state: Path, dst_state: Path) -> int:
    """Move the dead letters of another state dir into ours (names kept, clashes renamed)."""
    src, dst = src_state / "dead-letters", dst_state / "dead-letters"
    if not src.is_dir():
        return 0
    dst.mkdir(parents=True, exist_ok=True)
    moved = 0
    for f in sorted(src.glob("*.dl")):
        target = dst / f.name
        if target.exists():
            target = dst / f"{f.stem}-{src_state.name}{f.suffix}"
        f.rename(target)
        moved += 1
    if moved:
        log.warning("took over %d dead letters from %s", moved, src)
    return moved
