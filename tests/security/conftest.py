"""Fixtures of the security tests: the distributor cluster of tests/distributor."""

from __future__ import annotations

from distributor.conftest import cluster  # noqa: F401  (the fixture, shared)
