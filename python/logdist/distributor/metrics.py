"""Figures the distributor reports: /health, /queue, /api/v1/metrics (JSON) and /metrics
(Prometheus text exposition format, written by hand: a handful of families, no dependency)."""

from __future__ import annotations

import time
from typing import Any

from logdist import core
from logdist.distributor.engine import Distributor


def health(d: Distributor) -> dict[str, Any]:
    if d.recovery_failed:
        status = "recovery_failed"
    else:
        status = "recovering" if d.recovering else ("ok" if d.accepting else "stopping")
    return {
        "status": status,
        "durability": d.store.durability,
        "backend": core.BACKEND,
        "strategy": d.router.strategy,
        "analyzers": len(d.analyzers),
        "eligible": sum(1 for a in d.analyzers.values() if a.eligible),
        "held": d.held,
        "uptime_s": round(time.time() - d.started, 3),
        **d.store.stats(),
    }


def queue(d: Distributor) -> dict[str, Any]:
    age = d.oldest_age()
    return {
        "size": d.held,
        "oldest_age_s": round(age, 3) if age is not None else None,
        "capacity": d.cfg.queue_size,
        "queued": sum(a.queue.messages + sum(b.count for b in a.ready) for a in d.analyzers.values()),
        "inflight": sum(a.inflight_messages for a in d.analyzers.values()),
        "retrying": sum(b.count for b in d.retrying.values()),
        "pending": d.pending.messages,
        "dead_letters": d.deadletters.messages,
    }


def snapshot(d: Distributor) -> dict[str, Any]:
    shares = d.router.shares()
    total_acked = sum(a.acked for a in d.analyzers.values()) or 0
    rows = []
    for a in d.analyzers.values():
        rows.append(
            {
                "id": a.id,
                "url": a.spec.url,
                "endpoint": a.spec.endpoint,
                "weight": a.spec.weight,
                "state": a.state,
                "eligible": a.eligible,
                "routed": a.routed,
                "acked": a.acked,
                "failed": a.failed,
                "retried": a.retried,
                "rerouted": a.rerouted,
                "dead_lettered": a.dead_lettered,
                "queued": a.queued_messages,
                "inflight": a.inflight_messages,
                "batches_sent": a.batches_sent,
                "ejections": a.ejections,
                "saturated": a.saturated,
                "saturations": a.saturations,
                "consecutive_failures": a.consecutive_failures,
                "last_error": a.last_error or None,
                "share": round(a.acked / total_acked, 6) if total_acked else 0.0,
                "expected_share": round(shares.get(a.id, 0.0), 6),
                "latency_ms": a.latency_ms(),
            }
        )
    return {
        "analyzers": rows,
        "totals": {
            "accepted": d.accepted,
            "acked": d.acked,
            "held": d.held,
            "queued": d.held,
            "pending": d.pending.messages,
            "rejected": d.rejected,
            "rejected_requests": d.rejected_requests,
            "packets": d.packets,
            "duplicate_packets": d.duplicate_packets,
            "dead_lettered": d.dead_lettered,
            "dead_letters": d.deadletters.messages,
        },
        "queue_size": d.cfg.queue_size,
        "durability": d.store.durability,
        "backend": core.BACKEND,
        "strategy": d.router.strategy,
        "uptime_s": round(time.time() - d.started, 3),
        "store": d.store.stats(),
    }


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(d: Distributor) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, v in samples:
            lab = ",".join(f'{k}="{_esc(x)}"' for k, x in labels.items())
            out.append(f"{name}{{{lab}}} {v}" if lab else f"{name} {v}")

    family("logdist_accepted_messages_total", "counter", "Messages accepted (answered 2xx).", [({}, d.accepted)])
    family("logdist_acked_messages_total", "counter", "Messages acknowledged by analyzers.", [({}, d.acked)])
    family("logdist_held_messages", "gauge", "Messages accepted and not yet acknowledged.", [({}, d.held)])
    family("logdist_pending_messages", "gauge", "Messages waiting for any analyzer.", [({}, d.pending.messages)])
    family("logdist_rejected_messages_total", "counter", "Messages refused by backpressure.", [({}, d.rejected)])
    family("logdist_rejected_requests_total", "counter", "Requests refused (4xx, 429, 503).",
           [({}, d.rejected_requests)])  # fmt: skip
    family("logdist_duplicate_packets_total", "counter", "Re-sent packets acknowledged again.",
           [({}, d.duplicate_packets)])  # fmt: skip
    family("logdist_dead_letter_messages", "gauge", "Messages held in dead letters.", [({}, d.deadletters.messages)])
    age = d.oldest_age()
    family("logdist_oldest_message_age_seconds", "gauge", "Age of the oldest unacknowledged message.",
           [({}, round(age or 0.0, 6))])  # fmt: skip
    per: list[tuple[str, str, str, str]] = [
        ("logdist_analyzer_routed_messages_total", "counter", "Messages routed to the analyzer.", "routed"),
        ("logdist_analyzer_acked_messages_total", "counter", "Messages the analyzer acknowledged.", "acked"),
        ("logdist_analyzer_failed_batches_total", "counter", "Failed delivery attempts.", "failed"),
        ("logdist_analyzer_retried_batches_total", "counter", "Retries scheduled.", "retried"),
        ("logdist_analyzer_rerouted_messages_total", "counter", "Messages moved to another analyzer.", "rerouted"),
        ("logdist_analyzer_dead_lettered_messages_total", "counter", "Messages refused permanently.",
         "dead_lettered"),
        ("logdist_analyzer_queued_messages", "gauge", "Messages queued for the analyzer.", "queued_messages"),
        ("logdist_analyzer_inflight_messages", "gauge", "Messages in flight to the analyzer.", "inflight_messages"),
    ]  # fmt: skip
    analyzers = list(d.analyzers.values())
    for name, kind, help_, attr in per:
        family(name, kind, help_, [({"analyzer": a.id}, getattr(a, attr)) for a in analyzers])
    shares = d.router.shares()
    family(
        "logdist_analyzer_weight",
        "gauge",
        "Configured weight.",
        [({"analyzer": a.id}, a.spec.weight) for a in analyzers],
    )
    family("logdist_analyzer_expected_share", "gauge", "Share by weight among eligible analyzers.",
           [({"analyzer": a.id}, round(shares.get(a.id, 0.0), 6)) for a in analyzers])  # fmt: skip
    family("logdist_analyzer_up", "gauge", "1 when the analyzer is eligible for traffic.",
           [({"analyzer": a.id}, 1 if a.eligible else 0) for a in analyzers])  # fmt: skip
    for k, v in d.store.stats().items():  # the durable store's figures (log bytes, fsyncs, ...)
        if isinstance(v, int | float) and not isinstance(v, bool):
            name = "logdist_" + "".join(c if c.isalnum() else "_" for c in k)
            family(name, "gauge", f"Store figure {k}.", [({}, v)])
    return "\n".join(out) + "\n"
