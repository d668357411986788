"""Vose's alias table (twin of crates/wlb/src/alias.rs)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from logdist._py.convert import as_count, as_float
from logdist._py.rng import F53, GOLDEN, M64, MIX1, MIX2, seed_state
from logdist.errors import WeightError

__all__ = ["AliasTable"]


class AliasTable:
    """Vose's alias method: O(n) build, O(1) sample (see _wlb.pyi for the exact algorithm)."""

    __slots__ = ("_alias", "_n", "_prob")

    def __init__(self, weights: Sequence[float]) -> None:
        ws = [as_float(w, "weights") for w in weights]
        n = len(ws)
        if n == 0:
            raise WeightError("weights: empty list")
        for i, w in enumerate(ws):
            if math.isnan(w) or math.isinf(w) or w < 0.0:
                raise WeightError(f"weights[{i}]: {w!r} is not a finite non-negative number")
        total = 0.0
        for w in ws:  # left to right, uncompensated: the Rust backend sums the same way
            total += w
        if total == 0.0:
            raise WeightError("weights: all zero")
        if math.isinf(total):
            raise WeightError("weights: the sum is not finite")
        prob = [0.0] * n
        alias = [0] * n
        largest = 0
        for i in range(1, n):
            if ws[i] > ws[largest]:
                largest = i
        scaled = [0.0] * n
        small: list[int] = []
        large: list[int] = []
        for i, w in enumerate(ws):
            s = (w * n) / total if w > 0.0 else 0.0
            scaled[i] = s
            (small if s < 1.0 else large).append(i)
        while small and large:
            s_i = small.pop()
            g = large.pop()
            prob[s_i] = scaled[s_i]
            alias[s_i] = g
            scaled[g] = (scaled[g] + scaled[s_i]) - 1.0
            (small if scaled[g] < 1.0 else large).append(g)
        for g in large:
            prob[g] = 1.0
            alias[g] = g
        for s_i in small:  # a zero weight left over keeps prob 0.0: it is never picked
            if ws[s_i] > 0.0:
                prob[s_i] = 1.0
                alias[s_i] = s_i
            else:
                prob[s_i] = 0.0
                alias[s_i] = largest
        self._n = n
        self._prob = prob
        self._alias = alias

    def __len__(self) -> int:
        return self._n

    @property
    def prob(self) -> list[float]:
        return list(self._prob)

    @property
    def alias(self) -> list[int]:
        return list(self._alias)

    def sample(self, u1: float, u2: float) -> int:
        if not (0.0 <= u1 < 1.0) or not (0.0 <= u2 < 1.0):
            raise ValueError(f"uniforms must be in [0, 1), got u1={u1!r}, u2={u2!r}")
        n = self._n
        col = min(int(u1 * n), n - 1)
        return col if u2 < self._prob[col] else self._alias[col]

    def sample_many(self, count: int, seed: int) -> list[int]:
        out: list[int] = []
        append = out.append
        for col in self._draws(as_count(count, "count"), seed):
            append(col)
        return out

    def histogram(self, count: int, seed: int) -> list[int]:
        hist = [0] * self._n
        for col in self._draws(as_count(count, "count"), seed):
            hist[col] += 1
        return hist

    def _draws(self, count: int, seed: int) -> Iterator[int]:
        # SplitMix64 inlined: this loop is the whole cost of sampling in Python.
        n = self._n
        last = n - 1
        prob = self._prob
        alias = self._alias
        s = seed_state(seed)
        for _ in range(count):
            s = (s + GOLDEN) & M64
            z = ((s ^ (s >> 30)) * MIX1) & M64
            z = ((z ^ (z >> 27)) * MIX2) & M64
            u1 = ((z ^ (z >> 31)) >> 11) * F53
            s = (s + GOLDEN) & M64
            z = ((s ^ (s >> 30)) * MIX1) & M64
            z = ((z ^ (z >> 27)) * MIX2) & M64
            u2 = ((z ^ (z >> 31)) >> 11) * F53
            col = int(u1 * n)
            if col > last:
                col = last
            yield col if u2 < prob[col] else alias[col]

    def __repr__(self) -> str:
        return f"AliasTable(n={self._n})"
