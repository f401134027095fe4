"""The households of docs/realtime.md, read as their software reads P1.

Home Assistant's DSMR integration reads a P1 line with dsmr_parser's asyncio readers:
``create_dsmr_reader`` on a serial port, ``create_tcp_dsmr_reader`` on a network P1
device, with DSMR version ``"5"``. Here those same readers, unchanged, read what the
converter writes: a pty for the serial port, and the converter's TCP output for the
network device. dsmr-reader frames and parses with dsmr_parser's ``TelegramBuffer`` and
``TelegramParser`` (V5), which ``p1_pty.PtyPeer.parsed`` does.

The household here is one whose customer granted only E-REALTIME and G-REALTIME in the
portal (X1 §5.1.6): the converter builds every telegram from realtime values, and the
readers see electricity and the gas meter (device type 3 on its M-Bus channel, P1 §7.3)
with the values the gateway's own legacy-P1 telegram of the same second carries.
"""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path
from typing import Any

from converter_support import fast_options, running
from dsmr_parser import telegram_specifications
from dsmr_parser.clients.protocol import create_dsmr_reader, create_tcp_dsmr_reader
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.parsers import TelegramParser
from gateway_fixture import RunningGateway, gateway  # noqa: F401 (a fixture)
from p1_pty import PtyPeer, until

from x1p1.converter.config import ListenAddress, OutputConfig

GAS_DEVICE_TYPE = 3
"""``0-n:24.1.0`` of a gas meter (P1 §7.3): how Home Assistant finds the gas meter."""
PARSER = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)


class Cable(PtyPeer):
    """The P1 cable between two serial ports: what the converter writes into this pty
    comes out of a second one, whose path (:attr:`far_path`) Home Assistant's reader
    opens as its P1 adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.far_master, self.far_slave = os.openpty()
        tty.setraw(self.far_master)
        self.far_path = os.ttyname(self.far_slave)
        self._sent = 0

    def _received(self) -> None:
        chunk = bytes(self.data[self._sent :])
        self._sent += os.write(self.far_master, chunk)

    def close(self) -> None:
        super().close()
        for fd in (self.far_master, self.far_slave):
            os.close(fd)


def what_home_assistant_shows(telegram: Any) -> dict[str, Any]:
    """The values of the sensors Home Assistant's DSMR integration makes of a telegram:
    electricity by attribute, the gas meter found among the M-Bus devices by its type."""
    shown = {
        name: getattr(telegram, name).value
        for name in (
            "P1_MESSAGE_TIMESTAMP",
            "ELECTRICITY_USED_TARIFF_1",
            "ELECTRICITY_USED_TARIFF_2",
            "ELECTRICITY_DELIVERED_TARIFF_1",
            "ELECTRICITY_DELIVERED_TARIFF_2",
            "ELECTRICITY_ACTIVE_TARIFF",
            "CURRENT_ELECTRICITY_USAGE",
            "CURRENT_ELECTRICITY_DELIVERY",
            "INSTANTANEOUS_VOLTAGE_L1",
            "INSTANTANEOUS_CURRENT_L1",
            "INSTANTANEOUS_ACTIVE_POWER_L1_POSITIVE",
        )
    }
    gas = [d for d in telegram.MBUS_DEVICES if d.MBUS_DEVICE_TYPE.value == GAS_DEVICE_TYPE]
    assert len(gas) == 1, "one gas meter"
    shown["gas"] = (gas[0].MBUS_METER_READING.value, gas[0].MBUS_METER_READING.datetime)
    return shown


async def test_home_assistant_reads_built_telegrams_on_serial_and_network(
    gateway: RunningGateway,  # noqa: F811 (the fixture of gateway_fixture.py)
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    gateway.save_pairing(state_dir, ("E-REALTIME", "G-REALTIME"))
    reference = gateway.pair(("P1",))
    served: dict[Any, Any] = {}

    async def collect() -> None:
        """The gateway's own legacy-P1 telegrams, by their time."""
        async with gateway.ws("/api/legacy-p1?interval=1", token=reference) as ws:
            async for message in ws:
                buffer = TelegramBuffer()
                buffer.append(message if isinstance(message, str) else message.decode())
                for text in buffer.get_all():
                    telegram = PARSER.parse(text, throw_ex=True)
                    served[telegram.P1_MESSAGE_TIMESTAMP.value] = telegram

    cable = Cable().attach()
    outputs = (OutputConfig(serial=cable.path), OutputConfig(tcp=ListenAddress("127.0.0.1", 0)))
    by_serial: list[Any] = []
    by_network: list[Any] = []
    transports = []
    collector = asyncio.create_task(collect())
    try:
        async with running(fast_options(state_dir, None, outputs=outputs)) as converter:
            tcp = converter.tcp
            assert tcp is not None
            await until(lambda: tcp.port != 0, what="the TCP output")
            for reader in (
                create_dsmr_reader(cable.far_path, "5", by_serial.append),
                create_tcp_dsmr_reader("127.0.0.1", tcp.port, "5", by_network.append),
            ):
                transport, _ = await reader
                transports.append(transport)
            await until(
                lambda: len(by_serial) >= 4 and len(by_network) >= 4,
                limit=30,
                what="four telegrams for each of Home Assistant's readers",
            )
            status = converter.status()
    finally:
        collector.cancel()
        for transport in transports:
            transport.close()
        cable.close()
    assert status.source is not None and status.source["active"] == "realtime"
    compared = 0
    for telegram in by_serial + by_network:
        mine = what_home_assistant_shows(telegram)
        theirs = served.get(mine["P1_MESSAGE_TIMESTAMP"])
        if theirs is None:
            continue  # the reference subscription began a second later
        compared += 1
        expected = what_home_assistant_shows(theirs)
        # the gas reading comes once a minute on its own subscription: a built telegram
        # may still carry the previous 5-minute reading, always with that reading's time
        if mine["gas"][1] != expected["gas"][1]:
            mine["gas"] = expected["gas"] = None
        assert mine == expected
    assert compared >= 4
