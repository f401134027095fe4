"""Where telegrams come from: legacy P1 or built from realtime values (x1p1/x1/source.py).

The decision table and the machine's deadlines are tested with ``now`` passed in. The
switching runs end to end against the embedded gateway (real TLS on loopback), with the
converter writing into a pty that dsmr_parser reads:

- a gateway without legacy P1: the converter's ``legacy_p1_path`` names a path the
  gateway does not serve, so the handshake gets the gateway's own 404, as from a gateway
  that lacks the endpoint;
- P1 taken away in the portal while running (the gateway closes with 4403) and granted
  back (found by re-reading ``GET /api/token``);
- built vs served over the network: the converter's built telegrams and the gateway's
  own legacy-P1 telegrams of the same seconds agree value by value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from converter_support import fast_options, running, save_test_pairing
from dsmr_parser import telegram_specifications
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.parsers import TelegramParser
from gateway_fixture import RunningGateway, running_gateway
from p1_pty import PtyPeer, until

from x1p1.converter.state import render_status, status_report
from x1p1.x1.connection import Conn
from x1p1.x1.gas_feed import GAS_INTERVAL, Gas
from x1p1.x1.profiles import Profile
from x1p1.x1.source import (
    GRANT_POLL,
    GRANT_REREAD_MIN,
    LEGACY_PROBE,
    Action,
    Mode,
    Source,
    SourceMachine,
    choose,
)

P1, E, G, PQ = Profile.P1, Profile.E_REALTIME, Profile.G_REALTIME, Profile.PQ_REALTIME
EVERYTHING = ("P1", "E-REALTIME", "G-REALTIME", "PQ-REALTIME")
PARSER = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)


# --- the decision table, and the machine with now passed in ---------------------------------


@pytest.mark.parametrize(
    ("mode", "granted", "missing", "expected"),
    [
        (Mode.AUTO, {P1}, False, Source.LEGACY_P1),
        (Mode.AUTO, {P1, E}, False, Source.LEGACY_P1),
        (Mode.AUTO, {P1, E}, True, Source.REALTIME),
        (Mode.AUTO, {P1}, True, Source.LEGACY_P1),
        (Mode.AUTO, {E, G}, False, Source.REALTIME),
        (Mode.AUTO, {PQ}, False, Source.REALTIME),
        (Mode.AUTO, {G}, False, None),
        (Mode.AUTO, set(), False, None),
        (Mode.LEGACY_P1, {P1, E}, True, Source.LEGACY_P1),
        (Mode.LEGACY_P1, {E}, False, None),
        (Mode.REALTIME, {P1, E}, False, Source.REALTIME),
        (Mode.REALTIME, {P1}, False, None),
    ],
)
def test_choose(mode: Mode, granted: set[Profile], missing: bool, expected: Source | None) -> None:
    source, reason = choose(mode, frozenset(granted), missing)
    assert source is expected
    assert reason and "\n" not in reason


def test_404_moves_to_realtime_and_legacy_is_tried_again() -> None:
    machine = SourceMachine(Mode.AUTO, frozenset({P1, E}))
    assert machine.active is Source.LEGACY_P1 and machine.deadline() is None
    assert machine.legacy_not_found(100.0)
    assert machine.active is Source.REALTIME
    assert "HTTP 404" in machine.reason
    assert machine.deadline() == 100.0 + LEGACY_PROBE
    assert machine.expire(100.0 + LEGACY_PROBE - 1) is None
    assert machine.expire(100.0 + LEGACY_PROBE) is Action.PROBE_LEGACY
    assert machine.active is Source.LEGACY_P1 and machine.switches == 2


def test_404_without_a_realtime_profile_keeps_legacy() -> None:
    machine = SourceMachine(Mode.AUTO, frozenset({P1}))
    assert not machine.legacy_not_found(0.0)
    assert machine.active is Source.LEGACY_P1
    fixed = SourceMachine(Mode.LEGACY_P1, frozenset({P1, E}))
    assert not fixed.legacy_not_found(0.0) and fixed.deadline() is None


def test_forbidden_reads_the_token_at_once_but_not_in_a_loop() -> None:
    machine = SourceMachine(Mode.AUTO, frozenset({P1, E, G}))
    machine.forbidden(10.0)
    assert machine.expire(10.0) is Action.READ_TOKEN
    assert machine.token_read({E, G}, 10.5)  # P1 gone: realtime
    assert machine.active is Source.REALTIME
    # realtime stands in for P1: the grant is read again every minute
    assert machine.deadline() == 10.5 + GRANT_POLL
    machine.opened()  # the realtime subscription opened
    machine.forbidden(11.0)  # a refusal right after a read waits the minimum
    assert machine.deadline() == 10.5 + GRANT_REREAD_MIN
    assert machine.expire(10.5 + GRANT_REREAD_MIN) is Action.READ_TOKEN
    assert machine.token_read({P1, E, G}, 20.0)  # P1 granted back
    assert machine.active is Source.LEGACY_P1 and machine.deadline() is None


def test_refusals_in_a_row_read_the_grant_ever_less_often() -> None:
    """A gateway that refuses at the handshake (403) while its grant still reads P1: one
    handshake and one read per spacing, doubled each time up to GRANT_POLL, never a loop;
    a subscription that opens starts afresh."""
    machine = SourceMachine(Mode.AUTO, frozenset({P1}))
    now, waits = 1.0, []
    for _ in range(6):
        machine.forbidden(now)
        at, last = machine.deadline(), machine.last_read_at
        assert at is not None
        waits.append(at - (at if last is None else last))
        assert machine.expire(at) is Action.READ_TOKEN
        assert not machine.token_read({P1}, at)
        now = at + 0.1  # the reconnect is refused at once
    assert waits == [0.0] + [GRANT_REREAD_MIN * 2**n for n in range(1, 4)] + [GRANT_POLL] * 2
    machine.opened()
    machine.forbidden(now)
    assert machine.deadline() == pytest.approx(now - 0.1 + GRANT_REREAD_MIN)


def test_nothing_usable_polls_the_grant() -> None:
    machine = SourceMachine(Mode.AUTO, frozenset({P1}))
    assert machine.token_read({G}, 5.0)
    assert machine.active is None and machine.deadline() == 5.0 + GRANT_POLL
    machine.token_unread(70.0)
    assert machine.deadline() == 70.0 + GRANT_POLL
    assert machine.status()["active"] is None and machine.status()["mode"] == "auto"


# --- end to end with the embedded gateway ---------------------------------------------------


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path / "gw") as gateway:
        yield gateway


def paired(gw: RunningGateway, state_dir: Path, profiles: tuple[str, ...]) -> tuple[str, str]:
    """A token with these profiles, saved as `x1p1 pair` would; (token, token id)."""
    token = gw.save_pairing(state_dir, profiles)
    token_id = next(
        t["token_id"] for t in gw.control.tokens() if set(t["profiles"]) == set(profiles)
    )
    return token, str(token_id)


def telegrams(pty: PtyPeer) -> list[tuple[bytes, dict[str, Any]]]:
    """Every telegram on the line: raw, and dsmr_parser's values (CRC checked)."""
    out = []
    for raw in pty.raw_telegrams():
        buffer = TelegramBuffer()
        buffer.append(raw.decode("ascii"))
        (text,) = buffer.get_all()
        out.append((raw, json.loads(PARSER.parse(text, throw_ex=True).to_json())))
    return out


