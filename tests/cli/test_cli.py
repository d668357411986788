"""The `logdist` command: wiring, clear errors, `up`, and the cluster commands against real
processes (`generate`, `verify-weights`, `status`)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from logdist.procs import free_port
from logdist.tools import cluster
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def logdist(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logdist", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


# --- wiring and errors ------------------------------------------------------------------------


def test_version_and_help() -> None:
    r = logdist("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("logdist ")
    r = logdist("--help")
    assert r.returncode == 0
    for cmd in ("distributor", "analyzer", "emitter", "generate", "verify-weights", "status", "up"):
        assert cmd in r.stdout
    r = logdist()
    assert r.returncode == 2
    assert "COMMAND" in r.stderr


def test_every_command_has_help() -> None:
    cmds = ("distributor", "analyzer", "emitter", "generate", "verify-weights", "status", "up", "dlq")
    procs = {
        cmd: subprocess.Popen(
            [sys.executable, "-m", "logdist", cmd, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for cmd in cmds
    }
    for cmd, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (cmd, err)
        assert "usage: logdist " + cmd in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nope"], "invalid choice"),
        (["analyzer", "--dedup-window", "1"], "dedup-window"),
        (["analyzer", "--port", "70000"], "port"),
        (["analyzer", "--error-rate", "3"], "error_rate"),
        (["emitter", "--config", "/nonexistent/emitter.json"], "cannot read"),
        (["generate", "--url", "http://127.0.0.1:1", "--batch", "0"], "batch"),
        (["generate", "--url", "http://127.0.0.1:1", "--duration", "soon"], "not a duration"),
        (["generate"], "--url"),
        (["up", "--weights", "0.5,x"], "comma-separated"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], needle: str) -> None:
    r = logdist(*args)
    assert r.returncode == 2, r
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_port_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = logdist("analyzer", "--port", str(s.getsockname()[1]))
    assert r.returncode == 1
    assert "in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_emitter_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "emitter.json"
    cfg.write_text('{"batch_size": 0, "distributor_urls": ["http://127.0.0.1:1/logs"]}')
    r = logdist("emitter", "--config", str(cfg))
    assert r.returncode == 2
    assert "batch_size" in r.stderr


def test_cluster_commands_report_an_unreachable_distributor() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for cmd in ("status", "verify-weights"):
        r = logdist(cmd, "--url", dead)
        assert r.returncode == 1
        assert "refused" in r.stderr.lower() or "unreachable" in r.stderr.lower() or dead in r.stderr


# --- cluster commands against a real cluster ----------------------------------------------------


@pytest.fixture
def swrr_cluster(spawn, tmp_path: Path):  # type: ignore[no-untyped-def]
    weights = (0.4, 0.3, 0.2, 0.1)
    analyzers = [
        spawn("analyzer", "--id", f"a{i + 1}", "--port", "{port}", "--weight", str(w), wait=False)
        for i, w in enumerate(weights)
    ]
    for a in analyzers:  # started together, waited for together
        a.wait_healthy()
    cfg = tmp_path / "distributor.json"
    cfg.write_bytes(
        orjson.dumps(
            {
                "port": 1,
                "analyzers": [
                    {"id": f"a{i + 1}", "weight": w, "endpoint": f"{a.url}/analyze", "timeout": 5000, "retry_count": 3}
                    for i, (a, w) in enumerate(zip(analyzers, weights, strict=True))
                ],
            }
        )
    )
    d = spawn(
        "distributor",
        "--config",
        str(cfg),
        "--port",
        "{port}",
        "--strategy",
        "swrr",
        "--state-dir",
        str(tmp_path / "s"),
    )
    return d, analyzers


@pytest.mark.slow
def test_generate_then_verify_weights_and_status(swrr_cluster) -> None:  # type: ignore[no-untyped-def]
    d, analyzers = swrr_cluster
    r = logdist("generate", "--url", d.url, "--count", "10000", "--rate", "0", "-q")
    assert r.returncode == 0, r.stderr
    assert re.search(r"acked\s+10,000", r.stdout)
    assert re.search(r"rejected\s+0", r.stdout)

    def total() -> int:
        return sum(cluster.get(a.url + "/processed").doc["processed_count"] for a in analyzers)

    wait_until(lambda: total() == 10000, what="10,000 processed")
    r = logdist("verify-weights", "--url", d.url, "--json", "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    res = orjson.loads(r.stdout)
    assert res["total_processed"] == res["expected_total"] == 10000
    assert [a["id"] for a in res["analyzers"]] == ["a1", "a2", "a3", "a4"]
    for a, w in zip(res["analyzers"], (0.4, 0.3, 0.2, 0.1), strict=True):
        assert a["share"] == pytest.approx(w, abs=0.01)  # swrr: exact up to batching at the edges
        assert a["ok"] is True
    r = logdist("verify-weights", "--url", d.url)
    assert r.returncode == 0
    assert "a1" in r.stdout
    assert "40.0%" in r.stdout
    assert "total processed 10,000 / expected 10,000 (ok)" in r.stdout
    # direct form, for distributors that have no metrics endpoint
    args = [f"--analyzer=a{i + 1}={a.url}@{w}" for i, (a, w) in enumerate(zip(analyzers, (4, 3, 2, 1), strict=True))]
    r = logdist("verify-weights", *args, "--expected", "10000", "--check")
    assert r.returncode == 0, r.stdout
    r = logdist("verify-weights", *args, "--expected", "10001", "--check")
    assert r.returncode == 1
    assert "MISMATCH" in r.stdout
    r = logdist("status", "--url", d.url)
    assert r.returncode == 0, r.stderr
    for a in ("a1", "a2", "a3", "a4"):
        assert a in r.stdout
    assert "queue" in r.stdout
    assert "accepted 10,000" in r.stdout


# --- logdist up ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_shows_shares_and_stops_cleanly(spawn, tmp_path: Path, stop_signal: int) -> None:  # type: ignore[no-untyped-def]
    ports = [free_port() for _ in range(6)]
    run_dir = tmp_path / "run"
    up = spawn(
        "up",
        "--emitter-port",
        str(ports[0]),
        "--distributor-port",
        str(ports[1]),
        "--analyzer-ports",
        ",".join(map(str, ports[2:])),
        "--rate",
        "2000",
        "--interval",
        "0.3",
        "--run-dir",
        str(run_dir),
        port=ports[0],
        wait=False,
    )

    def shares_line() -> str | None:
        for line in up.log.read_text(errors="replace").splitlines():
            # one line per interval when stdout is not a TTY
            if line.startswith("t=") and all(f"analyzer-{i} " in line for i in range(1, 5)):
                counts = [int(n) for n in re.findall(r" n=(\d+) ", line + " ")]
                if len(counts) == 4 and all(c > 0 for c in counts):
                    return line
        assert up.proc.poll() is None, up.log.read_text()
        return None

    line = wait_until(shares_line, timeout=60, what="a line with every analyzer's share")
    assert re.search(r"analyzer-1 \d+\.\d%/40%", line)
    assert re.search(r"analyzer-4 \d+\.\d%/10%", line)
    assert (run_dir / "distributor.json").exists()
    assert orjson.loads((run_dir / "distributor.json").read_bytes())["analyzers"][0]["endpoint"].endswith("/analyze")
    up.signal(stop_signal)
    assert up.proc.wait(60) == 0
    out = up.log.read_text()
    assert "final counts" in out
    assert "logdist up: stopped" in out
    for p in ports:  # every child is gone: nothing answers on its port
        with pytest.raises(cluster.Unreachable):
            cluster.get(f"http://127.0.0.1:{p}/health", timeout=1)


def test_up_refuses_ports_in_use() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        r = logdist(
            "up",
            "--distributor-port",
            str(taken),
            "--emitter-port",
            str(free_port()),
            "--analyzer-ports",
            ",".join(str(free_port()) for _ in range(4)),
        )
    assert r.returncode == 2
    assert "in use" in r.stderr


@pytest.mark.slow
def test_dlq_lists_and_replays_dead_letters(spawn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = spawn("analyzer", "--id", "a1", "--port", "{port}", "--fail-status", "400")
    cfg = tmp_path / "distributor.json"
    cfg.write_bytes(orjson.dumps({"analyzers": [{"id": "a1", "weight": 1, "endpoint": f"{a.url}/analyze"}]}))
    d = spawn("distributor", "--config", str(cfg), "--port", "{port}", "--state-dir", str(tmp_path / "s"))
    r = logdist("generate", "--url", d.url, "--count", "100", "--batch", "100", "-q")
    assert r.returncode == 0, r.stderr

    def listed() -> Any:
        doc = orjson.loads(logdist("dlq", "list", "--url", d.url, "--json").stdout)
        return doc if doc["messages"] == 100 else None

    doc = wait_until(listed, what="100 messages in dead letters")
    assert all(x["status"] == 400 for x in doc["dead_letters"])
    r = logdist("dlq", "list", "--url", d.url)
    assert r.returncode == 0
    assert "a1" in r.stdout
    assert "100 messages" in r.stdout
    cluster.post(a.url + "/fault", {"fail_status": None})
    r = logdist("dlq", "replay", "--url", d.url)
    assert r.returncode == 0, r.stderr
    assert "100 messages" in r.stdout
    wait_until(lambda: cluster.get(a.url + "/processed").doc["processed_count"] == 100, what="replayed messages")
    r = logdist("dlq", "replay", "nope", "--url", d.url)
    assert r.returncode == 1
    assert "not found: nope" in r.stdout
