"""One analyzer's link: its outbound queue, its sender task, delivery (the POST) and the health
probe (the GET /health).

The link decides nothing about where a batch goes: it forms batches from its queue (or takes
those the engine made ready), sends them, keeps its own counters and reports each answer to the
engine (`LinkReports`): acked, failed (transient: network error, timeout, 5xx, 408, 429, with the
Retry-After it gave) or refused (any other status: a permanent refusal), and caught_up when a
saturated queue is down to half its cap. The engine owns eligibility (healthy, saturated,
ejected) and everything that moves a batch elsewhere.

Outlier detection counts delivery outcomes here: `consecutive_failures` counts the failures that
are the analyzer's fault (no answer, a timeout, 5xx, 408) of batches sent since its last
re-admission. A 429 is throttling, not a fault: it is retried and honours Retry-After, and it
neither counts nor resets the streak. A permanent 4xx refuses the batch, not the analyzer: it
resets the streak, as an acknowledgement does.

Wire formats (the analyzer's `format`, wire.py): "batch" POSTs the batch body as it is;
"packet" POSTs one seed 003 packet per batch; "message" POSTs each message on its own, with up
to `message_concurrency` requests in flight to the analyzer, and reports the batch once every
message has an answer: the acknowledged messages as one acked piece, each permanently refused
message alone (so it alone goes to dead letters), and the rest as one failed piece (retried,
rerouted, as a failed batch is). After a transient failure it sends no more of that batch. An
analyzer that refuses its first deliveries with 400 and acknowledges none most likely wants
another format: the link logs that once, naming the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import aiohttp

from logdist import tls
from logdist.config import AnalyzerSpec, DistributorConfig
from logdist.distributor import wire
from logdist.distributor.batch import Batch, Chunk, OutboundQueue
from logdist.http import parse_retry_after

log = logging.getLogger("logdist.distributor")

_JSON_HEADERS = {"Content-Type": "application/json"}
#: ejections a link keeps on record for /api/v1/metrics (`recent_ejections`)
_EJECTIONS_KEPT = 8
#: deliveries refused with 400 (none acknowledged) after which the format is named as the cause
_MISMATCH_AFTER = 3

#: format "message": the outcome of a message not sent because another of its batch failed
_NOT_SENT = "not sent: another message of the batch failed first"
#: what a POST came to: (status, or None when there was no answer; error detail; Retry-After)
Outcome = tuple[int | None, str, float | None]


def _transient(status: int | None) -> bool:
    # 508 Loop Detected (a distributor this batch has passed through already) is permanent:
    # the batch goes to dead letters, as any refusal; a retry would only go round again
    return status is None or (status >= 500 and status != 508) or status in (408, 429)


#: every delivery names the distributors it passed through (ingest.py refuses our own id)
HOP_HEADER = "X-Logdist-Hop"


def hop_headers(batch: Batch, own: str | None) -> dict[str, str]:
    """The POST's headers: JSON, and the hops of the batch's chunks, then this distributor's."""
    hops = list(dict.fromkeys(h for c in batch.chunks for h in c.hops))
    if own is not None and own not in hops:
        hops.append(own)
    return {**_JSON_HEADERS, HOP_HEADER: ",".join(hops)} if hops else _JSON_HEADERS


def _loop_now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # figures read outside the loop (never in the daemon)
        return time.monotonic()


def _wall(loop_time: float, now: float) -> float:
    """A loop time as Unix time (seconds, rounded to the millisecond)."""
    return round(time.time() + (loop_time - now), 3)


class LinkReports(Protocol):
    """What a link tells the engine about a batch it sent (and about its queue)."""

    def acked(self, link: AnalyzerLink, batch: Batch) -> None: ...

    def failed(self, link: AnalyzerLink, batch: Batch, detail: str, retry_after: float | None) -> None: ...

    async def refused(self, link: AnalyzerLink, batch: Batch, status: int, detail: str) -> None: ...

    def caught_up(self, link: AnalyzerLink) -> None: ...


