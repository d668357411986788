"""The emitter server: the v0 emitter API over synthetic traffic.

`POST /generate` sends `emitters_per_distributor` packets of `batch_size` messages to each
distributor URL (250 messages with the defaults and one URL) and answers when they are
acknowledged. `POST /start` generates `log_generation_rate` messages/s continuously, flushing
a packet when it holds `batch_size` messages or every `flush_interval` ms, with at most
`max_concurrency` packets in flight per distributor; `POST /stop` ends that. Every packet goes
first to one distributor (round robin) and fails over to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web

from logdist.config import EmitterConfig
from logdist.emitter.messages import MessageFactory
from logdist.emitter.sender import Outcome, PacketSender, SendCounters
from logdist.http import HttpError, json_errors, json_response, read_json_object

log = logging.getLogger("logdist.emitter")


@dataclass
class EmitterState:
    config: EmitterConfig
    factory: MessageFactory
    counters: SendCounters = field(default_factory=SendCounters)
    sender: PacketSender | None = None
    session: aiohttp.ClientSession | None = None
    generator: asyncio.Task[None] | None = None
    rate: float = 0.0
    generated: int = 0
    generate_calls: int = 0
    started: float = field(default_factory=time.time)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    sem: asyncio.Semaphore | None = None

    @property
    def running(self) -> bool:
        return self.generator is not None and not self.generator.done()


STATE: web.AppKey[EmitterState] = web.AppKey("emitter_state", EmitterState)


def _positive(doc: dict[str, Any], query: Any, key: str, default: float, integer: bool = False) -> float:
    v = doc.get(key, query.get(key, default))
    try:
        x = int(v) if integer else float(v)
    except (TypeError, ValueError):
        x = -1
    if x < 0 or (integer and isinstance(v, float) and not v.is_integer()):
        raise HttpError(400, "bad_schema", f"{key!r} must be a number >= 0")
    return x


def _make_packet(st: EmitterState, n: int) -> bytes:
    _, body = st.factory.packet(n)
    st.generated += n  # counted when made, so /stop reports exactly what will be sent
    return body


async def _send_one(st: EmitterState, body: bytes, n: int, start: int) -> Outcome:
    assert st.sender is not None
    return await st.sender.send(body, n, start)


async def health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return json_response({"status": "ok", "running": st.running, "emitter_id": st.factory.emitter_id})


async def stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    cfg = asdict(st.config)
    cfg["distributor_urls"] = list(st.config.distributor_urls)
    return json_response(
        {
            "emitter_id": st.factory.emitter_id,
            "running": st.running,
            "rate": st.rate if st.running else 0.0,
            "generated": st.generated,
            "generate_calls": st.generate_calls,
            "uptime_s": time.time() - st.started,
            **st.counters.to_json(),
            "config": cfg,
        }
    )


async def generate(request: web.Request) -> web.Response:
    """batch_size x emitters_per_distributor messages per distributor URL (the v0 `generate`)."""
    st = request.app[STATE]
    doc = await read_json_object(request)
    cfg = st.config
    per_packet = int(_positive(doc, request.query, "batch_size", cfg.batch_size, integer=True)) or cfg.batch_size
    default_total = per_packet * cfg.emitters_per_distributor * len(cfg.distributor_urls)
    total = int(_positive(doc, request.query, "count", default_total, integer=True))
    st.generate_calls += 1
    sizes = [per_packet] * (total // per_packet) + ([total % per_packet] if total % per_packet else [])
    sem = asyncio.Semaphore(cfg.max_concurrency * len(cfg.distributor_urls))

    async def bounded(n: int, i: int) -> Outcome:
        async with sem:
            return await _send_one(st, _make_packet(st, n), n, i % len(cfg.distributor_urls))

    t0 = time.monotonic()
    outcomes = await asyncio.gather(*(bounded(n, i) for i, n in enumerate(sizes)))
    acked = sum(n for n, o in zip(sizes, outcomes, strict=True) if o is Outcome.ACKED)
    rejected = sum(n for n, o in zip(sizes, outcomes, strict=True) if o is Outcome.REJECTED)
    failed = total - acked - rejected
    return json_response(
        {
            "status": "ok" if acked == total else "partial",
            "generated": total,
            "packets": len(sizes),
            "acked": acked,
            "rejected": rejected,
            "failed": failed,
            "elapsed_s": round(time.monotonic() - t0, 4),
        },
        200 if acked == total else 502,
    )


async def _generate_loop(st: EmitterState) -> None:
    cfg = st.config
    assert st.sem is not None
    sem = st.sem
    start = time.monotonic()
    produced = 0
    flush_s = cfg.flush_interval / 1000.0
    pending = 0
    last_flush = start

    async def one(body: bytes, n: int) -> None:
        try:
            await _send_one(st, body, n, st.sender.next_start() if st.sender else 0)
        finally:
            sem.release()

    last_rate = st.rate
    while True:
        rate = st.rate
        now = time.monotonic()
        if rate != last_rate:  # a new rate (POST /start while running) applies from now on
            start, produced, last_rate = now, 0, rate
        due = int((now - start) * rate) - produced if rate > 0 else 0
        if due > 0:
            pending += due
            produced += due
        # flush full packets now, a partial one when flush_interval has passed
        while pending >= cfg.batch_size or (pending > 0 and now - last_flush >= flush_s):
            n = min(pending, cfg.batch_size)
            await sem.acquire()  # backpressure: at most max_concurrency packets per distributor in flight
            pending -= n
            last_flush = time.monotonic()
            t = asyncio.create_task(one(_make_packet(st, n), n))
            st.tasks.add(t)
            t.add_done_callback(st.tasks.discard)
        step = flush_s
        if rate > 0:
            step = min(step, max(0.001, (cfg.batch_size - pending) / rate))
        await asyncio.sleep(min(step, 0.25))


async def start(request: web.Request) -> web.Response:
    st = request.app[STATE]
    doc = await read_json_object(request)
    rate = _positive(doc, request.query, "rate", st.config.log_generation_rate)
    st.rate = rate
    if not st.running:
        st.generator = asyncio.create_task(_generate_loop(st))
        log.info("generating %.1f messages/s", rate)
    return json_response({"status": "started", "running": True, "rate": rate})


async def stop(request: web.Request) -> web.Response:
    st = request.app[STATE]
    await _stop_generator(st)
    return json_response({"status": "stopped", "running": False, "generated": st.generated})


async def _stop_generator(st: EmitterState) -> None:
    if st.generator is not None:
        st.generator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await st.generator
        st.generator = None
        log.info("generation stopped")


def make_app(
    config: EmitterConfig,
    *,
    emitter_id: str | None = None,
    give_up_after_s: float | None = 60.0,
    autostart_rate: float | None = None,
    token: str | None = None,
    client_ssl: ssl.SSLContext | None = None,
) -> web.Application:
    """`client_ssl`: the context for https:// distributors (--cacert); None: the default."""
    app = web.Application(client_max_size=1 << 20, middlewares=[json_errors()])
    st = EmitterState(config=config, factory=MessageFactory(emitter_id))
    app[STATE] = st

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        limit = config.max_concurrency * len(config.distributor_urls) * 2 + 10
        connector = aiohttp.TCPConnector(limit=limit, ssl=client_ssl or True)
        st.session = aiohttp.ClientSession(connector=connector)
        st.sender = PacketSender(
            st.session,
            list(config.distributor_urls),
            give_up_after_s=give_up_after_s,
            counters=st.counters,
            token=token,
        )
        st.sem = asyncio.Semaphore(config.max_concurrency * len(config.distributor_urls))
        if autostart_rate is not None:
            st.rate = autostart_rate
            st.generator = asyncio.create_task(_generate_loop(st))
        yield
        await _stop_generator(st)
        if st.tasks:  # let packets in flight finish (they hold accepted work)
            await asyncio.wait(set(st.tasks), timeout=5.0)
            for t in st.tasks:
                t.cancel()
        await st.session.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/generate", generate)
    app.router.add_post("/start", start)
    app.router.add_post("/stop", stop)
    return app


def with_urls(config: EmitterConfig, urls: list[str] | None) -> EmitterConfig:
    if not urls:
        return config
    from logdist.config import parse_emitter_config

    return replace(config, distributor_urls=parse_emitter_config({"distributor_urls": urls}).distributor_urls)
