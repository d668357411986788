"""HTTP helpers shared by every daemon and client: JSON answers, JSON errors, Retry-After.

One home for what each daemon used to spell on its own: a JSON response, the
`{"error": code, "detail": ...}` error shape of every 4xx/5xx, the middleware that answers
aiohttp's own errors (404, 405, 413 ...) in that shape, the runner that does the same for the
errors aiohttp's HTTP parser answers before any middleware runs (bad request line, bad headers,
bad chunked framing, headers too large, an encoding it cannot decode), and the Retry-After
header in both directions (read, with a cap, and written).

It also owns the bounds on connections (`ConnectionLimits`, applied by JsonErrorHandler): a
new connection must send a whole request head within `header_timeout_s` (slowloris), a body
must arrive within `body_timeout_s` of its head (else its reader gets `BodyTimeoutError`,
answered 408), an idle kept-alive connection is closed after aiohttp's `keepalive_timeout`,
and at most `max_connections` are served at once. Past that bound a few spare slots answer
`GET /health` and a JSON 503 (Retry-After) to anything else, then close; past the spare slots
a connection gets the same 503, written at once, and is closed without reading. The bounds
are per process (each worker of `--workers N` has its own).

A client's mistake (a malformed request, a body that cannot be read, a client that goes away
mid-body) is answered 4xx (499 for the one that went away) and logged as one WARNING line;
only a fault of the daemon is a 500 with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
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


class BodyTimeoutError(RequestPayloadError):
    """A request body that did not arrive within the connection's body_timeout_s."""


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
            return refuse(request, *_BODY_ERROR_CODES.get(type(exc), (400, "bad_body")), exc)
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
        return _body_refusal(status, code, f"cannot read the request body: {error_reason(exc)}")

    def internal(request: web.Request, exc: BaseException) -> web.Response:
        log.error("unhandled error on %s %s", request.method, safe(request.path, 100), exc_info=exc)
        return error_response(500, "internal", f"{type(exc).__name__}: {exc}")

    return middleware


#: a body that could not be read: (status, code) by the reader's error (else 400 bad_body)
_BODY_ERROR_CODES: dict[type[BaseException], tuple[int, str]] = {BodyTimeoutError: (408, "body_timeout")}


def _body_refusal(status: int, code: str, detail: str) -> web.Response:
    resp = error_response(status, code, detail)
    if status == 408:  # the rest of the body is not worth waiting for: the connection ends
        resp.force_close()
    return resp


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


#: a connection over max_connections gets this long to send its request head (for /health)
SPARE_HEADER_TIMEOUT_S = 2.0
#: fds kept for what is not a client connection (analyzer connections, log files, the event
#: loop): at least this many, or a quarter of RLIMIT_NOFILE
FD_RESERVE_MIN = 64
#: an operator is told at most this often that the bound is reached
_AT_BOUND_LOG_EVERY_S = 60.0


