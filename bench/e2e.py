"""End-to-end benchmark: logdist (memory, wal) against nginx and HAProxy as weighted proxies.

For each system it starts the system under test and four sinks on loopback ports it picks,
drives it with wrk (Lua body, bench/wrk/post.lua), and reports messages/s accepted and
delivered, p50/p99 ingest latency, CPU seconds per million messages, peak RSS, and each
system's ratio to nginx. Figures are the median of several fixed-duration runs after a warm-up.
A separate paced run at half of each system's measured maximum gives the p99 at half rate.

    .venv/bin/python bench/e2e.py [--sinks nginx|analyzer] [--duration S] [--runs N] ...
    .venv/bin/python bench/e2e.py --mode bounded     # RSS stays bounded when every sink is down
    .venv/bin/python bench/e2e.py --mode analyzer    # one `logdist analyzer`: messages/s per core
    logdist bench ...                                 # the same, from the CLI

    .venv/bin/python bench/e2e.py --baseline-tree ../main   # adds logdist-*@base: before vs after
    .venv/bin/python bench/e2e.py --systems logdist-memory --formats batch,message,packet   # wire formats
    .venv/bin/python bench/e2e.py --systems logdist-memory,logdist-memory-tls   # the cost of TLS ingest

The flags are defined once, in logdist.tools.benchargs (which `logdist bench` uses too; it
loads this file and calls `run`). Results go to stdout (a table), progress to stderr, and JSON
to bench/results/latest.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

try:
    from logdist.procs import free_port
    from logdist.tools.benchargs import add_arguments
except ImportError:  # logdist is not installed into this interpreter: use the source tree
    sys.path.insert(0, str(ROOT / "python"))
    from logdist.procs import free_port
    from logdist.tools.benchargs import add_arguments

WEIGHTS = (4, 3, 2, 1)
MESSAGES_PER_PACKET = 250
MESSAGE_BYTES = 240
TOKEN_WIDTH = 20  # nonce (8) + thread (2) + counter (10), see bench/wrk/post.lua
PLACEHOLDER = "@@ID@@"
# logdist-memory-tls: logdist-memory with HTTPS ingest (certificates made by trustme at run time,
# TLS 1.2+ default ciphers; wrk over https), beside the plain row: the cost of TLS on throughput
SYSTEMS = ("logdist-memory", "logdist-memory-tls", "logdist-wal", "nginx", "haproxy")
# also accepted by --systems: the same on the pure-Python core (for the Rust-vs-Python ratio)
EXTRA_SYSTEMS = ("logdist-memory-py", "logdist-wal-py", "logdist-memory-1w", "logdist-wal-1w")
#: the https systems' client context (it trusts the bench's throw-away CA); None until one starts
_TLS_CLIENT: ssl.SSLContext | None = None
# logdist-memory/-wal run from --baseline-tree's source (same flags): the code before a change
BASE_SUFFIX = "@base"
BASE_SYSTEMS = ("logdist-memory" + BASE_SUFFIX, "logdist-wal" + BASE_SUFFIX)
CLK_TCK = os.sysconf("SC_CLK_TCK")
# --formats: an analyzer wire format other than batch runs a logdist system as SYSTEM/FORMAT
FORMATS = ("batch", "message", "packet")
FORMAT_SEP = "/"


def split_format(name: str) -> tuple[str, str]:
    """logdist-memory/message -> (logdist-memory, message); no format: batch."""
    base, _, fmt = name.partition(FORMAT_SEP)
    return base, fmt or "batch"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- payload


def make_packet_template() -> tuple[str, int, int]:
    """The packet body with @@ID@@ placeholders, the byte length of one message as sent (after
    the placeholder is replaced by a TOKEN_WIDTH token) and of the whole packet as sent."""
    levels = ("INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG")
    sources = ("checkout-api", "auth-service", "payments", "search", "inventory", "gateway")
    token = "x" * TOKEN_WIDTH
    msgs = []
    for i in range(MESSAGES_PER_PACKET):
        m: dict[str, Any] = {
            "id": f"{PLACEHOLDER}-{i:03d}",
            "timestamp": f"2026-11-22T04:{i % 60:02d}:{(i * 7) % 60:02d}.{i * 3907 % 1000000:06d}Z",
            "level": levels[i % len(levels)],
            "source": sources[i % len(sources)],
            "message": "",
            "metadata": {"host": f"web-{i % 8:02d}", "region": "eu-west-1", "request_id": f"r{i * 7919:09d}"},
        }
        base = len(json.dumps(m, separators=(",", ":")).replace(PLACEHOLDER, token))
        text = f"request {i} handled in {i % 97} ms for user u{i * 31 % 10007} "
        m["message"] = (text + "lorem ipsum dolor sit amet " * 10)[: MESSAGE_BYTES - base]
        msgs.append(json.dumps(m, separators=(",", ":")))
    lens = {len(s.replace(PLACEHOLDER, token)) for s in msgs}
    assert lens == {MESSAGE_BYTES}, lens
    body = (
        '{"packet_id":"' + PLACEHOLDER + '","agent_id":"bench-agent","emitter_id":"bench-emitter",'
        '"timestamp":"2026-11-22T04:00:00Z","messages":[' + ",".join(msgs) + "]}"
    )
    json.loads(body.replace(PLACEHOLDER, token))
    return body, MESSAGE_BYTES, len(body.replace(PLACEHOLDER, token))


# ---------------------------------------------------------------- processes


def render(template: Path, dest: Path, values: dict[str, str]) -> Path:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace(f"@{k}@", v)
    leftover = re.findall(r"@[A-Z0-9_]+@", text)
    if leftover:
        raise RuntimeError(f"{template}: unfilled placeholders {leftover}")
    dest.write_text(text)
    return dest


def descendants(pid: int) -> list[int]:
    """pid and all its live descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of the processes so far (utime, stime of /proc/<pid>/stat)."""
    user = system = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_times(pids))


def hwm_mb(pids: list[int]) -> float:
    """Sum of VmHWM (peak RSS) over the processes, in MB."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def logdist_env(args: argparse.Namespace, pure: bool = False, tree: Path | None = None) -> dict[str, str]:
    """Environment for `python -m logdist` children: a source tree first on the path (this one,
    or `tree` for the @base systems; works with or without an install, and the tree's python/
    holds its own built core), and LOGDIST_PURE=1 when --pure asks for the Python core."""
    env = {**os.environ}
    src = (tree if tree is not None else ROOT) / "python"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    if args.pure or pure:
        env["LOGDIST_PURE"] = "1"
    return env


