"""Log format shared by every role (stdlib only, so the workers' supervisor stays small).

Log lines carry text from outside (request paths, analyzer ids and URLs, error details from
peers). `safe` escapes what could forge a line or drive a terminal; the formatter applies it to
every message, so one record is always one line (a traceback follows on its own lines).
"""

from __future__ import annotations

import logging
import os
import re
import sys

#: C0 and C1 controls (newline, carriage return, ESC ...), DEL, and the Unicode line and
#: paragraph separators, bidi overrides and isolates (text that reorders what follows it)
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe(text: object, limit: int | None = 300) -> str:
    """`text` fit for a log line: control characters escaped (`\\n` -> `\\x0a`), and cut to
    `limit` characters (None: no cut)."""
    s = text if isinstance(text, str) else str(text)
    if limit is not None and len(s) > limit:
        s = s[:limit] + "..."
    return _UNSAFE.sub(_escape, s)


class SafeFormatter(logging.Formatter):
    """Escapes control characters in the message (not in the traceback that may follow)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe(record.message, None)
        return super().formatMessage(record)


def setup_logging(role: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    role = safe(role, 100).replace("%", "%%")  # e.g. an analyzer id: it goes into the format
    handler.setFormatter(SafeFormatter(f"%(asctime)s {role}[{os.getpid()}] %(levelname)s %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
