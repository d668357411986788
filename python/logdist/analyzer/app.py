"""The analyzer's HTTP API (the v0 analyzer API: /analyze, /health, /status, /processed,
/enable, /disable; plus /stats, /fault and /ids).

State lives in one `AnalyzerState` under an AppKey; the analysis itself is
`logdist.analyzer.engine.Analysis`. Fault injection (latency, error rate, fixed status,
Retry-After, refusing batches that hold given message ids) exists for tests and chaos runs and
can be changed at runtime via POST /fault.

Tokens (logdist/auth.py, --admin-tokens-file/--ingest-tokens-file): /health is open; /analyze
needs an ingest (or admin) token once ingest tokens are set; everything else (/status,
/processed, /stats, /ids, /fault, /enable, /disable) is admin. A POST other than /analyze must
be application/json (415), and is audited.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from logdist.analyzer.engine import Analysis
from logdist.auth import Auth, Tokens
from logdist.errors import PacketError
from logdist.http import error_response, format_retry_after, json_errors, json_response, read_json_object

log = logging.getLogger("logdist.analyzer")

MAX_BODY = 256 * 1024 * 1024


@dataclass
class Faults:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    fail_status: int | None = None
    retry_after: float | None = None
    #: a batch holding a message with one of these ids is refused whole with 400, as a body
    #: the analysis cannot read is (a poison message)
    refuse_ids: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "fail_status": self.fail_status,
            "retry_after": self.retry_after,
            "refuse_ids": sorted(self.refuse_ids),
        }

    def update(self, doc: dict[str, Any]) -> None:
        """Apply a POST /fault body; null clears a fault. Raises PacketError on bad values."""
        unknown = set(doc) - {"latency_ms", "error_rate", "fail_status", "retry_after", "refuse_ids"}
        if unknown:
            raise PacketError("bad_schema", f"unknown fault keys: {sorted(unknown)}")
        new = Faults(**self.__dict__)
        if "latency_ms" in doc:
            new.latency_ms = _number(doc, "latency_ms", 0.0, lo=0.0)
        if "error_rate" in doc:
            new.error_rate = _number(doc, "error_rate", 0.0, lo=0.0, hi=1.0)
        if "fail_status" in doc:
            v = doc["fail_status"]
            if v is not None and (type(v) is not int or not 100 <= v <= 599):
                raise PacketError("bad_schema", "'fail_status' must be an HTTP status (100-599) or null")
            new.fail_status = v
        if "retry_after" in doc:
            new.retry_after = None if doc["retry_after"] is None else _number(doc, "retry_after", 0.0, lo=0.0)
        if "refuse_ids" in doc:
            v = doc["refuse_ids"]
            if v is not None and (type(v) is not list or not all(type(i) is str for i in v)):
                raise PacketError("bad_schema", "'refuse_ids' must be a list of message ids (strings) or null")
            new.refuse_ids = frozenset(v or ())
        self.__dict__.update(new.__dict__)

    def refused_id(self, body: bytes) -> str | None:
        """The first id of `refuse_ids` among the body's messages (a fault: it reads the whole
        body once more), or None."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None  # the analysis refuses it anyway
        if type(doc) is dict:
            doc = doc.get("log_messages") or doc.get("messages") or [doc]
        for m in doc if type(doc) is list else ():
            mid = m.get("id") if type(m) is dict else None
            if type(mid) is str and mid in self.refuse_ids:
                return mid
        return None


def _number(doc: dict[str, Any], key: str, default: float, lo: float, hi: float | None = None) -> float:
    v = doc[key]
    if v is None:
        return default
    if type(v) not in (int, float) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise PacketError("bad_schema", f"{key!r} must be a number {rng} or null")
    return float(v)


@dataclass
class AnalyzerState:
    id: str
    weight: float | None
    port: int
    analysis: Analysis
    faults: Faults = field(default_factory=Faults)
    enabled: bool = True
    started: float = field(default_factory=time.time)
    rng: random.Random = field(default_factory=random.Random)
    fault_answers: int = 0

    def identity(self) -> dict[str, Any]:
        return {"id": self.id, "weight": self.weight}


STATE: web.AppKey[AnalyzerState] = web.AppKey("analyzer_state", AnalyzerState)