class Unavailable(Exception):
    """The system cannot run here (reason in the message); reported, not fatal."""


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log_path.open("ab") as fh:
            self.popen = subprocess.Popen(
                self.argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def pids(self) -> list[int]:
        return descendants(self.pid) if self.alive() else []

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (SIGQUIT for nginx: graceful), wait, then SIGKILL. By PID only."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(10)


def wait_ready(proc: Proc, port: int, path: str | None, timeout: float = 30.0, scheme: str = "http") -> None:
    """Wait for a TCP listener on port (and a 2xx on path if given); raise Unavailable if the
    process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            code = proc.popen.returncode if proc.popen else "?"
            raise Unavailable(f"{proc.name} exited with {code}: {proc.tail(1)}")
        try:
            if path is None:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            else:
                with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}{path}", timeout=1, context=_TLS_CLIENT) as r:
                    if 200 <= r.status < 300:
                        return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise Unavailable(f"{proc.name} not ready on port {port} within {timeout:.0f}s: {proc.tail(5)}")


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout, context=_TLS_CLIENT) as r:
        return json.loads(r.read())


def user_directive() -> str:
    """nginx's workers drop to `nobody` when started as root; keep them as the current user so
    they can use the temp dir."""
    if os.geteuid() == 0:
        return "user root;"
    return ""


def find_binary(name: str) -> str:
    sbin = (f"/usr/sbin/{name}", f"/usr/bin/{name}")
    path = shutil.which(name) or next((p for p in sbin if os.access(p, os.X_OK)), None)
    if path is None:
        raise Unavailable(f"{name} is not installed (run bench/install-deps.sh)")
    return path


# ---------------------------------------------------------------- sinks


class Sinks:
    """Four sinks on loopback: either one nginx with four 204 servers logging per request, or
    four `logdist analyzer` processes. Analyzer sinks are counted by `snapshot()` (GET /processed)
    around each run; nginx sinks by `count_window()` over their access logs afterwards."""

    def __init__(
        self, kind: str, workdir: Path, message_bytes: int, packet_bytes: int, args: argparse.Namespace
    ) -> None:
        self.kind = kind
        self.env = logdist_env(args)
        self.dir = workdir
        self.ports = [free_port() for _ in WEIGHTS]
        self.message_bytes = message_bytes
        self.packet_bytes = packet_bytes
        self.workers = args.sink_workers
        self.procs: list[Proc] = []
        self.inexact_requests = 0

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/analyze" for p in self.ports]

    def start(self) -> None:
        if self.kind == "nginx":
            conf = render(
                BENCH_DIR / "nginx" / "sinks.conf",
                self.dir / "sinks.conf",
                {
                    "DIR": str(self.dir),
                    "USER": user_directive(),
                    "WORKERS": str(self.workers),
                    **{f"PORT{i}": str(p) for i, p in enumerate(self.ports)},
                },
            )
            p = Proc(
                "nginx-sinks",
                [find_binary("nginx"), "-e", str(self.dir / "sinks-error.log"), "-c", str(conf)],
                self.dir / "sinks.out",
            )
            self.procs.append(p.start())
            for port in self.ports:
                wait_ready(p, port, None)
        else:
            for i, (port, w) in enumerate(zip(self.ports, WEIGHTS, strict=True)):
                p = Proc(
                    f"analyzer-{i}",
                    [
                        sys.executable,
                        "-m",
                        "logdist",
                        "analyzer",
                        "--id",
                        f"a{i}",
                        "--port",
                        str(port),
                        "--weight",
                        str(w),
                    ],
                    self.dir / f"analyzer-{i}.log",
                    env=self.env,
                )
                self.procs.append(p.start())
            for p, port in zip(self.procs, self.ports, strict=True):
                wait_ready(p, port, "/health")

    def pids(self) -> list[int]:
        return [q for p in self.procs for q in p.pids()]

    def stop(self) -> None:
        for p in self.procs:
            p.stop()  # nginx: SIGTERM is its fast shutdown; the counts were read before

    # counting -----------------------------------------------------------

    def snapshot(self) -> list[int] | None:
        """Analyzer sinks: messages received so far per sink. nginx sinks: None (counted from
        the access logs by time window afterwards)."""
        if self.kind != "analyzer":
            return None
        out = []
        for port in self.ports:
            d = get_json(f"http://127.0.0.1:{port}/processed")
            out.append(int(d.get("received", d.get("processed_count", 0))))
        return out

    def messages_in_request(self, content_length: int) -> int:
        """Messages in one request body seen by an nginx sink: a whole packet is 250; a JSON
        array of messages as built by a distributor is 1 + n*(L+1) bytes."""
        if content_length == self.packet_bytes:
            return MESSAGES_PER_PACKET
        n, rem = divmod(content_length - 1, self.message_bytes + 1)
        if rem:
            self.inexact_requests += 1
            n = round((content_length - 1) / (self.message_bytes + 1))
        return n

    def count_window(self, t0: float, t1: float) -> list[int]:
        """nginx sinks: messages delivered to each sink by requests that completed in [t0, t1)
        (epoch seconds), from the access logs."""
        out = []
        for i in range(len(self.ports)):
            n = 0
            path = self.dir / f"sink{i}.log"
            if path.exists():
                with path.open() as fh:
                    for line in fh:
                        parts = line.split()
                        if len(parts) != 3:
                            continue
                        ts = float(parts[0])
                        if t0 <= ts < t1 and parts[1].startswith("2") and parts[2] != "-":
                            n += self.messages_in_request(int(parts[2]))
            out.append(n)
        return out

    def flush_logs(self) -> None:
        """nginx writes buffered access logs at most 1 s late (flush=1s); USR1 reopens them,
        which flushes the buffers now."""
        if self.kind == "nginx":
            for p in self.procs:
                if p.alive():
                    os.kill(p.pid, signal.SIGUSR1)
            time.sleep(0.3)


# ---------------------------------------------------------------- systems under test


@dataclass
class System:
    name: str
    port: int
    proc: Proc
    health_path: str | None
    queue_url: str | None = None
    metrics_url: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    scheme: str = "http"  # https: logdist-memory-tls

    def pids(self) -> list[int]:
        return self.proc.pids()


def start_system(name: str, sinks: Sinks, workdir: Path, args: argparse.Namespace) -> System:
    port = free_port()
    if name in ("nginx", "haproxy"):
        sysm = _start_proxy(name, port, sinks, workdir, args)
    else:
        sysm = _start_logdist(name, port, sinks, workdir, args)
    try:
        wait_ready(sysm.proc, port, sysm.health_path, scheme=sysm.scheme)
    except Unavailable:
        sysm.proc.stop()
        raise
    if sysm.name.startswith("logdist"):
        _check_logdist_health(sysm)
    return sysm


def _start_proxy(name: str, port: int, sinks: Sinks, workdir: Path, args: argparse.Namespace) -> System:
    """nginx or HAProxy as a weighted proxy in front of the sinks."""
    values = {
        "DIR": str(workdir),
        "PORT": str(port),
        "USER": user_directive(),
        "WORKERS": str(args.proxy_workers),
        "THREADS": str(args.proxy_workers),
        **{f"PORT{i}": str(p) for i, p in enumerate(sinks.ports)},
    }
    if name == "nginx":
        conf = render(BENCH_DIR / "nginx" / "proxy.conf", workdir / "proxy.conf", values)
        binary = find_binary("nginx")
        proc = Proc("nginx", [binary, "-e", str(workdir / "proxy-error.log"), "-c", str(conf)], workdir / "nginx.out")
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
        return System(name, port, proc.start(), "/health", info={"version": version, "workers": args.proxy_workers})
    cfg = render(BENCH_DIR / "haproxy" / "proxy.cfg", workdir / "haproxy.cfg", values)
    binary = find_binary("haproxy")
    proc = Proc("haproxy", [binary, "-db", "-f", str(cfg)], workdir / "haproxy.out")
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return System(name, port, proc.start(), "/health", info={"version": version, "threads": args.proxy_workers})


def _durability(name: str) -> str:
    """logdist-wal-1w, logdist-memory@base, logdist-memory-tls ... -> wal, memory, memory."""
    return split_format(name)[0].partition(BASE_SUFFIX)[0].split("-")[1]


def _logdist_config(port: int, sinks: Sinks, args: argparse.Namespace, wire: str = "batch") -> dict[str, Any]:
    """The distributor's config (the compact config shape, each analyzer with `wire` as its
    format unless it is batch), plus --logdist-config keys."""
    config: dict[str, Any] = {
        "port": port,
        "analyzers": [
            {"id": f"a{i}", "weight": w / 10, "endpoint": ep, "timeout": 10000, "retry_count": 3}
            | ({"format": wire} if wire != "batch" else {})
            for i, (w, ep) in enumerate(zip(WEIGHTS, sinks.endpoints, strict=True))
        ],
    }
    for kv in args.logdist_config:
        key, _, value = kv.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def _start_logdist(full_name: str, port: int, sinks: Sinks, workdir: Path, args: argparse.Namespace) -> System:
    name, wire = split_format(full_name)
    durability = _durability(name)
    tree = None
    if name.endswith(BASE_SUFFIX):
        if not args.baseline_tree:
            raise Unavailable(f"{name} needs --baseline-tree DIR")
        tree = Path(args.baseline_tree).resolve()
    cfg_path = workdir / "distributor.json"
    config = _logdist_config(port, sinks, args, wire)
    scheme = "http"
    if name.endswith("-tls"):
        config.update(_tls_files(workdir))
        scheme = "https"
    cfg_path.write_text(json.dumps(config, indent=2))
    # `--workers N`: N distributor processes on the port (SO_REUSEPORT) under one
    # supervisor; /queue and /api/v1/metrics answer for all of them. "-1w": one process.
    workers = 1 if name.endswith("-1w") else args.logdist_workers
    state = workdir / "state"
    state.mkdir(exist_ok=True)
    argv = [
        sys.executable, "-m", "logdist", "distributor", "--config", str(cfg_path),
        "--port", str(port), "--durability", durability, "--state-dir", str(state),
        *(["--workers", str(workers)] if workers > 1 else []), *args.logdist_arg,
    ]  # fmt: skip
    env = logdist_env(args, name.endswith("-py"), tree)
    proc = Proc(name, argv, workdir / f"{name}.log", env=env)
    base = f"{scheme}://127.0.0.1:{port}"
    info: dict[str, Any] = {"argv": argv[1:], "workers": workers, "format": wire, "ingest": scheme}
    if tree is not None:
        info["tree"] = str(tree)
    return System(
        full_name,
        port,
        proc.start(),
        "/health",
        queue_url=base + "/queue",
        metrics_url=base + "/api/v1/metrics",
        info=info,
        scheme=scheme,
    )


def _tls_files(workdir: Path) -> dict[str, str]:
    """A throw-away CA and a loopback server certificate (trustme), written to `workdir`; the
    bench's client context trusts the CA. Returns the distributor's tls_* keys."""
    global _TLS_CLIENT
    try:
        import trustme
    except ImportError:
        raise Unavailable("trustme is not installed (pip install -r requirements-dev.txt)") from None
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = workdir / "server.crt", workdir / "server.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    _TLS_CLIENT = ssl.create_default_context()
    ca.configure_trust(_TLS_CLIENT)
    return {"tls_cert_file": str(cert), "tls_key_file": str(key)}


def _check_logdist_health(sysm: System) -> None:
    """Record the backend/durability/version /health reports; the durability must be the one asked for."""
    durability = _durability(sysm.name)
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
        h = get_json(f"{sysm.scheme}://127.0.0.1:{sysm.port}/health")
        sysm.info.update({k: h.get(k) for k in ("backend", "durability", "version") if k in h})
        if h.get("durability") not in (None, durability):
            sysm.proc.stop()
            raise Unavailable(f"asked for durability {durability}, /health says {h.get('durability')}")


# ---------------------------------------------------------------- load generator


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    wall_t0: float
    wall_t1: float
    cpu_s: float

    @property
    def accepted_packets(self) -> int:
        return self.requests - self.status_errors

    @property
    def accepted_req_per_s(self) -> float:
        return self.accepted_packets / self.duration_s if self.duration_s else 0.0


def run_wrk(
    port: int,
    body_file: Path,
    args: argparse.Namespace,
    duration: float,
    *,
    rate: float | None = None,
    connections: int | None = None,
    count_status: bool = False,
    path: str = "/logs",
    scheme: str = "http",
) -> WrkResult:
    threads = args.wrk_threads
    conns = max(threads, connections or args.connections)
    env = {
        **os.environ,
        "WRK_BODY_FILE": str(body_file),
        "WRK_NONCE": secrets.token_hex(4),
        "WRK_ID_MODE": args.id_mode,
    }
    if rate:
        env["WRK_RATE"] = f"{rate / threads:.3f}"
    if count_status:
        env["WRK_COUNT_STATUS"] = "1"
    argv = [
        find_binary("wrk"),
        "-t",
        str(threads),
        "-c",
        str(conns),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(BENCH_DIR / "wrk" / "post.lua"),
        f"{scheme}://127.0.0.1:{port}{path}",  # wrk does TLS, without verifying the certificate
    ]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    cp = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    t1 = time.time()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in cp.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if cp.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({cp.returncode}): {cp.stderr.strip()} {cp.stdout.strip()[-2000:]}")
    d = json.loads(line[len("WRKJSON ") :])
    return WrkResult(
        requests=d["requests"],
        duration_s=d["duration_us"] / 1e6,
        status_errors=d["status_errors"],
        socket_errors=d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["timeouts"],
        p50_ms=d["p50_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        statuses=d.get("statuses", {}),
        wall_t0=t0,
        wall_t1=t1,
        cpu_s=(ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
    )


# ---------------------------------------------------------------- measuring one system


def profile_run(system: System, body_file: Path, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One extra full-load run with py-spy sampling the system (all its processes); writes the
    collapsed stacks and a self-time summary next to the results file. Not counted in the figures."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(pyspy, os.X_OK):
        log("py-spy not found (pip install py-spy into .venv); skipping the profile")
        return {"error": "py-spy not installed"}
    raw = workdir / f"{system.name}.pyspy.txt"
    argv = [
        pyspy,
        "record",
        "--pid",
        str(system.proc.pid),
        "--duration",
        str(max(1, round(args.duration))),
        "--rate",
        "200",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--subprocesses",
    ]
    # --native needs the target paused per sample (slower); otherwise sample without pausing it
    argv.append("--native" if args.profile_native else "--nonblocking")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    run_wrk(system.port, body_file, args, args.duration, scheme=system.scheme)
    try:
        _, err = spy.communicate(timeout=args.duration + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        _, err = spy.communicate()
    if not raw.exists():
        log(f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-500:]}")
        return {"error": err.decode(errors="replace").strip()[-500:]}
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        cnt = int(n)
        total += cnt
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # per function, not per line
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + cnt
        for f in set(frames[1:]):  # the first frame is the process/thread
            incl_counts[f] = incl_counts.get(f, 0) + cnt
    top_self = sorted(self_counts.items(), key=lambda kv: -kv[1])[:20]
    top_incl = sorted(incl_counts.items(), key=lambda kv: -kv[1])[:25]
    dest_dir = Path(args.out).parent
    dest_dir.mkdir(parents=True, exist_ok=True)
    summary = dest_dir / f"profile-{system.name}.txt"
    lines = [f"py-spy {system.name}: {total} samples at 200 Hz over {args.duration:g}s of full load", "", "self:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in top_self]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in top_incl]
    summary.write_text("\n".join(lines) + "\n")
    shutil.copy(raw, dest_dir / f"profile-{system.name}.collapsed")
    log(f"{system.name}: profile written to {summary}; top self time:")
    for f, c in top_self[:8]:
        log(f"    {100 * c / total:5.1f}%  {f}")
    return {"summary": str(summary), "samples": total, "top_self": [[f, c] for f, c in top_self[:10]]}


def wait_drained(system: System, timeout: float = 60.0) -> None:
    """logdist: wait until its queue is empty, so each run starts from the same state."""
    if system.queue_url is None:
        time.sleep(0.3)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            if int(get_json(system.queue_url).get("size", 0)) == 0:
                return
        time.sleep(0.1)
    log(f"{system.name}: queue not drained after {timeout:.0f}s; measuring anyway")


def logdist_acked(system: System) -> int | None:
    if system.metrics_url is None:
        return None
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError, KeyError, TypeError):
        return int(get_json(system.metrics_url)["totals"]["acked"])
    return None


def logdist_rows(system: System) -> list[int] | None:
    """Messages each analyzer acknowledged so far, by logdist's metrics (a0, a1, ...)."""
    if system.metrics_url is None:
        return None
    with contextlib.suppress(OSError, ValueError, urllib.error.URLError, KeyError, TypeError):
        rows = {r["id"]: int(r["acked"]) for r in get_json(system.metrics_url)["analyzers"]}
        return [rows[f"a{i}"] for i in range(len(WEIGHTS))]
    return None


