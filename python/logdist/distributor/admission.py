"""Admission: the checks, routing and storing of one packet, up to its chunks.

`Admission.admit` answers, in order: not accepting (recovering or shutting down: 503), a
duplicate of a stored packet (the packet ledger: same key and same content hash, 202
"duplicate"; the same key with other content is a new packet, counted in `reused_packet_ids`),
over the queue bounds (queue_size messages or queue_bytes of payload held: 429),
not storable (the log is full: 429; an I/O error: 503). Otherwise it routes the packet
(`core.route_packet`: one pick per message, by the config's route_key: a keyed message goes
where its key goes among the eligible analyzers, see config.py), stores its parts (`store.append`) and returns
them as chunks, one per target analyzer. It does not place them: the engine does
(`Engine.place`). It owns the admission counters (packets, accepted and refused messages).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

from logdist import core
from logdist.config import DistributorConfig
from logdist.distributor.batch import Chunk
from logdist.distributor.ledger import Key, PacketLedger, Seen, content_hash
from logdist.distributor.store import Store
from logdist.errors import LogdistError, NoTargetError, PacketError, WalFullError

log = logging.getLogger("logdist.distributor")

_RETRY_SOON = {"Retry-After": "1"}


@dataclass(slots=True)
class IngestReply:
    """An ingest answer: an HTTP status, a JSON payload and extra headers."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] | None = None


@dataclass(slots=True)
class Admitted:
    """A stored packet: its chunks by target analyzer ("" when none could take them)."""

    chunks: dict[str, Chunk]
    count: int
    packet_id: str | None  # None when the packet carried none (answered as null, as always)
    nbytes: int = 0  # what its chunks weigh against queue_bytes (engine.payload_bytes)

    def reply(self) -> IngestReply:
        return IngestReply(202, {"accepted": self.count, "packet_id": self.packet_id})


class Gate(Protocol):
    """What admission reads from the engine: its config, router and held total, and whether
    it takes packets now."""

    @property
    def cfg(self) -> DistributorConfig: ...

    @property
    def router(self) -> Any: ...

    @property
    def held(self) -> int: ...

    @property
    def held_bytes(self) -> int: ...

    def closed_because(self) -> str | None:
        """None when packets are taken; else why not ("recovering", "shutting down")."""
        ...


