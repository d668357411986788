"""OTLP logs: an `ExportLogsServiceRequest` converted to logdist messages (twin of
crates/wlb/src/otlp.rs).

This is the one Python implementation of the mapping (see the README's mapping table). It
decodes with the official generated classes of the `opentelemetry-proto` package; the Rust
core decodes the protobuf wire format itself and writes byte for byte the same JSON. OTLP JSON
bodies are parsed by the distributor (`json_format`) and converted here, by `messages`, on
both backends.
"""

from __future__ import annotations

import base64
import functools
import math
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from logdist._py.convert import as_count
from logdist.errors import PacketError

__all__ = ["MAX_VALUE_DEPTH", "Positions", "messages", "otlp_logs_to_messages"]

#: an AnyValue (body or attribute) nested deeper than this makes its record invalid
MAX_VALUE_DEPTH = 32

#: severity_number ranges (OTLP data model): the short name of each range's first number
_SEVERITY_NAMES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")

#: (resource, scope, record) positions of LogRecords in a request
Positions = set[tuple[int, int, int]]


class _Invalid(ValueError):
    """A LogRecord that cannot be taken: it is counted in partial_success, the rest go on."""


def _double(d: float) -> float | str:
    if math.isfinite(d):
        return d
    return "NaN" if d != d else ("Infinity" if d > 0 else "-Infinity")  # as the protobuf JSON mapping


def any_value(v: AnyValue, depth: int = 1) -> Any:
    """An AnyValue as plain JSON: kvlist -> object, array -> array, bytes -> base64 text,
    a non-finite double -> "NaN"/"Infinity"/"-Infinity", no value -> null."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return _double(v.double_value)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    if kind is None:
        return None
    if depth >= MAX_VALUE_DEPTH:
        raise _Invalid(f"a value is nested deeper than {MAX_VALUE_DEPTH} levels")
    if kind == "array_value":
        return [any_value(x, depth + 1) for x in v.array_value.values]
    return {kv.key: any_value(kv.value, depth + 1) for kv in v.kvlist_value.values}


def attributes(kvs: Any) -> dict[str, Any]:
    """Repeated KeyValue as a JSON object (a repeated key: the last one wins)."""
    return {kv.key: any_value(kv.value) for kv in kvs}


@functools.lru_cache(maxsize=4096)
def _second(sec: int) -> str:
    """The RFC 3339 text of a whole second (cached: the records of one export share a few)."""
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC text with nanoseconds."""
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{_second(sec)}{frac:09d}Z"


def severity_name(number: int) -> str:
    """The data model's short name of a severity number 1..24: INFO, INFO2 ... FATAL4."""
    base, step = divmod(number - 1, 4)
    return _SEVERITY_NAMES[base] + (str(step + 1) if step else "")


def _body(lr: LogRecord) -> str:
    if not lr.HasField("body"):
        return ""
    if lr.body.WhichOneof("value") == "string_value":
        return lr.body.string_value
    return orjson.dumps(any_value(lr.body)).decode()


def _ids(lr: LogRecord, meta: dict[str, Any]) -> None:
    if lr.trace_id:
        if len(lr.trace_id) != 16:
            raise _Invalid(f"trace_id of {len(lr.trace_id)} bytes, expected 16")
        meta["trace_id"] = lr.trace_id.hex()
    if lr.span_id:
        if len(lr.span_id) != 8:
            raise _Invalid(f"span_id of {len(lr.span_id)} bytes, expected 8")
        meta["span_id"] = lr.span_id.hex()


