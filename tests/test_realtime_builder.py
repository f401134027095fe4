"""The converter's one-pass path from realtime bytes to telegram bytes
(x1p1.x1.realtime_builder) against the general path it stands in for.

The reference is the general path: ``RealtimeMessage.parse``, ``RealtimeAssembler`` and
``realtime_telegram``, which test_realtime_telegram.py holds against the gateway's own
legacy-P1 telegrams. Whatever a message is (the embedded gateway's, a dialect, or random
bytes), both give the same telegram byte for byte, or the same refusal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_realtime_telegram import messages, meters_of
from x1p1.exceptions import GatewayError
from x1p1.gateway.simulation.meter import MeterSimulation
from x1p1.x1.obis import Meter
from x1p1.x1.profiles import Profile
from x1p1.x1.realtime import MeterInfo, RealtimeAssembler, RealtimeMessage
from x1p1.x1.realtime_builder import MAX_SPELLINGS, RealtimeBuilder
from x1p1.x1.realtime_telegram import realtime_telegram

E, G, PQ = Profile.E_REALTIME, Profile.G_REALTIME, Profile.PQ_REALTIME
ALL = frozenset({E, G, PQ})
START = datetime(2026, 3, 29, 0, 59, 50, tzinfo=UTC)
"""Seconds over the switch to summer time (01:00 UTC): the hour and its S/W flag change."""


class Pair:
    """The builder and the general path, fed the same messages."""

    def __init__(self, meters: tuple[MeterInfo, ...]) -> None:
        self.builder = RealtimeBuilder(meters)
        self.assembler = RealtimeAssembler(meters)
        self.built = 0

    def general(self, data: str | bytes) -> bytes | None:
        readings = self.assembler.receive(RealtimeMessage.parse(data))
        return None if readings is None else realtime_telegram(readings)

    def feed(self, data: str | bytes) -> bytes | None:
        """Both paths' answer, which must be the same (a telegram, None, or the refusal)."""
        try:
            expected: bytes | None | str = self.general(data)
        except GatewayError as exc:
            expected = f"refused: {exc}"
        try:
            got: bytes | None | str = self.builder.receive(data)
        except GatewayError as exc:
            got = f"refused: {exc}"
        assert got == expected, data
        assert self.builder.assembler.ignored == self.assembler.ignored
        self.built += isinstance(got, bytes)
        return got if isinstance(got, bytes) else None


def seconds(sim: MeterSimulation, profiles: frozenset[Profile], count: int) -> Iterator[str]:
    for i in range(count):
        yield from messages(sim, profiles, START + timedelta(seconds=i))


@pytest.mark.parametrize("profiles", [{E}, {E, G}, {E, G, PQ}, {E, PQ}, {PQ}])
def test_the_gateways_messages_build_the_same_telegrams(profiles: set[Profile]) -> None:
    sim = MeterSimulation(seed=3)
    granted = frozenset(profiles)
    pair = Pair(meters_of(sim, granted))
    for text in seconds(sim, granted, 25):
        pair.feed(text)
        pair.feed(text.encode())  # bytes, as the WebSocket gives them; the same second again
    assert pair.built == 50


def electricity_message(sim: MeterSimulation) -> tuple[Pair, dict[str, Any], str]:
    """A pair holding a gas reading, and one electricity message of the gateway's as JSON."""
    pair = Pair(meters_of(sim, ALL))
    gas, electricity = messages(sim, ALL, START)
    assert pair.feed(gas) is None
    body: dict[str, Any] = json.loads(electricity)
    return pair, body, electricity


