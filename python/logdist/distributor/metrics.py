"""Figures the distributor reports: /health, /queue, /api/v1/metrics (JSON) and /metrics
(Prometheus text exposition format, written by hand: a handful of families, no dependency)."""

from __future__ import annotations

from typing import Any

from logdist.distributor.admission import Admission
from logdist.distributor.engine import Engine


def health(e: Engine) -> dict[str, Any]:
    about = e.about()
    return {
        "status": e.status(),
        "durability": about["durability"],
        "backend": about["backend"],
        "strategy": about["strategy"],
        "analyzers": len(e.analyzer_ids()),
        "eligible": e.eligible_count(),
        "held": e.held,
        "uptime_s": about["uptime_s"],
        **e.store_stats(),
        **({"data_loss": loss} if (loss := e.data_loss()) is not None else {}),
    }


def queue(e: Engine) -> dict[str, Any]:
    return e.queue_figures()


def totals(e: Engine, adm: Admission) -> dict[str, int]:
    mine, theirs = e.totals(), adm.figures()
    return {
        "accepted": theirs["accepted"],
        "acked": mine["acked"],
        "held": mine["held"],
        "held_bytes": mine["held_bytes"],
        "queued": mine["held"],
        "pending": mine["pending"],
        "rejected": theirs["rejected"],
        "rejected_requests": theirs["rejected_requests"],
        "packets": theirs["packets"],
        "duplicate_packets": theirs["duplicate_packets"],
        "reused_packet_ids": theirs["reused_packet_ids"],
        "keyed_fallback": theirs["keyed_fallback"] + mine["keyed_fallback"],
        "dead_lettered": mine["dead_lettered"],
        "dead_letters": mine["dead_letters"],
        "split_batches": mine["split_batches"],
        "isolation_requests": mine["isolation_requests"],
    }


def snapshot(e: Engine, adm: Admission, io: dict[str, int] | None = None) -> dict[str, Any]:
    """`io`: the process's connection and ingest-buffer figures (in the totals, so that the
    workers of --workers N add up)."""
    about = e.about()
    return {
        "analyzers": e.analyzer_rows(),
        "totals": {**totals(e, adm), **(io or {})},
        "rejected_by_status": {str(k): v for k, v in sorted(adm.rejected_by_status.items())},
        "queue_size": e.cfg.queue_size,
        "queue_bytes": e.cfg.queue_bytes,
        "durability": about["durability"],
        "backend": about["backend"],
        "strategy": about["strategy"],
        "route_key": about["route_key"],
        "uptime_s": about["uptime_s"],
        "store": e.store_stats(),
    }


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(out: list[str], name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], float]]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    for labels, v in samples:
        lab = ",".join(f'{k}="{_esc(x)}"' for k, x in labels.items())
        out.append(f"{name}{{{lab}}} {v}" if lab else f"{name} {v}")


