"""The converter end to end against the test gateway: pair, run, a pty, dsmr_parser.

Real TLS on loopback, the real websockets client, a real pty: every telegram that reaches
the P1 reader's end is byte-identical to one the gateway sent and passes dsmr_parser's
CRC check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from p1_pty import PtyPeer, until
from x1_test_gateway import SERIAL, TestGateway, running_gateway

from x1p1.cli import main
from x1p1.converter.state import load_pairing
from x1p1.converter.stream import StreamSettings
from x1p1.converter.supervisor import Converter, ConverterOptions


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(tmp_path / "gateway", period=0.02) as gw:
        yield gw


@pytest.fixture
async def pty() -> AsyncIterator[PtyPeer]:
    peer = PtyPeer().attach()
    yield peer
    peer.close()


def fast_options(state_dir: Path, serial: str | None, **kwargs: object) -> ConverterOptions:
    """The real schedule, 100 times faster, so no test sleeps through a backoff."""
    stream = StreamSettings(scale=0.01, stall_timeout=2.0, open_timeout=5.0)
    options = ConverterOptions(
        state_dir=state_dir,
        serial=serial,
        stream=stream,
        tick=0.05,
        token_check=0.05,
        status_interval=0.05,
        serial_reopen=0.05,
    )
    for key, value in kwargs.items():
        setattr(options, key, value)
    return options


async def pair_cli(gateway: TestGateway, state_dir: Path, *extra: str) -> tuple[int, str]:
    """``x1p1 pair`` in a thread (it blocks) while the gateway keeps serving."""
    args = [
        "pair",
        "--gateway",
        f"127.0.0.1:{gateway.port}",
        "--ca",
        str(gateway.ca_file),
        "--state-dir",
        str(state_dir),
        *extra,
    ]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    return result.exit_code, result.output


async def test_pair_then_run_relays_every_telegram_byte_identical(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    gateway.auto = "approve"
    state_dir = tmp_path / "state"
    code, output = await pair_cli(gateway, state_dir, "--name", "x1p1 test")
    assert code == 0, output
    assert "Paired with" in output
    pairing = load_pairing(state_dir)
    assert (state_dir / "token.json").stat().st_mode & 0o777 == 0o600
    assert pairing.token in gateway.tokens
    assert pairing.ca_pem is not None and "BEGIN CERTIFICATE" in pairing.ca_pem

    converter = Converter(fast_options(state_dir, pty.path))
    task = asyncio.create_task(converter.run())
    await until(lambda: len(pty.raw_telegrams()) >= 40, what="40 telegrams on the pty")
    converter.stop()
    assert await task == 0

    received = pty.raw_telegrams()
    sent = gateway.sent
    positions = [sent.index(raw) for raw in received]  # each one the gateway sent ...
    assert positions == sorted(set(positions))  # ... in order, none twice
    assert b"".join(received) == bytes(pty.data)  # nothing between or around them
    parsed = pty.parsed()  # dsmr_parser, CRC checked, raises on any bad one
    assert len(parsed) == len(received)
    assert converter.dropped_invalid == 0
    # the serial was learned from the first telegram and saved for mDNS lookups
    assert load_pairing(state_dir).serial == SERIAL


async def test_verifies_the_host_name_while_connecting_by_address(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    from x1p1.converter.state import Pairing, save_pairing
    from x1p1.x1.profiles import Profile

    state_dir = tmp_path / "state"
    from datetime import UTC, datetime

    save_pairing(
        state_dir,
        Pairing(
            token=gateway.issue_token(),
            host_name="X1-interface.local",  # in the certificate; does not resolve here
            port=gateway.port,
            address="127.0.0.1",
            serial=SERIAL,
            ca_pem=gateway.ca_file.read_text(),
            ca_source=None,
            profiles=frozenset({Profile.P1}),
            expires_at=None,
            name="t",
            uuid="0b5c2f0e-1111-4222-8333-444455556666",
            paired_at=datetime.now(UTC),
        ),
    )
    converter = Converter(fast_options(state_dir, pty.path))
    task = asyncio.create_task(converter.run())
    await until(lambda: len(pty.raw_telegrams()) >= 5, what="telegrams")
    assert converter.stream.state.value == "connected"
    converter.stop()
    await task
    pty.parsed()
