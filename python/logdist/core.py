"""The one place that picks the core backend.

By default the Rust extension `logdist._wlb` is used, and if it cannot be imported this
module raises ImportError loudly: there is no silent fallback. Setting LOGDIST_PURE=1 selects
the pure-Python twin `logdist._py`, which has the same API and passes the same tests.
Everything else in logdist imports core primitives from here, never from a backend directly.
"""

from __future__ import annotations

from logdist import pure_requested

PURE = pure_requested()

if PURE:
    from logdist import _py as backend

    BACKEND = "py"
else:
    try:
        from logdist import _wlb as backend  # type: ignore[no-redef]
    except ImportError as exc:  # pragma: no cover - exercised by hand, not in CI
        raise ImportError(
            "logdist: the Rust extension logdist._wlb is not built or not importable "
            f"({exc}). Build it with `make build` (or `maturin develop --release`), "
            "or set LOGDIST_PURE=1 to run on the pure-Python core on purpose."
        ) from exc
    BACKEND = "rs"

AliasTable = backend.AliasTable
BatchAnalyzer = backend.BatchAnalyzer
SmoothWeighted = backend.SmoothWeighted
Router = backend.Router
RingBuffer = backend.RingBuffer
RetryScheduler = backend.RetryScheduler
RoutedPacket = backend.RoutedPacket
route_packet = backend.route_packet
key_hash = backend.key_hash
otlp_logs_to_messages = backend.otlp_logs_to_messages
SplitMix64 = backend.SplitMix64
Wal = backend.Wal
