"""The pure-Python twin of the Rust core `logdist._wlb`.

It implements exactly the contract written in `_wlb.pyi` (same API, same algorithms, same
float arithmetic in the same order, same error types from `logdist.errors`), so both backends
return bit-identical results for identical inputs and seeds. It is selected only on purpose
(LOGDIST_PURE=1, see `logdist.core`). tests/core/ runs one suite on both and cross-checks them.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence

from logdist import __version__  # the package's version (looked up once, in logdist/__init__.py)
from logdist._pyanalyze import BatchAnalyzer
from logdist.errors import NoTargetError, PacketError, WeightError

__all__ = [
    "AliasTable",
    "BatchAnalyzer",
    "RetryScheduler",
    "RingBuffer",
    "RoutedPacket",
    "Router",
    "SmoothWeighted",
    "SplitMix64",
    "__version__",
    "route_packet",
]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_F53 = 2.0**-53


# --------------------------------------------------------------------------------------- rng


class SplitMix64:
    """SplitMix64 PRNG; the state is the seed taken mod 2**64."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = _seed(seed)

    def next_u64(self) -> int:
        self._state = s = (self._state + _GOLDEN) & _M64
        z = ((s ^ (s >> 30)) * _MIX1) & _M64
        z = ((z ^ (z >> 27)) * _MIX2) & _M64
        return z ^ (z >> 31)

    def next_f64(self) -> float:
        return (self.next_u64() >> 11) * _F53

    def __repr__(self) -> str:
        return f"SplitMix64(state={self._state:#018x})"


def _as_int(value: object, what: str) -> int:
    if not isinstance(value, int):  # bool is an int, as for the Rust backend's integer arguments
        if hasattr(type(value), "__index__"):
            return int(value.__index__())  # type: ignore[attr-defined]
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _as_float(value: object, what: str) -> float:
    """A real number, as the Rust backend's f64 arguments take it (so no str)."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{what} must be a real number, not {type(value).__name__}")
    return float(value)  # type: ignore[arg-type]


def _bounded(value: int, lo: int, hi: int, what: str) -> int:
    if not lo <= value <= hi:
        raise OverflowError(f"{what} {value} does not fit in [{lo}, {hi}]")
    return value


def _seed(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"seed must be an int, not {type(value).__name__}")
    return value & _M64


def _count(value: object, what: str) -> int:
    n = _as_int(value, what)
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


# ------------------------------------------------------------------------------------- alias


class AliasTable:
    """Vose's alias method: O(n) build, O(1) sample (see _wlb.pyi for the exact algorithm)."""

    __slots__ = ("_alias", "_n", "_prob")

    def __init__(self, weights: Sequence[float]) -> None:
        ws = [_as_float(w, "weights") for w in weights]
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
        for col in self._draws(_count(count, "count"), seed):
            append(col)
        return out

    def histogram(self, count: int, seed: int) -> list[int]:
        hist = [0] * self._n
        for col in self._draws(_count(count, "count"), seed):
            hist[col] += 1
        return hist

    def _draws(self, count: int, seed: int) -> Iterator[int]:
        # SplitMix64 inlined: this loop is the whole cost of sampling in Python.
        n = self._n
        last = n - 1
        prob = self._prob
        alias = self._alias
        s = _seed(seed)
        for _ in range(count):
            s = (s + _GOLDEN) & _M64
            z = ((s ^ (s >> 30)) * _MIX1) & _M64
            z = ((z ^ (z >> 27)) * _MIX2) & _M64
            u1 = ((z ^ (z >> 31)) >> 11) * _F53
            s = (s + _GOLDEN) & _M64
            z = ((s ^ (s >> 30)) * _MIX1) & _M64
            z = ((z ^ (z >> 27)) * _MIX2) & _M64
            u2 = ((z ^ (z >> 31)) >> 11) * _F53
            col = int(u1 * n)
            if col > last:
                col = last
            yield col if u2 < prob[col] else alias[col]

    def __repr__(self) -> str:
        return f"AliasTable(n={self._n})"


# -------------------------------------------------------------------------------------- swrr


