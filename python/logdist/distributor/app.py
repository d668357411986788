"""The distributor's aiohttp application: routes, JSON errors, lifecycle and admin API.

Each route is declared with what it does under --workers N (workers/fanout.py): answered
locally, gathered from every worker, or applied on every worker. Every route passes the token
check of logdist/auth.py first (INGEST_PATHS are ingest; /health and /metrics open; the rest
admin), which also refuses admin changes that are not application/json and audits them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from logdist import tls
from logdist.auth import Auth, Tokens, audit_reload
from logdist.config import (
    AnalyzerSpec,
    ConfigError,
    DistributorConfig,
    check_weight_sum,
    load_distributor_config,
    parse_analyzer,
)
from logdist.daemon import PUBLIC_UP
from logdist.distributor import metrics
from logdist.distributor.admission import Admission
from logdist.distributor.dashboard import PAGE
from logdist.distributor.endpoints import check_config, check_spec
from logdist.distributor.engine import ENGINE, Engine
from logdist.distributor.ingest import ADMISSION, BODY_BUDGET, BodyBudget, ingest
from logdist.distributor.ledger import PacketLedger
from logdist.distributor.otlp import otlp_logs
from logdist.distributor.store import MemoryStore, Store
from logdist.distributor.wal_store import make_store
from logdist.distributor.workers.fanout import (
    Answer,
    as_is,
    everywhere,
    gathered,
    health_merge,
    json_merge,
    local,
    text_merge,
)
from logdist.distributor.workers.merge import merge_dead_letters, merge_queue, merge_replay, merge_snapshot
from logdist.distributor.workers.peers import PEERS, PeerAnswer
from logdist.errors import WeightError
from logdist.http import CONNECTION_LIMITS, ON_REFUSED, ConnectionLimits, json_errors, json_response, read_json_body

log = logging.getLogger("logdist.distributor")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: the tokens and route classes in force (logdist/auth.py); SIGHUP replaces its tokens
AUTH = web.AppKey("auth", Auth)

#: the public listener's TLS context, when it serves HTTPS: SIGHUP loads the certificate again
LISTENER_TLS = web.AppKey("listener_tls", ssl.SSLContext)


def _bad_analyzer(detail: str, key: str | None = None) -> Answer:
    """400 bad_analyzer; `field` names the key at fault when there is one."""
    doc = {"error": "bad_analyzer", "detail": detail}
    return Answer(doc if key is None else {**doc, "field": key}, 400)


def _check_sum_with(engine: Engine, spec: AnalyzerSpec) -> None:
    """ConfigError when the weights, with `spec` added or changed, would not define shares."""
    others = [engine.analyzer_spec(aid).weight for aid in engine.analyzer_ids() if aid != spec.id]
    check_weight_sum([*others, spec.weight], "weight")


def _not_found(aid: str) -> Answer:
    return Answer({"error": "not_found", "detail": f"no analyzer {aid!r}"}, 404)


# --- observability ---------------------------------------------------------------------------


async def health(request: web.Request) -> Answer:
    engine = request.app[ENGINE]
    h = metrics.health(engine)
    ok = engine.closed_because() is None
    if PEERS in request.app:  # one of --workers N
        h["worker"] = request.app[PEERS].index
        h["pid"] = os.getpid()
        if not request.app[PUBLIC_UP].is_set():  # asked through the control port, before the
            h["status"] = "starting"  # shared port listens: it takes no traffic yet
            ok = False
    return Answer(h, 200 if ok else 503)


async def queue(request: web.Request) -> Answer:
    return Answer(metrics.queue(request.app[ENGINE]))


async def api_metrics(request: web.Request) -> Answer:
    snap = metrics.snapshot(request.app[ENGINE], request.app[ADMISSION], _io_figures(request.app))
    if PEERS in request.app:
        snap["worker"] = request.app[PEERS].index
    return Answer(snap)


async def prometheus(request: web.Request) -> Answer:
    text = metrics.prometheus(request.app[ENGINE], request.app[ADMISSION], _io_figures(request.app))
    return Answer(text, headers={"X-Content-Type-Options": "nosniff"})


def _io_figures(app: web.Application) -> dict[str, int]:
    """This process's connection and ingest-buffer figures."""
    budget = app[BODY_BUDGET]
    return {
        **app[CONNECTION_LIMITS].figures(),
        "ingest_buffer_bytes_used": budget.used,
        "ingest_busy_refusals": budget.refused,
    }


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")


# --- analyzers -------------------------------------------------------------------------------


async def list_analyzers(request: web.Request) -> Answer:
    engine = request.app[ENGINE]
    return Answer({"analyzers": [engine.analyzer_view(aid) for aid in engine.analyzer_ids()]})


async def show_analyzer(request: web.Request) -> Answer:
    engine = request.app[ENGINE]
    aid = request.match_info["id"]
    if not engine.has_analyzer(aid):
        return _not_found(aid)
    return Answer(engine.analyzer_view(aid))


