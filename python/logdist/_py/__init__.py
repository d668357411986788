"""The pure-Python twin of the Rust core `logdist._wlb`, one module per module of crates/wlb/src.

It implements exactly the contract written in `_wlb.pyi` (same API, same algorithms, same
float arithmetic in the same order, same error types from `logdist.errors`), so both backends
return bit-identical results for identical inputs and seeds. It is selected only on purpose
(LOGDIST_PURE=1, see `logdist.core`). tests/core/ runs one suite on both and cross-checks them;
`logdist._contract` checks statically that both match the same Protocols.

Modules, as in Rust: rng, alias, swrr, keyed, router, ring, retry, json (the scanner), packet, dedup,
analyze, wal, otlp; `convert` mirrors the binding's argument conversions (crates/wlb-py).
This package exports exactly the names `logdist._wlb` exports.
"""

from __future__ import annotations

from logdist import __version__  # the package's version (looked up once, in logdist/__init__.py)
from logdist._py.alias import AliasTable
from logdist._py.analyze import BatchAnalyzer
from logdist._py.keyed import key_hash
from logdist._py.otlp import otlp_logs_to_messages
from logdist._py.packet import RoutedPacket, route_packet
from logdist._py.retry import RetryScheduler
from logdist._py.ring import RingBuffer
from logdist._py.rng import SplitMix64
from logdist._py.router import Router
from logdist._py.swrr import SmoothWeighted
from logdist._py.wal import Wal

__all__ = [
    "AliasTable",
    "BatchAnalyzer",
    "RetryScheduler",
    "RingBuffer",
    "RoutedPacket",
    "Router",
    "SmoothWeighted",
    "SplitMix64",
    "Wal",
    "__version__",
    "key_hash",
    "otlp_logs_to_messages",
    "route_packet",
]
