"""Fixtures of the fuzz-derived suite: the backends, loaded by tests/backends.py (the "rs" case
FAILS when the Rust extension is not importable, unless LOGDIST_PURE=1 asked for pure Python,
then it is skipped with the reason)."""

from __future__ import annotations

from types import ModuleType

import pytest

from backends import BACKENDS, load_backend


@pytest.fixture(params=BACKENDS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """The backend module under test."""
    return load_backend(request.param)


@pytest.fixture
def rs() -> ModuleType:
    return load_backend("rs")


@pytest.fixture
def py() -> ModuleType:
    return load_backend("py")
