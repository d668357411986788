"""`wal` durability: the Store that keeps every accepted part in the write-ahead log.

One log record per stored part (the format is in walrecord.py); the token of a part is its
lsn. Recovery sends a part back to the analyzer it was routed to, so a message delivered before
the crash but not yet checkpointed is redelivered where it was processed, and that analyzer's
dedup window counts it as a duplicate, not twice as unique. Acks may come in pieces (a chunk
can be re-split); the record is marked delivered in the log once all `count` messages of it are
acknowledged. Progress is persisted lazily by a checkpoint task (at most every
`checkpoint_interval` seconds while acks arrive), which also lets the log recycle fully
delivered segments: after a crash, the parts acked since the last checkpoint are delivered
again, and analyzers deduplicate them by message id.

Packet dedup across restarts: the packet ledger owns the window; this store keeps it on disk
through two hooks. It appends the key of each packet it stores, with the hash of the packet's
content (which rides on the packet's last record too), to the keys file
(`dedup.keys`) at each checkpoint, before the checkpoint may recycle the records holding
them, and rewrites the file atomically from the `packet_keys` snapshot when it holds twice the
window. `recover(remember)` hands back the previous run's keys, oldest first: those of the
keys file, then those of the records still on disk. A keys file in the format written before
content hashes were kept is read (hash 0: unknown) and rewritten in the current one at once.

Damage: when recovery finds records that were stored (acknowledged to a client) but are now
unreadable (Wal.recovery_losses), they are lost. The loss is logged, counted
(wal_lost_records_total / wal_lost_messages_total) and kept as a pending report in
`data-loss.json` in the log directory, which /health shows as "degraded" until an operator
acknowledges it (acknowledge_loss, POST /api/v1/wal/acknowledge-loss) or the distributor stops
gracefully (close(): the next start is a clean one). A crash keeps the report: the next start
shows it again, together with anything new.

Space: the log shares its filesystem with the keys file, the progress file and the dead
letters, so appends never take its last bytes. Before each append (one call per group of
requests), the free space on the log's filesystem (one statvfs) must hold the append plus a
reserve: RESERVE_BYTES, twice the progress file, and the dedup keys still to be written. When
it does not, or when a write finds the device full anyway (ENOSPC, EDQUOT: another writer
filled it), the log first gives back what it holds but does not need (Wal.reclaim: the spare
segment files, the stale frames of recycled ones) and tries again; if there is still no room,
the append is refused with DiskFullError (a WalFullError: ingest answers 429 with Retry-After)
and nothing of it is acknowledged. The store is then "full"
(`full()`, and "wal_full" in its figures: why, since when) until an append succeeds again, or a
checkpoint leaves room for one: delivered segments are deleted as the backlog drains, so a full
disk clears by itself, with no operator action. The keys file has the same care: a write cut
short by a full device is cut back (it never leaves half a key), and a rewrite (compaction)
that finds no room is put off and the new keys are appended instead.

All log I/O runs in worker threads (asyncio.to_thread); the Rust log releases the GIL there.
Appends are batched here as well: the parts of every request that arrives while a log write
is in flight go into the next single append_many call (at most `max_inflight` calls at once,
which the log group-commits too), so one fsync covers many requests without tying up one
executor thread per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from logdist import core
from logdist.config import DistributorConfig
from logdist.distributor.batch import Chunk
from logdist.distributor.ledger import Key, Stamp
from logdist.distributor.walrecord import (
    KEYS_FILE,
    KEYS_MAGIC,
    KeysFileError,
    Part,
    decode_keys,
    decode_record,
    encode_keys,
    encode_parts,
    lost_messages,
    record_messages,
)
from logdist.errors import DiskFullError, WalFullError

log = logging.getLogger("logdist.distributor.wal")

_Pending = tuple[Sequence[Part], Key | None, int, "asyncio.Future[list[int]]"]

#: the pending data-loss report, in the log directory (see the module doc)
LOSS_FILE = "data-loss.json"
_LOSS_STRETCHES_MAX = 100  # stretches listed in a report (the totals count them all)

#: free space an append must leave on the log's filesystem (beyond the progress file and the
#: dedup keys still to be written): room for a checkpoint, the keys file and dead letters
RESERVE_BYTES = 256 << 10
_ROOM_BYTES = 1 << 20  # room for appends (at most a segment) at which a checkpoint ends "full"
_KEY_OVERHEAD = 12  # bytes of a key in the keys file beyond its two strings (walrecord.py)
_FRAME = 16  # a log record's frame header, and a segment's header (crates/wlb/src/wal.rs)
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """True for an OSError (WalError) that says the device or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _stamp_bytes(stamps: Iterable[Stamp]) -> int:
    return sum(len(e) + len(p) + _KEY_OVERHEAD for (e, p), _ in stamps)


