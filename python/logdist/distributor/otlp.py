"""OTLP/HTTP log ingest (`POST /v1/logs`): OpenTelemetry LogRecords in, logdist messages out.

The request is an `ExportLogsServiceRequest`, as protobuf (`application/x-protobuf`) or in
the OTLP JSON mapping (`application/json`: lowerCamelCase or original field names, hex trace
and span ids, int64 as strings or numbers, enums as ints or names). It is decoded with the
official generated classes of the `opentelemetry-proto` package, not by hand.

The HTTP-level checks are those of native ingest (ingest.py): the declared length
(max_body_bytes, 413), Content-Encoding (gzip, x-gzip, deflate, identity; else 415), room in
the ingest buffer (429 + Retry-After), the body read under its bounds and decoded by the same
bounded decoder (max_decoded_bytes, max_encoded_members), off the event loop when not small.

The request is then converted to one logdist packet
`{"emitter_id":"otlp","packet_id":H,"messages":[...]}`, where H is a hash of the converted
messages: an exporter's retry of the same request is the same packet, which the packet
ledger acknowledges as a duplicate instead of storing it twice. The conversion runs in the
decode pool when the body is over CONVERT_INLINE_BYTES (16 KiB of protobuf, 1 KiB of JSON),
and its output counts against the ingest buffer and max_decoded_bytes. The packet goes through
`Admission.admit` and `Engine.place`, like any native packet: every queue bound, the WAL and
dedup apply.

Answers, as the OTLP specification says: 200 with an `ExportLogsServiceResponse` in the
request's encoding, with `partial_success` (`rejected_log_records`, `error_message`) when some
records are invalid (a trace id that is not 16 bytes, a span id that is not 8, a severity
number outside 0..24, a value nested deeper than MAX_VALUE_DEPTH); the valid ones are taken.
A refusal keeps logdist's status (400/408/413/415 not retryable; 429 and 503 with Retry-After,
which OTLP exporters retry) and its body is a `google.rpc.Status` in the request's encoding
(JSON when the encoding is not known), whose `details` hold a `google.rpc.ErrorInfo` with
logdist's error code as `reason` (domain "logdist") and the detail in its metadata.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from logdist.distributor.admission import Admitted, IngestReply
from logdist.distributor.engine import ENGINE
from logdist.distributor.ingest import (
    _DECODERS,
    _ENCODINGS,
    ADMISSION,
    BODY_BUDGET,
    _Taken,
    decode_off_loop,
    read_bounded,
)
from logdist.http import HttpError
from logdist.logsetup import safe

log = logging.getLogger("logdist.distributor")

#: the emitter_id of every converted packet (with the content hash as packet_id)
EMITTER_ID = "otlp"
#: decoded bodies up to this size are converted on the event loop (well under a millisecond);
#: larger ones in the decode pool. OTLP JSON costs about 15x more per byte (json_format).
CONVERT_INLINE_BYTES = {"protobuf": 16 << 10, "json": 1 << 10}
#: an AnyValue (body or attribute) nested deeper than this makes its record invalid
MAX_VALUE_DEPTH = 32

_PROTOBUF = "protobuf"
_JSON = "json"
_MEDIA_TYPES = {
    "application/x-protobuf": _PROTOBUF,
    "application/protobuf": _PROTOBUF,
    "application/json": _JSON,
}
_CONTENT_TYPES = {_PROTOBUF: "application/x-protobuf", _JSON: "application/json"}

#: severity_number ranges (OTLP data model): the short name of each range's first number
_SEVERITY_NAMES = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")

#: google.rpc.Code for each HTTP status logdist refuses with (UNKNOWN = 2 otherwise)
_RPC_CODES = {400: 3, 408: 4, 413: 3, 415: 3, 429: 8, 499: 1, 500: 13, 503: 14, 504: 4}

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


#: (resource, scope, record) positions of LogRecords in a request
Positions = set[tuple[int, int, int]]


class _Invalid(ValueError):
    """A LogRecord that cannot be taken: it is counted in partial_success, the rest go on."""


@dataclass(slots=True)
class Converted:
    """A request converted: the packet (None when no record was valid), and the counts."""

    packet: bytes | None
    records: int  # valid records, in the packet
    rejected: int
    error_message: str


# --- conversion ------------------------------------------------------------------------------


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


def _hex_to_base64(rec: dict[str, Any], key: str) -> bool:
    """OTLP JSON carries trace and span ids as hex, the protobuf JSON mapping as base64:
    rewrite rec[key] for json_format. False when it is not hex (the record is invalid)."""
    v = rec.get(key)
    if not isinstance(v, str):
        return True
    if not _HEX.fullmatch(v):
        del rec[key]
        return False
    rec[key] = base64.b64encode(bytes.fromhex(v)).decode("ascii")
    return True


def _fix_json_ids(doc: Any) -> Positions:
    """Rewrite the hex ids of an OTLP JSON request in place; the positions of bad ones. A
    request of another shape is left as it is, for json_format to refuse."""
    bad: Positions = set()
    for i, rl in enumerate(_items(doc, "resourceLogs", "resource_logs")):
        for j, sl in enumerate(_items(rl, "scopeLogs", "scope_logs")):
            for k, rec in enumerate(_items(sl, "logRecords", "log_records")):
                if not isinstance(rec, dict):
                    continue
                ok = True
                for key in ("traceId", "trace_id", "spanId", "span_id"):
                    ok = _hex_to_base64(rec, key) and ok
                if not ok:
                    bad.add((i, j, k))
    return bad


def _items(doc: Any, camel: str, snake: str) -> list[Any]:
    if not isinstance(doc, dict):
        return []
    v = doc.get(camel, doc.get(snake))
    return v if isinstance(v, list) else []


def decode_request(body: bytes, kind: str) -> tuple[ExportLogsServiceRequest, Positions]:
    """The request, and the positions of records whose ids are not hex (JSON only). Raises
    HttpError 400 for a body that is not an ExportLogsServiceRequest."""
    req = ExportLogsServiceRequest()
    if kind == _PROTOBUF:
        try:
            req.ParseFromString(body)
        except DecodeError as exc:
            raise HttpError(400, "bad_protobuf", f"not an ExportLogsServiceRequest: {exc}") from None
        return req, set()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "bad_json", f"the body is not JSON: {exc}") from None
    bad = _fix_json_ids(doc)
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise HttpError(400, "bad_otlp_json", f"not an OTLP JSON ExportLogsServiceRequest: {exc}") from None
    return req, bad


def convert(body: bytes, kind: str, max_records: int, max_bytes: int) -> Converted:
    """Decode and convert one request body. Raises HttpError: 400 for a bad body, 413 for more
    than `max_records` records or a packet over `max_bytes`."""
    req, bad = decode_request(body, kind)
    total = sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    if total > max_records:
        raise HttpError(413, "too_many_messages",
                        f"{total} log records, the bound is {max_records} (max_messages_per_packet): "
                        "export smaller batches")  # fmt: skip
    msgs, rejected, first = messages(req, bad)
    if not msgs:
        return Converted(None, 0, rejected, first)
    payload = orjson.dumps(msgs)
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    packet = b'{"emitter_id":"%s","packet_id":"%s","messages":%s}' % (EMITTER_ID.encode(), digest.encode(), payload)
    if len(packet) > max_bytes:
        raise HttpError(413, "too_large", f"the converted packet exceeds {max_bytes} bytes (max_decoded_bytes)")
    return Converted(packet, len(msgs), rejected, first)


async def convert_off_loop(body: bytes, kind: str, max_records: int, max_bytes: int) -> Converted:
    """convert, in the decode pool when the body is over CONVERT_INLINE_BYTES."""
    if len(body) <= CONVERT_INLINE_BYTES[kind]:
        return convert(body, kind, max_records, max_bytes)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_DECODERS, convert, body, kind, max_records, max_bytes)


# --- answers ---------------------------------------------------------------------------------


def _encode(msg: Message, kind: str) -> bytes:
    if kind == _PROTOBUF:
        return msg.SerializeToString()
    return orjson.dumps(json_format.MessageToDict(msg))


def success(kind: str, rejected: int = 0, error_message: str = "") -> web.Response:
    """200 with an ExportLogsServiceResponse, with partial_success when records were rejected."""
    resp = ExportLogsServiceResponse()
    if rejected or error_message:
        resp.partial_success.CopyFrom(
            ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=error_message)
        )
    return web.Response(body=_encode(resp, kind), status=200, content_type=_CONTENT_TYPES[kind])


def failure(
    kind: str | None, status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A refusal: a google.rpc.Status in the request's encoding (JSON when it is not known),
    with logdist's error code and detail in an ErrorInfo detail."""
    st = status_pb2.Status(code=_RPC_CODES.get(status, 2), message=f"{code}: {detail}")
    info = error_details_pb2.ErrorInfo(reason=code, domain="logdist", metadata={"detail": detail})
    st.details.add().Pack(info)
    enc = kind or _JSON
    return web.Response(body=_encode(st, enc), status=status, headers=headers, content_type=_CONTENT_TYPES[enc])


