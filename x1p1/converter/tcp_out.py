"""``--tcp HOST:PORT``: the same telegrams, raw, to any number of TCP clients (ser2net style).

Network P1 readers (dsmr-reader, Home Assistant's DSMR integration, dsmr_parser's
``SocketReader``) connect to a TCP port and read the byte stream a P1 port would give
(p1.md, "What readers do with it"). Each client gets every checked telegram whole; what
clients send is read and thrown away.

A slow client never holds up the others or the serial line: a telegram is handed to a
client's transport only when that client took the previous one completely (its
transport's buffer is empty; the kernel's send buffer is kept small). Otherwise the
telegram is dropped for that client alone, latest wins, and no queue builds. A client
that has taken nothing for ``idle_drop`` seconds is disconnected.

No host on the network can deny the others service (docs/x1-api.md, "What the converter
tolerates"): at most ``max_clients`` (config ``tcp_clients``, default 16) are served at
once, and one more is closed as soon as it is accepted, so idle connections cannot use
up the daemon's file descriptors, which the serial port and the X1 connection need.
Connects and disconnects are logged at debug level, with one summary an hour at info,
so a reader that reconnects for every telegram does not fill the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable

from x1p1.converter.config import ListenAddress
from x1p1.exceptions import TcpPortUnavailable

__all__ = ["MAX_CLIENTS", "TcpOutput"]

log = logging.getLogger(__name__)

MAX_CLIENTS = 16
"""Clients served at once unless the config's ``tcp_clients`` says otherwise."""
SUMMARY_EVERY = 3600.0
"""Seconds between the info-level summaries of connects, disconnects and refusals."""
SEND_BUFFER = 16 * 1024
"""The kernel's send buffer per client: a client that falls behind gets fresh telegrams
again as soon as it reads, not a backlog of old ones."""


class _Client(asyncio.Protocol):
    def __init__(self, owner: TcpOutput) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.dropped = 0
        self.blocked_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a few telegrams in flight at most, not megabytes
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        owner = self.owner
        if len(owner._clients) >= owner.max_clients:
            owner.refused += 1
            owner._period_refused += 1
            log.debug(
                "TCP P1 client %s refused: %d clients already (tcp_clients)",
                self.peer,
                len(owner._clients),
            )
            self.transport = None
            transport.abort()
            return
        owner._clients.add(self)
        owner.connects += 1
        owner._period_connects += 1
        log.debug("TCP P1 client %s connected (%d now)", self.peer, len(owner._clients))

    def data_received(self, data: bytes) -> None:
        pass  # readers send nothing we need

    def connection_lost(self, exc: Exception | None) -> None:
        if self not in self.owner._clients:
            return  # refused
        self.owner._clients.discard(self)
        log.debug("TCP P1 client %s disconnected (%d left)", self.peer, len(self.owner._clients))

    def send(self, raw: bytes, now: float) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size():
            self.dropped += 1
            if self.blocked_since is None:
                self.blocked_since = now
            elif now - self.blocked_since > self.owner.idle_drop:
                log.warning(
                    "TCP P1 client %s took nothing for %.0f s; disconnecting it",
                    self.peer,
                    self.owner.idle_drop,
                )
                transport.abort()
            return False
        self.blocked_since = None
        transport.write(raw)
        return True


def bind_error(listen: ListenAddress, exc: OSError) -> TcpPortUnavailable:
    """The one sentence for a ``--tcp`` address that cannot be listened on."""
    where = f"--tcp {listen}"
    if exc.errno == errno.EADDRINUSE:
        why = "the port is in use by another program; stop it or pick another port"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        why = "not permitted (ports below 1024 need root); pick a port from 1024 up"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "no interface of this machine has that address; give one of its addresses"
    elif isinstance(exc, socket.gaierror):
        why = f"the host name does not resolve ({exc.strerror or exc})"
    else:
        why = exc.strerror or str(exc)
    return TcpPortUnavailable(f"cannot listen on {where}: {why}")


class TcpOutput:
    """A TCP server that copies each telegram to every connected client."""

    def __init__(
        self,
        listen: ListenAddress,
        *,
        idle_drop: float = 60.0,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listen = listen
        self.idle_drop = idle_drop
        self.max_clients = max_clients
        self._clock = clock
        self._clients: set[_Client] = set()
        self._server: asyncio.Server | None = None
        self.sent = 0
        self.dropped = 0
        self.connects = 0
        """Clients served since the start."""
        self.refused = 0
        """Clients closed at once because ``max_clients`` were connected."""
        self._period_connects = 0
        self._period_refused = 0
        self._summary_due = clock() + SUMMARY_EVERY

    async def start(self) -> None:
        """Listen; :class:`~x1p1.exceptions.TcpPortUnavailable` says why it cannot."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Client(self), self.listen.bind_host, self.listen.port, reuse_address=True
            )
        except OSError as exc:
            raise bind_error(self.listen, exc) from None
        log.info("serving P1 telegrams on TCP %s", self.address_text)

    @property
    def port(self) -> int:
        """The port listened on (the one picked when ``--tcp HOST:0``)."""
        if self._server is None or not self._server.sockets:
            return self.listen.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address_text(self) -> str:
        host = self.listen.host or "*"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def serving(self) -> bool:
        """Whether the server listens (between :meth:`start` and :meth:`close`)."""
        return self._server is not None

    @property
    def clients(self) -> int:
        return len(self._clients)

    def summarise(self, now: float) -> None:
        """Once an hour: how many clients came and were refused, at info level (only when
        any did)."""
        if now < self._summary_due:
            return
        self._summary_due = now + SUMMARY_EVERY
        if self._period_connects or self._period_refused:
            log.info(
                "TCP P1 clients in the last hour: %d connected, %d refused (over %d at "
                "once); %d connected now",
                self._period_connects,
                self._period_refused,
                self.max_clients,
                len(self._clients),
            )
        self._period_connects = self._period_refused = 0

    def publish(self, raw: bytes) -> None:
        """Give ``raw`` to every client that took the previous telegram whole."""
        if not self._clients:
            return
        now = self._clock()
        for client in tuple(self._clients):
            if client.send(raw, now):
                self.sent += 1
            else:
                self.dropped += 1

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for client in tuple(self._clients):
                if client.transport is not None:
                    client.transport.abort()
            await self._server.wait_closed()
            self._server = None
