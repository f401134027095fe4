"""Telegrams built from X1 realtime values (x1p1.x1.realtime_telegram, x1p1.x1.realtime).

The embedded gateway's own machinery writes the realtime messages (``Tick.realtime`` with
the selection ``handlers.realtime_selection`` resolves for a token of the given profiles),
so the messages are those a subscriber receives; the legacy-P1 telegram of the same second
is the reference. dsmr_parser (p1.md) reads both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser

from x1p1.exceptions import GatewayError
from x1p1.gateway import handlers
from x1p1.gateway.simulation.meter import MeterSimulation
from x1p1.gateway.streams import Tick
from x1p1.p1.dsmr5 import PowerFailure
from x1p1.p1.reader import TelegramReader, ValidTelegram
from x1p1.p1.telegram import Telegram
from x1p1.x1.grants import Grant, GrantKind
from x1p1.x1.obis import Meter
from x1p1.x1.profiles import Profile
from x1p1.x1.realtime import (
    MeterInfo,
    RealtimeAssembler,
    RealtimeMessage,
    gas_subscription,
    parse_failure_log,
    parse_meters,
    parse_time,
    subscription,
)
from x1p1.x1.realtime_telegram import (
    REALTIME_HEADER,
    GasReadings,
    RealtimeReadings,
    build_realtime,
)

E, G, PQ = Profile.E_REALTIME, Profile.G_REALTIME, Profile.PQ_REALTIME
PARSER = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)
START = datetime(2026, 3, 29, 1, 59, 58, tzinfo=UTC)  # over the switch to summer time
"""Seconds around 02:00 UTC: winter to summer time (S/W flag) and a 5-minute gas reading."""

PQ_ONLY = {
    "SHORT_POWER_FAILURE_COUNT",
    "LONG_POWER_FAILURE_COUNT",
    "POWER_EVENT_FAILURE_LOG",
    "VOLTAGE_SAG_L1_COUNT",
    "VOLTAGE_SAG_L2_COUNT",
    "VOLTAGE_SAG_L3_COUNT",
    "VOLTAGE_SWELL_L1_COUNT",
    "VOLTAGE_SWELL_L2_COUNT",
    "VOLTAGE_SWELL_L3_COUNT",
}


def token_with(profiles: Iterable[Profile]) -> Grant:
    return Grant(
        grant_id="t1",
        kind=GrantKind.TOKEN,
        digest="0" * 64,
        name="test",
        uuid="00000000-0000-4000-8000-000000000000",
        profiles=frozenset(profiles),
        created_at=START,
        expires_at=START + timedelta(days=90),
    )


def meters_of(sim: MeterSimulation, profiles: frozenset[Profile]) -> tuple[MeterInfo, ...]:
    """What ``GET /api/meters`` lists for such a token (the gateway's own handler)."""
    body = handlers.list_meters(sim, token_with(profiles))
    return parse_meters(json.loads(json.dumps(body)))


def messages(sim: MeterSimulation, profiles: frozenset[Profile], at: datetime) -> list[str]:
    """The realtime messages of second ``at`` as the gateway sends them to this token."""
    meters = meters_of(sim, profiles)
    sub = subscription(profiles, meters)
    assert sub is not None
    subs = [s for s in (gas_subscription(profiles, meters), sub) if s is not None]
    tick = Tick(0, at, sim)
    out = []
    for one in subs:  # the gas subscription's message first, as it is held when building
        params = dict(part.split("=", 1) for part in one.query().split("&"))
        selections, _ = handlers.realtime_selection(sim, token_with(profiles), params)
        out += [tick.realtime(selection) for selection in selections]
    return out


def built(sim: MeterSimulation, profiles: frozenset[Profile], at: datetime) -> bytes:
    assembler = RealtimeAssembler(meters_of(sim, profiles))
    readings = None
    for text in messages(sim, profiles, at):
        readings = assembler.receive(RealtimeMessage.parse(text)) or readings
    assert readings is not None
    return build_realtime(readings).serialize()


def parsed(raw: bytes) -> dict[str, Any]:
    telegram = PARSER.parse(raw.decode("ascii"), throw_ex=True)
    out: dict[str, Any] = json.loads(telegram.to_json())
    return out


@pytest.mark.parametrize(
    "profiles",
    [
        pytest.param({E}, id="E"),
        pytest.param({E, G}, id="E+G"),
        pytest.param({E, G, PQ}, id="E+G+PQ"),
        pytest.param({E, PQ}, id="E+PQ"),
    ],
)
def test_built_agrees_with_served_value_by_value(profiles: set[Profile]) -> None:
    sim = MeterSimulation(seed=7, gas_channel=2)
    granted = frozenset(profiles)
    for second in range(5):
        at = START + timedelta(seconds=second)
        mine, served = parsed(built(sim, granted, at)), parsed(sim.telegram(at))
        absent = set(served) - set(mine)
        expected_absent = {"TEXT_MESSAGE"}
        if PQ not in granted:
            expected_absent |= PQ_ONLY
        if G not in granted:
            expected_absent.add("MBUS_DEVICES")
        assert absent == expected_absent
        assert set(mine) <= set(served)
        for name, value in mine.items():
            assert value == served[name], (name, at)


def test_only_e_realtime_leaves_gas_out_never_zero() -> None:
    sim = MeterSimulation(seed=3)
    raw = built(sim, frozenset({E}), START)
    assert b"0-1:24.2.1" not in raw and b"24.1.0" not in raw and b"m3" not in raw
    assert b"99.97.0" not in raw and b"96.7.21" not in raw


def test_gas_carries_its_own_five_minute_time_and_device_type() -> None:
    sim = MeterSimulation(seed=3, gas_channel=2)
    at = START + timedelta(seconds=2)  # 02:00:00 UTC: a new 5-minute reading
    telegram = Telegram.parse(built(sim, frozenset({E, G}), at))
    capture, _ = sim.gas_reading(at)
    gas = telegram.get("0-2:24.2.1")
    assert gas is not None and gas.values[0] == "260329040000S" == telegram.get("0-0:1.0.0").value  # type: ignore[union-attr]
    assert capture == at
    assert telegram.get("0-2:24.1.0").value == "003"  # type: ignore[union-attr]
    assert telegram.header == REALTIME_HEADER


def test_summer_and_winter_flag() -> None:
    readings = RealtimeReadings(datetime(2026, 1, 15, 12, 0, tzinfo=UTC))
    winter = Telegram.parse(build_realtime(readings).serialize())
    assert winter.get("0-0:1.0.0").value == "260115130000W"  # type: ignore[union-attr]
    summer = RealtimeReadings(datetime(2026, 7, 15, 12, 0, tzinfo=UTC))
    assert Telegram.parse(build_realtime(summer).serialize()).get("0-0:1.0.0").value == (  # type: ignore[union-attr]
        "260715140000S"
    )


def test_formats_per_p1() -> None:
    readings = RealtimeReadings(
        datetime(2026, 1, 15, 12, 0, tzinfo=UTC),
        {
            "0-0:96.1.1.255": "E0044007312345617",
            "1-0:1.8.1.255": 1234.5,
            "0-0:96.14.0.255": 2,
            "1-0:1.7.0.255": 1.2345,
            "1-0:31.7.0.255": 6.499,
            "1-0:51.7.0.255": 6.501,
            "1-0:32.7.0.255": 229.96,
            "1-0:99.97.0.255": (),
        },
    )
    text = Telegram.parse(build_realtime(readings).serialize()).as_dict()
    assert text["0-0:96.1.1"] == "4530303434303037333132333435363137"
    assert text["1-0:1.8.1"] == "001234.500*kWh"
    assert text["0-0:96.14.0"] == "0002"
    assert text["1-0:1.7.0"] == "01.234*kW" or text["1-0:1.7.0"] == "01.235*kW"
    assert text["1-0:31.7.0"] == "006*A" and text["1-0:51.7.0"] == "007*A"  # whole amperes
    assert text["1-0:32.7.0"] == "230.0*V"
    assert text["1-0:99.97.0"] == "(0)(0-0:96.7.19)"
    assert "1-0:2.8.1" not in text and "0-0:96.13.0" not in text


def test_values_that_do_not_fit_are_left_out() -> None:
    readings = RealtimeReadings(
        datetime(2026, 1, 15, 12, 0, tzinfo=UTC),
        {
            "1-0:1.8.1.255": float("nan"),
            "1-0:1.8.2.255": "a lot",
            "0-0:96.1.1.255": "x" * 97,
            "1-0:99.97.0.255": 3,
        },
        (GasReadings(1, datetime(2026, 1, 15, 12, 0, tzinfo=UTC), {"0-1:24.2.1.255": "?"}),),
    )
    objects = [o.obis for o in Telegram.parse(build_realtime(readings).serialize())]
    assert objects == ["1-3:0.2.8", "0-0:1.0.0"]


def test_split_at_every_byte_and_round_trip() -> None:
    sim = MeterSimulation(seed=5)
    raw = built(sim, frozenset({E, G, PQ}), START)
    assert Telegram.parse(raw).serialize() == raw
    for cut in range(len(raw) + 1):
        reader = TelegramReader()
        events = reader.feed(raw[:cut]) + reader.feed(raw[cut:])
        valid = [e for e in events if isinstance(e, ValidTelegram)]
        assert len(valid) == 1 and valid[0].raw == raw, cut
        assert len(events) == 1, cut


# --- the tolerant reader ------------------------------------------------------------------


def test_failure_log_in_both_forms() -> None:
    text = "(2)(0-0:96.7.19)(230105143015W)(0000000240*s)(220704120000S)(0000000060*s)"
    listed = [
        {"t": "2023-01-05T13:30:15Z", "duration_s": 240},
        {"t": "2022-07-04T10:00:00Z", "duration_s": 60, "cause": "ignored"},
    ]
    expected = (
        PowerFailure(datetime(2023, 1, 5, 13, 30, 15, tzinfo=UTC), 240),
        PowerFailure(datetime(2022, 7, 4, 10, 0, 0, tzinfo=UTC), 60),
    )
    assert parse_failure_log(text) == expected
    assert parse_failure_log("1-0:99.97.0" + text) == expected
    assert parse_failure_log(listed) == expected
    assert parse_failure_log([]) == ()
    assert parse_failure_log("(0)(0-0:96.7.19)") == ()
    for bad in ("(1)(0-0:96.7.19)(nonsense)(0000000240*s)", [{"t": "x"}], [1], "(", 5):
        assert parse_failure_log(bad) is None
    eleven = [{"t": "2023-01-05T13:30:15Z", "duration_s": n} for n in range(11)]
    assert len(parse_failure_log(eleven) or ()) == 10
    # the same log again is remembered; JSON's true equals 1 but is no duration
    for short in (0, 1):
        at = {"t": "2023-01-05T13:30:15Z"}
        assert parse_failure_log([{**at, "duration_s": short}]) is not None
        assert parse_failure_log([{**at, "duration_s": bool(short)}]) is None


def test_list_form_builds_the_same_telegram_as_the_text_form() -> None:
    sim = MeterSimulation(seed=9)
    profiles = frozenset({E, PQ})
    texts = messages(sim, profiles, START)
    body = json.loads(texts[-1])
    log = sim.failure_log(START)
    body["values"]["1-0:99.97.0.255"] = [
        {"t": entry.end.strftime("%Y-%m-%dT%H:%M:%SZ"), "duration_s": entry.duration_s}
        for entry in log
    ]
    assembler = RealtimeAssembler(meters_of(sim, profiles))
    readings = assembler.receive(RealtimeMessage.parse(json.dumps(body)))
    assert readings is not None
    assert build_realtime(readings).serialize() == built(sim, profiles, START)


def test_reader_takes_what_it_needs() -> None:
    message = RealtimeMessage.parse(
        json.dumps(
            {
                "equipment_id": "E1",
                "t": "2026-01-15T12:00:00.250",  # no offset: UTC; the fraction dropped
                "extra": {"ignored": True},
                "values": {
                    "1-0:1.8.1": "123.456",  # five groups, a number as a string
                    "1-0:1.8.2.255": True,  # a boolean is no number
                    "9-9:9.9.9.255": 1,  # unknown code
                    "not a code": 1,
                    "0-0:96.1.1.255": 12345,
                },
            }
        )
    )
    assert message.t == datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert message.values == {"1-0:1.8.1.255": 123.456, "0-0:96.1.1.255": "12345"}


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        ("nonsense", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"t": "2026-01-15T12:00:00Z", "values": {}}', "no equipment_id"),
        ('{"equipment_id": "E", "t": "yesterday", "values": {}}', "no usable time"),
        ('{"equipment_id": "E", "t": 1768478400, "values": []}', "no values object"),
        ("[" * 100_000, "longer than"),
    ],
)
def test_reader_refuses_what_it_cannot_use_in_one_sentence(data: str, sentence: str) -> None:
    with pytest.raises(GatewayError, match=sentence):
        RealtimeMessage.parse(data)