def _named(key: str, body: object) -> str:
    """The key to name in a refusal of url or endpoint: the one the body gave (the other one is
    derived from it)."""
    other = {"url": "endpoint", "endpoint": "url"}.get(key)
    if other is not None and isinstance(body, dict) and key not in body and other in body:
        return other
    return key


def _control_ports(app: web.Application) -> tuple[int, ...]:
    return app[PEERS].ports if PEERS in app else ()


async def register_analyzer(request: web.Request) -> Answer:
    engine = request.app[ENGINE]
    body = await read_json_body(request)
    try:
        spec = parse_analyzer(
            body,
            default_timeout_ms=engine.cfg.timeout,
            default_retry_count=engine.cfg.retry_count,
            token_file_ok=False,
        )
        _check_sum_with(engine, spec)
        await check_spec(spec, engine.cfg, _control_ports(request.app))
    except ConfigError as exc:
        return _bad_analyzer(str(exc), _named(exc.key, body))
    created = engine.add_analyzer(spec)
    return Answer(engine.analyzer_view(spec.id), 201 if created else 200)


async def delete_analyzer(request: web.Request) -> Answer:
    engine = request.app[ENGINE]
    aid = request.match_info["id"]
    if not engine.has_analyzer(aid):
        return _not_found(aid)
    return Answer({"removed": aid, "rerouted": engine.remove_analyzer(aid)})


_PATCHABLE = frozenset(
    {"weight", "enabled", "url", "endpoint", "timeout", "retry_count", "id", "format", "message_concurrency"}
)


async def patch_analyzer(request: web.Request) -> Answer:
    engine = request.app[ENGINE]
    aid = request.match_info["id"]
    if not engine.has_analyzer(aid):
        return _not_found(aid)
    body = await read_json_body(request)
    if not isinstance(body, dict):
        return _bad_analyzer("expected a JSON object")
    unknown = set(body) - _PATCHABLE
    if unknown:
        return _bad_analyzer(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "id" in body and body["id"] != aid:
        return _bad_analyzer("the id cannot change")
    cur = engine.analyzer_spec(aid).to_json()
    if "url" in body and "endpoint" not in body:
        cur.pop("endpoint")
    cfg = engine.cfg
    try:
        spec = parse_analyzer({**cur, **body}, default_timeout_ms=cfg.timeout, default_retry_count=cfg.retry_count)
        _check_sum_with(engine, spec)
        await check_spec(spec, cfg, _control_ports(request.app))
        engine.update_analyzer(aid, spec=spec)
    except ConfigError as exc:
        return _bad_analyzer(str(exc), _named(exc.key, body))
    except WeightError as exc:
        return _bad_analyzer(str(exc), "weight")
    return Answer(engine.analyzer_view(aid))


def removal_merge(request: web.Request, mine: Answer, answers: list[PeerAnswer]) -> Answer | None:
    """A removal answers 404 only if no worker had the analyzer; `rerouted` sums them all."""
    if mine.status == 404:
        if all(status == 404 for _, status, _, _ in answers):
            return None
        payload: dict[str, Any] = {"removed": request.match_info.get("id"), "rerouted": 0}
    else:
        payload = dict(mine.payload)
    payload["rerouted"] = payload.get("rerouted", 0) + sum(
        d.get("rerouted", 0) for _, status, d, _ in answers if status == 200 and isinstance(d, dict)
    )
    return Answer(payload, 200)


# --- dead letters ----------------------------------------------------------------------------


async def list_dead_letters(request: web.Request) -> Answer:
    return Answer(request.app[ENGINE].dead_letters())


async def replay_dead_letters(request: web.Request) -> Answer:
    body = await read_json_body(request)
    ids = body.get("ids") if isinstance(body, dict) else None
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)):
        return Answer({"error": "bad_request", "detail": '"ids" must be a list of dead-letter ids'}, 400)
    return Answer(await request.app[ENGINE].replay_dead_letters(ids))


def replay_merge(request: web.Request, mine: Answer, answers: list[PeerAnswer]) -> Answer:
    ok = [d for _, status, d, _ in answers if status == 200 and isinstance(d, dict) and "replayed" in d]
    return Answer(merge_replay(mine.payload, ok), mine.status)


# --- the write-ahead log -------------------------------------------------------------------


async def acknowledge_loss(request: web.Request) -> Answer:
    """An operator has seen the data-loss report of /health: forget it (status back to ok)."""
    engine = request.app[ENGINE]
    report = await engine.acknowledge_loss()
    return Answer({"acknowledged": report, "status": engine.status()})


# --- the application -------------------------------------------------------------------------

#: what the main port serves when an admin listener is configured (admin_port): ingest and the
#: probes; everything else is served on the admin listener only
INGEST_PLANE = frozenset({"/logs", "/api/v1/logs", "/v1/logs", "/health", "/metrics"})


