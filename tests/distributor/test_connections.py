"""Connection bounds against a real distributor (issue 11, point 8): slowloris heads, slow
bodies and idle kept-alive connections are closed by their timeouts; past max_connections a
new client gets a clean JSON 503 and /health still answers; under a low RLIMIT_NOFILE a flood
of connections is refused, never met by running out of file descriptors. After each attack,
ingest works and nothing accepted is lost. Tests assert what happens, never how fast.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster, assert_zero_loss, call, get, packet, wait_until

# small timeouts, so that the test waits seconds, not minutes
FAST = {"header_timeout_s": 1, "body_timeout_s": 2, "keepalive_timeout_s": 1}


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setblocking(False)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed the connection (EOF or a reset), reading whatever it sent."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    return False


def read_answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int, Any, dict[str, str]]:
    """One HTTP answer on a socket: (status, JSON or text, headers)."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    r = http.client.HTTPResponse(sock)
    r.begin()
    raw = r.read()
    try:
        doc: Any = json.loads(raw)
    except ValueError:
        doc = raw.decode("utf-8", "replace")
    return r.status, doc, {k.lower(): v for k, v in r.getheaders()}


def totals(url: str) -> dict[str, Any]:
    return get(url + "/api/v1/metrics")["totals"]  # type: ignore[no-any-return]


def ingest_works(cluster: Cluster, tag: str, url: str | None = None) -> None:
    """A packet sent after the attack is accepted (retried while the bound is still reached)
    and delivered: nothing lost."""
    url = url or cluster.url
    ids = [f"{tag}-{i}" for i in range(5)]
    wait_until(lambda: call("POST", url + "/logs", packet(ids, tag, tag))[0] == 200, 30, "ingest to accept")
    wait_until(lambda: get(url + "/queue")["size"] == 0, 60, "the distributor queue to drain")
    assert_zero_loss(ids, {aid: cluster.ids(aid) for aid in cluster.analyzers})


