"""Synthetic, realistic log messages and packets.

Messages look like a small service mesh's logs: levels with a realistic mix, a dozen sources,
templated text with varying fields, and string metadata; about 240 bytes of JSON each. To keep
generation cheap, a pool of message bodies is drawn once per factory and reused, and only the
id and timestamp change per message. Ids are `<factory prefix>-<counter>`: unique within a
factory, and across processes thanks to the random prefix.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from typing import Any

import orjson

LEVELS = (("DEBUG", 10), ("INFO", 62), ("WARN", 18), ("ERROR", 8), ("FATAL", 2))
SOURCES = (
    "api-gateway",
    "auth-service",
    "user-service",
    "payment-service",
    "order-service",
    "inventory-service",
    "search-service",
    "notification-service",
    "scheduler",
    "db-primary",
    "cache",
    "cdn-edge",
)
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1")
PATHS = ("/api/v1/users", "/api/v1/orders", "/api/v1/cart", "/api/v1/search", "/login", "/health", "/api/v1/payments")
METHODS = ("GET", "GET", "GET", "POST", "POST", "PUT", "DELETE")

TEMPLATES: dict[str, tuple[str, ...]] = {
    "DEBUG": (
        "cache lookup key=user:{n} hit={b} took {ms}ms",
        "connection pool stats active={k} idle={k2} waiting=0",
        "parsed request headers for {method} {path} in {us}us",
    ),
    "INFO": (
        "{method} {path}/{n} completed with status 200 in {ms}ms (client {ip})",
        "user {n} logged in from {ip} using session {hex}",
        "order {n} created: {k} items, total {amount} EUR",
        "job {hex} finished in {ms}ms, processed {k} records",
    ),
    "WARN": (
        "slow query on table orders took {ms}ms (threshold 200ms), rows={k}",
        "retrying upstream call to {source} attempt {k} after {ms}ms",
        "rate limit at 80% for client {ip}: {k} requests in the last minute",
    ),
    "ERROR": (
        "{method} {path}/{n} failed with status 500: upstream {source} timed out after {ms}ms",
        "payment {hex} declined by processor: insufficient funds (code {k})",
        "could not connect to db-primary:5432: connection refused (attempt {k})",
    ),
    "FATAL": (
        "out of memory while allocating {k} MB buffer; shutting down worker {n}",
        "config reload failed: missing key 'database.url'; refusing to start",
    ),
}


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MessageFactory:
    """Makes messages and /logs packets (with logdist's `emitter_id`)."""

    def __init__(self, emitter_id: str | None = None, seed: int | None = None, pool_size: int = 2048) -> None:
        self.rng = random.Random(seed)
        self.prefix = self.rng.getrandbits(48).to_bytes(6, "big").hex() if seed is not None else os.urandom(6).hex()
        self.emitter_id = emitter_id or f"emitter-{self.prefix[:6]}"
        self.seq = 0
        self.packet_seq = 0
        self._pool = [self._body() for _ in range(pool_size)]
        self._pool_i = 0

    def _body(self) -> tuple[str, str, str, dict[str, str]]:
        r = self.rng
        level = r.choices([lv for lv, _ in LEVELS], [w for _, w in LEVELS])[0]
        source = r.choice(SOURCES)
        text = r.choice(TEMPLATES[level]).format(
            n=r.randint(1000, 999_999),
            b=r.choice(("true", "false")),
            ms=r.randint(1, 2500),
            us=r.randint(10, 900),
            k=r.randint(1, 50),
            k2=r.randint(1, 20),
            method=r.choice(METHODS),
            path=r.choice(PATHS),
            ip=f"10.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}",
            hex=r.getrandbits(64).to_bytes(8, "big").hex(),
            amount=f"{r.randint(1, 2000)}.{r.randint(0, 99):02d}",
            source=r.choice(SOURCES),
        )
        meta = {
            "host": f"{source.split('-')[0]}-{r.randint(1, 12):02d}",
            "region": r.choice(REGIONS),
            "env": "prod",
        }
        return level, source, text, meta

    def messages(self, n: int) -> list[dict[str, Any]]:
        ts = rfc3339_now()
        pool = self._pool
        size = len(pool)
        i = self._pool_i
        prefix = self.prefix
        seq = self.seq
        out = []
        for k in range(n):
            level, source, text, meta = pool[(i + k) % size]
            out.append(
                {
                    "id": f"{prefix}-{seq + k}",
                    "timestamp": ts,
                    "level": level,
                    "source": source,
                    "message": text,
                    "metadata": meta,
                }
            )
        self.seq = seq + n
        self._pool_i = (i + n * 7 + 1) % size  # vary the mix between batches
        return out

    def packet(self, n: int) -> tuple[str, bytes]:
        """A packet of `n` new messages: (packet_id, JSON body). The body is built once and
        re-sent unchanged on retry, so the distributor can recognise the duplicate."""
        self.packet_seq += 1
        pid = f"{self.prefix}-p{self.packet_seq}"
        doc = {
            "packet_id": pid,
            "agent_id": self.emitter_id,
            "emitter_id": self.emitter_id,
            "timestamp": rfc3339_now(),
            "messages": self.messages(n),
        }
        return pid, orjson.dumps(doc)
