"""One test per fault the converter must ride out.

Each runs the whole converter (real TLS, websockets, a pty or a fake port through
pyserial) against the test gateway, with the real schedule scaled 100 times faster.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial_doubles
from converter_support import fast_options, running, save_test_pairing
from p1_pty import PtyPeer, link, until
from x1_test_gateway import SERIAL, TestGateway, running_gateway

from x1p1.converter.state import SavedPairing
from x1p1.p1 import TelegramReader, ValidTelegram, dsmr5
from x1p1.x1.connection import Conn, Ev


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(tmp_path / "gateway", period=0.02) as gw:
        yield gw


def paired(gateway: TestGateway, state_dir: Path, **kwargs: object) -> SavedPairing:
    return save_test_pairing(
        state_dir,
        token=gateway.issue_token(),
        port=gateway.port,
        ca_pem=gateway.ca_file.read_text(),
        serial=SERIAL,
        **kwargs,  # type: ignore[arg-type]
    )


def assert_all_valid(pty: PtyPeer, gateway: TestGateway) -> list[bytes]:
    """Everything on the pty is whole telegrams the gateway sent, valid for dsmr_parser."""
    received = pty.raw_telegrams()
    assert b"".join(received) == bytes(pty.data), "bytes outside whole telegrams"
    positions = [gateway.sent.index(raw) for raw in received]
    assert positions == sorted(set(positions)), "out of order or written twice"
    assert len(pty.parsed()) == len(received)
    return received


async def test_socket_dropped_mid_telegram(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 5, what="first telegrams")
        await gateway.drop(half_telegram=True)
        before = len(pty.raw_telegrams())
        await until(lambda: converter.stream.machine.reconnects >= 1, what="a reconnect")
        await until(lambda: len(pty.raw_telegrams()) >= before + 5, what="telegrams again")
    assert gateway.connections == 2
    assert_all_valid(pty, gateway)
    assert converter.dropped_invalid == 0  # the half telegram was never a telegram


async def test_gateway_restarted(gateway: TestGateway, pty: PtyPeer, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 5, what="first telegrams")
        await gateway.restart(downtime=0.5)  # refused connections meanwhile
        before = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= before + 5, what="telegrams again")
        assert converter.stream.state is Conn.CONNECTED
        history = [event for _, event, _ in converter.stream.machine.history]
    assert Ev.FAILED in history
    assert_all_valid(pty, gateway)


async def test_gateway_stalls(gateway: TestGateway, pty: PtyPeer, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    options = fast_options(state_dir, pty.path)
    options.stream.stall_timeout = 0.5
    async with running(options) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 5, what="first telegrams")
        gateway.stalled = True
        await until(lambda: converter.stream.machine.reconnects >= 1, what="a reconnect")
        gateway.stalled = False
        before = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= before + 5, what="telegrams again")
    assert "stopped sending" in converter.stream._last_failure
    assert_all_valid(pty, gateway)


async def test_token_revoked_waits_for_a_new_pairing(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 5, what="first telegrams")
        gateway.revoke_all()  # closes with 4401
        await until(lambda: converter.stream.state is Conn.NEEDS_PAIRING, what="needs-pairing")
        connections = gateway.connections
        count = len(pty.raw_telegrams())
        # A while later: no retry loop, nothing relayed.
        for _ in range(20):
            await asyncio.sleep(0.05)
        assert gateway.connections == connections
        assert gateway.handshakes_refused == 0
        assert len(pty.raw_telegrams()) == count
        status = converter.status()
        assert status.connection == "needs-pairing"
        # `x1p1 pair` saves a new token: picked up without a restart.
        paired(gateway, state_dir)
        await until(lambda: converter.stream.state is Conn.CONNECTED, what="connected again")
        await until(lambda: len(pty.raw_telegrams()) >= count + 5, what="telegrams again")
    assert_all_valid(pty, gateway)


async def test_refused_token_at_handshake(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    save_test_pairing(
        state_dir, token="x" * 43, port=gateway.port, ca_pem=gateway.ca_file.read_text()
    )
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: converter.stream.state is Conn.NEEDS_PAIRING, what="needs-pairing")
        for _ in range(10):
            await asyncio.sleep(0.05)
        assert gateway.handshakes_refused == 1  # asked once, not in a loop


async def test_x1_disabled_retries_every_60s(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 5, what="first telegrams")
        gateway.disable()  # 4503 now, 503 to every handshake
        await until(lambda: converter.stream.state is Conn.X1_DISABLED, what="x1-disabled")
        machine = converter.stream.machine
        assert machine.wake_at is not None
        assert machine.wake_at - machine.since == pytest.approx(60 * 0.01)
        await until(lambda: gateway.handshakes_refused >= 2, what="two retries")
        # Only the 60 s cycle since: x1-disabled -> connecting -> x1-disabled, no backoff.
        history = machine.history[[h[2] for h in machine.history].index(Conn.X1_DISABLED) :]
        assert {new for _, _, new in history} <= {Conn.X1_DISABLED, Conn.CONNECTING}
        gateway.enable()
        before = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= before + 5, what="telegrams again")
    assert_all_valid(pty, gateway)


async def test_wrong_ca_stops_without_retrying(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    from x1p1.gateway.pki import GatewayPKI

    other = GatewayPKI.load_or_create(tmp_path / "other-pki")
    state_dir = tmp_path / "state"
    save_test_pairing(
        state_dir,
        token=gateway.issue_token(),
        port=gateway.port,
        ca_pem=other.root_pem.decode(),
    )
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(
            lambda: converter.stream.state is Conn.CERTIFICATE_ERROR, what="certificate-error"
        )
        for _ in range(20):
            await asyncio.sleep(0.05)
        attempts = [h for h in converter.stream.machine.history if h[2] is Conn.CONNECTING]
        assert len(attempts) == 1
        assert "did not verify against the CA" in converter.stream.message
        assert gateway.connections == 0 and not pty.data


async def test_host_name_mismatch_stops_without_retrying(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    paired(gateway, state_dir, host_name="not-the-gateway.local")
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(
            lambda: converter.stream.state is Conn.CERTIFICATE_ERROR, what="certificate-error"
        )
        for _ in range(10):
            await asyncio.sleep(0.05)
        attempts = [h for h in converter.stream.machine.history if h[2] is Conn.CONNECTING]
        assert len(attempts) == 1
        assert "not valid for not-the-gateway.local" in converter.stream.message


async def test_pty_closed_and_reopened(gateway: TestGateway, tmp_path: Path) -> None:
    """The USB adapter pulled and plugged back: its udev name points at the new device."""
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    name = tmp_path / "x1p1-p1"
    first = PtyPeer().attach()
    link(name, first.path)
    second: PtyPeer | None = None
    try:
        async with running(fast_options(state_dir, str(name))) as converter:
            await until(lambda: len(first.raw_telegrams()) >= 5, what="first telegrams")
            first.close()
            name.unlink()
            serial = converter.serial
            assert serial is not None
            await until(lambda: serial.state.value == "absent", what="port absent")
            relayed = converter.relayed
            await until(lambda: converter.relayed >= relayed + 10, what="X1 still up")
            second = PtyPeer().attach()
            link(name, second.path)
            await until(lambda: len(second.raw_telegrams()) >= 5, what="telegrams again")
            assert serial.state.value == "open"
            assert gateway.connections == 1  # the X1 side never went down
        assert_all_valid(second, gateway)
    finally:
        first.close()
        if second is not None:
            second.close()


async def test_slow_port_latest_wins(gateway: TestGateway, tmp_path: Path) -> None:
    """A port that takes 0.2 s per write while telegrams come every 20 ms: no queue."""
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    line = serial_doubles.register(f"slow-{os.getpid()}")
    line.write_delay = 0.2
    async with running(fast_options(state_dir, line.url)) as converter:
        await until(lambda: len(line.writes) >= 6, what="six writes")
        serial = converter.serial
        assert serial is not None
        stats = serial.stats
        relayed = converter.relayed
    # Every write is one whole, valid telegram, newer than the one before it.
    indexes = []
    for chunk in line.writes:
        events = TelegramReader().feed(chunk)
        assert len(events) == 1 and isinstance(events[0], ValidTelegram)
        indexes.append(gateway.sent.index(chunk))
    assert indexes == sorted(set(indexes))
    # Most telegrams were replaced before the port took them: latest wins, no backlog.
    assert stats.stale > stats.written
    assert stats.written + stats.stale <= relayed <= stats.written + stats.stale + 2
    assert max(b - a for a, b in zip(indexes, indexes[1:], strict=False)) > 1


async def test_invalid_telegrams_from_the_gateway_are_never_written(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    good = list(dsmr5.sample_stream(3, seed=7))
    bad_crc = good[0][:-6] + b"0000\r\n"
    no_crc = good[1][:-6] + b"\r\n"
    cut = good[2][: len(good[2]) // 2]
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="first telegrams")
        gateway.inject(bad_crc, b"noise without a slash\r\n", no_crc, cut, good[2])
        await until(lambda: converter.dropped_invalid >= 3, what="three invalid dropped")
        await until(lambda: good[2] in pty.raw_telegrams(), what="the good one after them")
    received = assert_all_valid(pty, gateway)
    for bad in (bad_crc, no_crc):
        assert bad not in bytes(pty.data)
    # The cut one is the head of good[2]: it shows up once, inside the whole telegram.
    assert received.count(good[2]) == 1
    assert bytes(pty.data).count(cut) == 1


async def test_rediscovers_a_gateway_that_moved(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    """After repeated failures the converter asks mDNS for its gateway's serial."""
    state_dir = tmp_path / "state"
    paired(gateway, state_dir, address="127.0.0.1")
    real_port = gateway.port
    looked: list[str | None] = []

    async def lookup(pairing: SavedPairing) -> SavedPairing | None:
        looked.append(pairing.serial)
        return pairing.with_gateway(port=real_port, address="127.0.0.1")

    # The saved pairing points at a port where nothing listens (the gateway "moved").
    from x1p1.converter.state import load_pairing, save_pairing

    save_pairing(state_dir, load_pairing(state_dir).with_gateway(port=1))
    options = fast_options(state_dir, pty.path, rediscover=lookup)
    async with running(options) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="telegrams after discovery")
        states = [new for _, _, new in converter.stream.machine.history]
    assert looked == [SERIAL]
    assert states.count(Conn.BACKOFF) == 2 and Conn.DISCOVERING in states
    assert load_pairing(state_dir).port == real_port  # remembered for next time


