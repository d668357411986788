"""Sending packets to distributors with at-least-once delivery.

A packet is sent with the same packet_id (the same bytes) until a distributor acknowledges it
(2xx) or rejects it permanently (a 4xx other than 408/429). Transient failures (connection
error, timeout, 5xx, 408, 429) fail over to the next distributor URL; after a full round of
failures it backs off exponentially with jitter, and never sooner than a Retry-After it was
given. A packet that stays undelivered for `give_up_after_s` counts as failed.

The backoff is the core's exponential ceiling (`core.RetryScheduler.backoff`) with "equal
jitter": a wait in [ceiling/2, ceiling), so an emitter never retries a full round at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
from dataclasses import asdict, dataclass

import aiohttp
import orjson

from logdist.core import RetryScheduler
from logdist.http import parse_retry_after

log = logging.getLogger("logdist.emitter")

TRANSIENT_4XX = frozenset({408, 429})
_BELOW_ONE = math.nextafter(1.0, 0.0)


class Outcome(enum.Enum):
    ACKED = "acked"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass
class SendCounters:
    packets_sent: int = 0  # distinct packets handed to send()
    messages_sent: int = 0
    packets_acked: int = 0
    messages_acked: int = 0
    packets_rejected: int = 0
    messages_rejected: int = 0
    packets_failed: int = 0
    messages_failed: int = 0
    retried: int = 0  # re-sends of a packet (same packet_id)
    failovers: int = 0  # re-sends that went to a different URL
    duplicates: int = 0  # packets a distributor reported as already accepted
    inflight: int = 0
    last_error: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class PacketSender:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        urls: list[str] | tuple[str, ...],
        *,
        timeout_s: float = 10.0,
        give_up_after_s: float | None = 60.0,
        backoff_base_s: float = 0.05,
        backoff_cap_s: float = 5.0,
        retry_after_cap_s: float = 30.0,
        counters: SendCounters | None = None,
        rng: random.Random | None = None,
        token: str | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one distributor URL is needed")
        self.session = session
        self.headers = {"Content-Type": "application/json"}
        if token is not None:  # an ingest (or admin) token: Authorization: Bearer
            self.headers["Authorization"] = f"Bearer {token}"
        self.urls = list(urls)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.give_up_after_s = give_up_after_s
        # only its backoff(attempt, u) is used: min(cap, base * 2**attempt) * u
        self._backoff = RetryScheduler(backoff_base_s, backoff_cap_s, 2.0)
        self.retry_after_cap_s = retry_after_cap_s
        self.counters = counters or SendCounters()
        self.rng = rng or random.Random()
        self._next = 0
        # URLs that just failed are passed over as a packet's first choice for a while, so a
        # dead distributor costs one failed attempt per interval, not one per packet.
        self._down_until = [0.0] * len(self.urls)
        self._fails = [0] * len(self.urls)

    def next_start(self) -> int:
        """Spreads packets over the URLs round-robin (each URL is one packet's first choice)."""
        i = self._next
        self._next = (i + 1) % len(self.urls)
        return i

    def _first_up(self, start: int) -> int:
        n = len(self.urls)
        if n == 1:
            return start
        now = time.monotonic()
        for k in range(n):
            i = (start + k) % n
            if self._down_until[i] <= now:
                return i
        return start

    def _mark(self, i: int, ok: bool) -> None:
        if ok:
            self._fails[i] = 0
            self._down_until[i] = 0.0
        else:
            self._fails[i] += 1
            self._down_until[i] = time.monotonic() + min(10.0, 0.25 * 2 ** min(self._fails[i], 8))

    async def send(self, body: bytes, n_messages: int, start: int | None = None) -> Outcome:
        c = self.counters
        c.packets_sent += 1
        c.messages_sent += n_messages
        c.inflight += 1
        try:
            outcome = await self._send(body, start if start is not None else self.next_start())
        finally:
            c.inflight -= 1
        if outcome is Outcome.ACKED:
            c.packets_acked += 1
            c.messages_acked += n_messages
        elif outcome is Outcome.REJECTED:
            c.packets_rejected += 1
            c.messages_rejected += n_messages
        else:
            c.packets_failed += 1
            c.messages_failed += n_messages
        return outcome

    async def _send(self, body: bytes, start: int) -> Outcome:
        c = self.counters
        n_urls = len(self.urls)
        first = time.monotonic()
        start = self._first_up(start)
        attempt = 0
        round_wait = 0.0  # the longest Retry-After seen in the current round
        while True:
            ui = (start + attempt) % n_urls
            url = self.urls[ui]
            status, retry_after, detail = await self._post(url, body)
            self._mark(ui, status is not None and status < 500 and status not in TRANSIENT_4XX)
            if status is not None and 200 <= status < 300:
                if b"duplicate" in detail and _parse_ack(detail).get("duplicate") is True:
                    c.duplicates += 1
                return Outcome.ACKED
            if status is not None and 400 <= status < 500 and status not in TRANSIENT_4XX:
                c.last_error = _describe(url, status, detail)
                log.warning("packet rejected by %s: %s", url, c.last_error)
                return Outcome.REJECTED
            c.last_error = _describe(url, status, detail)
            if retry_after is not None:  # already capped at retry_after_cap_s
                round_wait = max(round_wait, retry_after)
            attempt += 1
            if self.give_up_after_s is not None and time.monotonic() - first >= self.give_up_after_s:
                log.warning("giving up on a packet after %d attempts: %s", attempt, c.last_error)
                return Outcome.FAILED
            if attempt % n_urls == 0:  # every URL failed this round: back off before the next
                rnd = attempt // n_urls
                # 0.5 + u/2 rounds up to 1.0 for the largest u; backoff() wants u < 1
                u = min(0.5 + self.rng.random() / 2, _BELOW_ONE)
                backoff = self._backoff.backoff(min(rnd - 1, 16), u)
                wait = max(round_wait, backoff)
                round_wait = 0.0
                if self.give_up_after_s is not None:
                    wait = min(wait, max(0.0, self.give_up_after_s - (time.monotonic() - first)) + 0.01)
                await asyncio.sleep(wait)
            else:
                c.failovers += 1
            c.retried += 1

    async def _post(self, url: str, body: bytes) -> tuple[int | None, float | None, bytes]:
        try:
            async with self.session.post(url, data=body, headers=self.headers, timeout=self.timeout) as r:
                data = await r.read()
                retry_after = parse_retry_after(r.headers.get("Retry-After"), self.retry_after_cap_s)
                return r.status, retry_after, data
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return None, None, f"{type(exc).__name__}: {exc}".encode()


def _describe(url: str, status: int | None, detail: bytes) -> str:
    text = detail[:300].decode("utf-8", "replace").strip()
    return f"{url}: {text}" if status is None else f"{url}: HTTP {status} {text}".rstrip()


def _parse_ack(body: bytes) -> dict[str, object]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}