@dataclass
class Payload:
    """The packet body file wrk sends, and the byte sizes the nginx sinks count by."""

    body_file: Path
    msg_bytes: int
    pkt_bytes: int


def measure(name: str, sinks_kind: str, payload: Payload, args: argparse.Namespace, workroot: Path) -> dict[str, Any]:
    """One system: warm-up, the measured runs, the optional profile and half-rate runs; its figures."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{name.replace(FORMAT_SEP, '-')}-", dir=workroot))
    sinks = Sinks(sinks_kind, workdir, payload.msg_bytes, payload.pkt_bytes, args)
    system: System | None = None
    try:
        sinks.start()
        system = start_system(name, sinks, workdir, args)
        log(
            f"{name}: up on :{system.port} (pid {system.proc.pid}), sinks {sinks.kind} on {sinks.ports}; "
            f"warm-up {args.warmup:g}s"
        )
        if args.warmup > 0:
            run_wrk(system.port, payload.body_file, args, args.warmup, scheme=system.scheme)
        runs = [_one_run(system, sinks, payload.body_file, args, r) for r in range(args.runs)]
        peak = hwm_mb(system.pids())
        wait_drained(system, timeout=20)
        _count_delivered(runs, sinks)
        profile = None
        if args.profile and name.startswith("logdist"):
            wait_drained(system)
            profile = profile_run(system, payload.body_file, args, workdir)
        half = _half_rate_run(system, payload.body_file, args, runs)
        peak = max(peak, hwm_mb(system.pids()))
        return _summary(system, sinks, runs, peak, half, profile)
    finally:
        if system is not None:
            system.proc.stop()
        sinks.stop()


def _one_run(system: System, sinks: Sinks, body_file: Path, args: argparse.Namespace, r: int) -> dict[str, Any]:
    """One measured run at full load: what wrk saw, and the CPU and counts around it."""
    wait_drained(system)
    (usr0, sys0), scpu0 = cpu_times(system.pids()), cpu_seconds(sinks.pids())
    by_metrics = split_format(system.name)[1] != "batch"  # the sinks cannot count other formats' bodies
    snap0, acked0 = (logdist_rows(system) if by_metrics else sinks.snapshot()), logdist_acked(system)
    res = run_wrk(system.port, body_file, args, args.duration, scheme=system.scheme)
    snap1, acked1 = (logdist_rows(system) if by_metrics else sinks.snapshot()), logdist_acked(system)
    (usr1, sys1), scpu1 = cpu_times(system.pids()), cpu_seconds(sinks.pids())
    if not system.proc.alive():
        raise RuntimeError(f"{system.name} died during run {r + 1}: {system.proc.tail()}")
    window = res.wall_t1 - res.wall_t0
    run: dict[str, Any] = {
        "accepted_msgs_per_s": res.accepted_req_per_s * MESSAGES_PER_PACKET,
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "cpu_s": (usr1 + sys1) - (usr0 + sys0),
        "cpu_user_s": usr1 - usr0,
        "cpu_sys_s": sys1 - sys0,
        "sink_cpu_s": scpu1 - scpu0,
        "loadgen_cpu_s": res.cpu_s,
        "window_s": window,
        "requests": res.requests,
        "rejected": res.status_errors,
        "socket_errors": res.socket_errors,
        "_t": (res.wall_t0, res.wall_t1),
    }
    if snap0 is not None and snap1 is not None:
        run["per_sink"] = [b - a for a, b in zip(snap0, snap1, strict=True)]
        run["_by_metrics"] = by_metrics
    if acked0 is not None and acked1 is not None:
        run["acked_msgs_per_s_by_metrics"] = (acked1 - acked0) / window
    log(
        f"{system.name}: run {r + 1}/{args.runs}: accepted {run['accepted_msgs_per_s']:,.0f} msg/s, "
        f"p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms, {res.status_errors} non-2xx, "
        f"cpu {run['cpu_s']:.2f}s (wrk {res.cpu_s:.2f}s, sinks {run['sink_cpu_s']:.2f}s)"
    )
    return run


def _count_delivered(runs: list[dict[str, Any]], sinks: Sinks) -> None:
    """Delivered messages per run: nginx sinks are counted from their access logs by time window."""
    sinks.flush_logs()
    for run in runs:
        t0, t1 = run.pop("_t")
        if sinks.kind == "nginx" and not run.pop("_by_metrics", False):
            run["per_sink"] = sinks.count_window(t0, t1)
        delivered = sum(run["per_sink"])
        run["delivered_msgs_per_s"] = delivered / run["window_s"]
        run["cpu_s_per_million"] = run["cpu_s"] / (delivered / 1e6) if delivered else None


def _half_rate_run(
    system: System, body_file: Path, args: argparse.Namespace, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """A run paced at half of the maximum sustained rate (median over the runs of the lower of
    accepted and delivered: accepting faster than delivering only fills the queue)."""
    sustained = [min(r["accepted_msgs_per_s"], r["delivered_msgs_per_s"]) for r in runs]
    max_rps = statistics.median(sustained) / MESSAGES_PER_PACKET
    if not (max_rps > 0 and args.half_rate):
        return {}
    wait_drained(system)
    target = max_rps / 2
    res = run_wrk(
        system.port, body_file, args, args.duration, rate=target, connections=args.half_connections,
        scheme=system.scheme,
    )  # fmt: skip
    half = {
        "target_msgs_per_s": target * MESSAGES_PER_PACKET,
        "achieved_msgs_per_s": res.accepted_req_per_s * MESSAGES_PER_PACKET,
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "rejected": res.status_errors,
    }
    log(
        f"{system.name}: half rate ({half['target_msgs_per_s']:,.0f} msg/s target, "
        f"{half['achieved_msgs_per_s']:,.0f} achieved): p50 {res.p50_ms:.2f} ms, p99 {res.p99_ms:.2f} ms"
    )
    return half


def _summary(
    system: System,
    sinks: Sinks,
    runs: list[dict[str, Any]],
    peak: float,
    half: dict[str, Any],
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    """A system's figures: medians of the runs, shares, peak RSS, the half-rate run."""
    totals = [sum(col) for col in zip(*(r["per_sink"] for r in runs), strict=True)]
    grand = sum(totals)
    result: dict[str, Any] = {
        "status": "ok",
        **_median_of(runs),
        "peak_rss_mb": round(peak, 1),
        "half_rate": half,
        "p99_ms_at_half_rate": half.get("p99_ms"),
        "sink_shares": [round(t / grand, 4) if grand else None for t in totals],
        "runs": [_round_run(r) for r in runs],
        "info": system.info,
    }
    if profile:
        result["profile"] = profile
    if sinks.inexact_requests:
        result["inexact_sink_requests"] = sinks.inexact_requests
    return result


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "delivered_msgs_per_s",
        "accepted_msgs_per_s",
        "p50_ms",
        "p99_ms",
        "cpu_s_per_million",
        "cpu_s",
        "cpu_user_s",
        "cpu_sys_s",
        "loadgen_cpu_s",
        "sink_cpu_s",
        "acked_msgs_per_s_by_metrics",
    )
    out: dict[str, Any] = {}
    for k in keys:
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = round(statistics.median(vals), 3) if vals else None
    return out