class SmoothWeighted:
    """Smooth weighted round robin (nginx). Deterministic; exact over every window of W picks."""

    __slots__ = ("_current", "_total", "_weights")

    def __init__(self, weights: Sequence[int]) -> None:
        ws: list[int] = []
        for i, weight in enumerate(weights):  # one pass, in order, as the Rust backend checks
            w = _as_int(weight, "weight")
            if w < 0:
                raise WeightError(f"weights[{i}]: {w} is negative")
            ws.append(_bounded(w, 0, _M64, f"weights[{i}]"))
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
        return [self.next() for _ in range(_count(count, "count"))]

    def __repr__(self) -> str:
        return f"SmoothWeighted({self._weights!r})"


# ------------------------------------------------------------------------------------ router

_STRATEGIES = ("alias", "swrr")
_SWRR_SCALE = 1_000_000


def _check_weight(weight: object) -> float:
    w = _as_float(weight, "weight")
    if math.isnan(w) or math.isinf(w) or w < 0.0:
        raise WeightError(f"weight {w!r} is not a finite non-negative number")
    return w


class _Target:
    __slots__ = ("current", "eligible", "iweight", "name", "weight")

    def __init__(self, name: str, weight: float) -> None:
        self.name = name
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

    def pick_many(self, count: int) -> list[str]:
        count = _count(count, "count")
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
            s = (s + _GOLDEN) & _M64
            z = ((s ^ (s >> 30)) * _MIX1) & _M64
            z = ((z ^ (z >> 27)) * _MIX2) & _M64
            u1 = ((z ^ (z >> 31)) >> 11) * _F53
            s = (s + _GOLDEN) & _M64
            z = ((s ^ (s >> 30)) * _MIX1) & _M64
            z = ((z ^ (z >> 27)) * _MIX2) & _M64
            u2 = ((z ^ (z >> 31)) >> 11) * _F53
            col = int(u1 * n)
            if col > last:
                col = last
            append(names[col if u2 < prob[col] else alias[col]])
        self._rng._state = s
        return out

    def __repr__(self) -> str:
        return f"Router(strategy={self._strategy!r}, targets={self.snapshot()!r})"


# ------------------------------------------------------------------------------------- ring


class RingBuffer:
    """Bounded MPMC FIFO of bytes objects (a lock here; lock-free in Rust). Stores the object itself."""

    __slots__ = ("_capacity", "_items", "_lock")

    def __init__(self, capacity: int) -> None:
        cap = _as_int(capacity, "capacity")
        if cap < 1:
            raise ValueError(f"capacity must be >= 1, got {cap}")
        self._capacity = cap
        self._items: deque[bytes] = deque()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._items)

    def is_empty(self) -> bool:
        return not self._items

    def is_full(self) -> bool:
        return len(self._items) >= self._capacity

    def push(self, item: bytes) -> bytes | None:
        if not isinstance(item, bytes):
            raise TypeError(f"RingBuffer holds bytes, not {type(item).__name__}")
        with self._lock:
            if len(self._items) >= self._capacity:
                return item
            self._items.append(item)
            return None

    def pop(self) -> bytes | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def pop_many(self, max_items: int, max_bytes: int) -> list[bytes]:
        max_items = _as_int(max_items, "max_items")
        max_bytes = _as_int(max_bytes, "max_bytes")
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        out: list[bytes] = []
        with self._lock:
            items = self._items
            if not items:
                return out
            first = items.popleft()
            out.append(first)
            total = len(first)
            while items and len(out) < max_items:
                size = len(items[0])
                if total + size > max_bytes:
                    break
                total += size
                out.append(items.popleft())
        return out

    def __repr__(self) -> str:
        return f"RingBuffer(len={len(self._items)}, capacity={self._capacity})"


# ------------------------------------------------------------------------------------ retry


