"""The file shipper resumes from its checkpoints: real distributor, real analyzer, real shipper
processes, kill -9 and real rotations (rename, then copytruncate).

Dedup by message id is exact because every copy of a line reaches the analyzer that already
counted it: there is one analyzer, or four behind a distributor with `route_key` = `message_id`
(the kill -9 and rotation test).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
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


def _pipeline(spawn, tmp_path: Path, weights: dict[str, float], **extra: Any):  # type: ignore[no-untyped-def]
    """(distributor, [analyzers]): analyzers that record ids, behind one distributor."""
    group = [spawn("analyzer", "--id", aid, "--port", "{port}", "--record-ids") for aid in weights]
    specs = [
        {"id": aid, "weight": w, "endpoint": f"{a.url}/analyze"}
        for (aid, w), a in zip(weights.items(), group, strict=True)
    ]
    cfg = tmp_path / "distributor.json"
    cfg.write_bytes(orjson.dumps({"analyzers": specs, **extra}))
    d = spawn("distributor", "--config", str(cfg), "--port", "{port}", "--state-dir", str(tmp_path / "dstate"))
    return d, group


@pytest.fixture
def one_analyzer(spawn, tmp_path: Path):  # type: ignore[no-untyped-def]
    """(distributor, [analyzer]): one analyzer, so dedup by id is exact."""
    return _pipeline(spawn, tmp_path, {"a1": 1.0})


@pytest.fixture
def keyed_analyzers(spawn, tmp_path: Path):  # type: ignore[no-untyped-def]
    """(distributor, [4 analyzers]) routed by message id: a re-sent line goes where it went."""
    return _pipeline(spawn, tmp_path, {"a1": 0.4, "a2": 0.3, "a3": 0.2, "a4": 0.1}, route_key="message_id")


def processed(group: list[Any]) -> int:
    """Unique messages the analyzers counted, summed."""
    return sum(int(cluster.get(a.url + "/processed").doc["processed_count"]) for a in group)


def accepted(d: Any) -> int:
    return int(cluster.get(d.url + "/api/v1/metrics").doc["totals"]["accepted"])


def ship_once(d: Any, *args: str) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-m", "logdist", "emitter", "--url", d.url, "--json", *args],
        capture_output=True,
        timeout=90,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    doc: dict[str, Any] = orjson.loads(r.stdout)
    return doc


def test_a_restart_without_changes_sends_nothing(one_analyzer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, a = one_analyzer
    log, state = tmp_path / "app.log", tmp_path / "ship.json"
    log.write_text("one\ntwo ERROR\nthree\n")
    s = ship_once(d, "--ship", str(log), "--state-file", str(state))
    assert (s["lines"], s["acked"]) == (3, 3)
    wait_until(lambda: processed(a) == 3, what="3 processed")
    for _ in range(2):  # before: each run sent the whole file again (5 counted for 3 lines)
        s = ship_once(d, "--ship", str(log), "--state-file", str(state))
        assert (s["lines"], s["packets"]) == (0, 0)
    assert accepted(d) == 3
    with log.open("a") as fh:
        fh.write("four\nfive\n")
    s = ship_once(d, "--ship", str(log), "--state-file", str(state))
    assert (s["lines"], s["acked"]) == (2, 2)
    wait_until(lambda: processed(a) == 5, what="5 processed")
    assert accepted(d) == 5
    doc = orjson.loads(state.read_bytes())
    st = log.stat()
    assert doc["files"] == [
        {"path": str(log), "dev": st.st_dev, "ino": st.st_ino, "gen": 0, "fp": doc["files"][0]["fp"], "offset": 30}
    ]


def test_several_paths_and_globs_resume_per_file(one_analyzer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, a = one_analyzer
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("a.log", "b.log", "c.txt"):
        (logs / name).write_text("".join(f"{name} line {i}\n" for i in range(100)))
    state = tmp_path / "ship.json"
    s = ship_once(d, "--ship", str(logs / "*.log"), "--ship", str(logs / "c.txt"), "--state-file", str(state))
    assert (s["lines"], s["acked"], s["files"]) == (300, 300, 3)
    with (logs / "b.log").open("a") as fh:
        fh.write("b.log line 100\n")
    (logs / "d.log").write_text("d.log line 0\n")
    s = ship_once(d, "--ship", str(logs / "*.log"), str(logs / "c.txt"), "--state-file", str(state))
    assert (s["lines"], s["acked"], s["files"]) == (2, 2, 4)
    wait_until(lambda: processed(a) == 302, what="302 processed")


class Shipper:
    """A `logdist emitter --ship --follow` process whose progress lines go to a file."""

    def __init__(self, d: Any, log: Path, state: Path, err: Path) -> None:
        self.err = err
        fh = err.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "logdist",
                "emitter",
                "--url",
                d.url,
                "--ship",
                str(log),
                "--follow",
                "--state-file",
                str(state),
                "--batch",
                "50",
                "--concurrency",
                "2",
                "--flush-ms",
                "50",
                "--glob-interval",
                "0.1",
                "--rotate-wait",
                "0.5",
                "--progress",
                "0.1",
                "--timeout",
                "2",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=fh,
            cwd=ROOT,
        )
        fh.close()

    def lines_sent(self) -> int:
        found = re.findall(r"shipping: ([\d,]+) lines sent", self.err.read_text())
        return int(found[-1].replace(",", "")) if found else 0

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _lines(i0: int, n: int) -> str:
    return "".join(f"2026-12-01T00:00:00Z INFO line {i:06d} of the test\n" for i in range(i0, i0 + n))


def checkpoint(state: Path) -> int:
    """The first file's checkpointed offset, or -1."""
    files = orjson.loads(state.read_bytes())["files"] if state.exists() else []
    return int(files[0]["offset"]) if files else -1