def wal_class() -> Any:
    """The Wal of the backend that core selected."""
    return core.Wal


class WalStore:
    """A Store (see store.py) over a write-ahead log in `path`, opened by `recover()`.

    `packet_keys`: the packet ledger's snapshot of its window, from which the keys file is
    rewritten (without it, the keys file is only appended to); `dedup_window` is the window's
    bound, which sets when the file is rewritten."""

    durability = "wal"
    noop = False

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        commit_delay_us: int = 0,
        checkpoint_interval: float = 0.5,
        max_inflight: int = 1,
        dedup_window: int = 100_000,
        packet_keys: Callable[[], list[Stamp]] | None = None,
        wal_cls: Any = None,
        adopt: Sequence[str | Path] = (),
    ) -> None:
        self.path = Path(path)
        # logs of a run with another --workers count, whose records this one takes over
        self._adopt = [Path(a) for a in adopt]
        self._cls = wal_cls
        self._opts = {"max_bytes": max_bytes, "segment_bytes": segment_bytes, "commit_delay_us": commit_delay_us}
        self._interval = checkpoint_interval
        self.wal: Any = None
        self._remaining: dict[int, int] = {}  # lsn -> messages of it not yet acknowledged
        self._acked_since_checkpoint = 0
        # Delivered lsns not yet handed to the log: applied in the checkpoint's worker thread,
        # so the event loop never waits for the log's lock (held during a write).
        self._acked_lsns: list[int] = []
        self._checkpointer: asyncio.Task[None] | None = None
        self._sleeping = False  # the checkpointer waits between checkpoints (safe to cancel)
        self._queue: list[_Pending] = []
        self._packet_keys = packet_keys
        self._unsaved: list[Stamp] = []  # stored since the keys file was last written
        self._unsaved_bytes = 0  # about what they take in the keys file
        self._saved = 0  # keys in the keys file
        self.dedup_window = dedup_window
        self._inflight = 0
        self._max_inflight = max_inflight
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False
        self.replayed_messages = 0
        self.checkpoint_errors = 0
        self.undecodable_records = 0
        self.lost_records = 0  # found lost by this process's recovery
        self.lost_messages = 0
        self._loss: dict[str, Any] | None = None  # the pending (unacknowledged) loss report
        # Space (see the module doc): free bytes at the last look, the progress file's size, and
        # why appends are refused (None: they are not).
        self._free: int | None = None
        self._ckpt_bytes = 0
        self._full: dict[str, Any] | None = None
        self._full_since = 0.0
        self.disk_full_refusals = 0

    def _open(self) -> None:
        if self.wal is None:
            self.wal = (self._cls or wal_class())(self.path, **self._opts)

    def _unsave(self, stamps: list[Stamp]) -> None:
        """Keys stored since the keys file was last written (saved at the next checkpoint)."""
        self._unsaved.extend(stamps)
        self._unsaved_bytes += _stamp_bytes(stamps)

    def _read_keys(self, where: Path) -> tuple[list[Stamp], bool]:
        """The keys file in `where`, oldest first ([] when there is none or it is unreadable;
        the keys before the cut when it is cut short), and whether it is in the current
        format (False: an older one, to be rewritten before anything is appended to it)."""
        try:
            raw = (where / KEYS_FILE).read_bytes()
        except FileNotFoundError:
            return [], True
        current = raw.startswith(KEYS_MAGIC)
        try:
            return decode_keys(raw), current
        except KeysFileError as exc:
            if not exc.cut_short:
                log.warning("write-ahead log: %s is unreadable; the dedup window starts empty", KEYS_FILE)
                return [], False
            log.warning("write-ahead log: %s is cut short; kept the keys before the cut", KEYS_FILE)
            self._saved = 2 * self.dedup_window  # rewrite it whole on the next save
            return exc.stamps, current

    async def _persist_keys(self) -> None:
        """Append the new keys to the keys file (rewrite it whole from the ledger's snapshot
        when it has grown to twice the window). Called before each checkpoint, which may
        recycle the records holding them."""
        if not self._unsaved:
            return
        new, self._unsaved = self._unsaved, []
        size, self._unsaved_bytes = self._unsaved_bytes, 0
        try:
            if self._packet_keys is not None and self._saved + len(new) > 2 * self.dedup_window:
                keys = self._packet_keys()
                if await asyncio.to_thread(self._save_keys, keys, True):
                    self._saved = len(keys)
                    return
            await asyncio.to_thread(self._save_keys, new, False)
            self._saved += len(new)
        except BaseException:
            self._unsaved[:0] = new  # written next time
            self._unsaved_bytes += size
            raise

    def _save_keys(self, keys: list[Stamp], rewrite: bool) -> bool:
        """Worker thread: _write_keys, retried once when the log could give space back. A
        rewrite (compaction) that finds no room is put off: False (append the new keys)."""
        for attempt in (1, 2):
            try:
                self._write_keys(keys, rewrite)
                return True
            except OSError as exc:
                if not is_no_space(exc):
                    raise
                if attempt == 1 and self._reclaim() > 0:
                    continue
                if rewrite:
                    log.warning("write-ahead log: no room to rewrite %s; appending to it instead", KEYS_FILE)
                    return False
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_keys(self, keys: list[Stamp], rewrite: bool) -> None:
        dst = self.path / KEYS_FILE
        out = encode_keys(keys, header=rewrite or not dst.exists())
        target = self.path / (KEYS_FILE + ".tmp") if rewrite else dst
        with open(target, "wb" if rewrite else "ab") as fh:
            end = fh.tell()
            try:
                fh.write(out)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                # Cut short (a full device): never leave half a key, which would garble the
                # keys appended after it; a rewrite's copy only takes space.
                with contextlib.suppress(OSError):
                    fh.truncate(end)
                if rewrite:
                    target.unlink(missing_ok=True)
                raise
        if rewrite:
            os.replace(target, dst)

    def _take_over(self, src: Path) -> tuple[int, list[Stamp]]:
        """Worker thread: copy the undelivered records of the log in `src` (left by a run with
        another --workers count) into this one, fsynced, then delete `src`. A crash half-way
        only means that some of them are delivered twice. Returns the messages taken over and
        the dedup keys of that run."""
        other = (self._cls or wal_class())(src, **self._opts)
        records = other.replay()
        payloads = [p for _, p in records]
        for i in range(0, len(payloads), 512):
            self.wal.append_many(payloads[i : i + 512])
        other.ack([lsn for lsn, _ in records])
        other.close()
        keys, _ = self._read_keys(src)
        shutil.rmtree(src)
        return record_messages(payloads), keys

    async def _adopt_logs(self, remember: Callable[[Key, int], None]) -> None:
        """Take over the logs of a run with another --workers count, then reopen ours, so that
        replay() covers what was just copied in."""
        for src in self._adopt:
            if not src.is_dir():
                continue
            try:
                n, keys = await asyncio.to_thread(self._take_over, src)
            except (OSError, ValueError) as exc:  # WalFullError too: the rest stays where it is
                log.error("write-ahead log: could not take over %s (left in place): %s", src, exc)
                continue
            for k, h in keys:
                remember(k, h)
            self._unsave(keys)
            log.warning("write-ahead log: took over %d undelivered messages from %s", n, src)
        await asyncio.to_thread(self.wal.close)
        self.wal = None
        await asyncio.to_thread(self._open)

    async def _replay(self, remember: Callable[[Key, int], None]) -> list[tuple[int, bytes, int, str]]:
        """(lsn, part, count, target) of every record still on disk; their keys to `remember`."""
        for note in self.wal.recovery_notes:
            log.warning("write-ahead log recovery skipped: %s", note)
        records = await asyncio.to_thread(self.wal.replay)
        st = self.wal.stats()
        log.info(
            "write-ahead log %s: %d parts to replay, %d bytes in %d segments, skipped %d bytes (%d records)",
            self.path, len(records), st["bytes"], st["segments"], st["skipped_bytes"], st["skipped_records"],
        )  # fmt: skip
        parts = []
        bad: list[int] = []
        for lsn, payload in records:
            try:
                count, key, content_hash, part, target = decode_record(payload)
            except (struct.error, ValueError) as exc:  # checksummed, so not torn: not ours
                log.error(
                    "write-ahead log: record %d (%d bytes) is not a logdist record, skipped: %s", lsn, len(payload), exc
                )
                bad.append(lsn)
                continue
            if key is not None:
                remember(key, content_hash)
                self._unsave([(key, content_hash)])
            parts.append((lsn, part, count, target))
        self.undecodable_records += len(bad)
        if bad:
            self._delivered(bad)  # nothing can deliver them: do not let them pin their segment
        return parts

    def _read_loss(self) -> dict[str, Any] | None:
        try:
            raw = (self.path / LOSS_FILE).read_bytes()
        except FileNotFoundError:
            return None
        try:
            report = json.loads(raw)
        except ValueError:
            report = None
        if not isinstance(report, dict):  # damaged itself: still a loss nobody acknowledged
            return {"records": None, "messages": None, "records_without_count": None, "stretches": []}
        return report

    def _write_loss(self, report: dict[str, Any]) -> None:
        tmp = self.path / (LOSS_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path / LOSS_FILE)

    def _account_losses(self) -> None:
        """Worker thread, right after the first open: what recovery found lost, added to the
        pending report (kept from a previous run that crashed before anyone acknowledged it)."""
        pending = self._read_loss()
        stretches = []
        for segment, offset, length, lo, hi, lsns, data in self.wal.recovery_losses:
            messages, known = lost_messages(data, lsns)
            stretches.append({
                "segment": segment, "offset": offset, "bytes": length, "lsns": [lo, hi],
                "records": len(lsns), "messages": messages, "records_without_count": len(lsns) - known,
            })  # fmt: skip
        if stretches:
            found = {k: sum(s[k] for s in stretches) for k in ("records", "messages", "records_without_count")}
            self.lost_records += found["records"]
            self.lost_messages += found["messages"]
            log.error(
                "write-ahead log: DATA LOST to damage on disk: %d stored, undelivered records (%d messages known, "
                "%d records of unknown size) in %d stretches: %s",
                found["records"], found["messages"], found["records_without_count"], len(stretches),
                ", ".join(f"{s['segment']}@{s['offset']}+{s['bytes']}" for s in stretches[:10]),
            )  # fmt: skip
            old = pending or {"since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stretches": []}
            pending = {
                **old,
                **{k: (old.get(k) or 0) + v for k, v in found.items()},
                "stretches": (old.get("stretches") or [])[:_LOSS_STRETCHES_MAX] + stretches,
            }
            pending["stretches"] = pending["stretches"][:_LOSS_STRETCHES_MAX]
            try:
                self._write_loss(pending)
            except OSError as exc:  # still reported by this process, just not across a crash
                log.error("write-ahead log: could not save the data-loss report: %s", exc)
        self._loss = pending

    def data_loss(self) -> dict[str, Any] | None:
        """Store.data_loss: the pending loss report, None when there is none."""
        return self._loss

    async def acknowledge_loss(self) -> dict[str, Any] | None:
        """Store.acknowledge_loss: forget the pending loss report (returned), on disk too."""
        report, self._loss = self._loss, None
        if report is not None:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, self.path / LOSS_FILE)
            log.warning("write-ahead log: data loss acknowledged: %s", json.dumps(report)[:1000])
        return report

    async def recover(self, remember: Callable[[Key, int], None]) -> AsyncIterator[tuple[int, bytes, int, str]]:
        """Store.recover: open the log, hand the previous run's dedup keys and content hashes
        to `remember` (oldest first), and yield every part not fully acknowledged."""
        await asyncio.to_thread(self._open)
        await asyncio.to_thread(self._drop_leftovers)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._look)
        await asyncio.to_thread(self._account_losses)
        keys, current = await asyncio.to_thread(self._read_keys, self.path)
        if not current:  # the new format is appended to it from now on: convert it first
            await asyncio.to_thread(self._write_keys, keys, True)
            self._saved = 0
        for k, h in keys:
            remember(k, h)
        self._saved += len(keys)
        if any(a.is_dir() for a in self._adopt):
            await self._adopt_logs(remember)
        parts = await self._replay(remember)
        for lsn, part, count, target in parts:
            self._remaining[lsn] = count
            self.replayed_messages += count
            yield lsn, part, count, target

    async def append(self, parts: Sequence[Part], packet_key: Key | None = None, content_hash: int = 0) -> list[int]:
        """Store.append; `packet_key`, the packet's (emitter_id, packet_id), and its content
        hash ride on its last record and go to the keys file at the next checkpoint."""
        if self.wal is None:  # used without recover(): open now
            await asyncio.to_thread(self._open)
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((parts, packet_key, content_hash, fut))
        if self._inflight < self._max_inflight:
            self._flush_queue()
        return await fut

    def _flush_queue(self) -> None:
        batch, self._queue = self._queue, []
        self._inflight += 1
        t = asyncio.get_running_loop().create_task(self._write(batch), name="wal-append")
        self._flushes.add(t)
        t.add_done_callback(self._flushes.discard)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            payloads = [rec for parts, key, h, _ in batch for rec in encode_parts(parts, key, h)]
            try:
                lsns: list[int] = await asyncio.to_thread(self._append, payloads)
            except WalFullError as exc:
                self._refused(exc)
                if self._acked_lsns:  # the full log waits on delivered records: free them now
                    self._delivered(())
                if len(batch) == 1:
                    raise
                await self._write_each(batch)  # together they do not fit; alone some may
                return
            i = 0
            for parts, key, h, fut in batch:
                self._stored(parts, (key, h), fut, lsns[i : i + len(parts)])
                i += len(parts)
        except BaseException as exc:
            for _, _, _, fut in batch:
                if not fut.done():
                    if isinstance(exc, Exception):
                        fut.set_exception(exc)
                    else:  # cancelled (shutdown): the requests get no answer either
                        fut.cancel()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._inflight -= 1
            if self._queue:
                self._flush_queue()

    async def _write_each(self, batch: list[_Pending]) -> None:
        """Append each request of `batch` on its own, and give each its own answer."""
        for parts, key, h, fut in batch:
            try:
                mine = await asyncio.to_thread(self._append, encode_parts(parts, key, h))
            except Exception as exc:
                if isinstance(exc, WalFullError):
                    self._refused(exc)
                if not fut.done():
                    fut.set_exception(exc)
            else:
                self._stored(parts, (key, h), fut, mine)

    # -- space (see the module doc) ----------------------------------------------------------

    def _reserve(self) -> int:
        """Free bytes an append must leave: RESERVE_BYTES, twice the progress file, and the
        keys still to be written."""
        return RESERVE_BYTES + 2 * self._ckpt_bytes + self._unsaved_bytes

    def _look(self) -> int:
        """Worker thread: the free bytes now (one statvfs); appends may take all but the
        reserve of them."""
        self._free = free = free_bytes(self.path)
        return free

    def _reclaim(self) -> int:
        """Worker thread: what the log gives back (spares, stale frames); bytes freed."""
        freed = int(self.wal.reclaim())
        if freed:
            log.warning("write-ahead log: space is short; gave back %d bytes it did not need", freed)
        return freed

    def _append(self, payloads: list[bytes]) -> list[int]:
        """Worker thread: Wal.append_many, when the filesystem has room for it and the reserve;
        DiskFullError when it has not, even after the log gave back what it could."""
        need = sum(len(p) for p in payloads) + _FRAME * (len(payloads) + 1)  # + a segment header
        if need > self._look() - self._reserve():
            self._reclaim()
            free = self._look()
            if need > free - self._reserve():
                raise DiskFullError(
                    f"no space left on device for the write-ahead log: {free} bytes free on {self.path}, "
                    f"{need} needed and {self._reserve()} kept in reserve"
                )
        try:
            lsns: list[int] = self.wal.append_many(payloads)
        except OSError as exc:
            if not is_no_space(exc):  # the log already gave back what it could, and retried
                raise
            raise DiskFullError(f"no space left on device for the write-ahead log: {exc}") from exc
        return lsns

    def _refused(self, exc: WalFullError) -> None:
        """An append was refused for want of room: the store is full until there is room again."""
        disk = isinstance(exc, DiskFullError)
        code = "disk_full" if disk else "log_full"
        self.disk_full_refusals += disk
        if self._full is not None and self._full["error"] == code:
            self._full["detail"] = str(exc)
            return
        self._full_since = time.monotonic()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._full = {"error": code, "detail": str(exc), "since": since}
        log.warning("write-ahead log full (%s): refusing ingest until deliveries free room: %s", code, exc)

    def _room_again(self, why: str) -> None:
        if self._full is not None:
            log.warning(
                "write-ahead log has room again after %.1f s (%s): taking ingest",
                time.monotonic() - self._full_since,
                why,
            )
        self._full = None

    def _has_room(self) -> bool:
        """Worker thread, after a checkpoint: room for appends (a segment, at most 1 MiB) on
        disk and under max_bytes."""
        want = min(self._opts["segment_bytes"], _ROOM_BYTES)
        st = self.wal.stats()
        return bool(st["bytes"] + want <= st["max_bytes"] and self._look() - self._reserve() >= want)

    def full(self) -> dict[str, Any] | None:
        """Store.full: why appends are refused now ({"error", "detail", "since"}), or None."""
        return self._full

    def _drop_leftovers(self) -> None:
        """Worker thread, at start: drop the partial copy of a keys rewrite cut short by a
        crash; note the progress file's size (for the reserve)."""
        with contextlib.suppress(FileNotFoundError):
            (self.path / (KEYS_FILE + ".tmp")).unlink()
        with contextlib.suppress(OSError):
            self._ckpt_bytes = (self.path / "progress.ckpt").stat().st_size

    def _stored(
        self, parts: Sequence[Part], stamp: tuple[Key | None, int], fut: asyncio.Future[list[int]], lsns: list[int]
    ) -> None:
        if fut.cancelled():
            # Nobody will queue (or acknowledge to a client) these parts: do not let them
            # hold their segment forever. (A restart before the next checkpoint replays them.)
            self._delivered(lsns)
            return
        remaining = self._remaining
        for lsn, part in zip(lsns, parts, strict=True):
            remaining[lsn] = part[1]
        key, h = stamp
        if key is not None:
            self._unsave([(key, h)])
        if self._full is not None:
            self._room_again("an append succeeded")
        fut.set_result(lsns)

    def ack_chunks(self, chunks: Iterable[Chunk]) -> None:
        """Store.ack_chunks: the chunks of a delivered batch; a record whose messages are all
        acknowledged is handed over as done, in one call."""
        remaining = self._remaining
        done = []
        for c in chunks:
            token = c.token
            left = remaining.get(token)
            if left is None:
                continue
            left -= c.count
            if left > 0:
                remaining[token] = left
            else:
                del remaining[token]
                done.append(token)
        if done:
            self._delivered(done)

    def _delivered(self, lsns: Sequence[int]) -> None:
        """Records that need no more delivery: handed to the log by the next checkpoint (which
        this starts, if none is pending; also with no lsns, to flush what is pending)."""
        self._acked_lsns.extend(lsns)
        self._acked_since_checkpoint += max(len(lsns), 1)
        if self._closed:  # close() hands over what is left and persists the final progress
            return
        if self._checkpointer is None or self._checkpointer.done():
            self._checkpointer = asyncio.get_running_loop().create_task(self._checkpoint_soon(), name="wal-checkpoint")

    async def _checkpoint_soon(self) -> None:
        """Persist progress and recycle delivered segments, at most once per interval. A failed
        checkpoint is retried (backing off to 5 s) even if no more deliveries come: a full log
        waiting on it must not stay full."""
        delay = self._interval
        while self._acked_since_checkpoint:
            self._sleeping = True
            try:
                await asyncio.sleep(delay)
            finally:
                self._sleeping = False
            self._acked_since_checkpoint = 0
            try:
                recycled = await self.checkpoint()
            except OSError as exc:  # WalError: keep serving, and try again
                self.checkpoint_errors += 1
                self._acked_since_checkpoint += 1
                delay = min(max(delay * 2, 0.05), 5.0)
                log.error("write-ahead log checkpoint failed (retrying in %.2f s): %s", delay, exc)
                continue
            delay = self._interval
            if recycled:
                log.debug("write-ahead log: recycled %d delivered segments", recycled)

    async def checkpoint(self) -> int:
        """Hand the deliveries so far to the log, persist progress and recycle delivered
        segments (in a worker thread); returns the number of segments recycled. A full store
        takes appends again when that left room for them."""
        await self._persist_keys()  # first: the checkpoint may recycle the records holding them
        acked, self._acked_lsns = self._acked_lsns, []
        recycled, room = await asyncio.to_thread(self._ack_and_checkpoint, acked)
        if room and self._full is not None:
            self._room_again("delivered segments were recycled")
        return recycled

    def _ack_and_checkpoint(self, acked: list[int]) -> tuple[int, bool]:
        """Worker thread: record the deliveries, persist progress, recycle delivered segments;
        (segments recycled, whether there is room for appends now)."""
        try:
            self.wal.ack(acked)
        except BaseException:
            self._acked_lsns[:0] = acked  # handed over by the next try
            raise
        recycled = int(self.wal.checkpoint())
        with contextlib.suppress(OSError):
            self._ckpt_bytes = (self.path / "progress.ckpt").stat().st_size
        try:
            return recycled, self._full is not None and self._has_room()
        except OSError:  # statvfs: the next append looks again
            return recycled, False

    async def close(self) -> None:
        self._closed = True
        while self._flushes:  # a finishing write may start the next one
            await asyncio.gather(*self._flushes, return_exceptions=True)
        cp = self._checkpointer
        if cp is not None and not cp.done():
            if self._sleeping:  # between checkpoints: the final one below covers it
                cp.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cp  # a checkpoint under way finishes (or fails) first
        if self.wal is None:
            return
        try:
            await self._persist_keys()
        except OSError as exc:
            log.error("write-ahead log: saving dedup keys on close failed: %s", exc)
        try:
            acked, self._acked_lsns = self._acked_lsns, []
            await asyncio.to_thread(self.wal.ack, acked)
        except OSError as exc:
            log.error("write-ahead log: recording deliveries on close failed: %s", exc)
        try:
            await asyncio.to_thread(self.wal.close)  # persists the final progress
        except OSError as exc:
            log.error("write-ahead log close failed: %s", exc)
            return
        if self._loss is not None:  # a graceful stop: the next start is a clean one
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.unlink, self.path / LOSS_FILE)

    def resize_dedup_window(self, window: int) -> None:
        """Store.resize_dedup_window: the keys file is rewritten when it holds twice this."""
        self.dedup_window = window

    def stats(self) -> dict[str, object]:
        if self.wal is None:
            return {"wal_path": str(self.path)}
        st = self.wal.stats()
        return {
            "wal_path": str(self.path),
            "wal_bytes": st["bytes"],
            "wal_max_bytes": st["max_bytes"],
            "wal_segments": st["segments"],
            "wal_records": st["records"],
            "wal_undelivered_records": st["undelivered"],
            "wal_fsyncs": st["fsyncs"],
            "wal_last_fsync_ms": round(st["last_fsync_seconds"] * 1000.0, 3),
            "wal_skipped_bytes": st["skipped_bytes"],
            "wal_skipped_records": st["skipped_records"],
            "wal_recovery_notes": self.wal.recovery_notes,
            "wal_replayed_messages": self.replayed_messages,
            "wal_checkpoint_errors": self.checkpoint_errors,
            "wal_undecodable_records": self.undecodable_records,
            "wal_lost_records_total": self.lost_records,
            "wal_lost_messages_total": self.lost_messages,
            "wal_free_bytes": self._free,
            "wal_reserve_bytes": self._reserve(),
            "wal_disk_full": int(self._full is not None and self._full["error"] == "disk_full"),
            "wal_disk_full_total": self.disk_full_refusals,
            "wal_reclaimed_bytes_total": st.get("reclaimed_bytes", 0),
            "wal_reclaimed_files_total": st.get("reclaimed_files", 0),
            **({"wal_full": self._full} if self._full is not None else {}),
        }


def make_store(
    cfg: DistributorConfig, packet_keys: Callable[[], list[Stamp]], adopt: Sequence[str | Path] = ()
) -> WalStore | None:
    """The store for a DistributorConfig: a WalStore in <state_dir>/wal for durability "wal"
    (`packet_keys`: the packet ledger's snapshot hook), None (the engine's MemoryStore)
    otherwise."""
    if cfg.durability != "wal":
        return None
    return WalStore(
        Path(cfg.state_dir) / "wal",
        dedup_window=cfg.dedup_window,
        packet_keys=packet_keys,
        max_bytes=cfg.wal_max_bytes,
        segment_bytes=min(cfg.wal_segment_bytes, cfg.wal_max_bytes),
        commit_delay_us=cfg.wal_commit_delay_us,
        checkpoint_interval=cfg.wal_checkpoint_ms / 1000.0,
        adopt=adopt,
    )
