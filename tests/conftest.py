"""Shared pytest fixtures: fail any test that leaves threads running (zeroconf's habit);
the long tests (``slow``: soak, limits, durability) are collected first, so that under
pytest-xdist (``scripts/test.sh`` runs two workers) they start at once, one on each
worker, rather than last.

Test modules that need a gateway import ``tests/gateway_fixture.py``; network namespaces
come from ``tests/netns.py``. ``pty`` is the converter's serial port, read by the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from p1_pty import PtyPeer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``slow`` tests first, the longest (``@pytest.mark.slow(seconds=…)``) first among
    them; the others after them, in their order. xdist deals the first tests out one to
    each worker in turn, so the two longest run side by side from the start."""

    def key(item: pytest.Item) -> tuple[bool, float]:
        slow = item.get_closest_marker("slow")
        return slow is None, -float(slow.kwargs.get("seconds", 0)) if slow else 0.0

    items.sort(key=key)


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


@pytest.fixture
async def pty() -> AsyncIterator[PtyPeer]:
    """A pty whose master the test reads on its event loop (``tests/p1_pty.py``): the
    converter's serial port."""
    peer = PtyPeer().attach()
    yield peer
    peer.close()
