"""Type stub and behavioural contract of the logdist core.

Both backends implement exactly this: the Rust extension `logdist._wlb` (crates/wlb-py over
crates/wlb) and the pure-Python twin `logdist._py`. Algorithms are specified precisely
enough that both return bit-identical results for identical inputs and seeds; the shared
pytest suite (tests/core/) checks that, and the Protocols of `logdist._contract` check both
APIs statically (mypy). Exceptions come from `logdist.errors`.

Random numbers
--------------
Everything random draws from SplitMix64 (below). A draw of a uniform float in [0, 1) is
`(next_u64() >> 11) * 2.0**-53`. Float arithmetic is IEEE-754 binary64 in the order written.
"""

import os
from collections.abc import Collection, Iterable, Sequence
from types import TracebackType
from typing import Self, final

__all__ = [
    "AliasTable",
    "BatchAnalyzer",
    "RetryScheduler",
    "RingBuffer",
    "RoutedPacket",
    "Router",
    "SmoothWeighted",
    "SplitMix64",
    "Wal",
    "__version__",
    "key_hash",
    "otlp_logs_to_messages",
    "route_packet",
]

__version__: str

@final
class SplitMix64:
    """SplitMix64 PRNG (Steele, Lea, Flood 2014). All arithmetic is mod 2**64.

    next_u64():  state += 0x9E3779B97F4A7C15; z = state
                 z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
                 z = (z ^ (z >> 27)) * 0x94D049BB133111EB
                 return z ^ (z >> 31)
    next_f64():  (next_u64() >> 11) * 2.0**-53
    """

    def __new__(cls, seed: int) -> Self:
        """seed is taken mod 2**64 (negative seeds wrap); it is the initial state."""
    def next_u64(self) -> int: ...
    def next_f64(self) -> float: ...

@final
class AliasTable:
    """Vose's alias method: O(n) build, O(1) sample.

    Validation (WeightError, a ValueError): empty list; any weight NaN, infinite or < 0;
    all weights zero; a sum that is not finite.

    Construction, exactly (n = len(weights), total = left-to-right float sum):
      prob = [0.0]*n; alias = [0]*n
      largest = index of the largest weight (lowest index on ties)
      scaled[i] = weights[i] * n / total            # evaluated as (weights[i] * n) / total;
                                                    # 0.0 for a zero weight
      small = [i for i in range(n) if scaled[i] < 1.0]    # ascending; zero weights included
      large = [i for i in range(n) if scaled[i] >= 1.0]   # ascending
      while small and large:                        # both used as stacks: pop() from the end
          s = small.pop(); g = large.pop()
          prob[s] = scaled[s]; alias[s] = g
          scaled[g] = (scaled[g] + scaled[s]) - 1.0
          (small if scaled[g] < 1.0 else large).append(g)
      for g in large: prob[g] = 1.0; alias[g] = g   # leftovers are rounding residue
      for s in small:
          if weights[s] > 0: prob[s] = 1.0; alias[s] = s
          else:              prob[s] = 0.0; alias[s] = largest
    A zero-weight column has prob 0.0, so a zero weight is never picked; its column's mass goes
    to a positive weight and is taken off that weight's scaled mass (standard Vose), so the
    shares stay exact: [0, 1, 1] picks 1 and 2 with 1/2 each.

    sample(u1, u2): col = min(int(u1 * n), n - 1); return col if u2 < prob[col] else alias[col]
    u1 and u2 must be in [0, 1) (ValueError otherwise).
    """

    def __new__(cls, weights: Sequence[float]) -> Self: ...
    def __len__(self) -> int: ...
    @property
    def prob(self) -> list[float]: ...
    @property
    def alias(self) -> list[int]: ...
    def sample(self, u1: float, u2: float) -> int: ...
    def sample_many(self, count: int, seed: int) -> list[int]:
        """`count` picks; rng = SplitMix64(seed); each pick draws u1 = rng.next_f64(), then
        u2 = rng.next_f64(), then sample(u1, u2). Deterministic for a seed."""
    def histogram(self, count: int, seed: int) -> list[int]:
        """The same draws as sample_many(count, seed), returned as a count per index (no list of
        picks is built; the Rust backend releases the GIL)."""

