"""OTLP/HTTP log ingest (`POST /v1/logs`), with real processes on loopback.

The client is the real OpenTelemetry Python SDK (LoggerProvider + the OTLP/HTTP log exporter)
behind the standard `logging` bridge (LoggingHandler), run in its own process. Its records go
through a real distributor to real analyzers: logdist analyzers (--record-ids), and recording
sinks (a small stdlib HTTP server in its own process that keeps every message it is sent), so
that each record's body, severity, attributes and trace id can be checked where it arrives.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from logdist.procs import free_port
from waiting import wait_until

from .conftest import Cluster, call, get

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}

# --- a recording analyzer: keeps every message it is sent -------------------------------------

SINK = r"""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

got, lock = [], threading.Lock()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, {"status": "ok"})
        if self.path == "/messages":
            with lock:
                return self.answer(200, list(got))
        self.answer(404, {"error": "not_found", "detail": self.path})

    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        msgs = doc if isinstance(doc, list) else doc.get("messages") or doc.get("log_messages") or [doc]
        with lock:
            got.extend(msgs)
        self.answer(200, {"accepted": len(msgs)})

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class Sink:
    """A recording analyzer process; `messages()` is every message it was sent."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        script = tmp / "sink.py"
        script.write_text(SINK)
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.port)])
        wait_until(self._up, 20, "the recording sink to listen")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _up(self) -> bool:
        assert self.proc.poll() is None, f"the sink exited with {self.proc.returncode}"
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def messages(self) -> list[dict[str, Any]]:
        return get(self.url + "/messages")  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Unreachable:
    """An analyzer's address where nothing listens."""

    url: str


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    """sinks(aid, port=None) -> a started Sink; all are stopped at teardown."""
    started: list[Sink] = []

    def start(aid: str, port: int | None = None) -> Sink:
        s = Sink(tmp_path, port)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def with_sinks(cluster: Cluster, sinks: Callable[..., Sink], n: int = 2, **cfg: Any) -> list[Sink]:
    """A distributor over `n` recording sinks of equal weight."""
    out = []
    for i in range(n):
        s = sinks(f"rec{i}")
        cluster.analyzers[f"rec{i}"] = s
        out.append(s)
    cluster.distributor({f"rec{i}": 1.0 for i in range(n)}, **cfg)
    return out


def arrived(cluster: Cluster, recs: list[Sink], n: int) -> list[dict[str, Any]]:
    """The unique messages (by id) at the sinks, once `n` have arrived."""

    def unique() -> dict[str, dict[str, Any]]:
        return {m["id"]: m for s in recs for m in s.messages()}

    wait_until(lambda: len(unique()) >= n, 30, f"{n} messages at the sinks")
    cluster.drained()
    return list(unique().values())


# --- the SDK client, in its own process --------------------------------------------------------

CLIENT = r"""
import json, logging, sys, warnings
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

url, n, compression = sys.argv[1], int(sys.argv[2]), sys.argv[3]
provider = LoggerProvider(resource=Resource.create({"service.name": "otlp-test", "deployment": "ci"}))
exporter = OTLPLogExporter(endpoint=url + "/v1/logs", timeout=30,
                           compression=Compression.Gzip if compression == "gzip" else Compression.NoCompression)
provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=64))
with warnings.catch_warnings():  # the SDK's own LoggingHandler is deprecated in favour of a contrib package
    warnings.simplefilter("ignore", DeprecationWarning)
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
log = logging.getLogger("otlp.client")
log.setLevel(logging.DEBUG)
log.addHandler(handler)
tracer = TracerProvider().get_tracer("otlp.client")
levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
spans = {}
for i in range(n):
    with tracer.start_as_current_span(f"op-{i % 7}") as span:
        ctx = span.get_span_context()
        log.log(levels[i % 5], "record %d", i, extra={"seq": i, "user": f"u{i % 3}", "ratio": i / 2})
        spans[i] = [format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")]
flushed = provider.force_flush(60_000)
provider.shutdown()
print(json.dumps({"flushed": flushed, "spans": spans}))
"""

# the logging levels the client uses in turn, as the SDK's bridge names them (severity_text)
LEVELS = ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
SEVERITY = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


