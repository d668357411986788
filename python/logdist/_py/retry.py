"""Timed retries with exponential backoff and full jitter (twin of crates/wlb/src/retry.rs)."""

from __future__ import annotations

import heapq
import math

from logdist._py.convert import as_count, as_float, as_int, bounded
from logdist._py.rng import SplitMix64

__all__ = ["RetryScheduler"]


class RetryScheduler:
    """Exponential backoff with full jitter; tokens due in (deadline, insertion) order."""

    MAX_RETRY_AFTER: float = 3600.0

    __slots__ = ("_base", "_cap", "_heap", "_mult", "_rng", "_seq")

    def __init__(self, base: float = 0.05, cap: float = 30.0, multiplier: float = 2.0, seed: int = 0) -> None:
        base, cap = as_float(base, "base"), as_float(cap, "cap")
        multiplier = as_float(multiplier, "multiplier")
        if not all(math.isfinite(x) for x in (base, cap, multiplier)):
            raise ValueError("base, cap and multiplier must be finite")
        if not base > 0.0:
            raise ValueError(f"base must be > 0, got {base!r}")
        if not cap >= base:
            raise ValueError(f"cap must be >= base, got cap={cap!r} base={base!r}")
        if not 1.0 <= multiplier <= 16.0:
            raise ValueError(f"multiplier must be in [1, 16], got {multiplier!r}")
        self._base = base
        self._cap = cap
        self._mult = multiplier
        self._rng = SplitMix64(seed)
        self._heap: list[tuple[float, int, int]] = []
        self._seq = 0

    def _ceiling(self, attempt: int) -> float:
        attempt = as_count(attempt, "attempt")
        if attempt >= 64:
            return self._cap
        return min(self._cap, self._base * self._mult**attempt)

    def backoff(self, attempt: int, u: float) -> float:
        ceiling = self._ceiling(attempt)
        if not 0.0 <= u < 1.0:
            raise ValueError(f"u must be in [0, 1), got {u!r}")
        return u * ceiling

    def schedule(self, token: int, now: float, attempt: int, retry_after: float | None = None) -> float:
        token = bounded(as_int(token, "token"), -(2**63), 2**63 - 1, "token")
        now = as_float(now, "now")
        if retry_after is not None:
            ra = as_float(retry_after, "retry_after")
            # IEEE maxNum/minNum (Rust f64::max/min): a NaN operand yields the other one.
            ra = 0.0 if math.isnan(ra) or ra < 0.0 else ra
            delay = min(ra, self.MAX_RETRY_AFTER)
            as_count(attempt, "attempt")
        else:
            delay = self.backoff(attempt, self._rng.next_f64())
        deadline = now + delay
        heapq.heappush(self._heap, (deadline, self._seq, token))
        self._seq += 1
        return deadline

    def pop_due(self, now: float, max_items: int = 1 << 30) -> list[int]:
        max_items = as_int(max_items, "max_items")
        heap = self._heap
        out: list[int] = []
        while heap and len(out) < max_items and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

    def __repr__(self) -> str:
        return f"RetryScheduler(base={self._base!r}, cap={self._cap!r}, multiplier={self._mult!r}, len={len(self)})"