@final
class SmoothWeighted:
    """Smooth weighted round robin, the nginx algorithm. Deterministic.

    weights: non-negative ints, not all zero (WeightError otherwise). current = [0]*n.
    next(): total = sum(weights); best = -1
            for i in range(n): current[i] += weights[i]
                               if weights[i] > 0 and (best < 0 or current[i] > current[best]): best = i
            current[best] -= total; return best
    Over any window of W = sum(weights) consecutive picks, index i appears exactly weights[i] times.
    """

    def __new__(cls, weights: Sequence[int]) -> Self: ...
    def __len__(self) -> int: ...
    def next(self) -> int: ...
    def next_many(self, count: int) -> list[int]: ...

@final
class Router:
    """Weighted target selection among eligible targets.

    Targets are named, kept in insertion order, each with a float weight (finite, >= 0) and an
    `eligible` flag (healthy and enabled; True when added). A target is a *candidate* for a pick
    when eligible, weight > 0, and not in `exclude`. Weights are renormalised over candidates.
    Changes take effect on the next pick.

    strategy "alias" (default): picks use an AliasTable over the candidates (in insertion
      order) and two draws u1, u2 from the router's own SplitMix64(seed), as AliasTable.sample.
      The table over the unexcluded candidates is cached and rebuilt after any change.
    strategy "swrr": integer weight of a target = max(1, floor(weight * 1_000_000 + 0.5)) if
      weight > 0 else 0, then all divided by their gcd; each target keeps its `current` value.
      A pick runs the SmoothWeighted step over the candidates only (total = sum over them).
      Any set_target / remove_target / set_eligible resets every `current` to 0, so windows
      are exact again from the next pick. Exclusion does not reset.
    No candidate: NoTargetError (a LookupError), and no draw is consumed.
    """

    def __new__(cls, strategy: str = "alias", seed: int = 0) -> Self:
        """ValueError for an unknown strategy."""
    @property
    def strategy(self) -> str: ...
    def set_target(self, name: str, weight: float) -> None:
        """Add a target (eligible) or change the weight of an existing one (keeps its flag and
        position). WeightError for a NaN, infinite or negative weight."""
    def remove_target(self, name: str) -> None:
        """KeyError if absent."""
    def set_eligible(self, name: str, eligible: bool) -> None:
        """KeyError if absent."""
    def __len__(self) -> int: ...
    def __contains__(self, name: object, /) -> bool: ...
    def snapshot(self) -> list[tuple[str, float, bool]]:
        """(name, weight, eligible) for every target, in insertion order."""
    def shares(self) -> dict[str, float]:
        """Expected share of every target: weight / sum over eligible positive weights for
        eligible targets, 0.0 for the others; all 0.0 when nothing is eligible."""
    def pick(self, exclude: Collection[str] | None = None) -> str: ...
    def pick_key(self, key: bytes, exclude: Collection[str] | None = None) -> str:
        """The keyed pick: the candidate (eligible, positive weight, not excluded) with the
        highest rendezvous score -weight / log(u), u = ((mix64(key_hash(key) ^ key_hash(name))
        >> 11) + 0.5) * 2**-53, the first of equal ones. No draw is consumed, and nothing is
        cached: the same key gives the same target while the candidates and weights stay the
        same; a target that leaves (or is excluded) takes only its own keys with it, each to
        the next target in that key's order. NoTargetError when no candidate is left."""
    def pick_many(self, count: int) -> list[str]:
        """`count` picks with no exclusion (same draws as `count` calls of pick())."""

@final
class RingBuffer:
    """Bounded multi-producer multi-consumer FIFO of bytes objects; lock-free in Rust
    (a Vyukov/crossbeam ArrayQueue). It stores the bytes object itself (no copy).

    capacity must be >= 1 (ValueError for 0 or negative).
    """

    def __new__(cls, capacity: int) -> Self: ...
    @property
    def capacity(self) -> int: ...
    def __len__(self) -> int: ...
    def is_empty(self) -> bool: ...
    def is_full(self) -> bool: ...
    def push(self, item: bytes) -> bytes | None:
        """Append; None on success, or `item` itself (the same object) when full."""
    def pop(self) -> bytes | None:
        """Oldest item, or None when empty."""
    def pop_many(self, max_items: int, max_bytes: int) -> list[bytes]:
        """Pop oldest items while count < max_items and the byte total stays <= max_bytes.
        The first item is always taken, even when it alone exceeds max_bytes, so a consumer
        always makes progress. Empty list when empty. max_items < 1: ValueError."""

