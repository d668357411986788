"""The one-shot generator (`logdist generate`, `logdist emitter --once`): the Go-style
generator flags (-url, -rate, -batch, -duration).

It sends packets of `--batch` messages at `--rate` messages/s (0: as fast as the distributors
take them) for `--duration` or until `--count` messages, with up to `--concurrency` packets in
flight, shows a progress line on a TTY, and prints a summary: sent, acked, rejected, failed,
retried. The exit status is 0 only if every message was acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import uvloop

from logdist import tls
from logdist.emitter.messages import MessageFactory
from logdist.emitter.sender import Outcome, PacketSender, SendCounters
from logdist.errors import ConfigError
from logdist.tools import term

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """'60s', '2m', '500ms', '1h', or plain seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 2m, 500ms)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]


def add_oneshot_arguments(p: argparse.ArgumentParser, url_required: bool = True) -> None:
    """The generator flags (Go's single-dash spellings work too)."""
    p.add_argument(
        "--url",
        "-url",
        dest="url",
        action="append",
        required=url_required,
        metavar="URL",
        help="distributor URL; repeat for failover (a URL with no path gets /logs)",
    )
    p.add_argument("--rate", "-rate", dest="rate", type=float, default=1000.0, help="messages/s (0: unlimited)")
    p.add_argument("--batch", "-batch", dest="batch", type=int, default=250, help="messages per packet (250)")
    p.add_argument(
        "--duration", "-duration", dest="duration", type=parse_duration, default=None, help="how long (60s, 2m)"
    )
    p.add_argument("--count", type=int, default=None, help="stop after this many messages")
    p.add_argument("--concurrency", type=int, default=8, help="packets in flight at most (8)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--give-up-after", type=float, default=60.0, metavar="S", help="a packet retried this long fails")
    p.add_argument("--emitter-id", default=None, help="emitter_id/agent_id put in packets")
    p.add_argument("--seed", type=int, default=None, help="seed of the synthetic content")
    p.add_argument("--acked-ids", metavar="FILE", help="append the id of every acknowledged message to FILE")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line")
    from logdist.tools.cluster import add_token_arguments

    add_token_arguments(p)
    tls.add_cacert_argument(p)


@dataclass
class Plan:
    urls: list[str]
    rate: float
    batch: int
    duration: float | None
    count: int | None
    concurrency: int
    timeout: float
    give_up_after: float | None
    emitter_id: str | None = None
    seed: int | None = None
    acked_ids: str | None = None
    token: str | None = None
    cacert: str | None = None  # https:// distributors verified against it (else the system store)


def read_token(args: argparse.Namespace) -> str | None:
    from logdist.tools.cluster import read_token as read

    return read(args)


def plan_from_args(args: argparse.Namespace, urls: list[str]) -> Plan:
    if args.batch < 1:
        raise ConfigError("batch", "must be at least 1")
    if args.rate < 0:
        raise ConfigError("rate", "must be >= 0 (0 means unlimited)")
    if args.concurrency < 1:
        raise ConfigError("concurrency", "must be at least 1")
    if args.count is not None and args.count < 0:
        raise ConfigError("count", "must be >= 0")
    duration = args.duration
    if duration is None and args.count is None:
        duration = 10.0
    return Plan(
        urls=urls,
        rate=args.rate,
        batch=args.batch,
        duration=duration,
        count=args.count,
        concurrency=args.concurrency,
        timeout=args.timeout,
        give_up_after=args.give_up_after if args.give_up_after > 0 else None,
        emitter_id=args.emitter_id,
        seed=args.seed,
        acked_ids=args.acked_ids,
        token=read_token(args),
        cacert=args.cacert,
    )


async def _next_packet(plan: Plan, produced: int, start: float, stop_at: float | None) -> int | None:
    """The size of the next packet, once it is due; None when the run is over. With a rate, what
    is sent follows the schedule (rate x duration even if this process was slowed down); without
    one, the clock decides."""
    now = time.monotonic()
    if stop_at is not None and plan.rate <= 0 and now >= stop_at:
        return None
    n = plan.batch
    if plan.count is not None:
        n = min(n, plan.count - produced)
        if n <= 0:
            return None
    if plan.rate > 0:  # pace: the packet that holds message #produced is due then
        due = start + produced / plan.rate
        if stop_at is not None and due >= stop_at:
            return None
        if due > now:
            await asyncio.sleep(due - now)
    return n


