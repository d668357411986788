"""Stand-ins for the seed systems' own programs, built from their descriptions (shared/seeds/ and
the wire shapes in DESIGN.md), run by the tests as real processes:

    python tests/clients/seed_standins.py seed000-analyzer --id A --port N [--refuse-id ID]
    python tests/clients/seed_standins.py seed003-analyzer --id A --port N [--refuse-id ID]
    python tests/clients/seed_standins.py seed000-emitter --port N --distributor-url URL [--batch-size K]

- seed 000 analyzer: `POST /analyze` takes ONE message object, decoded as a typed struct (id,
  level, source, message strings; timestamp RFC 3339; metadata string -> string); anything else,
  an array above all, is `400 Invalid JSON`. Disabled (`POST /disable`), it answers /analyze with
  500 and /health with 503. `GET /status`, `GET /processed` ({"processed_count": N}).
- seed 003 analyzer: `POST /analyze` takes the packet object {"packet_id", "agent_id", "sent_at"
  (RFC 3339), "log_messages": [message, ...], "metadata"}; anything else is a 400. `GET /health`.
- seed 000 emitter: `POST /generate` makes one packet of --batch-size messages and sends it to
  the distributor; a send succeeds only on status 200, else it is retried (3 attempts,
  --retry-delay apart) and counted failed. `GET /stats` ({"stats": {"successful_sends", ...}}).

For the tests, each analyzer also answers `GET /ids` (every message id it took, in order, with
repeats) and `GET /requests` (how many POST /analyze it answered 2xx); --refuse-id makes it
answer 400 to a message (or a packet holding a message) with that id, a poison message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z", re.IGNORECASE)
STATE: web.AppKey[dict[str, Any]] = web.AppKey("state", dict)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _string_or_null(v: Any) -> bool:
    return v is None or isinstance(v, str)


def valid_message(m: Any) -> bool:
    """What a Go struct LogMessage{ID, Timestamp time.Time, Level, Source, Message string,
    Metadata map[string]string} decodes without error."""
    if not isinstance(m, dict):
        return False
    if not all(_string_or_null(m.get(k)) for k in ("id", "level", "source", "message")):
        return False
    ts = m.get("timestamp")
    if ts is not None and not (isinstance(ts, str) and RFC3339.match(ts)):
        return False
    meta = m.get("metadata")
    return meta is None or (isinstance(meta, dict) and all(_string_or_null(v) for v in meta.values()))


def valid_packet(p: Any) -> bool:
    """What a Go struct LogPacket{PacketID, AgentID string, SentAt time.Time, LogMessages
    []LogMessage, Metadata map[string]...} decodes without error."""
    if not isinstance(p, dict) or not _string_or_null(p.get("packet_id")) or not _string_or_null(p.get("agent_id")):
        return False
    sent = p.get("sent_at")
    if sent is not None and not (isinstance(sent, str) and RFC3339.match(sent)):
        return False
    msgs = p.get("log_messages")
    if msgs is not None and not (isinstance(msgs, list) and all(valid_message(m) for m in msgs)):
        return False
    return p.get("metadata") is None or isinstance(p.get("metadata"), dict)


def text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body + "\n")  # as Go's http.Error writes it


# --- analyzers ---------------------------------------------------------------------------------


async def analyze_000(request: web.Request) -> web.Response:
    st = request.app[STATE]
    try:
        m = json.loads(await request.read())
    except ValueError:
        return text(400, "Invalid JSON")
    if not valid_message(m):
        return text(400, "Invalid JSON")
    if not st["enabled"]:
        return text(500, f"Analysis failed: analyzer {st['id']} is disabled")
    if m.get("id") is not None and m.get("id") == st["refuse_id"]:
        return text(400, "Invalid JSON")
    st["ids"].append(m.get("id"))
    st["requests"] += 1
    return web.json_response({"status": "success", "log_id": m.get("id"), "analyzer": st["id"], "timestamp": now()})


async def analyze_003(request: web.Request) -> web.Response:
    st = request.app[STATE]
    try:
        p = json.loads(await request.read())
    except ValueError:
        return text(400, "Invalid request body")
    if not valid_packet(p):
        return text(400, "Invalid request body")
    if not st["enabled"]:
        return text(503, "analyzer unavailable")
    ids = [m.get("id") for m in p.get("log_messages") or []]
    if st["refuse_id"] is not None and st["refuse_id"] in ids:
        return text(400, "Invalid request body")
    st["ids"].extend(ids)
    st["requests"] += 1
    st["packets"].append({k: p.get(k) for k in ("packet_id", "agent_id", "sent_at", "metadata")})
    st["messages"].extend(p.get("log_messages") or [])
    return web.json_response({"status": "ok", "processed": len(ids)})


async def health(request: web.Request) -> web.Response:
    st = request.app[STATE]
    up = st["enabled"]
    doc = {"status": "healthy" if up else "unhealthy", "analyzer": st["id"]}
    return web.json_response(doc, status=200 if up else 503)


async def status(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"analyzer": {"id": st["id"], "enabled": st["enabled"], "healthy": True}})


async def processed(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"processed_count": len(st["ids"]), "analyzer": st["id"]})


async def ids(request: web.Request) -> web.Response:
    return web.json_response({"ids": request.app[STATE]["ids"]})


async def requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STATE]["requests"]})


async def messages(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"messages": st["messages"], "packets": st["packets"]})


def _switch(on: bool) -> Any:
    async def handler(request: web.Request) -> web.Response:
        request.app[STATE]["enabled"] = on
        return web.json_response({"enabled": on})

    return handler


def analyzer_app(seed: str, aid: str, refuse_id: str | None) -> web.Application:
    app = web.Application()
    app[STATE] = {"id": aid, "enabled": True, "ids": [], "requests": 0, "refuse_id": refuse_id,
                  "packets": [], "messages": []}  # fmt: skip
    app.router.add_post("/analyze", analyze_000 if seed == "000" else analyze_003)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/processed", processed)
    app.router.add_post("/enable", _switch(True))
    app.router.add_post("/disable", _switch(False))
    app.router.add_get("/ids", ids)
    app.router.add_get("/requests", requests)
    app.router.add_get("/messages", messages)
    return app


# --- seed 000's emitter ------------------------------------------------------------------------


def make_packet(st: dict[str, Any]) -> dict[str, Any]:
    st["packets_sent"] += 1
    pid = f"packet-{st['run']}-{st['packets_sent']}"
    levels = ("DEBUG", "INFO", "WARN", "ERROR")
    msgs = [
        {"id": f"log-{pid}-{i + 1}", "timestamp": now(), "level": levels[i % 4], "source": "web-server",
         "message": f"[web-server] request {i}", "metadata": {"user_id": f"user-{i}", "ip": "192.168.1.1"}}
        for i in range(st["batch_size"])
    ]  # fmt: skip
    st["logs_generated"] += len(msgs)
    return {"packet_id": pid, "agent_id": "emitter-server", "timestamp": now(), "messages": msgs}


async def send(st: dict[str, Any], packet: dict[str, Any]) -> bool:
    """One send: success only on 200 (seed 000's emitter), 3 attempts."""
    body = json.dumps(packet).encode()
    for attempt in range(3):
        try:
            async with ClientSession(timeout=ClientTimeout(total=30)) as s:
                async with s.post(st["url"], data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    st["last_status"] = r.status
                    if r.status == 200:
                        return True
        except OSError as exc:
            st["last_status"] = repr(exc)
        if attempt < 2:
            await asyncio.sleep(st["retry_delay"])
    return False


async def generate(request: web.Request) -> web.Response:
    st = request.app[STATE]
    packet = make_packet(st)
    if await send(st, packet):
        st["successful_sends"] += 1
        st["sent_ids"].extend(m["id"] for m in packet["messages"])
    else:
        st["failed_sends"] += 1
    return web.json_response({"status": "generated", "packet_id": packet["packet_id"], "messages": st["batch_size"]})


async def stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    keys = ("logs_generated", "packets_sent", "successful_sends", "failed_sends", "last_status")
    return web.json_response({"stats": {k: st[k] for k in keys}, "sent_ids": st["sent_ids"]})


async def emitter_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy", "service": "emitter-server", "timestamp": now()})


def emitter_app(url: str, batch_size: int, retry_delay: float) -> web.Application:
    app = web.Application()
    app[STATE] = {"url": url, "batch_size": batch_size, "retry_delay": retry_delay, "run": int(time.time() * 1000),
                  "logs_generated": 0, "packets_sent": 0, "successful_sends": 0, "failed_sends": 0,
                  "last_status": None, "sent_ids": []}  # fmt: skip
    app.router.add_post("/generate", generate)
    app.router.add_get("/stats", stats)
    app.router.add_get("/health", emitter_health)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("role", choices=("seed000-analyzer", "seed003-analyzer", "seed000-emitter"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--id", default="analyzer-1")
    p.add_argument("--refuse-id", default=None)
    p.add_argument("--distributor-url", default="http://127.0.0.1:8080/logs")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--retry-delay", type=float, default=0.2)
    a = p.parse_args(argv)
    if a.role == "seed000-emitter":
        app = emitter_app(a.distributor_url, a.batch_size, a.retry_delay)
    else:
        app = analyzer_app(a.role[4:7], a.id, a.refuse_id)
    web.run_app(app, host="127.0.0.1", port=a.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