class AnalyzerLink:
    """Everything the distributor keeps about one analyzer, and the task that feeds it."""

    def __init__(
        self,
        spec: AnalyzerSpec,
        cfg: DistributorConfig,
        session: aiohttp.ClientSession,
        reports: LinkReports,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        *,
        bursty: bool,
        outbound: tls.Outbound | None = None,
    ) -> None:
        self.spec = spec
        # the TLS context of https:// endpoints (upstream_* keys); rebuilt on reload
        self._outbound = outbound
        self.cfg = cfg  # the engine sets it again on a config reload
        self._session = session
        self._reports = reports
        self._spawn = spawn
        # The write-ahead log acknowledges packets in fsync groups: a busy sender lingers longer.
        self._bursty = bursty
        self.queue = OutboundQueue()
        self.ready: deque[Batch] = deque()  # batches due (retries, rerouted in)
        self.inflight: set[Batch] = set()
        self.wake = asyncio.Event()
        self.healthy = True
        self.enabled = spec.enabled
        self.closed = False
        self.consecutive_failures = 0
        self.refused_in_a_row = 0  # batches refused for good since the last acknowledged one
        self.paused_until = 0.0  # Retry-After: send nothing new before this loop time
        self.last_error = ""
        self.ejections = 0
        # Saturation: an analyzer whose queue passes `cap` (it cannot keep up with its share)
        # takes no new traffic until its queue is down to half of it, so the others keep their
        # pace and memory stays bounded. It keeps sending what it has.
        self.saturated = False
        self.saturations = 0
        self.cap = 1 << 62
        self.probe_failures = 0
        # Outlier ejection (the engine decides; see Engine._eject): the n-th ejection in a row
        # holds the analyzer out for n x ejection_base_ms (capped); the level drops by one per
        # ejection_decay_ms of healthy delivery. After a re-admission the analyzer is on
        # probation until it acknowledges a batch: one failure then ejects it again, for longer.
        self.ejection_level = 0
        self.down_until = 0.0  # not re-admitted before this loop time (the ejection's end)
        self.readmitted_at = -1e9
        self.on_probation = False
        self.healthy_since: float | None = None  # loop time of the first ack since re-admission
        self._ejected_at = 0.0
        self.probes_ok_while_ejected = 0  # /health passed, but the ejection time had not ended
        self.recent_ejections: deque[dict[str, Any]] = deque(maxlen=_EJECTIONS_KEPT)
        self.last_ok = -1e9  # loop time of the last acknowledged batch
        self.last_batch = -1e9  # loop time the last batch was formed (a busy sender lingers)
        # counters (messages unless said otherwise)
        self.routed = 0
        self.acked = 0
        self.failed = 0  # failed attempts (batches)
        self.retried = 0  # retry attempts scheduled (batches)
        self.rerouted = 0  # messages moved away from this analyzer
        self.dead_lettered = 0
        self.batches_sent = 0
        self.requests_sent = 0  # POSTs (batches_sent, but one per message with format "message")
        self.latencies: deque[float] = deque(maxlen=1024)
        self._sem: asyncio.Semaphore | None = None  # format "message": requests in flight
        self._sem_size = 0
        # format mismatch watch: 400s before any acknowledgement, for the format in use
        self._watched_format = ""
        self._refused_400 = 0
        self._watch_over = False

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def eligible(self) -> bool:
        return self.healthy and self.enabled and not self.closed

    @property
    def state(self) -> str:
        """removed, disabled (by the operator), up, ejected (held out until `down_until`) or
        down (the ejection time is over, waiting for a health probe to pass)."""
        if self.closed:
            return "removed"
        if not self.enabled:
            return "disabled"
        if self.healthy:
            return "up"
        return "ejected" if _loop_now() < self.down_until else "down"

    def ejection_level_at(self, now: float) -> int:
        """The ejection level after its decay: one less per ejection_decay_ms of healthy
        delivery (since the first acknowledgement after the last re-admission)."""
        if not self.healthy or self.healthy_since is None:
            return self.ejection_level
        periods = int((now - self.healthy_since) * 1000 // self.cfg.ejection_decay_ms)
        return max(0, self.ejection_level - periods)

    def note_ejection(self, now: float, hold: float, failures: int, reason: str) -> None:
        """Keep an ejection on record (the engine has set the level and `down_until`)."""
        self.ejections += 1
        self._ejected_at = now
        self.recent_ejections.append(
            {
                "at": _wall(now, now),
                "until": _wall(now + hold, now),
                "duration_ms": round(hold * 1000, 3),
                "level": self.ejection_level,
                "failures": failures,
                "on_probation": self.on_probation,
                "reason": reason[:200],
                "readmitted_at": None,
                "out_ms": None,  # how long it was out of rotation, once re-admitted
            }
        )

    def note_readmission(self, now: float) -> None:
        self.readmitted_at = now
        if self.recent_ejections and self.recent_ejections[-1]["readmitted_at"] is None:
            self.recent_ejections[-1]["readmitted_at"] = _wall(now, now)
            self.recent_ejections[-1]["out_ms"] = round((now - self._ejected_at) * 1000, 3)

    @property
    def inflight_messages(self) -> int:
        return sum(b.count for b in self.inflight)

    @property
    def queued_messages(self) -> int:
        return self.queue.messages + sum(b.count for b in self.ready)

    def latency_ms(self) -> dict[str, float | None]:
        if not self.latencies:
            return {"p50": None, "p99": None}
        xs = sorted(self.latencies)
        n = len(xs)
        return {"p50": round(xs[n // 2] * 1000, 3), "p99": round(xs[min(n - 1, (n * 99) // 100)] * 1000, 3)}

    def figures(self) -> dict[str, Any]:
        """The link's row of /api/v1/metrics (without the shares, which the engine adds)."""
        now = _loop_now()
        ejected = not self.healthy and now < self.down_until
        return {
            "id": self.id,
            "url": self.spec.url,
            "endpoint": self.spec.endpoint,
            "weight": self.spec.weight,
            "format": self.spec.format,
            "message_concurrency": self.spec.message_concurrency,
            "state": self.state,
            "eligible": self.eligible,
            "routed": self.routed,
            "acked": self.acked,
            "failed": self.failed,
            "retried": self.retried,
            "rerouted": self.rerouted,
            "dead_lettered": self.dead_lettered,
            "queued": self.queued_messages,
            "inflight": self.inflight_messages,
            "batches_sent": self.batches_sent,
            "requests_sent": self.requests_sent,
            "ejections": self.ejections,
            "ejection_level": self.ejection_level_at(now),
            "ejected_until": _wall(self.down_until, now) if ejected else None,
            "ejection_remaining_ms": round((self.down_until - now) * 1000, 3) if ejected else 0.0,
            "on_probation": self.on_probation,
            "probes_ok_while_ejected": self.probes_ok_while_ejected,
            "recent_ejections": list(self.recent_ejections),
            "saturated": self.saturated,
            "saturations": self.saturations,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error or None,
        }

    def close(self) -> None:
        """Send nothing new: the sender task returns once it wakes."""
        self.closed = True
        self.wake.set()

    # -----------------------------------------------------------------------------------------
    # sending

    async def run(self) -> None:
        """The sender: while open, form a batch (or take a ready one) and deliver it."""
        loop = asyncio.get_running_loop()
        lingered = False
        while not self.closed:
            cfg = self.cfg
            if (
                len(self.inflight) >= cfg.max_inflight
                or not self.eligible
                or (not self.ready and not self.queue.chunks)
            ):
                self.wake.clear()
                await self.wake.wait()
                continue
            now = loop.time()
            if self.paused_until > now:
                await asyncio.sleep(self.paused_until - now)
                continue
            if self.ready:
                batch = self.ready.popleft()
            else:
                linger = cfg.linger_ms / 1000
                if not lingered and linger > 0 and self._should_linger(now, linger):
                    lingered = True
                    await asyncio.sleep(linger)
                    continue
                lingered = False
                batch = self._form_batch(now)
            self.inflight.add(batch)
            self._spawn(self._deliver(batch))

    def _should_linger(self, now: float, linger: float) -> bool:
        """Busy (something in flight; in wal mode also: a batch went out just now): let the
        next batch fill up a little. The write-ahead log releases packets in groups, one per
        fsync, with a gap between; without this each group went out as its own batch (about
        half as many messages per POST as in memory mode). In memory mode packets come one by
        one, and the extra linger cost 7% of its throughput (bench/e2e.py, 3 A/B pairs). A lone
        packet after a quiet spell goes out at once."""
        cfg, q = self.cfg, self.queue
        busy = bool(self.inflight) or (self._bursty and now - self.last_batch < 10 * linger)
        return busy and q.messages < cfg.batch_max_messages and q.bytes < cfg.batch_max_bytes

    def _form_batch(self, now: float) -> Batch:
        self.last_batch = now
        batch = Batch(self.queue.take(self.cfg.batch_max_messages, self.cfg.batch_max_bytes), self.id)
        if self.saturated and self.queue.messages <= self.cap // 2:
            self._reports.caught_up(self)
        return batch

    def _headers(self, base: dict[str, str]) -> dict[str, str]:
        """`base`, and the analyzer's token (its token_file) when it has one."""
        tok = self.spec.token
        return base if tok is None else {**base, "Authorization": f"Bearer {tok}"}

    @property
    def _ssl(self) -> Any:
        """aiohttp's `ssl=` for this analyzer: the upstream context (True: the default)."""
        return True if self._outbound is None else self._outbound.context

    async def _post(self, body: bytes, headers: dict[str, str]) -> Outcome:
        """POST a body: (status or None when there was no answer, error detail, Retry-After)."""
        self.requests_sent += 1
        try:
            async with self._session.post(
                self.spec.endpoint,
                data=body,
                headers=self._headers(headers),
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout_s),
                allow_redirects=False,
                ssl=self._ssl,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                if 200 <= status < 300:
                    return status, "", None
                detail = f"HTTP {status}: " + raw[:300].decode("utf-8", "replace")
                return status, detail, parse_retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an odd response: treat as transient, never lose it
            log.exception("unexpected error delivering to %s", self.id)
            return None, f"{type(exc).__name__}: {exc}", None

    def _body(self, batch: Batch) -> bytes:
        """What the batch is sent as: its body ("batch"), or its packet, built once ("packet")."""
        if self.spec.format != "packet":
            return batch.body
        if batch.wire_format != "packet":
            batch.wire = wire.packet_body([c.data for c in batch.chunks], self.id)
            batch.wire_format = "packet"
        body = batch.wire
        assert isinstance(body, bytes)
        return body

    async def _deliver(self, batch: Batch) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            if self.spec.format == "message":
                outcomes, pieces = await self._post_messages(batch)
            else:
                outcomes, pieces = [await self._post(self._body(batch), hop_headers(batch, self.cfg.instance_id))], None
        except asyncio.CancelledError:
            self.inflight.discard(batch)
            raise
        except Exception as exc:  # e.g. a message that cannot be cut out: never lose the batch
            log.exception("cannot deliver a batch of %d messages to %s", batch.count, self.id)
            outcomes, pieces = [(None, f"{type(exc).__name__}: {exc}", None)], None
        self.inflight.discard(batch)
        self.batches_sent += 1
        if any(o[0] is not None for o in outcomes):
            self.latencies.append(loop.time() - t0)
        self._watch_format(outcomes)
        try:
            if pieces is None:
                await self._report(batch, outcomes[0], t0)
            else:
                await self._report_messages(batch, pieces, outcomes, t0)
        finally:
            self.wake.set()

    async def _report(self, batch: Batch, outcome: Outcome, t0: float, *, partial: bool = False) -> None:
        """Report one answer for the whole batch to the engine (`partial`: a failed piece of a
        batch some of whose messages the analyzer answered: no outage, no failure streak)."""
        status, detail, retry_after = outcome
        loop = asyncio.get_running_loop()
        if status is not None and 200 <= status < 300:
            self.consecutive_failures = 0
            self.last_ok = loop.time()
            self.acked += batch.count
            self._reports.acked(self, batch)
        elif _transient(status):
            # a batch sent before the last re-admission says nothing about the analyzer now
            counts = not partial and status != 429 and t0 >= self.readmitted_at
            self._note_failure(batch, detail, retry_after, loop.time(), counts=counts)
            self._reports.failed(self, batch, detail, retry_after)
        else:
            assert status is not None
            self.consecutive_failures = 0  # it answered: alive, it just refuses this batch
            self.last_error = detail
            await self._reports.refused(self, batch, status, detail)

    # -----------------------------------------------------------------------------------------
    # format "message": one POST per message

    def _message_pieces(self, batch: Batch) -> list[tuple[Chunk, bytes]]:
        """The batch's messages, each as a one-message chunk (its exact text, its chunk's store
        token) and the body to POST; made once per batch."""
        if batch.wire_format != "message":
            pieces: list[tuple[Chunk, bytes]] = []
            for c in batch.chunks:
                if c.count == 1:
                    pieces += [(c, body) for _, body in wire.message_bodies(c.data)]
                    continue
                pieces += [(Chunk(text, 1, c.token, c.born), body) for text, body in wire.message_bodies(c.data)]
            batch.wire = pieces
            batch.wire_format = "message"
        out = batch.wire
        assert isinstance(out, list)
        return out

    async def _post_messages(self, batch: Batch) -> tuple[list[Outcome], list[tuple[Chunk, bytes]]]:
        """POST each message of the batch, at most message_concurrency at once to this analyzer."""
        pieces = self._message_pieces(batch)
        n = self.spec.message_concurrency
        if self._sem is None or self._sem_size != n:
            self._sem, self._sem_size = asyncio.Semaphore(n), n
        sem = self._sem
        headers = hop_headers(batch, self.cfg.instance_id)
        outcomes: list[Outcome] = [(None, _NOT_SENT, None)] * len(pieces)
        todo = iter(range(len(pieces)))
        stop = False  # a transient failure: send no more of this batch (a down analyzer costs
        # one timeout per request in flight, not one per message)

        async def worker() -> None:
            nonlocal stop
            for i in todo:
                if stop:
                    return
                async with sem:
                    if stop:
                        return
                    outcomes[i] = out = await self._post(pieces[i][1], headers)
                if _transient(out[0]):
                    stop = True

        await asyncio.gather(*(worker() for _ in range(min(n, len(pieces)))))
        return outcomes, pieces

    async def _report_messages(
        self, batch: Batch, pieces: list[tuple[Chunk, bytes]], outcomes: list[Outcome], t0: float
    ) -> None:
        """Report a batch sent message by message: what was acknowledged as one piece, each
        refused message alone, what failed (transiently) as one piece."""
        acked: list[Chunk] = []
        failed: list[tuple[Chunk, bytes]] = []
        refused: list[tuple[Chunk, int, str]] = []
        first_failure: Outcome | None = None
        retry_after: float | None = None
        for (chunk, body), (status, detail, ra) in zip(pieces, outcomes, strict=True):
            if status is not None and 200 <= status < 300:
                acked.append(chunk)
            elif _transient(status):
                failed.append((chunk, body))
                if first_failure is None or first_failure[1] == _NOT_SENT:
                    first_failure = (status, detail, ra)
                if ra is not None:
                    retry_after = max(retry_after or 0.0, ra)
            else:
                assert status is not None
                refused.append((chunk, status, detail))
        if acked:
            await self._report(batch if len(acked) == len(pieces) else batch.piece(acked), (200, "", None), t0)
        for chunk, status, detail in refused:
            await self._report(batch if len(pieces) == 1 else batch.piece([chunk]), (status, detail, None), t0)
        if failed:
            rest = batch if len(failed) == len(pieces) else batch.piece([c for c, _ in failed])
            rest.wire, rest.wire_format = failed, "message"
            assert first_failure is not None
            status, detail, _ = first_failure
            await self._report(rest, (status, detail, retry_after), t0, partial=bool(acked or refused))

    # -----------------------------------------------------------------------------------------
    # format mismatch

    def _watch_format(self, outcomes: list[Outcome]) -> None:
        """Until the analyzer acknowledges something in this format: a delivery all of whose
        answers are 400 counts; after _MISMATCH_AFTER of them, say once that the format is
        the likely cause (and which one it likely wants)."""
        fmt = self.spec.format
        if fmt != self._watched_format:
            self._watched_format, self._refused_400, self._watch_over = fmt, 0, False
        if self._watch_over:
            return
        statuses = [o[0] for o in outcomes]
        if any(st is not None and 200 <= st < 300 for st in statuses):
            self._watch_over = True
            return
        if not statuses or any(st != 400 for st in statuses):
            return
        self._refused_400 += 1
        if self._refused_400 < _MISMATCH_AFTER:
            return
        self._watch_over = True
        answer = outcomes[0][1]
        guess = wire.guess_format(fmt, answer)
        wants = (
            f'it most likely wants "format": "{guess}"'
            if guess is not None
            else "try another: " + " or ".join(f'"{f}"' for f in ("batch", "message", "packet") if f != fmt)
        )
        log.warning(
            'analyzer %s refused each of its first %d deliveries with 400 and acknowledged none: its "format" '
            '("%s") is probably not what it reads (%s): %s. Set "format" in its config, or PATCH '
            "/api/v1/analyzers/%s; then replay the dead letters (POST /api/v1/dead-letters/replay)",
            self.id, self._refused_400, fmt, answer[:120].strip(), wants, self.id,
        )  # fmt: skip

    def _note_failure(self, batch: Batch, detail: str, retry_after: float | None, now: float, *, counts: bool) -> None:
        self.failed += 1
        if counts:
            self.consecutive_failures += 1
        self.last_error = detail
        batch.attempts += 1
        if retry_after is not None:
            self.paused_until = max(self.paused_until, now + retry_after)

    # -----------------------------------------------------------------------------------------
    # health

    async def probe(self, timeout: float) -> bool:
        """GET /health: True when it answered 200 within `timeout` seconds."""
        try:
            t = aiohttp.ClientTimeout(total=timeout)
            async with self._session.get(
                self.spec.url + "/health", headers=self._headers({}), timeout=t, ssl=self._ssl
            ) as r:
                await r.read()
                return r.status == 200
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
