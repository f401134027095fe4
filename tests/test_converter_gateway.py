"""End to end with the embedded gateway: `x1p1 pair` approved on the meter, `x1p1 run`
writing into a pty, dsmr_parser reading the other end; and the faults the real gateway
produces itself (token revoked, X1 switched off, gateway killed and restarted).

The gateway's legacy-P1 stream sends one telegram a second, as a meter does, so these
tests take seconds; the converter's own waiting times are scaled down.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from click.testing import CliRunner, Result
from converter_support import fast_options, running
from gateway_fixture import RunningGateway, gateway, gateway_process
from p1_pty import PtyPeer, until
from test_converter_pairing import Meter, pair_args

from x1p1.cli import main
from x1p1.converter.state import load_pairing
from x1p1.x1.connection import Conn

__all__ = ["gateway"]

CLI = [sys.executable, "-m", "x1p1.cli"]


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def pair_in_thread(gw: RunningGateway, state_dir: Path) -> Result:
    """``x1p1 pair`` blocks: run it beside the event loop."""
    return await asyncio.to_thread(CliRunner().invoke, main, pair_args(gw, state_dir))


async def collect_direct(gw: RunningGateway, token: str, into: list[bytes]) -> None:
    """Subscribe beside the converter, to know what the gateway sent byte for byte."""
    async with gw.ws("/api/legacy-p1?interval=1", token=token) as ws:
        async for message in ws:
            into.append(message.encode() if isinstance(message, str) else message)


async def test_pair_on_the_meter_then_run_into_a_pty(tmp_path: Path, pty: PtyPeer) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY", "NOTIFY_SOCKET")}
    state_dir = tmp_path / "state"
    gw_dir = tmp_path / "gw"
    with gateway_process(gw_dir) as gw:
        # x1p1 pair, approved with `x1p1 meter approve` as the meter's button does.
        pair = await asyncio.create_subprocess_exec(
            *CLI, *pair_args(gw, state_dir), stdout=asyncio.subprocess.PIPE, env=env
        )
        for _ in range(500):
            code, _, _ = await cli("meter", "approve", "--state-dir", str(gw_dir), env=env)
            if code == 0:
                break
            await asyncio.sleep(0.05)
        assert code == 0, "no request showed on the meter"
        out, _ = await pair.communicate()
        assert pair.returncode == 0, out.decode()
        token = load_pairing(state_dir).token

        direct: list[bytes] = []
        watcher = asyncio.create_task(collect_direct(gw, token, direct))
        run = await asyncio.create_subprocess_exec(
            *CLI,
            "run",
            "--serial",
            pty.path,
            "--state-dir",
            str(state_dir),
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            await until(lambda: len(pty.raw_telegrams()) >= 3, 30, "three telegrams on the pty")
            code, out_text, _ = await cli("status", "--json", "--state-dir", str(state_dir))
            report = json.loads(out_text)
            assert code == 0, out_text
            assert report["running"] and report["connection"] == "connected"
            # asked of the daemon on its socket: as of now, not the minute-old file's
            assert report["counts"]["relayed"] >= 3
            assert report["serial"]["state"] == "open"
        finally:
            run.send_signal(signal.SIGTERM)
            _, err = await run.communicate()
            watcher.cancel()
        assert run.returncode == 0, err.decode()
        assert token not in err.decode()
        code, out_text, _ = await cli("status", "--json", "--state-dir", str(state_dir))
        assert code == 3 and json.loads(out_text)["running"] is False

    received = pty.raw_telegrams()
    assert b"".join(received) == bytes(pty.data)
    assert len(pty.parsed()) == len(received) >= 3  # dsmr_parser, CRCs checked
    assert all(raw in direct for raw in received)  # byte for byte what the gateway sent


async def test_token_revoked_on_the_gateway_then_paired_again(
    gateway: RunningGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    with Meter(gateway, "approve"):
        assert (await pair_in_thread(gateway, state_dir)).exit_code == 0
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 1, 30, "a telegram")
        for token in gateway.control.tokens():
            gateway.control.revoke(token["token_id"])
        await until(lambda: converter.stream.state is Conn.NEEDS_PAIRING, 30, "needs-pairing")
        count = len(pty.raw_telegrams())
        with Meter(gateway, "approve"):
            result = await pair_in_thread(gateway, state_dir)
        assert result.exit_code == 0, result.output
        await until(lambda: len(pty.raw_telegrams()) > count, 30, "telegrams again")
    assert len(pty.parsed()) == len(pty.raw_telegrams())


async def test_x1_switched_off_and_on(
    gateway: RunningGateway, pty: PtyPeer, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    with Meter(gateway, "approve"):
        assert (await pair_in_thread(gateway, state_dir)).exit_code == 0
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 1, 30, "a telegram")
        gateway.control.operator("disable")
        await until(lambda: converter.stream.state is Conn.X1_DISABLED, 30, "x1-disabled")
        count = len(pty.raw_telegrams())
        gateway.control.operator("enable")
        await until(lambda: len(pty.raw_telegrams()) > count, 30, "telegrams again")
    assert len(pty.parsed()) == len(pty.raw_telegrams())


async def test_gateway_killed_and_restarted(tmp_path: Path, pty: PtyPeer) -> None:
    state_dir = tmp_path / "state"
    gw_dir = tmp_path / "gw"
    with gateway_process(gw_dir, "--auto-approve") as gw:
        port = gw.port
        assert (await pair_in_thread(gw, state_dir)).exit_code == 0
        async with running(fast_options(state_dir, pty.path)) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 1, 30, "a telegram")
            assert gw.process is not None
            gw.process.kill()  # SIGKILL: no close frame, nothing
            gw.process.wait(10)
            await until(lambda: converter.stream.state is not Conn.CONNECTED, 30, "lost")
            with gateway_process(gw_dir, "--port", str(port)):
                count = len(pty.raw_telegrams())
                await until(lambda: len(pty.raw_telegrams()) > count, 30, "telegrams again")
            assert converter.stream.machine.reconnects >= 1
    assert len(pty.parsed()) == len(pty.raw_telegrams())
