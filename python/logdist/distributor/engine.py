"""The engine: the one place that decides where a chunk or a batch goes next.

It owns placement (push a chunk to its analyzer's link, re-split, reroute a batch, hold it
pending when no analyzer can take it, and release what is pending in paced slices), retries
(the retry scheduler and its loop), analyzer health, outlier ejection from delivery outcomes
and saturation (eligibility in the router), the admin changes (add, update, remove an
analyzer, a config reload, dead-letter replay), the figures it reports as plain data, and the
lifecycle (start, recovery from the store and from leftover files, graceful stop: in memory
mode what it could not deliver goes to a leftover file, see leftover.py). All of it on one
event loop, so there are no locks. The hot path is per packet and per chunk/batch; Python never touches
individual messages.

Where a message can be, once accepted (each counted in `held` until acknowledged):
  link queue (chunks)  -> batch in flight -> acked (2xx)
                                    \\-> retry scheduler (transient) -> ready -> in flight
                                    \\-> rerouted to an untried analyzer (retry_count failures
                                        or the analyzer was ejected / disabled / removed); with
                                        a route_key, each message to the next analyzer in its
                                        key's rendezvous order (_reroute_keyed)
                                    \\-> pending (no analyzer can take it) -> re-routed in
                                        paced slices once one is eligible (_release_loop)
                                    \\-> refused (permanent 4xx): split in halves, each sent
                                        again, until what the analyzer refuses is isolated
                                    \\-> dead letters on disk (what was isolated, or any other
                                        permanent refusal; not in `held`)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from logdist import core, tls
from logdist.config import AnalyzerSpec, DistributorConfig
from logdist.distributor.admission import Admitted
from logdist.distributor.batch import Batch, Chunk, OutboundQueue
from logdist.distributor.deadletter import DeadLetterStore
from logdist.distributor.ledger import PacketLedger
from logdist.distributor.leftover import LeftoverStore
from logdist.distributor.link import AnalyzerLink
from logdist.distributor.store import MemoryStore, Store
from logdist.distributor.walrecord import Part
from logdist.errors import NoTargetError, PacketError

log = logging.getLogger("logdist.distributor")

#: how often the paced release of pending messages runs (seconds)
_RELEASE_TICK = 0.05
#: depth bound when re-splitting bodies that route_packet already validated
_RESPLIT_DEPTH = 256
#: a refused batch is split to isolate what the analyzer refuses, unless it has refused this
#: many in a row without acknowledging any: then it refuses everything, and splitting would
#: only cut the dead letters into pieces
_ISOLATE_AFTER_STREAK_OF = 32
#: config keys a reload cannot change (they take effect on restart)
# Read once at start: a SIGHUP that changes one logs that it takes effect on restart.
_FIXED_KEYS = (
    "port",
    "host",
    "admin_port",
    "admin_host",
    "instance_id",
    "strategy",
    "durability",
    "state_dir",
    "seed",
    "header_timeout_s",
    "body_timeout_s",
    "keepalive_timeout_s",
    "max_connections",
    "ingest_buffer_bytes",
)


class Engine:
    def __init__(self, cfg: DistributorConfig, store: Store | None = None, ledger: PacketLedger | None = None) -> None:
        self.cfg = cfg
        seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "little")
        self.router = core.Router(cfg.strategy, seed)
        self._sched = core.RetryScheduler(cfg.retry_base_ms / 1000, cfg.retry_cap_ms / 1000, 2.0, seed ^ 0x5EED)
        self._store: Store = store if store is not None else MemoryStore()
        self._ledger = ledger if ledger is not None else PacketLedger(cfg.dedup_window)
        self._deadletters = DeadLetterStore(cfg.state_dir)
        self._leftover = LeftoverStore(cfg.state_dir)
        self._links: dict[str, AnalyzerLink] = {}
        self._pending = OutboundQueue()  # chunks no analyzer can take right now
        self._retrying: dict[int, Batch] = {}
        self._retry_tokens = itertools.count(1)
        self._retry_wake = asyncio.Event()
        self._release_wake = asyncio.Event()  # pending holds something to release
        self._session: aiohttp.ClientSession | None = None
        self.outbound = tls.Outbound(cfg)  # TLS to https:// analyzers (upstream_* keys)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._bg: list[asyncio.Task[Any]] = []
        self._accepting = False
        self._recovering = True
        self._recovery_failed = False
        self._started = time.time()
        # totals (messages)
        self.held = 0  # accepted, not yet acknowledged (or dead-lettered)
        self.held_bytes = 0  # their payload: payload_bytes of their chunks (queue_bytes bounds it)
        self._acked = 0
        self._dead_lettered = 0
        self._keyed_fallback = 0  # re-placements at random of messages without a route key
        self._split_batches = 0  # refused batches split in two to isolate the refused messages
        self._isolation_requests = 0  # the extra batches sent for that

    @property
    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else asyncio.get_running_loop().time()

    # -----------------------------------------------------------------------------------------
    # lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0, enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        await asyncio.to_thread(self._deadletters.load)
        for spec in self.cfg.analyzers:
            self.add_analyzer(spec)
        self._bg.append(asyncio.create_task(self._supervise("retry loop", self._retry_loop), name="retry"))
        self._bg.append(asyncio.create_task(self._supervise("health loop", self._health_loop), name="health"))
        self._bg.append(asyncio.create_task(self._supervise("release loop", self._release_loop), name="release"))
        # Recovery runs after the listener is up, so /health can say "recovering" meanwhile;
        # ingest answers 503 until it is done.
        self._bg.append(asyncio.create_task(self._recover(), name="recover"))

    async def _recover(self) -> None:
        """Durable stores hand back what a previous run accepted but did not deliver, and the
        packet keys it remembered (into the ledger)."""
        try:
            now = self._now
            recovered = 0
            async for token, part, count, target in self._store.recover(self._ledger.remember):
                self.held += count
                self.held_bytes += len(part) + 1
                recovered += count
                self._place_recovered(target, Chunk(part, count, token, now))
            if recovered:
                log.info("recovered %d undelivered messages from the %s store", recovered, self._store.durability)
            await self._recover_leftover()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recovery from the %s store failed; not accepting traffic", self._store.durability)
            self._recovery_failed = True
            return
        self._recovering = False
        self._accepting = True

    def _place_recovered(self, target: str, chunk: Chunk) -> None:
        # Back to where it was routed: a redelivery then meets that analyzer's dedup.
        a = self._links.get(target) if target else None
        if a is not None and a.eligible:
            self._push(target, chunk)
        else:
            self._resplit(chunk)

    async def _recover_leftover(self) -> None:
        """What earlier graceful stops could not deliver (leftover.py): into the store, then the
        queues; each file is removed once handed over."""
        for path, parts in await asyncio.to_thread(self._leftover.load):
            tokens = [0] * len(parts) if self._store.noop else await self._store.append(parts)
            now = self._now
            n = 0
            for (data, count, target), token in zip(parts, tokens, strict=True):
                self.held += count
                self.held_bytes += len(data) + 1
                n += count
                self._place_recovered(target, Chunk(data, count, token, now))
            await asyncio.to_thread(self._leftover.remove, path)
            log.info("recovered %d messages a graceful stop left in %s", n, path)

    def closed_because(self) -> str | None:
        """None when ingest takes packets; else why not."""
        if self._accepting:
            return None
        return "recovering" if self._recovering else "shutting down"

    def stop_accepting(self) -> None:
        self._accepting = False

    async def stop(self, grace: float) -> None:
        """Stop accepting, try to deliver what is held within `grace` seconds, then stop. A
        durable store keeps what is left; in memory mode it goes to a leftover file (written
        first as the stop begins, so a forced exit during the drain loses nothing either)."""
        self._accepting = False
        deadline = asyncio.get_running_loop().time() + grace
        if self.held:
            log.info("draining %d held messages (grace %.1fs)", self.held, grace)
        if self._store.noop:
            if self.held:
                await self._keep_leftover(self._held_parts())
            await self._drain_until(deadline)
        else:
            await self._finish_inflight(deadline)
        for a in self._links.values():
            a.close()
        # taken before the senders are cancelled: a batch in flight leaves `inflight` then
        left = self._held_parts() if self._store.noop else []
        tasks = [*self._bg, *self._tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._store.noop:
            await self._keep_leftover(left)
        if self.held:
            where = f"kept in the {self._store.durability} store" if not self._store.noop else "kept in a leftover file"
            log.warning("stopping with %d messages undelivered: %s, sent on the next start", self.held, where)
        else:
            log.info("all accepted messages delivered")
        if self._session is not None:
            await self._session.close()
        await self._store.close()

    def _held_parts(self) -> list[Part]:
        """Every held message, as (messages, count, target analyzer) parts: queued, ready, in
        flight, waiting for a retry, pending."""
        parts: list[Part] = []
        batches: list[Batch] = [*self._retrying.values()]
        for a in self._links.values():
            parts += [(c.data, c.count, a.id) for c in a.queue.chunks]
            batches += [*a.ready, *a.inflight]
        for b in batches:
            parts += [(c.data, c.count, b.analyzer) for c in b.chunks]
        parts += [(c.data, c.count, "") for c in self._pending.chunks]
        return parts

    async def _keep_leftover(self, parts: list[Part]) -> None:
        """Memory mode, stopping: write what is held to this run's leftover file (none: remove it)."""
        n = sum(p[1] for p in parts)
        if n != self.held:  # a batch being dead-lettered right now is in no queue
            log.warning("stopping: %d messages held, %d found in the queues", self.held, n)
        try:
            await asyncio.to_thread(self._leftover.save, parts)
        except OSError as exc:
            log.error("cannot write %d undelivered messages to %s: %s", n, self._leftover.path, exc)
            return
        if parts:
            log.info("kept %d undelivered messages in %s", n, self._leftover.path)

    async def _drain_until(self, deadline: float) -> None:
        """Memory mode: deliver what can be within the grace period (the rest is kept in a
        leftover file). With no analyzer at all, nothing can: do not wait."""
        loop = asyncio.get_running_loop()
        while self.held > 0 and self._links and loop.time() < deadline:
            if self._pending.chunks and self._any_candidate():
                self._release_pending(self._pending.messages)  # stopping: no pacing
            await asyncio.sleep(0.05)

    async def _finish_inflight(self, deadline: float) -> None:
        """Durable mode: the store keeps everything; send nothing new, let batches in flight
        finish so their acknowledgements are recorded, and hand back the rest."""
        loop = asyncio.get_running_loop()
        for a in self._links.values():
            a.close()
        while any(a.inflight for a in self._links.values()) and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; a bug in it is logged and the loop restarts (state is kept in
        the engine and the links, so nothing held is lost)."""
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
    # placing chunks and batches

    def place(self, packet: Admitted) -> None:
        """Queue an admitted packet's chunks, each to its analyzer (or pending)."""
        self.held += packet.count
        self.held_bytes += packet.nbytes
        for target, chunk in packet.chunks.items():
            self._push(target, chunk)

    def _push(self, target: str, chunk: Chunk) -> None:
        a = self._links.get(target)
        if a is None or not a.eligible:
            if target == "":
                self._hold_pending(chunk)
            else:  # it left between routing and now: route its messages again
                self._resplit(chunk)
            return
        self._queue(a, chunk)

    def _queue(self, a: AnalyzerLink, chunk: Chunk) -> None:
        a.queue.push(chunk)
        a.routed += chunk.count
        a.wake.set()
        if a.queue.messages > a.cap and not a.saturated:
            self._saturate(a)

    def _route_again(self, chunk: Chunk, exclude: Collection[str] | None = None) -> Any:
        """A chunk's messages routed again among the eligible analyzers (by route_key, so a
        keyed message goes where its key goes now), none to `exclude`."""
        rp = core.route_packet(
            b"[" + chunk.data + b"]", self.router, fallback_prefix="r/", format="json",
            max_messages=max(chunk.count, 1), max_depth=_RESPLIT_DEPTH, strict=False,
            route_key=self.cfg.route_key, exclude=exclude,
        )  # fmt: skip
        self._keyed_fallback += rp.unkeyed
        return rp

    def _resplit(self, chunk: Chunk) -> None:
        """Route a chunk's messages again, one pick per message, among eligible analyzers."""
        try:
            rp = self._route_again(chunk)
        except NoTargetError:
            self._hold_pending(chunk)
            return
        except PacketError:  # cannot happen for bytes route_packet produced; never drop them
            log.exception("re-routing a chunk failed; keeping it pending")
            self._hold_pending(chunk)
            return
        counts = rp.counts
        for target, data in rp.batches.items():
            a = self._links.get(target)
            piece = Chunk(data, counts[target], chunk.token, chunk.born)
            if a is None or not a.eligible:
                self._hold_pending(piece)
            else:
                self._queue(a, piece)

    def _reroute(self, batch: Batch) -> None:
        """Send a whole batch (body unchanged) to an analyzer it has not tried, by weight; with a
        route_key, each of its messages to the next analyzer of its key (_reroute_keyed)."""
        src = self._links.get(batch.analyzer)
        if src is not None:
            src.rerouted += batch.count
        batch.tried.add(batch.analyzer)
        if self.cfg.route_key != "random":
            self._reroute_keyed(batch)
            return
        try:
            target = self.router.pick(exclude=batch.tried)
        except NoTargetError:
            for c in batch.chunks:
                self._hold_pending(c)
            return
        dst = self._links[target]
        batch.analyzer = target
        batch.attempts = 0
        dst.routed += batch.count
        dst.ready.append(batch)
        dst.wake.set()

    def _reroute_keyed(self, batch: Batch) -> None:
        """A keyed batch that failed for good: its messages routed again with every analyzer it
        tried excluded, so each goes to the next analyzer in its key's rendezvous order (where
        the key would go if those left), in new batches that remember what was tried. When
        none is left untried, they wait in pending and go where their keys go once one is
        eligible again."""
        pieces: dict[str, list[Chunk]] = {}
        for c in batch.chunks:
            try:
                rp = self._route_again(c, exclude=batch.tried)
            except (NoTargetError, PacketError):
                self._hold_pending(c)
                continue
            counts = rp.counts
            for target, data in rp.batches.items():
                pieces.setdefault(target, []).append(Chunk(data, counts[target], c.token, c.born))
        for target, chunks in pieces.items():
            dst = self._links[target]
            piece = Batch(chunks, target)
            piece.tried = set(batch.tried)
            piece.splits, piece.split_from = batch.splits, batch.split_from
            dst.routed += piece.count
            dst.ready.append(piece)
            dst.wake.set()

    def _any_candidate(self) -> bool:
        return any(a.eligible and a.spec.weight > 0 for a in self._links.values())

    def _hold_pending(self, chunk: Chunk) -> None:
        self._pending.push(chunk)
        self._release_wake.set()

    def drain_pending(self) -> None:
        """An analyzer may take pending messages now: let the release loop hand them out."""
        if self._pending.chunks:
            self._release_wake.set()

    def release_rate(self) -> float:
        """Messages per second the release loop hands out now: pending_release_per_s times the
        eligible part of the weight of the analyzers the operator has enabled. Each analyzer so
        takes at most its weight's share of pending_release_per_s, whoever else is up, and one
        that comes back a moment after another still finds most of the backlog."""
        total = eligible = 0.0
        for a in self._links.values():
            if a.enabled and not a.closed:
                total += a.spec.weight
                if a.eligible:
                    eligible += a.spec.weight
        return self.cfg.pending_release_per_s * eligible / total if total > 0 else 0.0

    async def _release_loop(self) -> None:
        """Hand pending messages to the eligible analyzers in slices, each routed by the router
        of that moment (so by the weights of those up then), at release_rate() messages per
        second (a token bucket: a chunk is never cut, and what a slice overshoots by is paid
        back by the next ones). With pending_release_per_s 0, all at once."""
        loop = asyncio.get_running_loop()
        allowance = 0.0
        last = loop.time()
        while True:
            if not self._pending.chunks or not self._any_candidate():
                self._release_wake.clear()
                await self._release_wake.wait()
                allowance, last = 0.0, loop.time() - _RELEASE_TICK  # the first slice goes at once
                if self._pending.chunks and self._any_candidate():
                    log.info("releasing %d pending messages at %.0f/s", self._pending.messages, self.release_rate())
                continue
            if self.cfg.pending_release_per_s <= 0:
                self._release_pending(self._pending.messages)
            else:
                now = loop.time()
                rate = self.release_rate()
                allowance = min(allowance + rate * (now - last), max(1.0, 2 * rate * _RELEASE_TICK))
                last = now
                if allowance > 0:
                    allowance -= self._release_pending(allowance)
            await asyncio.sleep(_RELEASE_TICK)

    def _release_pending(self, limit: float) -> int:
        """Route pending chunks again until `limit` messages went (the last chunk may pass it);
        each chunk at most once (one no analyzer could take comes back to the end). Returns how
        many messages went."""
        n = 0
        for _ in range(len(self._pending.chunks)):
            if n >= limit or not self._pending.chunks:
                break
            (c,) = self._pending.take(1, 1)
            n += c.count
            self._resplit(c)
        return n

    def _evacuate(self, a: AnalyzerLink) -> None:
        """Move everything waiting for `a` elsewhere (it was ejected, disabled or removed)."""
        moved = 0
        for c in a.queue.drain():
            moved += c.count
            self._resplit(c)
        a.rerouted += moved
        while a.ready:
            self._reroute(a.ready.popleft())
        for tok, b in list(self._retrying.items()):
            if b.analyzer == a.id:
                del self._retrying[tok]
                self._reroute(b)

    # -----------------------------------------------------------------------------------------
    # what the links report (LinkReports)

    def acked(self, link: AnalyzerLink, batch: Batch) -> None:
        link.refused_in_a_row = 0
        if link.on_probation:  # it delivers again: its ejection level starts to decay
            link.on_probation = False
            link.healthy_since = self._now
        self._acked += batch.count
        self._unhold(batch)
        if not self._store.noop:
            self._store.ack_chunks(batch.chunks)

    def _unhold(self, batch: Batch) -> None:
        """A batch leaves `held` (acknowledged or dead-lettered)."""
        self.held -= batch.count
        self.held_bytes -= payload_bytes(batch.chunks)
        if not self.held:  # a re-split that re-serialised a message cannot leave the bound stuck
            self.held_bytes = 0

    def failed(self, link: AnalyzerLink, batch: Batch, detail: str, retry_after: float | None) -> None:
        # outlier detection: eject_after failures in a row, or one while on probation
        if link.eligible and link.consecutive_failures >= (1 if link.on_probation else self.cfg.eject_after):
            self._eject(link, detail)
        if not link.eligible or batch.attempts >= link.spec.retry_count:
            self._reroute(batch)
            return
        link.retried += 1
        tok = next(self._retry_tokens)
        self._retrying[tok] = batch
        self._sched.schedule(tok, self._now, batch.attempts - 1, retry_after)
        self._retry_wake.set()

    async def refused(self, link: AnalyzerLink, batch: Batch, status: int, detail: str) -> None:
        link.refused_in_a_row += 1
        if (
            batch.count > 1
            and 400 <= status < 500
            and link.refused_in_a_row <= _ISOLATE_AFTER_STREAK_OF
            and self._split(link, batch)
        ):
            if batch.splits == 0:
                log.warning("analyzer %s refused a batch of %d messages (%s): splitting it to isolate what it refuses",
                            link.id, batch.count, detail[:200])  # fmt: skip
            return
        try:
            await self._deadletters.put(
                batch.body, batch.count, link.id, status, detail, splits=batch.splits, split_from=batch.split_from
            )
        except OSError:
            log.exception("cannot write a dead letter (%d messages); keeping them pending", batch.count)
            for c in batch.chunks:
                self._hold_pending(c)
            return
        log.warning("dead-lettered %d messages refused by %s: %s", batch.count, link.id, detail[:200])
        link.dead_lettered += batch.count
        self._dead_lettered += batch.count
        self._unhold(batch)
        if not self._store.noop:
            self._store.ack_chunks(batch.chunks)

    def _split(self, link: AnalyzerLink, batch: Batch) -> bool:
        """Send a refused batch again as two halves (by message count), so that only what the
        analyzer refuses ends in dead letters: one poison message costs 2 requests per halving,
        2 x ceil(log2(count)) in all. False when it cannot be split."""
        half = batch.count // 2
        first: list[Chunk] = []
        second: list[Chunk] = []
        n = 0
        for c in batch.chunks:
            if n >= half:
                second.append(c)
            elif n + c.count <= half:
                first.append(c)
            else:
                pieces = self._split_chunk(c, half - n)
                if pieces is None:
                    return False
                first.append(pieces[0])
                second.append(pieces[1])
            n += c.count
        self._split_batches += 1
        for chunks in (first, second):
            piece = Batch(chunks, link.id)
            piece.splits = batch.splits + 1
            piece.split_from = batch.split_from or batch.count
            piece.tried = set(batch.tried)
            self._isolation_requests += 1
            if self._links.get(link.id) is link and link.eligible:
                link.ready.append(piece)
            else:
                self._reroute(piece)
        link.wake.set()
        return True

    def _split_chunk(self, chunk: Chunk, k: int) -> tuple[Chunk, Chunk] | None:
        """A chunk in two pieces of k and count - k messages, each keeping the chunk's store token
        (so the store's count of the record still adds up). The core cuts the bytes along the
        message boundaries: routed by smooth weighted round robin over weights k and count - k,
        exactly k go to the first."""
        router = core.Router("swrr", 0)
        router.set_target("a", float(k))
        router.set_target("b", float(chunk.count - k))
        try:
            rp = core.route_packet(
                b"[" + chunk.data + b"]", router, fallback_prefix="r/", format="json",
                max_messages=chunk.count, max_depth=_RESPLIT_DEPTH, strict=False,
            )  # fmt: skip
        except PacketError:  # not what route_packet produced: it cannot be cut, keep it whole
            log.exception("cannot split a refused chunk of %d messages", chunk.count)
            return None
        data, counts = rp.batches, rp.counts
        if set(counts) != {"a", "b"}:
            return None
        return (
            Chunk(data["a"], counts["a"], chunk.token, chunk.born),
            Chunk(data["b"], counts["b"], chunk.token, chunk.born),
        )

    def caught_up(self, link: AnalyzerLink) -> None:
        link.saturated = False
        log.info("analyzer %s caught up (%d messages queued): traffic resumes", link.id, link.queue.messages)
        if link.id in self.router:
            self.router.set_eligible(link.id, link.eligible)
        self.drain_pending()

    # -----------------------------------------------------------------------------------------
    # retries

    async def _retry_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._retry_wake.clear()
            nd = self._sched.next_deadline()
            if nd is None:
                await self._retry_wake.wait()
                continue
            delay = nd - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._retry_wake.wait()
                continue
            for tok in self._sched.pop_due(loop.time()):
                self._retry_due(tok)

    def _retry_due(self, tok: int) -> None:
        b = self._retrying.pop(tok, None)
        if b is None:
            return  # it was moved away when its analyzer left
        a = self._links.get(b.analyzer)
        if a is None or not a.eligible:
            self._reroute(b)
        else:
            a.ready.append(b)
            a.wake.set()

    # -----------------------------------------------------------------------------------------
    # health and saturation

    def _set_router_eligible(self, a: AnalyzerLink) -> None:
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
        live = [a for a in self._links.values() if a.eligible and a.spec.weight > 0]
        total = sum(a.spec.weight for a in live)
        qs = self.cfg.queue_size
        for a in self._links.values():
            share = a.spec.weight / total if total > 0 and a.eligible else 0.0
            a.cap = max(1, int(qs * max(0.25, 1.5 * share)))

    def _saturate(self, a: AnalyzerLink) -> None:
        a.saturated = True
        a.saturations += 1
        log.warning("analyzer %s is not keeping up (%d messages queued): no new traffic until it catches up",
                    a.id, a.queue.messages)  # fmt: skip
        if a.id in self.router:
            self.router.set_eligible(a.id, False)

    def _eject(self, a: AnalyzerLink, reason: str) -> None:
        """Take an analyzer out of rotation for min(ejection_max_ms, level x ejection_base_ms),
        level being its ejections in a row (after decay). Its queue goes to the others; a health
        probe re-admits it only once that time is over."""
        now = self._now
        cfg = self.cfg
        a.ejection_level = a.ejection_level_at(now) + 1
        hold = min(cfg.ejection_max_ms, cfg.ejection_base_ms * a.ejection_level) / 1000
        a.down_until = now + hold
        failures = a.consecutive_failures
        a.note_ejection(now, hold, failures, reason)
        log.warning("ejecting analyzer %s for %.1fs (ejection level %d) after %d failure(s)%s: %s",
                    a.id, hold, a.ejection_level, failures, " on probation" if a.on_probation else "",
                    reason[:200])  # fmt: skip
        a.healthy = False
        a.on_probation = False
        a.healthy_since = None
        self._set_router_eligible(a)

    def _readmit(self, a: AnalyzerLink) -> None:
        a.healthy = True
        a.on_probation = True  # until it acknowledges a batch: one failure ejects it again
        a.consecutive_failures = 0
        a.probe_failures = 0
        a.paused_until = 0.0
        a.note_readmission(self._now)
        log.info("analyzer %s is healthy again: re-admitted (on probation)", a.id)
        self._set_router_eligible(a)

    async def _probe(self, a: AnalyzerLink) -> None:
        ok = await a.probe(self.cfg.health_timeout_ms / 1000)
        if a.closed or not a.enabled:
            return
        if ok:
            a.probe_failures = 0
            if a.healthy:
                return
            if self._now >= a.down_until:
                self._readmit(a)
            else:  # /health alone does not end an ejection
                a.probes_ok_while_ejected += 1
        elif a.healthy:
            if self._now - a.last_ok < max(2.0, 3 * self.cfg.health_timeout_ms / 1000):
                return  # it is acknowledging batches: a slow /health under load is not a failure
            a.probe_failures += 1
            if a.probe_failures >= self.cfg.eject_after:
                a.consecutive_failures = max(a.consecutive_failures, a.probe_failures)
                self._eject(a, "health probe failed")

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_interval_ms / 1000)
            targets = [a for a in self._links.values() if a.enabled]
            if targets:
                await asyncio.gather(*(self._probe(a) for a in targets))
            if self._pending.chunks:
                self.drain_pending()

    # -----------------------------------------------------------------------------------------
    # analyzers at runtime (API and config reload)

    def has_analyzer(self, aid: str) -> bool:
        return aid in self._links

    def analyzer_ids(self) -> list[str]:
        return list(self._links)

    def analyzer_spec(self, aid: str) -> AnalyzerSpec:
        return self._links[aid].spec

    def add_analyzer(self, spec: AnalyzerSpec) -> bool:
        """Add an analyzer, or update it if the id exists. True when it was added."""
        if spec.id in self._links:
            self.update_analyzer(spec.id, spec=spec)
            return False
        assert self._session is not None, "add_analyzer before start"
        a = AnalyzerLink(
            spec, self.cfg, self._session, self, self._spawn, bursty=not self._store.noop, outbound=self.outbound
        )
        self._links[spec.id] = a
        self.router.set_target(spec.id, spec.weight)
        self.router.set_eligible(spec.id, a.eligible)
        t = asyncio.create_task(self._supervise(f"sender of {a.id}", a.run), name=f"send-{a.id}")
        self._bg.append(t)
        log.info("analyzer %s added: %s weight %g", spec.id, spec.endpoint, spec.weight)
        self._recompute_caps()
        if a.eligible:
            self.drain_pending()
        return True

    def update_analyzer(
        self, aid: str, *, spec: AnalyzerSpec | None = None, weight: float | None = None, enabled: bool | None = None
    ) -> None:
        a = self._links[aid]
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

    def remove_analyzer(self, aid: str) -> int:
        """Remove an analyzer and re-route what waits for it; returns how many messages."""
        a = self._links.pop(aid)
        queued = a.queued_messages
        self.router.remove_target(aid)
        a.close()
        log.info("analyzer %s removed; re-routing its %d queued messages", aid, queued)
        self._recompute_caps()
        self._evacuate(a)
        return queued

    def apply_config(self, new: DistributorConfig) -> dict[str, list[str]]:
        """Apply a reloaded config: analyzer adds, removes and changes, and the tunables."""
        old_ids = {s.id for s in self.cfg.analyzers}
        for k in _FIXED_KEYS:
            if getattr(new, k) != getattr(self.cfg, k):
                log.warning("config reload: %s changed; it takes effect on restart", k)
        self.cfg = replace(new, **{k: getattr(self.cfg, k) for k in _FIXED_KEYS})
        self._ledger.resize(self.cfg.dedup_window)
        self._store.resize_dedup_window(self.cfg.dedup_window)
        for a in self._links.values():
            a.cfg = self.cfg
        self._recompute_caps()
        out: dict[str, list[str]] = {"added": [], "updated": [], "removed": []}
        new_ids = set()
        for spec in new.analyzers:
            new_ids.add(spec.id)
            out["added" if self.add_analyzer(spec) else "updated"].append(spec.id)
        for aid in sorted(old_ids - new_ids):
            if aid in self._links:
                self.remove_analyzer(aid)
                out["removed"].append(aid)
        return out

    # -----------------------------------------------------------------------------------------
    # dead letters

    def dead_letters(self) -> dict[str, Any]:
        dl = self._deadletters
        return {"dead_letters": dl.list(), "count": len(dl), "messages": dl.messages}

    async def replay_dead_letters(self, ids: Iterable[str] | None) -> dict[str, Any]:
        wanted = [m["id"] for m in self._deadletters.list()] if ids is None else list(ids)
        replayed = 0
        messages = 0
        missing: list[str] = []
        for dl_id in wanted:
            try:
                body, count = await self._deadletters.read(dl_id)
            except (KeyError, OSError):
                missing.append(dl_id)
                continue
            if self._store.noop:
                token = 0
            else:
                (token,) = await self._store.append([(body[1:-1], count)])
            self.held += count
            self.held_bytes += len(body) - 1
            self._resplit(Chunk(body[1:-1], count, token, self._now))
            self._deadletters.remove(dl_id)
            replayed += 1
            messages += count
        if replayed:
            log.info("replayed %d dead letters (%d messages)", replayed, messages)
        return {"replayed": replayed, "messages": messages, "missing": missing}

    # -----------------------------------------------------------------------------------------
    # figures (plain data)

    def status(self) -> str:
        if self._recovery_failed:
            return "recovery_failed"
        if self._recovering or not self._accepting:
            return "recovering" if self._recovering else "stopping"
        if self._store.data_loss() is not None:
            return "degraded"
        return "full" if self._store.full() is not None else "ok"

    def data_loss(self) -> dict[str, object] | None:
        """Stored messages lost to damage on disk, until an operator acknowledges it."""
        return self._store.data_loss()

    async def acknowledge_loss(self) -> dict[str, object] | None:
        return await self._store.acknowledge_loss()

    def about(self) -> dict[str, Any]:
        """What the engine runs with: durability, backend, strategy, uptime."""
        return {
            "durability": self._store.durability,
            "backend": core.BACKEND,
            "strategy": self.router.strategy,
            "route_key": self.cfg.route_key,
            "uptime_s": round(time.time() - self._started, 3),
        }

    def store_stats(self) -> dict[str, object]:
        return self._store.stats()

    def totals(self) -> dict[str, int]:
        """The engine's totals (messages): held, acked, pending, dead-lettered, dead letters."""
        return {
            "acked": self._acked,
            "held": self.held,
            "held_bytes": self.held_bytes,
            "pending": self._pending.messages,
            "dead_lettered": self._dead_lettered,
            "dead_letters": self._deadletters.messages,
            "split_batches": self._split_batches,
            "isolation_requests": self._isolation_requests,
            "keyed_fallback": self._keyed_fallback,
        }

    def queue_figures(self) -> dict[str, Any]:
        """Where the held messages are (/queue)."""
        age = self.oldest_age()
        links = self._links.values()
        return {
            "size": self.held,
            "bytes": self.held_bytes,
            "capacity_bytes": self.cfg.queue_bytes,
            "oldest_age_s": round(age, 3) if age is not None else None,
            "capacity": self.cfg.queue_size,
            "queued": sum(a.queued_messages for a in links),
            "inflight": sum(a.inflight_messages for a in links),
            "retrying": sum(b.count for b in self._retrying.values()),
            "pending": self._pending.messages,
            "pending_release_per_s": round(self.release_rate(), 3),
            "dead_letters": self._deadletters.messages,
        }

    def analyzer_rows(self) -> list[dict[str, Any]]:
        """One row per analyzer: the link's figures, its share of the acks, its expected share
        and latency."""
        shares = self.router.shares()
        total_acked = sum(a.acked for a in self._links.values()) or 0
        return [
            {
                **a.figures(),
                "share": round(a.acked / total_acked, 6) if total_acked else 0.0,
                "expected_share": round(shares.get(a.id, 0.0), 6),
                "latency_ms": a.latency_ms(),
            }
            for a in self._links.values()
        ]

    def analyzer_view(self, aid: str) -> dict[str, Any]:
        """An analyzer as the admin API shows it: its spec, state and expected share."""
        a = self._links[aid]
        return {
            **a.spec.to_json(),
            "state": a.state,
            "eligible": a.eligible,
            "ejections": a.ejections,
            "ejected_until": a.figures()["ejected_until"],
            "expected_share": self.router.shares()[aid],
        }

    def eligible_count(self) -> int:
        return sum(1 for a in self._links.values() if a.eligible)

    def oldest_age(self) -> float | None:
        borns: list[float] = []
        for a in self._links.values():
            o = a.queue.oldest()
            if o is not None:
                borns.append(o)
            borns.extend(b.born for b in a.ready)
            borns.extend(b.born for b in a.inflight)
        borns.extend(b.born for b in self._retrying.values())
        if self._pending.chunks:
            borns.append(min(c.born for c in self._pending.chunks))
        if not borns:
            return None
        return max(0.0, self._now - min(borns))


def payload_bytes(chunks: Iterable[Chunk]) -> int:
    """What chunks weigh against queue_bytes: their messages' JSON text, one separator each
    (so a chunk split into pieces, or re-routed, weighs the same as before)."""
    return sum(len(c.data) + 1 for c in chunks)


#: the application's engine
ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
