"""`wal` durability: the Store that keeps every accepted part in the write-ahead log.

One log record per stored part: `count: u32, elen: u16, plen: u16` (little-endian), then the
packet's dedup key (emitter_id and packet_id, UTF-8, elen and plen bytes; elen = 0xFFFF when
the record carries no key: only the last part of a packet with a packet_id has one, see encode_parts), then,
when bit 31 of `count` is set, `tlen: u16` and the id of the analyzer the part was routed to
(UTF-8), then the part (its messages joined by b","), so that recovery gives back (token,
part, count, target) without parsing JSON. Recovery sends a part back to the analyzer it was
routed to, so a message delivered before the crash but not yet checkpointed is redelivered
where it was processed, and that analyzer's dedup window counts it as a duplicate, not twice
as unique. Records without the bit (written before targets were kept) recover with target "".
The token of a part is its lsn. Acks may come in pieces (a chunk can be re-split); the record
is marked delivered in the log once all `count` messages of it are acknowledged. Progress is
persisted lazily by a checkpoint task (at most every `checkpoint_interval` seconds while acks
arrive), which also deletes fully delivered segments: after a crash, the parts acked since the
last checkpoint are delivered again, and analyzers deduplicate them by message id.

Packet dedup across restarts: the last `dedup_window` keys appended are written to
`dedup.keys` in the log directory (b"LDKEYS1\n", then per key `elen: u16, plen: u16`, the
two UTF-8 strings; appended to at each checkpoint, rewritten atomically when it holds twice
the window), before the checkpoint may delete
segments; keys newer than that file are in records that are still on disk and replayed. After
recover(), they are in `window` (oldest first), the dict the distributor uses as its dedup
window (the `keeps_packet_keys` seam of store.py).

All log I/O runs in worker threads (asyncio.to_thread); the Rust log releases the GIL there.
Appends are batched here as well: the parts of every request that arrives while a log write
is in flight go into the next single append_many call (at most `max_inflight` calls at once,
which the log group-commits too), so one fsync covers many requests without tying up one
executor thread per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import struct
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from logdist import core
from logdist.distributor.store import Part
from logdist.errors import WalFullError

log = logging.getLogger("logdist.distributor.wal")

_HEAD = struct.Struct("<IHH")
_NO_KEY = 0xFFFF
_KEY = struct.Struct("<HH")
_KEYS_MAGIC = b"LDKEYS1\n"
KEYS_FILE = "dedup.keys"

Key = tuple[str, str]


_HAS_TARGET = 0x8000_0000
_TLEN = struct.Struct("<H")


def encode_parts(parts: Sequence[Part], key: Key | None) -> list[bytes]:
    """The log records of one packet's parts; the LAST one carries the dedup key. The parts of
    a packet are consecutive records written by one write(): when a kill -9 tears that write,
    the records before the tear survive and the rest do not. With the key on the last part,
    recovery remembers the packet as stored only if every part of it survived; a retry of a
    packet that lost a part is then stored again instead of being answered "duplicate"."""
    out = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        data, count = part[0], part[1]
        target = part[2].encode("utf-8", "surrogatepass") if len(part) > 2 else b""
        tlen = b""
        if target and len(target) < 0xFFFF:
            count |= _HAS_TARGET
            tlen = _TLEN.pack(len(target))
        else:
            target = b""
        e = p = b""
        head = _HEAD.pack(count, _NO_KEY, 0)
        if i == last and key is not None:
            e, p = key[0].encode("utf-8", "surrogatepass"), key[1].encode("utf-8", "surrogatepass")
            if len(e) < _NO_KEY and len(p) < _NO_KEY:
                head = _HEAD.pack(count, len(e), len(p))
            else:  # too long to keep: stored without a key
                e = p = b""
        out.append(b"".join((head, e, p, tlen, target, data)))  # the one copy of the data
    return out


def decode_record(payload: bytes) -> tuple[int, Key | None, bytes, str]:
    """(count, dedup key or None, part, target analyzer id or "") of one log record.
    Raises struct.error or ValueError when `payload` is not one."""
    count, elen, plen = _HEAD.unpack_from(payload)
    pos = _HEAD.size
    key: Key | None = None
    if elen != _NO_KEY:
        if pos + elen + plen > len(payload):
            raise ValueError("dedup key runs past the end of the record")
        e = payload[pos : pos + elen].decode("utf-8", "surrogatepass")
        p = payload[pos + elen : pos + elen + plen].decode("utf-8", "surrogatepass")
        key = (e, p)
        pos += elen + plen
    target = ""
    if count & _HAS_TARGET:
        count &= ~_HAS_TARGET
        (tlen,) = _TLEN.unpack_from(payload, pos)
        pos += _TLEN.size
        if pos + tlen > len(payload):
            raise ValueError("analyzer id runs past the end of the record")
        target = payload[pos : pos + tlen].decode("utf-8", "surrogatepass")
        pos += tlen
    return count, key, payload[pos:], target


def wal_class() -> Any:
    """The Wal of the backend that core selected."""
    return core.Wal


class WalStore:
    """A Store (see store.py) over a write-ahead log in `path`, opened by `recover()`."""

    durability = "wal"
    noop = False
    keeps_packet_keys = True

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
        wal_cls: Any = None,
        adopt: Sequence[str | Path] = (),
    ) -> None:
        self.path = Path(path)
        # logs of a run with another --workers count, whose records this one takes over
        self._adopt = [Path(a) for a in adopt]
        self.adopted_messages = 0
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
        self._queue: list[tuple[Sequence[Part], Key | None, asyncio.Future[list[int]]]] = []
        # Recent dedup keys, oldest first. The distributor uses this very dict as its packet dedup
        # window (one copy of 100k keys, not two: about 16 MB less per process).
        self.window: OrderedDict[Key, None] = OrderedDict()
        self._unsaved: list[Key] = []  # appended since the keys file was last written
        self._saved = 0  # keys in the keys file
        self.dedup_window = dedup_window
        self._inflight = 0
        self._max_inflight = max_inflight
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False
        self.replayed_messages = 0
        self.replayed_parts = 0
        self.checkpoint_errors = 0
        self.undecodable_records = 0

    def _open(self) -> None:
        if self.wal is None:
            self.wal = (self._cls or wal_class())(self.path, **self._opts)

    def _load_keys(self, where: Path | None = None) -> None:
        try:
            raw = ((where or self.path) / KEYS_FILE).read_bytes()
        except FileNotFoundError:
            return
        if not raw.startswith(_KEYS_MAGIC):
            log.warning("write-ahead log: %s is unreadable; the dedup window starts empty", KEYS_FILE)
            return
        pos = len(_KEYS_MAGIC)
        try:
            while pos < len(raw):
                elen, plen = _KEY.unpack_from(raw, pos)
                pos += _KEY.size
                if pos + elen + plen > len(raw):
                    raise ValueError("cut short")
                e = raw[pos : pos + elen].decode("utf-8", "surrogatepass")
                p = raw[pos + elen : pos + elen + plen].decode("utf-8", "surrogatepass")
                pos += elen + plen
                self._remember((e, p))
                self._saved += 1
        except (struct.error, ValueError):  # UnicodeDecodeError is a ValueError
            log.warning("write-ahead log: %s is cut short; kept the keys before the cut", KEYS_FILE)
            self._saved = 2 * self.dedup_window  # rewrite it whole on the next save

    def _remember(self, key: Key) -> None:
        w = self.window
        w[key] = None
        w.move_to_end(key)
        while len(w) > self.dedup_window:
            w.popitem(last=False)

    def packet_keys(self) -> list[Key]:
        """A copy of `window`: the dedup keys of recent packets (oldest first); after recover(),
        those of the previous run too."""
        return list(self.window)

    async def _persist_keys(self) -> None:
        """Append the new keys to the keys file (rewrite it whole when it has grown to twice
        the window). Called before each checkpoint, which may delete the records holding them."""
        if not self._unsaved:
            return
        new, self._unsaved = self._unsaved, []
        try:
            if self._saved + len(new) > 2 * self.dedup_window:
                keys = list(self.window)
                await asyncio.to_thread(self._write_keys, keys, True)
                self._saved = len(keys)
            else:
                await asyncio.to_thread(self._write_keys, new, False)
                self._saved += len(new)
        except BaseException:
            self._unsaved[:0] = new  # written next time
            raise

    def _write_keys(self, keys: list[Key], rewrite: bool) -> None:
        dst = self.path / KEYS_FILE
        out = bytearray(_KEYS_MAGIC if rewrite or not dst.exists() else b"")
        for k in keys:
            e, p = k[0].encode("utf-8", "surrogatepass"), k[1].encode("utf-8", "surrogatepass")
            if len(e) < _NO_KEY and len(p) < _NO_KEY:
                out += _KEY.pack(len(e), len(p)) + e + p
        target = self.path / (KEYS_FILE + ".tmp") if rewrite else dst
        with open(target, "wb" if rewrite else "ab") as fh:
            fh.write(out)
            fh.flush()
            os.fsync(fh.fileno())
        if rewrite:
            os.replace(target, dst)

    def _take_over(self, src: Path) -> int:
        """Worker thread: copy the undelivered records of the log in `src` (left by a run with
        another --workers count) into this one, fsynced, then delete `src`. A crash half-way
        only means that some of them are delivered twice. Returns the messages taken over."""
        other = (self._cls or wal_class())(src, **self._opts)
        records = other.replay()
        payloads = [p for _, p in records]
        for i in range(0, len(payloads), 512):
            self.wal.append_many(payloads[i : i + 512])
        other.ack([lsn for lsn, _ in records])
        other.close()
        before = len(self.window)
        self._load_keys(src)
        self._unsaved.extend(list(self.window)[before:])
        shutil.rmtree(src)
        n = 0
        for p in payloads:
            with contextlib.suppress(struct.error, ValueError):
                n += decode_record(p)[0]
        return n

    async def recover(self) -> AsyncIterator[tuple[int, bytes, int, str]]:
        await asyncio.to_thread(self._open)
        await asyncio.to_thread(self._load_keys)
        if any(a.is_dir() for a in self._adopt):
            for src in self._adopt:
                if not src.is_dir():
                    continue
                try:
                    n = await asyncio.to_thread(self._take_over, src)
                except (OSError, ValueError) as exc:  # WalFullError too: the rest stays where it is
                    log.error("write-ahead log: could not take over %s (left in place): %s", src, exc)
                    continue
                self.adopted_messages += n
                log.warning("write-ahead log: took over %d undelivered messages from %s", n, src)
            # reopen, so that replay() covers what was just copied in
            await asyncio.to_thread(self.wal.close)
            self.wal = None
            await asyncio.to_thread(self._open)
        notes = self.wal.recovery_notes
        for note in notes:
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
                count, key, part, target = decode_record(payload)
            except (struct.error, ValueError) as exc:  # checksummed, so not torn: not ours
                log.error(
                    "write-ahead log: record %d (%d bytes) is not a logdist record, skipped: %s", lsn, len(payload), exc
                )
                bad.append(lsn)
                continue
            if key is not None:
                self._remember(key)
                self._unsaved.append(key)
            parts.append((lsn, part, count, target))
        del records
        self.undecodable_records += len(bad)
        if bad:
            self._delivered(bad)  # nothing can deliver them: do not let them pin their segment
        for lsn, part, count, target in parts:
            self._remaining[lsn] = count
            self.replayed_parts += 1
            self.replayed_messages += count
            yield lsn, part, count, target

    async def append(self, parts: Sequence[Part], packet_key: Key | None = None) -> list[int]:
        """Store.append; `packet_key` is the packet's (emitter_id, packet_id), kept in `window`."""
        if self.wal is None:  # used without recover(): open now
            await asyncio.to_thread(self._open)
        fut: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((parts, packet_key, fut))
        if self._inflight < self._max_inflight:
            self._flush_queue()
        return await fut

    def _flush_queue(self) -> None:
        batch, self._queue = self._queue, []
        self._inflight += 1
        t = asyncio.get_running_loop().create_task(self._write(batch), name="wal-append")
        self._flushes.add(t)
        t.add_done_callback(self._flushes.discard)

    async def _write(self, batch: list[tuple[Sequence[Part], Key | None, asyncio.Future[list[int]]]]) -> None:
        try:
            payloads = [rec for parts, key, _ in batch for rec in encode_parts(parts, key)]
            try:
                lsns: list[int] = await asyncio.to_thread(self.wal.append_many, payloads)
            except WalFullError:
                if self._acked_lsns:  # the full log waits on delivered records: free them now
                    self._delivered(())
                if len(batch) == 1:
                    raise
                # Together they do not fit; alone some may: give each request its own answer.
                for parts, key, fut in batch:
                    try:
                        mine = await asyncio.to_thread(self.wal.append_many, encode_parts(parts, key))
                    except Exception as exc:
                        if not fut.done():
                            fut.set_exception(exc)
                    else:
                        self._stored(parts, key, fut, mine)
                return
            i = 0
            for parts, key, fut in batch:
                self._stored(parts, key, fut, lsns[i : i + len(parts)])
                i += len(parts)
        except BaseException as exc:
            for _, _, fut in batch:
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

    def _stored(self, parts: Sequence[Part], key: Key | None, fut: asyncio.Future[list[int]], lsns: list[int]) -> None:
        if fut.cancelled():
            # Nobody will queue (or acknowledge to a client) these parts: do not let them
            # hold their segment forever. (A restart before the next checkpoint replays them.)
            self._delivered(lsns)
            return
        remaining = self._remaining
        for lsn, part in zip(lsns, parts, strict=True):
            remaining[lsn] = part[1]
        if key is not None:
            self._remember(key)
            self._unsaved.append(key)
        fut.set_result(lsns)

    def ack(self, token: int, count: int) -> None:
        left = self._remaining.get(token)
        if left is None:
            return
        left -= count
        if left > 0:
            self._remaining[token] = left
            return
        del self._remaining[token]
        self._delivered((token,))

    def ack_chunks(self, chunks: Iterable[Any]) -> None:
        """ack() for each chunk of a delivered batch; one hand-over of what is now done."""
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
        """Persist progress and drop delivered segments, at most once per interval. A failed
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
                deleted = await self.checkpoint()
            except OSError as exc:  # WalError: keep serving, and try again
                self.checkpoint_errors += 1
                self._acked_since_checkpoint += 1
                delay = min(max(delay * 2, 0.05), 5.0)
                log.error("write-ahead log checkpoint failed (retrying in %.2f s): %s", delay, exc)
                continue
            delay = self._interval
            if deleted:
                log.debug("write-ahead log: deleted %d delivered segments", deleted)

    async def checkpoint(self) -> int:
        """Hand the deliveries so far to the log, persist progress and delete delivered
        segments (in a worker thread); returns the number of segments deleted."""
        await self._persist_keys()  # first: the checkpoint may delete the records holding them
        acked, self._acked_lsns = self._acked_lsns, []
        return await asyncio.to_thread(self._ack_and_checkpoint, acked)

    def _ack_and_checkpoint(self, acked: list[int]) -> int:
        """Worker thread: record the deliveries, persist progress, drop delivered segments."""
        try:
            self.wal.ack(acked)
        except BaseException:
            self._acked_lsns[:0] = acked  # handed over by the next try
            raise
        return int(self.wal.checkpoint())

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
        }


def make_store(cfg: Any, adopt: Sequence[str | Path] = ()) -> WalStore | None:
    """The store for a DistributorConfig: a WalStore in <state_dir>/wal for durability "wal",
    None (the Distributor's MemoryStore) otherwise."""
    if cfg.durability != "wal":
        return None
    return WalStore(
        Path(cfg.state_dir) / "wal",
        dedup_window=cfg.dedup_window,
        max_bytes=cfg.wal_max_bytes,
        segment_bytes=min(cfg.wal_segment_bytes, cfg.wal_max_bytes),
        commit_delay_us=cfg.wal_commit_delay_us,
        checkpoint_interval=cfg.wal_checkpoint_ms / 1000.0,
        adopt=adopt,
    )
