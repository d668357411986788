"""The pure-Python twin of the Rust write-ahead log (`crates/wlb/src/wal.rs`).

Same API, same behaviour and the SAME files: either backend opens what the other wrote. The
format, all integers little-endian:

* segment ``<first_lsn as 20 decimal digits>.wal``: header ``b"LDWALSG1"`` + ``first_lsn: u64``,
  then records. Every open starts a new segment for its appends (a torn one is never extended).
* record: ``len: u32, crc: u32, lsn: u64, payload``, crc = crc32c(len_le + lsn_le + payload).
* ``progress.ckpt``: ``b"LDWALCK1"``, ``crc: u32`` (crc32c of the rest), ``next_lsn: u64``,
  ``n: u64``, then n half-open ranges ``(start: u64, end: u64)`` of delivered lsns. Replaced
  atomically (tmp file, fsync, rename, fsync dir) and always before any segment is deleted.
* spares ``spare-0``, ``spare-1``: delivered segment files kept for reuse instead of deleted (at
  most MAX_SPARES, each at most 2 x segment_bytes). A new segment renames one and overwrites it
  from the start with the header ``b"LDWALSR1"`` + ``first_lsn`` (recycled): its stale frames
  after the last record have lsns below first_lsn, never taken for records (nor for damage
  when the segment holds every lsn it should).

Space: when a write finds the device full (ENOSPC, EDQUOT), the log first gives back what it
holds but does not need (reclaim: the spares, and the stale frames past the records of recycled
segments), then tries that write once more; a write that still fails is not stored and raises
WalError with that errno (see Wal::reclaim in wal.rs).

Recovery resynchronises over a damaged record on the next intact one and reports exactly the
records lost (recovery_losses); see the class doc in _wlb.pyi and scan_segment in wal.rs.
  (Freeing blocks on a ``discard`` mount stalls concurrent fsyncs for 10-25 ms; see wal.rs.)

Group commit uses a lock and a condition: appenders write under the lock, and the first
waiter that finds no sync running leads one (waits commit_delay_us, fsyncs every dirty file
with the lock released), and wakes everyone it covered. os.write and os.fdatasync release the
GIL, so threads really do overlap.
"""

from __future__ import annotations

import bisect
import contextlib
import errno as _errno
import os
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from logdist.errors import WalError, WalFullError

SEGMENT_MAGIC = b"LDWALSG1"
RECYCLED_MAGIC = b"LDWALSR1"
MAX_SPARES = 2
_SPARE_PREFIX = "spare-"
CHECKPOINT_MAGIC = b"LDWALCK1"
SEGMENT_HEADER_LEN = 16
RECORD_HEADER_LEN = 16
MAX_RECORD_LEN = 1 << 30
LOSS_DATA_MAX = 64 << 10  # bytes of a damaged stretch kept in a loss
_NO_BOUND = (1 << 64) - 1  # the last segment's lsns have no upper bound (u64::MAX in wal.rs)
CHECKPOINT_FILE = "progress.ckpt"
_CHECKPOINT_TMP = "progress.ckpt.tmp"
_SUFFIX = ".wal"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_REC = struct.Struct("<IIQ")
_LEN_LSN = struct.Struct("<IQ")

#: (segment, offset, length, lsn_start, lsn_end, lost lsns, first bytes of the stretch)
Loss = tuple[str, int, int, int, int, list[int], bytes]


def _crc_tables() -> list[list[int]]:
    t0 = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[i] >> 8) ^ t0[prev[i] & 0xFF] for i in range(256)])
    return tables


