"""The analysis itself: deduplication by message id and the counters, behind a bytes-in API
(`Analysis.ingest(body)`). The HTTP layer (`logdist.analyzer.app`) only moves bytes and answers.

The per-message work (reading the body, the dedup window, tallying levels and sources) is the
core primitive `BatchAnalyzer` (`logdist.core`: Rust with the GIL released, or its pure-Python
twin); it hands back a few objects per batch. What stays here is per batch: the totals, the
Counters and the sliding window of per-second buckets behind /stats.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

import orjson

from logdist import core
from logdist.errors import PacketError

__all__ = ["ERROR_LEVELS", "Analysis"]

ERROR_LEVELS = frozenset({"error", "fatal", "critical", "crit", "emerg", "emergency", "alert", "panic"})


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
        #: the dedup window (len() = ids remembered, `id in dedup`) and the per-batch analysis
        self.dedup = core.BatchAnalyzer(dedup_window, record_ids)
        self.stats_window_s = max(1, int(stats_window_s))
        self.received = 0  # every message seen, duplicates included
        self.processed = 0  # unique messages
        self.duplicates = 0
        self.batches = 0  # batches with at least one unique message
        self.levels: Counter[str | None] = Counter()
        self.sources: Counter[str | None] = Counter()
        self._buckets: deque[_Bucket] = deque()
        self.recorded: list[Any] | None = [] if record_ids else None
        self.started = time.time()
        self.last_message_at: float | None = None

    def ingest(self, body: bytes) -> tuple[int, int]:
        """Analyse one request body. Returns (unique accepted, duplicates). Raises PacketError
        (answered 400), and then nothing was counted or remembered."""
        unique, dups, levels, sources, fresh = self.dedup.ingest(body)
        if fresh is not None and self.recorded is not None:
            self.recorded.extend(fresh)
        self.received += unique + dups
        self.duplicates += dups
        if unique:
            self._apply(unique, levels, sources)
        return unique, dups

    def ingest_messages(self, msgs: list[Any]) -> tuple[int, int]:
        """ingest() of already-decoded messages (in-process callers and tests)."""
        try:
            body = orjson.dumps(msgs)
        except TypeError as exc:  # orjson.JSONEncodeError: not representable as JSON
            raise PacketError("bad_json", f"messages are not JSON: {exc}") from None
        return self.ingest(body)

    def _apply(self, n: int, levels: list[tuple[str | None, int]], sources: list[tuple[str | None, int]]) -> None:
        self.processed += n
        self.batches += 1
        now = time.monotonic()
        self.last_message_at = time.time()
        sec = int(now)
        b = self._buckets[-1] if self._buckets else None
        if b is None or b.second != sec:
            b = _Bucket(sec)
            self._buckets.append(b)
            self._expire(sec)
        b.messages += n
        total, window = self.levels, b.levels
        for key, count in levels:
            total[key] += count
            window[key] += count
        total, window = self.sources, b.sources
        for key, count in sources:
            total[key] += count
            window[key] += count

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