def received_lines(group: list[Any], dev_of: int, files: dict[tuple[int, int], bytes]) -> list[str]:
    """The lines the analyzers received, read back from the files by the (dev, ino, gen,
    offset) of each message id."""
    out = []
    for mid in (m for a in group for m in cluster.get(a.url + "/ids").doc["ids"]):
        dev, ino, gen, _fp, off = mid.split(":")
        data = files[(int(ino), int(gen))]
        assert dev == str(dev_of)
        end = data.index(b"\n", int(off))
        out.append(data[int(off) : end].decode())
    return out


@pytest.mark.slow
def test_kill9_restart_and_two_rotations_deliver_each_line_once(keyed_analyzers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d, a = keyed_analyzers
    log, state = tmp_path / "app.log", tmp_path / "ship.json"
    written = 0

    def write(fh: Any, n: int) -> None:
        nonlocal written
        fh.write(_lines(written, n))
        fh.flush()
        written += n

    app = log.open("a")  # the "application": keeps its file open, like a logger
    write(app, 3000)
    sh = Shipper(d, log, state, tmp_path / "shipper-1.err")
    try:
        wait_until(lambda: processed(a) == 3000, what="the first 3000 lines")
        wait_until(lambda: checkpoint(state) == log.stat().st_size, what="the checkpoint at the end")
        # The distributor stops answering: what the shipper reads now is sent but never acked.
        d.signal(signal.SIGSTOP)
        write(app, 2000)
        wait_until(lambda: sh.lines_sent() > 3000, what="packets past the checkpoint in flight")
        sh.kill9()  # mid-file: checkpoint at line 3000 of 5000, packets in flight
        d.signal(signal.SIGCONT)
        assert checkpoint(state) < log.stat().st_size
    finally:
        d.signal(signal.SIGCONT)
        if sh.proc.poll() is None:
            sh.kill9()
    sh = Shipper(d, log, state, tmp_path / "shipper-2.err")
    try:
        wait_until(lambda: processed(a) == 5000, what="5000 lines after the restart")
        # rename rotation while appending: the app writes on to the renamed file, then reopens
        ino_a = log.stat().st_ino
        os.rename(log, tmp_path / "app.log.1")
        write(app, 300)
        app.close()
        app = log.open("a")
        write(app, 500)
        wait_until(lambda: processed(a) == written, what="every line across the rename")
        # copytruncate: copy, truncate in place, write on (the shipper had read all: lines
        # written between its last read and the truncation would be only in the copy)
        ino_b = log.stat().st_ino
        shutil.copyfile(log, tmp_path / "app.log.2")
        os.truncate(log, 0)
        app.seek(0)
        write(app, 200)
        wait_until(lambda: processed(a) == written, what="every line across the copytruncate")
        sh.proc.send_signal(signal.SIGTERM)
        out, _ = sh.proc.communicate(timeout=60)
    finally:
        app.close()
        if sh.proc.poll() is None:
            sh.kill9()
    assert sh.proc.returncode == 0, (tmp_path / "shipper-2.err").read_text()
    summary = orjson.loads(out)
    assert summary["rotations"] >= 1
    assert summary["complete"] is True
    assert written == 6000
    assert processed(a) == written
    files = {
        (ino_a, 0): (tmp_path / "app.log.1").read_bytes(),
        (ino_b, 0): (tmp_path / "app.log.2").read_bytes(),
        (ino_b, 1): log.read_bytes(),
    }
    got = received_lines(a, log.stat().st_dev, files)
    assert len(got) == written == processed(a)
    assert all(processed([x]) > 0 for x in a)  # the lines were spread over the four
    want = _lines(0, written).splitlines()
    assert sorted(got) == want  # each line once, and nothing else
    # The restarted shipper re-sent what was in flight at the kill (same ids): the distributor
    # or the analyzer dropped those copies.
    ship_state = orjson.loads(state.read_bytes())["files"]
    assert {(f["ino"], f["gen"]) for f in ship_state} >= {(ino_b, 1)}


def test_sigterm_with_the_distributor_down_stops_and_keeps_the_checkpoint(one_analyzer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Nothing acknowledged: SIGTERM still stops (after --stop-timeout), exit 1, the checkpoint
    stays at 0; the next run against a live distributor sends every line once."""
    d, a = one_analyzer
    log, state, err = tmp_path / "app.log", tmp_path / "ship.json", tmp_path / "down.err"
    log.write_text(_lines(0, 1000))
    down = f"http://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "logdist", "emitter", "--url", down, "--ship", str(log), "--follow"]
    argv += ["--state-file", str(state), "--stop-timeout", "1", "--timeout", "1", "--progress", "0.1", "--json"]
    with err.open("ab") as fh:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=fh,
            cwd=ROOT,
        )
    try:
        wait_until(lambda: "1,000 lines sent" in err.read_text(), what="packets in flight")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err.read_text()
    s = orjson.loads(out)
    assert (s["acked"], s["unconfirmed"], s["complete"]) == (0, 1000, False)
    assert checkpoint(state) == 0
    s = ship_once(d, "--ship", str(log), "--state-file", str(state))
    assert (s["lines"], s["acked"]) == (1000, 1000)
    wait_until(lambda: processed(a) == 1000, what="1000 processed")
    assert checkpoint(state) == log.stat().st_size