async def test_reader_pauses_and_the_pty_fills(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    """The reader stops reading for a second: the pty's buffer fills, the kernel takes
    telegrams only in part; the rest follows once it reads again, never cut."""
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 5, what="first telegrams")
        pty.detach()
        await asyncio.sleep(1.0)  # 50 telegrams a second: well over the pty's buffer
        pty.attach()
        count = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= count + 60, what="reading again")
        serial = converter.serial
        assert serial is not None and serial.stats.resets == 0
    assert_all_valid(pty, gateway)


async def test_reader_stops_longer_than_the_write_timeout(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    """A port stuck past ``stuck_after``: output flushed, port reset, writing resumes;
    at most the one telegram cut by the reset is incomplete, and a reader drops it."""
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    async with running(fast_options(state_dir, pty.path)) as converter:
        serial = converter.serial
        assert serial is not None
        serial.stuck_after = 0.5
        await until(lambda: len(pty.raw_telegrams()) >= 5, what="first telegrams")
        pty.detach()
        await until(lambda: serial.stats.resets >= 1, what="a reset")
        pty.attach()
        count = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= count + 20, what="writing again")
    from x1p1.p1 import InvalidTelegram

    events = TelegramReader(max_size=1 << 20).feed(bytes(pty.data))
    invalid = [e for e in events if isinstance(e, InvalidTelegram)]
    assert len(invalid) <= 1
    valid = [e.raw for e in events if isinstance(e, ValidTelegram)]
    positions = [gateway.sent.index(raw) for raw in valid]
    assert positions == sorted(set(positions))