def dialects(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The same message as other gateways might write it (docs/x1-api.md, "What the
    converter tolerates"), and messages the general path refuses or ignores."""
    values: dict[str, Any] = body["values"]
    first, second = list(values)[1:3]

    def with_values(new: dict[str, Any], **top: Any) -> dict[str, Any]:
        return {**body, **top, "values": new}

    yield with_values({k.removesuffix(".255"): v for k, v in values.items()})  # five groups
    yield with_values({k: str(v) if isinstance(v, float) else v for k, v in values.items()})
    yield with_values({**values, "9-9:9.9.9.255": 1, "not a code": [], "0-1:24.2.1.255": 3})
    yield with_values({**values, first: True, second: None})  # neither a number
    yield with_values({**values, first: "nan", second: 12})  # an int is a number
    yield with_values({**values, first: 1e300, second: -4.5})  # wraps; no sign in P1
    yield with_values({**values, first: 1.7e308, second: 10**400})  # beyond a float scaled
    yield with_values({**values, "1-0:99.97.0.255": "(1)(0-0:96.7.19)(200101000000W)(5*s)"})
    yield with_values({**values, "1-0:99.97.0.255": [{"t": 1}]})  # a log it cannot read
    yield with_values({**values, "0-0:96.1.1.255": "x" * 97})  # too long an identifier
    yield with_values({**values, "0-0:96.1.1.255": 1234})
    yield with_values(dict(reversed(values.items())))  # another order: P1 order kept
    yield with_values({})
    # two spellings of one code, in both orders, with the first one usable or not
    yield with_values({**values, first.removesuffix(".255"): 1.0})
    yield with_values({first.removesuffix(".255"): 2.0, **values})
    yield with_values({first.removesuffix(".255"): "?", **values})
    yield with_values({first.removesuffix(".255"): float("inf"), **values})
    yield with_values({"0-0:96.1.1": "y" * 97, **values})
    # other times: an offset, a fraction, lower case, Unix seconds, a leap second
    yield with_values(values, t="2026-03-29T02:59:50+02:00")
    yield with_values(values, t="2026-03-29T00:59:50.5Z")
    yield with_values(values, t="2026-03-29t00:59:50z")
    yield with_values(values, t=int(START.timestamp()))
    yield with_values(values, t="2026-03-29T00:59:60Z")
    yield with_values(values, t="2026-02-30T00:59:59Z")
    yield with_values(values, t="1930-06-01T12:00:00Z")  # not a whole hour from UTC then
    yield with_values(values, t="2026-03-29T00:59:49Z")  # a second older: ignored
    yield with_values(values, t="2026-03-29T00:59:51Z")
    yield with_values(values, equipment_id="E-stranger")
    yield with_values(values, equipment_id=None)
    yield {"equipment_id": body["equipment_id"], "t": body["t"]}


def test_dialects_build_the_same_telegrams_or_the_same_refusal() -> None:
    sim = MeterSimulation(seed=4)
    for variant in dialects(electricity_message(sim)[1]):
        pair, _, electricity = electricity_message(sim)
        pair.feed(json.dumps(variant))  # first, so that no time is older than the last
        pair.feed(electricity)  # then the usual: nothing learnt from the dialect is wrong
        pair.feed(json.dumps(variant))  # and again, now perhaps older than the last


def test_non_json_bytes_and_non_objects_are_refused_alike() -> None:
    pair, _, _ = electricity_message(MeterSimulation(seed=5))
    for data in (b"\xff\xfe", b"", b"[1]", b"NaN", b"{" * 70_000, b'{"values": {}}'):
        with pytest.raises(GatewayError):
            pair.builder.receive(data)
        pair.feed(data)


def test_values_not_finite_in_json_are_left_out() -> None:
    pair, body, _ = electricity_message(MeterSimulation(seed=6))
    first = list(body["values"])[1]
    text = json.dumps({**body, "values": {**body["values"], first: math.nan}})
    built = pair.feed(text)
    assert built is not None and first.rsplit(".", 1)[0].encode() + b"(" not in built


def test_ever_new_spellings_are_bounded() -> None:
    pair, body, _ = electricity_message(MeterSimulation(seed=7))
    values = body["values"]
    for i in range(3 * MAX_SPELLINGS):
        t = (START + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pair.feed(json.dumps({**body, "t": t, "values": {**values, f"junk{i}": 1}}))
        assert len(pair.builder._slots) <= MAX_SPELLINGS
    assert pair.built == 3 * MAX_SPELLINGS


def test_gas_lines_follow_each_new_reading() -> None:
    sim = MeterSimulation(seed=8)
    pair = Pair(meters_of(sim, ALL))
    for minute in range(12):  # readings every 5 minutes (P1 §7.3): three different ones
        at = START + timedelta(minutes=minute)
        gas, electricity = messages(sim, ALL, at)
        pair.feed(gas)
        built = pair.feed(electricity)
        assert built is not None and b"0-1:24.2.1(" in built


def test_no_electricity_meter_takes_the_general_path() -> None:
    meters = (MeterInfo("G1", Meter.GAS, 1),)
    pair = Pair(meters)
    text = json.dumps({"equipment_id": "G1", "t": "2026-01-15T12:00:00Z", "values": {}})
    assert pair.feed(text) is None


FAILURE = st.fixed_dictionaries({"t": st.text(max_size=3), "duration_s": st.integers()})
"""An entry of the power-failure log, rarely one the reader can use."""


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "1-0:1.8.1.255",
                "1-0:1.8.1",
                "1-0:1.7.0.255",
                "1-0:32.7.0.255",
                "1-0:31.7.0",
                "0-0:96.14.0.255",
                "0-0:96.1.1.255",
                "0-0:96.1.1",
                "1-0:99.97.0.255",
                "0-0:96.7.21.255",
                "0-1:24.2.1.255",
                "x",
            ]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(10**20), max_value=10**20),
            st.floats(allow_nan=False),
            st.text(max_size=12),
            st.integers(min_value=10**300, max_value=10**400),
            st.lists(
                st.fixed_dictionaries({"t": st.text(max_size=3), "duration_s": st.integers()})
            ),
        ),
        max_size=10,
    ),
    st.sampled_from(["2026-03-29T00:59:55Z", "2026-10-25T00:30:00Z", "2026-03-29T02:00:00+01:00"]),
)
def test_random_values_build_the_same_telegrams(values: dict[str, Any], t: str) -> None:
    pair = Pair((MeterInfo("E1", Meter.ELECTRICITY, 0),))
    pair.feed(json.dumps({"equipment_id": "E1", "t": t, "values": values}))