def _unavailable(st: AnalyzerState, status: int, doc: dict[str, Any]) -> web.Response:
    headers = None
    if st.faults.retry_after is not None and status in (429, 503):
        headers = {"Retry-After": format_retry_after(st.faults.retry_after)}
    return json_response(doc, status, headers)


async def analyze(request: web.Request) -> web.Response:
    st = request.app[STATE]
    f = st.faults
    if f.latency_ms > 0:
        await asyncio.sleep(f.latency_ms / 1000.0)
    if not st.enabled:
        return _unavailable(st, 503, {"error": "disabled", "detail": f"analyzer {st.id} is disabled"})
    if f.fail_status is not None:
        st.fault_answers += 1
        return _unavailable(st, f.fail_status, {"error": "injected_fault", "detail": f"--fail-status {f.fail_status}"})
    if f.error_rate > 0 and st.rng.random() < f.error_rate:
        st.fault_answers += 1
        return _unavailable(st, 500, {"error": "injected_fault", "detail": f"--error-rate {f.error_rate}"})
    body = await request.read()
    if f.refuse_ids:
        poison = f.refused_id(body)
        if poison is not None:
            st.fault_answers += 1
            return json_response({"error": "injected_fault", "detail": f"refusing message id {poison!r}"}, 400)
    try:
        accepted, dups = st.analysis.ingest(body)
    except PacketError as exc:
        return json_response(exc.to_json(), 400)
    return json_response({"accepted": accepted, "duplicates": dups})


async def health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if not st.enabled:
        return _unavailable(st, 503, {"status": "disabled", **st.identity()})
    return json_response({"status": "ok", **st.identity()})


async def status(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return json_response(
        {
            **st.identity(),
            "status": "enabled" if st.enabled else "disabled",
            "enabled": st.enabled,
            "healthy": st.enabled and st.faults.fail_status is None,
            "port": st.port,
            "uptime_s": time.time() - st.started,
            **st.analysis.counts(),
            "dedup_window": len(st.analysis.dedup),
            "faults": st.faults.to_json(),
            "fault_answers": st.fault_answers,
        }
    )


async def processed(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return json_response({**st.identity(), **st.analysis.counts()})


async def stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    try:
        top = int(request.query.get("top", "10"))
    except ValueError:
        return error_response(400, "bad_query", "'top' must be an integer")
    return json_response({**st.identity(), "enabled": st.enabled, **st.analysis.stats(top=max(0, top))})


async def enable(request: web.Request) -> web.Response:
    st = request.app[STATE]
    st.enabled = True
    log.info("enabled")
    return json_response({"status": "enabled", **st.identity()})


async def disable(request: web.Request) -> web.Response:
    st = request.app[STATE]
    st.enabled = False
    log.info("disabled")
    return json_response({"status": "disabled", **st.identity()})


async def fault(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if request.method == "POST":
        doc = await read_json_object(request)
        try:
            st.faults.update(doc)
        except PacketError as exc:
            return json_response(exc.to_json(), 400)
        log.info("faults now %s", st.faults.to_json())
    return json_response(st.faults.to_json())


async def ids(request: web.Request) -> web.Response:
    st = request.app[STATE]
    if st.analysis.recorded is None:
        return error_response(404, "not_recording", "start the analyzer with --record-ids")
    return json_response({**st.identity(), "count": len(st.analysis.recorded), "ids": st.analysis.recorded})


def _reason_code(exc: web.HTTPException) -> str:
    """aiohttp's own errors are named by their reason phrase here ("Not Found" -> not_found,
    "Request Entity Too Large" -> request_entity_too_large), as the analyzer always has."""
    return exc.reason.lower().replace(" ", "_")


def make_app(state: AnalyzerState, auth: Auth | None = None) -> web.Application:
    """`auth`: the tokens for /analyze (ingest) and the rest (admin) but /health; default none
    (everything open, but a POST other than /analyze must be application/json)."""
    auth = auth or Auth(Tokens(), frozenset({"/analyze"}), ingest_needs_ingest_tokens=True)
    middlewares = [json_errors(code_of=_reason_code), auth.middleware()]
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[STATE] = state
    app.router.add_post("/analyze", analyze)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/processed", processed)
    app.router.add_get("/stats", stats)
    app.router.add_post("/enable", enable)
    app.router.add_post("/disable", disable)
    app.router.add_get("/fault", fault)
    app.router.add_post("/fault", fault)
    app.router.add_get("/ids", ids)
    return app