def _round_run(r: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}


# ---------------------------------------------------------------- reporting


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    return format(v, spec)


def print_table(systems: dict[str, dict[str, Any]], out: Callable[[str], None] = print) -> None:
    cols = (
        "system",
        "delivered msg/s",
        "accepted msg/s",
        "p50 ms",
        "p99 ms",
        "p99@half ms",
        "CPU s/M msg",
        "peak RSS MB",
        "x nginx",
    )
    rows = []
    notes = []
    for name, s in systems.items():
        if s.get("status") != "ok":
            rows.append((name, s.get("status", "unavailable"), "", "", "", "", "", "", ""))
            notes.append(f"{name}: {s.get('reason', '')}")
            continue
        backend = s.get("info", {}).get("backend")
        rows.append(
            (
                f"{name} [{backend}]" if backend else name,
                fmt(s["delivered_msgs_per_s"], ",.0f"),
                fmt(s["accepted_msgs_per_s"], ",.0f"),
                fmt(s["p50_ms"], ".2f"),
                fmt(s["p99_ms"], ".2f"),
                fmt(s.get("p99_ms_at_half_rate"), ".2f"),
                fmt(s["cpu_s_per_million"], ".3f"),
                fmt(s["peak_rss_mb"], ".1f"),
                fmt(s.get("ratio_to_nginx"), ".3f"),
            )
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True)))
    out(line)
    out("-" * len(line))
    for r in rows:
        out("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    for n in notes:
        out(f"  note: {n}")
    for name, s in systems.items():
        if s.get("ratio_to_plain") is not None:
            out(f"  {name}: {s['ratio_to_plain']:.3f} x logdist-memory, plain HTTP ingest (delivered msg/s)")
        if s.get("ratio_to_base") is not None:
            out(f"  {name}: {s['ratio_to_base']:.3f} x {name}{BASE_SUFFIX} (delivered msg/s)")


# ---------------------------------------------------------------- modes


@contextlib.contextmanager
def workspace(args: argparse.Namespace) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="logdist-bench-", dir=args.workdir))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        if args.keep:
            log(f"kept work dir {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def write_body(root: Path) -> Payload:
    body, msg_bytes, pkt_bytes = make_packet_template()
    path = root / "packet.json"
    path.write_text(body)
    return Payload(path, msg_bytes, pkt_bytes)


def selected_systems(args: argparse.Namespace) -> list[str]:
    """--systems, plus logdist-memory@base and logdist-wal@base when --baseline-tree is given
    (each right after the system it is compared with, so drift hits both alike)."""
    selected = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.baseline_tree:
        for base in BASE_SYSTEMS:
            if base in selected:
                continue
            twin = base.removesuffix(BASE_SUFFIX)
            selected.insert(selected.index(twin) + 1 if twin in selected else len(selected), base)
    formats = [f.strip() for f in getattr(args, "formats", "batch").split(",") if f.strip()]
    out: list[str] = []
    for s in selected:  # each logdist system once per format (the other systems know no format)
        if s.startswith("logdist") and FORMAT_SEP not in s:
            out += [s if f == "batch" else f"{s}{FORMAT_SEP}{f}" for f in formats]
        else:
            out.append(s)
    return out


def _check_systems(selected: list[str], args: argparse.Namespace) -> str | None:
    """Why the selection cannot run, or None."""
    known = SYSTEMS + EXTRA_SYSTEMS + BASE_SYSTEMS
    bad_formats = [s for s in selected if split_format(s)[1] not in FORMATS]
    if bad_formats:
        return f"unknown format in {', '.join(bad_formats)} (choose from {', '.join(FORMATS)})"
    unknown = [s for s in selected if split_format(s)[0] not in known]
    if unknown:
        return f"unknown system(s): {', '.join(unknown)} (choose from {', '.join(known)})"
    if any(split_format(s)[0] in BASE_SYSTEMS for s in selected):
        if not args.baseline_tree:
            return f"{', '.join(BASE_SYSTEMS)} need --baseline-tree DIR"
        if not (Path(args.baseline_tree) / "python" / "logdist" / "__main__.py").is_file():
            return f"--baseline-tree {args.baseline_tree}: no python/logdist/ source tree there"
    return None


def add_ratios(systems: dict[str, dict[str, Any]]) -> None:
    """Each system against nginx; wal against memory; Rust against pure Python; after against @base."""
    ref = systems.get("nginx", {}).get("delivered_msgs_per_s")
    for s in systems.values():
        if s.get("status") == "ok":
            s["ratio_to_nginx"] = round(s["delivered_msgs_per_s"] / ref, 4) if ref else None
    if "logdist-memory" in systems and "logdist-wal" in systems:
        mem = systems["logdist-memory"].get("delivered_msgs_per_s")
        wal = systems["logdist-wal"].get("delivered_msgs_per_s")
        if mem and wal:
            systems["logdist-wal"]["ratio_to_memory"] = round(wal / mem, 4)
    plain, tls = systems.get("logdist-memory", {}), systems.get("logdist-memory-tls", {})
    if plain.get("delivered_msgs_per_s") and tls.get("delivered_msgs_per_s"):  # the cost of TLS ingest
        tls["ratio_to_plain"] = round(tls["delivered_msgs_per_s"] / plain["delivered_msgs_per_s"], 4)
    for mode in ("memory", "wal"):
        rs, py = systems.get(f"logdist-{mode}", {}), systems.get(f"logdist-{mode}-py", {})
        if rs.get("delivered_msgs_per_s") and py.get("delivered_msgs_per_s"):
            rs["ratio_to_pure_python"] = round(rs["delivered_msgs_per_s"] / py["delivered_msgs_per_s"], 2)
        base = systems.get(f"logdist-{mode}{BASE_SUFFIX}", {})
        if rs.get("delivered_msgs_per_s") and base.get("delivered_msgs_per_s"):
            rs["ratio_to_base"] = round(rs["delivered_msgs_per_s"] / base["delivered_msgs_per_s"], 4)


def _measure_all(
    selected: list[str], payload: Payload, args: argparse.Namespace, root: Path
) -> dict[str, dict[str, Any]]:
    """Each system in turn; one that cannot run or fails is reported, not fatal."""
    systems: dict[str, dict[str, Any]] = {}
    for name in selected:
        try:
            systems[name] = measure(name, args.sinks, payload, args, root)
        except Unavailable as exc:
            reason = str(exc).strip()
            log(f"{name}: unavailable: {reason}")
            systems[name] = {"status": "unavailable", "reason": reason}
        except Exception as exc:
            log(f"{name}: failed: {exc}")
            systems[name] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    return systems


def run_throughput(args: argparse.Namespace) -> int:
    selected = selected_systems(args)
    problem = _check_systems(selected, args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    with workspace(args) as root:
        payload = write_body(root)
        log(
            f"payload: {MESSAGES_PER_PACKET} messages x {payload.msg_bytes} B = {payload.pkt_bytes} B packets; "
            f"sinks: {args.sinks}; wrk -t{args.wrk_threads} -c{args.connections}; {args.runs} x {args.duration:g}s "
            f"after {args.warmup:g}s warm-up; systems: {', '.join(selected)}"
        )
        load1 = os.getloadavg()[0]
        if load1 > 0.5 * (os.cpu_count() or 1):
            log(f"warning: load average {load1:.1f} on {os.cpu_count()} cpus: other work shares the cores")
        systems = _measure_all(selected, payload, args, root)
        add_ratios(systems)
        result = {
            "systems": systems,
            "setup": setup_info(args, payload.msg_bytes, payload.pkt_bytes),
        }
    print()
    print(
        f"logdist end-to-end bench: sinks={args.sinks}, {args.runs} x {args.duration:g}s runs (median), "
        f"{MESSAGES_PER_PACKET} x {payload.msg_bytes} B messages per packet, "
        f"wrk -t{args.wrk_threads} -c{args.connections}"
    )
    print_table(systems)
    write_json(args.out, result)
    return 0 if any(s.get("status") == "ok" for s in systems.values()) else 1


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out}")


def _fs_type(path: str) -> str:
    """Filesystem of the work dir (the WAL's fsyncs land there)."""
    with contextlib.suppress(OSError):
        cp = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True, check=False)
        return cp.stdout.strip()
    return "?"


