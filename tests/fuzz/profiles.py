"""The hypothesis profiles of the fuzz and property tests.

"ci" keeps them fast enough for the normal suite (`make test`); "fuzz" (`make fuzz`, or
LOGDIST_FUZZ_PROFILE=fuzz) runs FUZZ_SCALE times as many examples. A test states its example
count for "ci" with `budget(n)`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "LOGDIST_FUZZ_PROFILE"
FUZZ_SCALE = 20

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    "print_blob": True,
}
settings.register_profile("ci", **_COMMON)
settings.register_profile("fuzz", **_COMMON)


def profile_name() -> str:
    name = os.environ.get(PROFILE_ENV, "ci")
    if name not in ("ci", "fuzz"):
        raise ValueError(f"{PROFILE_ENV} must be 'ci' or 'fuzz', got {name!r}")
    return name


def budget(examples: int) -> settings:
    """Settings of the current profile with `examples` examples ("ci"), or FUZZ_SCALE times as
    many ("fuzz")."""
    name = profile_name()
    scale = FUZZ_SCALE if name == "fuzz" else 1
    return settings(settings.get_profile(name), max_examples=examples * scale)
