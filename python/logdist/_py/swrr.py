"""Smooth weighted round robin, the nginx algorithm (twin of crates/wlb/src/swrr.rs)."""

from __future__ import annotations

from collections.abc import Sequence

from logdist._py.convert import as_count, as_int, bounded
from logdist._py.rng import M64
from logdist.errors import WeightError

__all__ = ["SmoothWeighted"]


class SmoothWeighted:
    """Smooth weighted round robin (nginx). Deterministic; exact over every window of W picks."""

    __slots__ = ("_current", "_total", "_weights")

    def __init__(self, weights: Sequence[int]) -> None:
        ws: list[int] = []
        for i, weight in enumerate(weights):  # one pass, in order, as the Rust backend checks
            w = as_int(weight, "weight")
            if w < 0:
                raise WeightError(f"weights[{i}]: {w} is negative")
            ws.append(bounded(w, 0, M64, f"weights[{i}]"))
        if not ws:
            raise WeightError("weights: empty list")
        total = sum(ws)
        if total == 0:
            raise WeightError("weights: all zero")
        self._weights = ws
        self._total = total
        self._current = [0] * len(ws)

    def __len__(self) -> int:
        return len(self._weights)

    def next(self) -> int:
        ws = self._weights
        cur = self._current
        best = -1
        for i in range(len(ws)):
            w = ws[i]
            cur[i] += w
            if w > 0 and (best < 0 or cur[i] > cur[best]):
                best = i
        cur[best] -= self._total
        return best

    def next_many(self, count: int) -> list[int]:
        return [self.next() for _ in range(as_count(count, "count"))]

    def __repr__(self) -> str:
        return f"SmoothWeighted({self._weights!r})"