def setup_info(args: argparse.Namespace, msg_bytes: int, pkt_bytes: int) -> dict[str, Any]:
    wrk_version = ""
    with contextlib.suppress(OSError, Unavailable):
        cp = subprocess.run([find_binary("wrk"), "-v"], capture_output=True, text=True)
        wrk_version = (cp.stdout + cp.stderr).strip().splitlines()[0]
    return {
        "payload": {
            "messages_per_packet": MESSAGES_PER_PACKET,
            "message_bytes": msg_bytes,
            "packet_bytes": pkt_bytes,
            "format": "JSON packet {packet_id, agent_id, emitter_id, timestamp, messages: [...]}",
            "ids": {
                "message": "packet_id and every message id unique per request",
                "packet": "packet_id unique per request, message ids repeat across packets",
                "static": "one fixed body (ids repeat)",
            }[args.id_mode],
        },
        "sinks": {
            "kind": args.sinks,
            "count": len(WEIGHTS),
            "weights": list(WEIGHTS),
            "detail": "one nginx, four servers answering 204 after reading the body, counted from access logs"
            if args.sinks == "nginx"
            else "four `logdist analyzer` processes, counted by GET /processed 'received'",
        },
        "load_generator": {
            "tool": wrk_version or "wrk",
            "script": "bench/wrk/post.lua (per-request body with unique ids)",
            "threads": args.wrk_threads,
            "connections": args.connections,
            "half_rate": f"wrk paced by the script's delay() hook (scheduled slots, {args.half_connections} "
            "connections) at half of the median sustained rate (min of accepted and delivered)",
        },
        "processes": {
            "logdist": f"logdist distributor --workers {args.logdist_workers} (SO_REUSEPORT, one supervisor); "
            "the -1w systems: one process",
            "nginx": f"{args.proxy_workers} worker processes",
            "haproxy": f"{args.proxy_workers} threads",
            **(
                {"logdist@base": f"the same, run from {Path(args.baseline_tree).resolve()}/python"}
                if args.baseline_tree
                else {}
            ),
        },
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "runs": args.runs,
        "statistic": "median of runs",
        "delivered": "messages counted at the sinks per second of the run window",
        "cpu": "utime+stime of all processes of the system under test, /proc/<pid>/stat, per million delivered",
        "peak_rss": "sum of VmHWM over the processes of the system under test",
        "machine": machine_info(),
        "workdir_filesystem": _fs_type(args.workdir or tempfile.gettempdir()),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_bounded(args: argparse.Namespace) -> int:
    """Every sink down (ports with nothing listening): logdist must answer 429 once full, and its
    RSS must level off rather than grow with the offered load."""
    name = "logdist-" + args.durability
    with workspace(args) as root:
        payload = write_body(root)
        sinks = Sinks("nginx", root, payload.msg_bytes, payload.pkt_bytes, args)  # ports picked, nothing started
        try:
            system = start_system(name, sinks, root, args)
        except Unavailable as exc:
            print(f"{name} unavailable: {exc}")
            return 1
        try:
            log(f"{name}: every sink down; driving it for {args.bounded_duration:g}s, sampling RSS each second")
            box, samples = _drive_sampling(system, payload.body_file, args)
            alive = system.proc.alive()
            peak = hwm_mb(system.pids())
        finally:
            system.proc.stop()
    if "err" in box:
        print(f"wrk failed: {box['err']}")
        return 1
    report = _bounded_report(name, args, box["res"], samples, alive, peak)
    _print_bounded(report, args)
    out = Path(args.out).with_name("bounded.json") if args.out == default_out() else Path(args.out)
    write_json(out, report)
    return 0 if report["bounded"] else 1


Sample = tuple[float, float, int | None]  # seconds since the start, RSS MB, queue size


def _drive_sampling(system: System, body_file: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[Sample]]:
    """wrk in a thread for --bounded-duration; RSS and queue size sampled each second meanwhile."""
    box: dict[str, Any] = {}
    samples: list[Sample] = []

    def drive() -> None:
        try:
            box["res"] = run_wrk(
                system.port, body_file, args, args.bounded_duration, count_status=True, scheme=system.scheme
            )
        except Exception as exc:  # reported by the caller
            box["err"] = exc

    t = threading.Thread(target=drive)
    t0 = time.monotonic()
    t.start()
    while t.is_alive():
        size = None
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            size = int(get_json(system.queue_url or "", timeout=1).get("size", 0))
        samples.append((time.monotonic() - t0, rss_mb(system.pids()), size))
        log(f"  t={samples[-1][0]:5.1f}s rss={samples[-1][1]:7.1f} MB queue={size}")
        time.sleep(1.0)
    t.join()
    return box, samples


def _bounded_report(
    name: str, args: argparse.Namespace, res: WrkResult, samples: list[Sample], alive: bool, peak: float
) -> dict[str, Any]:
    third = max(1, len(samples) // 3)
    mid_max = max(s[1] for s in samples[third : 2 * third] or samples)
    last_max = max(s[1] for s in samples[2 * third :] or samples)
    n429 = int(res.statuses.get("429", 0))
    return {
        "system": name,
        "duration_s": args.bounded_duration,
        "requests": res.requests,
        "statuses": res.statuses,
        "rss_mb_samples": [[round(a, 1), round(b, 1), c] for a, b, c in samples],
        "peak_rss_mb": round(peak, 1),
        "rss_mb_middle_third_max": round(mid_max, 1),
        "rss_mb_last_third_max": round(last_max, 1),
        "alive": alive,
        "bounded": alive and n429 > 0 and last_max <= mid_max * 1.10 + 5,
        "peak_within_256mb": peak <= 256,
    }


def _print_bounded(report: dict[str, Any], args: argparse.Namespace) -> None:
    n429 = int(report["statuses"].get("429", 0))
    peak, alive = report["peak_rss_mb"], report["alive"]
    print()
    print(f"{report['system']} with every sink down, {args.bounded_duration:g}s of wrk -c{args.connections}:")
    print(f"  responses: {report['statuses']}  (429 = {n429})")
    print(
        f"  RSS: max {report['rss_mb_middle_third_max']:.1f} MB in the middle third, "
        f"{report['rss_mb_last_third_max']:.1f} MB in the last third, peak (VmHWM) {peak:.1f} MB"
    )
    why = "" if alive else " (the process died)"
    if alive and not n429:
        why = " (no 429 yet: the queue never filled; try a longer --bounded-duration)"
    verdict = "BOUNDED" if report["bounded"] else "NOT BOUNDED"
    print(f"  verdict: {verdict}{why}; peak {'<=' if peak <= 256 else '>'} 256 MB")


def make_array_template() -> tuple[str, int, int]:
    """The analyzer's body: the packet's 250 messages as a bare JSON array (every id holds the
    placeholder, so wrk makes them unique per request), message bytes, body bytes as sent."""
    packet, msg_bytes, _ = make_packet_template()
    body = "[" + packet.split('"messages":[', 1)[1][:-1]
    sent = body.replace(PLACEHOLDER, "x" * TOKEN_WIDTH)
    assert len(json.loads(sent)) == MESSAGES_PER_PACKET
    return body, msg_bytes, len(sent)


def run_analyzer(args: argparse.Namespace) -> int:
    """One `logdist analyzer` (dedup on, default 1e6-id window) driven by wrk with POST /analyze
    of 250-message JSON arrays whose ids are unique per request. Reports messages/s processed
    (GET /processed, unique messages) and the analyzer's CPU seconds over each run, hence
    messages/s per core = processed / CPU seconds."""
    backend = "py" if args.pure else "rs"
    with workspace(args) as root:
        text, msg_bytes, body_bytes = make_array_template()
        body_file = root / "array.json"
        body_file.write_text(text)
        port = free_port()
        argv = [sys.executable, "-m", "logdist", "analyzer", "--id", "bench", "--port", str(port)]
        argv += ["--log-level", "WARNING"]
        proc = Proc("analyzer", argv, root / "analyzer.log", logdist_env(args)).start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, port, "/health")
            log(
                f"analyzer ({backend} core) on port {port}: {MESSAGES_PER_PACKET} x {msg_bytes} B messages per "
                f"{body_bytes} B body; wrk -t{args.wrk_threads} -c{args.connections}; {args.runs} x "
                f"{args.duration:g}s after {args.warmup:g}s warm-up"
            )
            if args.warmup > 0:
                run_wrk(port, body_file, args, args.warmup, path="/analyze")
            runs = [_analyzer_run(proc, port, body_file, args, k) for k in range(args.runs)]
            peak = hwm_mb(proc.pids())
            final = get_json(url + "/status")
        finally:
            proc.stop()
    result = _analyzer_result(args, backend, runs, peak, final, msg_bytes, body_bytes)
    _print_analyzer(result, args)
    name = f"analyzer-{backend}.json"
    write_json(Path(args.out).with_name(name) if args.out == default_out() else Path(args.out), result)
    return 0


def _analyzer_run(proc: Proc, port: int, body_file: Path, args: argparse.Namespace, k: int) -> dict[str, Any]:
    """One measured run: unique messages processed and the analyzer's CPU seconds around it."""
    url = f"http://127.0.0.1:{port}"
    before, cpu0 = get_json(url + "/processed"), cpu_times(proc.pids())
    res = run_wrk(port, body_file, args, args.duration, path="/analyze")
    after, cpu1 = get_json(url + "/processed"), cpu_times(proc.pids())
    processed = after["processed_count"] - before["processed_count"]
    cpu_s = (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])
    run = {
        "processed_msgs": processed,
        "duplicates": after["duplicates"] - before["duplicates"],
        "requests": res.requests,
        "status_errors": res.status_errors,
        "socket_errors": res.socket_errors,
        "duration_s": res.duration_s,
        "msgs_per_s": processed / res.duration_s,
        "cpu_s": cpu_s,
        "cpu_user_s": cpu1[0] - cpu0[0],
        "cpu_system_s": cpu1[1] - cpu0[1],
        "cpu_utilisation": cpu_s / res.duration_s,
        "msgs_per_cpu_s": processed / cpu_s if cpu_s else None,
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
    }
    log(
        f"  run {k + 1}: {run['msgs_per_s'] / 1e6:.3f} M msgs/s processed, {cpu_s:.2f} CPU s "
        f"({run['cpu_utilisation']:.0%} of a core) -> {(run['msgs_per_cpu_s'] or 0) / 1e6:.3f} M msgs/s "
        f"per core; p50 {res.p50_ms:.1f} ms, p99 {res.p99_ms:.1f} ms; errors {res.status_errors}"
    )
    return run


