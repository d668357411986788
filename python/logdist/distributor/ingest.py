"""The ingest handler (`POST /logs`, `POST /api/v1/logs`): HTTP-level checks, admission, placement.

Checks, in order: the content type (JSON types or a missing type -> JSON, NDJSON types ->
NDJSON, anything else 415), the declared length (413), Content-Encoding (gzip decoded with a
bound on the decoded size, so a zip bomb gets 413; other encodings 415), the body read under
the app's size bound (413). Then `Admission.admit` checks, routes and stores the packet, and
`Engine.place` queues its chunks.
"""

from __future__ import annotations

import zlib

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from logdist.distributor.admission import Admission, Admitted
from logdist.distributor.engine import ENGINE
from logdist.http import HttpError, error_response, json_response

#: the application's admission
ADMISSION: web.AppKey[Admission] = web.AppKey("admission", Admission)

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


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decode gzip (concatenated members too) without producing more than `limit` bytes."""
    out: list[bytes] = []
    size = 0
    while True:
        d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
        try:
            piece = d.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise HttpError(400, "bad_gzip", f"cannot decode the gzip body: {exc}") from exc
        size += len(piece)
        out.append(piece)
        if size > limit:
            raise HttpError(413, "too_large", f"the decoded body exceeds {limit} bytes")
        if not d.eof:
            if d.unconsumed_tail:
                raise HttpError(413, "too_large", f"the decoded body exceeds {limit} bytes")
            raise HttpError(400, "bad_gzip", "the gzip body is truncated")
        data = d.unused_data
        if not data.strip(b"\x00"):
            return b"".join(out)


async def read_bounded(request: web.Request, limit: int) -> bytes:
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
            parts.append(chunk)
    except (ContentEncodingError, RequestPayloadError) as exc:
        raise HttpError(400, "bad_encoding", f"cannot decode the body: {exc}") from exc
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _check_headers(request: web.Request, max_body_bytes: int) -> tuple[str, str]:
    """(route_packet's format, content encoding) of a request; raises HttpError (415, 413)."""
    fmt = body_format(request.headers.get("Content-Type"))
    if fmt is None:
        raise HttpError(415, "unsupported_media_type",
                        f"Content-Type {request.headers.get('Content-Type')!r}: send application/json or "
                        "application/x-ndjson")  # fmt: skip
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise HttpError(413, "too_large", f"body of {request.content_length} bytes exceeds {max_body_bytes}")
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc not in _ENCODINGS:
        raise HttpError(415, "unsupported_encoding", f"Content-Encoding {enc!r}: use gzip, deflate or identity")
    return fmt, enc


async def ingest(request: web.Request) -> web.Response:
    admission, engine = request.app[ADMISSION], request.app[ENGINE]
    cfg = engine.cfg
    try:
        fmt, enc = _check_headers(request, cfg.max_body_bytes)
        # aiohttp decodes gzip/deflate while streaming, in bounded steps; the bound here is on
        # the decoded size, so a zip bomb stops at max_decoded_bytes with a 413.
        limit = cfg.max_body_bytes if enc in ("", "identity") else cfg.max_decoded_bytes
        body = await read_bounded(request, limit)
        if enc == "x-gzip":  # not decoded by aiohttp
            body = gunzip_bounded(body, cfg.max_decoded_bytes)
    except HttpError as exc:
        admission.refuse_request()
        return error_response(exc.status, exc.code, exc.detail)
    verdict = await admission.admit(body, fmt)
    if isinstance(verdict, Admitted):
        engine.place(verdict)
        reply = verdict.reply()
    else:
        reply = verdict
    return json_response(reply.payload, reply.status, reply.headers)
