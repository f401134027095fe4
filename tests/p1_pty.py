"""The P1 reader's end of a pty pair, for the converter's tests.

The converter writes into the pty's slave (its path is what ``--serial`` names); the test
reads the master, as a P1 dongle reads the meter's line, and checks every telegram with
dsmr_parser (the independent reader, p1.md) at DSMR 5 with CRC validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tty
from pathlib import Path
from typing import Self

from dsmr_parser import telegram_specifications
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.parsers import TelegramParser

_TELEGRAM = re.compile(rb"/[^/]*?![0-9A-Fa-f]{4}\r\n", re.DOTALL)


class PtyPeer:
    """A pty pair whose master the test reads on the event loop."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.data = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._read)
        return self

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.detach()
            return
        self.data += chunk
        self._received()

    def _received(self) -> None:
        """Called after each chunk was added to :attr:`data` (a subclass's hook)."""

    def detach(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.master)
            self._loop = None

    @property
    def attached(self) -> bool:
        return self._loop is not None

    def close(self) -> None:
        self.detach()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def raw_telegrams(self) -> list[bytes]:
        """Every ``/…!CRC CR LF`` in what arrived, by a plain byte regex."""
        return _TELEGRAM.findall(bytes(self.data))

    def parsed(self) -> list[object]:
        """dsmr_parser's view: frame with its TelegramBuffer, parse V5 with CRC check.

        Raises dsmr_parser's InvalidChecksumError/ParseError on any bad telegram.
        """
        buffer = TelegramBuffer()
        buffer.append(bytes(self.data).decode("ascii"))
        parser = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)
        return [parser.parse(text, throw_ex=True) for text in buffer.get_all()]


def link(path: Path, target: str) -> None:
    """Point the symlink ``path`` at ``target`` atomically (a udev name that moves)."""
    tmp = path.with_name(path.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)


async def until(predicate: object, limit: float = 20.0, what: str = "condition") -> None:
    """Wait for ``predicate()`` to hold, checking every 10 ms (never a timed assertion)."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)