_TOTALS: list[tuple[str, str, str, str]] = [
    ("logdist_accepted_messages_total", "counter", "Messages accepted (answered 2xx).", "accepted"),
    ("logdist_acked_messages_total", "counter", "Messages acknowledged by analyzers.", "acked"),
    ("logdist_held_messages", "gauge", "Messages accepted and not yet acknowledged.", "held"),
    ("logdist_held_bytes", "gauge", "Payload bytes of the held messages (bounded by queue_bytes).", "held_bytes"),
    ("logdist_pending_messages", "gauge", "Messages waiting for any analyzer.", "pending"),
    ("logdist_rejected_messages_total", "counter", "Messages refused by backpressure.", "rejected"),
    ("logdist_rejected_requests_total", "counter", "Requests refused (4xx, 429, 503).", "rejected_requests"),
    ("logdist_duplicate_packets_total", "counter", "Re-sent packets acknowledged again.", "duplicate_packets"),
    ("logdist_reused_packet_ids_total", "counter", "Packets stored under a reused id.", "reused_packet_ids"),
    (
        "logdist_keyed_fallback_total",
        "counter",
        "Placements at random of messages without their route_key field.",
        "keyed_fallback",
    ),
    ("logdist_dead_letter_messages", "gauge", "Messages held in dead letters.", "dead_letters"),
    ("logdist_split_batches_total", "counter", "Refused batches split to isolate what was refused.", "split_batches"),
    (
        "logdist_isolation_requests_total",
        "counter",
        "Extra batches sent to isolate refused messages.",
        "isolation_requests",
    ),
]
_PER_ANALYZER: list[tuple[str, str, str, str]] = [
    ("logdist_analyzer_routed_messages_total", "counter", "Messages routed to the analyzer.", "routed"),
    ("logdist_analyzer_acked_messages_total", "counter", "Messages the analyzer acknowledged.", "acked"),
    ("logdist_analyzer_failed_batches_total", "counter", "Failed delivery attempts.", "failed"),
    ("logdist_analyzer_retried_batches_total", "counter", "Retries scheduled.", "retried"),
    ("logdist_analyzer_rerouted_messages_total", "counter", "Messages moved to another analyzer.", "rerouted"),
    ("logdist_analyzer_dead_lettered_messages_total", "counter", "Messages refused permanently.", "dead_lettered"),
    ("logdist_analyzer_ejections_total", "counter", "Times the analyzer was ejected.", "ejections"),
    ("logdist_analyzer_ejection_remaining_seconds", "gauge", "Time left in the current ejection.", "ejection_s"),
    ("logdist_analyzer_queued_messages", "gauge", "Messages queued for the analyzer.", "queued"),
    ("logdist_analyzer_inflight_messages", "gauge", "Messages in flight to the analyzer.", "inflight"),
    ("logdist_analyzer_weight", "gauge", "Configured weight.", "weight"),
    ("logdist_analyzer_expected_share", "gauge", "Share by weight among eligible analyzers.", "expected_share"),
]


_IO: list[tuple[str, str, str, str]] = [
    ("logdist_connections_open", "gauge", "Client connections open (this process).", "connections_open"),
    ("logdist_connections_max", "gauge", "The max_connections bound in force (this process).", "connections_max"),
    ("logdist_connections_refused_total", "counter", "Connections refused at the max_connections bound.",
     "connections_refused"),
    ("logdist_ingest_buffer_bytes", "gauge", "Bytes of request bodies being read or processed.",
     "ingest_buffer_bytes_used"),
    ("logdist_ingest_busy_refusals_total", "counter", "Uploads answered 429: no room in ingest_buffer_bytes.",
     "ingest_busy_refusals"),
]  # fmt: skip


def prometheus(e: Engine, adm: Admission, io: dict[str, int] | None = None) -> str:
    out: list[str] = []
    tot = totals(e, adm)
    for name, kind, help_, key in _TOTALS:
        _family(out, name, kind, help_, [({}, tot[key])])
    if io is not None:
        for name, kind, help_, key in _IO:
            _family(out, name, kind, help_, [({}, io[key])])
        phases = [(k.removeprefix("connections_timed_out_"), v) for k, v in io.items() if "_timed_out_" in k]
        _family(out, "logdist_connections_timed_out_total", "counter", "Connections closed by a timeout, by phase.",
                [({"phase": phase}, v) for phase, v in phases])  # fmt: skip
    _family(out, "logdist_rejected_requests_by_status_total", "counter", "Requests refused, by HTTP status.",
            [({"status": str(k)}, v) for k, v in sorted(adm.rejected_by_status.items())])  # fmt: skip
    age = e.oldest_age()
    _family(out, "logdist_oldest_message_age_seconds", "gauge", "Age of the oldest unacknowledged message.",
            [({}, round(age or 0.0, 6))])  # fmt: skip
    rows = [{**r, "ejection_s": r["ejection_remaining_ms"] / 1000} for r in e.analyzer_rows()]
    for name, kind, help_, key in _PER_ANALYZER:
        _family(out, name, kind, help_, [({"analyzer": r["id"]}, r[key]) for r in rows])
    _family(out, "logdist_analyzer_up", "gauge", "1 when the analyzer is eligible for traffic.",
            [({"analyzer": r["id"]}, 1 if r["eligible"] else 0) for r in rows])  # fmt: skip
    for k, v in e.store_stats().items():  # the durable store's figures (log bytes, fsyncs, ...)
        if isinstance(v, int | float) and not isinstance(v, bool):
            name = "logdist_" + "".join(c if c.isalnum() else "_" for c in k)
            kind = "counter" if k.endswith("_total") else "gauge"  # e.g. wal_lost_messages_total
            _family(out, name, kind, f"Store figure {k}.", [({}, v)])
    return "\n".join(out) + "\n"
