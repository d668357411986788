"""Fixtures of the core suite: every test runs on both backends and many compare them directly.

`impl` yields the backend module, logdist._wlb ("rs") or logdist._py ("py"), loaded by
tests/backends.py: the "rs" case FAILS when the Rust extension is not importable, unless the
run asked for pure Python (LOGDIST_PURE=1), in which case it is skipped and the reason is
printed (-ra).
"""

from __future__ import annotations

from types import ModuleType

import pytest

from backends import BACKENDS, load_backend


@pytest.fixture(scope="session", params=BACKENDS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The backend module under test."""
    return load_backend(request.param)


@pytest.fixture(scope="session")
def rs() -> ModuleType:
    return load_backend("rs")


@pytest.fixture(scope="session")
def py() -> ModuleType:
    return load_backend("py")
