"""``x1p1 gateway serve`` on a network (X1 §4.3.3, §5.1): two gateways in network
namespaces on one bridge advertise themselves, the second claims ``X1-interface-1.local``,
and a converter in a third namespace finds one by name, pairs through the meter's button
and streams telegrams, verifying the certificate against the advertised host name.

Needs root for the namespaces (tests/netns.py); skips with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from dsmr_parser import obis_references, telegram_specifications
from dsmr_parser.parsers import TelegramParser
from websockets.asyncio.client import connect

from tests.netns import (
    Host,
    Segment,
    segment_factory,  # noqa: F401  (a fixture)
    wait_until,
)
from x1p1.converter.tls import client_ssl_context
from x1p1.gateway.control_client import ControlClient

X1P1 = str(Path(sys.executable).with_name("x1p1"))
BOUND = 45.0


def serve(host: Host, state_dir: Path, *args: str) -> tuple[subprocess.Popen[str], int, str]:
    """Start ``x1p1 gateway serve`` in ``host``; its process, port and claimed host name."""
    proc = host.popen(
        [X1P1, "-q", "gateway", "serve", "--port", "0", "--state-dir", str(state_dir), *args]
    )
    first, second = host.call(lambda: (_line(proc), _line(proc)), timeout=BOUND)
    listening = re.search(r"listening on https://[^:]+:(\d+)", first)
    claimed = re.match(r"mDNS host name: (\S+)", second)
    assert listening and claimed, (first, second)
    return proc, int(listening.group(1)), claimed.group(1)


def _line(proc: subprocess.Popen[str]) -> str:
    """The next line of the banner (it comes in one write: no select() per line)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"the gateway ended: {proc.stderr.read() if proc.stderr else ''}")
    return line


def test_two_gateways_and_a_converter_on_one_network(
    segment_factory: Callable[..., Segment],  # noqa: F811
    tmp_path: Path,
) -> None:
    segment = segment_factory(["a", "b", "c"])
    _, port_a, name_a = serve(segment["a"], tmp_path / "a", "--seed", "1")
    assert name_a == "X1-interface.local"
    _, port_c, name_c = serve(segment["c"], tmp_path / "c", "--seed", "2")
    assert name_c == "X1-interface-1.local"
    serial_c = next(
        m["equipment_id"]
        for m in ControlClient(tmp_path / "c").status()["meters"]
        if m["type"] == "electricity"
    )

    # the converter in b pairs with the second gateway by its mDNS name
    ca_c = tmp_path / "c" / "pki" / "root-ca.pem"
    # (the converter takes 443 unless told the port: a real gateway listens there)
    pair = segment["b"].popen(
        [
            X1P1,
            "pair",
            "--gateway",
            f"{name_c}:{port_c}",
            "--ca",
            str(ca_c),
            "--name",
            "converter in b",
            "--state-dir",
            str(tmp_path / "conv"),
        ]
    )
    meter = ControlClient(tmp_path / "c")
    pending = wait_until(meter.requests, BOUND, "the request on the meter's display")
    assert pending[0]["name"] == "converter in b" and pending[0]["profiles"] == ["P1"]
    meter.approve()  # the button
    out, err = pair.communicate(timeout=BOUND)
    assert pair.returncode == 0, err
    saved = json.loads((tmp_path / "conv" / "token.json").read_text())
    assert saved["gateway"]["host_name"] == name_c
    assert saved["gateway"]["address"] == segment["c"].address
    assert saved["gateway"]["port"] == port_c
    assert ControlClient(tmp_path / "a").tokens() == []

    # ... and streams telegrams from it by address, the certificate checked for its name
    parser = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)

    async def stream() -> str:
        context = client_ssl_context(ca_c)
        async with connect(
            f"wss://{segment['c'].address}:{port_c}/api/legacy-p1",
            ssl=context,
            server_hostname=name_c,
            additional_headers={"Authorization": f"Bearer {saved['token']}"},
        ) as ws:
            text = await ws.recv()
            assert isinstance(text, str)
            return text

    telegram = segment["b"].run_async(stream, timeout=BOUND)
    parsed = parser.parse(telegram, throw_ex=True)
    equipment = parsed[obis_references.EQUIPMENT_IDENTIFIER].value
    assert bytes.fromhex(equipment).decode() == serial_c

    # the first gateway cannot pass for the second: each has a root of its own
    async def impostor() -> None:
        _, writer = await asyncio.open_connection(
            segment["a"].address, port_a, ssl=client_ssl_context(ca_c), server_hostname=name_c
        )
        writer.close()

    with pytest.raises(ssl.SSLCertVerificationError):
        segment["b"].run_async(impostor, timeout=BOUND)