class RetryScheduler:
    """Exponential backoff with full jitter; tokens due in (deadline, insertion) order."""

    MAX_RETRY_AFTER: float = 3600.0

    __slots__ = ("_base", "_cap", "_heap", "_mult", "_rng", "_seq")

    def __init__(self, base: float = 0.05, cap: float = 30.0, multiplier: float = 2.0, seed: int = 0) -> None:
        base, cap = _as_float(base, "base"), _as_float(cap, "cap")
        multiplier = _as_float(multiplier, "multiplier")
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
        attempt = _count(attempt, "attempt")
        if attempt >= 64:
            return self._cap
        return min(self._cap, self._base * self._mult**attempt)

    def backoff(self, attempt: int, u: float) -> float:
        ceiling = self._ceiling(attempt)
        if not 0.0 <= u < 1.0:
            raise ValueError(f"u must be in [0, 1), got {u!r}")
        return u * ceiling

    def schedule(self, token: int, now: float, attempt: int, retry_after: float | None = None) -> float:
        token = _bounded(_as_int(token, "token"), -(2**63), 2**63 - 1, "token")
        now = _as_float(now, "now")
        if retry_after is not None:
            ra = _as_float(retry_after, "retry_after")
            # IEEE maxNum/minNum (Rust f64::max/min): a NaN operand yields the other one.
            ra = 0.0 if math.isnan(ra) or ra < 0.0 else ra
            delay = min(ra, self.MAX_RETRY_AFTER)
            _count(attempt, "attempt")
        else:
            delay = self.backoff(attempt, self._rng.next_f64())
        deadline = now + delay
        heapq.heappush(self._heap, (deadline, self._seq, token))
        self._seq += 1
        return deadline

    def pop_due(self, now: float, max_items: int = 1 << 30) -> list[int]:
        max_items = _as_int(max_items, "max_items")
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


# ----------------------------------------------------------------------------------- packet


class RoutedPacket:
    """The result of route_packet (see _wlb.pyi)."""

    __slots__ = ("_batches", "_count", "_counts", "_emitter_id", "_packet_id")

    def __init__(
        self,
        emitter_id: str | None,
        packet_id: str | None,
        count: int,
        batches: dict[str, bytes],
        counts: dict[str, int],
    ) -> None:
        self._emitter_id = emitter_id
        self._packet_id = packet_id
        self._count = count
        self._batches = batches
        self._counts = counts

    @property
    def emitter_id(self) -> str | None:
        return self._emitter_id

    @property
    def packet_id(self) -> str | None:
        return self._packet_id

    @property
    def count(self) -> int:
        return self._count

    @property
    def batches(self) -> dict[str, bytes]:
        return dict(self._batches)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def __repr__(self) -> str:
        return (
            f"RoutedPacket(emitter_id={self._emitter_id!r}, packet_id={self._packet_id!r}, "
            f"count={self._count}, counts={self._counts!r})"
        )


# JSON lexemes over raw bytes (RFC 8259). The body is valid UTF-8 before any of these run, so
# a byte >= 0x80 inside a string is part of a well-formed code point.
_RX_WS = rb"[ \t\n\r]*"
_RX_STR = rb'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
_RX_NUM = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_RX_SCALAR = _RX_STR + rb"|" + _RX_NUM + rb"|true|false|null"
_RX_MEMBER = _RX_WS + _RX_STR + _RX_WS + rb":" + _RX_WS + rb"(?:" + _RX_SCALAR + rb")"
_WS = re.compile(_RX_WS)
_STR = re.compile(_RX_STR)
_NUM = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
# whitespace, a key, whitespace, a colon, whitespace: the start of an object member
_KEY = re.compile(_RX_WS + rb"(" + _RX_STR + rb")" + _RX_WS + rb":" + _RX_WS)
# the common case of a whole member: key, a scalar value, then `,` or `}` (fast path only; on
# no match the step-by-step scanner runs and reports the precise error)
_MEMBER = re.compile(
    _RX_WS + rb"(" + _RX_STR + rb")" + _RX_WS + rb":" + _RX_WS + rb"(" + _RX_SCALAR + rb")" + _RX_WS + rb"([,}])"
)
# a whole flat container (scalars only), the usual shape of "metadata" (fast path only)
_FLAT = re.compile(
    rb"\{(?:"
    + _RX_MEMBER
    + rb"(?:"
    + _RX_WS
    + rb","
    + _RX_MEMBER
    + rb")*)?"
    + _RX_WS
    + rb"\}|\[(?:"
    + _RX_WS
    + rb"(?:"
    + _RX_SCALAR
    + rb")(?:"
    + _RX_WS
    + rb","
    + _RX_WS
    + rb"(?:"
    + _RX_SCALAR
    + rb"))*)?"
    + _RX_WS
    + rb"\]"
)
# whitespace, then the separator or closer after a value
_SEP = re.compile(rb"[ \t\n\r]*([,}\]])")
# _WS always matches (possibly empty); typed so that `.end()` needs no None check.
_ws: Callable[[bytes, int, int], re.Match[bytes]] = _WS.match  # type: ignore[assignment]
_PREFIX_OK = re.compile(r"[A-Za-z0-9._:/-]*")

