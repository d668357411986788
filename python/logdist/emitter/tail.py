"""Reading files the way Fluent Bit's tail input and Vector's file source do.

A `Tail` is one open file (one inode): it reads complete lines from its offset and knows each
line's byte range. Its identity is "<dev>:<ino>:<gen>:<fp>": device and inode, a generation
bumped when the file is truncated in place (copytruncate) or its inode was reused, and the hash
of its first line. A message id is that identity plus the line's offset, so the same line gets
the same id after a restart, and a different line never does.

The `Watcher` expands the paths and globs, and follows rotation:
- rename (logrotate's default, `create`): the path now names a new inode. The old file stays
  open and is read to its end; once it has been idle for `rotate_wait` seconds it is closed.
  The new file is read from 0.
- copytruncate: the file shrinks below the offset read. It is read again from 0, in a new
  generation. (Lines written between the last read and the truncation are only in the copy:
  copytruncate loses them for every reader.)
- a file rotated away while the shipper was down is found again by its inode in the same
  directory, and read to its end from its checkpoint.

Every method here blocks (file I/O): the shipper calls them off the event loop.
"""

from __future__ import annotations

import collections
import glob
import os
import stat
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from logdist.emitter.checkpoint import Entry, fingerprint

CHUNK = 1 << 16
#: a line longer than this is cut into pieces of this size
MAX_LINE = 1 << 20


@dataclass(frozen=True, slots=True)
class Line:
    offset: int  # where the line starts
    end: int  # where the next one starts
    data: bytes  # without the newline


@dataclass(slots=True)
class Inflight:
    """A sent packet of one source, not yet acknowledged."""

    gen: int
    end: int
    done: bool = False


class Source:
    """What the shipper reads lines from: a file (`Tail`) or stdin (`StdinSource`)."""

    path: str
    key: str
    checkpointed: bool
    at_eof: bool
    closed: bool
    gen: int
    committed: int

    def __init__(self) -> None:
        self.pending: list[Line] = []
        self.pending_since = 0.0
        self.pending_gen = 0
        self.pending_fid = ""
        self.inflight: collections.deque[Inflight] = collections.deque()
        self.lock = threading.Lock()

    @property
    def file_id(self) -> str:
        raise NotImplementedError

    def read(self, max_lines: int, final: bool) -> list[Line]:
        raise NotImplementedError

    def ack(self, packet: Inflight) -> bool:
        """Marks a packet done; advances `committed` over the packets done in order. True when
        the committed offset moved."""
        packet.done = True
        moved = False
        with self.lock:  # gen and committed change together (a truncation, in the reader)
            while self.inflight and self.inflight[0].done:
                p = self.inflight.popleft()
                if p.gen == self.gen and p.end > self.committed:
                    self.committed = p.end
                    moved = True
        return moved


