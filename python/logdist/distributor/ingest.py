"""The ingest handler (`POST /logs`, `POST /api/v1/logs`): HTTP-level checks, admission, placement.

Checks, in order: the content type (JSON types or a missing type -> JSON, NDJSON types ->
NDJSON, anything else 415), the declared length (413), Content-Encoding (other than gzip,
x-gzip, deflate or identity: 415), room for the body in the ingest buffer (`BodyBudget`,
ingest_buffer_bytes: the declared length is taken up front, a chunked body's bytes as they
arrive; no room is a 429 with Retry-After, not a wait), the body read as sent under the app's
size bound (413) and within the connection's body timeout (408, see http.ConnectionLimits), then
decoded here, not by aiohttp: under bounds on the decoded size and on the number of members
(413), off the event loop when it is not small; a corrupt or truncated body is a 400. Then
`Admission.admit` checks, routes and stores the packet, and `Engine.place` queues its chunks.
A refusal is counted by status and logged as one WARNING line.

Loops: a request whose X-Logdist-Hop header (the distributors its messages passed through,
comma-separated; every delivery carries it, link.py) names this distributor's instance_id, or
names more than MAX_HOPS, is refused with 508 loop_detected before its body is read. The ids
it names go with its chunks, so a delivery names them too.

Acceptance is answered the way each endpoint's own clients expect, with the same JSON body:
200 on `POST /logs` (seed 000's emitter counts any other status as a failed send and retries),
202 on `POST /api/v1/logs` (seed 003's clients expect 202).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from logdist.distributor.admission import Admission, Admitted
from logdist.distributor.engine import ENGINE
from logdist.http import CLIENT_CLOSED, BodyTimeoutError, HttpError, error_reason, error_response, json_response
from logdist.logsetup import safe

log = logging.getLogger("logdist.distributor")

#: the application's admission
ADMISSION: web.AppKey[Admission] = web.AppKey("admission", Admission)

_RETRY_SOON = {"Retry-After": "1"}

#: the acceptance status of each ingest path (others: 202)
ACCEPTED_STATUS = {"/logs": 200}


class BodyBudget:
    """The bytes of request bodies being read or processed at once (from their head until
    their answer), under `bound` (ingest_buffer_bytes). A request takes its share with `take`
    and gives it all back when it is answered."""

    __slots__ = ("bound", "refused", "used")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.used = 0
        self.refused = 0  # requests answered 429 for want of room

    def take(self, n: int) -> bool:
        if self.used + n > self.bound:
            return False
        self.used += n
        return True

    def full(self) -> HttpError:
        self.refused += 1
        return HttpError(429, "ingest_busy",
                         f"{self.used} bytes of request bodies are being read, the bound is {self.bound} bytes "
                         "(ingest_buffer_bytes): retry later", _RETRY_SOON)  # fmt: skip


#: the application's ingest buffer budget
BODY_BUDGET: web.AppKey[BodyBudget] = web.AppKey("body_budget", BodyBudget)


class _Taken:
    """What one request took from the budget (given back when it is answered)."""

    __slots__ = ("budget", "n")

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.n = 0

    def take(self, n: int) -> None:
        if not self.budget.take(n):
            raise self.budget.full()
        self.n += n

    def give_back(self) -> None:
        self.budget.used -= self.n
        self.n = 0


_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
     "application/jsonlines", "application/json-lines"}
)  # fmt: skip
_JSON_TYPES = frozenset({"", "application/json", "text/json", "application/x-json"})


def body_format(content_type: str | None) -> str | None:
    """route_packet's format for a Content-Type header value; None when unsupported."""
    mt = (content_type or "").split(";", 1)[0].strip().lower()
    if mt in _JSON_TYPES or (mt.startswith("application/") and mt.endswith("+json")):
        return "auto"
    if mt in _NDJSON_TYPES:
        return "ndjson"
    return None


_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})