@dataclass(slots=True)
class ConnectionLimits:
    """A daemon's bounds on connections (one process; each worker of --workers N has its own),
    and their figures. `max_connections` are served; over it, `spare` more are let in to
    answer /health (everything else 503), and past those a connection is closed at once."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024
    spare: int = 64
    health_path: str = "/health"
    open: int = 0
    spare_open: int = 0
    refused: int = 0  # connections answered 503 (or closed) because the bound was reached
    timed_out: dict[str, int] = field(default_factory=lambda: {"header": 0, "body": 0, "idle": 0})
    _logged_at: float = -_AT_BOUND_LOG_EVERY_S

    @classmethod
    def within_fd_limit(cls, max_connections: int, header_timeout_s: float, body_timeout_s: float) -> ConnectionLimits:
        """Limits whose connections, spare slots included, fit in RLIMIT_NOFILE with a reserve
        of fds for everything else (FD_RESERVE_MIN, or a quarter of the limit). The soft limit
        is raised towards the hard one when it is too low (as Go's runtime and nginx do); if
        it still cannot hold them, `max_connections` is lowered, with a warning, so that a
        flood is refused, never met by EMFILE."""
        room = max_connections + spare_for(max_connections)
        soft = _raise_fd_limit(max(room + FD_RESERVE_MIN, -(-room * 4 // 3)))
        if soft is not None:
            room = min(room, soft - max(FD_RESERVE_MIN, soft // 4))
        spare = spare_for(room)
        usable = max(1, room - spare)
        if usable < max_connections:
            log.warning("max_connections %d lowered to %d: RLIMIT_NOFILE is %d (raise it with ulimit -n)",
                        max_connections, usable, soft)  # fmt: skip
        return cls(header_timeout_s, body_timeout_s, min(max_connections, usable), spare)

    def take(self) -> str | None:
        """A slot for a new connection: "served", "spare" (over the bound), or None (refuse)."""
        if self.open < self.max_connections:
            self.open += 1
            return "served"
        now = time.monotonic()
        if now - self._logged_at >= _AT_BOUND_LOG_EVERY_S:
            self._logged_at = now
            log.warning("%d connections open, the max_connections bound: new ones are answered 503 "
                        "(GET %s still answers)", self.open, self.health_path)  # fmt: skip
        if self.spare_open < self.spare:
            self.spare_open += 1
            return "spare"
        self.refused += 1
        return None

    def give_back(self, slot: str) -> None:
        if slot == "served":
            self.open -= 1
        else:
            self.spare_open -= 1

    def figures(self) -> dict[str, int]:
        return {
            "connections_open": self.open + self.spare_open,
            "connections_max": self.max_connections,
            "connections_refused": self.refused,
            **{f"connections_timed_out_{phase}": n for phase, n in self.timed_out.items()},
        }


def _raise_fd_limit(want: int) -> int | None:
    """The soft RLIMIT_NOFILE, raised to `want` (at most the hard limit) when it is lower;
    None when unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise RLIMIT_NOFILE from %d to %d: %s", soft, target, exc)
    return int(soft)


def spare_for(max_connections: int) -> int:
    """Spare slots over the bound (they serve /health and 503 only): 1/16th, 4 to 64."""
    return max(4, min(64, max_connections // 16))


def _too_many_connections(limits: ConnectionLimits) -> web.Response:
    resp = error_response(503, "too_many_connections",
                          f"{limits.max_connections} connections are open, the bound of this process: retry later",
                          {"Retry-After": "1"})  # fmt: skip
    resp.force_close()
    return resp


def _refusal_bytes(limits: ConnectionLimits) -> bytes:
    body = orjson.dumps({"error": "too_many_connections",
                         "detail": f"{limits.max_connections} connections are open, the bound of this process, "
                                   "and every spare slot is taken: retry later"})  # fmt: skip
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode("ascii") + body


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, with its own error answers (text/plain or HTML) replaced
    by JSON errors, a client's malformed request logged as one WARNING line, and the
    connection bounds of its server's ConnectionLimits (when it has them) applied."""

    _slot: str | None = None
    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _heads_seen = 0

    def _limits(self) -> ConnectionLimits | None:
        return getattr(self._manager, "limits", None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self._limits()
        if limits is None:
            super().connection_made(transport)
            return
        self._slot = limits.take()
        if self._slot is None:  # past the spare slots too: answered and closed, nothing read
            self._manager = None  # never registered with the server: connection_lost is a no-op
            self._force_close = True
            transport.write(_refusal_bytes(limits))  # type: ignore[attr-defined]
            transport.close()
            return
        if self._slot == "spare":
            self._request_handler = self._health_only(limits)
        super().connection_made(transport)
        timeout = limits.header_timeout_s if self._slot == "served" else min(limits.header_timeout_s,
                                                                               SPARE_HEADER_TIMEOUT_S)  # fmt: skip
        self._arm_header_timer(timeout)

    def _health_only(self, limits: ConnectionLimits) -> Callable[[Any], Awaitable[web.StreamResponse]]:
        """Over the bound: GET /health is served, anything else is answered 503; then close."""
        handler = self._request_handler
        assert handler is not None

        async def serve(request: Any) -> web.StreamResponse:
            if request.method in ("GET", "HEAD") and request.path == limits.health_path:
                resp = await handler(request)
            else:
                limits.refused += 1
                resp = _too_many_connections(limits)
            resp.force_close()
            return resp

        return serve

    def connection_lost(self, exc: BaseException | None) -> None:
        limits = self._limits()
        if limits is not None and self._slot is not None:
            limits.give_back(self._slot)
            self._slot = None
        self._cancel_timers()
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    # --- header, body and idle timeouts ------------------------------------------------------

    def _arm_header_timer(self, timeout: float) -> None:
        if self._header_timer is None:
            self._heads_seen = self._request_count
            self._header_timer = self._loop.call_later(timeout, self._header_timed_out)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        limits = self._limits()
        if limits is None or self._force_close:
            return
        if self._request_count != self._heads_seen:  # a whole request head arrived
            self._heads_seen = self._request_count
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            if self._messages:
                self._arm_body_timer(self._messages[-1][1], limits.body_timeout_s)
        elif data and self._waiter is not None and not self._waiter.done():
            # the first bytes of the next request on a kept-alive connection: its head is due
            self._arm_header_timer(limits.header_timeout_s)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        limits = self._limits()
        if limits is None or self._force_close or self._request_count != self._heads_seen:
            return
        limits.timed_out["header"] += 1
        log.debug("closed a connection from %s: no request head within the header timeout", self._peer())
        self.force_close()

    def _arm_body_timer(self, payload: StreamReader, timeout: float) -> None:
        if payload is EMPTY_PAYLOAD or payload.is_eof():
            return
        if self._body_timer is not None:
            self._body_timer.cancel()
        timer = self._body_timer = self._loop.call_later(timeout, self._body_timed_out, payload, timeout)

        def done() -> None:
            timer.cancel()
            if self._body_timer is timer:
                self._body_timer = None

        payload.on_eof(done)

    def _body_timed_out(self, payload: StreamReader, timeout: float) -> None:
        self._body_timer = None
        limits = self._limits()
        if limits is None or payload.is_eof():
            return
        limits.timed_out["body"] += 1
        # Its reader (the handler, or aiohttp draining it) gets the error: a handler answers 408
        payload.set_exception(BodyTimeoutError(f"the request body did not arrive within {timeout:g} s"))

    def _process_keepalive(self) -> None:
        if self._header_timer is not None:  # a request head is due: its own timeout applies
            self._keepalive_handle = None
            return
        was_closed = self._force_close
        super()._process_keepalive()
        limits = self._limits()
        if self._force_close and not was_closed and limits is not None:
            limits.timed_out["idle"] += 1

    def _peer(self) -> str:
        peer = self.peername
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    # --- JSON errors -------------------------------------------------------------------------

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


#: the connection bounds an app's server applies (see ConnectionLimits); none when absent
CONNECTION_LIMITS: web.AppKey[ConnectionLimits] = web.AppKey("connection_limits", ConnectionLimits)


class _JsonErrorServer(web.Server):
    on_refused: Callable[[int], None] | None = None
    limits: ConnectionLimits | None = None

    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An AppRunner whose connections answer every error as JSON (see JsonErrorHandler), under
    the app's ConnectionLimits when it has them (CONNECTION_LIMITS)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp has no hook for its protocol errors: its Server makes the connection
        # handler, so this one makes ours (the server is otherwise the app's own)
        server.__class__ = _JsonErrorServer
        if isinstance(server, _JsonErrorServer):
            server.on_refused = self.app.get(ON_REFUSED)
            server.limits = self.app.get(CONNECTION_LIMITS)
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
