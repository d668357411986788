"""The durability seam: where accepted messages are stored before the distributor answers 2xx.

Admission calls `await store.append(parts, packet_key, content_hash)` for each accepted packet before it
answers 202: one part per target analyzer, (comma-joined messages with ids assigned, count,
target). The engine tags each chunk it queues with the token returned for its part, and when
an analyzer acknowledges a batch (or a batch is written to the dead-letter store) it calls
`store.ack_chunks(batch.chunks)`. The write-ahead log implements the same interface: append =
write + group-commit fsync, ack = record delivery progress, and `recover()` yields what is
still undelivered at start. In `memory` mode everything is a no-op and the messages live only
in the outbound queues (they die with the process).

The packet ledger owns the dedup window; a store that keeps it across restarts hands the
previous run's keys (with their content hashes) back to `recover(remember)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Protocol

from logdist.distributor.batch import Chunk
from logdist.distributor.ledger import Key
from logdist.distributor.walrecord import Part

__all__ = ["MemoryStore", "Part", "Store"]


class Store(Protocol):
    #: "memory" | "wal": reported by /health and /api/v1/metrics
    durability: str
    #: True when append/ack do nothing, so the hot path may skip the calls
    noop: bool

    async def append(self, parts: Sequence[Part], packet_key: Key | None = None, content_hash: int = 0) -> list[int]:
        """Store the parts of one accepted packet (each: messages joined by b",", their count,
        and optionally the id of the analyzer they were routed to; b"[" + part + b"]" is a JSON
        array) and return one token per part. `packet_key` is the packet's (emitter_id,
        packet_id) when it has one, and `content_hash` the hash of its content (ledger.content_hash).
        A chunk may later be re-split, so acks for a token may come
        in several pieces. Raises WalFullError (answer 429) or WalError (answer 503) when it
        cannot store them; nothing is then acknowledged to the client."""
        ...

    def ack_chunks(self, chunks: Iterable[Chunk]) -> None:
        """The messages of these chunks are delivered (or dead-lettered on disk)."""
        ...

    def recover(self, remember: Callable[[Key, int], None]) -> AsyncIterator[tuple[int, bytes, int, str]]:
        """(token, part, count, target) of every part not fully acknowledged (re-queued at
        start; to `target`, the analyzer it was routed to, when that one can take it; target is
        "" when unknown). The previous run's packet keys go to `remember` with the hash of their
        content (0 when unknown), oldest first."""
        ...

    async def close(self) -> None: ...

    def resize_dedup_window(self, window: int) -> None:
        """The ledger's window changed (a config reload): a store that keeps the keys on disk
        sizes its keys file by it."""
        ...

    def data_loss(self) -> dict[str, object] | None:
        """The pending report of stored messages lost to damage (found by recovery, not yet
        acknowledged by an operator), or None."""
        ...

    async def acknowledge_loss(self) -> dict[str, object] | None:
        """Forget the pending loss report; returns it (None when there was none)."""
        ...

    def full(self) -> dict[str, object] | None:
        """Why appends are refused now for want of room ({"error": "disk_full" | "log_full",
        "detail", "since"}), or None: /health then says "full". It clears by itself once
        deliveries free room."""
        ...

    def stats(self) -> dict[str, object]:
        """Extra figures for /api/v1/metrics and /health (log bytes, segments, ...)."""
        ...


class MemoryStore:
    """`memory` durability: nothing is written; accepted messages live in the queues."""

    durability = "memory"
    noop = True

    async def append(self, parts: Sequence[Part], packet_key: Key | None = None, content_hash: int = 0) -> list[int]:
        return [0] * len(parts)

    def ack_chunks(self, chunks: Iterable[Chunk]) -> None:
        return None

    async def recover(self, remember: Callable[[Key, int], None]) -> AsyncIterator[tuple[int, bytes, int, str]]:
        return
        yield  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None

    def resize_dedup_window(self, window: int) -> None:
        return None

    def data_loss(self) -> dict[str, object] | None:
        return None

    async def acknowledge_loss(self) -> dict[str, object] | None:
        return None

    def full(self) -> dict[str, object] | None:
        return None

    def stats(self) -> dict[str, object]:
        return {}
