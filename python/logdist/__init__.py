"""logdist: a weighted log distributor that loses nothing.

Roles: `logdist.emitter`, `logdist.distributor`, `logdist.analyzer`; core primitives in
`logdist.core` (Rust `logdist._wlb`, or the pure-Python twin with LOGDIST_PURE=1).
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("logdist")
except _metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