def test_time_forms() -> None:
    noon = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    for form in (
        "2026-01-15T12:00:00Z",
        "2026-01-15T13:00:00+01:00",
        "2026-01-15T13:00:00+0100",
        "2026-01-15t12:00:00z",
        "2026-01-15 12:00:00",
        1768478400,
        1768478400.0,
    ):
        assert parse_time(form) == noon, form
    for bad in (None, True, "", "2026-13-15T12:00:00Z", float("inf"), "12:00"):
        assert parse_time(bad) is None, bad


def test_assembler_latest_wins_and_ignores_strangers() -> None:
    meters = (MeterInfo("E", Meter.ELECTRICITY, 0), MeterInfo("G", Meter.GAS, 1))
    assembler = RealtimeAssembler(meters)
    noon = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)

    def msg(eid: str, t: datetime, values: dict[str, Any]) -> RealtimeMessage:
        return RealtimeMessage.parse(
            json.dumps({"equipment_id": eid, "t": t.isoformat(), "values": values})
        )

    assert assembler.receive(msg("G", noon, {"0-1:24.2.1.255": 1.5, "0-2:24.2.1.255": 9})) is None
    readings = assembler.receive(msg("E", noon, {"1-0:1.8.1.255": 1, "0-1:24.2.1.255": 7}))
    assert readings is not None
    assert dict(readings.electricity) == {"1-0:1.8.1.255": 1}
    assert readings.gas == (GasReadings(1, noon, {"0-1:24.2.1.255": 1.5}),)
    assert assembler.receive(msg("X", noon, {"1-0:1.8.1.255": 1})) is None
    assert assembler.receive(msg("E", noon - timedelta(seconds=1), {})) is None
    assert assembler.ignored == 2