@contextlib.contextmanager
def held(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for s in socks:
            s.close()


def test_slowloris_heads_are_closed(cluster: Cluster) -> None:
    """30 connections sending their request head one byte a second are all closed by
    header_timeout_s (1 s here), though every one keeps sending."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0}, **FAST)
    head = b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"X-Pad: " + b"a" * 200
    with held([connect(cluster.url) for _ in range(30)]) as socks:
        open_ = {s: 0 for s in socks}
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            for s in list(open_):
                if closed_by_peer(s):
                    del open_[s]
                    continue
                try:
                    s.send(head[open_[s] : open_[s] + 1])
                    open_[s] += 1
                except OSError:  # closed meanwhile
                    del open_[s]
            time.sleep(1.0)
        assert not open_, f"{len(open_)} of 30 slowloris connections are still open"
    assert totals(cluster.url)["connections_timed_out_header"] >= 30
    ingest_works(cluster, "after-slowloris")


def test_idle_connections_are_closed(cluster: Cluster) -> None:
    """Connections that send nothing (header_timeout_s), and kept-alive ones idle after an
    answer (keepalive_timeout_s), are closed."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0}, **FAST)
    with held([connect(cluster.url) for _ in range(20)]) as silent, held([]) as kept:
        for _ in range(20):
            s = connect(cluster.url)
            kept.append(s)
            s.setblocking(True)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, hdrs = read_answer(s)
            assert status == 200 and hdrs.get("connection", "").lower() != "close"
            s.setblocking(False)
        wait_until(lambda: all(closed_by_peer(s) for s in silent + kept), 60, "idle connections to be closed")
    t = totals(cluster.url)
    assert t["connections_timed_out_header"] >= 20
    assert t["connections_timed_out_idle"] >= 20
    ingest_works(cluster, "after-idle")


def test_a_body_that_does_not_arrive_is_a_408(cluster: Cluster) -> None:
    """A body sent in part and then stalled is answered 408 body_timeout (JSON), the
    connection is closed, and the 408 is counted by status."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0}, **FAST)
    with held([connect(cluster.url)]) as (s,):
        s.setblocking(True)
        s.sendall(b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{")
        status, doc, hdrs = read_answer(s, timeout=60)
        assert status == 408 and doc["error"] == "body_timeout" and doc["detail"], doc
        assert hdrs["content-type"].startswith("application/json")
        assert hdrs.get("connection", "").lower() == "close"
        s.setblocking(False)
        wait_until(lambda: closed_by_peer(s), 30, "the connection to be closed after the 408")
    m = get(cluster.url + "/api/v1/metrics")
    assert m["rejected_by_status"].get("408", 0) >= 1
    assert m["totals"]["connections_timed_out_body"] >= 1
    ingest_works(cluster, "after-slow-body")


def test_past_max_connections_a_clean_503_and_health_answers(cluster: Cluster) -> None:
    """With max_connections 20, 20 connections held and 2 more open, a new client's request is
    answered a JSON 503 with Retry-After (not a reset: it lands on a spare slot, which reads its
    request), GET /health still answers 200, and once the holders go, ingest works again."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0}, max_connections=20, header_timeout_s=60, keepalive_timeout_s=60)
    with held([]) as holders, held([]) as extra:
        for _ in range(20):  # each one answered once: it holds one of the 20 slots
            s = connect(cluster.url)
            holders.append(s)
            s.setblocking(True)
            s.sendall(b"GET /queue HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(s)[0] == 200
        extra += [connect(cluster.url) for _ in range(2)]  # silent: two of the 4 spare slots
        for _ in range(3):
            status, doc, hdrs = call("POST", cluster.url + "/logs", packet(["x1"], "x", "x"))
            assert status == 503 and doc["error"] == "too_many_connections" and doc["detail"], doc
            assert hdrs["content-type"].startswith("application/json") and hdrs["retry-after"] == "1"
        status, doc, _ = call("GET", cluster.url + "/health")
        assert status == 200 and doc["status"] == "ok", doc
        # a held connection is still served
        holders[0].sendall(b"GET /api/v1/metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, doc, _ = read_answer(holders[0])
        assert status == 200
        assert doc["totals"]["connections_refused"] >= 1
        assert doc["totals"]["connections_max"] == 20
    ingest_works(cluster, "after-bound")


def _low_fd_distributor(cluster: Cluster, nofile: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The distributor under RLIMIT_NOFILE `nofile` (soft and hard), started here (spawn
    cannot set a limit), with the default max_connections (1024)."""
    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    path = cluster.write_config({"a1": 1.0}, header_timeout_s=30, keepalive_timeout_s=30)
    log = cluster.tmp / "distributor-lowfd.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "logdist", "distributor", "--config", str(path), "--port", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, preexec_fn=limit,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None or call("GET", url + "/health", timeout=2)[0] == 200, 30,
                   "the distributor to answer /health")  # fmt: skip
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc, url, log


def test_more_connections_than_fds_are_refused_not_reset(cluster: Cluster) -> None:
    """Under RLIMIT_NOFILE 256, 400 connections held open: the distributor lowers its bound to
    fit, answers a new client a JSON 503 (never a reset from EMFILE), keeps /health
    answering, does not crash, and takes traffic once the flood goes."""
    cluster.analyzer("a1")
    proc, url, log = _low_fd_distributor(cluster, 256)
    try:
        with held([]) as flood:
            for _ in range(400):
                flood.append(connect(url))
                # a request head begun, never finished: each holds a slot until header_timeout_s
                flood[-1].send(b"GET /health HTTP/1.1\r\n")
            # /health: on a spare slot, once the flood's own spare connections timed out of theirs
            wait_until(lambda: call("GET", url + "/health", timeout=5)[0] == 200, 60, "/health at the bound")
            for _ in range(3):  # new clients: a JSON 503 on a spare slot
                status, doc, hdrs = call("POST", url + "/logs", b"[]", {"Content-Type": "application/json"})
                assert status == 503 and doc["error"] == "too_many_connections", doc
                assert hdrs["retry-after"] == "1"
            assert proc.poll() is None
        text = log.read_text()
        assert "Too many open files" not in text and "EMFILE" not in text, text[-3000:]
        assert "max_connections 1024 lowered to" in text
        ingest_works(cluster, "after-fd-flood", url)
        t = totals(url)
        assert t["connections_refused"] >= 3
        assert t["connections_max"] < 256
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_workers_apply_the_bounds_per_process(cluster: Cluster) -> None:
    """--workers 2: each worker closes slowloris heads on its own; figures add up."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0}, "--workers", "2", **FAST)
    with held([connect(cluster.url) for _ in range(10)]) as socks:
        for s in socks:
            s.send(b"GET /he")
        wait_until(lambda: all(closed_by_peer(s) for s in socks), 60, "slowloris heads to be closed")
    wait_until(lambda: totals(cluster.url)["connections_timed_out_header"] >= 10, 30, "the workers' figures")
    ingest_works(cluster, "after-workers")
