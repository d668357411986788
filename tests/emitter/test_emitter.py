"""The emitter against a real distributor and real analyzers: the v0 emitter API, the
one-shot generator, retry with the same packet id, and failover across distributor URLs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from logdist.procs import free_port
from logdist.tools import cluster
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def connections_of(pid: int, port: int, seen: set[int]) -> int:
    """Adds the local ports of `pid`'s open TCP connections to 127.0.0.1:port to `seen` (from
    /proc), and returns how many distinct connections have been seen so far."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[9] in inodes and int(cols[2].split(":")[1], 16) == port:
                seen.add(int(cols[1].split(":")[1], 16))
    return len(seen)


def processed_total(analyzers: list[Any]) -> int:
    return sum(int(cluster.get(a.url + "/processed").doc["processed_count"]) for a in analyzers)


@pytest.fixture
def make_cluster(spawn, tmp_path: Path):  # type: ignore[no-untyped-def]
    """make_cluster(weights, strategy=None) -> (distributor Daemon, [analyzer Daemons])."""

    def make(
        weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1), strategy: str | None = None, dist_args: tuple[str, ...] = ()
    ) -> tuple[Any, list[Any]]:
        analyzers = [
            spawn("analyzer", "--id", f"a{i + 1}", "--port", "{port}", "--weight", str(w), "--record-ids", wait=False)
            for i, w in enumerate(weights)
        ]
        for a in analyzers:  # started together, waited for together
            a.wait_healthy()
        cfg = {
            "analyzers": [
                {"id": f"a{i + 1}", "weight": w, "endpoint": f"{a.url}/analyze", "timeout": 5000, "retry_count": 3}
                for i, (a, w) in enumerate(zip(analyzers, weights, strict=True))
            ]
        }
        path = tmp_path / f"distributor-{len(list(tmp_path.glob('distributor-*.json')))}.json"
        path.write_bytes(orjson.dumps(cfg))
        args = [
            "distributor",
            "--config",
            str(path),
            "--port",
            "{port}",
            "--state-dir",
            str(tmp_path / f"{path.stem}-state"),
        ]
        if strategy:
            args += ["--strategy", strategy]
        d = spawn(*args, *dist_args)
        return d, analyzers

    return make


def generate(*args: str, timeout: float = 90) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-m", "logdist", "generate", "--json", "-q", *args],
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode in (0, 1), r.stderr.decode()
    doc: dict[str, object] = orjson.loads(r.stdout)
    doc["returncode"] = r.returncode
    return doc


def all_ids(analyzers: list[object]) -> list[str]:
    out: list[str] = []
    for a in analyzers:
        out += cluster.get(a.url + "/ids").doc["ids"]  # type: ignore[attr-defined]
    return out


def test_server_generate_sends_250_and_stats(make_cluster, spawn) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(0.5, 0.5))
    e = spawn("emitter", "--port", "{port}", "--url", d.url)
    r = cluster.post(e.url + "/generate")
    assert r.status == 200, r.doc
    assert r.doc["generated"] == 250
    assert r.doc["acked"] == 250
    assert r.doc["packets"] == 5  # batch_size 50 x emitters_per_distributor 5
    wait_until(lambda: processed_total(analyzers) == 250, what="250 processed")
    ids = all_ids(analyzers)
    assert len(ids) == len(set(ids)) == 250
    s = cluster.get(e.url + "/stats").doc
    assert s["messages_acked"] == 250
    assert s["config"]["distributor_urls"] == [d.url + "/logs"]
    assert s["config"]["batch_size"] == 50
    assert cluster.get(e.url + "/health").doc["status"] == "ok"
    r = cluster.post(e.url + "/generate", {"count": 120})
    assert (r.doc["generated"], r.doc["acked"], r.doc["packets"]) == (120, 120, 3)
    wait_until(lambda: processed_total(analyzers) == 370, what="370 processed")


