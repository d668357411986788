"""Hostile requests against real processes (issue 11): compressed bodies built to stall the
event loop, malformed HTTP that aiohttp's parser refuses before any handler, clients that go
away mid-body, weights that overflow, and control characters aimed at the logs.

Each case asserts its status, that the answer is a JSON error with "error" and "detail", and
that nothing else was lost: a good packet sent right after it is delivered. The suite runs on
both core backends (the whole pytest run is repeated with LOGDIST_PURE=1).
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import re
import signal
import socket
import threading
import zlib
from typing import Any
from urllib.parse import urlsplit

import pytest

from logdist.config import MAX_WEIGHT, ConfigError, parse_distributor_config
from logdist.logsetup import SafeFormatter, safe

from .conftest import Cluster, assert_zero_loss, call, get, packet, wait_until

J = {"Content-Type": "application/json"}
GOOD = json.dumps(packet(["z1", "z2"], "z", "z")).encode()
EMPTY_MEMBER = gzip.compress(b"")  # 20 bytes


def raw(url: str, data: bytes, timeout: float = 30.0) -> tuple[int, Any, dict[str, str]]:
    """Send `data` as it is (malformed HTTP too) and read one answer: (status, JSON or text, headers)."""
    p = urlsplit(url)
    with socket.create_connection((p.hostname, p.port), timeout=timeout) as sock:
        sock.sendall(data)
        r = http.client.HTTPResponse(sock)
        r.begin()
        body = r.read()
        try:
            doc: Any = json.loads(body)
        except ValueError:
            doc = body.decode("utf-8", "replace")
        return r.status, doc, {k.lower(): v for k, v in r.getheaders()}


def deflate(data: bytes, raw_deflate: bool = False) -> bytes:
    c = zlib.compressobj(wbits=-15 if raw_deflate else 15)
    return c.compress(data) + c.flush()


def is_json_error(status: int, doc: Any, hdrs: dict[str, str], want_status: int, want_code: str | None) -> bool:
    return (
        status == want_status
        and hdrs.get("content-type", "").startswith("application/json")
        and isinstance(doc, dict)
        and isinstance(doc.get("error"), str)
        and bool(doc.get("detail"))
        and (want_code is None or doc["error"] == want_code)
    )


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


# Malformed HTTP: refused by aiohttp's parser before any handler; every daemon answers JSON.
PROTOCOL: list[tuple[str, bytes, int, str]] = [
    ("bad request line", b"NOT AN HTTP REQUEST\r\n\r\n", 400, "bad_request_line"),
    ("header without colon", request("GET", "/health", "No colon here"), 400, "bad_header"),
    ("header too large", request("GET", "/health", "X-Big: " + "a" * 20_000), 431, "headers_too_large"),
    ("too many headers", request("GET", "/health", *(f"X-H{i}: v" for i in range(300))), 431, "headers_too_large"),
    (
        "length and chunked",
        request("POST", "/health", "Content-Length: 3", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
        "bad_framing",
    ),
    # aiohttp has no brotli decoder here (it would ask for one to be installed, in plain text)
    (
        "brotli body",
        request(
            "POST", "/logs", "Content-Type: application/json", "Content-Encoding: br", "Content-Length: 2", body=b"[]"
        ),
        415,
        "unsupported_encoding",
    ),
]
# Bad chunked framing, sent to ingest: the request line and headers are fine, the body is not.
BAD_CHUNKS = request(
    "POST", "/logs", "Content-Type: application/json", "Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"
)


def members(n: int) -> bytes:
    return EMPTY_MEMBER * n


BOMB = b" " * 3_000_000  # decodes past the cluster's max_decoded_bytes
CASES: list[tuple[str, dict[str, str], bytes, int, str]] = [
    ("too many gzip members", {**J, "Content-Encoding": "x-gzip"}, members(20_000), 413, "too_many_members"),
    ("too many members, gzip", {**J, "Content-Encoding": "gzip"}, members(2_000), 413, "too_many_members"),
    ("gzip bomb", {**J, "Content-Encoding": "gzip"}, gzip.compress(BOMB), 413, "too_large"),
    ("x-gzip bomb", {**J, "Content-Encoding": "x-gzip"}, gzip.compress(BOMB), 413, "too_large"),
    ("deflate bomb", {**J, "Content-Encoding": "deflate"}, deflate(BOMB), 413, "too_large"),
    ("truncated gzip", {**J, "Content-Encoding": "gzip"}, gzip.compress(GOOD)[:-12], 400, "bad_encoding"),
    ("truncated x-gzip", {**J, "Content-Encoding": "x-gzip"}, gzip.compress(GOOD)[:-12], 400, "bad_encoding"),
    ("truncated deflate", {**J, "Content-Encoding": "deflate"}, deflate(GOOD)[:-6], 400, "bad_encoding"),
    ("truncated raw deflate", {**J, "Content-Encoding": "deflate"}, deflate(GOOD, True)[:-4], 400, "bad_encoding"),
    ("corrupt gzip", {**J, "Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage-garbage", 400, "bad_encoding"),
    ("garbage after gzip", {**J, "Content-Encoding": "gzip"}, gzip.compress(GOOD) + b"tail", 400, "bad_encoding"),
    ("brotli", {**J, "Content-Encoding": "br"}, b"\x0b\x02\x80[]\x03", 415, "unsupported_encoding"),
    ("zstd", {**J, "Content-Encoding": "zstd"}, b"(\xb5/\xfd", 415, "unsupported_encoding"),
]


@pytest.fixture
def pair(cluster: Cluster) -> Cluster:
    cluster.analyzer("a1")
    cluster.analyzer("a2")
    cluster.distributor({"a1": 0.5, "a2": 0.5}, max_body_bytes=1_000_000, max_decoded_bytes=1_000_000)
    return cluster


class Good:
    """Good packets sent after each hostile case: all must reach an analyzer."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.sent: list[str] = []

    def send(self, tag: str) -> None:
        ids = [f"{tag}-{j}" for j in range(3)]
        st, doc, _ = call("POST", self.cluster.url + "/logs", packet(ids, "good", tag))
        assert st == 200, (tag, st, doc)
        self.sent += ids

    def delivered(self) -> None:
        self.cluster.drained()
        assert_zero_loss(self.sent, {a: self.cluster.ids(a) for a in self.cluster.analyzers})


