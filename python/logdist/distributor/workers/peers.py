"""A worker's peers: who they are, asking them, and catching up with their analyzers.

Every worker listens on a private loopback control port besides the shared one. A request
forwarded by a peer carries PEER_HEADER and counts as one only on that control port; it is
answered locally (never fanned out again).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from logdist.auth import PEER_SECRET_ENV, bearer
from logdist.config import ConfigError, parse_analyzer
from logdist.daemon import PUBLIC_UP
from logdist.distributor.engine import ENGINE

log = logging.getLogger("logdist.workers")

PEER_HEADER = "X-Logdist-Peer"

#: (worker index, HTTP status or 0 when it did not answer, JSON or text or None, error text)
PeerAnswer = tuple[int, int, Any, str]


@dataclass(frozen=True)
class Peers:
    """This worker's index and every worker's control port (this one's included)."""

    index: int
    ports: tuple[int, ...]

    @property
    def others(self) -> list[tuple[int, int]]:
        return [(i, p) for i, p in enumerate(self.ports) if i != self.index]


PEERS = web.AppKey("peers", Peers)
#: the headers a forwarded request carries besides PEER_HEADER: the run's secret (from the
#: supervisor), which lets it pass the token check on a peer's private port
PEER_AUTH = web.AppKey("peer_auth", dict[str, str])
SESSION = web.AppKey("peer_session", aiohttp.ClientSession)


def parse_worker(spec: str) -> tuple[int, int]:
    i, _, n = spec.partition("/")
    index, count = int(i), int(n)
    if not 0 <= index < count:
        raise ValueError(f"bad --worker {spec!r}")
    return index, count


def from_peer(request: web.Request) -> bool:
    """A forwarded request: the header counts only on this worker's private control port."""
    if PEER_HEADER not in request.headers:
        return False
    sockname: Any = request.transport.get_extra_info("sockname") if request.transport else None
    peers = request.app[PEERS]
    return isinstance(sockname, tuple) and sockname[1] == peers.ports[peers.index]


def fans_out(request: web.Request) -> bool:
    """True on a worker of --workers N for a request from a client (not from a peer)."""
    return PEERS in request.app and not from_peer(request)


async def ask(
    app: web.Application, method: str, path_qs: str, body: bytes, ctype: str | None, timeout: float
) -> list[PeerAnswer]:
    """The request on every other worker, with each one's answer."""
    peers = app[PEERS]
    session = app[SESSION]
    headers = {PEER_HEADER: str(peers.index), **app[PEER_AUTH]}
    if ctype:
        headers["Content-Type"] = ctype

    async def one(i: int, port: int) -> PeerAnswer:
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


_SPEC_KEYS = (
    "id", "url", "endpoint", "weight", "timeout", "retry_count", "enabled", "format", "message_concurrency",
    "token_file",
)  # fmt: skip


async def _analyzers_of(session: aiohttp.ClientSession, port: int, auth: dict[str, str]) -> Any:
    """A peer's GET /api/v1/analyzers, or None when it does not answer (yet)."""
    try:
        async with session.get(f"http://127.0.0.1:{port}/api/v1/analyzers", headers={PEER_HEADER: "sync", **auth},
                               timeout=aiohttp.ClientTimeout(total=2)) as r:  # fmt: skip
            if r.status != 200:
                return None
            return await r.json()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None  # not up (yet): every worker starting together reads the same file anyway


async def catch_up(app: web.Application) -> None:
    """Take the analyzer set (ids, endpoints, weights, enabled) from a running peer before this
    worker takes traffic: a worker restarted after a crash gets the admin changes made since
    the config file was read, not only the file."""
    engine = app[ENGINE]
    for i, port in app[PEERS].others:
        doc = await _analyzers_of(app[SESSION], port, app[PEER_AUTH])
        if doc is None:
            continue
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


def install(app: web.Application, peers: Peers) -> None:
    """Make `app` a worker: its peers (the fan-out handlers then gather and apply across the
    workers), a client session for them, and a catch-up with a running peer's analyzers at
    startup (before the ports open)."""
    app[PEERS] = peers
    secret = os.environ.get(PEER_SECRET_ENV, "")
    app[PEER_AUTH] = {"Authorization": f"Bearer {secret}"} if secret else {}
    if secret:
        from logdist.distributor.app import AUTH

        def trusted(request: web.Request) -> bool:
            tok = bearer(request)
            return tok is not None and hmac.compare_digest(tok.encode(), secret.encode()) and from_peer(request)

        app[AUTH].trusted = trusted
    app[PUBLIC_UP] = asyncio.Event()  # health says "starting" until the shared port listens

    async def session(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session)
    app.on_startup.append(catch_up)
