"""What a graceful stop could not deliver: kept in `<state_dir>/leftover/`, sent on the next start.

In `memory` mode accepted messages live only in the queues. On a graceful stop the engine
writes everything it holds to this run's leftover file as the stop begins (so a second
SIGTERM, which forces exit during the drain, loses nothing accepted), delivers what it can
within the grace period, and then replaces the file with what is still undelivered, or removes
it when everything was delivered. Messages delivered between the two writes may be delivered
again after a forced exit: at least once, and the analyzers deduplicate by message id.

The next start hands the parts back to the engine (and in `wal` mode to the write-ahead log
first) before ingest opens, and deletes each file once its parts are handed over. A file is
written to a temporary name, fsynced and renamed, and the directory fsynced, so a listed file
is whole; a `.tmp` file is a write that never finished, and was superseded by nothing (the
first write) or by the whole file it was to replace. The format is in walrecord.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from logdist.distributor.walrecord import LeftoverFileError, Part, decode_leftover, encode_leftover

log = logging.getLogger("logdist.distributor")

SUFFIX = ".left"


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class LeftoverStore:
    """This run's leftover file, and those earlier runs left. Its methods do file I/O: call
    them from a worker thread."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / "leftover"
        # named by start time, so files load oldest first
        self.path = self.dir / f"{time.time_ns():020x}-{os.getpid():x}{SUFFIX}"

    def save(self, parts: Sequence[Part]) -> None:
        """Write (or atomically replace) this run's file with `parts`; with none, remove it."""
        if not parts:
            self.discard()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(encode_leftover(parts))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.dir)

    def discard(self) -> None:
        """Remove this run's file (everything was delivered)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            _fsync_dir(self.dir)

    def load(self) -> list[tuple[Path, list[tuple[bytes, int, str]]]]:
        """The files earlier runs left, oldest first, each with its parts (messages joined by
        b",", count, target analyzer id or ""). A damaged file gives the parts before the
        damage, and is kept beside as `.damaged` for an operator; unfinished writes are
        removed."""
        if not self.dir.is_dir():
            return []
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        out = []
        for p in sorted(self.dir.glob("*" + SUFFIX)):
            if p == self.path:
                continue
            try:
                parts = decode_leftover(p.read_bytes())
            except LeftoverFileError as exc:
                kept = sum(c for _, c, _ in exc.parts)
                log.error("leftover file %s: %s; sending the %d messages before it", p, exc, kept)
                parts = exc.parts
                damaged = p.with_suffix(".damaged")
                p.replace(damaged)
                p = damaged
            out.append((p, parts))
        return out

    @staticmethod
    def remove(path: Path) -> None:
        """Remove a loaded file once its parts are handed over (a damaged one stays)."""
        if path.suffix == SUFFIX:
            path.unlink(missing_ok=True)
            _fsync_dir(path.parent)


def take_over_leftovers(src_state: Path, dst_state: Path) -> int:
    """Move the leftover files of another state dir (a run with another --workers count) into
    ours, so they are sent by this process."""
    src, dst = src_state / "leftover", dst_state / "leftover"
    if not src.is_dir() or src == dst:
        return 0
    dst.mkdir(parents=True, exist_ok=True)
    moved = 0
    for f in sorted(src.glob("*" + SUFFIX)):
        f.rename(dst / f"{f.stem}-{src_state.name}{SUFFIX}")
        moved += 1
    if moved:
        _fsync_dir(dst)
        log.warning("took over %d leftover files from %s", moved, src)
    return moved