def test_server_start_stop_generates_at_rate(make_cluster, spawn, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(1.0,))
    cfg = tmp_path / "emitter.json"
    cfg.write_bytes(
        orjson.dumps(
            {
                "port": 1,
                "distributor_urls": [d.url + "/logs"],
                "batch_size": 20,
                "flush_interval": 100,
                "log_generation_rate": 400,
            }
        )
    )
    e = spawn("emitter", "--config", str(cfg), "--port", "{port}")
    assert cluster.post(e.url + "/start").doc == {"status": "started", "running": True, "rate": 400.0}
    wait_until(lambda: cluster.get(e.url + "/stats").doc["messages_acked"] >= 100, what="traffic")
    assert cluster.get(e.url + "/health").doc["running"] is True
    stopped = cluster.post(e.url + "/stop").doc
    assert stopped["running"] is False
    generated = stopped["generated"]
    wait_until(lambda: cluster.get(e.url + "/stats").doc["inflight"] == 0, what="in-flight packets to settle")
    s = cluster.get(e.url + "/stats").doc
    assert s["messages_acked"] == generated
    time.sleep(0.3)
    assert cluster.get(e.url + "/stats").doc["generated"] == generated  # really stopped
    wait_until(lambda: processed_total(analyzers) == generated, what="everything processed")


def test_server_rejects_bad_bodies(spawn) -> None:  # type: ignore[no-untyped-def]
    e = spawn("emitter", "--port", "{port}", "--url", f"http://127.0.0.1:{free_port()}")
    r = cluster.request("POST", e.url + "/start", raw=b"{nope")
    assert (r.status, r.doc["error"]) == (400, "bad_json")
    r = cluster.post(e.url + "/generate", {"count": -3})
    assert (r.status, r.doc["error"]) == (400, "bad_schema")
    assert cluster.get(e.url + "/health").status == 200


def test_oneshot_generate_counts_and_unique_ids(make_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(0.5, 0.5))
    acked = tmp_path / "acked.txt"
    s = generate("--url", d.url, "--count", "2000", "--rate", "0", "--batch", "100", "--acked-ids", str(acked))
    assert s["returncode"] == 0
    assert (s["sent"], s["acked"], s["rejected"], s["failed"], s["packets"]) == (2000, 2000, 0, 0, 20)
    wait_until(lambda: processed_total(analyzers) == 2000, what="2000 processed")
    ids = all_ids(analyzers)
    assert len(set(ids)) == 2000
    assert set(acked.read_text().split()) == set(ids)  # what was acknowledged is what was processed


def test_oneshot_duration_and_rate_flags_go_spelling(make_cluster) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(1.0,))
    s = generate("-url", d.url, "-rate", "500", "-batch", "25", "-duration", "1s")
    assert s["returncode"] == 0
    assert s["sent"] == s["acked"] == 500  # exactly rate x duration: pacing is by schedule, not by timer drift
    wait_until(lambda: processed_total(analyzers) == 500, what="500 processed")


def test_failover_from_a_closed_port_to_a_real_distributor(make_cluster) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(1.0,))
    dead = f"http://127.0.0.1:{free_port()}"
    s = generate("--url", dead, "--url", d.url, "--count", "1000", "--batch", "50", "--rate", "0")
    assert s["returncode"] == 0
    assert s["acked"] == 1000
    assert s["failovers"] >= 1
    wait_until(lambda: processed_total(analyzers) == 1000, what="1000 processed")
    assert len(set(all_ids(analyzers))) == 1000


