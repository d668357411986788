"""logdist: a weighted log distributor that loses nothing.

Roles: `logdist.emitter`, `logdist.distributor`, `logdist.analyzer`; core primitives in
`logdist.core` (Rust `logdist._wlb`, or the pure-Python twin `logdist._py` with LOGDIST_PURE=1).

This module stays light (no core, aiohttp or orjson): small processes import it, and it holds
the one parse of LOGDIST_PURE, `pure_requested()`.
"""

from __future__ import annotations

import os
from typing import Any

#: the environment variable that selects the pure-Python core on purpose
PURE_ENV = "LOGDIST_PURE"


def pure_requested() -> bool:
    """Whether this run asked for the pure-Python core: LOGDIST_PURE set to anything but "" or "0"."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


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
