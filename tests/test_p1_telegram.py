"""Telegram parse/serialize byte for byte, the builder, values, and dsmr_parser agreeing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.p1_corpus import corpus
from x1p1.exceptions import TelegramParseError
from x1p1.p1 import CosemObject, Telegram, TelegramReader, ValidTelegram, crc16_hex
from x1p1.p1.dsmr5 import MbusDevice, PowerFailure, Readings, build
from x1p1.p1.values import fixed, hex_string, parse_timestamp, split_unit, timestamp

CORPUS = corpus()
V5 = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_parse_serialize_byte_for_byte(name: str) -> None:
    raw = CORPUS[name]
    telegram = Telegram.parse(raw)
    assert telegram.serialize() == raw
    assert telegram.crc_valid


def test_objects_of_the_spec_example() -> None:
    t = Telegram.parse(CORPUS["spec-example"])
    assert t.header == "ISk5\\2MT382-1000"
    assert t.as_dict()["1-0:1.8.1"] == "123456.789*kWh"
    gas = t.get("0-1:24.2.1")
    assert gas is not None and gas.values == ("101209112500W", "12785.123*m3")
    assert gas.value == "12785.123*m3" and gas.text == "(101209112500W)(12785.123*m3)"
    log = t.get("1-0:99.97.0")
    assert log is not None and log.values[:2] == ("2", "0-0:96.7.19") and len(log.values) == 6


def test_empty_values_and_dummy_channel() -> None:
    t = Telegram.parse(CORPUS["gas-channel-2-dummy-1"])
    assert t.as_dict()["0-1:24.2.1"] == ""
    assert t.as_dict()["0-2:24.2.1"].endswith("(08765.432*m3)")
    assert Telegram.parse(CORPUS["empty-values"]).as_dict()["0-0:96.13.0"] == ""


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"no slash\r\n", "starts with"),
        (b"/A\r\n\r\n1-0:1.8.1(1)\r\n!ZZZZ\r\n", "bad CRC"),
        (b"/A\r\n\r\n1-0:1.8.1(1)\r\n!0000\r\n", "CRC mismatch"),
        (
            b"/A\r\n1-0:1.8.1(1)\r\n!" + crc16_hex(b"/A\r\n1-0:1.8.1(1)\r\n!").encode() + b"\r\n",
            "empty line",
        ),
    ],
)
def test_parse_errors(raw: bytes, message: str) -> None:
    with pytest.raises(TelegramParseError, match=message):
        Telegram.parse(raw)


def test_bad_lines_are_parse_errors() -> None:
    for line in ["garbage", "1-0:1.8.1", "1-0:1.8.1(1", "x-0:1.8.1(1)", "1-0:1.8.1(a(b)"]:
        with pytest.raises(TelegramParseError):
            CosemObject.parse(line)
    with pytest.raises(TelegramParseError):
        CosemObject("1-0:1.8.1", ("é",))


@pytest.mark.parametrize("name", sorted(set(CORPUS) - {"empty-values", "unpadded-crc"}))
def test_dsmr_parser_accepts_every_built_telegram(name: str) -> None:
    parsed = V5.parse(CORPUS[name].decode("ascii"))
    assert parsed.EQUIPMENT_IDENTIFIER is not None


def test_values() -> None:
    assert fixed(1.193, 2, 3, "kW") == "01.193*kW"
    assert fixed(123456.7894, 6, 3) == "123456.789"
    assert fixed(1234567.5, 6, 3) == "234567.500"  # a register wraps as a meter's does
    assert fixed(4, 5, 0) == "00004"
    assert hex_string("E0044") == "4530303434"
    assert split_unit("000123.456*kWh") == ("000123.456", "kWh")
    assert split_unit("0002") == ("0002", None)
    winter = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    summer = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    assert timestamp(winter) == "260115130000W"
    assert timestamp(summer) == "260715140000S"
    assert parse_timestamp("260715140000S") == summer
    # the hour that occurs twice in autumn is told apart by the flag
    assert parse_timestamp("261025023000S") + timedelta(hours=1) == parse_timestamp("261025023000W")
    for bad in ["2607151400S", "269915140000S", "260715140000X"]:
        with pytest.raises(TelegramParseError):
            parse_timestamp(bad)


readings = st.builds(
    Readings,
    timestamp=st.datetimes(
        min_value=datetime(2001, 1, 1), max_value=datetime(2098, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
    equipment_id=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=96),
    delivered=st.tuples(st.floats(0, 999999), st.floats(0, 999999)),
    returned=st.tuples(st.floats(0, 999999), st.floats(0, 999999)),
    tariff=st.sampled_from([1, 2]),
    power_delivered=st.floats(0, 99),
    power_returned=st.floats(0, 99),
    voltages=st.lists(st.floats(0, 999), min_size=3, max_size=3).map(tuple),
    currents=st.lists(st.integers(0, 999), min_size=3, max_size=3).map(tuple),
    powers_delivered=st.lists(st.floats(0, 99), min_size=3, max_size=3).map(tuple),
    powers_returned=st.lists(st.floats(0, 99), min_size=3, max_size=3).map(tuple),
    power_failures=st.integers(0, 99999),
    long_power_failures=st.integers(0, 99999),
    failure_log=st.lists(
        st.builds(
            PowerFailure,
            st.datetimes(
                min_value=datetime(2001, 1, 1),
                max_value=datetime(2098, 1, 1),
                timezones=st.just(UTC),
            ),
            st.integers(0, 10**9),
        ),
        max_size=10,
    ).map(tuple),
    text_message=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=1024),
    mbus=st.lists(
        st.builds(
            MbusDevice,
            st.integers(1, 4),
            st.sampled_from([3, None]),
            st.text("0123456789G", max_size=20),
            st.none(),
            st.one_of(st.none(), st.floats(0, 99999)),
        ),
        max_size=2,
    ).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(readings)
def test_builder_round_trips_through_reader_and_parser(r: Readings) -> None:
    telegram = build(r)
    raw = telegram.serialize()
    events = TelegramReader().feed(raw)
    assert events == [ValidTelegram(raw, telegram.crc)]
    assert Telegram.parse(raw) == telegram
    V5.parse(raw.decode("ascii"))  # dsmr_parser checks the CRC and every line it knows
