"""HTTP helpers shared by every daemon and client: JSON answers, JSON errors, Retry-After.

One home for what each daemon used to spell on its own: a JSON response, the
`{"error": code, "detail": ...}` error shape of every 4xx/5xx, the middleware that answers
aiohttp's own errors (404, 405, 413 ...) in that shape, the runner that does the same for the
errors aiohttp's HTTP parser answers before any middleware runs (bad request line, bad headers,
bad chunked framing, headers too large, an encoding it cannot decode), and the Retry-After
header in both directions (read, with a cap, and written).

A client's mistake (a malformed request, a body that cannot be read, a client that goes away
mid-body) is answered 4xx (499 for the one that went away) and logged as one WARNING line;
only a fault of the daemon is a 500 with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from logdist.logsetup import safe

log = logging.getLogger("logdist.http")

#: Retry-After values above this are clamped, so one answer cannot park a sender for an hour
MAX_HONOURED_RETRY_AFTER = 60.0

#: aiohttp's own errors, by status, as stable machine-readable codes
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}

#: Called with the status of each request refused before or around the app's handlers (the
#: distributor counts them); an app that wants it stores it under this key.
ON_REFUSED: web.AppKey[Callable[[int], None]] = web.AppKey("on_refused")

#: a client that closed its connection before its request was read (nginx's code)
CLIENT_CLOSED = 499


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
        except (RequestPayloadError, hx.PayloadEncodingError) as exc:
            return refuse(request, 400, "bad_body", exc)
        except ConnectionError as exc:
            if _client_gone(request):
                return refuse(request, CLIENT_CLOSED, "client_closed", exc)
            return internal(request, exc)
        except Exception as exc:
            return internal(request, exc)

    def refuse(request: web.Request, status: int, code: str, exc: BaseException) -> web.Response:
        """A client's mistake: one WARNING line, a 4xx (499: it went away and reads no answer)."""
        log.warning("refused %s %s from %s: %d %s: %s", request.method, safe(request.path, 100), request.remote,
                    status, code, safe(error_reason(exc)))  # fmt: skip
        if on_error is not None:
            on_error(request, status)
        return error_response(status, code, f"cannot read the request body: {error_reason(exc)}")

    def internal(request: web.Request, exc: BaseException) -> web.Response:
        log.error("unhandled error on %s %s", request.method, safe(request.path, 100), exc_info=exc)
        return error_response(500, "internal", f"{type(exc).__name__}: {exc}")

    return middleware


def _client_gone(request: web.Request) -> bool:
    """True when the request's connection is closed (a ConnectionError from our own client
    calls, e.g. to a peer, is not the client's doing)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def describe_protocol_error(status: int, exc: BaseException | None, message: str | None) -> tuple[int, str, str]:
    """(status, code, detail) of an error aiohttp's server answers outside the app's handlers."""
    detail = message or (str(exc) if exc is not None else "") or "bad request"
    if status >= 500 or not isinstance(exc, hx.HttpProcessingError):
        code = "timeout" if status == 504 else "internal"
        return status, code, detail if status == 504 else "internal server error"
    if isinstance(exc, hx.ContentEncodingError):  # raised at the headers: no decoder for it
        m = re.search(r"content-encoding: ([^.]+)", detail)  # e.g. "brotli (br)"
        name = m[1] if m else "of the body"
        return 415, "unsupported_encoding", f"the Content-Encoding {name} is not supported: use gzip or deflate"
    if isinstance(exc, hx.LineTooLong) or "Too many headers" in detail:
        return 431, "headers_too_large", detail
    for kind, code in _PARSER_CODES:
        if isinstance(exc, kind):
            return status, code, detail
    # llhttp's errors are mostly plain BadHttpMessage: its reason (the first line) says which part
    reason = detail.split("\n", 1)[0].lower()
    for word, code in _PARSER_WORDS:
        if word in reason:
            return status, code, detail
    return status, "bad_request", detail


_PARSER_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (hx.TransferEncodingError, "bad_chunked_encoding"),
    (hx.ContentLengthError, "bad_content_length"),
    (hx.InvalidHeader, "bad_header"),
    (hx.BadStatusLine, "bad_request_line"),
    (hx.InvalidURLError, "bad_url"),
)
_PARSER_WORDS = (
    ("chunk", "bad_chunked_encoding"),
    ("content-length", "bad_framing"),  # e.g. both Content-Length and Transfer-Encoding
    ("transfer-encoding", "bad_framing"),
    ("header", "bad_header"),
)


_CLIENT_BODY_ERRORS = (RequestPayloadError, hx.PayloadEncodingError, ConnectionError)


def error_reason(exc: BaseException) -> str:
    """aiohttp's errors print as "400, message: ..." over two lines: their message alone."""
    message = getattr(exc, "message", None)
    return message.strip() if isinstance(message, str) and message.strip() else str(exc)


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, with its own error answers (text/plain or HTML) replaced
    by JSON errors, and a client's malformed request logged as one WARNING line."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # the answer has begun: only closing is left
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        status, code, detail = describe_protocol_error(status, exc, message)
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
        elif self._request_count == 1 and isinstance(exc, hx.BadHttpMethod):
            # not HTTP at all (TLS, a port scanner): aiohttp logs it at debug level too
            log.debug("not an HTTP request from %s: %s", request.remote, safe(detail))
        else:
            log.warning("refused a malformed request from %s: %d %s: %s", request.remote, status, code, safe(detail))
        on_refused = getattr(self._manager, "on_refused", None)
        if on_refused is not None and status < 500:
            on_refused(status)
        resp = error_response(status, code, detail)
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # After a handler answered a request whose body it could not read, aiohttp drains the
        # rest and meets the same error again: the handler logged it already, as one line.
        if isinstance(kw.get("exc_info"), _CLIENT_BODY_ERRORS):
            log.debug("the rest of a refused request body: %s", safe(kw["exc_info"]))
            return
        super().log_exception(*args, **kw)


class _JsonErrorServer(web.Server):
    on_refused: Callable[[int], None] | None = None

    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose connections answer every error as JSON (see JsonErrorHandler)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp has no hook for its protocol errors: its Server makes the connection
        # handler, so this one makes ours (the server is otherwise the app's own)
        server.__class__ = _JsonErrorServer
        if isinstance(server, _JsonErrorServer):
            server.on_refused = self.app.get(ON_REFUSED)
        return server


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
