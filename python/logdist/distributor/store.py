"""The durability seam: where accepted messages are stored before the distributor answers 2xx.

The Distributor calls `await store.append(parts)` for each accepted packet before it answers
202: one part per target analyzer, (comma-joined messages with ids assigned, count). It tags
each chunk it queues with the token returned for its part. When an analyzer
acknowledges a batch (or a batch is written to the dead-letter store), it calls
`store.ack(token, count)` for each chunk in it. A write-ahead log implements the same
interface: append = write + group-commit fsync, ack = record delivery progress, and
`recover()` yields what is still undelivered at start.

Packet dedup across restarts (optional): a store that sets `keeps_packet_keys = True` gets
`append(parts, packet_key=(emitter_id, packet_id))` (packet_key None when the packet has no id)
and must offer `window`, an OrderedDict of the recent keys (oldest first; after `recover()`
those of the previous run) bounded by its `dedup_window`. The Distributor uses that dict as its
own dedup window, so the keys are held once. In `memory` mode everything is a no-op
and the messages live only in the outbound queues (seed parity: they die with the process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Protocol

#: (messages joined by b",", count) or (..., count, id of the analyzer they were routed to)
Part = tuple[bytes, int] | tuple[bytes, int, str]


class Store(Protocol):
    #: "memory" | "wal": reported by /health and /api/v1/metrics
    durability: str
    #: True when append/ack do nothing, so the hot path may skip the calls
    noop: bool

    async def append(self, parts: Sequence[Part]) -> list[int]:
        """Store the parts of one accepted packet (each: messages joined by b",", their count,
        and optionally the id of the analyzer they were routed to; b"[" + part + b"]" is a JSON
        array) and return one token per part. A chunk may
        later be re-split, so acks for a token may come in several pieces. Raises WalFullError
        (answer 429) or WalError (answer 503) when it cannot store them; nothing is then
        acknowledged to the client."""
        ...

    def ack(self, token: int, count: int) -> None:
        """`count` messages of record `token` are delivered (or dead-lettered on disk)."""
        ...

    def ack_chunks(self, chunks: Iterable[Any]) -> None:
        """ack(c.token, c.count) for every chunk of a delivered batch, in one call."""
        ...

    def recover(self) -> AsyncIterator[tuple[int, bytes, int, str]]:
        """(token, part, count, target) of every part not fully acknowledged (re-queued at
        start; to `target`, the analyzer it was routed to, when that one can take it; target is
        "" when unknown)."""
        ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, object]:
        """Extra figures for /api/v1/metrics and /health (log bytes, segments, ...)."""
        ...


class MemoryStore:
    """`memory` durability: nothing is written; accepted messages live in the queues."""

    durability = "memory"
    noop = True

    async def append(self, parts: Sequence[Part]) -> list[int]:
        return [0] * len(parts)

    def ack(self, token: int, count: int) -> None:
        return None

    def ack_chunks(self, chunks: Iterable[Any]) -> None:
        return None

    async def recover(self) -> AsyncIterator[tuple[int, bytes, int, str]]:
        return
        yield  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, object]:
        return {}