def _draw(progress: term.Progress | None, plan: Plan, counters: SendCounters, start: float, now: float) -> None:
    if progress is None:
        return
    if plan.count is not None:
        frac = min(1.0, counters.messages_acked / plan.count) if plan.count else 1.0
    elif plan.duration:
        frac = min(1.0, (now - start) / plan.duration)
    else:
        frac = None
    el = max(now - start, 1e-9)
    progress.update(
        frac,
        f"{el:5.1f}s sent {term.num(counters.messages_sent)} acked {term.num(counters.messages_acked)} "
        f"rejected {term.num(counters.messages_rejected)} retried {term.num(counters.retried)} "
        f"{term.num(round(counters.messages_acked / el))} msg/s",
    )


def _summary(plan: Plan, counters: SendCounters, elapsed: float) -> dict[str, Any]:
    return {
        "urls": plan.urls,
        "elapsed_s": round(elapsed, 3),
        "sent": counters.messages_sent,
        "acked": counters.messages_acked,
        "rejected": counters.messages_rejected,
        "failed": counters.messages_failed,
        "retried": counters.retried,
        "failovers": counters.failovers,
        "duplicates": counters.duplicates,
        "packets": counters.packets_sent,
        "msgs_per_s": round(counters.messages_acked / elapsed, 1) if elapsed > 0 else 0.0,
        "last_error": counters.last_error,
    }


async def generate(plan: Plan, progress: term.Progress | None = None) -> dict[str, Any]:
    factory = MessageFactory(plan.emitter_id, plan.seed)
    counters = SendCounters()
    ctx = tls.client_context(plan.cacert) if plan.cacert else True
    connector = aiohttp.TCPConnector(limit=plan.concurrency * 2, force_close=False, ssl=ctx)
    start = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        sender = PacketSender(
            session,
            plan.urls,
            timeout_s=plan.timeout,
            give_up_after_s=plan.give_up_after,
            counters=counters,
            token=plan.token,
        )
        sem = asyncio.Semaphore(plan.concurrency)
        tasks: set[asyncio.Task[Any]] = set()
        stop_at = start + plan.duration if plan.duration is not None else None
        produced = 0
        last_draw = 0.0

        acked_ids = open(plan.acked_ids, "a", encoding="utf-8") if plan.acked_ids else None

        async def one(body: bytes, n: int, first_seq: int) -> None:
            try:
                outcome = await sender.send(body, n)
                if acked_ids is not None and outcome is Outcome.ACKED:
                    acked_ids.write("".join(f"{factory.prefix}-{i}\n" for i in range(first_seq, first_seq + n)))
            finally:
                sem.release()

        while (n := await _next_packet(plan, produced, start, stop_at)) is not None:
            await sem.acquire()
            first_seq = factory.seq
            _, body = factory.packet(n)
            produced += n
            t = asyncio.create_task(one(body, n, first_seq))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            now = time.monotonic()
            if now - last_draw > 0.2:
                last_draw = now
                _draw(progress, plan, counters, start, now)
        while tasks:
            await asyncio.wait(set(tasks), timeout=0.2)
            _draw(progress, plan, counters, start, time.monotonic())
        if acked_ids is not None:
            acked_ids.close()
    elapsed = time.monotonic() - start
    if progress is not None:
        progress.done()
    return _summary(plan, counters, elapsed)


def summary_text(s: dict[str, Any]) -> str:
    lines = [
        f"sent     {term.num(s['sent'])} messages in {term.num(s['packets'])} packets over {s['elapsed_s']:.1f} s "
        f"({term.num(round(s['msgs_per_s']))} msg/s acked) to {', '.join(s['urls'])}",
        f"acked    {term.num(s['acked'])}",
        f"rejected {term.num(s['rejected'])}",
        f"failed   {term.num(s['failed'])}",
        f"retried  {term.num(s['retried'])} (failovers {term.num(s['failovers'])}, "
        f"duplicates {term.num(s['duplicates'])})",
    ]
    if s["last_error"] and (s["rejected"] or s["failed"] or s["retried"]):
        lines.append(f"last error: {s['last_error']}")
    return "\n".join(lines)


def normalize_urls(urls: list[str]) -> list[str]:
    from logdist.config import parse_emitter_config

    return list(parse_emitter_config({"distributor_urls": urls}).distributor_urls)


def run_oneshot(args: argparse.Namespace, urls: list[str] | None = None) -> int:
    plan = plan_from_args(args, normalize_urls(urls or args.url))
    logging.basicConfig(level=logging.ERROR, format="logdist generate: %(message)s", stream=sys.stderr)
    progress = None if args.quiet else term.Progress(sys.stderr)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            s = runner.run(generate(plan, progress))
        except KeyboardInterrupt:
            if progress is not None:
                progress.done()
            print("interrupted", file=sys.stderr)
            return 130
    if args.json:
        sys.stdout.write(orjson.dumps(s).decode() + "\n")
    else:
        print(summary_text(s))
    return 0 if s["acked"] == s["sent"] else 1
