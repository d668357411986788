"""Per-analyzer outbound state: the queue of routed chunks, batches, and delivery counters.

A *chunk* is what one packet routed to one analyzer: the exact JSON text of its messages joined
by b"," (as `route_packet` produced it) and their count. The sender coalesces chunks into a
*batch* whose body (b"[" + b",".join(chunks) + b"]") is built once and sent as is on every
retry and reroute. Everything here works per chunk or per batch, never per message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from logdist.config import AnalyzerSpec


class Chunk:
    __slots__ = ("born", "count", "data", "token")

    def __init__(self, data: bytes, count: int, token: int, born: float) -> None:
        self.data = data
        self.count = count
        self.token = token  # the Store's token for the part this came from (0 in memory mode)
        self.born = born  # loop time it was accepted (for the oldest-age figure)


class Batch:
    __slots__ = ("analyzer", "attempts", "body", "born", "chunks", "count", "tried")

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


@dataclass
class AnalyzerState:
    """Everything the distributor keeps about one analyzer."""

    spec: AnalyzerSpec
    queue: OutboundQueue = field(default_factory=OutboundQueue)
    ready: deque[Batch] = field(default_factory=deque)  # batches due (retries, rerouted in)
    inflight: set[Batch] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    healthy: bool = True
    enabled: bool = True
    closed: bool = False
    consecutive_failures: int = 0
    paused_until: float = 0.0  # Retry-After: send nothing new before this loop time
    last_error: str = ""
    ejections: int = 0
    # Saturation: an analyzer whose queue passes `cap` (it cannot keep up with its share) takes
    # no new traffic until its queue is down to half of it, so the others keep their pace and
    # memory stays bounded. It keeps sending what it has.
    saturated: bool = False
    saturations: int = 0
    cap: int = 1 << 62
    probe_failures: int = 0
    flaps: int = 0  # ejections soon after a re-admission, in a row (lengthens the hold-down)
    down_until: float = 0.0  # not re-admitted before this loop time
    readmitted_at: float = -1e9
    last_ok: float = -1e9  # loop time of the last acknowledged batch
    last_batch: float = -1e9  # loop time the last batch was formed (a busy sender lingers)
    # counters (messages unless said otherwise)
    routed: int = 0
    acked: int = 0
    failed: int = 0  # failed attempts (batches)
    retried: int = 0  # retry attempts scheduled (batches)
    rerouted: int = 0  # messages moved away from this analyzer
    dead_lettered: int = 0
    batches_sent: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def eligible(self) -> bool:
        return self.healthy and self.enabled and not self.closed

    @property
    def state(self) -> str:
        if self.closed:
            return "removed"
        if not self.enabled:
            return "disabled"
        return "up" if self.healthy else "down"

    @property
    def inflight_messages(self) -> int:
        return sum(b.count for b in self.inflight)

    @property
    def queued_messages(self) -> int:
        return self.queue.messages + sum(b.count for b in self.ready)

    def latency_ms(self) -> dict[str, float | None]:
        if not self.latencies:
            return {"p50": None, "p99": None}
        xs = sorted(self.latencies)
        n = len(xs)
        return {"p50": round(xs[n // 2] * 1000, 3), "p99": round(xs[min(n - 1, (n * 99) // 100)] * 1000, 3)}
