"""Merging the workers' figures into one answer: pure functions over plain dicts and texts.

Each takes this worker's figures and the other workers' (as they answered) and returns what
one distributor would have answered, with per-worker detail where it helps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _sum(values: Sequence[Any]) -> Any:
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return sum(nums) if nums else (values[0] if values else None)


def merge_health(mine: dict[str, Any], others: list[dict[str, Any]], index: int) -> dict[str, Any]:
    every = [mine, *others]
    out = dict(mine)
    bad = [h["status"] for h in every if h.get("status") != "ok"]
    out["status"] = bad[0] if bad else "ok"
    out["held"] = sum(h.get("held", 0) for h in every)
    out["eligible"] = min(h.get("eligible", 0) for h in every)  # eligible on every worker
    out.pop("worker", None)
    out.pop("pid", None)
    out["workers"] = sorted(
        ({"worker": h.get("worker", index), **{k: h.get(k) for k in ("status", "held", "pid")}} for h in every),
        key=lambda w: w["worker"],
    )
    return out


def merge_queue(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    out: dict[str, Any] = {k: _sum([q.get(k) for q in every]) for k in mine}
    ages = [q["oldest_age_s"] for q in every if q.get("oldest_age_s") is not None]
    out["oldest_age_s"] = max(ages) if ages else None
    out["workers"] = len(every)
    return out


_ROW_MAX = ("consecutive_failures", "ejection_level", "ejection_remaining_ms")
_ROW_KEEP = (
    "id", "url", "endpoint", "weight", "state", "eligible", "last_error", "expected_share", "saturated", "format",
    "message_concurrency",
)  # fmt: skip


def merge_snapshot(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    out = dict(mine)
    out["totals"] = {k: _sum([s["totals"].get(k) for s in every]) for k in mine["totals"]}
    by_status: dict[str, int] = {}
    for s in every:
        for k, v in (s.get("rejected_by_status") or {}).items():
            by_status[k] = by_status.get(k, 0) + v
    out["rejected_by_status"] = by_status
    rows: dict[str, list[dict[str, Any]]] = {}
    for s in every:
        for r in s["analyzers"]:
            rows.setdefault(r["id"], []).append(r)
    merged = []
    for rs in rows.values():
        first = rs[0]
        row: dict[str, Any] = {}
        for k, v in first.items():
            if k in _ROW_KEEP:
                row[k] = v
            elif k in _ROW_MAX:
                row[k] = max(r.get(k) or 0 for r in rs)
            elif k == "latency_ms":
                row[k] = {q: max((r[k][q] for r in rs if r[k].get(q) is not None), default=None) for q in v}
            else:
                row[k] = _sum([r.get(k) for r in rs])
        row["saturated"] = any(r.get("saturated") for r in rs)
        # each worker ejects on its own deliveries: the latest end, and each worker's record
        row["ejected_until"] = max((r["ejected_until"] for r in rs if r.get("ejected_until")), default=None)
        row["on_probation"] = any(r.get("on_probation") for r in rs)
        row["recent_ejections"] = [e for r in rs for e in r.get("recent_ejections") or []]
        row["eligible"] = any(r.get("eligible") for r in rs)
        merged.append(row)
    acked = sum(r["acked"] for r in merged)
    for r in merged:
        r["share"] = round(r["acked"] / acked, 6) if acked else 0.0
    out["analyzers"] = merged
    out["queue_size"] = _sum([s.get("queue_size") for s in every])
    out["store"] = [s.get("store") for s in every]
    out["workers"] = len(every)
    out["per_worker"] = sorted(
        (
            {
                "worker": s.get("worker"),
                "accepted": s["totals"]["accepted"],
                "acked": s["totals"]["acked"],
                "held": s["totals"]["held"],
                "analyzers": {
                    r["id"]: {"weight": r["weight"], "state": r["state"], "routed": r["routed"]} for r in s["analyzers"]
                },
            }
            for s in every
        ),
        key=lambda w: (w["worker"] is None, w["worker"]),
    )
    out.pop("worker", None)
    return out


def merge_prometheus(texts: list[tuple[int, str]]) -> str:
    """Every worker's exposition, each sample labelled worker="<i>", grouped by family."""
    order: list[str] = []
    head: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for index, text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                family = parts[2] if len(parts) > 2 else family
                if family not in head:
                    order.append(family)
                    head[family] = []
                    samples[family] = []
                if line not in head[family]:
                    head[family].append(line)
                continue
            if not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            label = f'worker="{index}"'
            if name.endswith("{}"):
                name = f"{name[:-2]}{{{label}}}"
            elif name.endswith("}"):
                name = f"{name[:-1]},{label}}}"
            else:
                name = f"{name}{{{label}}}"
            samples.setdefault(family, []).append(f"{name} {value}")
            if family not in head:
                order.append(family)
                head[family] = []
    out: list[str] = []
    for f in order:
        out.extend(head[f])
        out.extend(samples.get(f, []))
    return "\n".join(out) + "\n"


def merge_dead_letters(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    letters = sorted((m for d in every for m in d["dead_letters"]), key=lambda m: (m["time"], m["id"]))
    return {"dead_letters": letters, "count": len(letters), "messages": sum(d["messages"] for d in every)}


def merge_replay(mine: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    every = [mine, *others]
    missing = set(mine["missing"])
    for d in others:
        missing &= set(d["missing"])  # missing only if no worker had it
    return {
        "replayed": sum(d["replayed"] for d in every),
        "messages": sum(d["messages"] for d in every),
        "missing": [m for m in mine["missing"] if m in missing],
    }
