"""Exception types shared by both core backends and the daemons.

They are defined here, in Python, so that the Rust extension (`logdist._wlb`) and the
pure-Python twin (`logdist._py`) raise exactly the same classes. The extension imports
this module and raises these types; it never defines exception classes of its own.
"""

from __future__ import annotations


class LogdistError(Exception):
    """Base class of every error logdist raises on purpose."""


class WeightError(LogdistError, ValueError):
    """Weights that cannot define a distribution: empty, negative, NaN/inf, or all zero."""


class NoTargetError(LogdistError, LookupError):
    """No target is eligible for a pick (all unhealthy, disabled, zero-weight or excluded)."""


class PacketError(LogdistError, ValueError):
    """A request body that cannot be accepted. It is rejected whole; nothing was routed.

    `code` is a stable machine-readable string (see CODES), `detail` says which message and
    which field, and `status` is the HTTP status the distributor answers with.
    """

    #: code -> HTTP status
    CODES: dict[str, int] = {  # noqa: RUF012 - a constant table
        "bad_utf8": 400,
        "bad_json": 400,
        "too_deep": 400,
        "bad_schema": 400,
        "bad_value": 400,
        "empty_packet": 400,
        "too_many_messages": 413,
        "bad_protobuf": 400,  # OTLP ingest: not an ExportLogsServiceRequest
    }

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def status(self) -> int:
        return self.CODES.get(self.code, 400)

    def to_json(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class WalError(LogdistError, OSError):
    """The write-ahead log could not store or read something (I/O error, full, corrupt)."""


class WalFullError(WalError):
    """The write-ahead log reached its configured byte bound; the caller must answer 429."""


class DiskFullError(WalFullError):
    """No room on the write-ahead log's filesystem (free space short of an append and the
    reserve, or ENOSPC/EDQUOT even after the log gave back what it could); answered 429 too."""


class ConfigError(LogdistError, ValueError):
    """An invalid configuration; the message names the key."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"config key {key!r}: {detail}")
        self.key = key
        self.detail = detail