@final
class RetryScheduler:
    """Timed retries with exponential backoff and full jitter.

    base > 0, cap >= base, 1.0 <= multiplier <= 16.0, all finite (ValueError otherwise).
    ceiling(attempt) = cap if attempt >= 64 else min(cap, base * multiplier ** attempt)
    backoff(attempt, u) = u * ceiling(attempt)         # attempt >= 0, u in [0, 1)
    schedule(): delay = min(max(retry_after, 0.0), MAX_RETRY_AFTER) if retry_after is given,
                else backoff(attempt, rng.next_f64()) with the scheduler's SplitMix64(seed);
                deadline = now + delay. Items are ints (caller-side tokens), due in
                (deadline, insertion sequence) order.
    """

    MAX_RETRY_AFTER: float  # 3600.0

    def __new__(cls, base: float = 0.05, cap: float = 30.0, multiplier: float = 2.0, seed: int = 0) -> Self: ...
    def backoff(self, attempt: int, u: float) -> float: ...
    def schedule(self, token: int, now: float, attempt: int, retry_after: float | None = None) -> float:
        """Returns the deadline."""
    def pop_due(self, now: float, max_items: int = 1 << 30) -> list[int]:
        """Tokens whose deadline <= now, earliest first, at most max_items."""
    def next_deadline(self) -> float | None: ...
    def __len__(self) -> int: ...

@final
class RoutedPacket:
    """The result of route_packet.

    emitter_id: decoded value of "emitter_id" (or its synonym "agent_id"), else None.
    packet_id:  decoded "packet_id" (a JSON string, or an integer's decimal text), else None.
    count:      number of messages.
    batches:    target name -> the raw bytes of the messages routed to it, each message's exact
                original JSON text (with an id inserted when it had none, see route_packet),
                in input order, joined by b",". b"[" + batch + b"]" is a JSON array.
    counts:     target name -> number of messages in batches[target].
    unkeyed:    messages routed by a route_key that they do not hold (placed at random).
    Only targets that got at least one message appear.
    """

    @property
    def emitter_id(self) -> str | None: ...
    @property
    def packet_id(self) -> str | None: ...
    @property
    def count(self) -> int: ...
    @property
    def batches(self) -> dict[str, bytes]: ...
    @property
    def counts(self) -> dict[str, int]: ...
    @property
    def unkeyed(self) -> int: ...

def key_hash(key: bytes) -> int:
    """The route-key hash: FNV-1a 64 (offset 0xcbf29ce484222325, prime 0x100000001b3) over
    the bytes, then the SplitMix64 output mixer."""

def otlp_logs_to_messages(body: bytes, max_records: int) -> tuple[bytes, int, int, str]:
    """A protobuf OTLP ExportLogsServiceRequest converted to logdist messages: (the JSON array
    of the messages of its valid records, how many, how many records were invalid, the reason
    of the first invalid one or ""). An invalid record (a trace id not 16 bytes, a span id not
    8, a severity number outside 0..24, a value nested deeper than 32 levels) is counted, not
    raised. The Rust backend decodes the wire format itself, with the GIL released; the output
    is byte for byte the twin's (opentelemetry-proto classes, then orjson).

    Raises PacketError("bad_protobuf", ...) for a body that is not a request (the wire format
    as upb reads it: also a string field that is not UTF-8, or messages nested more than 100
    deep), PacketError("too_many_messages", ...) for more than `max_records` log records."""

