"""Shared pytest fixtures: fail any test that leaves threads running (zeroconf's habit).

Test modules that need a gateway import ``tests/gateway_fixture.py``; network namespaces
come from ``tests/netns.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """A test must stop every non-daemon thread it starts (a stuck one hangs shutdown)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"