# value kinds
_K_STR, _K_INT, _K_NUM, _K_OBJ, _K_ARR, _K_LIT = range(6)

_B_QUOTE, _B_LBRACE, _B_RBRACE, _B_LBRACK, _B_RBRACK = 0x22, 0x7B, 0x7D, 0x5B, 0x5D
_B_COMMA, _B_COLON, _B_MINUS = 0x2C, 0x3A, 0x2D
_NUM_START = frozenset(b"-0123456789")

# message field -> (allowed kinds, what the detail says is expected)
_MSG_FIELDS: dict[bytes, tuple[frozenset[int], str]] = {
    b"message": (frozenset({_K_STR}), "string"),
    b"level": (frozenset({_K_STR}), "string"),
    b"source": (frozenset({_K_STR}), "string"),
    b"timestamp": (frozenset({_K_STR, _K_INT, _K_NUM}), "string or number"),
    b"id": (frozenset({_K_STR, _K_INT}), "string or integer"),
    b"metadata": (frozenset({_K_OBJ}), "object"),
}


# the same, keyed by the raw key token (quotes included), with the field name
_MSG_FIELDS_RAW: dict[bytes, tuple[frozenset[int], str, str]] = {
    b'"' + k + b'"': (kinds, what, k.decode()) for k, (kinds, what) in _MSG_FIELDS.items()
}
_LIT_START = frozenset(b"tfn")


class _JsonError(Exception):
    def __init__(self, code: str, offset: int, what: str) -> None:
        super().__init__(code, offset, what)
        self.code = code
        self.offset = offset
        self.what = what


def _bad(offset: int, what: str) -> _JsonError:
    return _JsonError("bad_json", offset, what)


def _key_name(raw: bytes) -> bytes:
    """The decoded name of a key token (quotes included), as UTF-8 bytes."""
    inner = raw[1:-1]
    if b"\\" not in inner:
        return inner
    name: str = json.loads(raw)
    return name.encode("utf-8", "surrogatepass")