def route_packet(
    body: bytes,
    router: Router | None,
    *,
    fallback_prefix: str,
    format: str = "auto",
    max_messages: int = 10_000,
    max_depth: int = 64,
    id_tag: str = "",
    strict: bool = True,
    route_key: str = "random",
    exclude: Collection[str] | None = None,
) -> RoutedPacket:
    """Validate a request body, give every message an id, and route each message.

    The Rust backend builds no Python object per message and releases the GIL while it scans.
    Errors raise PacketError(code, detail) and route nothing (no pick is drawn); the verdict
    (code) is identical across backends. Checks, in order:

    1. bad_utf8: the body is not valid UTF-8.
    2. Shape, by `format`:
       "json":  one JSON value, surrounded by optional whitespace (space, \\t, \\n, \\r).
                An object is a packet; an array is a bare list of messages.
       "ndjson": one message object per line; blank lines (whitespace only) are skipped.
       "auto":  like "json", but if the first value is an object and more non-whitespace
                follows it, the body is read as NDJSON.
       Syntax is RFC 8259; numbers are kept as written. Violations: bad_json, with the byte
       offset in the detail. Nesting deeper than max_depth (the top-level value is depth 1):
       too_deep. With strict (the default), values the analyzer (BatchAnalyzer, as orjson)
       cannot read are refused too, anywhere in the body: a number that is infinite as a
       double (1e999, -1e999, 400 digits) and a surrogate escape that is not a high one
       followed at once by a low one ("\ud800", "\udfff", "\udc00\ud800"); an escaped
       NUL ("\u0000") is fine. Violation: bad_value, detail "<where>: <what> (byte <offset>)",
       where is "messages[i]" / "log_messages[i]" (NDJSON: "line n") for a value inside a
       message, "packet" elsewhere. strict=False skips these checks (for re-routing bytes
       already accepted, which are never refused). The first of bad_json, too_deep and
       bad_value in the body wins.
    3. Packet object: "messages" or "log_messages" must be present (bad_schema if neither,
       or both), and be an array (bad_schema). "emitter_id" / "agent_id" if present: string;
       "packet_id" if present: string or integer (bad_schema otherwise). Other packet keys are
       ignored.
    4. Each message must be an object (bad_schema, detail "messages[i]: expected object").
       Fields: "message" required, a string; "level", "source" if present strings;
       "timestamp" if present string or number; "id" if present string or integer (with
       strict, an integer in [-2^63, 2^64), which the analyzer keeps as an integer: beyond it
       it reads as a double, and two ids could read as the same one); "metadata" if present
       an object. Detail names the path, e.g. "messages[3].level:
       expected string" (NDJSON: "line 4: ..."). Unknown fields are carried unchanged.
    5. Zero messages: empty_packet. More than max_messages: too_many_messages.

    Ids: a message without "id" gets '"id":"<prefix><i>",' inserted right after its opening
    brace ('"id":"<prefix><i>"' when the object is empty), i = its 0-based index. prefix is
    '<E>/<P>/' when the packet has a packet_id, where E is the raw JSON text between the quotes
    of emitter_id/agent_id (empty if absent) and P the raw text of packet_id (between the quotes
    for a string), so a re-sent packet yields the same ids; otherwise prefix = fallback_prefix,
    which the caller makes unique per request. fallback_prefix may only hold ASCII letters,
    digits and "._:/-" (ValueError otherwise), so it never needs escaping. id_tag (same
    characters, ValueError otherwise; checked after fallback_prefix) follows '<E>/<P>/' when
    the packet has a packet_id: '<E>/<P>/<id_tag><i>', so a packet id reused with other
    content can be given ids of its own.

    Routing: router None puts every message under the key "". Otherwise one router.pick() per
    message, in order (so picks equal router.pick_many(count)); NoTargetError if nothing is
    eligible, raised before any message is routed.

    route_key (ValueError otherwise, checked after id_tag): "random" as above; "message_id",
    the message's "id" member, or for a message without one the id it is given here; or a
    dotted path of member names ("source", "metadata.trace_id"; no empty segment) into the
    message object. A key is a string's decoded text (UTF-8, a lone surrogate as
    surrogatepass writes it) or a number's text as written; the last member of a name wins.
    A message with a key goes to router.pick_key(key, exclude): no draw. One whose member is
    missing, or holds null, a boolean, an object or an array, gets router.pick(exclude) in
    message order and is counted in unkeyed. exclude (names that are no target are ignored)
    applies to every pick; with "random" and no exclude the picks are pick_many's.
    """