def test_emitter_once_is_the_generator_with_config_urls(make_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(1.0,))
    cfg = tmp_path / "emitter.json"
    cfg.write_bytes(orjson.dumps({"distributor_urls": [f"http://127.0.0.1:{free_port()}", d.url]}))
    r = subprocess.run(
        [sys.executable, "-m", "logdist", "emitter", "--once", "--config", str(cfg), "--count", "300", "-q"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "acked    300" in r.stdout
    wait_until(lambda: processed_total(analyzers) == 300, what="300 processed")


def test_nothing_reachable_fails_with_status_1(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = generate("--url", f"http://127.0.0.1:{free_port()}", "--count", "10", "--give-up-after", "0.5")
    assert s["returncode"] == 1
    assert (s["acked"], s["failed"]) == (0, 10)
    assert s["retried"] >= 1


@pytest.mark.slow
def test_lost_response_is_retried_with_the_same_packet_id(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """The distributor is frozen (SIGSTOP): requests time out at the emitter but sit in the
    socket. After SIGCONT the distributor sees the packet more than once; because every retry
    carries the same packet_id, it routes it once and answers the others `duplicate`."""
    d, analyzers = make_cluster(weights=(1.0,))
    d.signal(signal.SIGSTOP)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logdist",
            "generate",
            "--json",
            "-q",
            "--url",
            d.url,
            "--count",
            "50",
            "--batch",
            "50",
            "--timeout",
            "0.3",
            "--give-up-after",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        # wait until a second connection shows the generator timed out once and tried again
        seen: set[int] = set()
        wait_until(lambda: connections_of(proc.pid, d.port, seen) >= 2, what="a retry on a new connection")
        d.signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=90)
    finally:
        d.signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    s = orjson.loads(out)
    assert proc.returncode == 0, err.decode()
    assert s["acked"] == s["sent"] == 50
    assert s["retried"] >= 1
    wait_until(lambda: processed_total(analyzers) == 50, what="50 processed")
    m = cluster.get(d.url + "/api/v1/metrics").doc
    assert m["totals"]["accepted"] == 50  # the packet was taken once
    assert m["totals"]["duplicate_packets"] >= 1  # ... and recognised when it came again
    time.sleep(0.5)
    assert processed_total(analyzers) == 50
    assert cluster.get(analyzers[0].url + "/processed").doc["duplicates"] == 0


@pytest.mark.slow
def test_429_with_retry_after_is_retried_until_accepted(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A distributor that is full answers 429 + Retry-After; the generator backs off and
    resends, and nothing is lost once the analyzers take work again."""
    d, analyzers = make_cluster(weights=(1.0,), dist_args=("--queue-size", "200"))
    cluster.post(analyzers[0].url + "/disable")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logdist",
            "generate",
            "--json",
            "-q",
            "--url",
            d.url,
            "--count",
            "1000",
            "--batch",
            "100",
            "--rate",
            "0",
            "--give-up-after",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        wait_until(lambda: cluster.get(d.url + "/api/v1/metrics").doc["totals"]["rejected"] > 0, what="a 429")
        cluster.post(analyzers[0].url + "/enable")
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    s = orjson.loads(out)
    assert proc.returncode == 0, err.decode()
    assert s["acked"] == 1000
    assert s["retried"] >= 1
    wait_until(lambda: processed_total(analyzers) == 1000, what="1000 processed")
    assert len(set(all_ids(analyzers))) == 1000


def test_ship_a_file_and_stdin(make_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(1.0,))
    log = tmp_path / "app.log"
    levels = ["INFO", "ERROR", "warning", "DEBUG", "plain"]
    log.write_text("".join(f"2026-01-01T00:00:00Z {levels[i % 5]} line {i}\n" for i in range(1000)) + "\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "logdist",
            "emitter",
            "--url",
            d.url,
            "--ship",
            str(log),
            "--batch",
            "100",
            "--json",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    s = orjson.loads(r.stdout)
    assert (s["lines"], s["acked"], s["packets"]) == (1000, 1000, 10)  # the blank line is skipped
    wait_until(lambda: processed_total(analyzers) == 1000, what="1000 processed")
    st = cluster.get(analyzers[0].url + "/stats").doc
    assert st["by_level"] == {"INFO": 400, "ERROR": 200, "WARN": 200, "DEBUG": 200}
    assert st["by_source"] == {"app.log": 1000}
    r = subprocess.run(
        [sys.executable, "-m", "logdist", "emitter", "--url", d.url, "--ship", "-", "--source", "pipe"],
        input="one\ntwo ERROR\nthree\n",
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "shipped 3 lines" in r.stdout
    wait_until(lambda: processed_total(analyzers) == 1003, what="1003 processed")


@pytest.mark.slow
def test_ship_follow_then_sigint_delivers_what_was_read(make_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = make_cluster(weights=(1.0,))
    log = tmp_path / "follow.log"
    log.write_text("first\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logdist",
            "emitter",
            "--url",
            d.url,
            "--ship",
            str(log),
            "--state-dir",
            str(tmp_path),
            "--follow",
            "--flush-ms",
            "50",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        wait_until(lambda: processed_total(analyzers) == 1, what="the first line")
        with log.open("a") as fh:
            fh.write("".join(f"more {i}\n" for i in range(50)))
        wait_until(lambda: processed_total(analyzers) == 51, what="the appended lines")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert orjson.loads(out)["acked"] == 51
