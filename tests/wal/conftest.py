"""Fixtures of the write-ahead log suite: every test runs on both backends.

`Wal` is the class under test: logdist._wlb.Wal ("rs") or logdist._py.Wal ("py"). The "rs"
case FAILS when the Rust extension is not importable, unless the run asked for pure Python
(LOGDIST_PURE=1), in which case it is skipped with the reason. Until `core.Wal` exists the
backends are imported directly.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

PURE = os.environ.get("LOGDIST_PURE", "") not in ("", "0")


def wal_class(name: str) -> Any:
    if name == "py":
        return importlib.import_module("logdist._py").Wal
    try:
        return importlib.import_module("logdist._wlb").Wal
    except (ImportError, AttributeError) as exc:
        if PURE:
            pytest.skip(f"Rust backend not tested: LOGDIST_PURE=1 and logdist._wlb.Wal is not importable ({exc})")
        pytest.fail(f"logdist._wlb.Wal is not importable ({exc}); build it with `make build` or set LOGDIST_PURE=1")


@pytest.fixture(params=["rs", "py"])
def Wal(request: pytest.FixtureRequest) -> Any:
    """The Wal class of one backend."""
    return wal_class(request.param)


@pytest.fixture(params=[("rs", "py"), ("py", "rs")], ids=["rs-writes-py-reads", "py-writes-rs-reads"])
def writer_reader(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """(writer class, reader class) from different backends."""
    w, r = request.param
    return wal_class(w), wal_class(r)