def test_subscription_asks_for_what_is_granted() -> None:
    meters = parse_meters(
        {
            "meters": [
                {"equipment_id": "E1", "type": "electricity", "channel": 0},
                {"equipment_id": "G1", "type": "Gas", "channel": 2, "extra": 1},
                {"equipment_id": 5, "type": "gas"},
                "junk",
            ]
        }
    )
    assert meters == (MeterInfo("E1", Meter.ELECTRICITY, 0), MeterInfo("G1", Meter.GAS, 2))
    everything = subscription({E, G, PQ}, meters)
    assert everything is not None
    assert everything.equipment_ids == ("E1",)
    assert "1-0:99.97.0.255" in everything.codes
    assert not any(code.startswith("0-2:") for code in everything.codes)
    gas = gas_subscription({E, G, PQ}, meters)
    assert gas is not None and gas.equipment_ids == ("G1",)
    assert gas.codes == ("0-2:24.1.0.255", "0-2:96.1.0.255", "0-2:24.2.1.255")
    only_e = subscription({E}, meters)
    assert only_e is not None and only_e.equipment_ids == ("E1",)
    assert "1-0:99.97.0.255" not in only_e.codes and "1-0:31.7.0.255" in only_e.codes
    assert gas_subscription({E}, meters) is None
    assert subscription({G}, meters) is None and gas_subscription({G}, meters) is None
    assert subscription({Profile.P1}, meters) is None
    with pytest.raises(GatewayError, match="meters: missing"):
        parse_meters({"nope": []})


def test_subscription_takes_one_gas_meter_per_channel() -> None:
    listed = [{"equipment_id": "E1", "type": "electricity"}] + [
        {"equipment_id": f"G{n}", "type": "gas", "channel": 1 + n % 2} for n in range(500)
    ]
    sub = gas_subscription({E, G}, parse_meters({"meters": listed}))
    assert sub is not None and sub.equipment_ids == ("G0", "G1")
    assert len(sub.query()) < 2000
