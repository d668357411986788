"""Fixtures of the core suite: every test runs on both backends and many compare them directly.

`impl` yields the backend module, logdist._wlb ("rs") or logdist._py ("py"). The "rs" case
FAILS when the Rust extension is not importable, unless the run asked for pure Python
(LOGDIST_PURE=1), in which case it is skipped and the reason is printed (-ra).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

PURE = os.environ.get("LOGDIST_PURE", "") not in ("", "0")


def load_backend(name: str) -> ModuleType:
    if name == "py":
        return importlib.import_module("logdist._py")
    try:
        return importlib.import_module("logdist._wlb")
    except ImportError as exc:
        if PURE:
            pytest.skip(f"Rust backend not tested: LOGDIST_PURE=1 and logdist._wlb is not importable ({exc})")
        pytest.fail(f"logdist._wlb is not importable ({exc}); build it with `make build` or set LOGDIST_PURE=1")


@pytest.fixture(scope="session", params=["rs", "py"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The backend module under test."""
    return load_backend(request.param)


@pytest.fixture(scope="session")
def rs() -> ModuleType:
    return load_backend("rs")


@pytest.fixture(scope="session")
def py() -> ModuleType:
    return load_backend("py")
