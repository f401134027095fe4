"""A TCP P1 reader that connects before the converter's first telegram gets every telegram.

A network reader (dsmr-reader, Home Assistant's DSMR integration) connects at boot, often
before ``x1p1 run`` has a telegram to give (p1.md, "What readers do with it"). The
converter opens its outputs before anything else (``Converter.run``), so the reader is
accepted and must then get every telegram from the first on
(x1p1/converter/tcp_out.py).

``x1p1 run`` runs as a subprocess and starts unpaired, so nothing can be relayed until a
pairing is saved: the readers connect, the daemon's own status confirms it counts them
and has relayed nothing, and only then is the pairing saved, as ``x1p1 pair`` would; the
converter picks it up from the token file. Each reader must then hold, byte for byte, the
telegrams the serial output (a pty) got, as many as the daemon says it relayed, for
legacy P1 (the tests' own gateway), for telegrams built from realtime values (the
embedded gateway, a token granted only E-REALTIME and G-REALTIME, ``--source
realtime``), and for ``[[output]]`` tables with two TCP outputs beside the pty.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway_fixture import running_gateway as embedded_gateway
from p1_pty import PtyPeer, until
from x1_test_gateway import running_gateway

from x1p1.p1 import TelegramReader, ValidTelegram

CLI = [sys.executable, "-m", "x1p1.cli"]
LISTENING = re.compile(rb"serving P1 telegrams on TCP 127\.0\.0\.1:(\d+)")
READERS_PER_PORT = 2
ENOUGH = 4
"""Telegrams every reader must have before the converter is stopped."""


class Reader:
    """A P1 reader on TCP: connects, reads everything until the converter closes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)

        async def read() -> None:
            while chunk := await reader.read(65536):
                self.data.extend(chunk)

        self._task = asyncio.create_task(read())

    def telegrams(self) -> list[bytes]:
        return [
            e.raw for e in TelegramReader().feed(bytes(self.data)) if isinstance(e, ValidTelegram)
        ]

    async def until_closed(self) -> None:
        assert self._task is not None and self._writer is not None
        await asyncio.wait_for(self._task, 20)
        self._writer.close()


async def status(state_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "status",
        "--json",
        "--state-dir",
        str(state_dir),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await process.communicate()
    report: dict[str, Any] = json.loads(out)
    return report


async def early_readers(
    tmp_path: Path,
    pty: PtyPeer,
    args: list[str],
    tcp_outputs: int,
    save_pairing: Callable[[Path], None],
) -> tuple[list[Reader], int]:
    """Run ``x1p1 run ARGS`` unpaired, connect the readers, pair; (readers, relayed)."""
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY", "NOTIFY_SOCKET")}
    run = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        "--state-dir",
        str(state_dir),
        *args,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert run.stderr is not None
    err = bytearray()
    ports: list[int] = []
    while len(ports) < tcp_outputs:
        line = await asyncio.wait_for(run.stderr.readline(), 30)
        assert line, f"x1p1 run ended: {bytes(err).decode()}"
        err.extend(line)
        if match := LISTENING.search(line):
            ports.append(int(match[1]))

    async def drain() -> None:
        assert run.stderr is not None
        while line := await run.stderr.readline():
            err.extend(line)

    drainer = asyncio.create_task(drain())
    readers = [Reader() for _ in range(READERS_PER_PORT * tcp_outputs)]
    try:
        for number, reader in enumerate(readers):
            await reader.connect(ports[number % tcp_outputs])
        for _ in range(300):
            report = await status(state_dir, env)
            tcp = [o for o in report.get("outputs", []) if o.get("kind") == "tcp"]
            if [o.get("clients") for o in tcp] == [READERS_PER_PORT] * tcp_outputs:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the daemon never counted the readers: {report}")
        assert report["counts"]["relayed"] == 0 and pty.raw_telegrams() == []
        assert all(reader.data == b"" for reader in readers)

        save_pairing(state_dir)
        await until(
            lambda: all(len(r.telegrams()) >= ENOUGH for r in readers),
            60,
            f"{ENOUGH} telegrams at every early reader",
        )
    finally:
        run.send_signal(signal.SIGTERM)
        await asyncio.wait_for(run.wait(), 30)
        await drainer
    assert run.returncode == 0, bytes(err).decode()
    for reader in readers:
        await reader.until_closed()  # the converter closes its clients when it stops
    relayed = (await status(state_dir, env))["counts"]["relayed"]
    await until(lambda: len(pty.raw_telegrams()) >= relayed, what="the pty to drain")
    return readers, relayed


def every_telegram(readers: list[Reader], pty: PtyPeer, relayed: int) -> None:
    on_the_line = pty.raw_telegrams()
    assert len(on_the_line) == relayed >= ENOUGH
    for reader in readers:
        assert reader.telegrams() == on_the_line
        assert bytes(reader.data) == b"".join(on_the_line)  # whole telegrams, nothing else


async def test_legacy_p1_early_readers_get_every_telegram(tmp_path: Path, pty: PtyPeer) -> None:
    async with running_gateway(tmp_path / "gateway", period=0.1) as gateway:

        def pair(state_dir: Path) -> None:
            gateway.save_pairing(state_dir)

        args = ["--serial", pty.path, "--tcp", "127.0.0.1:0", "--source", "legacy-p1"]
        readers, relayed = await early_readers(tmp_path, pty, args, 1, pair)
    every_telegram(readers, pty, relayed)


async def test_realtime_early_readers_get_every_telegram(tmp_path: Path, pty: PtyPeer) -> None:
    with embedded_gateway(tmp_path / "gw") as gw:
        profiles = ("E-REALTIME", "G-REALTIME")

        def pair(state_dir: Path) -> None:
            gw.save_pairing(state_dir, profiles)

        args = ["--serial", pty.path, "--tcp", "127.0.0.1:0", "--source", "realtime"]
        readers, relayed = await early_readers(tmp_path, pty, args, 1, pair)
    every_telegram(readers, pty, relayed)
    assert all(raw.startswith(b"/XPP5X1P1-REALTIME") for raw in pty.raw_telegrams())


async def test_two_tcp_outputs_early_readers_get_every_telegram(
    tmp_path: Path, pty: PtyPeer
) -> None:
    config = tmp_path / "x1p1.toml"
    config.write_text(
        f'[[output]]\nserial = "{pty.path}"\n\n'
        '[[output]]\ntcp = "127.0.0.1:0"\n\n'
        '[[output]]\ntcp = "127.0.0.1:0"\n'
    )
    async with running_gateway(tmp_path / "gateway", period=0.1) as gateway:

        def pair(state_dir: Path) -> None:
            gateway.save_pairing(state_dir)

        readers, relayed = await early_readers(tmp_path, pty, ["--config", str(config)], 2, pair)
    every_telegram(readers, pty, relayed)