def log_is_clean(text: str) -> None:
    """No traceback and no ERROR for a client's mistakes; no control character but newlines."""
    assert "Traceback" not in text, text[-3000:]
    assert " ERROR " not in text, text[-3000:]
    bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]
    assert not bad, f"raw control characters in the log: {sorted(set(bad))!r}"


def test_hostile_bodies_get_a_json_4xx_and_lose_nothing(pair: Cluster) -> None:
    good = Good(pair)
    wrong: list[str] = []
    for i, (name, headers, body, status, code) in enumerate(CASES):
        st, doc, hdrs = call("POST", pair.url + "/logs", body, headers, timeout=60)
        if not is_json_error(st, doc, hdrs, status, code):
            wrong.append(f"{name}: expected {status} {code}, got {st} {doc!r}")
        good.send(f"b{i}")
    st, doc, hdrs = raw(pair.url, BAD_CHUNKS)
    if not is_json_error(st, doc, hdrs, 400, None):
        wrong.append(f"bad chunked body: expected a 400 JSON error, got {st} {doc!r}")
    good.send("chunks")
    assert not wrong, "\n".join(wrong)
    good.delivered()
    m = pair.metrics()
    assert m["totals"]["rejected_requests"] >= len(CASES) + 1
    assert m["rejected_by_status"]["413"] >= 5 and m["rejected_by_status"]["415"] >= 2
    text = pair.dist.log.read_text() if pair.dist else ""
    log_is_clean(text)
    # one WARNING line per refused body, naming the status and code
    assert len(re.findall(r" WARNING refused POST /logs from \S+: 413 too_many_members", text)) == 2


