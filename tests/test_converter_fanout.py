"""Several P1 outputs from one converter (x1p1.converter.outputs, ``[[output]]``).

Each output is independent (docs/config.example.toml): a gated, a slow or a stuck one
never delays another, and each keeps latest-wins. The interval rule is tested with the
arrival times passed in; the whole converter runs against the tests' own gateway with
two ptys (one read at ``interval = 10``, one never read, so it sticks), a Data Request
line of ``tests/serial_doubles`` whose CTS the test sets (a pty carries no CTS/DSR)
while its bytes go out on a third pty, and a TCP output, all read by dsmr_parser; and
for a display and an EV charger, two outputs each with its own Data Request, whose
modem lines the test sets while their bytes go out on two ptys.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial_doubles
from converter_support import fast_options, running
from dsmr_parser import telegram_specifications
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.parsers import TelegramParser
from p1_pty import PtyPeer, until
from x1_test_gateway import TestGateway, running_gateway

from x1p1.converter.config import ListenAddress, OutputConfig
from x1p1.converter.outputs import Output, Outputs
from x1p1.converter.state import render_status, status_report
from x1p1.p1 import TelegramReader, ValidTelegram

_TELEGRAM = re.compile(rb"/[^/]*?![0-9A-F]{4}\r\n", re.DOTALL)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(tmp_path / "gateway", period=0.02) as gw:
        yield gw


def dsmr_parsed(data: bytes) -> list[object]:
    buffer = TelegramBuffer()
    buffer.append(data.decode("ascii"))
    parser = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)
    return [parser.parse(text, throw_ex=True) for text in buffer.get_all()]


# --- the interval, with arrival times passed in ---------------------------------------------


def test_interval_ten_takes_one_telegram_in_ten_seconds() -> None:
    every = Output(OutputConfig(tcp=ListenAddress("127.0.0.1", 0)))
    tenth = Output(OutputConfig(tcp=ListenAddress("127.0.0.1", 0), interval=10))
    offered: list[float] = []
    jitter = (0.0, 0.3, -0.2, 0.1, -0.4)
    for second in range(35):
        received = 100.0 + second + jitter[second % 5]
        every.offer(b"t", received)
        before = tenth.counts.offered
        tenth.offer(b"t", received)
        if tenth.counts.offered > before:
            offered.append(received)
    assert every.counts.offered == 35 and every.counts.skipped == 0
    assert [round(t) for t in offered] == [100, 110, 120, 130]
    assert tenth.counts.skipped == 31


class Exploding:
    """An output whose hand-over raises, as a bug would."""

    def __init__(self) -> None:
        self.calls = 0

    def publish(self, raw: bytes) -> None:
        self.calls += 1
        raise RuntimeError("boom")


def test_an_output_that_raises_keeps_the_others_going(caplog: pytest.LogCaptureFixture) -> None:
    outputs = Outputs([])
    bad, good = Exploding(), Output(OutputConfig(tcp=ListenAddress("127.0.0.1", 0)))
    outputs.outputs = [Output(OutputConfig(tcp=ListenAddress("127.0.0.1", 1)), tcp=bad), good]  # type: ignore[arg-type]
    for second in range(120):
        outputs.publish(b"t", float(second))
    assert bad.calls == 120 and good.counts.offered == 120
    assert outputs.outputs[0].counts.errors == 120
    assert len([r for r in caplog.records if "failed: RuntimeError: boom" in r.message]) == 2


# --- the converter with four outputs -------------------------------------------------------


async def test_four_outputs_each_get_what_they_should(gateway: TestGateway, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    gateway.save_pairing(state_dir)
    line = serial_doubles.register(f"fanout-cts-{os.getpid()}")
    tenth, stuck, gated_line = PtyPeer(), PtyPeer(), PtyPeer()
    line.through = gated_line.slave  # the test sets its CTS; its bytes go out on a pty
    outputs = (
        OutputConfig(serial=line.url, data_request="cts"),
        OutputConfig(serial=tenth.path, interval=10),
        OutputConfig(serial=stuck.path),  # its master is never read: the pty fills up
        OutputConfig(tcp=ListenAddress("127.0.0.1", 0)),
    )
    tenth.attach()
    gated_line.attach()
    got = bytearray()
    started = time.monotonic()
    try:
        async with running(fast_options(state_dir, None, outputs=outputs)) as converter:
            gated, slow, jammed = converter.outputs.serials
            tcp = converter.tcp
            assert tcp is not None
            await until(lambda: tcp.port != 0, what="the TCP server")
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port)

            async def read_tcp() -> None:
                while chunk := await reader.read(65536):
                    got.extend(chunk)

            tcp_task = asyncio.create_task(read_tcp())
            try:
                # The unread pty fills and sticks; the others carry on meanwhile.
                await until(lambda: jammed.stats.resets >= 1, limit=30, what="a stuck pty")
                at_stuck = len(_TELEGRAM.findall(bytes(got)))
                await until(
                    lambda: len(_TELEGRAM.findall(bytes(got))) >= at_stuck + 50,
                    what="TCP telegrams while the pty is stuck",
                )
                # Data Request low: nothing; raised: telegrams; dropped: they stop.
                assert line.writes == []
                assert gated.stats.not_requested > 0
                line.cts = True
                await until(lambda: len(line.writes) >= 10, what="writes once requested")
                line.cts = False
                await until(lambda: gated.dr_state.value == "not-asserted", what="DR dropped")
                stopped_at = len(line.writes)
                relayed = converter.relayed
                await until(lambda: converter.relayed >= relayed + 30, what="more telegrams")
                assert len(line.writes) <= stopped_at + 1
                await until(lambda: len(tenth.raw_telegrams()) >= 1, what="the tenth's first")
                status = converter.status()
            finally:
                tcp_task.cancel()
                writer.close()
    finally:
        elapsed = time.monotonic() - started
        tenth.close()
        stuck.close()
        gated_line.close()
    # interval = 10: one telegram, and one more for each further 9.5 s the run took
    assert 1 <= len(tenth.raw_telegrams()) <= 1 + int(elapsed / 9.5)
    assert slow.stats.written == len(tenth.raw_telegrams())
    assert len(dsmr_parsed(bytes(tenth.data))) == len(tenth.raw_telegrams())
    assert len(dsmr_parsed(bytes(got))) >= at_stuck + 50
    for chunk in line.writes:
        events = TelegramReader().feed(chunk)
        assert len(events) == 1 and isinstance(events[0], ValidTelegram)
    assert len(dsmr_parsed(bytes(gated_line.data))) == len(line.writes)
    # status: every output with its state and counts
    names = [o["name"] for o in status.outputs]
    assert names == [line.url, tenth.path, stuck.path, f"tcp 127.0.0.1:{0}"]
    assert status.outputs[0]["data_request"] == {"mode": "cts", "state": "not-asserted"}
    assert status.outputs[1]["interval"] == 10 and status.outputs[1]["skipped_interval"] > 0
    assert status.outputs[2]["resets"] >= 1
    assert status.outputs[3]["kind"] == "tcp" and status.outputs[3]["sent"] > 0
    report = status_report(state_dir)
    text = render_status(report)
    assert "Output 2:" in text and f"{tenth.path} (every 10 s)" in text
    assert "Output 4:" in text and "tcp 127.0.0.1:" in text


async def test_a_display_and_an_ev_charger_each_with_its_own_data_request(
    gateway: TestGateway, tmp_path: Path
) -> None:
    """One Pi, two P1 devices: a display that asks with CTS and an EV charger's P1 input
    that asks with DSR (P1 §5.7.1). Each gets telegrams while, and only while, its own
    Data Request is raised; the bytes go out on two ptys, read by dsmr_parser."""
    state_dir = tmp_path / "state"
    gateway.save_pairing(state_dir)
    display = serial_doubles.register(f"display-{os.getpid()}")
    charger = serial_doubles.register(f"charger-{os.getpid()}")
    display_pty, charger_pty = PtyPeer().attach(), PtyPeer().attach()
    display.through, charger.through = display_pty.slave, charger_pty.slave
    outputs = (
        OutputConfig(serial=display.url, data_request="cts"),
        OutputConfig(serial=charger.url, data_request="dsr"),
    )

    def count(pty: PtyPeer) -> int:
        return len(pty.raw_telegrams())

    try:
        async with running(fast_options(state_dir, None, outputs=outputs)) as converter:
            first, second = converter.outputs.serials
            # the other pin of each line is high: neither device asks on the pin it uses
            display.dsr = charger.cts = True
            await until(lambda: converter.relayed >= 10, what="telegrams from the gateway")
            assert count(display_pty) == count(charger_pty) == 0
            display.cts = True  # the display asks: it alone gets them
            await until(lambda: count(display_pty) >= 10, what="the display's telegrams")
            assert count(charger_pty) == 0 and second.stats.not_requested > 0
            charger.dsr = True  # the charger asks too: both get them
            await until(lambda: count(charger_pty) >= 10, what="the charger's telegrams")
            display.cts = False  # the display stops asking; the charger carries on
            await until(lambda: first.dr_state.value == "not-asserted", what="display DR low")
            stopped_at, charging = count(display_pty), count(charger_pty)
            await until(lambda: count(charger_pty) >= charging + 20, what="more for the charger")
            assert count(display_pty) <= stopped_at + 1
            status = converter.status()
    finally:
        display_pty.close()
        charger_pty.close()
    for pty in (display_pty, charger_pty):
        assert len(dsmr_parsed(bytes(pty.data))) == count(pty)
    modes = [o["data_request"]["mode"] for o in status.outputs]
    assert modes == ["cts", "dsr"]
    assert status.outputs[1]["data_request"]["state"] == "asserted"