_HEX = frozenset(b"0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = frozenset(b'"\\/bfnrt')


def _string_error(buf: bytes, start: int, lim: int) -> _JsonError:
    """The precise error of a string opening at `start` that _STR did not match."""
    pos = start + 1
    while pos < lim:
        c = buf[pos]
        if c == _B_QUOTE:
            break
        if c == 0x5C:  # backslash
            nxt = buf[pos + 1] if pos + 1 < lim else -1
            if nxt in _SIMPLE_ESCAPES:
                pos += 2
            elif nxt == 0x75:  # u
                if pos + 6 > lim or not all(h in _HEX for h in buf[pos + 2 : pos + 6]):
                    return _bad(pos, "invalid \\u escape")
                pos += 6
            else:
                return _bad(pos, "invalid escape")
        elif c < 0x20:
            return _bad(pos, "control character in string")
        else:
            pos += 1
    return _bad(start, "unterminated string")


def _scalar(buf: bytes, pos: int, lim: int) -> tuple[int, int]:
    """Scan a non-container value at pos (< lim); returns (end, kind)."""
    c = buf[pos]
    if c == _B_QUOTE:
        m = _STR.match(buf, pos, lim)
        if m is None:
            raise _string_error(buf, pos, lim)
        return m.end(), _K_STR
    if c in _NUM_START:
        m = _NUM.match(buf, pos, lim)
        if m is None:
            raise _bad(pos, "invalid number")
        return m.end(), (_K_INT if m.lastindex is None else _K_NUM)
    for lit in (b"true", b"false", b"null"):
        if buf.startswith(lit, pos, lim):
            return pos + len(lit), _K_LIT
    raise _bad(pos, "unexpected character")


def _skip_container(buf: bytes, pos: int, lim: int, depth: int, max_depth: int) -> int:
    """Validate the array or object opening at pos (at nesting depth `depth`); returns its end."""
    if depth > max_depth:
        raise _JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    flat = _FLAT.match(buf, pos, lim)
    if flat is not None:
        return flat.end()
    stack = [buf[pos]]
    pos += 1
    ws = _ws
    keym = _KEY.match
    sepm = _SEP.match
    expect_first = True
    while True:
        top = stack[-1]
        if expect_first:
            expect_first = False
            pos = ws(buf, pos, lim).end()
            if pos >= lim:
                raise _bad(pos, "unexpected end of input")
            c = buf[pos]
            if (c == _B_RBRACE and top == _B_LBRACE) or (c == _B_RBRACK and top == _B_LBRACK):
                stack.pop()
                pos += 1
                if not stack:
                    return pos
                top = stack[-1]
                # fall through to "after value"
            else:
                if top == _B_LBRACE:
                    pos = _member_key(buf, pos, lim)
                pos = ws(buf, pos, lim).end()
                if pos >= lim:
                    raise _bad(pos, "unexpected end of input")
                c = buf[pos]
                if c == _B_LBRACE or c == _B_LBRACK:
                    if depth + len(stack) > max_depth:
                        raise _JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
                    stack.append(c)
                    pos += 1
                    expect_first = True
                    continue
                pos = _scalar(buf, pos, lim)[0]
        # after a value: a separator or the closer of the innermost container
        m = sepm(buf, pos, lim)
        if m is None:
            pos = ws(buf, pos, lim).end()
            raise _bad(pos, "unexpected end of input" if pos >= lim else "expected ',' or a closing bracket")
        c = buf[m.start(1)]
        if c == _B_COMMA:
            pos = m.end()
            if top == _B_LBRACE:
                km = keym(buf, pos, lim)
                pos = km.end() if km is not None else _member_key(buf, pos, lim)
            pos = ws(buf, pos, lim).end()
            if pos >= lim:
                raise _bad(pos, "unexpected end of input")
            c = buf[pos]
            if c == _B_LBRACE or c == _B_LBRACK:
                if depth + len(stack) > max_depth:
                    raise _JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
                stack.append(c)
                pos += 1
                expect_first = True
                continue
            pos = _scalar(buf, pos, lim)[0]
            # loop back to "after value" without the expect_first branch
            continue
        if (c == _B_RBRACE and top == _B_LBRACE) or (c == _B_RBRACK and top == _B_LBRACK):
            stack.pop()
            pos = m.end()
            if not stack:
                return pos
            continue
        raise _bad(m.start(1), "expected ',' or a closing bracket")


def _member_key(buf: bytes, pos: int, lim: int) -> int:
    """Scan `"key" :` at pos (whitespace allowed around); returns the offset after the colon."""
    m = _KEY.match(buf, pos, lim)
    if m is not None:
        return m.end()
    pos = _ws(buf, pos, lim).end()
    if pos >= lim:
        raise _bad(pos, "unexpected end of input")
    if buf[pos] != _B_QUOTE:
        raise _bad(pos, "expected a string key")
    sm = _STR.match(buf, pos, lim)
    if sm is None:
        raise _string_error(buf, pos, lim)
    pos = _ws(buf, sm.end(), lim).end()
    if pos >= lim:
        raise _bad(pos, "unexpected end of input")
    raise _bad(pos, "expected ':'")


def _value(buf: bytes, pos: int, lim: int, depth: int, max_depth: int) -> tuple[int, int]:
    """Scan any value at pos (leading whitespace already skipped); returns (end, kind)."""
    if pos >= lim:
        raise _bad(pos, "unexpected end of input")
    c = buf[pos]
    if c == _B_LBRACE:
        return _skip_container(buf, pos, lim, depth, max_depth), _K_OBJ
    if c == _B_LBRACK:
        return _skip_container(buf, pos, lim, depth, max_depth), _K_ARR
    return _scalar(buf, pos, lim)


def _after_value(buf: bytes, pos: int, lim: int, closer: int) -> tuple[int, bool]:
    """After a member/element: (offset after the separator, True if it was the closer)."""
    m = _SEP.match(buf, pos, lim)
    if m is None:
        pos = _ws(buf, pos, lim).end()
        raise _bad(pos, "unexpected end of input" if pos >= lim else "expected ',' or a closing bracket")
    c = buf[m.start(1)]
    if c == _B_COMMA:
        return m.end(), False
    if c == closer:
        return m.end(), True
    raise _bad(m.start(1), "expected ',' or a closing bracket")


class _Scan:
    """What the syntax pass found: message spans, ids, and the first schema error per step."""

    __slots__ = ("agent_raw", "arrays", "emitter_raw", "ends", "msg_err", "noid", "pid_raw", "pkt_err", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.noid: list[int] = []  # indexes of messages without an "id" member
        self.msg_err: str | None = None  # step 4
        self.pkt_err: str | None = None  # step 3
        self.arrays = 0  # how many "messages"/"log_messages" members the packet had
        self.emitter_raw: bytes | None = None
        self.agent_raw: bytes | None = None
        self.pid_raw: bytes | None = None


def _message(buf: bytes, pos: int, lim: int, depth: int, max_depth: int, sc: _Scan, label: str, dot: str) -> int:
    """Scan a message object at pos; record its span, whether it has an id, and its first error."""
    if depth > max_depth:
        raise _JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    start = pos
    pos += 1
    err: str | None = None
    has_id = False
    has_message = False
    check = sc.msg_err is None
    m = _SEP.match(buf, pos, lim)
    if m is not None and buf[m.start(1)] == _B_RBRACE:
        pos = m.end()
    else:
        keym = _KEY.match
        memberm = _MEMBER.match
        strm = _STR.match
        fields = _MSG_FIELDS_RAW
        while True:
            mm = memberm(buf, pos, lim)
            if mm is not None:  # key: scalar, then , or }
                pos = mm.end()
                rawkey = mm.group(1)
                vs = mm.start(2)
                c = buf[vs]
                if c == _B_QUOTE:
                    kind = _K_STR
                elif c in _LIT_START:
                    kind = _K_LIT
                else:
                    val = buf[vs : mm.end(2)]
                    kind = _K_NUM if (b"." in val or b"e" in val or b"E" in val) else _K_INT
                closed = buf[pos - 1] == _B_RBRACE
            else:
                km = keym(buf, pos, lim)
                if km is None:
                    _member_key(buf, pos, lim)  # raises with the precise offset
                    raise AssertionError("unreachable")
                rawkey = km.group(1)
                vpos = km.end()
                if vpos >= lim:
                    raise _bad(vpos, "unexpected end of input")
                c = buf[vpos]
                if c == _B_QUOTE:
                    sm = strm(buf, vpos, lim)
                    if sm is None:
                        raise _string_error(buf, vpos, lim)
                    pos = sm.end()
                    kind = _K_STR
                elif c == _B_LBRACE or c == _B_LBRACK:
                    pos = _skip_container(buf, vpos, lim, depth + 1, max_depth)
                    kind = _K_OBJ if c == _B_LBRACE else _K_ARR
                else:
                    pos, kind = _scalar(buf, vpos, lim)
                pos, closed = _after_value(buf, pos, lim, _B_RBRACE)
            if check:
                spec = fields.get(rawkey)
                if spec is None and b"\\" in rawkey:
                    spec = fields.get(b'"' + _key_name(rawkey) + b'"')
                if spec is not None:
                    name = spec[2]
                    if name == "id":
                        has_id = True
                    elif name == "message":
                        has_message = True
                    if err is None and kind not in spec[0]:
                        err = f"{label}{dot}{name}: expected {spec[1]}"
            if closed:
                break
    sc.starts.append(start)
    sc.ends.append(pos)
    if not has_id:
        sc.noid.append(len(sc.starts) - 1)
    if check:
        if err is None and not has_message:
            err = f"{label}{dot}message: required string is missing"
        if err is not None:
            sc.msg_err = err
    return pos


def _messages_array(buf: bytes, pos: int, lim: int, depth: int, max_depth: int, sc: _Scan, name: str) -> int:
    """Scan an array of messages at pos; returns its end."""
    if depth > max_depth:
        raise _JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    pos += 1
    m = _SEP.match(buf, pos, lim)
    if m is not None and buf[m.start(1)] == _B_RBRACK:
        return m.end()
    ws = _ws
    i = len(sc.starts)
    while True:
        pos = ws(buf, pos, lim).end()
        if pos >= lim:
            raise _bad(pos, "unexpected end of input")
        if buf[pos] == _B_LBRACE:
            pos = _message(buf, pos, lim, depth + 1, max_depth, sc, f"{name}[{i}]", ".")
        else:
            pos = _value(buf, pos, lim, depth + 1, max_depth)[0]
            # still counts as a message for the index of the next one; never routed
            sc.starts.append(-1)
            sc.ends.append(-1)
            if sc.msg_err is None:
                sc.msg_err = f"{name}[{i}]: expected object"
        i += 1
        pos, closed = _after_value(buf, pos, lim, _B_RBRACK)
        if closed:
            return pos


def _packet_members(buf: bytes, pos: int, lim: int, max_depth: int, sc: _Scan) -> int:
    """Scan a packet object (depth 1) opening at pos; returns its end."""
    if max_depth < 1:
        raise _JsonError("too_deep", pos, f"nesting deeper than {max_depth}")
    pos += 1
    m = _SEP.match(buf, pos, lim)
    if m is not None and buf[m.start(1)] == _B_RBRACE:
        return m.end()
    while True:
        km = _KEY.match(buf, pos, lim)
        if km is None:
            _member_key(buf, pos, lim)
            raise AssertionError("unreachable")
        vpos = km.end()
        name = _key_name(km.group(1))
        if vpos >= lim:
            raise _bad(vpos, "unexpected end of input")
        c = buf[vpos]
        if name == b"messages" or name == b"log_messages":
            sc.arrays += 1
            label = name.decode()
            if c == _B_LBRACK:
                pos = _messages_array(buf, vpos, lim, 2, max_depth, sc, label)
            else:
                pos = _value(buf, vpos, lim, 2, max_depth)[0]
                if sc.pkt_err is None:
                    sc.pkt_err = f"{label}: expected array"
        else:
            pos, kind = _value(buf, vpos, lim, 2, max_depth)
            if name == b"emitter_id" or name == b"agent_id":
                if kind == _K_STR:
                    if name == b"emitter_id":
                        sc.emitter_raw = buf[vpos + 1 : pos - 1]
                    else:
                        sc.agent_raw = buf[vpos + 1 : pos - 1]
                elif sc.pkt_err is None:
                    sc.pkt_err = f"{name.decode()}: expected string"
            elif name == b"packet_id":
                if kind == _K_STR:
                    sc.pid_raw = buf[vpos + 1 : pos - 1]
                elif kind == _K_INT:
                    sc.pid_raw = buf[vpos:pos]
                elif sc.pkt_err is None:
                    sc.pkt_err = "packet_id: expected string or integer"
        pos, closed = _after_value(buf, pos, lim, _B_RBRACE)
        if closed:
            return pos


def _ndjson(buf: bytes, max_depth: int) -> _Scan:
    sc = _Scan()
    n = len(buf)
    ws = _ws
    line = 0
    start = 0
    while start <= n:
        nl = buf.find(b"\n", start)
        end = n if nl < 0 else nl
        line += 1
        pos = ws(buf, start, end).end()
        if pos < end:
            if buf[pos] == _B_LBRACE:
                pos = _message(buf, pos, end, 1, max_depth, sc, f"line {line}", ": ")
            else:
                pos = _value(buf, pos, end, 1, max_depth)[0]
                sc.starts.append(-1)
                sc.ends.append(-1)
                if sc.msg_err is None:
                    sc.msg_err = f"line {line}: expected object"
            pos = ws(buf, pos, end).end()
            if pos < end:
                raise _bad(pos, "unexpected data after the value on this line")
        if nl < 0:
            break
        start = nl + 1
    return sc


def _scan(buf: bytes, fmt: str, max_depth: int) -> tuple[_Scan, bool]:
    """Syntax pass (step 2) plus what steps 3-4 need. Returns (scan, is_packet)."""
    if fmt == "ndjson":
        return _ndjson(buf, max_depth), False
    n = len(buf)
    pos = _ws(buf, 0, len(buf)).end()
    if pos >= n:
        raise _bad(pos, "expected a JSON value, found only whitespace" if n else "empty body")
    c = buf[pos]
    sc = _Scan()
    if c == _B_LBRACE:
        end = _packet_members(buf, pos, n, max_depth, sc)
        rest = _ws(buf, end, n).end()
        if rest < n:
            if fmt == "auto":
                return _ndjson(buf, max_depth), False
            raise _bad(rest, "unexpected data after the JSON value")
        return sc, True
    if c == _B_LBRACK:
        end = _messages_array(buf, pos, n, 1, max_depth, sc, "messages")
    else:
        end = _value(buf, pos, n, 1, max_depth)[0]
        sc.pkt_err = "expected a packet object or an array of messages"
    rest = _ws(buf, end, n).end()
    if rest < n:
        raise _bad(rest, "unexpected data after the JSON value")
    return sc, False


def route_packet(
    body: bytes,
    router: Router | None,
    *,
    fallback_prefix: str,
    format: str = "auto",
    max_messages: int = 10_000,
    max_depth: int = 64,
) -> RoutedPacket:
    """Validate a request body, give every message an id, and route each message (see _wlb.pyi)."""
    if format not in ("auto", "json", "ndjson"):
        raise ValueError(f"unknown format {format!r} (expected 'auto', 'json' or 'ndjson')")
    if not isinstance(fallback_prefix, str) or _PREFIX_OK.fullmatch(fallback_prefix) is None:
        raise ValueError(f"fallback_prefix may only hold ASCII letters, digits and '._:/-': {fallback_prefix!r}")
    max_messages = _as_int(max_messages, "max_messages")
    max_depth = _as_int(max_depth, "max_depth")
    if not isinstance(body, bytes):
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        else:
            raise TypeError(f"body must be bytes, not {type(body).__name__}")

    # 1. UTF-8
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PacketError("bad_utf8", f"invalid UTF-8 at byte {exc.start}") from None

    # 2. syntax (the whole body), collecting what steps 3 and 4 check
    try:
        sc, is_packet = _scan(body, format, max_depth)
    except _JsonError as exc:
        if exc.code == "too_deep":
            raise PacketError("too_deep", f"nesting deeper than {max_depth} at byte {exc.offset}") from None
        raise PacketError("bad_json", f"invalid JSON at byte {exc.offset}: {exc.what}") from None

    # 3. packet fields
    if is_packet:
        if sc.arrays == 0:
            sc.pkt_err = sc.pkt_err or 'packet: missing "messages" (or "log_messages")'
            raise PacketError("bad_schema", sc.pkt_err)
        if sc.arrays > 1:
            raise PacketError("bad_schema", 'packet: give exactly one of "messages" and "log_messages"')
    if sc.pkt_err is not None:
        raise PacketError("bad_schema", sc.pkt_err)
    # 4. messages
    if sc.msg_err is not None:
        raise PacketError("bad_schema", sc.msg_err)
    # 5. count
    count = len(sc.starts)
    if count == 0:
        raise PacketError("empty_packet", "the packet holds no messages")
    if count > max_messages:
        raise PacketError("too_many_messages", f"{count} messages, more than the limit of {max_messages}")

    e_raw = sc.emitter_raw if sc.emitter_raw is not None else sc.agent_raw
    emitter_id: str | None = None
    if e_raw is not None:
        emitter_id = json.loads(b'"' + e_raw + b'"')
    packet_id: str | None = None
    if sc.pid_raw is not None:
        packet_id = json.loads(b'"' + sc.pid_raw + b'"')
        prefix = (e_raw or b"") + b"/" + sc.pid_raw + b"/"
    else:
        prefix = fallback_prefix.encode("ascii")

    # Routing: every pick happens here, after the whole body was accepted.
    picks: list[str] | None = None if router is None else router.pick_many(count)

    starts, ends = sc.starts, sc.ends
    pieces = [body[s:e] for s, e in zip(starts, ends, strict=True)]
    for i in sc.noid:
        s, e = starts[i], ends[i]
        idtext = b'"id":"' + prefix + str(i).encode("ascii") + b'"'
        inner = body[s + 1 : e]
        if _SEP.fullmatch(inner) is not None:  # an empty object: `{` ws `}`
            pieces[i] = b"{" + idtext + inner
        else:
            pieces[i] = b"{" + idtext + b"," + inner
    if picks is None:
        return RoutedPacket(emitter_id, packet_id, count, {"": b",".join(pieces)}, {"": count})
    groups: dict[str, list[bytes]] = {}
    for name, piece in zip(picks, pieces, strict=True):
        g = groups.get(name)
        if g is None:
            groups[name] = [piece]
        else:
            g.append(piece)
    return RoutedPacket(
        emitter_id,
        packet_id,
        count,
        {k: b",".join(v) for k, v in groups.items()},
        {k: len(v) for k, v in groups.items()},
    )