# --- the handler -----------------------------------------------------------------------------


def _media_kind(content_type: str | None) -> str:
    mt = (content_type or "").split(";", 1)[0].strip().lower()
    kind = _MEDIA_TYPES.get(mt)
    if kind is None:
        raise HttpError(415, "unsupported_media_type",
                        f"Content-Type {content_type!r}: send application/x-protobuf or application/json")  # fmt: skip
    return kind


def _take_converted(taken: _Taken, n: int) -> None:
    """Take the converted packet's bytes from the ingest buffer; a request alone in the buffer
    always gets them (so a packet that conversion makes larger than the bound still passes)."""
    budget = taken.budget
    if budget.used == taken.n:
        budget.used += n
        taken.n += n
    else:
        taken.take(n)


async def otlp_logs(request: web.Request) -> web.StreamResponse:
    """POST /v1/logs."""
    taken = _Taken(request.app[BODY_BUDGET])
    try:
        return await _otlp_logs(request, taken)
    finally:
        taken.give_back()


async def _read(request: web.Request, taken: _Taken, kind: str) -> Converted:
    """The checks of native ingest, then the conversion; raises HttpError."""
    cfg = request.app[ENGINE].cfg
    if request.content_length is not None and request.content_length > cfg.max_body_bytes:
        raise HttpError(413, "too_large", f"body of {request.content_length} bytes exceeds {cfg.max_body_bytes}")
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc not in _ENCODINGS:
        raise HttpError(415, "unsupported_encoding", f"Content-Encoding {enc!r}: use gzip, deflate or identity")
    declared = request.content_length
    if declared is not None:
        taken.take(declared)
    body = await read_bounded(request, cfg.max_body_bytes, None if declared is not None else taken)
    if enc not in ("", "identity"):
        body = await decode_off_loop(body, enc, cfg.max_decoded_bytes, cfg.max_encoded_members)
    conv = await convert_off_loop(body, kind, cfg.max_messages_per_packet, cfg.max_decoded_bytes)
    if conv.packet is not None:
        _take_converted(taken, len(conv.packet))
    return conv