def test_good_compressed_bodies_are_decoded(pair: Cluster) -> None:
    def body(tag: str) -> bytes:
        return json.dumps(packet([f"{tag}-1", f"{tag}-2"], "c", tag)).encode()

    sent: list[str] = []
    cases = {
        "gz": ("gzip", gzip.compress(body("gz"))),
        "xgz": ("x-gzip", gzip.compress(body("xgz"))),
        "zl": ("deflate", deflate(body("zl"))),
        "raw": ("deflate", deflate(body("raw"), raw_deflate=True)),
        # three members, and the zero padding some writers leave after the last one
        "multi": (
            "gzip",
            gzip.compress(body("multi")[:10]) + gzip.compress(body("multi")[10:]) + EMPTY_MEMBER + b"\x00" * 8,
        ),
    }
    for tag, (enc, data) in cases.items():
        st, doc, _ = call("POST", pair.url + "/logs", data, {**J, "Content-Encoding": enc})
        assert (st, doc.get("accepted")) == (200, 2), (tag, st, doc)
        sent += [f"{tag}-1", f"{tag}-2"]
    pair.drained()
    assert_zero_loss(sent, {a: pair.ids(a) for a in pair.analyzers})


def test_health_answers_while_a_hostile_body_is_decoded(cluster: Cluster) -> None:
    """400,000 empty gzip members (8 MB), with a member bound high enough to decode them all:
    decoding runs off the event loop, so /health answers from another connection meanwhile;
    with the default bound the same body is refused 413."""
    cluster.analyzer("a1")
    cluster.distributor({"a1": 1.0}, max_encoded_members=1_000_000)
    hostile = members(400_000)
    answers: list[tuple[int, Any]] = []

    def send() -> None:
        st, doc, _ = call("POST", cluster.url + "/logs", hostile, {**J, "Content-Encoding": "x-gzip"}, timeout=300)
        answers.append((st, doc))

    t = threading.Thread(target=send, daemon=True)
    t.start()
    healths = 0
    while True:
        alive = t.is_alive()
        assert get(cluster.url + "/health")["status"] == "ok"
        healths += 1
        if not alive:
            break
    t.join()
    assert healths >= 1
    # all members decode to nothing: an empty body
    assert answers and answers[0][0] == 400 and answers[0][1]["error"] == "bad_json", answers
    # the default bound (1024 members) refuses it at once
    cluster.distributor({"a1": 1.0})
    st, doc, hdrs = call("POST", cluster.url + "/logs", hostile, {**J, "Content-Encoding": "x-gzip"}, timeout=60)
    assert is_json_error(st, doc, hdrs, 413, "too_many_members"), (st, doc)
    assert call("POST", cluster.url + "/logs", GOOD)[0] == 200


@pytest.mark.parametrize("role", ["distributor", "analyzer", "emitter"])
def test_malformed_http_gets_a_json_error_on_every_daemon(role: str, cluster: Cluster, spawn: Any) -> None:
    if role == "emitter":
        d = spawn("emitter", "--port", "{port}", "--url", "http://127.0.0.1:9/logs")
    elif role == "analyzer":
        d = cluster.analyzer("a1")
    else:
        cluster.analyzer("a1")
        d = cluster.distributor({"a1": 1.0})
    wrong: list[str] = []
    for name, data, status, code in PROTOCOL:
        st, doc, hdrs = raw(d.url, data)
        if not is_json_error(st, doc, hdrs, status, code):
            wrong.append(f"{name}: expected {status} {code}, got {st} {doc!r}")
        assert get(d.url + "/health")["status"] == "ok"
    assert not wrong, "\n".join(wrong)
    if role == "distributor":
        assert cluster.metrics()["rejected_by_status"]["431"] == 2
        assert call("POST", d.url + "/logs", GOOD)[0] == 200
        cluster.drained()
        assert_zero_loss(["z1", "z2"], {"a1": cluster.ids("a1")})
    log_is_clean(d.log.read_text())


@pytest.mark.parametrize("role", ["distributor", "analyzer"])
def test_a_client_gone_mid_body_is_a_499_warning(role: str, cluster: Cluster) -> None:
    a = cluster.analyzer("a1")
    d = cluster.distributor({"a1": 1.0}) if role == "distributor" else a
    path = "/logs" if role == "distributor" else "/analyze"
    p = urlsplit(d.url)
    for _ in range(3):
        with socket.create_connection((p.hostname, p.port), timeout=10) as sock:
            sock.sendall(
                request(
                    "POST", path, "Content-Type: application/json", "Content-Length: 100000", "Expect: 100-continue"
                )
            )
            # "100 Continue" comes once the request reached its handler: it is reading the body
            assert sock.recv(64).startswith(b"HTTP/1.1 100")
            sock.sendall(b'{"messages": [{"message": "')
    wait_until(lambda: d.log.read_text().count("499 client_closed") == 3, 30, "three 499 warnings")
    if role == "distributor":
        wait_until(lambda: cluster.metrics()["rejected_by_status"].get("499") == 3, 30, "499 counted")
        assert call("POST", d.url + "/logs", GOOD)[0] == 200
        cluster.drained()
        assert_zero_loss(["z1", "z2"], {"a1": cluster.ids("a1")})
    log_is_clean(d.log.read_text())