# --- BatchAnalyzer: the analyzer's dedup and tallies -------------------------------------------

@final
class BatchAnalyzer:
    """Deduplicates messages by id over a bounded window and tallies the unique ones by level
    and source. One instance per analyzer process; the state is the dedup window.

    Backends: this class (crates/wlb/src/analyze.rs, which reads the body with the GIL released
    and builds no Python object per message) and logdist._py.analyze.BatchAnalyzer (orjson).
    Thread-safe (the Rust backend locks around each call).

    dedup_capacity >= 2 (ValueError otherwise). The window has two generations: a fresh id goes
    into `current`; right after an insert that makes `current` hold dedup_capacity // 2 ids,
    `current` becomes `previous` and the old `previous` is forgotten whole. So it remembers
    every id until the first rollover, then between capacity // 2 and capacity of them.
    """

    def __new__(cls, dedup_capacity: int = 1_000_000, record_ids: bool = False) -> Self: ...
    @property
    def capacity(self) -> int:
        """dedup_capacity as given."""
    @property
    def record_ids(self) -> bool: ...
    def __len__(self) -> int:
        """Ids remembered now."""
    def __contains__(self, id: object, /) -> bool:
        """Whether an id (str, int or float, compared as below) is remembered; False for any
        other object (bool included)."""
    def ingest(
        self, body: bytes
    ) -> tuple[int, int, list[tuple[str | None, int]], list[tuple[str | None, int]], list[str | int | float] | None]:
        """Analyse one request body; returns (unique, duplicates, levels, sources, fresh_ids).

        Body (TypeError if not bytes): read as orjson.loads reads it (RFC 8259; UTF-8 without
        BOM; no unpaired surrogate escape; no number that overflows a double; nesting at most
        1024 deep). A JSON array: its elements are the messages. An object with a non-null
        "log_messages", else a non-null "messages": that member must be an array (bad_schema
        "packet field 'messages'/'log_messages' must be an array") and holds the messages.
        Any other object: one message. Any other value: bad_schema "body must be a JSON array
        or object, not <Python type name>". Repeated keys: the last one counts (as in a dict).
        If the body is not one JSON document: when b"\n" is inside body.strip(), it is read
        as lines (bytes.splitlines(); lines that are blank after strip() are skipped), each
        line one document as above, the messages concatenated in order; else bad_json. The
        first failing line (bad_json "line <n> is not JSON: ...", or a bad_schema above) wins.

        Messages, checked in this order over the whole list (message i = index in it):
          every message is an object:        bad_schema "message <i> is not a JSON object"
          every "id" is absent, null, a string or a number (true/false are rejected, although
          Python would hash True as 1):      bad_schema "message <i>: 'id' must be a string or number"
          every "level" and "source" is absent, null or a string (level checked before source):
                                             bad_schema "message <i>: 'level' must be a string or null"
        Errors raise PacketError(code, detail) and change nothing. The bad_json detail text is
        informative only (it differs between backends); codes and bad_schema details are equal.

        Ids compare as Python dict keys: a string by its decoded text ("\u0041" == "A"); a
        number by its value as orjson reads it (an integer literal in [-2**63, 2**64) is an
        exact int, any other number the nearest double), so 1, 1.0 and 1e0 are one id and "1"
        another. Messages are taken in order: a message without an id (absent or null) is
        always unique; a message whose id is remembered is a duplicate; otherwise the id is
        fresh, the message is unique, and the id is remembered at once (with the rollover rule
        above), so a repeat later in the same batch is a duplicate.

        levels / sources: (value, count) over the unique messages, None for absent or null, in
        order of first occurrence. fresh_ids (None unless record_ids): the fresh ids in message
        order, each as its message gave it (str, int, or float for a non-int literal).
        An empty list of messages returns (0, 0, [], [], [] or None).
        """

# --- Wal: the write-ahead log ------------------------------------------------------------------

