"""Helpers for the history, billing and OpenAPI tests against a real gateway.

- :class:`MeterClock`: the meters' clock (``GatewayConfig.sim_time``) stopped at a chosen
  moment; a test moves it, then records at once with :func:`record` — no waiting for
  interval ends.
- :class:`FakeMonotonic`: the history rate limiter's clock, moved by the test.
- :func:`history_gateway`: a thread-mode gateway with both, and the history ready.
- :func:`q`: a query string with ``+`` and ``:`` escaped.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from gateway_fixture import RunningGateway, running_gateway

from x1p1.gateway.history_service import HistoryService

T0 = datetime(2026, 3, 10, 12, 7, 30, tzinfo=UTC)
"""Where the meters' clock stands when a test gateway first starts (no interval end)."""
EVER = {"from": "1970-01-01T00:00:00Z", "to": "8999-01-01T00:00:00Z"}
E_REGISTERS = "1-0:1.8.1.255,1-0:1.8.2.255,1-0:2.8.1.255,1-0:2.8.2.255"


class MeterClock:
    """``sim_time``: the meters' clock, stopped at ``now`` until the test moves it; with
    ``ticking`` it runs with the wall clock from ``start`` on (for streams, which send
    only when the meters' second changes)."""

    def __init__(self, start: datetime = T0, *, ticking: bool = False) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._wall = math.floor(time.time()) if ticking else None

    def __call__(self, wall: float) -> datetime:
        with self._lock:
            if self._wall is None:
                return self._now
            return self._now + timedelta(seconds=wall - self._wall)

    @property
    def now(self) -> datetime:
        return self(time.time())

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


class FakeMonotonic:
    """The rate limiter's clock: seconds that only move when the test says so."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


def service(gw: RunningGateway) -> HistoryService:
    assert gw.gateway is not None and gw.gateway.history is not None
    return gw.gateway.history


def record(gw: RunningGateway) -> int:
    """One recording round now (in the history's worker thread)."""
    return service(gw).record_now()


def wait_ready(gw: RunningGateway) -> None:
    async def ready() -> bool:
        return await service(gw).ready()

    assert gw.loop is not None
    import asyncio

    assert asyncio.run_coroutine_threadsafe(ready(), gw.loop).result(90)


@contextmanager
def history_gateway(
    state_dir: Path, clock: MeterClock, **config: Any
) -> Iterator[tuple[RunningGateway, FakeMonotonic]]:
    """A thread-mode gateway on the meters' ``clock``, its rate limiter on a fake clock,
    its first recording round done."""
    with running_gateway(state_dir, sim_time=clock, **config) as gw:
        mono = FakeMonotonic()
        service(gw).monotonic = mono
        wait_ready(gw)
        yield gw, mono


def q(**params: str) -> str:
    """``?a=b&…`` with reserved characters escaped (``+`` as ``%2B``)."""
    return "?" + urlencode({k.rstrip("_"): v for k, v in params.items()})


def _cookies(gw: RunningGateway, method: str, path: str, cookie: str = "") -> dict[str, str]:
    """One request; the cookies it sets."""
    import http.client
    from http.cookies import SimpleCookie

    conn = http.client.HTTPSConnection(gw.host, gw.port, context=gw.ssl_context(), timeout=10)
    headers = {"Origin": gw.url, "User-Agent": "x1p1 history test"}
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        response.read()
        jar: dict[str, str] = {}
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                for key, morsel in SimpleCookie(value).items():
                    jar[key] = morsel.value
        return jar
    finally:
        conn.close()


def portal_cookie(gw: RunningGateway) -> str:
    """Log a browser in to the portal (approved on the meter); its ``Cookie`` header."""
    login = _cookies(gw, "POST", "/login")["__Host-x1p1-login"]
    [waiting] = [r for r in gw.control.requests() if r["kind"] == "login"]
    gw.control.approve(waiting["request_id"])
    jar = _cookies(gw, "GET", "/login/status", f"__Host-x1p1-login={login}")
    return f"__Host-x1p1-session={jar['__Host-x1p1-session']}"