#: bodies up to this size are decoded on the event loop (a few ms at worst); larger ones in
#: the decode thread pool, so one hostile body cannot stall every other client
INLINE_DECODE_BYTES = 4096
#: input fed to zlib per call: small at each member's start, doubled up to the max, so a
#: member's leftover input (copied by zlib into unused_data) stays small: linear time even
#: for thousands of tiny members
_WINDOW_MIN, _WINDOW_MAX = 64, 64 << 10
#: decoding runs here, not in the loop's default executor: at most two bodies decode at once
_DECODERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")


def _decompressor(encoding: str, first: int) -> Any:
    if encoding != "deflate":
        return zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or zlib header, detected
    # "deflate" is a zlib stream (RFC 9110), but some clients send raw deflate: tell them
    # apart by the zlib header's compression method, as aiohttp and browsers do.
    return zlib.decompressobj(wbits=15 if first & 0x0F == 8 else -15)


def decode_body(data: bytes, encoding: str, max_out: int, max_members: int) -> bytes:
    """Decode a gzip (x-gzip) or deflate body, concatenated members too, in time linear in
    its input and output: at most `max_out` bytes out (else 413 too_large) from at most
    `max_members` members (else 413 too_many_members); a truncated or corrupt body is a 400."""
    if not data:
        return data
    view = memoryview(data)
    out: list[bytes] = []
    size = pos = members = 0
    while pos < len(data):
        members += 1
        if members > max_members:
            raise HttpError(413, "too_many_members", f"the body holds more than {max_members} compressed members")
        d = _decompressor(encoding, data[pos])
        window = _WINDOW_MIN
        while not d.eof:
            if pos >= len(data):
                raise HttpError(400, "bad_encoding", f"the {encoding} body is truncated")
            end = min(pos + window, len(data))
            try:
                piece = d.decompress(view[pos:end], max_out - size + 1)
            except zlib.error as exc:
                raise HttpError(400, "bad_encoding", f"cannot decode the {encoding} body: {exc}") from None
            size += len(piece)
            out.append(piece)
            if size > max_out or d.unconsumed_tail:
                raise HttpError(413, "too_large", f"the decoded body exceeds {max_out} bytes")
            pos = end - len(d.unused_data)
            window = min(window * 2, _WINDOW_MAX)
        if pos < len(data) and data[pos] == 0:  # zero padding after the last member (as gzip(1) allows)
            if data[pos:].strip(b"\x00"):
                raise HttpError(400, "bad_encoding", f"unexpected data after the {encoding} body")
            break
    return b"".join(out)


async def decode_off_loop(data: bytes, encoding: str, max_out: int, max_members: int) -> bytes:
    """decode_body, in the decode pool when the body is not small."""
    if len(data) <= INLINE_DECODE_BYTES:
        return decode_body(data, encoding, max_out, max_members)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_DECODERS, decode_body, data, encoding, max_out, max_members)


async def read_bounded(request: web.Request, limit: int, taken: _Taken | None = None) -> bytes:
    """The body, up to `limit` bytes (else 413); `taken`: a chunked body's bytes are taken from
    the ingest budget as they arrive (429 when there is no room)."""
    parts: list[bytes] = []
    size = 0
    stream = request.content
    try:
        while True:
            chunk = await stream.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "too_large", f"the body exceeds {limit} bytes")
            if taken is not None:
                taken.take(len(chunk))
            parts.append(chunk)
    except BodyTimeoutError as exc:
        raise HttpError(408, "body_timeout", f"{exc}: send the body at once, or a smaller one") from None
    except (ContentEncodingError, RequestPayloadError) as exc:
        raise HttpError(400, "bad_encoding", f"cannot read the body: {error_reason(exc)}") from None
    except ConnectionError as exc:
        raise HttpError(CLIENT_CLOSED, "client_closed", f"the client went away mid-body: {exc}") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


HOP_HEADER = "X-Logdist-Hop"
#: more distributors than this in X-Logdist-Hop is a loop (or a forgery): 508
MAX_HOPS = 8