def log_record(lr: LogRecord, source: str | None, context: dict[str, Any]) -> dict[str, Any]:
    """One LogRecord as a logdist message (see the README's mapping table). `context`: the
    metadata of its resource and scope. Raises _Invalid."""
    number = lr.severity_number
    if not 0 <= number <= 24:
        raise _Invalid(f"severity_number {number} is outside 0..24")
    meta: dict[str, Any] = {}
    msg: dict[str, Any] = {"message": _body(lr)}
    level = lr.severity_text or (severity_name(number) if number else "")
    if level:
        msg["level"] = level
    if source is not None:
        msg["source"] = source
    t, observed = lr.time_unix_nano, lr.observed_time_unix_nano
    if t or observed:
        msg["timestamp"] = rfc3339(t or observed)
    if observed:
        meta["observed_timestamp"] = rfc3339(observed)
    if number:
        meta["severity_number"] = number
    if lr.severity_text:
        meta["severity_text"] = lr.severity_text
    if lr.event_name:
        meta["event_name"] = lr.event_name
    _ids(lr, meta)
    if lr.flags:
        meta["flags"] = lr.flags
    meta["attributes"] = attributes(lr.attributes)
    if lr.dropped_attributes_count:
        meta["dropped_attributes_count"] = lr.dropped_attributes_count
    meta.update(context)
    msg["metadata"] = meta
    return msg


def _resource_context(rl: Any) -> tuple[str | None, dict[str, Any]]:
    res = attributes(rl.resource.attributes)
    name = res.get("service.name")
    ctx: dict[str, Any] = {"resource": res}
    if rl.schema_url:
        ctx["resource_schema_url"] = rl.schema_url
    return (name if isinstance(name, str) else None), ctx


def _scope_context(sl: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {"name": sl.scope.name, "version": sl.scope.version}
    if len(sl.scope.attributes):
        scope["attributes"] = attributes(sl.scope.attributes)
    if sl.schema_url:
        scope["schema_url"] = sl.schema_url
    return {"scope": scope}


def messages(req: ExportLogsServiceRequest, invalid: Positions | None = None) -> tuple[list[Any], int, str]:
    """(the messages of the valid records, how many records were invalid, the first reason).
    `invalid`: (resource, scope, record) positions already known to be invalid."""
    out: list[Any] = []
    rejected = 0
    first = ""
    for i, rl in enumerate(req.resource_logs):
        try:
            source, res_ctx = _resource_context(rl)
        except _Invalid as exc:  # a resource attribute too deep: every record of it is invalid
            n = sum(len(sl.log_records) for sl in rl.scope_logs)
            rejected, first = rejected + n, first or f"resource_logs[{i}].resource: {exc}"
            continue
        for j, sl in enumerate(rl.scope_logs):
            try:
                ctx = {**res_ctx, **_scope_context(sl)}
            except _Invalid as exc:
                rejected, first = rejected + len(sl.log_records), first or f"scope_logs[{j}].scope: {exc}"
                continue
            for k, lr in enumerate(sl.log_records):
                try:
                    if invalid and (i, j, k) in invalid:
                        raise _Invalid("trace_id or span_id is not hex")
                    out.append(log_record(lr, source, ctx))
                except _Invalid as exc:
                    rejected += 1
                    first = first or f"resource_logs[{i}].scope_logs[{j}].log_records[{k}]: {exc}"
    return out, rejected, first


def record_count(req: ExportLogsServiceRequest) -> int:
    """How many LogRecords a request holds, valid or not."""
    return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)


def too_many(records: int, max_records: int) -> PacketError:
    return PacketError(
        "too_many_messages",
        f"{records} log records, the bound is {max_records} (max_messages_per_packet): export smaller batches",
    )


def otlp_logs_to_messages(body: bytes, max_records: int) -> tuple[bytes, int, int, str]:
    """A protobuf ExportLogsServiceRequest as (the JSON array of the messages of its valid
    records, how many, how many records were invalid, the first reason or "").

    Raises PacketError: "bad_protobuf" for a body that is not a request, "too_many_messages"
    for more than `max_records` log records (counted before conversion)."""
    max_records = as_count(max_records, "max_records")
    if not isinstance(body, bytes):
        if isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        else:
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
    req = ExportLogsServiceRequest()
    try:
        req.ParseFromString(body)
    except DecodeError as exc:
        raise PacketError("bad_protobuf", f"not an ExportLogsServiceRequest: {exc}") from None
    total = record_count(req)
    if total > max_records:
        raise too_many(total, max_records)
    msgs, rejected, first = messages(req)
    return orjson.dumps(msgs), len(msgs), rejected, first
