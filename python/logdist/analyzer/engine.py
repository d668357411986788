"""The analysis itself: body parsing, deduplication by message id, and the counters.

Everything an analyzer does per message lives here, in one class with a bytes-in API
(`Analysis.ingest(body)`), so that it can move to Rust behind the same interface. The HTTP
layer (`logdist.analyzer.app`) only moves bytes and answers.

Per-batch work is kept to C-level operations: one `orjson.loads`, one list of ids, a few set
operations for deduplication, and `Counter.update` over `map(...)` for levels and sources.
A Python-level loop runs only for a batch that actually contains duplicates or id-less
messages.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from operator import methodcaller
from typing import Any

import orjson

ERROR_LEVELS = frozenset({"error", "fatal", "critical", "crit", "emerg", "emergency", "alert", "panic"})

_get_id = methodcaller("get", "id")
_get_level = methodcaller("get", "level")
_get_source = methodcaller("get", "source")


class BadBody(ValueError):
    """A body the analyzer cannot read; answered 400 with `{"error": code, "detail": ...}`."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class DedupWindow:
    """Remembers the last ~`capacity` message ids in two generations of sets.

    New ids go into `current`; when it holds capacity/2 ids it becomes `previous` and the
    oldest generation is dropped whole. So between capacity/2 and capacity ids are remembered,
    memory is bounded, and every operation is O(1) per id with no per-id eviction work.
    """

    __slots__ = ("_half", "current", "previous")

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("dedup window must hold at least 2 ids")
        self._half = capacity // 2
        self.current: set[Any] = set()
        self.previous: set[Any] = set()

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    def __contains__(self, item: object) -> bool:
        return item in self.current or item in self.previous

    def fresh(self, ids: list[Any]) -> set[Any]:
        """The ids of `ids` not seen before (a set, so in-batch repeats collapse)."""
        new = set(ids)
        new -= self.current
        if self.previous:
            new -= self.previous
        return new

    def add_all(self, ids: set[Any]) -> None:
        cur = self.current
        if len(cur) + len(ids) <= self._half:
            cur |= ids
            return
        for i in ids:  # rare: crossing a generation boundary
            cur.add(i)
            if len(cur) >= self._half:
                self.previous = cur
                cur = self.current = set()

    def add(self, item: Any) -> None:
        cur = self.current
        cur.add(item)
        if len(cur) >= self._half:
            self.previous = cur
            self.current = set()


