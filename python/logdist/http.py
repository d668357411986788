"""HTTP helpers shared by every daemon and client: JSON answers, JSON errors, Retry-After.

One home for what each daemon used to spell on its own: a JSON response, the
`{"error": code, "detail": ...}` error shape of every 4xx/5xx, the middleware that answers
aiohttp's own errors (404, 405, 413 ...) in that shape, and the Retry-After header in both
directions (read, with a cap, and written).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

log = logging.getLogger("logdist.http")

#: Retry-After values above this are clamped, so one answer cannot park a sender for an hour
MAX_HONOURED_RETRY_AFTER = 60.0

#: aiohttp's own errors, by status, as stable machine-readable codes
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class HttpError(Exception):
    """A request refused with a 4xx/5xx JSON error `{"error": code, "detail": detail}`."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.detail, self.headers)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, headers=headers, content_type="application/json")


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": code, "detail": detail}, status, headers)


def parse_retry_after(value: str | None, cap: float = MAX_HONOURED_RETRY_AFTER) -> float | None:
    """Seconds from a Retry-After header, clamped to [0, cap]; None when absent or not a
    number (an HTTP date: the caller falls back to its own backoff)."""
    if not value:
        return None
    try:
        v = float(value.strip())
    except ValueError:
        return None
    if v != v or v < 0:
        return None
    return min(v, cap)


def format_retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds as an integer, fractions as they are."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_errors(
    on_error: Callable[[web.Request, int], None] | None = None,
    code_of: Callable[[web.HTTPException], str] | None = None,
) -> Any:
    """Middleware: aiohttp's own errors answered as JSON errors (keeping Allow and
    Retry-After), and an unexpected exception logged and answered 500, never a crash.
    `on_error(request, status)` is called for each 4xx/5xx it answers (for counters).
    `code_of(exc)` names aiohttp's errors (default: HTTP_CODES, else `http_<status>`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if on_error is not None:
                on_error(request, exc.status)
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
            code = code_of(exc) if code_of is not None else HTTP_CODES.get(exc.status, f"http_{exc.status}")
            return error_response(exc.status, code, exc.text or exc.reason, headers)
        except HttpError as exc:
            if on_error is not None:
                on_error(request, exc.status)
            return exc.response()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal", f"{type(exc).__name__}: {exc}")

    return middleware


async def read_json_body(request: web.Request) -> Any:
    """The request body as JSON ({} when empty); 400 `bad_request` when it is not JSON."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "bad_request", f"bad JSON: {exc}") from exc


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty): 400 `bad_json` when it is not JSON,
    400 `bad_schema` when it is JSON but not an object (the analyzer's and emitter's codes)."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "bad_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise HttpError(400, "bad_schema", "body must be a JSON object")
    return doc
