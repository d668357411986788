"""otlp_logs_to_messages: the Rust decoder and converter against the twin (opentelemetry-proto
classes + orjson), byte for byte, on hypothesis-generated ExportLogsServiceRequests and on
truncated and garbled bodies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from logdist.errors import PacketError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_RECORDS = 10_000

# --- requests ---------------------------------------------------------------------------------

keys = st.one_of(st.sampled_from(["service.name", "a", "b", "k", "", "é", "\U0001f600"]), st.text(max_size=8))
texts = st.text(max_size=24)  # every code point but surrogates: astral ones, controls, NUL
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e15, 1e16, 1e-5, 5e-6, 0.1, 1e21, 5e-324, 1.7976931348623157e308]),
)
# A value is built in place from a spec (the classes refuse to copy one nested past upb's depth
# limit): ("leaf", AnyValue kwargs) | ("arr", [spec]) | ("kv", [(key, spec)]).
Spec = tuple[str, object]
leaves = st.one_of(
    texts.map(lambda s: {"string_value": s}),
    st.booleans().map(lambda b: {"bool_value": b}),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: {"int_value": n}),
    floats.map(lambda d: {"double_value": d}),
    st.binary(max_size=20).map(lambda b: {"bytes_value": b}),
    st.just({}),
    st.integers(min_value=0, max_value=9).map(lambda n: {"string_value_strindex": n}),
).map(lambda kw: ("leaf", kw))


def _container(children: list[Spec], kvlist: bool, ks: list[str]) -> Spec:
    return ("kv", list(zip(ks, children, strict=False))) if kvlist else ("arr", children)


values = st.recursive(
    leaves,
    lambda inner: st.builds(
        _container, st.lists(inner, max_size=4), st.booleans(), st.lists(keys, min_size=4, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def deep_values(draw: st.DrawFn) -> Spec:
    """A value nested 28..45 levels: around the limit (32) on both sides, and past upb's
    message depth limit (100) for the deepest."""
    v = draw(leaves)
    for _ in range(draw(st.integers(min_value=28, max_value=45))):
        v = _container([v], draw(st.booleans()), ["k"])
    return v


def fill(target: AnyValue, spec: Spec) -> None:
    kind, arg = spec
    if kind == "leaf":
        assert isinstance(arg, dict)
        for k, v in arg.items():
            setattr(target, k, v)
    elif kind == "arr":
        assert isinstance(arg, list)
        target.array_value.SetInParent()
        for child in arg:
            fill(target.array_value.values.add(), child)
    else:
        assert isinstance(arg, list)
        target.kvlist_value.SetInParent()
        for key, child in arg:
            fill(target.kvlist_value.values.add(key=key).value, child)


any_values = st.one_of(values, deep_values())
attributes = st.lists(st.tuples(keys, any_values), max_size=5)


def fill_attributes(target: object, attrs: list[tuple[str, Spec]]) -> None:
    for key, spec in attrs:
        fill(target.add(key=key).value, spec)  # type: ignore[attr-defined]


ids = st.one_of(
    st.just(b""), st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8), st.binary(max_size=20)
)
times = st.one_of(st.just(0), st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=2**62))
severities = st.one_of(st.integers(min_value=0, max_value=24), st.integers(min_value=-(2**31), max_value=2**31 - 1))


@st.composite
def log_records(draw: st.DrawFn) -> Callable[[LogRecord], None]:
    """Fills a LogRecord in place."""
    fields = dict(
        time_unix_nano=draw(times),
        observed_time_unix_nano=draw(times),
        severity_number=draw(severities),
        severity_text=draw(st.one_of(st.just(""), texts)),
        dropped_attributes_count=draw(st.one_of(st.just(0), st.integers(min_value=0, max_value=2**32 - 1))),
        flags=draw(st.one_of(st.just(0), st.integers(min_value=0, max_value=2**32 - 1))),
        trace_id=draw(ids),
        span_id=draw(ids),
        event_name=draw(st.one_of(st.just(""), texts)),
    )
    attrs = draw(attributes)
    body = draw(st.one_of(st.none(), any_values))

    def build(lr: LogRecord) -> None:
        for k, v in fields.items():
            setattr(lr, k, v)
        fill_attributes(lr.attributes, attrs)
        if body is not None:
            fill(lr.body, body)

    return build


@st.composite
def requests(draw: st.DrawFn) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        rl = req.resource_logs.add(schema_url=draw(st.one_of(st.just(""), texts)))
        if draw(st.booleans()):
            rl.resource.SetInParent()
            fill_attributes(rl.resource.attributes, draw(attributes))
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            sl = rl.scope_logs.add(schema_url=draw(st.one_of(st.just(""), texts)))
            for build in draw(st.lists(log_records(), max_size=4)):
                build(sl.log_records.add())
            if draw(st.booleans()):
                sl.scope.SetInParent()
                sl.scope.name, sl.scope.version = draw(texts), draw(texts)
                fill_attributes(sl.scope.attributes, draw(attributes))
    return req


def _outcome(impl: ModuleType, body: bytes, max_records: int = MAX_RECORDS) -> object:
    try:
        return impl.otlp_logs_to_messages(body, max_records)
    except PacketError as exc:
        return exc.code


def _same(rs: ModuleType, py: ModuleType, body: bytes) -> object:
    got, want = _outcome(rs, body), _outcome(py, body)
    assert got == want
    return want


# --- the tests --------------------------------------------------------------------------------


@SETTINGS
@given(req=requests())
def test_same_bytes_and_counts(rs: ModuleType, py: ModuleType, req: ExportLogsServiceRequest) -> None:
    out = _same(rs, py, req.SerializeToString())
    if out == "bad_protobuf":  # nested past upb's message depth limit
        return
    assert isinstance(out, tuple)
    payload, accepted, rejected, _ = out
    assert len(orjson.loads(payload)) == accepted
    assert accepted + rejected == sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)


@SETTINGS
@given(req=requests(), data=st.data())
def test_truncated_and_garbled_bodies(
    rs: ModuleType, py: ModuleType, req: ExportLogsServiceRequest, data: st.DataObject
) -> None:
    body = bytearray(req.SerializeToString())
    if not body:
        body = bytearray(b"\x0a\x00")
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    _same(rs, py, bytes(body[:cut]))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        body[at] = data.draw(st.integers(min_value=0, max_value=255))
    _same(rs, py, bytes(body))
    noise = data.draw(st.binary(max_size=64))
    _same(rs, py, noise)
    _same(rs, py, bytes(body) + noise)


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a\x05\x12\x03",  # a length past the end
        b"\x0a",  # a tag and no length
        b"\x00\x01",  # field number 0
        b"\x1c",  # an end-group outside a group
        b"\x1b\x08\x01",  # a group that does not end
        b"\x1e",  # wire type 6
        b"\x10" + b"\xff" * 10 + b"\x01",  # an 11-byte varint
        b"\x0a\x06\x12\x04\x1a\x02\xff\xfe",  # ScopeLogs.schema_url is not UTF-8
    ],
)
def test_malformed_bodies_raise_on_both(rs: ModuleType, py: ModuleType, body: bytes) -> None:
    assert _same(rs, py, body) == "bad_protobuf"


def _nested(levels: int) -> bytes:
    """A request whose one record's body is an array nested `levels` deep, as raw bytes (the
    classes refuse to build one past the message depth limit)."""

    def ld(field: int, payload: bytes) -> bytes:
        n, out = len(payload), bytearray([field << 3 | 2])
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes([*out, n]) + payload

    v = b"\x18\x01"
    for _ in range(levels):
        v = ld(5, ld(1, v))
    return ld(1, ld(2, ld(2, ld(5, v))))


@pytest.mark.parametrize("levels", [31, 32, 48, 49])
def test_value_depth_and_message_depth(rs: ModuleType, py: ModuleType, levels: int) -> None:
    out = _same(rs, py, _nested(levels))
    if levels <= 31:  # the innermost array at depth 31 (the body is depth 1)
        assert isinstance(out, tuple) and out[1:3] == (1, 0)
    elif levels <= 48:  # 100 sub-messages at most, as upb
        assert isinstance(out, tuple) and out[1:] == (
            0,
            1,
            "resource_logs[0].scope_logs[0].log_records[0]: a value is nested deeper than 32 levels",
        )
    else:
        assert out == "bad_protobuf"


def test_too_many_records(rs: ModuleType, py: ModuleType) -> None:
    req = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord()] * 3)])])
    body = req.SerializeToString()
    for impl in (rs, py):
        with pytest.raises(PacketError) as info:
            impl.otlp_logs_to_messages(body, 2)
        assert (info.value.code, info.value.detail) == (
            "too_many_messages",
            "3 log records, the bound is 2 (max_messages_per_packet): export smaller batches",
        )
    assert _same(rs, py, body)[1:] == (3, 0, "")  # type: ignore[index]


def test_arguments(rs: ModuleType, py: ModuleType) -> None:
    for impl in (rs, py):
        assert impl.otlp_logs_to_messages(bytearray(), 0) == (b"[]", 0, 0, "")
        with pytest.raises(TypeError, match="body must be bytes, not str"):
            impl.otlp_logs_to_messages("x", 1)
        with pytest.raises(ValueError, match="max_records must be >= 0, got -1"):
            impl.otlp_logs_to_messages(b"", -1)


CORPUS = sorted((Path(__file__).parents[2] / "crates" / "wlb-fuzz" / "corpus" / "otlp_logs").iterdir())


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_fuzz_corpus(rs: ModuleType, py: ModuleType, path: Path) -> None:
    """The libFuzzer target's seeds (crates/wlb-fuzz/fuzz_targets/otlp_logs.rs), on both backends."""
    _same(rs, py, path.read_bytes())


def test_many_repeated_keys(rs: ModuleType, py: ModuleType) -> None:
    """Over 16 keys (the Rust side indexes them): a repeated key keeps its first place and takes
    its last value, as a Python dict does."""
    req = ExportLogsServiceRequest()
    lr = req.resource_logs.add().scope_logs.add().log_records.add()
    for i in range(60):
        fill(lr.attributes.add(key=f"k{i * 7 % 23}").value, ("leaf", {"int_value": i}))
    out = _same(rs, py, req.SerializeToString())
    assert isinstance(out, tuple)
    attrs = orjson.loads(out[0])[0]["metadata"]["attributes"]
    assert list(attrs) == [f"k{i * 7 % 23}" for i in range(23)]
    assert attrs["k0"] == 46
