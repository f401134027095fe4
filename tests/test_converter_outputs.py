"""The converter's outputs: Data Request gating (P1 §5.7.1) and the TCP server.

Data Request goes through pyserial's ``serial_for_url`` with the ``fakeport://`` handler
of ``tests/serial_doubles`` (a pty carries no CTS/DSR and no test machine has an RS-232
adapter); the TCP output is read by dsmr_parser's own ``SocketReader``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import serial_doubles
from converter_support import fast_options, running
from dsmr_parser import telegram_specifications
from dsmr_parser.clients.socket_ import SocketReader
from p1_pty import until
from x1_test_gateway import TestGateway, running_gateway

from x1p1.converter.config import ListenAddress, OutputConfig
from x1p1.p1 import TelegramReader, ValidTelegram


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with running_gateway(tmp_path / "gateway", period=0.02) as gw:
        yield gw


def pair(gateway: TestGateway, state_dir: Path) -> None:
    gateway.save_pairing(state_dir)


def whole_telegrams(writes: list[bytes]) -> None:
    for chunk in writes:
        events = TelegramReader().feed(chunk)
        assert len(events) == 1 and isinstance(events[0], ValidTelegram)


@pytest.mark.parametrize("line_name", ["cts", "dsr"])
async def test_data_request_gates_the_output(
    gateway: TestGateway, tmp_path: Path, line_name: str
) -> None:
    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    line = serial_doubles.register(f"dr-{line_name}-{os.getpid()}")
    options = fast_options(state_dir, line.url, data_request=line_name)
    async with running(options) as converter:
        serial = converter.serial
        assert serial is not None
        # Not asserted: telegrams arrive, none is sent.
        await until(lambda: converter.relayed >= 20, what="telegrams relayed")
        await until(lambda: serial.dr_state.value == "not-asserted", what="DR seen low")
        assert line.writes == []
        assert serial.stats.not_requested > 0
        # Raised: the newest telegram goes out at once, then every one.
        setattr(line, line_name, True)
        await until(lambda: len(line.writes) >= 10, what="ten writes")
        assert serial.dr_state.value == "asserted"
        # Dropped: sending stops (at most the one already on its way completes).
        setattr(line, line_name, False)
        await until(lambda: serial.dr_state.value == "not-asserted", what="DR seen dropped")
        stopped_at = len(line.writes)
        relayed = converter.relayed
        await until(lambda: converter.relayed >= relayed + 20, what="more telegrams")
        assert len(line.writes) <= stopped_at + 1
        status = converter.status()
        assert status.data_request == {"mode": line_name, "state": "not-asserted"}
    whole_telegrams(line.writes)
    indexes = [gateway.sent.index(chunk) for chunk in line.writes]
    assert indexes == sorted(set(indexes))


async def test_the_other_line_does_not_gate(gateway: TestGateway, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    line = serial_doubles.register(f"dr-other-{os.getpid()}")
    line.dsr = True  # DSR asserted, but the converter watches CTS
    async with running(fast_options(state_dir, line.url, data_request="cts")) as converter:
        await until(lambda: converter.relayed >= 20, what="telegrams relayed")
        assert line.writes == []


async def test_ignore_sends_regardless_of_the_lines(gateway: TestGateway, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    line = serial_doubles.register(f"dr-ignore-{os.getpid()}")
    async with running(fast_options(state_dir, line.url)) as converter:
        await until(lambda: len(line.writes) >= 5, what="writes")
        assert converter.serial is not None
        assert converter.serial.dr_state.value == "ignored"
    whole_telegrams(line.writes)


async def test_adapter_pulled_and_plugged_back(gateway: TestGateway, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    line = serial_doubles.register(f"usb-{os.getpid()}")
    async with running(fast_options(state_dir, line.url)) as converter:
        await until(lambda: len(line.writes) >= 5, what="writes")
        line.present = False  # EIO on the next write, ENOENT on open
        serial = converter.serial
        assert serial is not None
        await until(lambda: serial.state.value == "absent", what="absent")
        assert "went away" in serial.error or "no such device" in serial.error
        count = len(line.writes)
        relayed = converter.relayed
        await until(lambda: converter.relayed >= relayed + 10, what="X1 side still up")
        assert len(line.writes) == count
        line.present = True
        await until(lambda: len(line.writes) >= count + 5, what="writes again")
        assert line.opens == 2
        assert gateway.connections == 1
    whole_telegrams(line.writes)


async def test_tcp_output_read_by_dsmr_parser(
    gateway: TestGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    options = fast_options(state_dir, None, tcp=ListenAddress("127.0.0.1", 0))
    caplog.set_level(logging.INFO, logger="dsmr_parser")
    async with running(options) as converter:
        await until(lambda: converter.tcp is not None and converter.tcp.port != 0, what="tcp")
        assert converter.tcp is not None
        port = converter.tcp.port

        def read(count: int) -> list[object]:
            reader = SocketReader("127.0.0.1", port, telegram_specifications.V5)
            out = []
            for telegram in reader.read():
                out.append(telegram)
                if len(out) == count:
                    break
            return out

        # Two readers at once; a third client that never reads must not hold them up.
        import socket

        idle = socket.create_connection(("127.0.0.1", port))
        idle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            first, second = await asyncio.gather(
                asyncio.to_thread(read, 30), asyncio.to_thread(read, 30)
            )
        finally:
            idle.close()
        status = converter.status()
    assert len(first) == 30 and len(second) == 30
    assert not [r for r in caplog.records if r.name.startswith("dsmr_parser")], "bad telegrams"
    assert status.tcp is not None and status.tcp["listen"].startswith("127.0.0.1:")


async def test_slow_tcp_client_drops_for_itself_only(gateway: TestGateway, tmp_path: Path) -> None:
    import socket

    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    options = fast_options(state_dir, None, tcp=ListenAddress("127.0.0.1", 0))
    async with running(options) as converter:
        tcp = converter.tcp
        assert tcp is not None
        await until(lambda: tcp.port != 0, what="the TCP server")
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        stuck.connect(("127.0.0.1", tcp.port))
        reader_sock = socket.create_connection(("127.0.0.1", tcp.port))
        reader_sock.setblocking(False)
        got = bytearray()

        def drain() -> int:
            try:
                while chunk := reader_sock.recv(65536):
                    got.extend(chunk)
            except BlockingIOError:
                pass
            return len(TelegramReader().feed(bytes(got)))

        try:
            await until(lambda: tcp.dropped > 0, what="drops for the stuck client")
            await until(lambda: drain() >= 100, what="100 telegrams to the reading client")
        finally:
            stuck.close()
            reader_sock.close()
    events = TelegramReader().feed(bytes(got))
    assert all(isinstance(e, ValidTelegram) for e in events)


# --- the TCP output survives its clients (docs/x1-api.md, "What the converter tolerates") ---


HOLD_CONNECTIONS = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    try:
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5))
    except OSError:
        pass
print(len(held), flush=True)
sys.stdin.read()
"""


