"""Shipping real logs: `logdist emitter --ship FILE|- [--follow]`.

Each line of a file (or stdin) becomes a message (level guessed from the text, source from
`--source` or the file name), batched by `--batch` lines or `--flush-ms`, and sent with the
same at-least-once delivery as synthetic traffic: a packet is retried with its packet_id,
across the distributor URLs, until it is acknowledged. With `--follow` it keeps reading what is
appended to the file, like `tail -f`. A reader thread feeds the event loop, so a slow pipe never
blocks sending.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import orjson
import uvloop

from logdist.emitter.messages import rfc3339_now
from logdist.emitter.sender import PacketSender, SendCounters

_LEVEL = re.compile(rb"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|PANIC)\b", re.IGNORECASE)
_NORMAL = {b"WARNING": "WARN", b"ERR": "ERROR", b"CRIT": "CRITICAL", b"NOTICE": "INFO", b"PANIC": "FATAL"}
_EOF = None


def guess_level(line: bytes) -> str:
    m = _LEVEL.search(line, 0, 160)
    if m is None:
        return "INFO"
    word = m.group(1).upper()
    return _NORMAL.get(word, word.decode())


def _reader(
    f: BinaryIO, follow: bool, loop: asyncio.AbstractEventLoop, q: asyncio.Queue[bytes | None], stop: threading.Event
) -> None:
    try:
        while not stop.is_set():
            line = f.readline()
            if line:
                loop.call_soon_threadsafe(q.put_nowait, line)
                continue
            if not follow:
                break
            try:  # truncated (log rotation by copytruncate): start again from the top
                if os.fstat(f.fileno()).st_size < f.tell():
                    f.seek(0)
            except (OSError, ValueError):
                pass
            stop.wait(0.2)
    finally:
        loop.call_soon_threadsafe(q.put_nowait, _EOF)


async def _next_batch(q: asyncio.Queue[bytes | None], size: int, flush_s: float) -> tuple[list[bytes], bool]:
    """Up to `size` non-blank lines, cut short `flush_s` after the first one; and whether the
    input ended."""
    batch: list[bytes] = []
    deadline: float | None = None
    while len(batch) < size:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            line = await asyncio.wait_for(q.get(), timeout)
        except TimeoutError:
            break
        if line is _EOF:
            return batch, True
        if line.strip():
            batch.append(line)
            if deadline is None:
                deadline = time.monotonic() + flush_s
    return batch, False


def _packet(batch: list[bytes], packet_id: str, emitter_id: str, ids: list[str], meta: dict[str, str]) -> bytes:
    """A /logs packet of the lines: one message each, level guessed from the text."""
    ts = rfc3339_now()
    msgs = [
        {
            "id": mid,
            "timestamp": ts,
            "level": guess_level(line),
            "source": meta["source"],
            "message": line.rstrip(b"\r\n").decode("utf-8", "replace"),
            "metadata": {"host": meta["host"], "file": meta["file"]},
        }
        for mid, line in zip(ids, batch, strict=True)
    ]
    return orjson.dumps(
        {"packet_id": packet_id, "agent_id": emitter_id, "emitter_id": emitter_id, "timestamp": ts, "messages": msgs}
    )


async def ship(args: argparse.Namespace, urls: list[str]) -> dict[str, Any]:
    path = args.ship
    if path == "-":
        f: BinaryIO = sys.stdin.buffer
        source = args.source or "stdin"
    else:
        f = Path(path).open("rb")
        source = args.source or Path(path).name
    meta = {"source": source, "host": socket.gethostname(), "file": path}
    prefix = os.urandom(6).hex()
    emitter_id = args.emitter_id or f"shipper-{prefix[:6]}"
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=0)
    stop = threading.Event()
    thread = threading.Thread(target=_reader, args=(f, args.follow, loop, q, stop), daemon=True)
    thread.start()

    def finish() -> None:  # first SIGINT/SIGTERM: stop reading, deliver what was read, exit
        stop.set()
        q.put_nowait(_EOF)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)  # a second one interrupts at once

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, finish)
    counters = SendCounters()
    sem = asyncio.Semaphore(max(1, args.concurrency))
    tasks: set[asyncio.Task[Any]] = set()
    seq = 0
    packets = 0
    flush_s = args.flush_ms / 1000.0
    t0 = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            sender = PacketSender(session, urls, timeout_s=args.timeout, give_up_after_s=None, counters=counters)

            async def send(body: bytes, n: int) -> None:
                try:
                    await sender.send(body, n)
                finally:
                    sem.release()

            eof = False
            while not eof:
                batch, eof = await _next_batch(q, args.batch, flush_s)
                if not batch:
                    continue
                packets += 1
                ids = [f"{prefix}-{seq + i}" for i in range(len(batch))]
                seq += len(batch)
                body = _packet(batch, f"{prefix}-p{packets}", emitter_id, ids, meta)
                await sem.acquire()
                t = asyncio.create_task(send(body, len(batch)))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(set(tasks))
    finally:
        stop.set()
        if f is not sys.stdin.buffer:
            thread.join(1.0)
            f.close()
    return {
        "lines": seq,
        "packets": packets,
        "acked": counters.messages_acked,
        "rejected": counters.messages_rejected,
        "failed": counters.messages_failed,
        "retried": counters.retried,
        "elapsed_s": round(time.monotonic() - t0, 3),
        "last_error": counters.last_error,
    }


def run_ship(args: argparse.Namespace, urls: list[str]) -> int:
    if args.ship != "-" and not Path(args.ship).is_file():
        from logdist.errors import ConfigError

        raise ConfigError("ship", f"{args.ship!r} is not a readable file")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            s = runner.run(ship(args, urls))
        except KeyboardInterrupt:
            print("interrupted: packets not yet acknowledged were not confirmed", file=sys.stderr)
            return 130
    if args.json:
        print(orjson.dumps(s).decode())
    else:
        print(
            f"shipped {s['lines']:,} lines in {s['packets']:,} packets: acked {s['acked']:,} "
            f"rejected {s['rejected']:,} retried {s['retried']:,}"
        )
    return 0 if s["acked"] == s["lines"] else 1