def headers(pty: PtyPeer) -> list[bytes]:
    return [raw.split(b"\r\n", 1)[0] for raw in pty.raw_telegrams()]


async def test_a_gateway_without_legacy_p1_gets_built_telegrams(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer
) -> None:
    state_dir = tmp_path / "state"
    paired(gw, state_dir, EVERYTHING)
    reference = gw.pair(("P1",))
    served: list[bytes] = []

    async def collect() -> None:
        async with gw.ws("/api/legacy-p1?interval=1", token=reference) as ws:
            async for message in ws:
                served.append(message.encode() if isinstance(message, str) else message)

    options = fast_options(state_dir, pty.path, legacy_p1_path="/api/no-legacy-p1-here")
    collector = asyncio.create_task(collect())
    try:
        async with running(options) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 4, what="four built telegrams")
            status = converter.status()
    finally:
        collector.cancel()
    assert status.source is not None
    assert status.source["active"] == "realtime" and "HTTP 404" in status.source["reason"]
    assert set(headers(pty)) == {b"/XPP5X1P1-REALTIME"}
    by_time = {}
    for raw in served:
        buffer = TelegramBuffer()
        buffer.append(raw.decode("ascii"))
        (text,) = buffer.get_all()
        values = json.loads(PARSER.parse(text, throw_ex=True).to_json())
        by_time[values["P1_MESSAGE_TIMESTAMP"]["value"]] = values
    compared = gas_compared = 0
    for _, mine in telegrams(pty):
        theirs = by_time.get(mine["P1_MESSAGE_TIMESTAMP"]["value"])
        if theirs is None:
            continue  # the reference subscription started a second later
        compared += 1
        assert set(theirs) - set(mine) == {"TEXT_MESSAGE"}
        for name, value in mine.items():
            if name != "MBUS_DEVICES":
                assert value == theirs[name], name
        # the gas reading comes every GAS_INTERVAL s (x1p1/x1/gas_feed.py): a built
        # telegram may carry the previous 5-minute reading (P1 §7.3), with its own time;
        # whenever both carry the same time, they carry the same value
        (built_gas,) = mine["MBUS_DEVICES"]
        (served_gas,) = theirs["MBUS_DEVICES"]
        reading = "MBUS_METER_READING"
        assert {**built_gas, reading: None} == {**served_gas, reading: None}
        if built_gas[reading]["datetime"] == served_gas[reading]["datetime"]:
            gas_compared += 1
            assert built_gas[reading] == served_gas[reading]
    assert compared >= 2 and gas_compared >= 1


