"""OTLP log ingest (`POST /v1/logs`) against native JSON ingest (`POST /logs`), side by side.

Two parts, both on the backend this interpreter loads (LOGDIST_PURE=1: the Python twin):

1. In process, one thread: log records per second through each step of the ingest path:
   OTLP protobuf decoding + conversion to logdist messages by each backend side by side
   (`otlp_logs_to_messages`: the Rust decoder of crates/wlb/src/otlp.rs, and the twin's
   opentelemetry-proto classes + orjson), the whole `otlp.convert` (+ packet id hash) for
   protobuf and OTLP JSON on the loaded backend, and `core.route_packet` of the converted
   packet (what native ingest does, and what OTLP ingest does after converting).
2. End to end: a real distributor (memory mode) with two real `logdist analyzer` processes,
   driven by client threads that POST pre-built, distinct bodies of the same records (so no
   request is a duplicate) for a fixed time; messages/s acknowledged (2xx), per format.

    .venv/bin/python bench/otlp.py [--records 512] [--duration 8] [--clients 2] [--no-e2e]

The records look like what the OTel SDK's logging bridge sends: a string body, severity,
timestamps, a trace and span id, and five attributes.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logdist import _py, core
from logdist.distributor import otlp
from logdist.procs import free_port

T0 = 1_764_614_788_000_000_000


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def otlp_request(n: int, salt: int) -> ExportLogsServiceRequest:
    records = [
        LogRecord(
            time_unix_nano=T0 + salt * n + i, observed_time_unix_nano=T0 + salt * n + i + 1000,
            severity_number=9, severity_text="INFO",
            body=AnyValue(string_value=f"GET /api/v1/items/{i} 200 in {i % 97} ms for user u{i % 31}"),
            trace_id=(salt * n + i).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"), flags=1,
            attributes=[_kv("seq", i), _kv("user", f"u{i % 31}"), _kv("ratio", i / 7),
                        _kv("code.function.name", "handle"), _kv("code.line.number", 42)],
        )
        for i in range(n)
    ]  # fmt: skip
    resource = Resource(attributes=[_kv("service.name", "bench"), _kv("host.name", "h1")])
    scope = InstrumentationScope(name="bench.logger", version="1.0")
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(scope=scope, log_records=records)])]
    )


def otlp_json(req: ExportLogsServiceRequest) -> bytes:
    """The OTLP JSON mapping of a request: json_format's, with hex trace and span ids."""
    doc = json_format.MessageToDict(req)
    for rl in doc["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for lr in sl["logRecords"]:
                for key in ("traceId", "spanId"):
                    if key in lr:
                        lr[key] = base64.b64decode(lr[key]).hex()
    return json.dumps(doc).encode()


def native_packet(n: int, salt: int) -> bytes:
    """A /logs packet carrying what the OTLP request carries, as logdist messages."""
    conv = otlp.convert(otlp_request(n, salt).SerializeToString(), "protobuf", 1 << 30, 1 << 40)
    assert conv.packet is not None
    doc = json.loads(conv.packet)
    doc["emitter_id"], doc["packet_id"] = "native", f"p{salt}"
    return json.dumps(doc).encode()


def rate(fn: Callable[[], Any], items: int, min_s: float = 1.0) -> float:
    """items/s over the fastest of the rounds run in about `min_s` seconds."""
    best = float("inf")
    spent = 0.0
    rounds = 0
    while spent < min_s or rounds < 3:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, rounds = min(best, dt), spent + dt, rounds + 1
    return items / best


def in_process(n: int) -> dict[str, float]:
    req = otlp_request(n, 1)
    pb = req.SerializeToString()
    js = otlp_json(req)
    conv = otlp.convert(pb, "protobuf", 1 << 30, 1 << 40)
    assert conv.packet is not None and conv.records == n
    packet = conv.packet
    native = native_packet(n, 1)
    out = {"otlp protobuf -> messages, Python twin": rate(lambda: _py.otlp_logs_to_messages(pb, 1 << 30), n)}
    try:
        from logdist import _wlb
    except ImportError as exc:  # LOGDIST_PURE=1 without a build: only the twin's figure
        print(f"(no Rust figure: logdist._wlb is not importable: {exc})")
    else:
        assert _wlb.otlp_logs_to_messages(pb, 1 << 30) == _py.otlp_logs_to_messages(pb, 1 << 30)
        out["otlp protobuf -> messages, Rust"] = rate(lambda: _wlb.otlp_logs_to_messages(pb, 1 << 30), n)
    return out | {
        f"otlp protobuf: otlp.convert ({core.BACKEND})": rate(
            lambda: otlp.convert(pb, "protobuf", 1 << 30, 1 << 40), n
        ),
        f"otlp json: otlp.convert ({core.BACKEND})": rate(lambda: otlp.convert(js, "json", 1 << 30, 1 << 40), n),
        "route_packet of the converted packet": rate(
            lambda: core.route_packet(packet, None, fallback_prefix="b/", max_messages=1 << 30), n
        ),
        "route_packet of a native packet": rate(
            lambda: core.route_packet(native, None, fallback_prefix="b/", max_messages=1 << 30), n
        ),
    }


# --- end to end ------------------------------------------------------------------------------


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def _drive(url: str, path: str, ctype: str, bodies: list[bytes], per_body: int, clients: int, secs: float) -> float:
    """Messages/s acknowledged: `clients` threads POST the bodies in turn for `secs` seconds."""
    port = int(url.rsplit(":", 1)[1])
    done = [0] * clients
    stop = time.monotonic() + secs

    def run(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k
        while time.monotonic() < stop:
            conn.request("POST", path, body=bodies[i % len(bodies)], headers={"Content-Type": ctype})
            r = conn.getresponse()
            r.read()
            if 200 <= r.status < 300:
                done[k] += per_body
                i += clients
            else:  # 429: back off a little, send the same body again
                time.sleep(0.01)
        conn.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(done) / (time.monotonic() - t)


def end_to_end(n: int, secs: float, clients: int) -> dict[str, float]:
    distinct = 64
    reqs = [otlp_request(n, s) for s in range(2, 2 + distinct)]
    formats = {
        "native JSON packet, POST /logs": ("/logs", "application/json", [native_packet(n, s) for s in range(distinct)]),
        "OTLP protobuf, POST /v1/logs": ("/v1/logs", "application/x-protobuf", [r.SerializeToString() for r in reqs]),
        "OTLP JSON, POST /v1/logs": ("/v1/logs", "application/json", [otlp_json(r) for r in reqs]),
    }
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, ctype, bodies) in formats.items():
            procs: list[subprocess.Popen[bytes]] = []
            try:
                aports = [free_port(), free_port()]
                for i, p in enumerate(aports):
                    procs.append(subprocess.Popen([sys.executable, "-m", "logdist", "analyzer", "--id", f"a{i}",
                                                   "--port", str(p)], stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))  # fmt: skip
                    _wait(f"http://127.0.0.1:{p}", procs[-1])
                cfg = Path(tmp) / "dist.json"
                analyzers = [{"id": f"a{i}", "url": f"http://127.0.0.1:{p}", "weight": 1} for i, p in enumerate(aports)]
                cfg.write_text(json.dumps({"analyzers": analyzers, "state_dir": str(Path(tmp) / "state")}))
                dport = free_port()
                procs.append(subprocess.Popen([sys.executable, "-m", "logdist", "distributor", "--config", str(cfg),
                                               "--port", str(dport)], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))  # fmt: skip
                url = f"http://127.0.0.1:{dport}"
                _wait(url, procs[-1])
                _drive(url, path, ctype, bodies[:4], n, clients, 1.0)  # warm-up
                out[name] = _drive(url, path, ctype, bodies, n, clients, secs)
            finally:
                for p in reversed(procs):
                    p.terminate()
                    p.wait(15)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=512, help="log records per request (the SDK's default batch)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load per format, end to end")
    ap.add_argument("--clients", type=int, default=2, help="client threads, end to end")
    ap.add_argument("--no-e2e", action="store_true", help="only the in-process part")
    args = ap.parse_args()
    print(f"backend {core.BACKEND}, {args.records} records per request, {os.cpu_count()} CPUs")
    print("\nin process, one thread (records/s):")
    for k, v in in_process(args.records).items():
        print(f"  {k:<44} {v:>12,.0f}")
    if not args.no_e2e:
        print(
            f"\nend to end, distributor + 2 analyzers, {args.clients} clients, {args.duration:g} s (messages/s acked):"
        )
        for k, v in end_to_end(args.records, args.duration, args.clients).items():
            print(f"  {k:<44} {v:>12,.0f}")


if __name__ == "__main__":
    main()