def start_client(url: str, n: int, compression: str = "none") -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", CLIENT, url, str(n), compression]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def client_result(client: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    """(what the client printed, its stderr: the SDK's own log) once it has finished."""
    out, err = client.communicate(timeout=100)
    assert client.returncode == 0, err[-3000:]
    doc: dict[str, Any] = json.loads(out)
    assert doc["flushed"], f"the SDK did not flush: {err[-3000:]}"
    return doc, err


def run_client(url: str, n: int, compression: str = "none") -> dict[str, Any]:
    return client_result(start_client(url, n, compression))[0]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_sdk_logging_bridge_every_record_arrives_with_its_fields(
    cluster: Cluster, sinks: Callable[..., Sink], compression: str
) -> None:
    recs = with_sinks(cluster, sinks)
    n = 300
    spans = run_client(cluster.url, n, compression)["spans"]
    got = arrived(cluster, recs, n)
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for m in got:
        by_seq.setdefault(m["metadata"]["attributes"]["seq"], []).append(m)
    assert sorted(by_seq) == list(range(n))
    assert all(len(ms) == 1 for ms in by_seq.values()), "a record arrived under two ids"
    for seq, (m,) in by_seq.items():
        meta = m["metadata"]
        level = LEVELS[seq % 5]
        assert m["message"] == f"record {seq}"
        assert m["level"] == level
        assert m["source"] == "otlp-test"
        assert m["timestamp"].endswith("Z")
        assert meta["severity_number"] == SEVERITY[level]
        assert [meta["trace_id"], meta["span_id"]] == spans[str(seq)]
        assert meta["flags"] & 1 == 1  # the W3C sampled bit
        assert meta["attributes"]["user"] == f"u{seq % 3}"
        assert meta["attributes"]["ratio"] == seq / 2
        assert meta["attributes"]["code.function.name"] == "<module>"
        assert meta["resource"]["service.name"] == "otlp-test"
        assert meta["resource"]["deployment"] == "ci"
        assert meta["scope"]["name"] == "otlp.client"
        assert m["id"].startswith("otlp/")
    # both analyzers had a share; the distributor counted every message as accepted
    assert all(s.messages() for s in recs)
    assert cluster.metrics()["totals"]["accepted"] == n


def test_sdk_export_through_two_workers_in_wal_mode(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    """/v1/logs under --workers 2 with durability wal: stored in the log, then delivered once."""
    recs = [sinks(f"rec{i}") for i in range(2)]
    for i, s in enumerate(recs):
        cluster.analyzers[f"rec{i}"] = s
    cluster.distributor({"rec0": 1.0, "rec1": 1.0}, "--workers", "2", durability="wal")
    n = 200
    run_client(cluster.url, n)
    got = arrived(cluster, recs, n)
    assert sorted(m["metadata"]["attributes"]["seq"] for m in got) == list(range(n))
    assert cluster.metrics()["totals"]["accepted"] == n


def test_sdk_retries_429_until_the_distributor_has_room(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    """The analyzer is down and queue_size is 100: the SDK's second batch of 64 gets 429 +
    Retry-After, which the exporter honours and retries; once the analyzer is up, every record
    arrives, once."""
    port = free_port()
    cluster.analyzers["rec0"] = Unreachable(f"http://127.0.0.1:{port}")
    cluster.distributor({"rec0": 1.0}, queue_size=100, ejection_base_ms=100, ejection_max_ms=200)
    n = 300
    client = start_client(cluster.url, n)
    wait_until(lambda: cluster.metrics()["rejected_by_status"].get("429", 0) >= 1, 60, "a 429 to the SDK")
    rec = sinks("rec0", port=port)
    _, err = client_result(client)
    assert "Transient error" in err  # the exporter saw the 429 as retryable
    got = arrived(cluster, [rec], n)
    assert sorted(m["metadata"]["attributes"]["seq"] for m in got) == list(range(n))


def test_sdk_export_to_logdist_analyzers(cluster: Cluster) -> None:
    """The converted messages are what logdist's own analyzers take: each record is counted
    once, by level."""
    cluster.analyzer("a")
    cluster.analyzer("b")
    cluster.distributor({"a": 0.5, "b": 0.5})
    n = 250
    run_client(cluster.url, n)
    wait_until(lambda: len(cluster.ids("a")) + len(cluster.ids("b")) >= n, 30, f"{n} messages at the analyzers")
    cluster.drained()
    ids = cluster.ids("a") + cluster.ids("b")
    assert len(ids) == len(set(ids)) == n
    levels: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for aid in ("a", "b"):
        st = get(cluster.analyzers[aid].url + "/stats")
        levels.update(st["by_level"])
        sources.update(st["by_source"])
    assert levels == Counter({lv: n // 5 for lv in LEVELS})
    assert sources == Counter({"otlp-test": n})


# --- hand-built requests ---------------------------------------------------------------------

HAND_JSON: dict[str, Any] = {
    "resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "json-svc"}},
            {"key": "host.cores", "value": {"intValue": "8"}},
        ]},
        "scopeLogs": [{
            "scope": {"name": "hand", "version": "2.0"},
            "logRecords": [
                {"timeUnixNano": "1764614788123456789", "observedTimeUnixNano": "1764614788200000000",
                 "severityNumber": 17, "severityText": "ERROR", "body": {"stringValue": "disk full"},
                 "attributes": [
                     {"key": "disk", "value": {"stringValue": "/dev/sda"}},
                     {"key": "free", "value": {"intValue": "0"}},
                     {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"boolValue": True}]}}},
                     {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
                 ],
                 "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "eee19b7ec3c1b174", "flags": 1},
                {"observedTimeUnixNano": "1764614788300000000", "severityNumber": "SEVERITY_NUMBER_WARN",
                 "body": {"kvlistValue": {"values": [
                     {"key": "event", "value": {"stringValue": "login"}},
                     {"key": "ok", "value": {"boolValue": False}},
                     {"key": "ms", "value": {"doubleValue": 1.5}},
                 ]}},
                 "eventName": "user.login", "unknownFutureField": 7},
                {"time_unix_nano": 1764614788400000000, "severity_number": 9, "body": {"string_value": "snake"}},
            ],
        }],
    }],
}  # fmt: skip