class Admission:
    def __init__(self, gate: Gate, store: Store, ledger: PacketLedger) -> None:
        self._gate = gate
        self._store = store
        self._ledger = ledger
        self._seq = itertools.count(1)
        self.node = f"d{time.time_ns() // 1_000_000:x}.{os.getpid():x}"
        # totals (messages unless said otherwise)
        self.accepted = 0
        self.packets = 0
        self.rejected = 0  # messages refused with 429/503 (backpressure)
        self.rejected_requests = 0  # requests refused with a 4xx (bad input) or 429/503
        self.rejected_by_status: dict[int, int] = {}  # the same, by status (499: the client went away)
        self.duplicate_packets = 0
        self.reused_packet_ids = 0  # packets stored under a remembered key, with other content
        self.keyed_fallback = 0  # messages placed at random: the route_key field was missing

    def refuse_request(self, status: int) -> None:
        """Count a refused request (bad content type, too large, bad body, queue full ...)."""
        self.rejected_requests += 1
        self.rejected_by_status[status] = self.rejected_by_status.get(status, 0) + 1

    def figures(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_requests": self.rejected_requests,
            "packets": self.packets,
            "duplicate_packets": self.duplicate_packets,
            "reused_packet_ids": self.reused_packet_ids,
            "keyed_fallback": self.keyed_fallback,
        }

    def _route(self, body: bytes, fmt: str, id_tag: str = "") -> Any:
        prefix = f"{self.node}:{next(self._seq)}/"
        cfg = self._gate.cfg
        limit = cfg.max_messages_per_packet
        try:
            return core.route_packet(
                body, self._gate.router, fallback_prefix=prefix, format=fmt, max_messages=limit, id_tag=id_tag,
                route_key=cfg.route_key,
            )  # fmt: skip
        except NoTargetError:
            # Nothing eligible: accept into pending; it is routed when an analyzer returns.
            return core.route_packet(body, None, fallback_prefix=prefix, format=fmt, max_messages=limit, id_tag=id_tag)

    async def admit(self, body: bytes, fmt: str) -> Admitted | IngestReply:
        """Check, route and store one request body: its chunks, or the answer that refuses it
        (or acknowledges a duplicate). Never raises for bad input."""
        why = self._gate.closed_because()
        if why is not None:
            self.refuse_request(503)
            return IngestReply(503, {"error": "unavailable", "detail": why}, _RETRY_SOON)
        try:
            rp = self._route(body, fmt)
        except PacketError as exc:
            self.refuse_request(exc.status)
            return IngestReply(exc.status, exc.to_json())
        except LogdistError as exc:  # the router cannot pick (weights): not the client's fault, nor a 500
            self.refuse_request(503)
            log.error("cannot route a packet: %s", exc)
            return IngestReply(503, {"error": "cannot_route", "detail": str(exc)}, _RETRY_SOON)
        n, pid = rp.count, rp.packet_id
        key = self._ledger.key(rp.emitter_id, pid)
        digest = 0
        if key is not None:
            digest = content_hash(body)
            # DUPLICATE also when the same packet is being stored right now and that succeeds
            storing = self._ledger.storing(key, digest)
            if storing is not None and await asyncio.shield(storing):
                seen = Seen.DUPLICATE
            else:
                seen = self._ledger.seen(key, digest)
            if seen is Seen.DUPLICATE:
                self.duplicate_packets += 1
                return IngestReply(202, {"accepted": n, "packet_id": pid, "duplicate": True})
            if seen is Seen.REUSED:
                # Messages without an id get "<emitter>/<packet>/<i>": the earlier packet's ids,
                # which the analyzers would drop as duplicates. Tagged by the content, they are
                # new (and the same again for a retry of this content).
                rp = self._route(body, fmt, id_tag=f"{digest:016x}/")
        nbytes = sum(len(data) + 1 for data in rp.batches.values())  # as engine.payload_bytes counts
        full = self._over_queue_bounds(n, nbytes)
        if full is not None:
            self.rejected += n
            self.refuse_request(429)
            return IngestReply(429, {"error": "queue_full", "detail": full}, _RETRY_SOON)
        if self._store.noop:  # memory mode: nothing to store, and no coroutine per packet for it
            stored: list[int] | IngestReply = [0] * len(rp.batches)
        else:
            stored = await self._store_parts(rp.batches, rp.counts, key, digest, n)
        if isinstance(stored, IngestReply):
            return stored
        self.accepted += n
        self.packets += 1
        self.keyed_fallback += rp.unkeyed
        if key is not None:
            self._remember(key, digest)
        now = asyncio.get_running_loop().time()
        counts = rp.counts
        chunks = {t: Chunk(data, counts[t], stored[i], now) for i, (t, data) in enumerate(rp.batches.items())}
        return Admitted(chunks, n, pid, nbytes)

    def _over_queue_bounds(self, n: int, nbytes: int) -> str | None:
        """Why a packet of `n` messages and `nbytes` of payload would pass a queue bound, or None.
        When nothing is held, any packet is taken (so a large one still makes progress)."""
        held, cfg = self._gate.held, self._gate.cfg
        if not held:
            return None
        if held + n > cfg.queue_size:
            return f"{held} messages held, bound {cfg.queue_size} (queue_size)"
        held_bytes = self._gate.held_bytes
        if held_bytes + nbytes > cfg.queue_bytes:
            return f"{held_bytes} bytes held, bound {cfg.queue_bytes} bytes (queue_bytes)"
        return None

    def _remember(self, key: Key, digest: int) -> None:
        """Remember a stored packet; one that reused a remembered key is counted and logged."""
        if self._ledger.seen(key, digest) is Seen.REUSED:
            self.reused_packet_ids += 1
            self._ledger.warn_reused(*key)
        self._ledger.remember(key, digest)

    async def _store_parts(
        self, batches: dict[str, bytes], counts: dict[str, int], key: Key | None, digest: int, n: int
    ) -> list[int] | IngestReply:
        """The store's token per part, or the answer when it cannot store them."""
        done = self._ledger.begin(key, digest)
        stored = False
        try:
            parts = [(data, counts[t], t) for t, data in batches.items()]
            tokens = await self._store.append(parts, packet_key=key, content_hash=digest)
            stored = True
            return tokens
        except WalFullError as exc:
            self.rejected += n
            self.refuse_request(429)
            return IngestReply(429, {"error": "log_full", "detail": str(exc)}, _RETRY_SOON)
        except OSError as exc:  # WalError and any other I/O error: not stored, not acknowledged
            self.refuse_request(503)
            log.error("cannot store a packet: %s", exc)
            return IngestReply(503, {"error": "store_failed", "detail": str(exc)}, _RETRY_SOON)
        finally:
            self._ledger.end(key, digest, done, stored)
