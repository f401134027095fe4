"""``x1p1 demo``: the whole chain on one machine, no hardware, nothing beyond loopback.

1. The embedded gateway starts on 127.0.0.1 (a free port, real TLS 1.3, mDNS off) with
   auto-approve, so its meter "presses the button" for every request (X1 §5.1.5).
2. The converter pairs with it exactly as ``x1p1 pair`` does (a P1-profile token,
   verified against the gateway's own root CA), into a throwaway state directory.
3. The converter runs as ``x1p1 run`` does, into the slave end of a pty pair: the
   serial line of a real installation.
4. The master end is read as a P1 dongle reads the meter: every telegram is framed and
   CRC-checked by the P1 core, and shown with a live status line (relayed, invalid,
   latency from WebSocket message to bytes handed to the port).

Ctrl-C (or SIGTERM) stops the converter, then the gateway, closes the pty and removes the
temporary directory: nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from x1p1.converter import pairing
from x1p1.converter.config import GatewayAddress
from x1p1.converter.supervisor import Converter, ConverterOptions, percentiles
from x1p1.exceptions import TelegramParseError
from x1p1.gateway.app import Gateway, GatewayConfig
from x1p1.p1 import InvalidTelegram, Telegram, TelegramReader, ValidTelegram


@dataclass
class DemoResult:
    """What the P1 end of the demo saw."""

    valid: int = 0
    invalid: int = 0
    exit_code: int = 0


class _Screen:
    """Telegram lines scrolling above one status line (redrawn in place on a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self._status = ""

    def line(self, text: str) -> None:
        if self.live:
            self.out.write("\r\x1b[2K" + text + "\n" + self._status)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def status(self, text: str, *, every: bool) -> None:
        self._status = text
        if self.live:
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()
        elif every:
            self.line(text)

    def close(self) -> None:
        if self.live and self._status:
            self.out.write("\n")
            self.out.flush()


def _summary(raw: bytes) -> str:
    """One line of a telegram's headline values."""
    try:
        values = Telegram.parse(raw).as_dict()
    except TelegramParseError as exc:
        return f"(does not parse: {exc})"

    def num(code: str, width: int = 6) -> str:
        text = values.get(code, "").split("*")[0]
        try:
            return f"{float(text):{width}.3f}"
        except ValueError:
            return "?".rjust(width)

    gas = values.get("0-1:24.2.1", "")
    gas_value = gas.rsplit("(", 1)[-1].rstrip(")").split("*")[0] if gas else ""
    try:
        gas_text = f"{float(gas_value):.3f}"
    except ValueError:
        gas_text = "?"
    volts = "/".join(values.get(f"1-0:{c}.7.0", "?").split("*")[0] for c in (32, 52, 72))
    return (
        f"import {num('1-0:1.7.0')} kW  export {num('1-0:2.7.0')} kW  "
        f"tariff {values.get('0-0:96.14.0', '?')[-1:]}  {volts} V  gas {gas_text} m3"
    )


async def run_demo(
    out: TextIO,
    *,
    telegrams: int | None = None,
    speed: float = 1.0,
    workdir: Path | None = None,
) -> DemoResult:
    """Run the chain until Ctrl-C/SIGTERM, or until ``telegrams`` arrived at the P1 end."""
    result = DemoResult()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    screen = _Screen(out)
    with tempfile.TemporaryDirectory(prefix="x1p1-demo-", dir=workdir) as tmp:
        root = Path(tmp)
        gateway = Gateway(
            GatewayConfig(
                state_dir=root / "gateway",
                host="127.0.0.1",
                port=0,
                mdns=False,
                auto_approve=True,
                speed=speed,
            )
        )
        await gateway.start()
        master, slave = os.openpty()
        converter: Converter | None = None
        task: asyncio.Task[int] | None = None
        try:
            screen.line(f"Embedded DSMR6 gateway on {gateway.url} (auto-approve, mDNS off)")
            screen.line(
                f"Customer portal: {gateway.url}/  (approve a login with: x1p1 meter approve "
                f"--state-dir {root / 'gateway'})"
            )
            endpoint = pairing.GatewayEndpoint("127.0.0.1", gateway.port, ("127.0.0.1",))
            saved = await asyncio.to_thread(
                pairing.pair,
                root / "converter",
                endpoint,
                ca_file=gateway.ca_path,
                name="x1p1 demo",
            )
            screen.line(
                f"Paired: a P1 token, valid until {saved.expires_at:%Y-%m-%d}"
                if saved.expires_at
                else "Paired: a P1 token"
            )
            tty.setraw(master)
            tty.setraw(slave)
            path = os.ttyname(slave)
            screen.line(f"Converter writing 115200 8N1 to {path}; reading the other end:\n")
            converter = Converter(
                ConverterOptions(
                    state_dir=root / "converter",
                    gateway=GatewayAddress("127.0.0.1", gateway.port),
                    serial=path,
                )
            )
            task = asyncio.create_task(converter.run())
            await _read_p1(master, converter, screen, result, stop, telegrams)
        finally:
            screen.close()
            if converter is not None and task is not None:
                converter.stop()
                with contextlib.suppress(Exception):
                    result.exit_code = await asyncio.wait_for(task, 10)
            await gateway.stop()
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            for sig in handled:
                loop.remove_signal_handler(sig)
    out.write(
        f"x1p1 demo: {result.valid} valid telegrams, {result.invalid} invalid; everything stopped\n"
    )
    out.flush()
    return result


async def _read_p1(
    master: int,
    converter: Converter,
    screen: _Screen,
    result: DemoResult,
    stop: asyncio.Event,
    limit: int | None,
) -> None:
    """Read the pty's master end as a P1 dongle would, until ``stop`` or ``limit``."""
    loop = asyncio.get_running_loop()
    reader = TelegramReader()
    done = asyncio.Event()
    started = time.monotonic()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if data:
            reader.receive_data(data)
        for event in reader.events_received():
            if isinstance(event, ValidTelegram):
                result.valid += 1
                stamp = time.strftime("%H:%M:%S")
                screen.line(
                    f"{stamp}  {len(event.raw):4d} B  CRC {event.crc} ok  " + _summary(event.raw)
                )
            elif isinstance(event, InvalidTelegram):
                result.invalid += 1
                screen.line(f"INVALID telegram: {event.message}")
            else:
                continue
            _status(converter, screen, result, started)
            if limit is not None and result.valid + result.invalid >= limit:
                done.set()

    loop.add_reader(master, readable)
    try:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(done.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        loop.remove_reader(master)


def _status(converter: Converter, screen: _Screen, result: DemoResult, started: float) -> None:
    serial = converter.serial
    latency = percentiles(tuple(serial.stats.latencies)) if serial else {}
    lat = (
        f"latency p50 {latency['p50']:.2f} ms p99 {latency['p99']:.2f} ms"
        if latency
        else "latency -"
    )
    text = (
        f"[{converter.stream.state.value}] relayed {converter.relayed}, "
        f"invalid at the gateway side {converter.dropped_invalid}, "
        f"at the P1 end {result.invalid}; {lat}; up {time.monotonic() - started:.0f} s; "
        "Ctrl-C stops"
    )
    screen.status(text, every=result.valid % 10 == 0)