@pytest.mark.parametrize("role", ["analyzer", "emitter"])
def test_a_bad_gzip_body_is_a_400_and_one_warning(role: str, cluster: Cluster, spawn: Any) -> None:
    if role == "analyzer":
        d, path = cluster.analyzer("a1"), "/analyze"
    else:
        d, path = spawn("emitter", "--port", "{port}", "--url", "http://127.0.0.1:9/logs"), "/start"
    st, doc, hdrs = call("POST", d.url + path, b"not gzip at all", {**J, "Content-Encoding": "gzip"})
    assert is_json_error(st, doc, hdrs, 400, None), (st, doc)
    assert get(d.url + "/health")["status"] == "ok"
    wait_until(lambda: " WARNING " in d.log.read_text(), 10, "the warning")
    text = d.log.read_text()
    log_is_clean(text)
    assert text.count(" WARNING ") == 1, text


# --- weights ---------------------------------------------------------------------------------

BAD_WEIGHTS: list[tuple[str, bytes]] = [
    ("huge", b'{"weight": 1e308}'),
    ("over the bound", json.dumps({"weight": MAX_WEIGHT * 2}).encode()),
    ("negative", b'{"weight": -1}'),
    ("a string", b'{"weight": "1"}'),
]


def test_weights_that_would_overflow_are_refused_naming_the_field(pair: Cluster) -> None:
    good = Good(pair)
    url = pair.url + "/api/v1/analyzers"
    a1 = pair.analyzers["a1"].url
    for name, patch in BAD_WEIGHTS:
        st, doc, hdrs = call("PATCH", url + "/a1", patch, J)
        assert is_json_error(st, doc, hdrs, 400, "bad_analyzer") and doc["field"] == "weight", (name, st, doc)
        reg = {"id": "big", "url": a1, **json.loads(patch)}
        st, doc, hdrs = call("POST", url, reg)
        assert is_json_error(st, doc, hdrs, 400, "bad_analyzer") and doc["field"] == "weight", (name, st, doc)
        good.send(f"w-{name.replace(' ', '-')}")
    # a number JSON cannot hold as a double is refused as bad JSON
    st, doc, hdrs = call("PATCH", url + "/a1", b'{"weight": 1e999}', J)
    assert is_json_error(st, doc, hdrs, 400, None), (st, doc)
    # the two analyzers of the report, at the largest weight allowed: shares still defined
    for aid in ("a1", "a2"):
        st, doc, _ = call("PATCH", f"{url}/{aid}", {"weight": MAX_WEIGHT})
        assert st == 200 and doc["weight"] == MAX_WEIGHT
    good.send("w-max")
    assert [a["id"] for a in get(url)["analyzers"]] == ["a1", "a2"]
    good.delivered()


def test_a_bad_weight_is_refused_at_start_and_on_reload(cluster: Cluster, spawn: Any) -> None:
    cluster.analyzer("a1")
    path = cluster.write_config({"a1": 1e308})
    d = spawn("distributor", "--config", str(path), "--port", "{port}", wait=False)
    assert d.proc is not None and d.proc.wait(30) != 0
    assert "analyzers[0].weight" in d.log.read_text()
    d = cluster.distributor({"a1": 1.0})
    cluster.write_config({"a1": 1e308})
    d.signal(signal.SIGHUP)
    wait_until(lambda: "analyzers[0].weight" in d.log.read_text(), 30, "the reload refused")
    assert get(cluster.url + "/api/v1/analyzers")["analyzers"][0]["weight"] == 1.0
    assert call("POST", cluster.url + "/logs", GOOD)[0] == 200
    cluster.drained()
    assert_zero_loss(["z1", "z2"], {"a1": cluster.ids("a1")})