class Tail(Source):
    checkpointed = True
    fp: str | None

    def __init__(self, path: str, fd: int, st: os.stat_result, entry: Entry | None, follow: bool) -> None:
        super().__init__()
        self.path = path
        self.fd = fd
        self.dev, self.ino = st.st_dev, st.st_ino
        self.key = f"{self.dev}:{self.ino}"
        self.gen, self.fp, self.pos = 0, None, 0
        self.resumed_at = 0
        if entry is not None:
            fp_now = fingerprint(fd, whole=not follow)
            if entry.fp is None or (fp_now == entry.fp and st.st_size >= entry.offset):
                self.gen, self.fp, self.pos = entry.gen, entry.fp, entry.offset
                self.resumed_at = entry.offset
            else:  # truncated or rewritten while we were away, or another file on a reused inode
                self.gen = entry.gen + 1
        self.committed = self.pos
        self.buf = b""
        self.at_eof = False
        self.closed = False
        self.rotated_at: float | None = None
        self.truncations = 0

    @property
    def file_id(self) -> str:
        return f"{self.dev}:{self.ino}:{self.gen}:{self.fp}"

    def entry(self) -> Entry:
        with self.lock:
            return Entry(os.path.abspath(self.path), self.dev, self.ino, self.gen, self.fp, self.committed)

    def _check_truncated(self) -> None:
        if self.closed or os.fstat(self.fd).st_size >= self.pos:
            return
        with self.lock:
            self.gen += 1
            self.truncations += 1
            self.pos, self.committed, self.fp, self.buf = 0, 0, None, b""

    def read(self, max_lines: int, final: bool) -> list[Line]:
        """Complete lines from the offset on (about `max_lines`; a whole chunk's lines are
        returned). `final`: the file will not grow, so a last line without newline counts."""
        if self.closed:
            return []
        self._check_truncated()
        out: list[Line] = []
        while len(out) < max_lines:
            if self.fp is None:
                self.fp = fingerprint(self.fd, whole=final)
                if self.fp is None:  # no first line yet: nothing to read
                    self.at_eof = True
                    break
            data = os.pread(self.fd, CHUNK, self.pos)
            if not data:
                if final and self.buf:
                    out.append(Line(self.pos - len(self.buf), self.pos, self.buf))
                    self.buf = b""
                self.at_eof = True
                break
            self.at_eof = False
            base = self.pos - len(self.buf)
            self.pos += len(data)
            buf = self.buf + data
            last = buf.rfind(b"\n")
            if last < 0:
                self.buf = buf
                if len(buf) >= MAX_LINE:
                    out.append(Line(base, self.pos, buf))
                    self.buf = b""
                continue
            self.buf = buf[last + 1 :]
            off = base
            for piece in buf[:last].split(b"\n"):
                end = off + len(piece) + 1
                if piece.strip():
                    out.append(Line(off, end, piece))
                off = end
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


class StdinSource(Source):
    """stdin, read by a thread (a pipe blocks). No checkpoint: ids are a random prefix and a
    sequence number."""

    checkpointed = False

    def __init__(self, stream: BinaryIO | None = None) -> None:
        super().__init__()
        self.path = "-"
        self.key = "stdin"
        self.gen = 0
        self.committed = 0
        self.at_eof = False
        self.closed = False
        self._prefix = os.urandom(6).hex()
        self._lines: collections.deque[bytes] = collections.deque()
        self._done = threading.Event()
        self._seq = 0
        self._stream = stream if stream is not None else sys.stdin.buffer
        threading.Thread(target=self._run, daemon=True, name="stdin").start()

    @property
    def file_id(self) -> str:
        return self._prefix

    def _run(self) -> None:
        try:
            for line in self._stream:
                self._lines.append(line)
        finally:
            self._done.set()

    def read(self, max_lines: int, final: bool) -> list[Line]:
        done = self._done.is_set()  # read before draining: no line is left behind
        out: list[Line] = []
        while self._lines and len(out) < max_lines:
            data = self._lines.popleft().rstrip(b"\r\n")
            if data.strip():
                out.append(Line(self._seq, self._seq + 1, data))
                self._seq += 1
        self.at_eof = done and not self._lines
        return out


def expand(patterns: Iterable[str]) -> list[str]:
    """The regular files the paths and globs name, in order, each once."""
    out: dict[str, None] = {}
    for p in patterns:
        for path in sorted(glob.glob(p)) if glob.has_magic(p) else [p]:
            out.setdefault(path, None)
    return list(out)


