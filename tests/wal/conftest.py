"""Fixtures of the write-ahead log suite: every test runs on both backends.

`Wal` is the class under test: logdist._wlb.Wal ("rs") or logdist._py.Wal ("py"), loaded by
tests/backends.py: the "rs" case FAILS when the Rust extension is not importable, unless the
run asked for pure Python (LOGDIST_PURE=1), in which case it is skipped with the reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from backends import BACKENDS, load_backend


def wal_class(name: str) -> Any:
    return load_backend(name).Wal


@pytest.fixture(params=BACKENDS)
def Wal(request: pytest.FixtureRequest) -> Any:
    """The Wal class of one backend."""
    return wal_class(request.param)


@pytest.fixture(params=[("rs", "py"), ("py", "rs")], ids=["rs-writes-py-reads", "py-writes-rs-reads"])
def writer_reader(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """(writer class, reader class) from different backends."""
    w, r = request.param
    return wal_class(w), wal_class(r)
