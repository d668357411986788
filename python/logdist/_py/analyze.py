"""The analyzer's batch work (twin of crates/wlb/src/analyze.rs and its `BatchAnalyzer`).

The analyzer's per-batch work: read a request body (orjson), deduplicate its messages by id
against a bounded two-generation window, and tally the unique ones by level and source. The
contract, which the Rust backend implements bit for bit, is in `_wlb.pyi`. The window itself
is `dedup.DedupWindow`; the analyzer daemon reaches this class through `logdist.core`.

Per-batch work is kept to C-level operations (one `orjson.loads`, `map`, `dict.fromkeys`, set
operations, `Counter`) when no id repeats and no generation rolls over; otherwise a plain loop
applies the streaming rule of the contract.
"""

from __future__ import annotations

from collections import Counter
from operator import index, methodcaller
from typing import Any

import orjson

from logdist._py.dedup import DedupWindow
from logdist.errors import PacketError

__all__ = ["BatchAnalyzer", "parse_messages"]

_get_id = methodcaller("get", "id")
_get_level = methodcaller("get", "level")
_get_source = methodcaller("get", "source")
_ID_TYPES = frozenset({str, int, float, type(None)})
_TALLY_TYPES = frozenset({str, type(None)})

Id = str | int | float


def parse_messages(body: bytes) -> list[Any]:
    """The messages of a body: a JSON array, one message object, a packet ("messages" or
    "log_messages", which wins unless null), or, when the body is not one JSON document and
    a newline is inside it, NDJSON lines of any of these."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"\n" not in body.strip():
            raise PacketError("bad_json", f"body is not JSON: {exc}") from None
        out: list[Any] = []
        for n, line in enumerate(body.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.extend(_messages_of(orjson.loads(line)))
            except orjson.JSONDecodeError as exc2:
                raise PacketError("bad_json", f"line {n} is not JSON: {exc2}") from None
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
            return [doc]  # one message: the single-message analyzer format posts them one by one
        if type(msgs) is not list:
            raise PacketError("bad_schema", "packet field 'messages'/'log_messages' must be an array")
        return msgs
    raise PacketError("bad_schema", f"body must be a JSON array or object, not {type(doc).__name__}")


def _check(msgs: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """ids, levels, sources; the message-level checks in the contract's order."""
    try:
        ids = list(map(_get_id, msgs))
    except AttributeError:
        bad = next(i for i, m in enumerate(msgs) if type(m) is not dict)
        raise PacketError("bad_schema", f"message {bad} is not a JSON object") from None
    if not _ID_TYPES.issuperset(map(type, ids)):
        bad = next(i for i, v in enumerate(ids) if type(v) not in _ID_TYPES)
        raise PacketError("bad_schema", f"message {bad}: 'id' must be a string or number")
    levels = list(map(_get_level, msgs))
    sources = list(map(_get_source, msgs))
    if not (_TALLY_TYPES.issuperset(map(type, levels)) and _TALLY_TYPES.issuperset(map(type, sources))):
        for i, (lv, src) in enumerate(zip(levels, sources, strict=True)):
            for name, v in (("level", lv), ("source", src)):
                if type(v) not in _TALLY_TYPES:
                    raise PacketError("bad_schema", f"message {i}: '{name}' must be a string or null")
    return ids, levels, sources


Tally = list[tuple[str | None, int]]


class BatchAnalyzer:
    """Deduplicates messages by id over a bounded window and tallies the unique ones."""

    __slots__ = ("_capacity", "_record_ids", "_window")

    def __init__(self, dedup_capacity: int = 1_000_000, record_ids: bool = False) -> None:
        capacity = index(dedup_capacity)
        if type(record_ids) is not bool:
            raise TypeError(f"record_ids must be a bool, not {type(record_ids).__name__}")
        self._window = DedupWindow(capacity)
        self._capacity = capacity
        self._record_ids = record_ids

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def record_ids(self) -> bool:
        return self._record_ids

    def __len__(self) -> int:
        return len(self._window)

    def __contains__(self, id: object) -> bool:
        if type(id) not in (str, int, float):  # bool: never a JSON id (see the contract)
            return False
        return id in self._window

    def ingest(self, body: bytes) -> tuple[int, int, Tally, Tally, list[Id] | None]:
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        msgs = parse_messages(body)
        n = len(msgs)
        if n == 0:
            return 0, 0, [], [], [] if self._record_ids else None
        ids, levels, sources = _check(msgs)
        w = self._window
        firsts = dict.fromkeys(ids)  # first occurrences, in order
        idless = ids.count(None) if None in firsts else 0
        if idless:
            del firsts[None]
        if (
            len(firsts) + idless == n  # no id repeats inside the batch
            and len(w.current) + n < w.half  # no rollover inside the batch
            and firsts.keys().isdisjoint(w.current)
            and firsts.keys().isdisjoint(w.previous)
        ):
            w.current.update(firsts)
            fresh = list(firsts) if self._record_ids else None
            return n, 0, list(Counter(levels).items()), list(Counter(sources).items()), fresh
        return self._ingest_stream(ids, levels, sources)

    def _ingest_stream(
        self, ids: list[Any], levels: list[Any], sources: list[Any]
    ) -> tuple[int, int, Tally, Tally, list[Id] | None]:
        """The contract's rule, one message at a time."""
        w = self._window
        keep_levels: list[Any] = []
        keep_sources: list[Any] = []
        fresh: list[Id] = []
        for i, lv, src in zip(ids, levels, sources, strict=True):
            if i is not None:
                if i in w.current or i in w.previous:
                    continue
                w.add(i)
                fresh.append(i)
            keep_levels.append(lv)
            keep_sources.append(src)
        unique = len(keep_levels)
        return (
            unique,
            len(ids) - unique,
            list(Counter(keep_levels).items()),
            list(Counter(keep_sources).items()),
            fresh if self._record_ids else None,
        )

    def __repr__(self) -> str:
        return (
            f"BatchAnalyzer(dedup_capacity={self.capacity}, record_ids={self._record_ids}, "
            f"remembered={len(self._window)})"
        )
