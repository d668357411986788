"""The Distributor: routing, per-analyzer senders, retries, reroutes, health and dead letters.

All state lives in one `Distributor` object on one event loop, so there are no locks. The hot
path is per packet (one `core.route_packet` call) and per chunk/batch (queue pushes, one POST
per batch); Python never touches individual messages.

Where a message can be, once accepted (each counted in `held` until acknowledged):
  analyzer queue (chunks)  -> batch in flight -> acked (2xx)
                                        \\-> retry scheduler (transient) -> ready -> in flight
                                        \\-> rerouted to an untried analyzer (retry_count failures
                                            or the analyzer was ejected / disabled / removed)
                                        \\-> pending (no analyzer can take it) -> re-routed when
                                            one becomes eligible
                                        \\-> dead letters on disk (permanent 4xx; not in `held`)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from typing import Any

import aiohttp

from logdist import core
from logdist.config import AnalyzerSpec, DistributorConfig
from logdist.distributor.deadletter import DeadLetterStore
from logdist.distributor.ledger import PacketLedger
from logdist.distributor.outbound import AnalyzerState, Batch, Chunk, OutboundQueue
from logdist.distributor.store import MemoryStore, Part, Store
from logdist.errors import NoTargetError, PacketError, WalFullError

log = logging.getLogger("logdist.distributor")

_JSON_HEADERS = {"Content-Type": "application/json"}
#: Retry-After values above this are clamped, so one answer cannot park a batch for an hour
MAX_HONOURED_RETRY_AFTER = 60.0
#: an ejection within this many seconds of re-admission counts as a flap (longer hold-down)
FLAP_WINDOW = 10.0
#: depth bound when re-splitting bodies that route_packet already validated
_RESPLIT_DEPTH = 256


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        v = float(value.strip())
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    if v != v or v < 0:
        return None
    return min(v, MAX_HONOURED_RETRY_AFTER)


class Outcome:
    """What `Distributor.accept` answers: an HTTP status, a JSON payload and extra headers."""

    __slots__ = ("headers", "payload", "status")

    def __init__(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.payload = payload
        self.headers = headers


class Distributor:
    def __init__(self, cfg: DistributorConfig, store: Store | None = None, ledger: PacketLedger | None = None) -> None:
        self.cfg = cfg
        seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "little")
        self.router = core.Router(cfg.strategy, seed)
        self.sched = core.RetryScheduler(cfg.retry_base_ms / 1000, cfg.retry_cap_ms / 1000, 2.0, seed ^ 0x5EED)
        self.store: Store = store if store is not None else MemoryStore()
        self.deadletters = DeadLetterStore(cfg.state_dir)
        self.analyzers: dict[str, AnalyzerState] = {}
        self.pending = OutboundQueue()  # chunks no analyzer can take right now
        self.retrying: dict[int, Batch] = {}
        self._retry_tokens = itertools.count(1)
        self._retry_wake = asyncio.Event()
        # (emitter_id, packet_id) of recent packets, and those being stored right now; a durable
        # store keeps the window across restarts through the ledger's hooks
        self.ledger = ledger if ledger is not None else PacketLedger(cfg.dedup_window)
        self._seq = itertools.count(1)
        self.node = f"d{time.time_ns() // 1_000_000:x}.{os.getpid():x}"
        self.session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bg: list[asyncio.Task[Any]] = []
        self.accepting = False
        self.recovering = True
        self.recovery_failed = False
        self.started = time.time()
        # totals (messages unless said otherwise)
        self.held = 0  # accepted, not yet acknowledged (or dead-lettered)
        self.accepted = 0
        self.acked = 0
        self.rejected = 0  # messages refused with 429/503 (backpressure)
        self.rejected_requests = 0  # requests refused with a 4xx (bad input) or 429/503
        self.duplicate_packets = 0
        self.dead_lettered = 0
        self.packets = 0

    @property
    def loop_time(self) -> float:
        return self._loop.time() if self._loop is not None else asyncio.get_running_loop().time()

    # -----------------------------------------------------------------------------------------
    # lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0, enable_cleanup_closed=False)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        await asyncio.to_thread(self.deadletters.load)
        for spec in self.cfg.analyzers:
            self.add_analyzer(spec)
        self._bg.append(asyncio.create_task(self._supervise("retry loop", self._retry_loop), name="retry"))
        self._bg.append(asyncio.create_task(self._supervise("health loop", self._health_loop), name="health"))
        # Recovery runs after the listener is up, so /health can say "recovering" meanwhile;
        # ingest answers 503 until it is done.
        self._bg.append(asyncio.create_task(self._recover(), name="recover"))

    async def _recover(self) -> None:
        """Durable stores hand back what a previous run accepted but did not deliver, and the
        packet keys it remembered (into the ledger)."""
        try:
            now = self.loop_time
            recovered = 0
            async for token, part, count, target in self.store.recover(self.ledger.remember):
                self.held += count
                recovered += count
                # Back to where it was routed: a redelivery then meets that analyzer's dedup.
                a = self.analyzers.get(target) if target else None
                if a is not None and a.eligible:
                    self._push(target, Chunk(part, count, token, now))
                else:
                    self._resplit(Chunk(part, count, token, now))
            if recovered:
                log.info("recovered %d undelivered messages from the %s store", recovered, self.store.durability)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recovery from the %s store failed; not accepting traffic", self.store.durability)
            self.recovery_failed = True
            return
        self.recovering = False
        self.accepting = True

    async def stop(self, grace: float) -> None:
        """Stop accepting, try to deliver what is held within `grace` seconds, then stop."""
        self.accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.held:
            log.info("draining %d held messages (grace %.1fs)", self.held, grace)
        if self.store.noop:
            # Memory mode: what is not delivered now is lost, so use the whole grace period.
            while self.held > 0 and loop.time() < deadline:
                if self.pending.chunks and self._any_candidate():
                    self.drain_pending()
                await asyncio.sleep(0.05)
        else:
            # Durable mode: the store keeps everything; send nothing new, let batches in flight
            # finish so their acknowledgements are recorded, and hand back the rest.
            for a in self.analyzers.values():
                a.closed = True
                a.wake.set()
            while any(a.inflight for a in self.analyzers.values()) and loop.time() < deadline:
                await asyncio.sleep(0.02)
        if self.held:
            where = f"kept in the {self.store.durability} store" if not self.store.noop else "lost (memory mode)"
            log.warning("stopping with %d messages undelivered: %s", self.held, where)
        else:
            log.info("all accepted messages delivered")
        for a in self.analyzers.values():
            a.closed = True
            a.wake.set()
        tasks = [*self._bg, *self._tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        await self.store.close()

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; a bug in it is logged and the loop restarts (state is kept in
        the Distributor and AnalyzerState, so nothing held is lost)."""
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting it", name)
                await asyncio.sleep(0.1)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.error("background task failed", exc_info=t.exception())

    # -----------------------------------------------------------------------------------------
    # ingest

    def _route(self, body: bytes, fmt: str) -> Any:
        prefix = f"{self.node}:{next(self._seq)}/"
        try:
            return core.route_packet(
                body, self.router, fallback_prefix=prefix, format=fmt,
                max_messages=self.cfg.max_messages_per_packet,
            )  # fmt: skip
        except NoTargetError:
            # Nothing eligible: accept into pending; it is routed when an analyzer returns.
            return core.route_packet(
                body, None, fallback_prefix=prefix, format=fmt, max_messages=self.cfg.max_messages_per_packet
            )

    async def accept(self, body: bytes, fmt: str) -> Outcome:
        """Validate, route and queue one request body. Never raises for bad input."""
        if not self.accepting:
            self.rejected_requests += 1
            detail = "recovering" if self.recovering else "shutting down"
            return Outcome(503, {"error": "unavailable", "detail": detail}, {"Retry-After": "1"})
        try:
            rp = self._route(body, fmt)
        except PacketError as exc:
            self.rejected_requests += 1
            return Outcome(exc.status, exc.to_json())
        n = rp.count
        pid = rp.packet_id
        key = self.ledger.key(rp.emitter_id, pid)
        if key is not None:
            storing = self.ledger.storing(key)
            if storing is not None:  # the same packet is being stored right now: wait for its verdict
                if await asyncio.shield(storing):
                    self.duplicate_packets += 1
                    return Outcome(202, {"accepted": n, "packet_id": pid, "duplicate": True})
            elif self.ledger.seen(key):
                self.duplicate_packets += 1
                return Outcome(202, {"accepted": n, "packet_id": pid, "duplicate": True})
        if self.held and self.held + n > self.cfg.queue_size:
            self.rejected += n
            self.rejected_requests += 1
            return Outcome(
                429,
                {"error": "queue_full", "detail": f"{self.held} messages held, bound {self.cfg.queue_size}"},
                {"Retry-After": "1"},
            )
        batches = rp.batches
        counts = rp.counts
        if self.store.noop:
            tokens: list[int] | None = None
        else:
            done = self.ledger.begin(key)
            stored = False
            try:
                parts: list[Part] = [(data, counts[t], t) for t, data in batches.items()]
                tokens = await self.store.append(parts, packet_key=key)
                stored = True
            except WalFullError as exc:
                self.rejected += n
                self.rejected_requests += 1
                return Outcome(429, {"error": "log_full", "detail": str(exc)}, {"Retry-After": "1"})
            except OSError as exc:  # WalError and any other I/O error: not stored, not acknowledged
                self.rejected_requests += 1
                log.error("cannot store a packet: %s", exc)
                return Outcome(503, {"error": "store_failed", "detail": str(exc)}, {"Retry-After": "1"})
            finally:
                self.ledger.end(key, done, stored)
        self.held += n
        self.accepted += n
        self.packets += 1
        now = self.loop_time
        for i, (target, data) in enumerate(batches.items()):
            self._push(target, Chunk(data, counts[target], tokens[i] if tokens else 0, now))
        if key is not None:
            self.ledger.remember(key)
        return Outcome(202, {"accepted": n, "packet_id": pid if pid is not None else f"{self.node}:{self.packets}"})

    # -----------------------------------------------------------------------------------------
    # placing chunks and batches

    def _push(self, target: str, chunk: Chunk) -> None:
        a = self.analyzers.get(target)
        if a is None or not a.eligible:
            if target == "":
                self.pending.push(chunk)
            else:  # it left between routing and now: route its messages again
                self._resplit(chunk)
            return
        a.queue.push(chunk)
        a.routed += chunk.count
        a.wake.set()
        if a.queue.messages > a.cap and not a.saturated:
            self._saturate(a)

    def _resplit(self, chunk: Chunk) -> None:
        """Route a chunk's messages again, one pick per message, among eligible analyzers."""
        try:
            rp = core.route_packet(
                b"[" + chunk.data + b"]", self.router, fallback_prefix="r/", format="json",
                max_messages=max(chunk.count, 1), max_depth=_RESPLIT_DEPTH,
            )  # fmt: skip
        except NoTargetError:
            self.pending.push(chunk)
            return
        except PacketError:  # cannot happen for bytes route_packet produced; never drop them
            log.exception("re-routing a chunk failed; keeping it pending")
            self.pending.push(chunk)
            return
        counts = rp.counts
        for target, data in rp.batches.items():
            a = self.analyzers.get(target)
            piece = Chunk(data, counts[target], chunk.token, chunk.born)
            if a is None or not a.eligible:
                self.pending.push(piece)
                continue
            a.queue.push(piece)
            a.routed += piece.count
            a.wake.set()
            if a.queue.messages > a.cap and not a.saturated:
                self._saturate(a)

    def _reroute(self, batch: Batch) -> None:
        """Send a whole batch (body unchanged) to an analyzer it has not tried, by weight."""
        src = self.analyzers.get(batch.analyzer)
        if src is not None:
            src.rerouted += batch.count
        batch.tried.add(batch.analyzer)
        try:
            target = self.router.pick(exclude=batch.tried)
        except NoTargetError:
            for c in batch.chunks:
                self.pending.push(c)
            return
        dst = self.analyzers[target]
        batch.analyzer = target
        batch.attempts = 0
        dst.routed += batch.count
        dst.ready.append(batch)
        dst.wake.set()

    def _any_candidate(self) -> bool:
        return any(a.eligible and a.spec.weight > 0 for a in self.analyzers.values())

    def drain_pending(self) -> None:
        if not self.pending.chunks or not self._any_candidate():
            return
        chunks = self.pending.drain()
        log.info("routing %d pending messages", sum(c.count for c in chunks))
        for c in chunks:
            self._resplit(c)

    def _evacuate(self, a: AnalyzerState) -> None:
        """Move everything waiting for `a` elsewhere (it was ejected, disabled or removed)."""
        moved = 0
        for c in a.queue.drain():
            moved += c.count
            self._resplit(c)
        a.rerouted += moved
        while a.ready:
            self._reroute(a.ready.popleft())
        for tok, b in list(self.retrying.items()):
            if b.analyzer == a.id:
                del self.retrying[tok]
                self._reroute(b)

    # -----------------------------------------------------------------------------------------
    # sending

    async def _sender(self, a: AnalyzerState) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        lingered = False
        bursty = not self.store.noop  # the write-ahead log acknowledges packets in fsync groups
        while not a.closed:
            cfg = self.cfg
            if len(a.inflight) >= cfg.max_inflight or not a.eligible or (not a.ready and not a.queue.chunks):
                a.wake.clear()
                await a.wake.wait()
                continue
            now = loop.time()
            if a.paused_until > now:
                await asyncio.sleep(a.paused_until - now)
                continue
            if a.ready:
                batch = a.ready.popleft()
            else:
                q = a.queue
                linger = cfg.linger_ms / 1000
                if (
                    not lingered
                    and linger > 0
                    and (a.inflight or (bursty and now - a.last_batch < 10 * linger))
                    and q.messages < cfg.batch_max_messages
                    and q.bytes < cfg.batch_max_bytes
                ):
                    # Busy (something in flight; in wal mode also: a batch went out just now):
                    # let this one fill up a little. The write-ahead log releases packets in
                    # groups, one per fsync, with a gap between; without this each group went
                    # out as its own batch (about half as many messages per POST as in memory
                    # mode). In memory mode packets come one by one, and the extra linger cost
                    # 7% of its throughput (bench/e2e.py, 3 A/B pairs). A lone packet after a
                    # quiet spell goes out at once.
                    lingered = True
                    await asyncio.sleep(linger)
                    continue
                lingered = False
                a.last_batch = now
                batch = Batch(q.take(cfg.batch_max_messages, cfg.batch_max_bytes), a.id)
                if a.saturated and q.messages <= a.cap // 2:
                    self._desaturate(a)
            a.inflight.add(batch)
            self._spawn(self._deliver(a, batch))

    async def _deliver(self, a: AnalyzerState, batch: Batch) -> None:
        assert self.session is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status: int | None = None
        detail = ""
        retry_after: float | None = None
        try:
            async with self.session.post(
                a.spec.endpoint,
                data=batch.body,
                headers=_JSON_HEADERS,
                timeout=aiohttp.ClientTimeout(total=a.spec.timeout_s),
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                if not 200 <= status < 300:
                    detail = f"HTTP {status}: " + raw[:300].decode("utf-8", "replace")
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except asyncio.CancelledError:
            a.inflight.discard(batch)
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug or an odd response: treat as transient, never lose it
            log.exception("unexpected error delivering to %s", a.id)
            detail = f"{type(exc).__name__}: {exc}"
        a.inflight.discard(batch)
        a.batches_sent += 1
        if status is not None:
            a.latencies.append(loop.time() - t0)
        try:
            if status is not None and 200 <= status < 300:
                self._acked(a, batch)
            elif status is None or status >= 500 or status in (408, 429):
                self._failed(a, batch, detail, retry_after)
            else:
                await self._dead_letter(a, batch, status, detail)
        finally:
            a.wake.set()

    def _acked(self, a: AnalyzerState, batch: Batch) -> None:
        n = batch.count
        a.acked += n
        a.consecutive_failures = 0
        a.last_ok = self.loop_time
        self.acked += n
        self.held -= n
        if not self.store.noop:
            self.store.ack_chunks(batch.chunks)

    def _failed(self, a: AnalyzerState, batch: Batch, detail: str, retry_after: float | None) -> None:
        now = self.loop_time
        a.failed += 1
        a.consecutive_failures += 1
        a.last_error = detail
        batch.attempts += 1
        if retry_after is not None:
            a.paused_until = max(a.paused_until, now + retry_after)
        if a.eligible and a.consecutive_failures >= self.cfg.eject_after:
            self._eject(a, detail)
        if not a.eligible or batch.attempts >= a.spec.retry_count:
            self._reroute(batch)
            return
        a.retried += 1
        tok = next(self._retry_tokens)
        self.retrying[tok] = batch
        self.sched.schedule(tok, now, batch.attempts - 1, retry_after)
        self._retry_wake.set()

    async def _dead_letter(self, a: AnalyzerState, batch: Batch, status: int, detail: str) -> None:
        a.consecutive_failures = 0  # it answered: alive, it just refuses this batch
        a.last_error = detail
        try:
            await self.deadletters.put(batch.body, batch.count, a.id, status, detail)
        except OSError:
            log.exception("cannot write a dead letter (%d messages); keeping them pending", batch.count)
            for c in batch.chunks:
                self.pending.push(c)
            return
        log.warning("dead-lettered %d messages refused by %s: %s", batch.count, a.id, detail[:200])
        a.dead_lettered += batch.count
        self.dead_lettered += batch.count
        self.held -= batch.count
        if not self.store.noop:
            self.store.ack_chunks(batch.chunks)

    async def _retry_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._retry_wake.clear()
            nd = self.sched.next_deadline()
            if nd is None:
                await self._retry_wake.wait()
                continue
            delay = nd - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._retry_wake.wait()
                continue
            for tok in self.sched.pop_due(loop.time()):
                b = self.retrying.pop(tok, None)
                if b is None:
                    continue  # it was moved away when its analyzer left
                a = self.analyzers.get(b.analyzer)
                if a is None or not a.eligible:
                    self._reroute(b)
                else:
                    a.ready.append(b)
                    a.wake.set()

    # -----------------------------------------------------------------------------------------
    # health

    def _set_router_eligible(self, a: AnalyzerState) -> None:
        if not a.eligible:
            a.saturated = False
        if a.id in self.router:
            self.router.set_eligible(a.id, a.eligible and not a.saturated)
        self._recompute_caps()
        if a.eligible:
            a.wake.set()
            self.drain_pending()
        else:
            self._evacuate(a)

    def _recompute_caps(self) -> None:
        """cap = queue_size x max(0.25, 1.5 x share by weight among the healthy): under an even
        overload each queue holds about its share, so only a laggard reaches its cap."""
        live = [a for a in self.analyzers.values() if a.eligible and a.spec.weight > 0]
        total = sum(a.spec.weight for a in live)
        qs = self.cfg.queue_size
        for a in self.analyzers.values():
            share = a.spec.weight / total if total > 0 and a.eligible else 0.0
            a.cap = max(1, int(qs * max(0.25, 1.5 * share)))

    def _saturate(self, a: AnalyzerState) -> None:
        a.saturated = True
        a.saturations += 1
        log.warning("analyzer %s is not keeping up (%d messages queued): no new traffic until it catches up",
                    a.id, a.queue.messages)  # fmt: skip
        if a.id in self.router:
            self.router.set_eligible(a.id, False)

    def _desaturate(self, a: AnalyzerState) -> None:
        a.saturated = False
        log.info("analyzer %s caught up (%d messages queued): traffic resumes", a.id, a.queue.messages)
        if a.id in self.router:
            self.router.set_eligible(a.id, a.eligible)
        self.drain_pending()

    def _eject(self, a: AnalyzerState, reason: str) -> None:
        now = self.loop_time
        a.flaps = a.flaps + 1 if now - a.readmitted_at < FLAP_WINDOW else 0
        a.down_until = now + (0.0 if a.flaps == 0 else min(5.0, 0.25 * 2**a.flaps))
        a.healthy = False
        a.ejections += 1
        log.warning("ejecting analyzer %s after %d failures: %s", a.id, a.consecutive_failures, reason[:200])
        self._set_router_eligible(a)

    def _readmit(self, a: AnalyzerState) -> None:
        a.healthy = True
        a.consecutive_failures = 0
        a.probe_failures = 0
        a.paused_until = 0.0
        a.readmitted_at = self.loop_time
        log.info("analyzer %s is healthy again: re-admitted", a.id)
        self._set_router_eligible(a)

    async def _probe(self, a: AnalyzerState) -> None:
        assert self.session is not None
        ok = False
        try:
            async with self.session.get(
                a.spec.url + "/health", timeout=aiohttp.ClientTimeout(total=self.cfg.health_timeout_ms / 1000)
            ) as r:
                await r.read()
                ok = r.status == 200
        except asyncio.CancelledError:
            raise
        except Exception:
            ok = False
        if a.closed or not a.enabled:
            return
        if ok:
            a.probe_failures = 0
            if not a.healthy and self.loop_time >= a.down_until:
                self._readmit(a)
        elif a.healthy:
            if self.loop_time - a.last_ok < max(2.0, 3 * self.cfg.health_timeout_ms / 1000):
                return  # it is acknowledging batches: a slow /health under load is not a failure
            a.probe_failures += 1
            if a.probe_failures >= self.cfg.eject_after:
                a.consecutive_failures = max(a.consecutive_failures, a.probe_failures)
                self._eject(a, "health probe failed")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_ms / 1000)
            targets = [a for a in self.analyzers.values() if a.enabled]
            if targets:
                await asyncio.gather(*(self._probe(a) for a in targets))
            if self.pending.chunks:
                self.drain_pending()

    # -----------------------------------------------------------------------------------------
    # analyzers at runtime (API and config reload)

    def add_analyzer(self, spec: AnalyzerSpec) -> bool:
        """Add an analyzer, or update it if the id exists. True when it was added."""
        if spec.id in self.analyzers:
            self.update_analyzer(spec.id, spec=spec)
            return False
        a = AnalyzerState(spec=spec, enabled=spec.enabled)
        self.analyzers[spec.id] = a
        self.router.set_target(spec.id, spec.weight)
        self.router.set_eligible(spec.id, a.eligible)
        t = asyncio.create_task(self._supervise(f"sender of {a.id}", lambda: self._sender(a)), name=f"send-{a.id}")
        self._bg.append(t)
        log.info("analyzer %s added: %s weight %g", spec.id, spec.endpoint, spec.weight)
        self._recompute_caps()
        if a.eligible:
            self.drain_pending()
        return True

    def update_analyzer(
        self, aid: str, *, spec: AnalyzerSpec | None = None, weight: float | None = None, enabled: bool | None = None
    ) -> AnalyzerState:
        a = self.analyzers[aid]
        if spec is not None:
            a.spec = spec
            weight = spec.weight
            enabled = spec.enabled
        if weight is not None:
            a.spec = replace(a.spec, weight=weight)
            self.router.set_target(aid, weight)
            if a.saturated:
                self.router.set_eligible(aid, False)
            self._recompute_caps()
            log.info("analyzer %s weight -> %g", aid, weight)
        if enabled is not None and enabled != a.enabled:
            a.enabled = enabled
            a.spec = replace(a.spec, enabled=enabled)
            log.info("analyzer %s %s", aid, "enabled" if enabled else "disabled by the operator")
            if enabled:
                a.healthy = False  # let a probe confirm it before traffic flows again
                a.down_until = 0.0
            self._set_router_eligible(a)
        elif weight is not None and weight > 0 and a.eligible:
            self.drain_pending()
        return a

    def remove_analyzer(self, aid: str) -> None:
        a = self.analyzers.pop(aid)
        self.router.remove_target(aid)
        a.closed = True
        a.wake.set()
        log.info("analyzer %s removed; re-routing its %d queued messages", aid, a.queued_messages)
        self._recompute_caps()
        self._evacuate(a)

    def apply_config(self, new: DistributorConfig) -> dict[str, list[str]]:
        """Apply a reloaded config: analyzer adds, removes and changes, and the tunables."""
        old_ids = {s.id for s in self.cfg.analyzers}
        fixed = ("port", "host", "strategy", "durability", "state_dir", "seed")
        for k in fixed:
            if getattr(new, k) != getattr(self.cfg, k):
                log.warning("config reload: %s changed; it takes effect on restart", k)
        self.cfg = replace(new, **{k: getattr(self.cfg, k) for k in fixed})
        self.ledger.resize(self.cfg.dedup_window)
        self._recompute_caps()
        out: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
        new_ids = set()
        for spec in new.analyzers:
            new_ids.add(spec.id)
            if self.add_analyzer(spec):
                out["added"].append(spec.id)
            else:
                out["updated"].append(spec.id)
        for aid in sorted(old_ids - new_ids):
            if aid in self.analyzers:
                self.remove_analyzer(aid)
                out["removed"].append(aid)
        return out

    # -----------------------------------------------------------------------------------------
    # dead letters

    async def replay_dead_letters(self, ids: Iterable[str] | None) -> dict[str, Any]:
        wanted = [m["id"] for m in self.deadletters.list()] if ids is None else list(ids)
        replayed = 0
        messages = 0
        missing: list[str] = []
        for dl_id in wanted:
            try:
                body, count = await self.deadletters.read(dl_id)
            except (KeyError, OSError):
                missing.append(dl_id)
                continue
            if self.store.noop:
                token = 0
            else:
                (token,) = await self.store.append([(body[1:-1], count)])
            self.held += count
            self._resplit(Chunk(body[1:-1], count, token, self.loop_time))
            self.deadletters.remove(dl_id)
            replayed += 1
            messages += count
        if replayed:
            log.info("replayed %d dead letters (%d messages)", replayed, messages)
        return {"replayed": replayed, "messages": messages, "missing": missing}

    # -----------------------------------------------------------------------------------------
    # figures

    def oldest_age(self) -> float | None:
        borns: list[float] = []
        for a in self.analyzers.values():
            o = a.queue.oldest()
            if o is not None:
                borns.append(o)
            borns.extend(b.born for b in a.ready)
            borns.extend(b.born for b in a.inflight)
        borns.extend(b.born for b in self.retrying.values())
        if self.pending.chunks:
            borns.append(min(c.born for c in self.pending.chunks))
        if not borns:
            return None
        return max(0.0, self.loop_time - min(borns))
