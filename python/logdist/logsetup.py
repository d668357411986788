"""Log format shared by every role (stdlib only, so the workers' supervisor stays small)."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(role: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {role}[{os.getpid()}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