async def _otlp_logs(request: web.Request, taken: _Taken) -> web.StreamResponse:
    admission, engine = request.app[ADMISSION], request.app[ENGINE]
    kind: str | None = None
    try:
        kind = _media_kind(request.headers.get("Content-Type"))
        conv = await _read(request, taken, kind)
    except HttpError as exc:
        admission.refuse_request(exc.status)
        if exc.status != 429:
            log.warning("refused %s %s from %s: %d %s: %s", request.method, safe(request.path, 100),
                        request.remote, exc.status, exc.code, safe(exc.detail))  # fmt: skip
        resp = failure(kind, exc.status, exc.code, exc.detail, exc.headers)
        if not request.content.is_eof():  # the rest of the body is not read: the connection ends
            resp.force_close()
        return resp
    if conv.rejected:
        log.info("OTLP export from %s: %d of %d log records rejected: %s", request.remote, conv.rejected,
                 conv.rejected + conv.records, safe(conv.error_message))  # fmt: skip
    if conv.packet is None:  # an empty request, or every record invalid
        return success(kind, conv.rejected, conv.error_message)
    verdict = await admission.admit(conv.packet, "json")
    if isinstance(verdict, Admitted):
        engine.place(verdict)
        return success(kind, conv.rejected, conv.error_message)
    return _refused(kind, verdict, conv)


def _refused(kind: str, reply: IngestReply, conv: Converted) -> web.Response:
    """Admission's answer other than a stored packet: a duplicate (an exporter's retry of a
    stored request) is a success; a refusal keeps its status and Retry-After."""
    if 200 <= reply.status < 300:
        return success(kind, conv.rejected, conv.error_message)
    p = reply.payload
    return failure(kind, reply.status, str(p.get("error", "refused")), str(p.get("detail", "")), reply.headers)