_T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7 = _crc_tables()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), slicing-by-8; `crc` continues a previous result."""
    crc ^= 0xFFFFFFFF
    mv = memoryview(data).cast("B")
    n8 = len(mv) & ~7
    t0, t1, t2, t3, t4, t5, t6, t7 = _T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7
    for (w,) in _U64.iter_unpack(mv[:n8]):
        x = crc ^ (w & 0xFFFFFFFF)
        h = w >> 32
        crc = (
            t7[x & 0xFF]
            ^ t6[(x >> 8) & 0xFF]
            ^ t5[(x >> 16) & 0xFF]
            ^ t4[x >> 24]
            ^ t3[h & 0xFF]
            ^ t2[(h >> 8) & 0xFF]
            ^ t1[(h >> 16) & 0xFF]
            ^ t0[h >> 24]
        )
    for b in mv[n8:]:
        crc = t0[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def record_crc(lsn: int, payload: bytes | memoryview) -> int:
    return crc32c(payload, crc32c(_LEN_LSN.pack(len(payload), lsn)))


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}{_SUFFIX}"


def _parse_segment_name(name: str) -> int | None:
    if not name.endswith(_SUFFIX):
        return None
    stem = name[: -len(_SUFFIX)]
    if len(stem) == 20 and stem.isascii() and stem.isdigit():
        return int(stem)
    return None


def _io_error(op: str, path: Path | str, exc: OSError) -> WalError:
    if exc.errno is None:
        return WalError(f"write-ahead log {op} failed on {path}: {exc}")
    return WalError(exc.errno, f"write-ahead log {op} failed: {exc.strerror}", str(path))


#: errnos of a full device: a write that failed with one is not stored, and may fit later
NO_SPACE_ERRNOS = frozenset({_errno.ENOSPC, _errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """True for an OSError (WalError) that says the device or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def _count_frames(data: bytes, pos: int) -> int:
    n = 0
    while pos < len(data):
        n += 1
        if len(data) - pos < RECORD_HEADER_LEN:
            break
        pos += RECORD_HEADER_LEN + _U32.unpack_from(data, pos)[0]
    return n


@dataclass
class _Gap:
    """A damaged stretch between two intact records: bytes start..end held the lsns lo..hi."""

    start: int
    end: int
    lo: int
    hi: int
    why: str


@dataclass
class _Scan:
    records: list[tuple[int, int, int]]  # (lsn, payload offset, payload len)
    gaps: list[_Gap]  # damaged stretches the scan resynchronised over
    valid_len: int  # end of the last intact record
    end_lsn: int  # the lsn expected next when the scan stopped
    bad: tuple[str, int] | None  # the tail: (why, frames), when no intact record follows


def _intact_frame(data: bytes, pos: int) -> int | str:
    """The payload length of the frame at pos when whole with a matching crc; else why not."""
    if len(data) - pos < RECORD_HEADER_LEN:
        return "torn record"
    length, crc, lsn = _REC.unpack_from(data, pos)
    if length > MAX_RECORD_LEN or len(data) - pos - RECORD_HEADER_LEN < length:
        return "torn record"
    start = pos + RECORD_HEADER_LEN
    if record_crc(lsn, memoryview(data)[start : start + length]) != crc:
        return "bad crc"
    return int(length)