async def _hold(port: int, count: int) -> asyncio.subprocess.Process:
    """Another process (its own descriptors) that opens ``count`` idle connections."""
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD_CONNECTIONS,
        str(port),
        str(count),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 60)
    return process


async def _release(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.close()
    await process.wait()


async def test_clients_past_the_cap_are_refused_at_once(
    gateway: TestGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from p1_pty import PtyPeer

    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    pty = PtyPeer().attach()
    options = fast_options(state_dir, pty.path, tcp=ListenAddress("127.0.0.1", 0), tcp_clients=3)
    caplog.set_level(logging.DEBUG, logger="x1p1")
    try:
        async with running(options) as converter:
            tcp = converter.tcp
            assert tcp is not None
            await until(lambda: tcp.port != 0 and len(pty.raw_telegrams()) >= 3, what="start")
            holder = await _hold(tcp.port, 60)
            try:
                await until(lambda: tcp.refused >= 57, what="57 refused")
                assert tcp.clients == 3
                before = len(pty.raw_telegrams())
                await until(lambda: len(pty.raw_telegrams()) >= before + 20, what="serial")
                assert converter.status().counts["tcp_refused"] == tcp.refused
            finally:
                await _release(holder)
            assert converter.stream.machine.reconnects == 0
    finally:
        pty.close()
    chatty = [
        r
        for r in caplog.records
        if r.name == "x1p1.converter.tcp_out" and r.levelno >= logging.INFO
        if "client" in r.getMessage()
    ]
    assert chatty == [], [r.getMessage() for r in chatty]  # connects are debug lines


async def test_the_hourly_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from x1p1.converter.tcp_out import SUMMARY_EVERY, TcpOutput

    now = [0.0]
    output = TcpOutput(ListenAddress("127.0.0.1", 0), max_clients=1, clock=lambda: now[0])
    await output.start()
    try:
        import socket

        sockets = [socket.create_connection(("127.0.0.1", output.port)) for _ in range(3)]
        await until(lambda: output.connects == 1 and output.refused == 2, what="accepts")
        caplog.set_level(logging.INFO, logger="x1p1.converter.tcp_out")

        def summaries() -> list[str]:
            return [r.getMessage() for r in caplog.records if "last hour" in r.getMessage()]

        output.summarise(SUMMARY_EVERY - 1)
        assert summaries() == []
        output.summarise(SUMMARY_EVERY)
        [summary] = summaries()
        assert "1 connected, 2 refused (over 1 at once); 1 connected now" in summary
        output.summarise(2 * SUMMARY_EVERY)  # a quiet hour says nothing
        assert len(summaries()) == 1
        for sock in sockets:
            sock.close()
    finally:
        await output.close()


async def test_idle_clients_are_one_warning_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Many clients that read nothing are disconnected each, with one warning for all
    (one cause, x1p1/converter/quiet.py), and one more a minute later at most."""
    import socket

    from x1p1.converter.tcp_out import TcpOutput

    now = [0.0]
    output = TcpOutput(ListenAddress("127.0.0.1", 0), idle_drop=60.0, clock=lambda: now[0])
    await output.start()
    sockets = []
    try:
        for _ in range(5):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            sock.connect(("127.0.0.1", output.port))
            sockets.append(sock)
        await until(lambda: output.clients == 5, what="five clients")
        caplog.set_level(logging.WARNING, logger="x1p1.converter.tcp_out")
        big = b"x" * 400_000  # more than the kernel's buffers: each transport holds some
        output.publish(big)
        output.publish(big)  # now each is blocked, since t=0
        now[0] = 61.0
        output.publish(big)  # all five idle for over a minute: disconnected
        await until(lambda: output.clients == 0, what="idle clients dropped")
        warnings = [r.getMessage() for r in caplog.records if "took nothing" in r.getMessage()]
        assert len(warnings) == 1, warnings
    finally:
        for sock in sockets:
            sock.close()
        await output.close()


async def test_running_out_of_descriptors_stops_neither_line(
    gateway: TestGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a cap above what the process may open, accept() fails (EMFILE): the serial
    line and the X1 connection carry on, and the cause is logged once, without a
    traceback."""
    import resource

    from p1_pty import PtyPeer

    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    pty = PtyPeer().attach()
    options = fast_options(state_dir, pty.path, tcp=ListenAddress("127.0.0.1", 0), tcp_clients=1024)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    caplog.set_level(logging.WARNING)
    try:
        async with running(options) as converter:
            tcp = converter.tcp
            assert tcp is not None
            await until(lambda: tcp.port != 0 and len(pty.raw_telegrams()) >= 3, what="start")
            in_use = len(os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 20, hard))
            try:
                holder = await _hold(tcp.port, 200)
                try:
                    before = len(pty.raw_telegrams())
                    await until(lambda: len(pty.raw_telegrams()) >= before + 50, what="serial")
                    assert converter.stream.machine.reconnects == 0
                    assert converter.stream.state.value == "connected"
                finally:
                    await _release(holder)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        pty.close()
    out_of = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(out_of) == 1 and out_of[0].exc_info is None


async def test_every_tcp_output_gets_its_hourly_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket
    import time

    from x1p1.converter.outputs import Outputs
    from x1p1.converter.tcp_out import SUMMARY_EVERY

    outputs = Outputs(
        [OutputConfig(tcp=ListenAddress("127.0.0.1", 0)) for _ in range(2)], tcp_clients=4
    )
    await outputs.start()
    try:
        first, second = outputs.tcps
        sockets = [socket.create_connection(("127.0.0.1", tcp.port)) for tcp in (first, second)]
        await until(lambda: first.connects == 1 and second.connects == 1, what="accepts")
        caplog.set_level(logging.INFO, logger="x1p1.converter.tcp_out")
        outputs.summarise(time.monotonic() + SUMMARY_EVERY + 1.0)
        summaries = [r.getMessage() for r in caplog.records if "last hour" in r.getMessage()]
        assert len(summaries) == 2, summaries
        assert all("1 connected, 0 refused" in summary for summary in summaries)
        for sock in sockets:
            sock.close()
    finally:
        await outputs.close()


async def test_a_gateway_restart_while_tcp_clients_hold_the_descriptors(
    gateway: TestGateway, tmp_path: Path
) -> None:
    """``x1p1 run`` under a low descriptor limit (systemd's LimitNOFILE) with
    ``tcp_clients`` far above it: the TCP clients are capped below the limit, so while a
    host holds as many connections as it can, a gateway restart (the X1 reconnect) finds
    the descriptors it needs, and the P1 line carries on."""
    import functools
    import re
    import resource
    import sys

    from p1_pty import PtyPeer

    limit = 128

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    state_dir = tmp_path / "state"
    pair(gateway, state_dir)
    config = tmp_path / "config.toml"
    config.write_text("tcp_clients = 1024\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY", "NOTIFY_SOCKET")}
    env["X1P1_CONFIG"] = str(config)
    pty = PtyPeer().attach()
    run = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "x1p1.cli",
        "run",
        "--serial",
        pty.path,
        "--tcp",
        "127.0.0.1:0",
        "--state-dir",
        str(state_dir),
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=functools.partial(low_limit),
    )
    lines: list[str] = []

    async def read_log() -> None:
        assert run.stderr is not None
        while line := await run.stderr.readline():
            lines.append(line.decode(errors="replace"))

    reader = asyncio.create_task(read_log())
    holder = None
    try:
        await until(lambda: any("serving P1 telegrams on TCP" in x for x in lines), 30, "tcp")
        port = int(re.findall(r"on TCP 127\.0\.0\.1:(\d+)", "".join(lines))[0])
        await until(lambda: len(pty.raw_telegrams()) >= 3, 30, "telegrams")
        holder = await _hold(port, 2 * limit)  # more than the process may open
        await gateway.restart(0.2)
        before = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= before + 20, 30, "telegrams again")
    finally:
        if holder is not None:
            await _release(holder)
        run.terminate()
        await run.wait()
        await reader
        pty.close()
    text = "".join(lines)
    assert run.returncode == 0, text
    assert "Traceback" not in text, text
    # asyncio accepts in bursts, so the refused connections of a flood may briefly run the
    # process out of descriptors; that costs no telegram and no X1 reconnect (above), and
    # its report is one line a minute at most (converter/quiet.py)
    assert text.count("out of system resource") <= 1, text
    [capped] = [x for x in lines if "descriptor limit" in x]
    assert f"descriptor limit ({limit}) leaves room for" in capped
    assert len(lines) < 20, text  # no storm
