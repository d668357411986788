"""Route handlers for --workers N, declared per route: what each route does across workers.

A route's local part produces an `Answer` (plain data: a dict, or text for /metrics). On a
single distributor, or for a request a peer forwarded, the handler answers it as it is. On a
worker, for a client's request:

* `gathered(local, merge)`: a read. This worker's answer and every other worker's are merged
  into one (`merge` gets them as the peers answered).
* `everywhere(local, merge, tolerate)`: an admin change. It is applied here; if that worked
  (2xx, or a status in `tolerate`), it is sent to every other worker, and `merge` makes the
  answer from this worker's and theirs. A worker that did not apply it is listed in
  "worker_errors".

So no answer is parsed back from JSON here, and no path is matched: each route says what it is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from logdist.distributor.workers.merge import merge_health, merge_prometheus
from logdist.distributor.workers.peers import PEERS, PeerAnswer, ask, fans_out
from logdist.http import json_response

log = logging.getLogger("logdist.workers")

GATHER_TIMEOUT = 1.5  # a slow worker must not make the others' /health miss a probe's deadline
CHANGE_TIMEOUT = 5.0


@dataclass
class Answer:
    """A route's answer as plain data: a JSON object, or text (/metrics)."""

    payload: Any
    status: int = 200
    headers: dict[str, str] | None = None

    def response(self) -> web.Response:
        if isinstance(self.payload, str):
            return web.Response(text=self.payload, content_type="text/plain", charset="utf-8", headers=self.headers)
        return json_response(self.payload, self.status, self.headers)


Local = Callable[[web.Request], Awaitable[Answer]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: a read's merge: (this worker's answer, the others', this worker's index) -> the answer
GatherMerge = Callable[[Answer, list[PeerAnswer], int], Answer]
#: a change's merge: (the request, this worker's answer, the others') -> the answer, or None
#: to answer with this worker's as it is
ChangeMerge = Callable[[web.Request, Answer, list[PeerAnswer]], Answer | None]


def local(handler: Local) -> Handler:
    """A route that is answered by the worker that got it."""

    async def answer(request: web.Request) -> web.StreamResponse:
        return (await handler(request)).response()

    return answer


def gathered(handler: Local, merge: GatherMerge) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        mine = await handler(request)
        if request.method != "GET" or not fans_out(request):
            return mine.response()
        answers = await ask(request.app, "GET", request.path_qs, b"", None, GATHER_TIMEOUT)
        return merge(mine, answers, request.app[PEERS].index).response()

    return answer


def everywhere(handler: Local, merge: ChangeMerge, tolerate: tuple[int, ...] = ()) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        if not fans_out(request):
            return (await handler(request)).response()
        body = await request.read()  # kept by aiohttp: the handler reads it again
        mine = await handler(request)
        if mine.status >= 300 and mine.status not in tolerate:
            return mine.response()
        answers = await ask(
            request.app, request.method, request.path_qs, body, request.headers.get("Content-Type"), CHANGE_TIMEOUT
        )
        failed = [f"worker {i}: {status or ''} {err or data}".strip() for i, status, data, err in answers
                  if not 200 <= status < 300 and status not in tolerate]  # fmt: skip
        if failed:
            log.error("%s %s not applied on every worker: %s", request.method, request.path, "; ".join(failed))
        merged = merge(request, mine, answers)
        if merged is None:
            return mine.response()
        if failed:
            merged.payload["worker_errors"] = failed
        return merged.response()

    return answer


# --- merges of reads ---------------------------------------------------------------------------


def _usable(answers: list[PeerAnswer], shape: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The answers that can be merged (a JSON object with the `shape` key; an error answer has
    {"error", "detail"} instead), and the workers whose answer cannot."""
    ok: list[dict[str, Any]] = []
    lost: list[int] = []
    for i, status, data, _ in answers:
        if isinstance(data, dict) and status in (200, 503) and shape in data:
            ok.append(data)
        else:
            lost.append(i)
    return ok, lost


def json_merge(shape: str, merge: Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]) -> GatherMerge:
    """A read's merge for JSON figures whose answers all have the `shape` key."""

    def run(mine: Answer, answers: list[PeerAnswer], index: int) -> Answer:
        others, lost = _usable(answers, shape)
        merged = merge(mine.payload, others)
        if lost:
            merged["unreachable_workers"] = lost
        return Answer(merged, mine.status)

    return run


_SERVING = ("ok", "degraded", "full")


def health_merge(mine: Answer, answers: list[PeerAnswer], index: int) -> Answer:
    others, lost = _usable(answers, "status")
    merged = merge_health(mine.payload, others, index)
    for i in lost:
        merged["workers"].append({"worker": i, "status": "unreachable", "held": None, "pid": None})
    if lost:
        merged["status"] = merged["status"] if merged["status"] != "ok" else "degraded"
    # As one process answers: 200 while every worker takes traffic (ok, or a pending loss report
    # "degraded", or "full": ingest answers 429 until the backlog drains); 503 when one does not
    # (recovering, stopping, starting) or cannot be reached.
    serving = not lost and all(w["status"] in _SERVING for w in merged["workers"])
    return Answer(merged, 200 if serving else 503)


def text_merge(mine: Answer, answers: list[PeerAnswer], index: int) -> Answer:
    """/metrics: every worker's exposition, each sample labelled with its worker."""
    texts = [(index, mine.payload)] + [(i, d) for i, s, d, _ in answers if s == 200 and isinstance(d, str)]
    return Answer(merge_prometheus(sorted(texts)))


# --- merges of changes -------------------------------------------------------------------------


def as_is(request: web.Request, mine: Answer, answers: list[PeerAnswer]) -> Answer:
    return mine
