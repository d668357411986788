"""Running an aiohttp application as a daemon: uvloop, signals, graceful shutdown.

`serve(app, host, port)` is what every role uses. The first SIGINT/SIGTERM starts a graceful
shutdown (stop listening, then the app's on_shutdown/cleanup_ctx hooks drain or persist, within
`grace` seconds); a second one forces exit. SIGHUP calls `on_reload` if given.
With `ssl_context` the public port serves HTTPS (logdist/tls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import uvloop
from aiohttp import web

from logdist.http import JsonErrorRunner
from logdist.logsetup import setup_logging as setup_logging  # re-exported: every role calls daemon.setup_logging

log = logging.getLogger("logdist")

#: Set once the public port listens. An app that has it (a worker of `--workers N`, which also
#: listens on a private control port) reports "starting" until then.
PUBLIC_UP = web.AppKey("public_up", asyncio.Event)


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _log_reload_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("reload failed: %s", exc)


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    grace: float,
    on_reload: Callable[[], Coroutine[Any, Any, None]] | None,
    reuse_port: bool,
    also_listen: Sequence[tuple[str, int]] = (),
    supervised: bool = False,
    admin_listen: tuple[str, int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_stop_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("%s: shutting down gracefully (grace %.1fs); send again to force", signame, grace)
            stop.set()
        elif supervised:
            # A worker of --workers N may get the signal twice (from its supervisor and from
            # e.g. `pkill` or systemd): forcing is the supervisor's job (it sends SIGKILL).
            log.info("%s again: already shutting down (the supervisor forces, if asked twice)", signame)
        else:
            log.warning("%s again: forcing exit", signame)
            os._exit(1)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop_signal, sig.name)
    if on_reload is not None:
        reload_cb = on_reload

        def on_hup() -> None:
            task: asyncio.Task[None] = loop.create_task(reload_cb())
            task.add_done_callback(_log_reload_failure)

        loop.add_signal_handler(signal.SIGHUP, on_hup)

    # JsonErrorRunner: even a request aiohttp's parser refuses gets a JSON error
    runner = JsonErrorRunner(app, handle_signals=False, access_log=None, shutdown_timeout=grace)
    await runner.setup()
    try:
        # a worker's private control port first: the public port takes traffic once all is up
        for h, p in also_listen:
            await web.SockSite(runner, bind_socket(h, p)).start()
        if admin_listen is not None:  # the admin listener (the app tells its requests apart)
            admin_site = web.SockSite(runner, bind_socket(*admin_listen, reuse_port), ssl_context=ssl_context)
            await admin_site.start()
            log.info("admin API on %s://%s:%d", "https" if ssl_context else "http", *admin_listen)
        # TLS on the public port (logdist/tls.py); a worker's control port stays plain loopback
        site = web.SockSite(runner, bind_socket(host, port, reuse_port), ssl_context=ssl_context)
        await site.start()
        if PUBLIC_UP in app:
            app[PUBLIC_UP].set()
        log.info("listening on %s://%s:%d", "https" if ssl_context else "http", host, port)
        await stop.wait()
    finally:
        # runner.cleanup stops the listener, lets handlers finish, then runs on_shutdown and
        # cleanup_ctx exits (where roles drain or persist what they hold).
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(runner.cleanup(), timeout=grace + 5)


def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    grace: float = 10.0,
    on_reload: Callable[[], Coroutine[Any, Any, None]] | None = None,
    reuse_port: bool = False,
    also_listen: Sequence[tuple[str, int]] = (),
    supervised: bool = False,
    admin_listen: tuple[str, int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Run `app` until a stop signal; returns the process exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            _serve(app, host, port, grace, on_reload, reuse_port, also_listen, supervised, admin_listen, ssl_context)
        )
    return 0
