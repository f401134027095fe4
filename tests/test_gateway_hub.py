"""The stream hub (x1p1.gateway.streams): one tick builds each message once for all
subscribers; slow subscribers lose old messages, not the others' time."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from gateway_fixture import SampleMeters

from x1p1.exceptions import RateLimited
from x1p1.gateway.streams import MAX_STREAMS_PER_TOKEN, MeterSelection, StreamHub, Tick
from x1p1.x1.obis import Meter, lookup


class CountingMeters(SampleMeters):
    def __init__(self) -> None:
        self.telegrams = 0
        self.values = 0

    def telegram(self, at: datetime) -> bytes:
        self.telegrams += 1
        return super().telegram(at)

    def realtime_values(self, at: datetime) -> dict[str, object]:
        self.values += 1
        return super().realtime_values(at)


def _selection(meters: SampleMeters, *codes: str) -> MeterSelection:
    return MeterSelection(meters.electricity_id, Meter.ELECTRICITY, tuple(lookup(c) for c in codes))


async def test_one_tick_builds_the_telegram_and_each_selection_once() -> None:
    meters = CountingMeters()
    hub = StreamHub(meters)
    same = _selection(meters, "1-0:1.7.0.255")
    other = _selection(meters, "1-0:1.7.0.255", "1-0:32.7.0.255")
    builds: list[str] = []

    def legacy(tick: Tick) -> list[str]:
        return [tick.telegram]

    def realtime(tick: Tick, selection: MeterSelection = same) -> list[str]:
        builds.append(tick.realtime(selection))
        return [builds[-1]]

    subscribers = [hub.subscribe(f"t{k}", 1, legacy, "legacy-p1") for k in range(10)]
    subscribers += [hub.subscribe(f"r{k}", 1, realtime, "realtime") for k in range(100)]
    subscribers.append(hub.subscribe("t", 1, lambda t: [t.realtime(other)], "realtime"))
    hub.tick(1_780_000_000)
    assert meters.telegrams == 1 and meters.values == 1
    assert all(b is builds[0] for b in builds)  # one string, shared
    assert all(len(s.mailbox) == 1 for s in subscribers)
    assert json.loads(subscribers[-1].mailbox[0])["values"].keys() == {
        "1-0:1.7.0.255",
        "1-0:32.7.0.255",
    }


async def test_intervals_and_latest_wins() -> None:
    meters = CountingMeters()
    hub = StreamHub(meters)
    every_two = hub.subscribe("t", 2, lambda t: [str(t.second)], "legacy-p1")
    every_one = hub.subscribe("t", 1, lambda t: [str(t.second)], "legacy-p1")
    for second in range(10, 14):
        hub.tick(second)
    assert every_one.mailbox == ["13"] and every_one.dropped == 3  # nobody read: latest wins
    assert every_two.mailbox == ["12"] and every_two.dropped == 1
    assert await every_one.next_messages() == ["13"]


async def test_close_token_and_close_all() -> None:
    hub = StreamHub(CountingMeters())
    a = hub.subscribe("a", 1, lambda t: ["x"], "legacy-p1")
    b = hub.subscribe("b", 1, lambda t: ["x"], "legacy-p1")
    assert hub.close_token("a", 4401, "unauthorized: token revoked") == 1
    assert await a.next_messages() is None and a.closing == (4401, "unauthorized: token revoked")
    assert b.closing is None
    hub.tick(5)
    assert a.mailbox == [] and b.mailbox == ["x"]
    hub.close_all(4503, "x1-disabled")
    assert b.closing == (4503, "x1-disabled")
    assert hub.token_ids() == {"a", "b"}
    hub.unsubscribe(a)
    hub.unsubscribe(b)
    assert hub.subscribers == []


async def test_a_failing_render_closes_only_its_subscriber() -> None:
    hub = StreamHub(CountingMeters())

    def broken(tick: Tick) -> list[str]:
        raise RuntimeError("bug")

    bad = hub.subscribe("a", 1, broken, "realtime")
    good = hub.subscribe("a", 1, lambda t: ["ok"], "realtime")
    hub.tick(7)
    assert bad.closing == (1011, "internal error") and good.mailbox == ["ok"]


def test_a_token_holds_at_most_eight_streams() -> None:
    """x1-api.md, WebSocket: the ninth stream of a token is refused (4429); closing ones do
    not count, and other tokens are not held up."""
    hub = StreamHub(CountingMeters())
    held = [hub.subscribe("t", 1, lambda t: [], "legacy-p1") for _ in range(MAX_STREAMS_PER_TOKEN)]
    with pytest.raises(RateLimited) as refused:
        hub.subscribe("t", 1, lambda t: [], "legacy-p1")
    assert refused.value.close_code == 4429
    hub.subscribe("other", 1, lambda t: [], "legacy-p1")
    held[0].close(4401, "unauthorized")
    assert hub.open_streams("t") == MAX_STREAMS_PER_TOKEN - 1
    hub.subscribe("t", 1, lambda t: [], "legacy-p1")
    assert hub.open_streams("t") == MAX_STREAMS_PER_TOKEN
