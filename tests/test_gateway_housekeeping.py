"""The gateway's housekeeping loop: timers are data (architecture.md, habit 12).

The ledger (:mod:`x1p1.x1.grants`) says when it next has something to do; the gateway
(:meth:`x1p1.gateway.app.Gateway._housekeep`) waits for that moment or a change and then
runs the ledger's maintenance with ``now``. The core's side is tested with time as an
argument in ``tests/test_x1_grants.py``; here a real gateway shows that the loop plans its
wait to a request's deadline (§5.1.4) and the request expires then, never before, that the
loop waits for nothing while nothing is due, and that a change (a new request, a moved
clock) makes it look again. How soon after its deadline a request expires on a loaded
machine is a figure, not a test: ``bench/bench_housekeeping.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from gateway_fixture import RunningGateway, default_meters, gateway, running_gateway

from x1p1.gateway import app as app_module
from x1p1.gateway.grants import GatewayGrants
from x1p1.gateway.state import GatewayEvent
from x1p1.gateway.store import Store
from x1p1.gateway.streams import StreamHub
from x1p1.x1.api import TokenRequestBody
from x1p1.x1.grants import LIFETIME, RequestKind

__all__ = ["gateway"]

T = TypeVar("T")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _until(check: Callable[[], T | None], bound: float, what: str) -> T:
    """Wait (at most ``bound`` s) for ``check`` to give something: for something to
    happen, never to prove that nothing does."""
    limit = time.monotonic() + bound
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > limit:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _body() -> TokenRequestBody:
    return TokenRequestBody.parse(
        {"name": "dev", "uuid": "0b8f4a4e-6a1c-4d5e-9f0a-2b3c4d5e6f70", "profiles": ["P1"]}
    )


@pytest.fixture
def grants(tmp_path: Path) -> Iterator[tuple[GatewayGrants, list[datetime]]]:
    store = Store.open(tmp_path)
    clock = [T0]
    hub = StreamHub(default_meters())
    yield GatewayGrants(store, hub, lambda: clock[0], lambda kind, **details: None), clock
    store.close()


def test_a_committed_change_wakes_the_loop_and_a_read_does_not(
    grants: tuple[GatewayGrants, list[datetime]],
) -> None:
    ledger, clock = grants
    woken: list[datetime] = []
    ledger.on_change = lambda: woken.append(clock[0])
    assert ledger.next_deadline() is None
    ledger.pending()
    ledger.maintain()
    assert woken == []  # nothing changed: nothing to look at again
    request = ledger.ledger.request(ledger.create_request(_body(), "192.168.1.20").request_id)
    assert woken == [T0]
    assert ledger.next_deadline() == request.expires_at == T0 + timedelta(minutes=10)
    clock[0] = request.expires_at
    ledger.maintain()
    assert ledger.request(request.request_id).state.value == "expired"
    assert woken == [T0, request.expires_at]


def _events(gw: RunningGateway, kind: str) -> tuple[threading.Event, list[datetime]]:
    seen = threading.Event()
    moments: list[datetime] = []

    def note(event: GatewayEvent) -> None:
        if event.kind == kind:
            moments.append(datetime.now(UTC))
            seen.set()

    gw.call(lambda g: g.state.listeners.append(note) if g.state else None)
    return seen, moments


def _timeout(gw: RunningGateway) -> float | None:
    return gw.call(lambda g: g.last_timeout)


def test_an_idle_gateway_waits_for_a_change_alone(gateway: RunningGateway) -> None:
    assert _timeout(gateway) is None  # no request, no token: nothing is due, ever
    reply = gateway.token_request()
    assert reply.status == 202
    # (a closed connection may first make it hand memory back, a moment's wait)
    waited = _until(
        lambda: t if (t := _timeout(gateway)) is not None and t > 60 else None,
        10,
        "the request's deadline",
    )
    assert 590 < waited <= 600  # the request's 10 minutes (§5.1.4), not a fixed round


def test_a_request_expires_at_its_deadline_never_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(LIFETIME, RequestKind.DEVICE, timedelta(seconds=2))
    # each closed connection hands memory back at once, so that the hand-back a minute
    # after the first one cannot stand before the pruning deadline this test waits for
    monkeypatch.setattr(app_module, "RELEASE_MEMORY_EVERY", 0.0)

    with running_gateway(tmp_path / "gw") as gw:
        seen, moments = _events(gw, "request-expired")
        reply = gw.token_request()
        assert reply.status == 202
        request_id = reply.json["request_id"]
        deadline = gw.call(lambda g: g.state.grants.request(request_id).expires_at)
        assert seen.wait(10), "the request never expired"
        assert moments[0] >= deadline  # the loop woke for the deadline (see the idle test)
        assert gw.request("GET", f"/api/tokens/requests/{request_id}").status == 404
        # next: the expired request's pruning a day later, not a round every few seconds
        waited = _until(
            lambda: t if (t := _timeout(gw)) is not None and t > 3600 else None,
            10,
            "the pruning deadline",
        )
        assert waited > 23 * 3600


def test_a_moved_clock_makes_the_loop_look_again(gateway: RunningGateway) -> None:
    assert gateway.clock is not None
    seen, _ = _events(gateway, "request-expired")
    assert gateway.token_request().status == 202
    assert not seen.is_set()
    gateway.clock.advance(timedelta(minutes=10))
    assert seen.wait(10), "the loop did not look again after the clock moved"


def test_closed_connections_hand_memory_back_at_most_once_a_minute(
    gateway: RunningGateway,
) -> None:
    rounds = gateway.call(lambda g: g.housekeeping_rounds)
    for _ in range(5):  # five connections, each closed after one request
        assert gateway.request("GET", "/api/openapi.json").status == 200
    waited = _until(
        lambda: t if (t := _timeout(gateway)) is not None and t > 1 else None,
        10,
        "the next hand-back of memory",
    )
    assert 50 < waited <= 60  # the first close handed memory back; the next waits a minute
    assert gateway.call(lambda g: g.housekeeping_rounds) - rounds == 2  # not one per close


async def test_an_open_stream_makes_its_hourly_renewal_due(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open stream is use of its token (§5.2): its renewal is persisted hourly, so the
    loop waits at most an hour while it streams, and a day (the pruning) without it."""
    assert gateway.clock is not None
    # memory handed back at every closed connection: only the ledger's deadlines are left
    monkeypatch.setattr(app_module, "RELEASE_MEMORY_EVERY", 0.0)
    token = gateway.pair(["P1"])
    gateway.clock.advance(timedelta(minutes=12))  # the approved request stops answering
    waited = _until(
        lambda: t if (t := _timeout(gateway)) is not None and t > 3600 else None,
        10,
        "the pruning deadline",
    )
    assert waited > 23 * 3600
    async with gateway.ws("/api/legacy-p1", token=token) as ws:
        await ws.recv()
        waited = _until(
            lambda: t if (t := _timeout(gateway)) is not None and t < 3600 else None,
            10,
            "the renewal deadline",
        )
        assert 40 * 60 < waited < 48 * 60  # an hour after pairing, 12 minutes ago
