"""The ingest handler (`POST /logs`, `POST /api/v1/logs`): HTTP-level checks, then the engine.

Checks, in order: the content type (JSON types or a missing type -> JSON, NDJSON types ->
NDJSON, anything else 415), the declared length (413), the body read under the app's size
bound (413), Content-Encoding (gzip decoded with a bound on the decoded size, so a zip bomb
gets 413; other encodings 415). Then `Distributor.accept` validates, routes and queues.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from logdist.distributor.engine import Distributor

DIST: web.AppKey[Distributor] = web.AppKey("distributor", Distributor)

_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines",
     "application/jsonlines", "application/json-lines"}
)  # fmt: skip
_JSON_TYPES = frozenset({"", "application/json", "text/json", "application/x-json"})


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": code, "detail": detail}, status, headers)


def body_format(content_type: str | None) -> str | None:
    """route_packet's format for a Content-Type header value; None when unsupported."""
    mt = (content_type or "").split(";", 1)[0].strip().lower()
    if mt in _JSON_TYPES or (mt.startswith("application/") and mt.endswith("+json")):
        return "auto"
    if mt in _NDJSON_TYPES:
        return "ndjson"
    return None


_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})


class DecodeError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decode gzip (concatenated members too) without producing more than `limit` bytes."""
    out: list[bytes] = []
    size = 0
    while True:
        d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
        try:
            piece = d.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise DecodeError(400, "bad_gzip", f"cannot decode the gzip body: {exc}") from exc
        size += len(piece)
        out.append(piece)
        if size > limit:
            raise DecodeError(413, "too_large", f"the decoded body exceeds {limit} bytes")
        if not d.eof:
            if d.unconsumed_tail:
                raise DecodeError(413, "too_large", f"the decoded body exceeds {limit} bytes")
            raise DecodeError(400, "bad_gzip", "the gzip body is truncated")
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
                raise DecodeError(413, "too_large", f"the body exceeds {limit} bytes")
            parts.append(chunk)
    except (ContentEncodingError, RequestPayloadError) as exc:
        raise DecodeError(400, "bad_encoding", f"cannot decode the body: {exc}") from exc
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def ingest(request: web.Request) -> web.Response:
    d = request.app[DIST]
    cfg = d.cfg
    fmt = body_format(request.headers.get("Content-Type"))
    if fmt is None:
        d.rejected_requests += 1
        return error(415, "unsupported_media_type",
                     f"Content-Type {request.headers.get('Content-Type')!r}: send application/json or "
                     "application/x-ndjson")  # fmt: skip
    if request.content_length is not None and request.content_length > cfg.max_body_bytes:
        d.rejected_requests += 1
        return error(413, "too_large", f"body of {request.content_length} bytes exceeds {cfg.max_body_bytes}")
    enc = request.headers.get("Content-Encoding", "").strip().lower()
    if enc not in _ENCODINGS:
        d.rejected_requests += 1
        return error(415, "unsupported_encoding", f"Content-Encoding {enc!r}: use gzip, deflate or identity")
    # aiohttp decodes gzip/deflate while streaming, in bounded steps; the bound here is on the
    # decoded size, so a zip bomb stops at max_decoded_bytes with a 413.
    limit = cfg.max_body_bytes if enc in ("", "identity") else cfg.max_decoded_bytes
    try:
        body = await read_bounded(request, limit)
        if enc == "x-gzip":  # not decoded by aiohttp
            body = gunzip_bounded(body, cfg.max_decoded_bytes)
    except DecodeError as exc:
        d.rejected_requests += 1
        return error(exc.status, exc.code, exc.detail)
    out = await d.accept(body, fmt)
    return json_response(out.payload, out.status, out.headers)
