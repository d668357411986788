"""The seed systems' clients against a logdist tree: the before/after figures of issue 15.

Runs, on loopback, the stand-ins of tests/clients/seed_standins.py with a logdist distributor
from --tree (default: this checkout; give another checkout's root for "before"):

- seed 000 emitter -> POST /logs: sends that succeeded (it accepts only 200);
- seed 000 analyzers (0.7/0.3) behind logdist: messages delivered, dead-lettered, shares;
- seed 003 analyzers (0.7/0.3), registered as seed 003 does, behind logdist: the same.

    .venv/bin/python bench/seed_clients.py [--tree DIR] [--messages N] [--formats]

--formats sets the analyzers' `format` (message for seed 000's, packet for seed 003's); without
it they get logdist's default (batch), as a tree without the key would.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STANDINS = ROOT / "tests" / "clients" / "seed_standins.py"
sys.path.insert(0, str(ROOT / "python"))
from logdist.procs import free_port  # noqa: E402

WEIGHTS = {"s1": 0.7, "s2": 0.3}


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def wait_up(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if call("GET", url + "/health")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


class Procs:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> None:
        with (self.work / f"{name}.log").open("ab") as fh:
            self.procs.append(subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env))

    def standin(self, role: str, *args: str) -> str:
        port = free_port()
        self.start([sys.executable, str(STANDINS), role, "--port", str(port), *args], f"{role}-{port}")
        url = f"http://127.0.0.1:{port}"
        wait_up(url)
        return url

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            p.wait(15)


def distributor(procs: Procs, tree: Path, analyzers: list[dict[str, Any]]) -> str:
    port = free_port()
    cfg = procs.work / f"dist-{port}.json"
    cfg.write_text(json.dumps({"analyzers": analyzers, "state_dir": str(procs.work / f"state-{port}"),
                               "retry_base_ms": 20, "retry_cap_ms": 300}))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree / "python")}
    procs.start([sys.executable, "-m", "logdist", "distributor", "--config", str(cfg), "--port", str(port)],
                f"distributor-{port}", env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_up(url)
    return url


def drained(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and call("GET", url + "/queue")[1]["size"] > 0:
        time.sleep(0.1)


def send(url: str, n: int, tag: str) -> int:
    """n messages in packets of 100 to POST /logs; how many were accepted (2xx)."""
    accepted = 0
    for k in range(0, n, 100):
        msgs = [{"id": f"{tag}-{i}", "level": "INFO", "source": "demo", "message": f"m {i}", "metadata": {"k": "v"}}
                for i in range(k, min(n, k + 100))]  # fmt: skip
        st, _ = call("POST", url + "/logs", {"emitter_id": tag, "packet_id": f"{tag}-p{k}", "messages": msgs})
        accepted += len(msgs) if 200 <= st < 300 else 0
    return accepted


def analyzers_row(procs: Procs, tree: Path, seed: str, n: int, fmt: str | None) -> dict[str, Any]:
    urls = {aid: procs.standin(f"seed{seed}-analyzer", "--id", aid) for aid in WEIGHTS}
    extra = {"format": fmt} if fmt else {}
    if seed == "000":  # seed 000's config: full endpoint
        dist = distributor(procs, tree, [{"id": a, "weight": w, "endpoint": urls[a] + "/analyze", "timeout": 10000,
                                          **extra} for a, w in WEIGHTS.items()])  # fmt: skip
    else:  # seed 003: registration with the base URL
        dist = distributor(procs, tree, [])
        for a, w in WEIGHTS.items():
            st, doc = call("POST", dist + "/api/v1/analyzers", {"id": a, "url": urls[a], "weight": w, **extra})
            assert 200 <= st < 300, doc
    accepted = send(dist, n, f"seed{seed}")
    drained(dist)
    got = {a: len(call("GET", u + "/ids")[1]["ids"]) for a, u in urls.items()}
    totals = call("GET", dist + "/api/v1/metrics")[1]["totals"]
    delivered = sum(got.values())
    shares = {a: round(c / delivered, 3) if delivered else None for a, c in got.items()}
    return {"accepted": accepted, "delivered": delivered, "dead_lettered": totals["dead_lettered"], "shares": shares}


def emitter_row(procs: Procs, tree: Path, generates: int) -> dict[str, Any]:
    an = procs.standin("seed000-analyzer", "--id", "e1")
    dist = distributor(procs, tree, [{"id": "e1", "url": an, "weight": 1.0, "format": "message"}]
                       if "message_concurrency" in (tree / "python/logdist/config.py").read_text() else
                       [{"id": "e1", "url": an, "weight": 1.0}])  # fmt: skip
    em = procs.standin("seed000-emitter", "--distributor-url", dist + "/logs", "--batch-size", "50",
                       "--retry-delay", "1.0")  # fmt: skip
    t0 = time.monotonic()
    for _ in range(generates):
        call("POST", em + "/generate")
    took = time.monotonic() - t0
    stats = call("GET", em + "/stats")[1]["stats"]
    return {**stats, "seconds_per_generate": round(took / generates, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tree", default=str(ROOT), help="root of the logdist checkout to run (default: this one)")
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--generates", type=int, default=5)
    p.add_argument("--formats", action="store_true", help="format message / packet for the seed analyzers")
    a = p.parse_args()
    tree = Path(a.tree).resolve()
    out: dict[str, Any] = {"tree": str(tree)}
    with tempfile.TemporaryDirectory(prefix="seed-clients-") as tmp:
        procs = Procs(Path(tmp))
        try:
            out["seed000_emitter"] = emitter_row(procs, tree, a.generates)
            out["seed000_analyzers"] = analyzers_row(procs, tree, "000", a.messages, "message" if a.formats else None)
            out["seed003_analyzers"] = analyzers_row(procs, tree, "003", a.messages, "packet" if a.formats else None)
        finally:
            procs.stop()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