def test_otlp_json_mapping(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    recs = with_sinks(cluster, sinks)
    status, doc, hdrs = call("POST", cluster.url + "/v1/logs", HAND_JSON)
    assert (status, doc) == (200, {})
    assert hdrs["content-type"].startswith("application/json")
    got = sorted(arrived(cluster, recs, 3), key=lambda m: m["id"])
    scope = {"name": "hand", "version": "2.0"}
    resource = {"service.name": "json-svc", "host.cores": 8}
    first, second, third = got
    assert first == {
        "id": first["id"], "message": "disk full", "level": "ERROR", "source": "json-svc",
        "timestamp": "2025-12-01T18:46:28.123456789Z",
        "metadata": {
            "observed_timestamp": "2025-12-01T18:46:28.200000000Z", "severity_number": 17,
            "severity_text": "ERROR", "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174", "flags": 1,
            "attributes": {"disk": "/dev/sda", "free": 0, "tags": ["a", True], "raw": "AAE="},
            "resource": resource, "scope": scope,
        },
    }  # fmt: skip
    assert second["message"] == '{"event":"login","ok":false,"ms":1.5}'
    assert second["level"] == "WARN"  # no severity_text: the short name of severity_number 13
    assert second["timestamp"] == "2025-12-01T18:46:28.300000000Z"  # no time: the observed time
    assert second["metadata"]["event_name"] == "user.login"
    assert "trace_id" not in second["metadata"]
    assert (third["message"], third["level"], third["timestamp"]) == ("snake", "INFO", "2025-12-01T18:46:28.400000000Z")
    # the same export again (a retry): acknowledged, not delivered twice
    status, doc, _ = call("POST", cluster.url + "/v1/logs", HAND_JSON)
    assert (status, doc) == (200, {})
    assert cluster.metrics()["totals"]["duplicate_packets"] == 1
    cluster.drained()
    assert sum(len(s.messages()) for s in recs) == 3


def record(seq: int, **kw: Any) -> LogRecord:
    return LogRecord(
        time_unix_nano=1_764_614_788_000_000_000 + seq, severity_number=9, body=AnyValue(string_value=f"r{seq}"),
        attributes=[KeyValue(key="seq", value=AnyValue(int_value=seq))], **kw,
    )  # fmt: skip


def request(*records: LogRecord) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="pb"))]),
        scope_logs=[ScopeLogs(scope=InstrumentationScope(name="s"), log_records=list(records))],
    )])  # fmt: skip


