"""OTLP/HTTP log ingest (`POST /v1/logs`): OpenTelemetry LogRecords in, logdist messages out.

The request is an `ExportLogsServiceRequest`, as protobuf (`application/x-protobuf`) or in
the OTLP JSON mapping (`application/json`: lowerCamelCase or original field names, hex trace
and span ids, int64 as strings or numbers, enums as ints or names).

A protobuf body is decoded and converted by the core, `core.otlp_logs_to_messages`: in Rust
(crates/wlb/src/otlp.rs, its own reader of the protobuf wire format, with the GIL released),
because the `opentelemetry-proto` classes cost about 7 us of Python object building per record
(150k records/s on one thread, against 2.5M/s for routing the converted packet), and Rust does
the same at about 1 us (870k records/s; bench/otlp.py). The pure-Python twin
(logdist/_py/otlp.py) decodes with the `opentelemetry-proto` classes and holds the one Python
mapping; the two give byte for byte the same messages and the same rejections
(tests/core/test_otlp_parity.py). An OTLP JSON body is parsed with `json_format` into those
classes and converted by that Python mapping, on both backends (json_format costs far more
than the conversion).

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
number outside 0..24, a value nested deeper than 32 levels); the valid ones are taken.
A refusal keeps logdist's status (400/408/413/415 not retryable; 429 and 503 with Retry-After,
which OTLP exporters retry) and its body is a `google.rpc.Status` in the request's encoding
(JSON when the encoding is not known), whose `details` hold a `google.rpc.ErrorInfo` with
logdist's error code as `reason` (domain "logdist") and the detail in its metadata.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from logdist import core
from logdist._py import otlp as py_otlp
from logdist._py.otlp import Positions
from logdist.distributor.admission import Admitted, IngestReply
from logdist.distributor.engine import ENGINE
from logdist.distributor.ingest import (
    _DECODERS,
    ADMISSION,
    BODY_BUDGET,
    _Taken,
    check_length_and_encoding,
    decode_off_loop,
    read_bounded,
)
from logdist.errors import PacketError
from logdist.http import HttpError
from logdist.logsetup import safe

log = logging.getLogger("logdist.distributor")

#: the emitter_id of every converted packet (with the content hash as packet_id)
EMITTER_ID = "otlp"
#: decoded bodies up to this size are converted on the event loop (well under a millisecond);
#: larger ones in the decode pool. OTLP JSON costs about 15x more per byte (json_format).
CONVERT_INLINE_BYTES = {"protobuf": 16 << 10, "json": 1 << 10}

_PROTOBUF = "protobuf"
_JSON = "json"
_MEDIA_TYPES = {
    "application/x-protobuf": _PROTOBUF,
    "application/protobuf": _PROTOBUF,
    "application/json": _JSON,
}
_CONTENT_TYPES = {_PROTOBUF: "application/x-protobuf", _JSON: "application/json"}

#: google.rpc.Code for each HTTP status logdist refuses with (UNKNOWN = 2 otherwise)
_RPC_CODES = {400: 3, 408: 4, 413: 3, 415: 3, 429: 8, 499: 1, 500: 13, 503: 14, 504: 4}

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


@dataclass(slots=True)
class Converted:
    """A request converted: the packet (None when no record was valid), and the counts."""

    packet: bytes | None
    records: int  # valid records, in the packet
    rejected: int
    error_message: str


# --- conversion ------------------------------------------------------------------------------


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


def decode_json(body: bytes) -> tuple[ExportLogsServiceRequest, Positions]:
    """An OTLP JSON request, and the positions of records whose ids are not hex. Raises
    HttpError 400 for a body that is not an ExportLogsServiceRequest."""
    req = ExportLogsServiceRequest()
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


def _json_messages(body: bytes, max_records: int) -> tuple[bytes, int, int, str]:
    """OTLP JSON as core.otlp_logs_to_messages answers for protobuf (the Python mapping on
    both backends: json_format's parsing costs far more than the conversion)."""
    req, bad = decode_json(body)
    total = py_otlp.record_count(req)
    if total > max_records:
        raise py_otlp.too_many(total, max_records)
    msgs, rejected, first = py_otlp.messages(req, bad)
    return orjson.dumps(msgs), len(msgs), rejected, first


def convert(body: bytes, kind: str, max_records: int, max_bytes: int) -> Converted:
    """Decode and convert one request body. Raises HttpError: 400 for a bad body, 413 for more
    than `max_records` records or a packet over `max_bytes`."""
    try:
        if kind == _PROTOBUF:
            payload, records, rejected, first = core.otlp_logs_to_messages(body, max_records)
        else:
            payload, records, rejected, first = _json_messages(body, max_records)
    except PacketError as exc:
        raise HttpError(exc.status, exc.code, exc.detail) from None
    if not records:
        return Converted(None, 0, rejected, first)
    digest = hashlib.blake2b(payload, digest_size=16).hexdigest()
    packet = b'{"emitter_id":"%s","packet_id":"%s","messages":%s}' % (EMITTER_ID.encode(), digest.encode(), payload)
    if len(packet) > max_bytes:
        raise HttpError(413, "too_large", f"the converted packet exceeds {max_bytes} bytes (max_decoded_bytes)")
    return Converted(packet, records, rejected, first)


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
    enc = check_length_and_encoding(request, cfg.max_body_bytes)
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
