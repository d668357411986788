"""wait_until: poll a condition until it holds, for tests that wait on real processes."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from typing import Any


def wait_until(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition", step: float = 0.05) -> Any:
    """The first truthy value of `cond()`; connection errors while the process comes up count
    as not yet. Fails the test with the last value seen after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