def test_partial_success_protobuf(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    recs = with_sinks(cluster, sinks)
    req = request(
        record(0, trace_id=bytes(16), span_id=bytes(8)),
        record(1, trace_id=b"short"),
        record(2, span_id=bytes(9)),
        LogRecord(severity_number=99, body=AnyValue(string_value="bad severity")),
        record(4),
    )
    status, raw, hdrs = post(cluster.url + "/v1/logs", req.SerializeToString(), PROTOBUF)
    assert status == 200
    assert hdrs["content-type"] == "application/x-protobuf"
    resp = ExportLogsServiceResponse.FromString(raw)
    assert resp.partial_success.rejected_log_records == 3
    assert "log_records[1]: trace_id of 5 bytes, expected 16" in resp.partial_success.error_message
    got = arrived(cluster, recs, 2)
    assert sorted(m["metadata"]["attributes"]["seq"] for m in got) == [0, 4]


def test_partial_success_json(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    recs = with_sinks(cluster, sinks)
    doc = json.loads(json.dumps(HAND_JSON))
    lrs = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    lrs[0]["traceId"] = "not hex at all"
    lrs[1]["severityNumber"] = 30
    status, answer, _ = call("POST", cluster.url + "/v1/logs", doc)
    assert status == 200
    part = answer["partialSuccess"]
    assert part["rejectedLogRecords"] == "2"  # int64 as a string, as the OTLP JSON mapping says
    assert "log_records[0]: trace_id or span_id is not hex" in part["errorMessage"]
    (m,) = arrived(cluster, recs, 1)
    assert m["message"] == "snake"
    # every record invalid: still 200 with the count, and nothing is queued
    status, answer, _ = call("POST", cluster.url + "/v1/logs", {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"spanId": "xyz"}]}]}]})  # fmt: skip
    assert status == 200 and answer["partialSuccess"]["rejectedLogRecords"] == "1"
    status, answer, _ = call("POST", cluster.url + "/v1/logs", {})  # an empty export
    assert (status, answer) == (200, {})


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    """One POST; (status, the raw body, headers)."""
    p = urlsplit(url)
    conn = http.client.HTTPConnection(p.hostname, p.port, timeout=30)
    try:
        conn.request("POST", p.path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def rpc_status(raw: Any, protobuf: bool) -> tuple[int, str, str]:
    """(code, ErrorInfo reason, message) of a google.rpc.Status body (bytes, or decoded JSON)."""
    st = status_pb2.Status()
    if protobuf:
        st.ParseFromString(raw)
    else:
        json_format.ParseDict(raw, st)
    info = error_details_pb2.ErrorInfo()
    assert st.details[0].Unpack(info)
    assert info.domain == "logdist"
    return st.code, info.reason, st.message


def test_bad_bodies_are_400_with_a_status(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    with_sinks(cluster, sinks, 1)
    url = cluster.url + "/v1/logs"
    status, raw, hdrs = post(url, b"\xff\xff\xff\xff", PROTOBUF)
    assert status == 400 and hdrs["content-type"] == "application/x-protobuf"
    code, reason, message = rpc_status(raw, protobuf=True)
    assert (code, reason) == (3, "bad_protobuf")  # INVALID_ARGUMENT
    assert message.startswith("bad_protobuf: ")
    status, doc, hdrs = call("POST", url, b"{not json", JSON)
    assert status == 400 and hdrs["content-type"].startswith("application/json")
    assert rpc_status(doc, protobuf=False)[:2] == (3, "bad_json")
    status, doc, _ = call("POST", url, {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "x"}]}]}]})
    assert status == 400 and rpc_status(doc, protobuf=False)[1] == "bad_otlp_json"
    status, doc, _ = call("POST", url, b"abc", {"Content-Type": "text/plain"})
    assert status == 415 and rpc_status(doc, protobuf=False)[1] == "unsupported_media_type"
    status, raw, _ = post(url, b"\x1f\x8b\x08\x00garbage", {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 400 and rpc_status(raw, protobuf=True)[1] == "bad_encoding"
    # gzip works for a hand-built export too
    body = gzip.compress(request(record(7)).SerializeToString())
    status, _, _ = call("POST", url, body, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 200
    assert cluster.metrics()["rejected_by_status"] == {"400": 4, "415": 1}


def test_too_many_records_is_413(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    with_sinks(cluster, sinks, 1, max_messages_per_packet=50)
    body = request(*(record(i) for i in range(51))).SerializeToString()
    status, raw, _ = post(cluster.url + "/v1/logs", body, PROTOBUF)
    assert status == 413 and rpc_status(raw, protobuf=True)[1] == "too_many_messages"


def test_large_export_is_converted_off_loop_and_all_arrives(cluster: Cluster, sinks: Callable[..., Sink]) -> None:
    """An export well over CONVERT_INLINE_BYTES (converted in the decode pool)."""
    recs = with_sinks(cluster, sinks)
    n = 3000
    body = request(*(record(i) for i in range(n))).SerializeToString()
    assert len(body) > 64 << 10
    status, _, _ = post(cluster.url + "/v1/logs", body, PROTOBUF)
    assert status == 200
    got = arrived(cluster, recs, n)
    assert sorted(m["metadata"]["attributes"]["seq"] for m in got) == list(range(n))


def test_full_distributor_is_429_with_retry_after(cluster: Cluster) -> None:
    """queue_size 5 and an analyzer that is down: the first export is held, the next one is
    refused with a retryable 429 + Retry-After, its body a RESOURCE_EXHAUSTED Status."""
    cluster.analyzers["gone"] = Unreachable(f"http://127.0.0.1:{free_port()}")
    cluster.distributor({"gone": 1.0}, queue_size=5)
    url = cluster.url + "/v1/logs"
    status, _, _ = post(url, request(*(record(i) for i in range(5))).SerializeToString(), PROTOBUF)
    assert status == 200
    for protobuf in (True, False):
        req = request(record(10 + protobuf))
        if protobuf:
            status, raw, hdrs = post(url, req.SerializeToString(), PROTOBUF)
        else:
            status, raw, hdrs = call("POST", url, json_format.MessageToDict(req))
        assert status == 429
        assert hdrs["retry-after"] == "1"
        code, reason, _ = rpc_status(raw, protobuf)
        assert (code, reason) == (8, "queue_full")  # RESOURCE_EXHAUSTED
