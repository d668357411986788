"""The distributor's resident memory under the two memory attacks of issue 11 (point 9).

    python bench/rss_attacks.py uploads   # 40 concurrent 8 MiB uploads, each stalled one byte short
    python bench/rss_attacks.py held      # 60 packets of one 7 MiB message, the analyzer down

It starts a distributor (`python -m logdist distributor`, with the interpreter running this
script, so a venv of another checkout measures that checkout), waits for /health, reads its
VmRSS, runs the attack, waits for the answers (or a few seconds for stalled uploads), and
prints VmRSS and VmHWM (peak) of the process, in MiB, with the statuses the attack got.
`--set key=value` adds distributor config keys (e.g. --set ingest_buffer_bytes=33554432).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cfg: dict[str, object], tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    path = tmp / "distributor.json"
    path.write_text(json.dumps({"state_dir": str(tmp / "state"), **cfg}))
    log = (tmp / "distributor.log").open("wb")
    argv = [sys.executable, "-m", "logdist", "distributor", "--config", str(path), "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the distributor did not become healthy: see {tmp / 'distributor.log'}")


def stalled_uploads(port: int, n: int, size: int) -> tuple[list[socket.socket], collections.Counter[str]]:
    """n uploads declaring `size` bytes, each sent but for its last byte; the sockets stay open."""
    socks: list[socket.socket] = []
    outcome: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    body = b"x" * (size - 1)
    head = f"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"

    def one() -> None:
        s = socket.create_connection(("127.0.0.1", port))
        with lock:
            socks.append(s)
        try:
            s.sendall(head.encode() + body)
            what = "sent"
        except OSError as exc:
            what = type(exc).__name__
        with lock:
            outcome[what] += 1

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return socks, outcome


def held_messages(port: int, n: int, size: int) -> collections.Counter[str]:
    """n packets of one message of about `size` bytes, one after another; their statuses."""
    statuses: collections.Counter[str] = collections.Counter()
    for i in range(n):
        doc = {"emitter_id": "big", "packet_id": f"p{i}", "messages": [{"id": f"m{i}", "message": "y" * size}]}
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            c.request("POST", "/logs", body=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
            statuses[str(c.getresponse().status)] += 1
        except OSError as exc:
            statuses[type(exc).__name__] += 1
        finally:
            c.close()
    return statuses


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("attack", choices=("uploads", "held"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a distributor config key")
    args = p.parse_args()
    cfg: dict[str, object] = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        cfg[k] = json.loads(v)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.attack == "held":  # an analyzer that never answers: every message stays held
            cfg.setdefault("analyzers", [{"id": "down", "url": f"http://127.0.0.1:{free_port()}", "weight": 1}])
        proc, port = start(cfg, tmp)
        try:
            before = rss(proc.pid)
            if args.attack == "uploads":
                socks, outcome = stalled_uploads(port, 40, 8 << 20)
                time.sleep(3)  # let the reads that were let in settle
                result: dict[str, object] = {"sends": dict(outcome)}
            else:
                statuses = held_messages(port, 60, 7 << 20)
                time.sleep(2)
                socks, result = [], {"statuses": dict(statuses)}
            after = rss(proc.pid)
            for s in socks:
                s.close()
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        print(json.dumps({"attack": args.attack, "config": {k: v for k, v in cfg.items() if k != "analyzers"},
                          "baseline_rss_mib": round(before["VmRSS"], 1), "rss_mib": round(after["VmRSS"], 1),
                          "peak_rss_mib": round(after["VmHWM"], 1), **result, "pid_was": proc.pid,
                          "python": os.path.relpath(sys.executable)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
