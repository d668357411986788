"""Chaos-suite wrapper around `logdist`: records every message id an analyzer acknowledged.

Run as `python3 recorder.py analyzer --id=analyzer-1 ...` (the chaos compose override does).
Before the daemon starts, it adds an aiohttp middleware to the analyzer app: when POST /analyze
answers 200, the ids in the request body are appended to $LOGDIST_RECORD_DIR/<id>-<ns>.ids
*before* the answer leaves, with one write(2) per request. A `docker kill` of the analyzer keeps
what was written (the data is in the kernel, not in the process), so the suite can prove that
every acknowledged message reached some analyzer across kills and restarts, which the analyzers'
in-memory /processed counts cannot show. Deliveries beyond the first of an id are duplicates.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

import logdist.daemon as daemon


def _arg(flag: str, argv: list[str], default: str) -> str:
    for i, a in enumerate(argv):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
    return default


def _ids(body: bytes) -> list[str]:
    data: Any = orjson.loads(body)
    if isinstance(data, dict):
        msgs = data.get("log_messages") or data.get("messages")
        if msgs is None:
            msgs = [data]
    elif isinstance(data, list):
        msgs = data
    else:
        return []
    return [str(m["id"]) for m in msgs if isinstance(m, dict) and "id" in m]


def main() -> None:
    argv = sys.argv[1:]
    name = _arg("--id", argv, "analyzer")
    directory = os.environ.get("LOGDIST_RECORD_DIR", "/ids")
    path = os.path.join(directory, f"{name}-{time.time_ns()}.ids")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @web.middleware
    async def record(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        if request.method != "POST" or request.path != "/analyze":
            return await handler(request)
        body = await request.read()  # cached: the handler reads the same bytes
        resp = await handler(request)
        if resp.status == 200:
            try:
                ids = _ids(body)
            except ValueError:
                ids = []
            if ids:
                os.write(fd, ("\n".join(ids) + "\n").encode())
        return resp

    original = daemon.serve

    def serve(app: web.Application, *args: Any, **kwargs: Any) -> Any:
        app.middlewares.append(record)
        return original(app, *args, **kwargs)

    daemon.serve = serve
    from logdist.cli import main as cli_main  # imported after the patch on purpose

    sys.exit(cli_main(argv))


if __name__ == "__main__":
    main()