def listener_split(cfg: DistributorConfig) -> Any:
    """With admin_port set, a request that came in on any listener but the admin one (or a
    worker's private control port) may reach only INGEST_PLANE; anything else is a 404 there.
    The listener is told by the local port the connection was accepted on (admin_port differs
    from port, config.py checks it)."""
    admin_port = cfg.admin_port

    @web.middleware
    async def split(request: web.Request, handler: Handler) -> web.StreamResponse:
        if admin_port is None or request.path in INGEST_PLANE:
            return await handler(request)
        sockname: Any = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        if port == admin_port or port in _control_ports(request.app):
            return await handler(request)
        return json_response({"error": "not_found", "detail": f"{request.path} is not served on this listener"}, 404)

    return split


#: the paths a POST to which is ingest (logdist/auth.py); every other route but /health and
#: /metrics is admin
INGEST_PATHS = frozenset({"/logs", "/api/v1/logs", "/v1/logs"})


def _routes(r: web.UrlDispatcher) -> None:
    r.add_post("/logs", ingest)
    r.add_post("/api/v1/logs", ingest)
    r.add_post("/v1/logs", otlp_logs)  # OTLP/HTTP logs (distributor/otlp.py)
    r.add_get("/health", gathered(health, health_merge))
    r.add_get("/queue", gathered(queue, json_merge("size", merge_queue)))
    r.add_get("/api/v1/metrics", gathered(api_metrics, json_merge("totals", merge_snapshot)))
    r.add_get("/metrics", gathered(prometheus, text_merge))
    r.add_get("/", dashboard)
    r.add_get("/api/v1/analyzers", local(list_analyzers))
    r.add_post("/api/v1/analyzers", everywhere(register_analyzer, as_is))
    r.add_get("/api/v1/analyzers/{id}", local(show_analyzer))
    r.add_delete("/api/v1/analyzers/{id}", everywhere(delete_analyzer, removal_merge, tolerate=(404,)))
    r.add_patch("/api/v1/analyzers/{id}", everywhere(patch_analyzer, as_is))
    r.add_get("/api/v1/dead-letters", gathered(list_dead_letters, json_merge("dead_letters", merge_dead_letters)))
    r.add_post("/api/v1/dead-letters/replay", everywhere(replay_dead_letters, replay_merge))
    r.add_post("/api/v1/wal/acknowledge-loss", everywhere(acknowledge_loss, as_is))


def build_app(cfg: DistributorConfig, adopt: Sequence[str | Path] = ()) -> web.Application:
    """`adopt`: write-ahead log dirs of another run (another --workers count) to take over."""
    ledger = PacketLedger(cfg.dedup_window)
    store: Store = make_store(cfg, ledger.keys, adopt) or MemoryStore()
    engine = Engine(cfg, store, ledger)
    admission = Admission(engine, store, ledger)

    def count_refusal(request: web.Request, status: int) -> None:
        if 400 <= status < 500:  # e.g. a body over client_max_size, refused by aiohttp itself
            admission.refuse_request(status)

    # auto_decompress off: ingest decodes bodies itself, under its bounds (ingest.decode_body);
    # keepalive_timeout: aiohttp closes a kept-alive connection idle for that long
    handler_args = {"auto_decompress": False, "keepalive_timeout": cfg.keepalive_timeout_s}
    auth = Auth(Tokens.load(cfg.ingest_tokens_file, cfg.admin_tokens_file), INGEST_PATHS,
                metrics_require_token=cfg.metrics_require_token)  # fmt: skip
    app = web.Application(client_max_size=cfg.max_body_bytes,
                          middlewares=[json_errors(count_refusal), listener_split(cfg), auth.middleware()],
                          handler_args=handler_args)  # fmt: skip
    app[AUTH] = auth
    app[ENGINE] = engine
    app[ADMISSION] = admission
    app[BODY_BUDGET] = BodyBudget(cfg.ingest_buffer_bytes)
    # the header/body timeouts and max_connections, applied by the daemon's JsonErrorRunner
    app[CONNECTION_LIMITS] = ConnectionLimits.within_fd_limit(cfg.max_connections, cfg.header_timeout_s,
                                                              cfg.body_timeout_s)  # fmt: skip
    app[ON_REFUSED] = admission.refuse_request  # malformed requests, refused before any handler

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await engine.start()
        yield
        await engine.stop(engine.cfg.shutdown_grace_s)

    async def stop_accepting(app: web.Application) -> None:
        engine.stop_accepting()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(stop_accepting)
    _routes(app.router)
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
            await check_config(new, _control_ports(app))
            tokens = await asyncio.to_thread(Tokens.load, new.ingest_tokens_file, new.admin_tokens_file)
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded, %s", exc)
            audit_reload(False)
            return
        try:  # certificates first (in the loop's thread, which handshakes): a bad file changes nothing
            done = tls.reload_listener(app.get(LISTENER_TLS), new)
            app[ENGINE].outbound.rebuild(new)
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded, %s", exc)
            audit_reload(False)
            return
        log.info("SIGHUP: TLS: %s", done)
        auth = app[AUTH]
        auth.tokens, auth.metrics_require_token = tokens, new.metrics_require_token
        changes = app[ENGINE].apply_config(new)
        log.info("SIGHUP: config reloaded from %s: %s", path, changes)
        audit_reload(True)

    return reload