async def test_the_gas_meter_is_asked_every_minute_once_a_reading_is_held(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer
) -> None:
    """x1p1/x1/gas_feed.py: every second until the first gas reading, then every
    GAS_INTERVAL s on a subscription of its own; the electricity one stays at 1 s."""
    state_dir = tmp_path / "state"
    _, token_id = paired(gw, state_dir, ("E-REALTIME", "G-REALTIME"))

    def intervals() -> list[int]:
        return sorted(
            gw.call(
                lambda g: [
                    s.interval
                    for s in (g.state.hub.subscribers if g.state else [])
                    if s.token_id == token_id and s.closing is None
                ]
            )
        )

    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 2, what="built telegrams")
        await until(lambda: intervals() == [1, GAS_INTERVAL], what="the gas stream at 60 s")
        assert converter.stream.gas.state is Gas.STEADY
        count = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= count + 2, what="more telegrams")
        await until(
            lambda: (
                (converter.status().source or {}).get("gas", {}).get("connection") == "connected"
            ),
            what="the gas subscription connected again at 60 s",
        )
        status = converter.status()
    assert all(b"*m3)" in raw for raw in pty.raw_telegrams())
    assert status.source is not None
    gas = status.source["gas"]
    assert gas["state"] == "steady" and gas["interval"] == GAS_INTERVAL
    assert gas["readings"] >= 1 and gas["reading_at"] is not None
    (line,) = [x for x in render_status(status.to_json()).splitlines() if x.startswith("Gas")]
    assert f"asked every {GAS_INTERVAL} s" in line and "(the meter's time)" in line
    assert "subscription" not in line  # connected: nothing to say about it


def test_status_shows_the_gas_subscription_in_each_state() -> None:
    def line(gas: dict[str, Any]) -> str:
        report = {"source": {"mode": "auto", "active": "realtime", "reason": "", "gas": gas}}
        (found,) = [x for x in render_status(report).splitlines() if x.startswith("Gas")]
        return found

    catching = line({"state": "catching", "interval": 1, "readings": 0, "connection": None})
    assert "waiting for the first reading" in catching and "0 read" in catching
    failing = line(
        {
            "state": "steady",
            "interval": GAS_INTERVAL,
            "readings": 3,
            "connection": "reconnecting",
            "reading_at": "2026-01-15T12:05:00Z",
        }
    )
    assert "3 read" in failing and "subscription reconnecting" in failing
    assert "(the meter's time)" in failing
    no_gas = {"source": {"mode": "auto", "active": "realtime", "reason": ""}}
    assert "Gas" not in render_status(no_gas)


