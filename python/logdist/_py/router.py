"""Weighted target selection among eligible targets (twin of crates/wlb/src/router.rs)."""

from __future__ import annotations

import math
from collections.abc import Collection

from logdist._py.alias import AliasTable
from logdist._py.convert import as_count, as_float
from logdist._py.keyed import key_hash, pick
from logdist._py.rng import F53, GOLDEN, M64, MIX1, MIX2, SplitMix64
from logdist.errors import NoTargetError, WeightError

__all__ = ["Router"]

_STRATEGIES = ("alias", "swrr")
_SWRR_SCALE = 1_000_000


def _check_weight(weight: object) -> float:
    w = as_float(weight, "weight")
    if math.isnan(w) or math.isinf(w) or w < 0.0:
        raise WeightError(f"weight {w!r} is not a finite non-negative number")
    return w


class _Target:
    __slots__ = ("current", "eligible", "iweight", "khash", "name", "weight")

    def __init__(self, name: str, weight: float) -> None:
        self.name = name
        self.khash = key_hash(name.encode("utf-8", "surrogatepass"))
        self.weight = weight
        self.eligible = True
        self.iweight = 0
        self.current = 0


class Router:
    """Weighted selection among eligible targets ("alias" or "swrr"), see _wlb.pyi."""

    __slots__ = ("_cache", "_rng", "_strategy", "_targets")

    def __init__(self, strategy: str = "alias", seed: int = 0) -> None:
        if strategy not in _STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r} (expected 'alias' or 'swrr')")
        self._strategy = strategy
        self._rng = SplitMix64(seed)
        self._targets: dict[str, _Target] = {}
        # alias: (candidate names, table) over the unexcluded candidates; None = rebuild.
        self._cache: tuple[list[str], AliasTable] | None = None

    @property
    def strategy(self) -> str:
        return self._strategy

    def _changed(self) -> None:
        self._cache = None
        if self._strategy == "swrr":
            ints = []
            for t in self._targets.values():
                t.current = 0
                t.iweight = max(1, math.floor(t.weight * _SWRR_SCALE + 0.5)) if t.weight > 0.0 else 0
                ints.append(t.iweight)
            g = 0
            for i in ints:
                g = math.gcd(g, i)
            if g > 1:
                for t in self._targets.values():
                    t.iweight //= g

    def set_target(self, name: str, weight: float) -> None:
        if not isinstance(name, str):
            raise TypeError(f"target name must be a str, not {type(name).__name__}")
        w = _check_weight(weight)
        t = self._targets.get(name)
        if t is None:
            self._targets[name] = _Target(name, w)
        else:
            t.weight = w
        self._changed()

    def remove_target(self, name: str) -> None:
        if name not in self._targets:
            raise KeyError(name)
        del self._targets[name]
        self._changed()

    def set_eligible(self, name: str, eligible: bool) -> None:
        t = self._targets.get(name)
        if t is None:
            raise KeyError(name)
        t.eligible = bool(eligible)
        self._changed()

    def __len__(self) -> int:
        return len(self._targets)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._targets

    def snapshot(self) -> list[tuple[str, float, bool]]:
        return [(t.name, t.weight, t.eligible) for t in self._targets.values()]

    def shares(self) -> dict[str, float]:
        total = 0.0
        for t in self._targets.values():
            if t.eligible and t.weight > 0.0:
                total += t.weight
        if total == 0.0:
            return {name: 0.0 for name in self._targets}
        return {t.name: (t.weight / total if t.eligible else 0.0) for t in self._targets.values()}

    def _candidates(self, exclude: Collection[str] | None) -> list[_Target]:
        if exclude:
            return [t for t in self._targets.values() if t.eligible and t.weight > 0.0 and t.name not in exclude]
        return [t for t in self._targets.values() if t.eligible and t.weight > 0.0]

    def _table(self, exclude: Collection[str] | None) -> tuple[list[str], AliasTable]:
        if exclude:
            ex = exclude if isinstance(exclude, (set, frozenset, dict)) else frozenset(exclude)
            if any(t.name in ex for t in self._targets.values()):
                cands = self._candidates(ex)
                if not cands:
                    raise NoTargetError("no eligible target (all unhealthy, disabled, zero-weight or excluded)")
                return [t.name for t in cands], AliasTable([t.weight for t in cands])
        cache = self._cache
        if cache is None:
            cands = self._candidates(None)
            if not cands:
                raise NoTargetError("no eligible target (all unhealthy, disabled, zero-weight or excluded)")
            cache = self._cache = ([t.name for t in cands], AliasTable([t.weight for t in cands]))
        return cache

    def _swrr_pick(self, exclude: Collection[str] | None) -> str:
        cands = self._candidates(exclude)
        if not cands:
            raise NoTargetError("no eligible target (all unhealthy, disabled, zero-weight or excluded)")
        total = 0
        best: _Target | None = None
        for t in cands:
            total += t.iweight
        for t in cands:
            t.current += t.iweight
            if best is None or t.current > best.current:
                best = t
        assert best is not None
        best.current -= total
        return best.name

    def pick(self, exclude: Collection[str] | None = None) -> str:
        if self._strategy == "swrr":
            return self._swrr_pick(exclude)
        names, table = self._table(exclude)
        rng = self._rng
        u1 = rng.next_f64()
        u2 = rng.next_f64()
        return names[table.sample(u1, u2)]

    def pick_key(self, key: bytes, exclude: Collection[str] | None = None) -> str:
        return self._pick_key_hash(key_hash(key), exclude)

    def _pick_key_hash(self, kh: int, exclude: Collection[str] | None = None) -> str:
        """The keyed pick for a key hash (twin of Router::pick_key_excluding); no draw."""
        name = pick(kh, ((t.name, t.khash, t.weight) for t in self._candidates(exclude)))
        if name is None:
            raise NoTargetError("no eligible target (all unhealthy, disabled, zero-weight or excluded)")
        return name

    def pick_many(self, count: int) -> list[str]:
        count = as_count(count, "count")
        if count == 0:
            return []
        if self._strategy == "swrr":
            return [self._swrr_pick(None) for _ in range(count)]
        names, table = self._table(None)
        # The same draws as `count` calls of pick(), with the generator inlined for speed.
        n = len(names)
        last = n - 1
        prob = table._prob
        alias = table._alias
        s = self._rng._state
        out: list[str] = []
        append = out.append
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
            append(names[col if u2 < prob[col] else alias[col]])
        self._rng._state = s
        return out

    def __repr__(self) -> str:
        return f"Router(strategy={self._strategy!r}, targets={self.snapshot()!r})"
