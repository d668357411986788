"""Shipping real logs: `logdist emitter --ship PATH|GLOB ... [--follow]` (or `--ship -`: stdin).

Each line of a file becomes a message (level guessed from the text, source from `--source` or
the file name), batched per file by `--batch` lines or `--flush-ms`, and sent with the same
at-least-once delivery as synthetic traffic: a packet is retried with its packet_id, across the
distributor URLs, until it is acknowledged. With `--follow` it keeps reading what is appended,
re-expands the globs every `--glob-interval` seconds, and follows rename and copytruncate
rotation (see `tail`).

Resuming: after each acknowledged packet the file's offset is checkpointed in the state file
(`checkpoint`), and a restart reads on from there. A message's id is "<dev>:<ino>:<gen>:<fp>:
<offset>" and a packet's "ship:<dev>:<ino>:<gen>:<fp>:<first offset>-<end>", so lines sent again
after a crash (sent, but not yet checkpointed) carry the ids they had: the distributor's packet
dedup and the analyzers' message dedup drop the copies (exactly, with `route_key` =
`message_id`, or with one analyzer). The first SIGTERM/SIGINT stops reading, sends what was
read, waits up to `--stop-timeout` for the acknowledgements and writes the checkpoint.
File I/O runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from logdist import tls
from logdist.emitter.checkpoint import StateFile, default_state_file
from logdist.emitter.messages import rfc3339_now
from logdist.emitter.oneshot import read_token
from logdist.emitter.sender import Outcome, PacketSender, SendCounters
from logdist.emitter.tail import Inflight, Line, Source, StdinWatcher, Watcher, expand
from logdist.errors import ConfigError

_LEVEL = re.compile(rb"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|PANIC)\b", re.IGNORECASE)
_NORMAL = {b"WARNING": "WARN", b"ERR": "ERROR", b"CRIT": "CRITICAL", b"NOTICE": "INFO", b"PANIC": "FATAL"}


def guess_level(line: bytes) -> str:
    m = _LEVEL.search(line, 0, 160)
    if m is None:
        return "INFO"
    word = m.group(1).upper()
    return _NORMAL.get(word, word.decode())


def _packet(lines: list[Line], packet_id: str, emitter_id: str, fid: str, meta: dict[str, str]) -> bytes:
    """A /logs packet of the lines: one message each, id "<file id>:<offset>", level guessed
    from the text."""
    ts = rfc3339_now()
    msgs = [
        {
            "id": f"{fid}:{line.offset}",
            "timestamp": ts,
            "level": guess_level(line.data),
            "source": meta["source"],
            "message": line.data.rstrip(b"\r\n").decode("utf-8", "replace"),
            "metadata": {"host": meta["host"], "file": meta["file"]},
        }
        for line in lines
    ]
    return orjson.dumps(
        {"packet_id": packet_id, "agent_id": emitter_id, "emitter_id": emitter_id, "timestamp": ts, "messages": msgs}
    )


class Shipper:
    """Reads the sources, batches their lines per file, sends the packets, and checkpoints each
    file's acknowledged offset."""

    def __init__(self, args: argparse.Namespace, urls: list[str]) -> None:
        self.args = args
        self.urls = urls
        patterns: list[str] = args.ship
        self.stdin = patterns == ["-"]
        self.state: StateFile | None = None
        if not self.stdin:
            path = Path(args.state_file) if args.state_file else default_state_file(args.state_dir, patterns)
            self.state = StateFile(path)
        self.watcher: Watcher | StdinWatcher = (
            StdinWatcher() if self.stdin else Watcher(patterns, {}, args.follow, args.rotate_wait)
        )
        self.host = socket.gethostname()
        self.emitter_id = args.emitter_id or f"shipper-{self.host}"
        self.counters = SendCounters()
        self.sem = asyncio.Semaphore(max(1, args.concurrency))
        self.tasks: set[asyncio.Task[None]] = set()
        self.stop = asyncio.Event()
        self.dirty = asyncio.Event()
        self.closing = False
        self.flushing = False
        self.lines = self.packets = self.saves = 0
        self.resumed_bytes = 0
        self.sender: PacketSender | None = None

    # --- sending and acknowledging -----------------------------------------------------------

    async def _slot(self) -> bool:
        """Waits for a send slot (at most --concurrency packets in flight). While reading, a stop
        ends the wait (False): the distributor may be down, and the stop must not hang."""
        if self.flushing or not self.sem.locked():
            await self.sem.acquire()
            return True
        acquire = asyncio.ensure_future(self.sem.acquire())
        stopped = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if acquire.done() and not acquire.cancelled():
            return True
        acquire.cancel()
        return False

    async def _dispatch(self, src: Source, n: int | None = None) -> bool:
        """Sends the first `n` (default all) pending lines of `src` as one packet; False when a
        stop came while it waited for a slot (the lines stay pending)."""
        if not await self._slot():
            return False
        lines = src.pending[:n] if n is not None else src.pending
        src.pending = src.pending[len(lines) :]
        fid = src.pending_fid
        meta = {"source": self.args.source or Path(src.path).name or "stdin", "host": self.host, "file": src.path}
        body = _packet(lines, f"ship:{fid}:{lines[0].offset}-{lines[-1].end}", self.emitter_id, fid, meta)
        packet = Inflight(src.pending_gen, lines[-1].end)
        src.inflight.append(packet)
        self.lines += len(lines)
        self.packets += 1
        t = asyncio.create_task(self._send(src, packet, body, len(lines)))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return True

    async def _send(self, src: Source, packet: Inflight, body: bytes, n: int) -> None:
        assert self.sender is not None
        try:
            outcome = await self.sender.send(body, n)
        finally:
            self.sem.release()
        # acknowledged, or rejected for good (4xx): either way it is not sent again
        if outcome is not Outcome.FAILED and src.ack(packet) and src.checkpointed:
            self.dirty.set()

    async def _saver(self) -> None:
        """Writes the state file after acknowledgements (one write at a time; acks that arrive
        during a write are in the next one)."""
        assert self.state is not None
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            last = self.closing  # set before its dirty.set(): this write has every ack
            await asyncio.to_thread(self.state.save, self.watcher.snapshot())
            self.saves += 1
            if last:
                return

    # --- the loop ------------------------------------------------------------------------------

    async def _cut(self, now: float, flush_all: bool) -> None:
        batch, flush_s = max(1, self.args.batch), self.args.flush_ms / 1000.0
        for src in self.watcher.sources:
            while len(src.pending) >= batch:
                if not await self._dispatch(src, batch):
                    return
            if src.pending and (flush_all or src.closed or now - src.pending_since >= flush_s):
                if not await self._dispatch(src):
                    return

    async def _loop(self) -> None:
        follow, args = self.args.follow, self.args
        next_scan = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_scan:
                await asyncio.to_thread(self.watcher.scan)
                next_scan = now + args.glob_interval if follow else float("inf")
            backlog = sum(len(s.pending) for s in self.watcher.sources)
            budget = max(args.batch, args.batch * max(1, args.concurrency) - backlog)
            got = await asyncio.to_thread(self.watcher.read, budget)
            await self._merge(got, now)
            await self._cut(now, flush_all=False)
            self.watcher.forget_done()
            if not follow and self.watcher.finished:
                return
            if not got:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 0.1)

    async def _merge(self, got: list[tuple[Source, str, int, list[Line]]], now: float) -> None:
        for src, fid, gen, lines in got:
            # truncated: the old generation goes first (stopped: what was read is read again)
            if src.pending and src.pending_gen != gen and not await self._dispatch(src):
                return
            if not src.pending:
                src.pending_since, src.pending_gen, src.pending_fid = now, gen, fid
            src.pending.extend(lines)

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(self.args.progress)
            self._print_progress()

    def _print_progress(self) -> None:
        c = self.counters
        open_files = sum(1 for s in self.watcher.sources if not s.closed)
        print(
            f"shipping: {self.lines:,} lines sent, {c.messages_acked:,} acked, {c.inflight} packets in flight, "
            f"{open_files} files open, {self.watcher.rotations} rotations, {self.saves:,} checkpoints",
            file=sys.stderr,
            flush=True,
        )

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()

        def finish() -> None:  # first SIGINT/SIGTERM: stop reading, deliver what was read, exit
            self.stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)  # a second one interrupts at once

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, finish)
        if self.state is not None:
            assert isinstance(self.watcher, Watcher)
            self.watcher.entries = await asyncio.to_thread(self.state.load)
        t0 = time.monotonic()
        complete = True
        saver = asyncio.create_task(self._saver()) if self.state is not None else None
        show = not self.args.quiet and self.args.progress > 0
        progress = asyncio.create_task(self._progress()) if show else None
        try:
            ctx = tls.client_ssl_from_args(self.args) or True  # --cacert
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
                self.sender = PacketSender(
                    session,
                    self.urls,
                    timeout_s=self.args.timeout,
                    give_up_after_s=None,
                    counters=self.counters,
                    token=read_token(self.args),
                )
                await self._loop()
                self.flushing = True
                deadline = time.monotonic() + self.args.stop_timeout if self.stop.is_set() else None
                try:  # what was read goes out
                    await asyncio.wait_for(self._cut(time.monotonic(), flush_all=True), _left(deadline))
                except TimeoutError:
                    complete = False
                if self.tasks:
                    _, late = await asyncio.wait(set(self.tasks), timeout=_left(deadline))
                    complete = complete and not late
                    for t in late:  # not acknowledged: not checkpointed, sent again next time
                        t.cancel()
                    await asyncio.gather(*late, return_exceptions=True)
        finally:
            if progress is not None:
                progress.cancel()
            if saver is not None:
                self.closing = True
                self.dirty.set()
                await saver
            self.watcher.close()
        c = self.counters
        return {
            "lines": self.lines,
            "packets": self.packets,
            "acked": c.messages_acked,
            "rejected": c.messages_rejected,
            "failed": c.messages_failed,
            "unconfirmed": self.lines - c.messages_acked - c.messages_rejected - c.messages_failed,
            "retried": c.retried,
            "files": len(self.watcher.snapshot()) if self.state is not None else 0,
            "rotations": self.watcher.rotations,
            "checkpoints": self.saves,
            "state_file": str(self.state.path) if self.state is not None else None,
            "complete": complete,
            "elapsed_s": round(time.monotonic() - t0, 3),
            "last_error": c.last_error,
        }


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def run_ship(args: argparse.Namespace, urls: list[str]) -> int:
    patterns: list[str] = args.ship
    if "-" in patterns and len(patterns) > 1:
        raise ConfigError("ship", "'-' (stdin) cannot be shipped together with files")
    if patterns != ["-"] and not args.follow:
        missing = [p for p in patterns if not any(Path(f).is_file() for f in expand([p]))]
        if missing:
            raise ConfigError("ship", f"{missing[0]!r} is not a readable file (nor a glob that matches one)")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            s = runner.run(Shipper(args, urls).run())
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