def parse_messages(body: bytes) -> list[Any]:
    """The messages of a body: a JSON array, one message object, a packet (seed 000 "messages"
    or seed 003 "log_messages"), or NDJSON of any of these."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"\n" not in body.strip():
            raise BadBody("bad_json", f"body is not JSON: {exc}") from None
        out: list[Any] = []
        for n, line in enumerate(body.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.extend(_messages_of(orjson.loads(line)))
            except orjson.JSONDecodeError as exc2:
                raise BadBody("bad_json", f"line {n} is not JSON: {exc2}") from None
        return out
    return _messages_of(doc)


def _messages_of(doc: Any) -> list[Any]:
    if type(doc) is list:
        return doc
    if type(doc) is dict:
        msgs = doc.get("log_messages")
        if msgs is None:
            msgs = doc.get("messages")
        if msgs is None:
            return [doc]  # one message (seed 000's distributor posts them one by one)
        if type(msgs) is not list:
            raise BadBody("bad_schema", "packet field 'messages'/'log_messages' must be an array")
        return msgs
    raise BadBody("bad_schema", f"body must be a JSON array or object, not {type(doc).__name__}")


class _Bucket:
    __slots__ = ("levels", "messages", "second", "sources")

    def __init__(self, second: int) -> None:
        self.second = second
        self.messages = 0
        self.levels: Counter[Any] = Counter()
        self.sources: Counter[Any] = Counter()


class Analysis:
    """Counts unique messages by level and source, overall and over a sliding window."""

    def __init__(self, dedup_window: int = 1_000_000, stats_window_s: int = 60, record_ids: bool = False) -> None:
        self.dedup = DedupWindow(dedup_window)
        self.stats_window_s = max(1, int(stats_window_s))
        self.received = 0  # every message seen, duplicates included
        self.processed = 0  # unique messages
        self.duplicates = 0
        self.batches = 0
        self.levels: Counter[Any] = Counter()
        self.sources: Counter[Any] = Counter()
        self._buckets: deque[_Bucket] = deque()
        self.recorded: list[Any] | None = [] if record_ids else None
        self.started = time.time()
        self.last_message_at: float | None = None

    def ingest(self, body: bytes) -> tuple[int, int]:
        """Analyse one request body. Returns (unique accepted, duplicates). Raises BadBody."""
        return self.ingest_messages(parse_messages(body))

    def ingest_messages(self, msgs: list[Any]) -> tuple[int, int]:
        n = len(msgs)
        if n == 0:
            return 0, 0
        try:
            ids = list(map(_get_id, msgs))
            fresh = self.dedup.fresh(ids)
        except AttributeError:
            bad = next(i for i, m in enumerate(msgs) if type(m) is not dict)
            raise BadBody("bad_schema", f"message {bad} is not a JSON object") from None
        except TypeError:
            bad = next(i for i, m in enumerate(ids) if not isinstance(m, str | int | float | type(None)))
            raise BadBody("bad_schema", f"message {bad}: 'id' must be a string or number") from None
        if None in fresh:  # id-less messages cannot be deduplicated; count each of them
            fresh.discard(None)
            if len(fresh) + ids.count(None) != n:
                return self._ingest_slow(msgs, ids, fresh)
        elif not fresh:  # a whole batch redelivered (its ack was lost): nothing new
            self.received += n
            self.duplicates += n
            return 0, n
        elif len(fresh) != n:
            return self._ingest_slow(msgs, ids, fresh)
        # fast path: every message is new
        tally = _tally(msgs)
        self.dedup.add_all(fresh)
        if self.recorded is not None:
            self.recorded.extend(fresh)
        self._apply(n, tally)
        return n, 0

    def _ingest_slow(self, msgs: list[Any], ids: list[Any], fresh: set[Any]) -> tuple[int, int]:
        keep = []
        keep_ids = []
        for m, i in zip(msgs, ids, strict=True):
            if i is None:
                keep.append(m)
            elif i in fresh:
                fresh.discard(i)  # a repeat later in the same batch is a duplicate
                keep_ids.append(i)
                keep.append(m)
        tally = _tally(keep) if keep else None
        for i in keep_ids:
            self.dedup.add(i)
        if self.recorded is not None:
            self.recorded.extend(keep_ids)
        dups = len(msgs) - len(keep)
        self.received += dups
        self.duplicates += dups
        if tally is not None:
            self._apply(len(keep), tally)
        return len(keep), dups

    def _apply(self, n: int, tally: tuple[Counter[Any], Counter[Any]]) -> None:
        levels, sources = tally
        self.received += n
        self.processed += n
        self.batches += 1
        self.levels.update(levels)
        self.sources.update(sources)
        now = time.monotonic()
        self.last_message_at = time.time()
        sec = int(now)
        b = self._buckets[-1] if self._buckets else None
        if b is None or b.second != sec:
            b = _Bucket(sec)
            self._buckets.append(b)
            self._expire(sec)
        b.messages += n
        b.levels.update(levels)
        b.sources.update(sources)

    def _expire(self, now_sec: int) -> None:
        horizon = now_sec - self.stats_window_s
        while self._buckets and self._buckets[0].second <= horizon:
            self._buckets.popleft()

    # --- reports -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {
            "processed_count": self.processed,
            "duplicates": self.duplicates,
            "received": self.received,
            "batches": self.batches,
        }

    def stats(self, top: int = 10) -> dict[str, Any]:
        self._expire(int(time.monotonic()))
        w_levels: Counter[Any] = Counter()
        w_sources: Counter[Any] = Counter()
        w_msgs = 0
        for b in self._buckets:
            w_msgs += b.messages
            w_levels.update(b.levels)
            w_sources.update(b.sources)
        w_errors = _errors(w_levels)
        span = self.stats_window_s
        if self._buckets:  # rate over the part of the window that saw traffic (>= 1 s)
            span = max(1, min(span, int(time.monotonic()) - self._buckets[0].second + 1))
        return {
            **self.counts(),
            "by_level": _named(self.levels),
            "by_source": _named(self.sources),
            "error_count": _errors(self.levels),
            "error_rate": _errors(self.levels) / self.processed if self.processed else 0.0,
            "window": {
                "seconds": self.stats_window_s,
                "messages": w_msgs,
                "rate_per_s": w_msgs / span,
                "by_level": _named(w_levels),
                "error_count": w_errors,
                "error_rate": w_errors / w_msgs if w_msgs else 0.0,
                "top_sources": [{"source": _name(s), "count": c} for s, c in w_sources.most_common(top)],
            },
            "last_message_at": self.last_message_at,
        }


def _tally(msgs: list[Any]) -> tuple[Counter[Any], Counter[Any]]:
    try:
        return Counter(map(_get_level, msgs)), Counter(map(_get_source, msgs))
    except TypeError:
        raise BadBody("bad_schema", "'level' and 'source' must be strings") from None


def _name(key: Any) -> str:
    return "(none)" if key is None else str(key)


def _named(counter: Counter[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k, v in counter.most_common():
        name = _name(k)
        out[name] = out.get(name, 0) + v
    return out


def _errors(levels: Counter[Any]) -> int:
    return sum(c for lv, c in levels.items() if isinstance(lv, str) and lv.lower() in ERROR_LEVELS)
