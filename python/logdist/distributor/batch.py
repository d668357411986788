"""Chunks, batches and the outbound queue: what the distributor moves, never per message.

A *chunk* is what one packet routed to one analyzer: the exact JSON text of its messages joined
by b"," (as `route_packet` produced it) and their count. The sender coalesces chunks into a
*batch* whose body (b"[" + b",".join(chunks) + b"]") is built once and sent as is on every
retry and reroute. Everything here works per chunk or per batch, never per message (the
"message" and "packet" wire formats of an analyzer do, in wire.py, on what they send).
"""

from __future__ import annotations

from collections import deque


class Chunk:
    """What one packet routed to one analyzer (or a piece of it, after a re-split)."""

    __slots__ = ("born", "count", "data", "hops", "token")

    def __init__(self, data: bytes, count: int, token: int, born: float, hops: tuple[str, ...] = ()) -> None:
        self.data = data
        # the distributors its packet passed through before this one (X-Logdist-Hop); kept in
        # memory only: a chunk recovered from the write-ahead log, or routed again, has none
        self.hops = hops
        self.count = count
        self.token = token  # the Store's token for the part this came from (0 in memory mode)
        self.born = born  # loop time it was accepted (for the oldest-age figure)


class Batch:
    """Chunks sent together in one POST; its body is built once and kept for retries."""

    __slots__ = (
        "analyzer", "attempts", "body", "born", "chunks", "count", "split_from", "splits", "tried", "wire",
        "wire_format",
    )  # fmt: skip

    def __init__(self, chunks: list[Chunk], analyzer: str) -> None:
        self.chunks = chunks
        self.count = sum(c.count for c in chunks)
        # One copy of the data: [ c1 , c2 , ... ] joined once (not join, then concatenate).
        parts = [b","] * (2 * len(chunks) + 1)
        parts[0] = b"["
        parts[-1] = b"]"
        parts[1::2] = [c.data for c in chunks]
        self.body = b"".join(parts)
        self.born = min(c.born for c in chunks)
        self.analyzer = analyzer  # where it is being delivered now
        self.attempts = 0  # failed attempts on the current analyzer
        self.tried: set[str] = set()  # analyzers it failed on for good (for reroute)
        # A piece of a refused batch, split to isolate what the analyzer refuses: how many
        # splits made it, and how many messages the refused batch held (0: not a piece).
        self.splits = 0
        self.split_from = 0
        # What a "packet" analyzer is sent (built once, so a retry re-sends the same packet), or
        # a "message" analyzer's (exact text, body) per message; for `wire_format` ("" : none).
        self.wire: object = None
        self.wire_format = ""

    def piece(self, chunks: list[Chunk]) -> Batch:
        """A batch of some of this one's chunks, with its attempts and history."""
        b = Batch(chunks, self.analyzer)
        b.attempts = self.attempts
        b.tried = set(self.tried)
        b.splits = self.splits
        b.split_from = self.split_from
        return b


class OutboundQueue:
    """FIFO of chunks for one analyzer, with message and byte totals kept up to date."""

    __slots__ = ("bytes", "chunks", "messages")

    def __init__(self) -> None:
        self.chunks: deque[Chunk] = deque()
        self.messages = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.chunks)

    def push(self, chunk: Chunk) -> None:
        self.chunks.append(chunk)
        self.messages += chunk.count
        self.bytes += len(chunk.data)

    def take(self, max_messages: int, max_bytes: int) -> list[Chunk]:
        """Oldest chunks up to the bounds; the first is always taken so the sender progresses."""
        out: list[Chunk] = []
        n = b = 0
        q = self.chunks
        while q:
            c = q[0]
            if out and (n + c.count > max_messages or b + len(c.data) > max_bytes):
                break
            q.popleft()
            out.append(c)
            n += c.count
            b += len(c.data)
        self.messages -= n
        self.bytes -= b
        return out

    def drain(self) -> list[Chunk]:
        out = list(self.chunks)
        self.chunks.clear()
        self.messages = 0
        self.bytes = 0
        return out

    def oldest(self) -> float | None:
        return self.chunks[0].born if self.chunks else None
