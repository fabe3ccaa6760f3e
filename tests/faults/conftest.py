"""Counts of every fault test, written to ``test-artifacts/faults.json`` at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .harness import Counts, write_artifact

_COUNTS: dict[str, dict[str, Counts]] = {}
_STARTED = time.monotonic()

# how much longer the long variant runs each fault loop (>= 1 000 faults in total)
SCALE = {"short": 1, "long": 24}

VARIANTS = ["short", pytest.param("long", marks=pytest.mark.slow)]


@pytest.fixture(scope="session")
def _fault_artifact() -> Iterator[dict[str, dict[str, Counts]]]:
    yield _COUNTS
    for variant, tests in _COUNTS.items():
        write_artifact(variant, tests, time.monotonic() - _STARTED)


@pytest.fixture
def counts(request: pytest.FixtureRequest, _fault_artifact) -> Counts:
    """This test's counters, filed under its variant (``short`` or ``long``)."""
    variant = request.node.callspec.params.get("variant", "short") \
        if hasattr(request.node, "callspec") else "short"
    name = request.node.originalname
    return _fault_artifact.setdefault(variant, {}).setdefault(name, Counts())