@final
class Wal:
    """A write-ahead log in one directory: append-only segment files of CRC32C-framed records,
    group commit, lazily persisted delivery progress, recovery that stops at a torn tail.

    Backends: logdist._wlb.Wal (crates/wlb/src/wal.rs) and logdist._py.wal.Wal. They write
    byte-identical files for identical calls and each opens the other's directory.

    Thread-safe. append/append_many/checkpoint/replay/close block on disk I/O (the Rust backend
    releases the GIL): call them off the event loop (asyncio.to_thread). Concurrent appends from
    several threads share fsyncs (group commit); an append returns only after its records are
    fsynced. Errors: WalFullError (the byte bound; answer 429), WalError (an I/O error, errno and
    path set when the OS gave one, or the log is closed; answer 503), ValueError (bad options, a
    payload over 1 GiB), TypeError (ack of a non-int).

    On-disk format, all integers little-endian:
      segment "<first_lsn, 20 decimal digits>.wal": 16-byte header b"LDWALSG1" + first_lsn: u64,
        then records. Each open starts a new segment for its appends (created lazily by the
        first append); a batch goes whole into one segment; a new segment starts when the next
        batch would take the active one (if it holds any record) past segment_bytes.
      spare "spare-0", "spare-1": a fully delivered segment file kept for reuse instead of
        deleted (at most 2, each at most 2 x segment_bytes; not counted in bytes/segments).
        A new segment renames a spare and overwrites it from the start, with the header
        b"LDWALSR1" + first_lsn (recycled): after its records come the old file's stale frames,
        whose lsns are below first_lsn, so its scan stops there with no note, no count and no
        cut. (Deleting a file frees its blocks; on a filesystem mounted with `discard` that
        journal commit stalls every concurrent fsync for 10-25 ms.) A segment whose header
        still names an older first_lsn and that holds no record of its own (a spare renamed just
        before a crash; only the newest segment can be one) is deleted without a note. Spares
        are the first thing reclaim() gives back when the device is full.
      record: len: u32, crc: u32, lsn: u64, payload (len bytes), where
        crc = crc32c(len_le ++ lsn_le ++ payload) (Castagnoli, as in iSCSI/ext4).
        In a segment the lsns are first_lsn, first_lsn + 1, ...; lsns never repeat across
        restarts (a torn record's lsn may be reused: it was never acknowledged as stored).
      "progress.ckpt": b"LDWALCK1", crc: u32 (crc32c of all bytes after it), next_lsn: u64,
        n: u64, then n half-open ranges (start: u64, end: u64) of delivered lsns, ascending
        and disjoint. Replaced atomically (write progress.ckpt.tmp, fsync, rename, fsync dir).
        It lists only acknowledged lsns, it is written before any segment is deleted, and new
        lsns start at or above its next_lsn. A corrupt one is ignored (everything still on
        disk is redelivered) and noted.

    Recovery on open: every segment is scanned in lsn order. A record is intact when it is
    whole (16 header bytes, len <= 1 GiB, the payload within the file), its crc matches, and its
    lsn is the one expected (below the next segment's first lsn). A damaged record does not end
    the scan: it resynchronises on the next intact record, i.e. the smallest offset q past the
    damage holding an intact frame whose lsn is at least the one expected and at most
    (q - damage start) // 16 above it (each lost record took at least 16 bytes; a recycled
    file's stale frames, whose lsns are lower, are never taken). Only the records of the
    damaged stretch are skipped. When no intact record follows, the rest of the segment is its
    tail, cut off (truncate + fsync): it is LOST when it held lsns that are missing and not
    delivered, below the next segment's first lsn (or, in the last segment, below the
    checkpoint's next_lsn, which counts only whole writes: a kill -9 never tears those; after
    a power loss their unsynced records may be reported lost, erring on the loud side);
    otherwise it is a torn write (never acknowledged; so damage to the very last records of the
    newest segment written since the last checkpoint reads as a torn write) or a recycled
    segment's stale frames (no note). A segment whose header is damaged is still scanned from
    the lsn its name gives; one whose first lsn is below the previous segment's end, or left
    with no records, is deleted. A segment that ends cleanly short of lsns it should hold (cut
    at a record boundary, or emptied) loses them the same way: noted as a "torn record" of 0
    bytes. A new record never takes an lsn that recovery reported lost.
    Each problem adds one line to recovery_notes, identical across backends:
      "<segment>: <torn record|bad crc|unexpected lsn|bad segment header> at offset <o>:
       skipped <b> bytes, <r> records"   or   "progress.ckpt: bad checkpoint, ignored"
    (r: the lsns the stretch held; for a torn or junk tail, the frames its length fields
    describe, a partial one counting). recovery_losses lists the stretches that held
    undelivered records, with those lsns; stats()["lost_records"] sums them.
    """

    def __new__(
        cls,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = 67108864,
        max_bytes: int = 1073741824,
        commit_delay_us: int = 0,
    ) -> Self:
        """Open (creating the directory if needed) and recover. segment_bytes >= 1 and
        max_bytes >= 1 (the bound on all segment bytes, headers included), commit_delay_us >= 0:
        how long a group-commit leader waits for more appenders before it fsyncs (0: none; the
        appends that arrive during an fsync still share the next one). Ends with checkpoint()."""
    @property
    def path(self) -> str: ...
    def append(self, payload: bytes) -> int:
        """append_many([payload])[0]."""
    def append_many(self, payloads: Sequence[bytes]) -> list[int]:
        """Store the payloads as consecutive records, in order, and return their lsns
        (consecutive) once all of them are fsynced. [] for []. WalFullError, before anything is
        written, when bytes + the frames (16 + len each) + a new segment header if one is
        needed would exceed max_bytes; nothing stored is ever dropped to make room. On an I/O
        error (write or fsync) WalError: none of the records counts as stored (they are not
        undelivered; if some did reach the disk a restart may give them back)."""
    def ack(self, lsns: Iterable[int]) -> int:
        """Mark records delivered; returns how many were newly marked (unknown, negative and
        already delivered lsns are ignored). In memory only: the next checkpoint() or close()
        persists it, so after a crash the records acked since are given back again."""
    def checkpoint(self) -> int:
        """Persist progress (progress.ckpt), then delete (or keep as a spare) every segment whose
        records are all delivered (the active one too: the next append starts a new segment).
        Returns the number of segments removed. Call it periodically, off the event loop."""
    def reclaim(self) -> int:
        """Give back the disk space the log holds but does not need: delete the spares and cut
        every segment file to its records (a recycled one's stale frames); returns the bytes
        freed (stats: reclaimed_bytes, reclaimed_files). Nothing stored is touched. The log
        does it itself when a write finds the device full (ENOSPC or EDQUOT), then tries that
        write once more; a write that still fails raises WalError with that errno and is not
        stored. Call it when free space runs short."""
    def replay(self) -> list[tuple[int, bytes]]:
        """(lsn, payload) of every record that recovery found undelivered and that is still
        undelivered, in lsn order, read back from disk (records appended since open are not
        included)."""
    @property
    def recovery_notes(self) -> list[str]:
        """What recovery skipped or ignored, one line per problem (see the class doc)."""
    @property
    def recovery_losses(self) -> list[tuple[str, int, int, int, int, list[int], bytes]]:
        """One (segment, offset, length, lsn_start, lsn_end, lost lsns, data) per damaged
        stretch that held undelivered records: the stretch's bytes offset..offset+length of the
        segment file held the lsns lsn_start..lsn_end, of which `lost lsns` (ascending) were not
        delivered; data is its first bytes (at most 64 KiB), for telling what they held."""
    def stats(self) -> dict[str, int | float]:
        """bytes (all segment files), segments, records (on disk, delivered or not),
        undelivered, next_lsn, appends and appended_records (successful append_many calls and
        their records since open), fsyncs (group-commit fsyncs of segment data since open),
        last_fsync_seconds (float), skipped_bytes, skipped_records, lost_records (undelivered
        records recovery found damaged, see recovery_losses), recovered_records
        (undelivered records found on open), max_bytes, reclaimed_bytes and reclaimed_files
        (what reclaim() gave back since open: bytes, spare files deleted)."""
    def close(self) -> None:
        """Refuse new appends, wait until every write is fsynced (or failed), checkpoint, close
        the files. Idempotent; later calls of the other methods raise WalError("... closed").
        Dropping a Wal without close() is like a crash: progress since the last checkpoint is
        not persisted (never lost: those records are given back again)."""
    def __enter__(self) -> Wal: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
