"""The one backend loader of the suites that compare the two cores (tests/core, tests/wal,
bench/test_micro.py).

`load_backend("py")` is the pure-Python twin `logdist._py`, `load_backend("rs")` the Rust
extension `logdist._wlb`. When the extension cannot be imported, the "rs" case is SKIPPED,
with the reason printed (-ra), only if the run asked for pure Python (LOGDIST_PURE=1);
otherwise it FAILS, so a missing build never passes quietly.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from logdist import PURE_ENV, pure_requested

#: the backends, as the ids of parametrized fixtures
BACKENDS = ("rs", "py")
MODULES = {"rs": "logdist._wlb", "py": "logdist._py"}


def load_backend(name: str) -> ModuleType:
    """The backend module `name` ("rs" or "py"), or a skip/failure of the test as above."""
    if name == "py":
        return importlib.import_module(MODULES["py"])
    try:
        return importlib.import_module(MODULES[name])
    except ImportError as exc:
        if pure_requested():
            pytest.skip(f"Rust backend not tested: {PURE_ENV}=1 and logdist._wlb is not importable ({exc})")
        pytest.fail(f"logdist._wlb is not importable ({exc}); build it with `make build` or set {PURE_ENV}=1")