async def test_portal_takes_p1_away_and_grants_it_back(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer
) -> None:
    state_dir = tmp_path / "state"
    _, token_id = paired(gw, state_dir, EVERYTHING)
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 2, what="legacy telegrams")
        assert set(headers(pty)) == {b"/XPP5X1P1-GATEWAY"}
        assert converter.sources.active is Source.LEGACY_P1
        # The portal drops P1: the gateway closes with 4403, the converter re-reads the
        # token and builds telegrams from the realtime profiles, without a restart.
        gw.control.set_profiles(token_id, ["E-REALTIME", "G-REALTIME", "PQ-REALTIME"])
        await until(lambda: b"/XPP5X1P1-REALTIME" in headers(pty), what="built telegrams")
        assert converter.sources.active is Source.REALTIME
        assert "lacks the P1 profile" in converter.sources.reason
        count = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= count + 2, what="more built ones")
        assert converter.stream.state is Conn.CONNECTED
        report = render_status(status_report(state_dir))
        assert "Source:" in report and "realtime (source = auto)" in report
        # P1 granted back: the realtime stream stays open (still allowed), the grant is
        # read again within GRANT_POLL and the converter returns to legacy P1.
        gw.control.set_profiles(token_id, list(EVERYTHING))
        mark = len(pty.raw_telegrams())
        await until(lambda: b"/XPP5X1P1-GATEWAY" in headers(pty)[mark:], what="legacy P1 again")
        assert converter.sources.active is Source.LEGACY_P1
        assert converter.sources.switches >= 2
    for _, values in telegrams(pty):
        assert values["P1_MESSAGE_HEADER"]["value"] == "50"


async def test_p1_taken_away_and_granted_back_at_once_keeps_relaying(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer, caplog: pytest.LogCaptureFixture
) -> None:
    """X1 §5.1.6: the customer switches the device to another profile and straight back.
    The gateway closes with 4403; the re-read grant still allows legacy P1, so the
    converter connects again at once, and never asks for `x1p1 pair`."""
    state_dir = tmp_path / "state"
    _, token_id = paired(gw, state_dir, ("P1",))
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 2, what="legacy telegrams")
        opened = converter.stream.machine.opened
        gw.control.set_profiles(token_id, ["E-HISTORIC"])
        gw.control.set_profiles(token_id, ["P1"])
        await until(lambda: converter.stream.machine.opened > opened, what="a new connection")
        mark = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= mark + 2, what="telegrams again")
        assert converter.stream.state is Conn.CONNECTED
        assert converter.sources.active is Source.LEGACY_P1
        states = [new for _, event, new in converter.stream.machine.history]
        assert Conn.REGRANT in states and Conn.NEEDS_PAIRING not in states
    said = [r.getMessage() for r in caplog.records if r.name.startswith("x1p1")]
    assert any("the customer changed this device's profiles; following them" in m for m in said)
    assert not any("revoked" in m or "x1p1 pair" in m for m in said), said


async def test_a_grant_with_no_usable_profile_waits_then_follows_the_portal(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer
) -> None:
    state_dir = tmp_path / "state"
    _, token_id = paired(gw, state_dir, ("P1",))
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 2, what="legacy telegrams")
        gw.control.set_profiles(token_id, ["E-HISTORIC"])
        await until(lambda: converter.stream.state is Conn.NO_GRANT, what="waiting-for-grant")
        assert "waiting until the customer grants a profile" in converter.stream.message
        await until(
            lambda: (status_report(state_dir).get("source") or {}).get("active") is None,
            what="the status file",
        )
        report = render_status(status_report(state_dir))
        assert "Source: none (source = auto): the token has neither P1" in " ".join(report.split())
        mark = len(pty.raw_telegrams())
        gw.control.set_profiles(token_id, ["P1"])  # found at the next read (GRANT_POLL)
        await until(lambda: len(pty.raw_telegrams()) >= mark + 2, what="telegrams again")
        assert converter.stream.state is Conn.CONNECTED


