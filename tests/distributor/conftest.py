"""Helpers for the distributor tests: a real cluster (analyzers + distributor processes), a
load generator thread that records every message id that got a 2xx, and zero-loss checks."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from waiting import wait_until

Daemon = Any  # tests/conftest.py's Daemon (a conftest module cannot be imported by name)


def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any, dict[str, str]]:
    """One request; returns (status, decoded JSON or text, headers)."""
    p = urlsplit(url)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if not data and method in ("POST", "PUT", "PATCH", "DELETE"):
            hdrs.setdefault("Content-Type", "application/json")  # admin requests must say JSON
        conn.request(method, p.path + (f"?{p.query}" if p.query else ""), body=data, headers=hdrs)
        r = conn.getresponse()
        raw = r.read()
        try:
            doc: Any = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode("utf-8", "replace")
        return r.status, doc, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def get(url: str) -> Any:
    status, doc, _ = call("GET", url)
    assert status == 200, (url, status, doc)
    return doc


def packet(ids: list[str], emitter: str = "t", pid: str | None = None) -> dict[str, Any]:
    msgs = [{"id": i, "level": "INFO", "source": "test", "message": f"m {i}", "metadata": {"k": "v"}} for i in ids]
    out: dict[str, Any] = {"emitter_id": emitter, "messages": msgs}
    if pid is not None:
        out["packet_id"] = pid
    return out


@dataclass
class Load:
    """Sends packets of unique message ids from a thread until stopped (or `total` is reached).

    Transient answers (429, 503, connection errors) are retried with the same packet id, like
    a real emitter. `accepted` holds every id that got a 2xx; `rejected` counts 429s seen."""

    url: str
    tag: str
    packet_size: int = 100
    total: int | None = None
    pause: float = 0.0
    give_up_after: float = 60.0
    accepted: list[str] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _seq: int = 0

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)
        return self

    def wait(self, timeout: float = 90.0) -> Load:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "load did not finish"
        return self

    @property
    def count(self) -> int:
        return len(self.accepted)

    def reach(self, n: int, timeout: float, what: str) -> None:
        """Wait until `n` messages were accepted; a timeout names what the sender last saw."""
        try:
            wait_until(lambda: self.count >= n, timeout, what)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}: {self.count} accepted, {self.rejected} answers 429/503, "
                f"{len(self.errors)} errors, last {self.errors[-3:]}"
            ) from None

    def _run(self) -> None:
        p = urlsplit(self.url)
        conn: http.client.HTTPConnection | None = None
        n = 0
        while not self._stop.is_set() and (self.total is None or n < self.total):
            size = self.packet_size if self.total is None else min(self.packet_size, self.total - n)
            ids = [f"{self.tag}-{self._seq + i}" for i in range(size)]
            pid = f"{self.tag}-p{self._seq}"
            self._seq += size
            body = json.dumps(packet(ids, self.tag, pid)).encode()
            deadline = time.monotonic() + self.give_up_after
            while time.monotonic() < deadline and not self._stop.is_set():
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
                    conn.request("POST", p.path, body=body, headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                except (OSError, http.client.HTTPException) as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    self.errors.append(repr(exc))
                    time.sleep(0.05)
                    continue
                if 200 <= r.status < 300:
                    self.accepted.extend(ids)
                    break
                if r.status in (429, 503):
                    self.rejected += 1
                    time.sleep(0.05)
                    continue
                self.errors.append(f"HTTP {r.status}")
                break
            n += size
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()


@dataclass
class Cluster:
    spawn: Callable[..., Daemon]
    tmp: Path
    analyzers: dict[str, Daemon] = field(default_factory=dict)
    dist: Daemon | None = None
    config_path: Path | None = None
    loads: list[Load] = field(default_factory=list)

    def analyzer(self, aid: str, *extra: str, port: int | None = None) -> Daemon:
        d = self.spawn("analyzer", "--id", aid, "--port", "{port}", "--record-ids", *extra, port=port)
        self.analyzers[aid] = d
        return d

    def write_config(self, weights: dict[str, float], **kw: Any) -> Path:
        cfg: dict[str, Any] = {
            "analyzers": [
                {"id": aid, "url": self.analyzers[aid].url, "weight": w, "timeout": 2000, "retry_count": 3}
                for aid, w in weights.items()
            ],
            "state_dir": str(self.tmp / "state"),
            "health_interval_ms": 200,
            "health_timeout_ms": 500,
            "retry_base_ms": 20,
            "retry_cap_ms": 300,
            "eject_after": 3,
        }
        cfg.update(kw)
        self.config_path = self.tmp / "distributor.json"
        self.config_path.write_text(json.dumps(cfg))
        return self.config_path

    def distributor(self, weights: dict[str, float], *extra: str, **kw: Any) -> Daemon:
        path = self.write_config(weights, **kw)
        self.dist = self.spawn("distributor", "--config", str(path), "--port", "{port}", *extra)
        return self.dist

    @property
    def url(self) -> str:
        assert self.dist is not None
        return self.dist.url

    def metrics(self) -> dict[str, Any]:
        return get(self.url + "/api/v1/metrics")  # type: ignore[no-any-return]

    def row(self, aid: str) -> dict[str, Any]:
        return next(r for r in self.metrics()["analyzers"] if r["id"] == aid)

    def drained(self, timeout: float = 60.0) -> None:
        wait_until(lambda: get(self.url + "/queue")["size"] == 0, timeout, "the distributor queue to drain")

    def ids(self, aid: str) -> list[str]:
        return get(self.analyzers[aid].url + "/ids")["ids"]  # type: ignore[no-any-return]

    def load(self, tag: str, **kw: Any) -> Load:
        ld = Load(self.url + "/logs", tag, **kw)
        self.loads.append(ld)
        return ld


@pytest.fixture
def cluster(spawn: Callable[..., Daemon], tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(spawn, tmp_path)
    yield c
    for ld in c.loads:  # a test that failed half-way leaves no sender thread behind
        ld._stop.set()
    for ld in c.loads:
        if ld._thread is not None:
            ld._thread.join(5)


def assert_zero_loss(accepted: list[str], per_analyzer: dict[str, list[str]], allow_dupes: bool = False) -> None:
    """Every id that got a 2xx reached an analyzer; none reached two (unless allowed)."""
    acc = set(accepted)
    assert len(acc) == len(accepted), "the load generator sent a duplicate id"
    union: set[str] = set()
    total = 0
    for ids in per_analyzer.values():
        union.update(ids)
        total += len(ids)
    missing = acc - union
    assert not missing, f"{len(missing)} accepted messages were lost, e.g. {sorted(missing)[:5]}"
    if not allow_dupes:
        assert total == len(union), f"{total - len(union)} messages reached two analyzers"
