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
from converter_support import fast_options, running, save_test_pairing
from p1_pty import PtyPeer, until
from x1_test_gateway import SERIAL, TestGateway, running_gateway

from x1p1.cli import main
from x1p1.converter.state import load_pairing
from x1p1.converter.supervisor import Converter


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(tmp_path / "gateway", period=0.02) as gw:
        yield gw


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
    state_dir = tmp_path / "state"
    save_test_pairing(  # X1-interface.local is in the certificate, and does not resolve here
        state_dir,
        token=gateway.issue_token(),
        port=gateway.port,
        ca_pem=gateway.ca_file.read_text(),
        host_name="X1-interface.local",
        address="127.0.0.1",
    )
    converter = Converter(fast_options(state_dir, pty.path))
    task = asyncio.create_task(converter.run())
    await until(lambda: len(pty.raw_telegrams()) >= 5, what="telegrams")
    assert converter.stream.state.value == "connected"
    converter.stop()
    await task
    pty.parsed()


async def test_learns_the_token_expiry_and_overrides_the_address(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    """``--gateway ADDRESS`` replaces the saved address (the TLS name stays the paired
    host name); the token's expiry is read from ``GET /api/token`` and saved."""
    from x1p1.converter.config import GatewayAddress

    state_dir = tmp_path / "state"
    save_test_pairing(
        state_dir,
        token=gateway.issue_token(),
        port=1,  # wrong: the option below fixes it
        ca_pem=gateway.ca_file.read_text(),
        address="192.0.2.1",  # TEST-NET-1: nothing answers there
    )
    options = fast_options(state_dir, pty.path, gateway=GatewayAddress("127.0.0.1", gateway.port))
    async with running(options) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="telegrams")
        await until(
            lambda: converter.pairing is not None and converter.pairing.expires_at is not None,
            what="the expiry",
        )
        status = converter.status()
    assert status.gateway["address"] == "127.0.0.1" and status.gateway["port"] == gateway.port
    saved = load_pairing(state_dir)
    assert saved.expires_at is not None and saved.address == "192.0.2.1"


async def test_no_token_in_any_log_line_and_systemd_hears_about_it(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    """Everything at debug level, websockets' handshake headers included: no token.
    systemd gets READY after the first attempt, WATCHDOG and STATUS on the way."""
    import io
    import socket

    from x1p1.logs import setup_logging

    state_dir = tmp_path / "state"
    token = gateway.issue_token()
    save_test_pairing(state_dir, token=token, port=gateway.port, ca_pem=gateway.ca_file.read_text())
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.setblocking(False)
    stream = io.StringIO()
    handler = setup_logging(2, stream=stream, journald=False)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    try:
        async with running(fast_options(state_dir, pty.path, env=env)) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 3, what="telegrams")
            gateway.revoke_all()
            await until(lambda: converter.stream.state.value == "needs-pairing", what="401")
    finally:
        import logging

        logging.getLogger().removeHandler(handler)
        messages = []
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
        notify.close()
    text = stream.getvalue()
    assert "Authorization: Bearer [redacted]" in text  # websockets logged the header
    assert token not in text
    assert messages.count("READY=1") == 1
    assert "WATCHDOG=1" in messages
    assert any(m.startswith("STATUS=connected") for m in messages)
    assert any(m.startswith("STATUS=needs-pairing") for m in messages)
    assert messages[-1] == "STOPPING=1" or "STOPPING=1" in messages


async def test_the_first_telegram_is_not_lost(pty: PtyPeer, tmp_path: Path) -> None:
    """The port finishes opening only after the first telegram arrived: it still goes out.

    The gateway sends one telegram every 0.3 s: the port opens well before the second, so
    latest-wins (a newer telegram replacing the waiting one) cannot decide the outcome."""
    import time

    from x1p1.converter.serial_out import open_serial

    state_dir = tmp_path / "state"
    async with running_gateway(tmp_path / "gateway", period=0.3) as gateway:
        gateway.save_pairing(state_dir)

        def slow_opener(url: str, timeout: float) -> object:
            deadline = time.monotonic() + 10
            while converter.relayed < 1:  # the converter has the first telegram
                assert time.monotonic() < deadline, "no telegram came"
                time.sleep(0.001)
            return open_serial(url, timeout)

        options = fast_options(state_dir, pty.path, opener=slow_opener)
        async with running(options) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 3, what="telegrams on the pty")
        assert pty.raw_telegrams()[0] == gateway.sent[0]