def _analyzer_result(
    args: argparse.Namespace,
    backend: str,
    runs: list[dict[str, Any]],
    peak: float,
    final: dict[str, Any],
    msg_bytes: int,
    body_bytes: int,
) -> dict[str, Any]:
    med = {k: statistics.median(r[k] for r in runs) for k in ("msgs_per_s", "cpu_utilisation", "p50_ms", "p99_ms")}
    per_core = statistics.median(r["msgs_per_cpu_s"] or 0.0 for r in runs)
    return {
        "mode": "analyzer",
        "backend": backend,
        "msgs_per_s": round(med["msgs_per_s"]),
        "msgs_per_cpu_s": round(per_core),
        "cpu_utilisation": round(med["cpu_utilisation"], 3),
        "p50_ms": med["p50_ms"],
        "p99_ms": med["p99_ms"],
        "peak_rss_mb": round(peak, 1),
        "dedup_window_ids": final.get("dedup_window"),
        "target_msgs_per_cpu_s": 1_000_000,
        "meets_target": per_core >= 1_000_000,
        "runs": runs,
        "setup": {
            "system": f"one `logdist analyzer` (dedup on, 1e6-id window, {backend} core), {sys.executable}",
            "body": f"JSON array of {MESSAGES_PER_PACKET} messages x {msg_bytes} B = {body_bytes} B, POST /analyze, "
            "every id unique per request (bench/wrk/post.lua)",
            "processed": "GET /processed processed_count (unique messages) before and after each run",
            "cpu": "utime+stime of the analyzer process over each run, /proc/<pid>/stat",
            "per_core": "processed messages / analyzer CPU seconds",
            "load_generator": f"wrk -t{args.wrk_threads} -c{args.connections}",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "runs": args.runs,
            "statistic": "median of runs",
            "machine": machine_info(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }


def _print_analyzer(result: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(
        f"logdist analyzer ({result['backend']} core), POST /analyze of {MESSAGES_PER_PACKET}-message arrays, "
        "unique ids:"
    )
    print(f"  processed:   {result['msgs_per_s']:>12,} msgs/s  (median of {args.runs} x {args.duration:g}s)")
    print(f"  analyzer CPU: {result['cpu_utilisation']:>11.0%} of one core")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"  per core:    {result['msgs_per_cpu_s']:>12,} msgs/s per CPU second ({verdict} the 1,000,000 target)")
    print(
        f"  latency:     p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
        f"peak RSS {result['peak_rss_mb']:.1f} MB"
    )


def default_out() -> str:
    return str(BENCH_DIR / "results" / "latest.json")


def run(args: argparse.Namespace) -> int:
    """Entry point shared by `python bench/e2e.py` and `logdist bench`."""
    if args.install_deps:
        subprocess.run(["bash", str(BENCH_DIR / "install-deps.sh")], check=True)
    if args.mode == "bounded":
        return run_bounded(args)
    if args.mode == "analyzer":
        return run_analyzer(args)
    return run_throughput(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/e2e.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