class Watcher:
    """The set of open files, kept in step with the paths and globs."""

    def __init__(self, patterns: list[str], entries: dict[str, Entry], follow: bool, rotate_wait_s: float) -> None:
        self.patterns = patterns
        self.entries = entries  # checkpoints of files not open now
        self.follow = follow
        self.rotate_wait_s = rotate_wait_s
        self.tails: dict[str, Tail] = {}
        self.rotations = 0

    def _open(self, path: str, entry_key: str | None = None) -> Tail | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        st = os.fstat(fd)
        key = f"{st.st_dev}:{st.st_ino}"
        if not stat.S_ISREG(st.st_mode) or key in self.tails or (entry_key is not None and key != entry_key):
            os.close(fd)  # not a file, already open under another name, or replaced meanwhile
            return None
        t = Tail(path, fd, st, self.entries.pop(key, None), self.follow)
        self.tails[key] = t
        return t

    def scan(self) -> None:
        """Opens the files the patterns name now; a file no longer named is rotated away."""
        now = time.monotonic()
        named: set[str] = set()
        for path in expand(self.patterns):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            key = f"{st.st_dev}:{st.st_ino}"
            t = self.tails.get(key)
            if t is None or t.closed:
                if t is not None:  # closed but not yet fully acknowledged: a new inode is not it
                    continue
                t = self._open(path)
                if t is None:
                    continue
                key = t.key
            t.path = path
            t.rotated_at = None
            named.add(key)
        for t in self.tails.values():
            if t.key not in named and t.rotated_at is None and not t.closed:
                t.rotated_at = now
                self.rotations += 1
        self._find_rotated(named)

    def _find_rotated(self, named: set[str]) -> None:
        """Checkpointed files not named by the patterns: read to the end the ones still in their
        directory that grew past their checkpoint (rotated while we were away); forget the ones
        that are gone."""
        by_dir: dict[str, list[Entry]] = {}
        for e in self.entries.values():
            by_dir.setdefault(os.path.dirname(e.path) or ".", []).append(e)
        for d, entries in by_dir.items():
            found: dict[str, tuple[str, int]] = {}
            try:
                dev = os.stat(d).st_dev
                with os.scandir(d) as it:
                    for de in it:
                        if de.is_file(follow_symlinks=False):
                            found[f"{dev}:{de.inode()}"] = (de.path, de.stat(follow_symlinks=False).st_size)
            except OSError:
                pass
            for e in entries:
                hit = found.get(e.key)
                if hit is None:
                    del self.entries[e.key]  # deleted (or on another device): nothing left to read
                elif e.key not in named and hit[1] > e.offset:
                    t = self._open(hit[0], e.key)
                    if t is not None:
                        t.rotated_at = time.monotonic()

    @property
    def sources(self) -> list[Source]:
        return list(self.tails.values())

    def read(self, budget: int) -> list[tuple[Source, str, int, list[Line]]]:
        """Lines from every open file (about `budget` in all); closes a rotated file once it has
        been at its end for rotate_wait, and every file at its end without --follow."""
        out: list[tuple[Source, str, int, list[Line]]] = []
        now = time.monotonic()
        for t in list(self.tails.values()):
            if t.closed:
                continue
            final = not self.follow or (t.rotated_at is not None and now - t.rotated_at >= self.rotate_wait_s)
            lines = t.read(max(1, budget), final)
            budget -= len(lines)
            if lines:
                out.append((t, t.file_id, t.gen, lines))
            if final and t.at_eof:
                t.close()
        return out

    def forget_done(self) -> None:
        """Closed files whose packets were all acknowledged leave the set; their checkpoint
        stays (until the file is gone)."""
        for key, t in list(self.tails.items()):
            if t.closed and not t.inflight and not t.pending:
                t.committed = max(t.committed, t.pos - len(t.buf))  # what is left is blank lines
                self.entries[key] = t.entry()
                del self.tails[key]

    def snapshot(self) -> list[Entry]:
        return [*self.entries.values(), *(t.entry() for t in self.tails.values())]

    @property
    def finished(self) -> bool:
        return all(t.closed for t in self.tails.values())

    def close(self) -> None:
        for t in self.tails.values():
            t.close()


class StdinWatcher:
    """The Watcher's interface over stdin alone."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.src = StdinSource(stream)
        self.rotations = 0

    @property
    def sources(self) -> list[Source]:
        return [self.src]

    def scan(self) -> None:
        pass

    def read(self, budget: int) -> list[tuple[Source, str, int, list[Line]]]:
        lines = self.src.read(max(1, budget), True)
        if self.src.at_eof:
            self.src.closed = True
        return [(self.src, self.src.file_id, 0, lines)] if lines else []

    def forget_done(self) -> None:
        pass

    def snapshot(self) -> list[Entry]:
        return []

    @property
    def finished(self) -> bool:
        return self.src.closed

    def close(self) -> None:
        pass
