"""logdist: a weighted log distributor that loses nothing.

Roles: `logdist.emitter`, `logdist.distributor`, `logdist.analyzer`; core primitives in
`logdist.core` (Rust `logdist._wlb`, or the pure-Python twin with LOGDIST_PURE=1).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Looked up on first use: importlib.metadata costs ~7 MB, which the workers' supervisor and
    # other small processes do not need to pay.
    if name == "__version__":
        from importlib import metadata

        try:
            version = metadata.version("logdist")
        except metadata.PackageNotFoundError:  # running from a source tree without install
            version = "0.0.0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module 'logdist' has no attribute {name!r}")
