"""The dead-letter store: batches an analyzer refused permanently (a 4xx other than 408/429).

One file per batch in `<state_dir>/dead-letters/`: a first line of JSON metadata (id,
analyzer, status, detail, count, time; for a piece that splitting a refused batch isolated,
also `splits` and `split_from`, the size of that batch) and then the batch body exactly as it
was sent (a JSON array). Files are written to a temporary name, fsynced, then renamed, so a
listed dead letter is always whole. Replay reads the body back and hands it to the distributor, which routes its
messages again; the file is removed only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any


class DeadLetterStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / "dead-letters"
        self._seq = itertools.count(1)
        self._meta: dict[str, dict[str, Any]] = {}
        self._loaded = False

    @property
    def messages(self) -> int:
        """Messages currently held in dead letters."""
        return sum(int(m.get("count", 0)) for m in self._meta.values())

    def __len__(self) -> int:
        return len(self._meta)

    def load(self) -> None:
        """Index what an earlier run left on disk (cheap: reads only the first line)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for p in sorted(self.dir.glob("*.dl")):
            try:
                with p.open("rb") as fh:
                    meta = json.loads(fh.readline())
                self._meta[str(meta["id"])] = meta
            except (OSError, ValueError, KeyError):
                continue
        self._loaded = True

    def _write(self, name: str, head: bytes, body: bytes) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / (name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(head)
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / (name + ".dl"))
        with contextlib.suppress(OSError):
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    async def put(
        self, body: bytes, count: int, analyzer: str, status: int, detail: str, *, splits: int = 0, split_from: int = 0
    ) -> str:
        dl_id = f"{time.time_ns():x}-{os.getpid():x}-{next(self._seq)}"
        meta: dict[str, Any] = {
            "id": dl_id,
            "analyzer": analyzer,
            "status": status,
            "detail": detail[:500],
            "count": count,
            "bytes": len(body),
            "time": time.time(),
        }
        if splits:
            meta["splits"] = splits
            meta["split_from"] = split_from
        head = json.dumps(meta, separators=(",", ":")).encode() + b"\n"
        await asyncio.to_thread(self._write, dl_id, head, body)
        self._meta[dl_id] = meta
        return dl_id

    def list(self) -> list[dict[str, Any]]:
        return sorted(self._meta.values(), key=lambda m: (m["time"], m["id"]))

    def _read_body(self, dl_id: str) -> bytes:
        with (self.dir / (dl_id + ".dl")).open("rb") as fh:
            fh.readline()
            return fh.read()

    async def read(self, dl_id: str) -> tuple[bytes, int]:
        meta = self._meta[dl_id]
        body = await asyncio.to_thread(self._read_body, dl_id)
        return body, int(meta["count"])

    def remove(self, dl_id: str) -> None:
        self._meta.pop(dl_id, None)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / (dl_id + ".dl")).unlink()
