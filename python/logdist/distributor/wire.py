"""What goes on the wire to an analyzer, by its `format` (see config.FORMATS).

- "batch": the batch body as it is, b"[m1,m2,...]", built once per batch (batch.py). No work
  per message: the default, for logdist's own analyzers.
- "message": one message object per POST, for seed 000's analyzers (they decode one message
  per request into a typed struct and answer an array with 400 "Invalid JSON"). The batch is cut
  into its messages here; each keeps its exact JSON text (for the store, dead letters and
  retries) beside the body that is sent.
- "packet": one seed 003 packet object per batch, {"packet_id", "agent_id", "sent_at",
  "log_messages": [...], "metadata": {...}}, for seed 003's analyzers (they decode that object
  at {url}/analyze). The packet id is made once per batch, so a retry re-sends the same packet.

Field mapping for "message" and "packet" (what the seeds' analyzers decode a message into:
id, timestamp (RFC 3339), level, source, message, metadata as string -> string): an integer "id"
is sent as a string; a numeric "timestamp" (Unix time in s, ms, us or ns, told apart by
magnitude) as RFC 3339 UTC, and an ISO 8601 one that is not RFC 3339 ("2026-01-01 12:00:00")
as RFC 3339 (no zone: UTC); "level" upper-cased, with WARNING -> WARN and CRITICAL -> FATAL
(the seeds' set is DEBUG, INFO, WARN, ERROR, FATAL); a "metadata" value that is not a string (nor null)
as its JSON text. Every other field is carried as it is. Only what is sent is mapped: the store,
the dead letters and a replay keep the message as it was accepted.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson

_DECODER = json.JSONDecoder()
_SKIP = frozenset(" \t\r\n,")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z", re.IGNORECASE)
_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}
#: packet ids: unique per process run (a nonce) and per batch (a counter)
_RUN = os.urandom(4).hex()
_PACKETS = itertools.count(1)


def split_messages(data: bytes) -> list[tuple[bytes, Any]]:
    """The messages of a chunk's data (exact JSON texts joined by b","), each as (its exact
    text, the decoded object)."""
    text = data.decode("utf-8")
    out: list[tuple[bytes, Any]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in _SKIP:
            i += 1
            continue
        obj, j = _DECODER.raw_decode(text, i)
        out.append((text[i:j].encode("utf-8"), obj))
        i = j
    return out


def dumps(obj: Any) -> bytes:
    """JSON bytes; integers past 64 bits (which ingest accepts) go through the stdlib."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def rfc3339(ts: float) -> str:
    """Unix time (seconds) as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        for scale in (1, 1000, 10**6, 10**9):  # s, ms, us, ns: the first that lands before 5138 AD
            if abs(v / scale) < 1e11:
                try:
                    if isinstance(v, int):  # exact: whole seconds, then the fraction
                        sec, frac = divmod(v, scale)
                        return rfc3339(sec + frac / scale)
                    return rfc3339(v / scale)
                except (OverflowError, OSError, ValueError):
                    return v
        return v
    if isinstance(v, str) and not _RFC3339.match(v):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return v  # not a time we can read: sent as it is
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.isoformat().replace("+00:00", "Z")
    return v


def seed_message(m: Any) -> Any:
    """A message with its fields in the types the seeds' analyzers decode (see the module doc);
    the same object when nothing needs to change."""
    if not isinstance(m, dict):
        return m
    out: dict[str, Any] | None = None

    def put(key: str, value: Any) -> None:
        nonlocal out
        if out is None:
            out = dict(m)
        out[key] = value

    mid = m.get("id")
    if isinstance(mid, int) and not isinstance(mid, bool):
        put("id", str(mid))
    if "timestamp" in m:
        ts = _timestamp(m["timestamp"])
        if ts is not m["timestamp"]:
            put("timestamp", ts)
    level = m.get("level")
    if isinstance(level, str):
        up = level.upper()
        up = _LEVELS.get(up, up)
        if up != level:
            put("level", up)
    meta = m.get("metadata")
    if isinstance(meta, dict) and not all(v is None or isinstance(v, str) for v in meta.values()):
        put("metadata", {k: v if v is None or isinstance(v, str) else dumps(v).decode() for k, v in meta.items()})
    return m if out is None else out


def message_bodies(data: bytes) -> list[tuple[bytes, bytes]]:
    """The messages of a chunk's data as (exact text, body to POST with format "message")."""
    return [(text, dumps(seed_message(obj))) for text, obj in split_messages(data)]


def packet_body(chunks_data: list[bytes], analyzer: str) -> bytes:
    """One seed 003 packet holding the messages of `chunks_data`."""
    msgs = [seed_message(obj) for data in chunks_data for _, obj in split_messages(data)]
    pid = f"logdist-{_RUN}-{next(_PACKETS)}"
    packet = {
        "packet_id": pid,
        "agent_id": "logdist",
        "sent_at": rfc3339(time.time()),
        "log_messages": msgs,
        "metadata": {"distributor": "logdist", "analyzer": analyzer, "messages": str(len(msgs))},
    }
    return dumps(packet)


_PACKET_HINTS = ("log_messages", "logpacket", "packet")
_MESSAGE_HINTS = ("invalid json", "cannot unmarshal array", "logmessage")


def guess_format(current: str, answer: str) -> str | None:
    """The format an analyzer that refuses `current` with `answer` (its 400 body) most likely
    wants, or None when the answer does not tell."""
    a = answer.lower()
    if current != "packet" and any(h in a for h in _PACKET_HINTS):
        return "packet"
    if current == "batch" and any(h in a for h in _MESSAGE_HINTS):
        return "message"
    return None