def test_config_weights_are_finite_and_bounded() -> None:
    base = {"analyzers": [{"id": "a", "url": "http://127.0.0.1:1", "weight": 1.0}]}
    for w in (1e308, float("inf"), float("nan"), -0.5, MAX_WEIGHT * 1.5):
        with pytest.raises(ConfigError) as err:
            parse_distributor_config({"analyzers": [{**base["analyzers"][0], "weight": w}]})
        assert err.value.key == "analyzers[0].weight"
    many = [{"id": f"a{i}", "url": "http://127.0.0.1:1", "weight": MAX_WEIGHT} for i in range(100)]
    assert len(parse_distributor_config({"analyzers": many}).analyzers) == 100
    zero = parse_distributor_config({"analyzers": [{**base["analyzers"][0], "weight": 0}]})
    assert zero.analyzers[0].weight == 0.0  # all zero stays allowed: traffic waits


# --- control characters ----------------------------------------------------------------------

BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("newline in url", {"id": "n1", "url": "http://127.0.0.1:1/\nFAKE ERROR line"}, "url"),
    ("tab in url", {"id": "n2", "url": "http://127.0.0.1:1\t/x"}, "url"),
    ("cr in endpoint", {"id": "n3", "endpoint": "http://127.0.0.1:1/analyze\r"}, "endpoint"),
    ("escape in id", {"id": "a\x1b[31mred", "url": "http://127.0.0.1:1"}, "id"),
    ("nul in id", {"id": "a\x00b", "url": "http://127.0.0.1:1"}, "id"),
    ("bidi override in id", {"id": "a\u202eb", "url": "http://127.0.0.1:1"}, "id"),
    ("line separator in id", {"id": "a\u2028b", "url": "http://127.0.0.1:1"}, "id"),
]


def test_control_characters_are_refused_and_never_reach_the_log(pair: Cluster) -> None:
    good = Good(pair)
    url = pair.url + "/api/v1/analyzers"
    for name, spec, key in BAD_SPECS:
        st, doc, hdrs = call("POST", url, spec)
        assert is_json_error(st, doc, hdrs, 400, "bad_analyzer") and doc["field"] == key, (name, st, doc)
        if key != "id":
            st, doc, hdrs = call("PATCH", url + "/a1", {key: spec[key]})
            assert is_json_error(st, doc, hdrs, 400, "bad_analyzer") and doc["field"] == key, (name, st, doc)
        good.send(f"c{len(good.sent)}")
    # request-derived text in a refusal is logged escaped: ESC in a header is refused by the
    # parser; a C1 control (NEL, U+0085) passes it and reaches ingest's refusal
    st, doc, hdrs = raw(
        pair.url, request("POST", "/logs", "Content-Type: text/\x1b[2Jx", "Content-Length: 2", body=b"[]")
    )
    assert is_json_error(st, doc, hdrs, 400, "bad_header"), (st, doc)
    st, doc, hdrs = raw(
        pair.url, request("POST", "/logs", "Content-Type: text/\xc2\x85FAKE", "Content-Length: 2", body=b"[]")
    )
    assert is_json_error(st, doc, hdrs, 415, "unsupported_media_type"), (st, doc)
    good.send("c-last")
    assert [a["id"] for a in get(url)["analyzers"]] == ["a1", "a2"]
    good.delivered()
    text = pair.dist.log.read_text() if pair.dist else ""
    log_is_clean(text)
    assert not any(line.startswith("FAKE") for line in text.splitlines())


def test_log_text_is_escaped() -> None:
    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, "id %s url %s", ("a\x1b[31m", "http://x/\nFAKE"), None
    )
    assert SafeFormatter("%(levelname)s %(message)s").format(record) == "WARNING id a\\x1b[31m url http://x/\\x0aFAKE"
    assert safe("a\nFAKE line\r\x1b[2J\x00\u202e\u2028z") == "a\\x0aFAKE line\\x0d\\x1b[2J\\x00\\u202e\\u2028z"
    assert safe("x" * 50, limit=10) == "x" * 10 + "..."
    assert safe("ünïcode, tabs aside, stays") == "ünïcode, tabs aside, stays"
