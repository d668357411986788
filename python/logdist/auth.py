"""Bearer tokens, the admin content-type rule and the audit line, for the distributor and the
analyzer (one aiohttp middleware, `Auth.middleware`).

Two classes of token, sent as `Authorization: Bearer <token>`:
  ingest  may POST logs (the distributor's /logs, /api/v1/logs, /v1/logs; an analyzer's /analyze)
  admin   may do everything (admin tokens may also ingest)

Tokens come from files (`ingest_tokens_file`, `admin_tokens_file`: one token per line, blank
lines and `#` comments ignored; re-read on SIGHUP reload, so a rotation is: add the new token,
reload, move the clients, remove the old one, reload) or from the environment
(`LOGDIST_INGEST_TOKENS`, `LOGDIST_ADMIN_TOKENS`: comma-separated; when set and not empty they
replace that class's file). Only sha256 digests are kept, and a presented token is compared with
every one in constant time (hmac.compare_digest). A token is never logged: the audit line names
it by its *token id*, the first 8 hex digits of sha256(token) (`token_id`), which an operator
can compute from the token file (`sha256sum`) and which does not reveal the token.

Route classes: open (`/health`; `/metrics` unless `metrics_require_token`), ingest (the paths
given as `ingest`, POST only), admin (everything else, reads included: the dashboard, /queue,
/api/v1/metrics, GET /api/v1/*). When any token is configured, a request without a valid token
gets 401 {"error": "unauthorized"} with `WWW-Authenticate: Bearer`, and a valid token of the
wrong class 403 {"error": "forbidden"}. With no token configured, everything stays open (the
daemons then refuse a non-loopback bind, see daemon.check_bind).

Whatever the tokens, an admin request that may change something (POST, PUT, PATCH, DELETE) must
say `Content-Type: application/json`, even with an empty body, else 415: a web page cannot send
that cross-site without a CORS preflight, which logdist never grants (no CSRF through "simple"
requests such as a text/plain form POST).

Every such admin request is logged once at INFO, whether it succeeded or was refused:
    audit: who=<token id|anonymous> from=<peer address> what=<METHOD path> result=<status>
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from logdist.errors import ConfigError
from logdist.logsetup import safe

if TYPE_CHECKING:  # aiohttp is imported when a middleware is made: the workers' supervisor
    from aiohttp import web  # checks the bind with this module and imports no aiohttp

log = logging.getLogger("logdist.audit")

INGEST = "ingest"
ADMIN = "admin"
OPEN = "open"
ENV = {INGEST: "LOGDIST_INGEST_TOKENS", ADMIN: "LOGDIST_ADMIN_TOKENS"}
#: the environment variable that hands the workers of --workers N their run's secret
PEER_SECRET_ENV = "LOGDIST_PEER_SECRET"
#: methods that may change state: admin requests with them need Content-Type application/json
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def token_id(token: str) -> str:
    """What names a token in logs: the first 8 hex digits of its sha256 (not the token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def read_token_file(path: str, key: str) -> list[str]:
    """The tokens of a file: one a line, blank lines and `#` comments ignored.
    Raises ConfigError(key) when it cannot be read or holds a token with whitespace inside."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        tok = line.strip()
        if not tok or tok.startswith("#"):
            continue
        if any(c.isspace() or ord(c) < 32 for c in tok):
            raise ConfigError(key, f"{path!r} line {n}: a token holds no whitespace or control character")
        tokens.append(tok)
    return tokens


def _from_env(env: Mapping[str, str], name: str) -> list[str] | None:
    raw = env.get(name, "")
    toks = [t.strip() for t in raw.split(",") if t.strip()]
    return toks or None


@dataclass(frozen=True)
class Tokens:
    """The sha256 digests of the tokens of each class."""

    ingest: tuple[bytes, ...] = ()
    admin: tuple[bytes, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.ingest or self.admin)

    @classmethod
    def load(cls, ingest_file: str | None, admin_file: str | None, env: Mapping[str, str] | None = None) -> Tokens:
        """From the files and the environment overrides. Raises ConfigError."""
        env = os.environ if env is None else env
        found: dict[str, tuple[bytes, ...]] = {}
        sources = ((INGEST, ingest_file, "ingest_tokens_file"), (ADMIN, admin_file, "admin_tokens_file"))
        for cls_name, path, key in sources:
            toks = _from_env(env, ENV[cls_name])
            if toks is None and path:
                toks = read_token_file(path, key)
            found[cls_name] = tuple(_digest(t) for t in toks or ())
        return cls(ingest=found[INGEST], admin=found[ADMIN])

    def classify(self, token: str) -> str | None:
        """ADMIN, INGEST or None; compares with every digest (no early exit)."""
        d = _digest(token)
        admin = _any_equal(d, self.admin)
        ingest = _any_equal(d, self.ingest)
        return ADMIN if admin else INGEST if ingest else None


def _any_equal(d: bytes, digests: Iterable[bytes]) -> bool:
    hit = False
    for x in digests:
        hit |= hmac.compare_digest(d, x)
    return hit


def bearer(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    value = request.headers.get("Authorization", "")
    scheme, _, tok = value.partition(" ")
    if scheme.lower() != "bearer" or not tok.strip():
        return None
    return tok.strip()


def _peer_addr(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(request.remote or "?")


@dataclass
class Auth:
    """The tokens in force and the route classes of one daemon (under AUTH in its app).

    `ingest_paths`: the paths a POST to which is ingest. `ingest_needs_ingest_tokens`: ingest
    stays open while no ingest token is configured (the analyzer's /analyze: optional).
    `trusted`: a request the daemon trusts as admin without a token (a peer worker of
    --workers N on its private port, with the run's secret); not audited again."""

    tokens: Tokens
    ingest_paths: frozenset[str]
    open_paths: frozenset[str] = frozenset({"/health"})
    metrics_require_token: bool = False
    ingest_needs_ingest_tokens: bool = False
    trusted: Callable[[web.Request], bool] | None = field(default=None)

    def route_class(self, request: web.Request) -> str:
        path = request.path
        if path in self.open_paths or (path == "/metrics" and not self.metrics_require_token):
            return OPEN
        if path in self.ingest_paths and request.method == "POST":
            return INGEST
        return ADMIN

    def refusal(self, request: web.Request, need: str) -> tuple[int, str, str]:
        """(0, "", "") when the request may pass, else (401 or 403, error code, detail)."""
        if not self.tokens.configured or need == OPEN:
            return 0, "", ""
        if need == INGEST and self.ingest_needs_ingest_tokens and not self.tokens.ingest:
            return 0, "", ""
        tok = bearer(request)
        have = None if tok is None else self.tokens.classify(tok)
        if have is None:
            return 401, "unauthorized", "a bearer token is required" if tok is None else "the token is not valid"
        if need == ADMIN and have != ADMIN:
            return 403, "forbidden", "this needs an admin token"
        return 0, "", ""

    def middleware(self) -> Any:
        """The aiohttp middleware (after json_errors in the list, so that its errors are JSON)."""
        from aiohttp import web

        from logdist.http import error_response

        @web.middleware
        async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.trusted is not None and self.trusted(request):
                return await handler(request)
            need = self.route_class(request)
            status, code, detail = self.refusal(request, need)
            audited = need == ADMIN and request.method in CHANGING
            if not status and audited and request.content_type != "application/json":
                status, code, detail = 415, "unsupported_media_type", "admin requests must be application/json"
            try:
                if status:
                    hdrs = {"WWW-Authenticate": 'Bearer realm="logdist"'} if status == 401 else None
                    return error_response(status, code, detail, hdrs)
                status = 500
                resp = await handler(request)
                status = resp.status
                return resp
            except Exception as exc:  # an HTTPException, or logdist's HttpError: its status
                status = getattr(exc, "status", 500)
                raise
            finally:
                if audited:
                    _audit(request, status)

        return auth


def _audit(request: web.Request, status: int) -> None:
    tok = bearer(request)
    who = "anonymous" if tok is None else token_id(tok)
    log.info("audit: who=%s from=%s what=%s %s result=%d", who, safe(_peer_addr(request), 100),
             request.method, safe(request.path_qs, 200), status)  # fmt: skip


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost"; any other name or address counts as a network bind."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(role: str, host: str, secured: bool, insecure: bool, options: str) -> None:
    """A daemon with no token configured listens on loopback only: on any other address it
    exits with status 2 and one line naming the address and `options`, unless `insecure`
    (--insecure), and then it warns (at every start). Call after setup_logging."""
    if secured or is_loopback(host):
        return
    if insecure:
        log.warning("--insecure: listening on %s with no token: anyone who can reach it controls it", safe(host))
        return
    print(f"logdist {role}: refusing to listen on {safe(host)} (not loopback) with no token configured: "
          f"set {options}, or pass --insecure if this is intended", file=sys.stderr, flush=True)  # fmt: skip
    raise SystemExit(2)


def audit_reload(ok: bool) -> None:
    """The audit line of a SIGHUP reload (no token: a signal comes from the host)."""
    log.info("audit: who=signal from=local what=SIGHUP reload result=%s", "ok" if ok else "failed")