async def test_only_e_realtime_has_no_gas_and_legacy_mode_waits(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer
) -> None:
    state_dir = tmp_path / "state"
    paired(gw, state_dir, ("E-REALTIME",))
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="built telegrams")
        assert converter.sources.active is Source.REALTIME
    for raw, values in telegrams(pty):
        assert "MBUS_DEVICES" not in values and b"m3" not in raw
        assert "POWER_EVENT_FAILURE_LOG" not in values
        assert values["ELECTRICITY_USED_TARIFF_1"]["value"] > 0
    # source = legacy-p1 with such a token: no relaying, one sentence why
    pty.data.clear()
    async with running(fast_options(state_dir, pty.path, source="legacy-p1")) as converter:
        await until(lambda: converter.stream.state is Conn.NO_GRANT, what="waiting")
        assert "lacks the P1 profile" in converter.stream.message
        assert converter.status().source == {
            "mode": "legacy-p1",
            "active": None,
            "reason": "source = legacy-p1 but the token lacks the P1 profile",
            "granted": ["E-REALTIME"],
            "switches": 0,
        }
    assert pty.raw_telegrams() == []


async def test_portal_takes_gas_away_from_a_realtime_token(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer
) -> None:
    state_dir = tmp_path / "state"
    _, token_id = paired(gw, state_dir, ("E-REALTIME", "G-REALTIME"))
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 2, what="built telegrams with gas")
        assert all(b"*m3)" in raw for raw in pty.raw_telegrams())
        gw.control.set_profiles(token_id, ["E-REALTIME"])
        mark = len(pty.raw_telegrams())
        await until(
            lambda: any(b"*m3)" not in raw for raw in pty.raw_telegrams()[mark:]),
            what="telegrams without gas",
        )
        assert converter.sources.granted == frozenset({E})
        assert converter.sources.active is Source.REALTIME
    last = pty.raw_telegrams()[-1]
    assert b"24.2.1" not in last and b"1-0:1.8.1(" in last


async def test_404_with_a_stale_saved_grant_asks_the_gateway(
    gw: RunningGateway, tmp_path: Path, pty: PtyPeer
) -> None:
    """The saved pairing knows only P1 (paired before the portal added realtime): the 404
    makes the converter read GET /api/token, which shows E-REALTIME, and it builds."""
    state_dir = tmp_path / "state"
    token = gw.pair(EVERYTHING)
    save_test_pairing(state_dir, token=token, port=gw.port, ca_pem=gw.ca_path.read_text())
    options = fast_options(state_dir, pty.path, legacy_p1_path="/api/no-legacy-p1-here")
    async with running(options) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 2, what="built telegrams")
        assert converter.sources.active is Source.REALTIME
        assert Profile.E_REALTIME in converter.pairing.profiles  # type: ignore[union-attr]
    assert set(headers(pty)) == {b"/XPP5X1P1-REALTIME"}


def test_an_unusable_realtime_message_is_dropped_and_said_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from x1p1.converter.source_stream import BAD_MESSAGE_LOG_EVERY, SourceStream
    from x1p1.x1.obis import Meter
    from x1p1.x1.realtime import MeterInfo
    from x1p1.x1.realtime_builder import RealtimeBuilder

    async def no_meters(target: object) -> tuple[MeterInfo, ...]:
        return ()

    built: list[bytes] = []
    stream = SourceStream(
        lambda: None,
        lambda raw, now: built.append(raw),
        sources=SourceMachine(),
        realtime_path=lambda: "/api/realtime",
        fetch_meters=no_meters,
    )
    stream.connected_source = Source.REALTIME
    stream._builder = RealtimeBuilder((MeterInfo("E1", Meter.ELECTRICITY, 0),))
    with caplog.at_level("WARNING", logger="x1p1"):
        stream.received(b"not json", 100.0)  # the reader's own refusal, said at once
        stream.received(b"[1]", 101.0)  # within the minute: counted, not said

        def boom(data: bytes) -> bytes | None:
            raise ZeroDivisionError("a bug")

        stream._builder.receive = boom  # type: ignore[method-assign]
        stream.received(b"{}", 100.0 + BAD_MESSAGE_LOG_EVERY)  # unforeseen: its type said
    said = [r.getMessage() for r in caplog.records if "dropped a realtime" in r.getMessage()]
    assert said == [
        "dropped a realtime message from the gateway: a realtime message is not JSON",
        "dropped a realtime message from the gateway: ZeroDivisionError: a bug",
    ]
    assert stream.bad_messages == 3 and built == []