def _resync(data: bytes, start: int, expect: int, bound: int) -> tuple[int, int] | None:
    """The first intact record after a damaged one at `start` (see resync in wal.rs): the
    smallest q > start with a whole frame, a matching crc and an lsn in expect..bound that the
    skipped bytes can account for (at most (q - start) // 16 lost records). Candidates are
    found with bytes.find on the lsn's upper six bytes (crc32c in pure Python is slow)."""
    n = len(data)
    top = min(bound - 1, expect + (n - RECORD_HEADER_LEN - start) // RECORD_HEADER_LEN)
    best: tuple[int, int] | None = None
    for t in range(expect >> 16, (top >> 16) + 1 if top >= expect else expect >> 16):
        pat = t.to_bytes(6, "little")  # bytes 2..8 of the lsn, at q + 10
        q_min = max(start + 1, start + RECORD_HEADER_LEN * ((t << 16) - expect))
        end = best[0] + 15 if best is not None else n
        k = data.find(pat, q_min + 10, end)
        while k != -1:
            q = k - 10
            lsn = _U64.unpack_from(data, q + 8)[0]
            if (
                expect <= lsn <= expect + (q - start) // RECORD_HEADER_LEN
                and lsn < bound
                and isinstance(_intact_frame(data, q), int)
            ):
                best = (q, lsn)
                break
            k = data.find(pat, k + 1, end)
    return best


def _scan_segment(data: bytes, first_lsn: int, bound: int) -> _Scan:
    """A segment's records from its header on; a damaged record does not end the scan, which
    resumes at the next intact one (a _Gap). lsns are first_lsn, first_lsn + 1, ... < bound."""
    pos = SEGMENT_HEADER_LEN
    expect = first_lsn
    records: list[tuple[int, int, int]] = []
    gaps: list[_Gap] = []
    why: str | None = None
    n = len(data)
    while pos < n:
        got = _intact_frame(data, pos)
        if isinstance(got, int):
            if expect < bound and _U64.unpack_from(data, pos + 8)[0] == expect:
                records.append((expect, pos + RECORD_HEADER_LEN, got))
                expect += 1
                pos += RECORD_HEADER_LEN + got
                continue
            got = "unexpected lsn"
        found = _resync(data, pos, expect, bound) if expect < bound else None
        if found is None:
            why = got
            break
        gaps.append(_Gap(pos, found[0], expect, found[1], got))
        pos, expect = found
    return _Scan(records, gaps, min(pos, n), expect, None if why is None else (why, _count_frames(data, pos)))


def _walk_records(data: bytes, gaps: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The records of a segment that recovery already scanned, skipping its damaged stretches
    without checking crcs again."""
    out: list[tuple[int, int, int]] = []
    pos = SEGMENT_HEADER_LEN
    skip = iter(gaps)
    nxt = next(skip, None)
    while pos + RECORD_HEADER_LEN <= len(data):
        if nxt is not None and nxt[0] == pos:
            pos = nxt[1]
            nxt = next(skip, None)
            continue
        length, _, lsn = _REC.unpack_from(data, pos)
        if len(data) - pos - RECORD_HEADER_LEN < length:
            break
        out.append((lsn, pos + RECORD_HEADER_LEN, length))
        pos += RECORD_HEADER_LEN + length
    return out


_FRESH, _RECYCLED, _DAMAGED, _OVERLAP = "fresh", "recycled", "damaged", "overlap"


def _scan_file(data: bytes, first: int, prev_end: int, bound: int) -> tuple[_Scan, str] | None:
    """What recovery keeps of one segment file and how its header reads (see scan_file in
    wal.rs); None for a spare renamed for reuse whose new header never reached the disk."""
    magic = data[:8] if len(data) >= SEGMENT_HEADER_LEN else None
    ours = magic in (SEGMENT_MAGIC, RECYCLED_MAGIC)
    header_lsn = _U64.unpack_from(data, 8)[0] if len(data) >= SEGMENT_HEADER_LEN else 0
    if ours and header_lsn == first and first >= prev_end:
        return _scan_segment(data, first, bound), _RECYCLED if magic == RECYCLED_MAGIC else _FRESH
    if first < prev_end:
        frames = _count_frames(data, SEGMENT_HEADER_LEN) if len(data) >= SEGMENT_HEADER_LEN else 0
        return _Scan([], [], 0, first, ("bad segment header", frames)), _OVERLAP
    scan = _scan_segment(data, first, bound)
    # only the newest file can be a spare renamed just before a crash: an older one lost records
    if ours and header_lsn < first and not scan.records and bound == _NO_BOUND:
        return None
    return scan, _DAMAGED


def _undelivered_in(lo: int, hi: int, ranges: list[tuple[int, int]]) -> list[int]:
    """The lsns in lo..hi that the delivered ranges do not cover."""
    out: list[int] = []
    i = bisect.bisect_right([b for _, b in ranges], lo)
    x = lo
    while x < hi:
        if i < len(ranges) and ranges[i][0] <= x:
            x = max(x, ranges[i][1])
            i += 1
            continue
        stop = min(ranges[i][0], hi) if i < len(ranges) else hi
        out.extend(range(x, stop))
        x = stop
    return out


def _encode_checkpoint(next_lsn: int, ranges: list[tuple[int, int]]) -> bytes:
    body = bytearray(_U64.pack(next_lsn) + _U64.pack(len(ranges)))
    for a, b in ranges:
        body += _U64.pack(a) + _U64.pack(b)
    return CHECKPOINT_MAGIC + _U32.pack(crc32c(body)) + bytes(body)


def _decode_checkpoint(data: bytes) -> tuple[int, list[tuple[int, int]]] | None:
    if len(data) < 28 or data[:8] != CHECKPOINT_MAGIC or crc32c(data[12:]) != _U32.unpack_from(data, 8)[0]:
        return None
    next_lsn, n = struct.unpack_from("<QQ", data, 12)
    if len(data) - 28 != n * 16:
        return None
    flat = struct.unpack_from(f"<{2 * n}Q", data, 28)
    return next_lsn, [(flat[2 * i], flat[2 * i + 1]) for i in range(n)]


def _in_ranges(starts: list[int], ranges: list[tuple[int, int]], lsn: int) -> bool:
    i = bisect.bisect_right(starts, lsn)
    return i > 0 and lsn < ranges[i - 1][1]


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _io_error("fsync directory", path, exc) from exc


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _io_error("delete segment", path, exc) from exc


def _truncate(path: Path, length: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _io_error("truncate", path, exc) from exc


class _File:
    """An open segment file; the fd is closed when the last reference (the log, or a sync
    leader holding it) goes away, so a leader never fsyncs a reused fd."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: memoryview) -> int:
        return os.write(self.fd, data)

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


@dataclass
class _Segment:
    path: Path
    bytes: int
    records: int = 0
    undelivered: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # damaged stretches: replay skips them


class Wal:
    """A write-ahead log in one directory; thread-safe. See the `Wal` section of _wlb.pyi."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        segment_bytes: int = 64 << 20,
        max_bytes: int = 1 << 30,
        commit_delay_us: int = 0,
    ) -> None:
        if segment_bytes < 1 or max_bytes < 1:
            raise ValueError("segment_bytes and max_bytes must be >= 1")
        if commit_delay_us < 0:
            raise ValueError("commit_delay_us must be >= 0")
        self._dir = Path(path)
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._delay = commit_delay_us / 1e6
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._checkpointing = threading.Lock()
        self._closed = False
        self._spares: list[Path] = []  # spare files ready for reuse
        self._segments: dict[int, _Segment] = {}
        self._firsts: list[int] = []  # sorted keys of _segments
        self._active: tuple[int, _File] | None = None
        self._dirty: list[_File] = []
        self._undelivered: set[int] = set()
        self._total = 0
        self._written_seq = 0
        self._synced_seq = 0
        self._settled_seq = 0
        self._syncing = False
        self._failures: list[tuple[int, int, WalError]] = []
        self._appends = 0
        self._appended_records = 0
        self._fsyncs = 0
        self._last_fsync = 0.0
        self._reclaimed_bytes = 0
        self._reclaimed_files = 0
        self._notes: list[str] = []
        self._skipped_bytes = 0
        self._skipped_records = 0
        self._lost_records = 0
        self._losses: list[Loss] = []
        self._next_lsn = self._recover()
        self._recovered = len(self._undelivered)
        self._replay_end = self._next_lsn
        self.checkpoint()

    # -- recovery ---------------------------------------------------------------------------

    def _recover(self) -> int:
        d = self._dir
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _io_error("create directory", d, exc) from exc
        _remove(d / _CHECKPOINT_TMP)
        ck = self._read_checkpoint()
        next_lsn, ranges = ck if ck is not None else (0, [])
        starts = [a for a, _ in ranges]
        found = self._list_dir()
        if ck is None:
            # spares only ever follow a checkpoint; without one the lsns may restart at 0 and a
            # stale frame could pass for a new record: drop them
            for spare in self._spares:
                _remove(spare)
            self._spares = []
        prev_end = 0
        touched = False
        for idx, (first, path) in enumerate(found):
            nf = found[idx + 1][0] if idx + 1 < len(found) else None
            horizon = next_lsn if nf is None else nf  # the lsns this segment should reach
            prev_end, cut = self._recover_segment(first, path, prev_end, nf, horizon, starts, ranges)
            touched = touched or cut
        if touched:
            _sync_dir(d)
        # a lost record was acknowledged as stored: its lsn is never given to a new one, even
        # when no intact record (nor an intact checkpoint) is left above it
        past_lost = max((loss[5][-1] + 1 for loss in self._losses if loss[5]), default=0)
        return max(next_lsn, prev_end, past_lost)

    def _recover_segment(
        self,
        first: int,
        path: Path,
        prev_end: int,
        next_first: int | None,
        horizon: int,
        starts: list[int],
        ranges: list[tuple[int, int]],
    ) -> tuple[int, bool]:
        """Recover one segment file (see Recovered::segments in wal.rs): keep its intact
        records, note and account what it lost, cut a damaged tail, delete it when nothing is
        left. Returns (one past its last lsn, or prev_end; whether the directory changed)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _io_error("read", path, exc) from exc
        got = _scan_file(data, first, prev_end, _NO_BOUND if next_first is None else next_first)
        if got is None:
            _remove(path)
            return prev_end, True
        scan, header = got
        name = segment_name(first)
        if header == _DAMAGED:
            self._note(name, "bad segment header", 0, min(len(data), SEGMENT_HEADER_LEN), 0)
        for g in scan.gaps:
            self._note(name, g.why, g.start, g.end - g.start, g.hi - g.lo)
            self._lose(name, data, (g.start, g.end), (g.lo, g.hi), ranges)
        cut = self._tail(name, data, scan, header, horizon, ranges)
        if not scan.records:
            _remove(path)
            return prev_end, True
        if cut:
            _truncate(path, scan.valid_len)
        self._adopt_segment(first, path, scan, starts, ranges)
        return scan.end_lsn, cut

    def _read_checkpoint(self) -> tuple[int, list[tuple[int, int]]] | None:
        """(next_lsn, delivered ranges) from progress.ckpt; None when absent or corrupt (noted)."""
        ckpt_path = self._dir / CHECKPOINT_FILE
        try:
            ck = _decode_checkpoint(ckpt_path.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io_error("read", ckpt_path, exc) from exc
        if ck is None:
            self._notes.append(f"{CHECKPOINT_FILE}: bad checkpoint, ignored")
        return ck

    def _list_dir(self) -> list[tuple[int, Path]]:
        """The segment files as (first_lsn, path) in lsn order; the spares go to self._spares."""
        found: list[tuple[int, Path]] = []
        spare_names = {f"{_SPARE_PREFIX}{i}" for i in range(MAX_SPARES)}
        try:
            for entry in os.scandir(self._dir):
                first = _parse_segment_name(entry.name)
                if first is not None:
                    found.append((first, Path(entry.path)))
                elif entry.name in spare_names:
                    self._spares.append(Path(entry.path))
        except OSError as exc:
            raise _io_error("list directory", self._dir, exc) from exc
        found.sort()
        self._spares.sort()
        return found

    def _note(self, name: str, why: str, offset: int, skipped: int, records: int) -> None:
        self._notes.append(f"{name}: {why} at offset {offset}: skipped {skipped} bytes, {records} records")
        self._skipped_bytes += skipped
        self._skipped_records += records

    def _lose(
        self, name: str, data: bytes, span: tuple[int, int], lsns: tuple[int, int], ranges: list[tuple[int, int]]
    ) -> bool:
        """Record the lsns lo..hi of the stretch data[start:end] as lost, except those already
        delivered; False when nothing undelivered was there."""
        (start, end), (lo, hi) = span, lsns
        lost = _undelivered_in(lo, hi, ranges)
        if not lost:
            return False
        self._lost_records += len(lost)
        self._losses.append((name, start, end - start, lo, hi, lost, data[start : min(end, start + LOSS_DATA_MAX)]))
        return True

    def _tail(
        self, name: str, data: bytes, scan: _Scan, header: str, horizon: int, ranges: list[tuple[int, int]]
    ) -> bool:
        """A damaged tail (no intact record follows): lost when lsns this segment should hold
        are missing and undelivered (below the next segment's first or, in the last one, the
        checkpoint's next_lsn); else a torn write (never acknowledged) or a recycled segment's
        stale frames. True when it is to be cut off."""
        if scan.bad is None:
            # the file ends cleanly, but short of lsns it should hold: a cut-off end, lost when
            # they are undelivered (a zero-length stretch; nothing to cut)
            start, lo, hi = scan.valid_len, scan.end_lsn, max(horizon, scan.end_lsn)
            if self._lose(name, data, (start, len(data)), (lo, hi), ranges):
                self._note(name, "torn record", start, 0, hi - lo)
            return False
        why, frames = scan.bad
        start, skipped = scan.valid_len, len(data) - scan.valid_len
        lo, hi = scan.end_lsn, max(horizon, scan.end_lsn)
        if header != _OVERLAP and self._lose(name, data, (start, len(data)), (lo, hi), ranges):
            self._note(name, why, start, skipped, hi - lo)
            return True
        if header == _RECYCLED:
            return False
        self._note(name, why, start, skipped, frames)
        return True

    def _adopt_segment(
        self, first: int, path: Path, scan: _Scan, starts: list[int], ranges: list[tuple[int, int]]
    ) -> None:
        """Count a recovered segment's records, undelivered ones included, into the log."""
        seg = _Segment(path, scan.valid_len, gaps=[(g.start, g.end) for g in scan.gaps])
        for lsn, _, _ in scan.records:
            seg.records += 1
            if not _in_ranges(starts, ranges, lsn):
                self._undelivered.add(lsn)
                seg.undelivered += 1
        self._total += seg.bytes
        self._segments[first] = seg
        self._firsts.append(first)

    # -- appending --------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        return self.append_many([payload])[0]

    def append_many(self, payloads: Sequence[bytes]) -> list[int]:
        if not payloads:
            return []
        need = 0
        for p in payloads:
            if len(p) > MAX_RECORD_LEN:
                raise ValueError(f"record of {len(p)} bytes is over the limit of {MAX_RECORD_LEN}")
            need += RECORD_HEADER_LEN + len(p)
        n = len(payloads)
        with self._lock:
            if self._closed:
                raise WalError("write-ahead log is closed")
            try:
                first = self._place(payloads, need)
            except WalError as exc:
                # The device is full: give back what the log does not need, and try once more.
                if not is_no_space(exc) or not self._reclaim_locked():
                    raise
                first = self._place(payloads, need)
            self._written_seq += 1
            self._wait_synced(self._written_seq, first, n)
            self._appends += 1
            self._appended_records += n
            return list(range(first, first + n))

    def _place(self, payloads: Sequence[bytes], need: int) -> int:
        """Make room for the payloads' frames (`need` bytes) and write them, under the lock;
        returns the lsn of the first. Nothing is stored when it fails."""
        active_first, f = self._room_for(need)
        first = self._next_lsn
        n = len(payloads)
        self._write_frames(active_first, f, first, payloads)
        seg = self._segments[active_first]
        seg.bytes += need
        seg.records += n
        seg.undelivered += n
        self._total += need
        self._next_lsn = first + n
        self._undelivered.update(range(first, first + n))
        if not self._dirty or self._dirty[-1] is not f:
            self._dirty.append(f)
        return first

    def _room_for(self, need: int) -> tuple[int, _File]:
        """The active segment for a batch of `need` bytes, new if it would overflow; under the lock.
        WalFullError, before anything is written, when the log's byte bound would be exceeded."""
        active = self._active
        roll = active is None or (
            self._segments[active[0]].records > 0 and self._segments[active[0]].bytes + need > self._segment_bytes
        )
        extra = SEGMENT_HEADER_LEN if roll else 0
        if self._total + need + extra > self._max_bytes:
            raise WalFullError(
                f"write-ahead log full: {self._total} bytes on disk + {need + extra} needed "
                f"> max_bytes {self._max_bytes}"
            )
        if roll:
            self._active = None
            self._create_segment()
        assert self._active is not None
        return self._active

    def _write_frames(self, active_first: int, f: _File, first: int, payloads: Sequence[bytes]) -> None:
        """Frame the payloads as lsns first, first + 1, ... and write them to f; under the lock."""
        buf = bytearray()
        for i, p in enumerate(payloads):
            lsn = first + i
            buf += _REC.pack(len(p), record_crc(lsn, p), lsn)
            buf += p
        try:
            view = memoryview(buf)
            while view:
                written = f.write(view)
                if not written:
                    raise OSError(_errno.EIO, "short write")
                view = view[written:]
        except OSError as exc:
            self._retire_after_write_error(active_first, f)
            raise _io_error("append", self._dir / segment_name(active_first), exc) from exc

    def _wait_synced(self, my_seq: int, first: int, n: int) -> None:
        """Wait (leading a group commit when none runs) until write `my_seq` is fsynced; under the
        lock. Its failure raises, and its records do not count as stored."""
        while True:
            for lo, hi, err in self._failures:
                if lo < my_seq <= hi:
                    self._forget(range(first, first + n))
                    raise err
            if self._synced_seq >= my_seq:
                return
            if self._syncing:
                self._synced.wait()
            else:
                self._lead_sync()

    def _lead_sync(self) -> None:
        """One group commit; called and returns with the lock held."""
        self._syncing = True
        if self._delay > 0:
            self._lock.release()
            try:
                time.sleep(self._delay)
            finally:
                self._lock.acquire()
        target = self._written_seq
        files, self._dirty = self._dirty, []
        self._lock.release()
        start = time.perf_counter()
        synced = 0
        failure: OSError | None = None
        try:
            for f in files:
                synced += 1
                try:
                    os.fdatasync(f.fd)
                except OSError as exc:
                    failure = exc
                    break
        finally:
            elapsed = time.perf_counter() - start
            self._lock.acquire()
        self._fsyncs += synced
        self._last_fsync = elapsed
        self._syncing = False
        self._settled_seq = max(self._settled_seq, target)
        if failure is None:
            self._synced_seq = max(self._synced_seq, target)
        else:
            # After a failed fsync the page cache cannot be trusted: stop appending to the
            # file and fail every write the sync was meant to cover.
            path = self._dir / segment_name(self._active[0]) if self._active else self._dir
            self._active = None
            self._failures.append((self._synced_seq, target, _io_error("fsync", path, failure)))
            del self._failures[:-64]
        self._synced.notify_all()

    def _create_segment(self) -> None:
        first = self._next_lsn
        path = self._dir / segment_name(first)
        old = self._segments.pop(first, None)
        if old is not None:  # a leftover without records (after a failed write): replace it
            self._total -= old.bytes
            self._firsts.remove(first)
        f: _File | None = None
        while f is None and self._spares:
            spare = self._spares.pop()
            try:  # overwrite a spare from the start: no blocks to allocate, none freed
                os.rename(spare, path)
                f = _File(os.open(path, os.O_WRONLY))
                f.write(memoryview(RECYCLED_MAGIC + _U64.pack(first)))
            except OSError:
                f = None
                for gone in (spare, path):
                    gone.unlink(missing_ok=True)
        if f is None:
            try:
                f = _File(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
                f.write(memoryview(SEGMENT_MAGIC + _U64.pack(first)))
            except OSError as exc:
                # Created but without its header (the device is full): leave nothing behind.
                f = None
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
                raise _io_error("create segment", path, exc) from exc
        try:
            _sync_dir(self._dir)
        except WalError:
            path.unlink(missing_ok=True)
            raise
        self._segments[first] = _Segment(path, SEGMENT_HEADER_LEN)
        bisect.insort(self._firsts, first)
        self._total += SEGMENT_HEADER_LEN
        self._dirty.append(f)
        self._active = (first, f)

    def _retire_after_write_error(self, first: int, f: _File) -> None:
        self._active = None
        seg = self._segments[first]
        try:  # cut a partial frame off, so the segment stays readable to its end
            os.ftruncate(f.fd, seg.bytes)
        except OSError:
            pass
        if seg.records == 0:
            try:
                seg.path.unlink()
            except OSError:
                return
            del self._segments[first]
            self._firsts.remove(first)
            self._total -= seg.bytes

    def _segment_of(self, lsn: int) -> _Segment | None:
        i = bisect.bisect_right(self._firsts, lsn)
        return self._segments[self._firsts[i - 1]] if i else None

    def _forget(self, lsns: Iterable[int]) -> None:
        for lsn in lsns:
            if lsn in self._undelivered:
                self._undelivered.discard(lsn)
                seg = self._segment_of(lsn)
                if seg is not None:
                    seg.undelivered -= 1

    # -- progress ---------------------------------------------------------------------------

    def ack(self, lsns: Iterable[int]) -> int:
        n = 0
        with self._lock:
            for lsn in lsns:
                if not isinstance(lsn, int):
                    raise TypeError("lsns must be ints")
                if lsn in self._undelivered:
                    self._undelivered.discard(lsn)
                    n += 1
                    seg = self._segment_of(lsn)
                    if seg is not None:
                        seg.undelivered -= 1
        return n

    def checkpoint(self) -> int:
        with self._lock:
            if self._closed:
                raise WalError("write-ahead log is closed")
        return self._checkpoint()

    def _checkpoint(self) -> int:
        with self._checkpointing:
            with self._lock:
                if self._active is not None:
                    seg = self._segments[self._active[0]]
                    if seg.records > 0 and seg.undelivered == 0:
                        self._active = None
                active = self._active[0] if self._active else None
                doomed = [
                    (first, s.path)
                    for first, s in sorted(self._segments.items())
                    if first != active and s.records > 0 and s.undelivered == 0
                ]
                base = next(
                    (first for first, s in sorted(self._segments.items()) if first == active or s.undelivered > 0),
                    self._next_lsn,
                )
                ranges: list[tuple[int, int]] = []
                start = base
                for lsn in sorted(x for x in self._undelivered if x >= base):
                    if lsn > start:
                        ranges.append((start, lsn))
                    start = lsn + 1
                if self._next_lsn > start:
                    ranges.append((start, self._next_lsn))
                body = _encode_checkpoint(self._next_lsn, ranges)
            try:
                self._write_checkpoint(body)
            except WalError as exc:
                # No room for the progress file: give back what the log does not need, and retry.
                with self._lock:
                    if not is_no_space(exc) or not self._reclaim_locked():
                        raise
                self._write_checkpoint(body)
            deleted = 0
            for first, path in doomed:
                if not self._keep_as_spare(path):
                    _remove(path)
                with self._lock:
                    gone = self._segments.pop(first, None)
                    if gone is not None:
                        self._total -= gone.bytes
                        self._firsts.remove(first)
                deleted += 1
            if deleted:
                _sync_dir(self._dir)
            return deleted

    def _keep_as_spare(self, path: Path) -> bool:
        """Rename a delivered segment file to a free spare name (see the module doc)."""
        with self._lock:
            slot = next(
                (p for p in (self._dir / f"{_SPARE_PREFIX}{i}" for i in range(MAX_SPARES)) if p not in self._spares),
                None,
            )
        if slot is None:
            return False
        try:
            if path.stat().st_size > 2 * self._segment_bytes:
                return False
            os.rename(path, slot)
        except OSError:
            return False
        with self._lock:
            self._spares.append(slot)
        return True

    def _write_checkpoint(self, body: bytes) -> None:
        tmp = self._dir / _CHECKPOINT_TMP
        dst = self._dir / CHECKPOINT_FILE
        try:
            with open(tmp, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            # A partial file only takes space (the device may be full): leave nothing behind.
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _io_error("write checkpoint", tmp, exc) from exc
        try:
            os.replace(tmp, dst)
        except OSError as exc:
            raise _io_error("rename checkpoint", dst, exc) from exc
        _sync_dir(self._dir)

    def reclaim(self) -> int:
        """Give back the disk space the log holds but does not need (see Wal::reclaim in
        wal.rs); returns the bytes freed."""
        with self._lock:
            if self._closed:
                raise WalError("write-ahead log is closed")
            return self._reclaim_locked()

    def _reclaim_locked(self) -> int:
        """reclaim(), under the lock (no write or segment change runs meanwhile)."""
        freed = 0
        kept = []
        for spare in self._spares:
            try:
                size = spare.stat().st_size
            except OSError:
                size = 0
            try:
                spare.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                kept.append(spare)  # still a spare: reused by the next segment
                continue
            freed += size
            self._reclaimed_files += 1
        self._spares = kept
        for seg in self._segments.values():
            try:
                size = seg.path.stat().st_size
                if size <= seg.bytes:
                    continue
                os.truncate(seg.path, seg.bytes)
            except OSError:
                continue
            freed += size - seg.bytes
        self._reclaimed_bytes += freed
        return freed

    # -- reading back -----------------------------------------------------------------------

    def replay(self) -> list[tuple[int, bytes]]:
        with self._lock:
            if self._closed:
                raise WalError("write-ahead log is closed")
            want = {lsn for lsn in self._undelivered if lsn < self._replay_end}
            files = [
                (s.path, s.bytes, list(s.gaps))
                for first, s in sorted(self._segments.items())
                if first < self._replay_end and s.undelivered > 0
            ]
        out: list[tuple[int, bytes]] = []
        for path, size, gaps in files:
            try:
                data = path.read_bytes()
                if len(data) > size:  # a recycled segment's stale frames
                    data = data[:size]
            except FileNotFoundError:  # deleted meanwhile: all its records were delivered
                continue
            except OSError as exc:
                raise _io_error("read", path, exc) from exc
            for lsn, off, length in _walk_records(data, gaps):
                if lsn in want:
                    out.append((lsn, data[off : off + length]))
        return out

    @property
    def recovery_notes(self) -> list[str]:
        return list(self._notes)

    @property
    def recovery_losses(self) -> list[Loss]:
        return [(*loss[:5], list(loss[5]), loss[6]) for loss in self._losses]

    @property
    def path(self) -> str:
        return str(self._dir)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "bytes": self._total,
                "segments": len(self._segments),
                "records": sum(s.records for s in self._segments.values()),
                "undelivered": len(self._undelivered),
                "next_lsn": self._next_lsn,
                "appends": self._appends,
                "appended_records": self._appended_records,
                "fsyncs": self._fsyncs,
                "last_fsync_seconds": self._last_fsync,
                "skipped_bytes": self._skipped_bytes,
                "skipped_records": self._skipped_records,
                "lost_records": self._lost_records,
                "recovered_records": self._recovered,
                "max_bytes": self._max_bytes,
                "reclaimed_bytes": self._reclaimed_bytes,
                "reclaimed_files": self._reclaimed_files,
            }

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            while self._settled_seq < self._written_seq:
                if self._syncing:
                    self._synced.wait()
                else:
                    self._lead_sync()
        try:
            self._checkpoint()
        finally:
            with self._lock:
                self._active = None
                self._dirty = []

    def __enter__(self) -> Wal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
