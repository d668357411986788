"""The distributor's aiohttp application: routes, JSON errors, lifecycle and admin API."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from logdist.config import ConfigError, DistributorConfig, load_distributor_config, parse_analyzer
from logdist.daemon import PUBLIC_UP
from logdist.distributor import metrics
from logdist.distributor.dashboard import PAGE
from logdist.distributor.engine import Distributor
from logdist.distributor.ingest import DIST, error, ingest, json_response
from logdist.distributor.ledger import PacketLedger
from logdist.distributor.wal_store import make_store
from logdist.distributor.workers import PEERS
from logdist.errors import WeightError

log = logging.getLogger("logdist.distributor")

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Every error is a JSON {"error", "detail"}; an unexpected exception is logged, never a crash."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        if exc.status == 413:
            request.app[DIST].rejected_requests += 1
        return error(exc.status, code, exc.text or exc.reason, headers)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal", f"{type(exc).__name__}: {exc}")


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"bad JSON: {exc}") from exc


# --- observability ---------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    d = request.app[DIST]
    h = metrics.health(d)
    ok = d.accepting
    if PEERS in request.app:  # one of --workers N
        h["worker"] = request.app[PEERS].index
        h["pid"] = os.getpid()
        if not request.app[PUBLIC_UP].is_set():  # asked through the control port, before the
            h["status"] = "starting"  # shared port listens: it takes no traffic yet
            ok = False
    return json_response(h, 200 if ok else 503)


async def queue(request: web.Request) -> web.Response:
    return json_response(metrics.queue(request.app[DIST]))


async def api_metrics(request: web.Request) -> web.Response:
    snap = metrics.snapshot(request.app[DIST])
    if PEERS in request.app:
        snap["worker"] = request.app[PEERS].index
    return json_response(snap)


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(text=metrics.prometheus(request.app[DIST]), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})  # fmt: skip


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")


# --- analyzers -------------------------------------------------------------------------------


def _analyzer_json(d: Distributor, aid: str) -> dict[str, Any]:
    a = d.analyzers[aid]
    return {**a.spec.to_json(), "state": a.state, "eligible": a.eligible, "expected_share": d.router.shares()[aid]}


async def list_analyzers(request: web.Request) -> web.Response:
    d = request.app[DIST]
    return json_response({"analyzers": [_analyzer_json(d, aid) for aid in d.analyzers]})


async def show_analyzer(request: web.Request) -> web.Response:
    d = request.app[DIST]
    aid = request.match_info["id"]
    if aid not in d.analyzers:
        return error(404, "not_found", f"no analyzer {aid!r}")
    return json_response(_analyzer_json(d, aid))


async def register_analyzer(request: web.Request) -> web.Response:
    d = request.app[DIST]
    body = await _json_body(request)
    try:
        spec = parse_analyzer(body, default_timeout_ms=d.cfg.timeout, default_retry_count=d.cfg.retry_count)
    except ConfigError as exc:
        return error(400, "bad_analyzer", str(exc))
    created = d.add_analyzer(spec)
    return json_response(_analyzer_json(d, spec.id), 201 if created else 200)


async def delete_analyzer(request: web.Request) -> web.Response:
    d = request.app[DIST]
    aid = request.match_info["id"]
    if aid not in d.analyzers:
        return error(404, "not_found", f"no analyzer {aid!r}")
    queued = d.analyzers[aid].queued_messages
    d.remove_analyzer(aid)
    return json_response({"removed": aid, "rerouted": queued})


async def patch_analyzer(request: web.Request) -> web.Response:
    d = request.app[DIST]
    aid = request.match_info["id"]
    if aid not in d.analyzers:
        return error(404, "not_found", f"no analyzer {aid!r}")
    body = await _json_body(request)
    if not isinstance(body, dict):
        return error(400, "bad_analyzer", "expected a JSON object")
    unknown = set(body) - {"weight", "enabled", "url", "endpoint", "timeout", "retry_count", "id"}
    if unknown:
        return error(400, "bad_analyzer", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "id" in body and body["id"] != aid:
        return error(400, "bad_analyzer", "the id cannot change")
    cur = d.analyzers[aid].spec.to_json()
    if "url" in body and "endpoint" not in body:
        cur.pop("endpoint")
    try:
        spec = parse_analyzer({**cur, **body}, default_timeout_ms=d.cfg.timeout, default_retry_count=d.cfg.retry_count)
    except ConfigError as exc:
        return error(400, "bad_analyzer", str(exc))
    try:
        d.update_analyzer(aid, spec=spec)
    except WeightError as exc:
        return error(400, "bad_analyzer", str(exc))
    return json_response(_analyzer_json(d, aid))


# --- dead letters ----------------------------------------------------------------------------


async def list_dead_letters(request: web.Request) -> web.Response:
    dl = request.app[DIST].deadletters
    return json_response({"dead_letters": dl.list(), "count": len(dl), "messages": dl.messages})


async def replay_dead_letters(request: web.Request) -> web.Response:
    d = request.app[DIST]
    body = await _json_body(request)
    ids = body.get("ids") if isinstance(body, dict) else None
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        return error(400, "bad_request", '"ids" must be a list of dead-letter ids')
    return json_response(await d.replay_dead_letters(ids))


# --- the application -------------------------------------------------------------------------


def build_app(cfg: DistributorConfig, adopt: Sequence[str | Path] = ()) -> web.Application:
    """`adopt`: write-ahead log dirs of another run (another --workers count) to take over."""
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[json_errors])
    ledger = PacketLedger(cfg.dedup_window)
    d = Distributor(cfg, make_store(cfg, ledger.keys, adopt), ledger)
    app[DIST] = d

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await d.start()
        yield
        await d.stop(d.cfg.shutdown_grace_s)

    async def stop_accepting(app: web.Application) -> None:
        d.accepting = False

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(stop_accepting)
    r = app.router
    r.add_post("/logs", ingest)
    r.add_post("/api/v1/logs", ingest)
    r.add_get("/health", health)
    r.add_get("/queue", queue)
    r.add_get("/api/v1/metrics", api_metrics)
    r.add_get("/metrics", prometheus)
    r.add_get("/", dashboard)
    r.add_get("/api/v1/analyzers", list_analyzers)
    r.add_post("/api/v1/analyzers", register_analyzer)
    r.add_get("/api/v1/analyzers/{id}", show_analyzer)
    r.add_delete("/api/v1/analyzers/{id}", delete_analyzer)
    r.add_patch("/api/v1/analyzers/{id}", patch_analyzer)
    r.add_get("/api/v1/dead-letters", list_dead_letters)
    r.add_post("/api/v1/dead-letters/replay", replay_dead_letters)
    return app


def reloader(
    app: web.Application, path: str | None, overrides: dict[str, Any]
) -> Callable[[], Coroutine[Any, Any, None]]:
    """The SIGHUP handler: load the file again and apply it; a bad file changes nothing."""

    async def reload() -> None:
        if path is None:
            log.info("SIGHUP: no --config file to reload")
            return
        try:
            new = (await asyncio.to_thread(load_distributor_config, path)).with_overrides(**overrides)
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded, %s", exc)
            return
        changes = app[DIST].apply_config(new)
        log.info("SIGHUP: config reloaded from %s: %s", path, changes)

    return reload
