"""The shipper's checkpoints: how far each file has been acknowledged, kept in a state file.

One entry per file, keyed by "<dev>:<ino>": its last path, device and inode, a generation
(bumped when the file is truncated in place or its inode is reused by another file), the
fingerprint of its first line, and the offset up to which every line was acknowledged. The
state file is JSON, replaced atomically: write a temporary file, fsync it, rename it over the
old one, fsync the directory. A crash leaves the old or the new state, never a mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from logdist.errors import ConfigError

VERSION = 1
#: the fingerprint covers the first line, at most this many bytes of it
FP_MAX = 256


@dataclass
class Entry:
    path: str
    dev: int
    ino: int
    gen: int
    fp: str | None  # None until the file has a first line (or FP_MAX bytes)
    offset: int  # every line that ends at or before it was acknowledged

    @property
    def key(self) -> str:
        return f"{self.dev}:{self.ino}"


def fingerprint(fd: int, whole: bool = False) -> str | None:
    """The first line's hash (at most FP_MAX bytes of it), or None while the file has no
    complete first line. `whole`: a file that will not grow (no --follow) is taken as is."""
    data = os.pread(fd, FP_MAX, 0)
    nl = data.find(b"\n")
    if nl >= 0:
        data = data[: nl + 1]
    elif len(data) < FP_MAX and not (whole and data):
        return None
    return hashlib.blake2b(data, digest_size=4).hexdigest()


def default_state_file(state_dir: str, patterns: list[str]) -> Path:
    """<state_dir>/ship-<hash of the absolute patterns>.json: one state per set of inputs."""
    key = "\n".join(sorted(os.path.abspath(p) for p in patterns)).encode()
    return Path(state_dir) / f"ship-{hashlib.blake2b(key, digest_size=6).hexdigest()}.json"


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Entry] = {}

    def load(self) -> dict[str, Entry]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError("state_file", f"cannot read {self.path}: {exc}") from None
        try:
            doc = orjson.loads(raw)
            files = doc["files"] if doc.get("version") == VERSION else None
            if not isinstance(files, list):
                raise ValueError("no 'files' list of version 1")
            entries = [Entry(**f) for f in files]
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError("state_file", f"{self.path} is not a shipper state file: {exc}") from None
        self.entries = {e.key: e for e in entries}
        return dict(self.entries)

    def save(self, entries: list[Entry]) -> None:
        """Atomic replace (blocking: run it off the event loop)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = orjson.dumps({"version": VERSION, "files": [asdict(e) for e in entries]}, option=orjson.OPT_INDENT_2)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
                os.fsync(dfd)
        finally:
            os.close(dfd)
