"""``x1p1 status`` asks the running daemon: a Unix socket beside its status file.

The daemon publishes its status for ``x1p1 status``. A file rewritten
every few seconds costs the daemon a write (and, on an SD card, wear) every few seconds
whether anyone looks or not; at one telegram a second that was a fifth of its CPU. So
the daemon answers on request instead: ``status.sock`` lies beside ``status.json`` (in
``$RUNTIME_DIRECTORY`` under systemd, else in the state directory), mode 0600 like the
file. A client connects and reads one JSON object (:meth:`DaemonStatus.to_json`), as
fresh as the moment it asked, then the daemon closes the connection; nothing is read
from the client. ``status.json`` stays, for scripts and for after the daemon stopped: it
is written on every change of state and on the way out, its counters at most once a
minute (:data:`x1p1.converter.supervisor.STATUS_INTERVAL`).

This module moves JSON only; :mod:`x1p1.converter.state` knows what the object means
(:class:`~x1p1.converter.state.DaemonStatus`, its ``ask_status``), and imports this one,
never the other way round.

A path longer than a Unix socket address allows (107 bytes on Linux) is reached through
the directory's ``/proc/self/fd/N`` entry, so a deep state directory works too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

__all__ = ["SOCKET_NAME", "StatusServer", "ask_json", "socket_path"]

log = logging.getLogger(__name__)

SOCKET_NAME = "status.sock"
MAX_ANSWER = 64 * 1024
"""Bytes a client reads at most (an answer is about one kilobyte)."""
_SUN_PATH = 107


def socket_path(status_file: Path) -> Path:
    """The socket that belongs to a status file: beside it."""
    return status_file.with_name(SOCKET_NAME)


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """An address ``bind``/``connect`` take for ``path``, short enough for AF_UNIX."""
    if len(os.fsencode(path)) <= _SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class Jsonable(Protocol):
    """What the server sends: an object that gives its JSON form (a DaemonStatus)."""

    def to_json(self) -> dict[str, Any]: ...


class StatusServer:
    """Answers each connection with ``status()`` as JSON, then closes it."""

    def __init__(self, path: Path, status: Callable[[], Jsonable]) -> None:
        self.path = path
        self._status = status
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen (a stale socket of a dead daemon is replaced). Failing to is logged,
        not fatal: ``x1p1 status`` then reads the status file."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _address(self.path) as address:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(address)
                sock.bind(address)
                os.chmod(address, 0o600)
            sock.listen(8)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._answer, sock=sock)
        except OSError as exc:
            sock.close()
            log.warning(
                "cannot listen on %s (%s); x1p1 status reads the status file", self.path, exc
            )

    async def _answer(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            body = json.dumps(self._status().to_json(), separators=(",", ":"))
            writer.write(body.encode("utf-8") + b"\n")
            await asyncio.wait_for(writer.drain(), 2.0)
        except (OSError, TimeoutError) as exc:
            log.debug("a status client went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Stop listening and take the socket away."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(OSError), _address(self.path) as address:
            os.unlink(address)


def ask_json(path: Path, timeout: float = 2.0) -> object | None:
    """The JSON a running daemon gives on ``path``, or None when none answers there
    (no socket, a dead daemon's, no permission, an answer too long or not JSON)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            with _address(path) as address:
                sock.connect(address)
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_ANSWER:
                chunk = sock.recv(8192)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError:
        return None
    if size > MAX_ANSWER:
        return None
    try:
        answer: object = json.loads(b"".join(chunks))
    except ValueError:
        return None
    return answer