async def test_stop_and_new_token_cut_a_hanging_handshake_short(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    """A gateway address that accepts TCP but never answers TLS: the attempt would hang
    for open_timeout (60 s here); a new token, and stopping, end it at once."""
    import socket

    from x1p1.converter.supervisor import Converter

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # never accepted: the kernel completes TCP, nobody speaks TLS
    state_dir = tmp_path / "state"
    paired(gateway, state_dir)
    from x1p1.converter.state import load_pairing, save_pairing

    save_pairing(state_dir, load_pairing(state_dir).with_gateway(port=silent.getsockname()[1]))
    options = fast_options(state_dir, pty.path)
    options.stream.open_timeout = 60.0
    converter = Converter(options)
    task = asyncio.create_task(converter.run())
    try:
        await until(lambda: converter.stream.state is Conn.CONNECTING, what="connecting")
        await asyncio.sleep(0.2)
        paired(gateway, state_dir)  # `x1p1 pair` again: the right port
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="telegrams with the new token")
        save_pairing(state_dir, load_pairing(state_dir).with_gateway(port=silent.getsockname()[1]))
        await until(lambda: converter.stream.state is Conn.CONNECTING, what="hanging again")
        await asyncio.sleep(0.2)
        converter.stop()
        await until(task.done, what="stopped while connecting")
        assert task.result() == 0
    finally:
        silent.close()
        if not task.done():
            task.cancel()


async def test_starts_unpaired_and_waits_for_pair(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: converter.stream.state is Conn.NEEDS_PAIRING, what="needs-pairing")
        assert "not paired" in converter.stream.message
        paired(gateway, state_dir)
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="telegrams once paired")
    assert_all_valid(pty, gateway)


async def test_unpair_while_running_stops_relaying(
    gateway: TestGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from x1p1.cli import main

    state_dir = tmp_path / "state"
    pairing = paired(gateway, state_dir)
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="telegrams")
        result = await asyncio.to_thread(
            CliRunner().invoke, main, ["unpair", "--state-dir", str(state_dir)]
        )
        assert result.exit_code == 0 and "revoked the token" in result.output
        await until(lambda: converter.stream.state is Conn.NEEDS_PAIRING, what="needs-pairing")
        count = len(pty.raw_telegrams())
        for _ in range(10):
            await asyncio.sleep(0.05)
        assert len(pty.raw_telegrams()) == count
    assert pairing.token not in gateway.tokens