def hops_of(request: web.Request, own: str | None) -> tuple[str, ...]:
    """The distributors the request's messages passed through; raises HttpError 508 when this
    one is among them (a loop), or when they are more than MAX_HOPS."""
    values = request.headers.getall(HOP_HEADER, [])
    if not values:
        return ()
    hops = tuple(dict.fromkeys(h.strip() for v in values for h in v.split(",") if h.strip()))
    if own is not None and own in hops:
        raise HttpError(508, "loop_detected", f"these messages have passed through this distributor already "
                        f"({HOP_HEADER}: {safe(','.join(hops), 300)})")  # fmt: skip
    if len(hops) > MAX_HOPS:
        raise HttpError(508, "loop_detected", f"{HOP_HEADER} names {len(hops)} distributors, more than {MAX_HOPS}")
    return hops


def _check_headers(request: web.Request, max_body_bytes: int) -> tuple[str, str]:
    """(route_packet's format, content encoding) of a request; raises HttpError (415, 413)."""
    fmt = body_format(request.headers.get("Content-Type"))
    if fmt is None:
        raise HttpError(415, "unsupported_media_type",
                        f"Content-Type {request.headers.get('Content-Type')!r}: send application/json or "
                        "application/x-ndjson")  # fmt: skip
    return fmt, check_length_and_encoding(request, max_body_bytes)


def check_length_and_encoding(request: web.Request, max_body_bytes: int) -> str:
    """The declared length within max_body_bytes (else 413) and a Content-Encoding we decode
    (else 415): the checks before any body byte is read, for every ingest route. Returns the
    encoding."""
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise HttpError(413, "too_large", f"body of {request.content_length} bytes exceeds {max_body_bytes}")
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc not in _ENCODINGS:
        raise HttpError(415, "unsupported_encoding", f"Content-Encoding {enc!r}: use gzip, deflate or identity")
    return enc


async def ingest(request: web.Request) -> web.Response:
    taken = _Taken(request.app[BODY_BUDGET])
    try:
        return await _ingest(request, taken)
    finally:
        taken.give_back()


async def _ingest(request: web.Request, taken: _Taken) -> web.Response:
    admission, engine = request.app[ADMISSION], request.app[ENGINE]
    cfg = engine.cfg
    try:
        hops = hops_of(request, cfg.instance_id)
        fmt, enc = _check_headers(request, cfg.max_body_bytes)
        declared = request.content_length
        if declared is not None:
            taken.take(declared)
        # the app turns aiohttp's own decoding off (build_app): the body is read as sent, then
        # decoded here under the byte and member bounds, off the loop when it is not small
        body = await read_bounded(request, cfg.max_body_bytes, None if declared is not None else taken)
        if enc not in ("", "identity"):
            body = await decode_off_loop(body, enc, cfg.max_decoded_bytes, cfg.max_encoded_members)
    except HttpError as exc:
        admission.refuse_request(exc.status)
        if exc.status != 429:  # backpressure is counted, not logged per request
            log.warning("refused %s %s from %s: %d %s: %s", request.method, safe(request.path, 100),
                        request.remote, exc.status, exc.code, safe(exc.detail))  # fmt: skip
        resp = error_response(exc.status, exc.code, exc.detail, exc.headers)
        if not request.content.is_eof():  # the rest of the body is not read: the connection ends
            resp.force_close()
        return resp
    verdict = await admission.admit(body, fmt)
    if isinstance(verdict, Admitted):
        for chunk in verdict.chunks.values():
            chunk.hops = hops
        engine.place(verdict)
        reply = verdict.reply()
    else:
        reply = verdict
    status = reply.status
    if status == 202:  # accepted (or a duplicate): as this endpoint's clients expect it
        status = ACCEPTED_STATUS.get(request.path, 202)
    return json_response(reply.payload, status, reply.headers)
