"""The gateway's listening sockets, with connection caps per address and in all.

A host on the home network can open connections faster than they time out: 1100 idle
TCP connections used every descriptor the process had, and then nothing was served at
all (asyncio stops accepting for a second on EMFILE, then fails again). So
(docs/reliability.md, "A hostile home network"):

- :func:`~x1p1.descriptors.raise_nofile_limit` (shared with the converter) raises the
  soft ``RLIMIT_NOFILE`` to the hard limit at start;
- :class:`ConnectionLimits` (no I/O) admits a connection only while its address holds
  fewer than :data:`PER_ADDRESS` and the gateway fewer than its total, which leaves
  :data:`HEADROOM` descriptors for the database, the control socket, mDNS and the log;
- :class:`GuardedSocket`, the listening socket handed to aiohttp, asks the limits in
  ``accept()``, before any TLS handshake: a connection over a cap is closed at once with a
  reset (it never costs a handshake or a buffer), and its socket is never handed on.
  Each admitted connection is a :class:`_CountedSocket` that gives its place back when
  asyncio closes it.

One host can thus hold at most :data:`PER_ADDRESS` connections, and every other host is
served beside it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("x1p1.gateway")

PER_ADDRESS = 64
"""Connections one client address may hold at once: a browser opens six per origin, a
converter one or two; room for a household's devices behind one NAT address."""
TOTAL = 512
"""Connections the gateway holds at most (each TLS connection may buffer 256 KiB)."""
REFUSALS_PER_CALL = 64
"""Connections refused in one ``accept()`` before the event loop gets its turn."""
HEADROOM = 64
"""Descriptors kept free of connections: the database and its WAL, the state lock, the
control socket and its clients, mDNS, the worker threads' files."""


def total_for(nofile: int, total: int = TOTAL, headroom: int = HEADROOM) -> int:
    """The connections the gateway may hold with ``nofile`` descriptors: ``total`` at
    most, and never so many that fewer than ``headroom`` stay free (at least 1)."""
    return max(1, min(total, nofile - headroom))


class ConnectionLimits:
    """Counts of open connections by client address, and whether one more may come."""

    def __init__(self, per_address: int = PER_ADDRESS, total: int = TOTAL) -> None:
        if per_address < 1 or total < 1:
            raise ValueError("per_address and total must be at least 1")
        self.per_address = per_address
        self.total = total
        self._open: Counter[str] = Counter()
        self._count = 0
        self.refused = 0
        """Connections refused since start (either cap)."""
        self.on_release: Callable[[], None] | None = None
        """Called after a connection closed."""

    def __len__(self) -> int:
        return self._count

    def held_by(self, address: str) -> int:
        return self._open[address]

    def admit(self, address: str) -> str | None:
        """Count one more connection from ``address`` and return None; or, over a cap,
        count nothing and say which cap in a sentence."""
        if self._count >= self.total:
            self.refused += 1
            return f"the gateway holds {self.total} connections, its most"
        if self._open[address] >= self.per_address:
            self.refused += 1
            return f"{address} holds {self.per_address} connections, the most one address may"
        self._open[address] += 1
        self._count += 1
        return None

    def release(self, address: str) -> None:
        """One connection of ``address`` closed."""
        if self._open[address] <= 0:
            return
        self._open[address] -= 1
        self._count -= 1
        if not self._open[address]:
            del self._open[address]
        if self.on_release is not None:
            self.on_release()


def _peer(address: object) -> str:
    """The client's IP address, an IPv4-mapped IPv6 one as IPv4."""
    host = str(address[0]) if isinstance(address, tuple) and address else str(address)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class _CountedSocket(socket.socket):
    """An admitted connection: closing it gives its place back (once)."""

    def __init__(self, family: int, kind: int, proto: int, fileno: int) -> None:
        super().__init__(family, kind, proto, fileno)
        self.on_close: Callable[[], None] | None = None

    def close(self) -> None:
        release, self.on_close = self.on_close, None
        if release is not None:
            release()
        super().close()

    def detach(self) -> int:
        release, self.on_close = self.on_close, None
        if release is not None:
            release()
        return super().detach()


class GuardedSocket(socket.socket):
    """A listening socket whose ``accept()`` drops what :class:`ConnectionLimits`
    refuses (asyncio calls ``accept()`` on the socket object it was given)."""

    limits: ConnectionLimits

    def accept(self) -> tuple[socket.socket, object]:
        for _ in range(REFUSALS_PER_CALL):
            fd, address = self._accept()  # type: ignore[attr-defined]
            peer = _peer(address)
            refused = self.limits.admit(peer)
            if refused is None:
                conn = _CountedSocket(self.family, self.type, self.proto, fileno=fd)
                conn.on_close = functools.partial(self.limits.release, peer)
                return conn, address
            _reset(fd)
            log.warning("connection from %s refused: %s", peer, refused)  # x1p1.logs limits
        # as if the queue were empty: asyncio returns to its loop and calls again when
        # the socket is readable, so a flood of refusals never holds the loop for long
        raise BlockingIOError("refused connections; more may wait")


def _reset(fd: int) -> None:
    """Close an accepted descriptor with a reset (SO_LINGER 0): no TIME_WAIT, no FIN."""
    conn = socket.socket(fileno=fd)
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()


def listening_sockets(host: str | None, port: int, limits: ConnectionLimits) -> list[GuardedSocket]:
    """Bound, listening :class:`GuardedSocket` objects for ``host`` (None or ``""``:
    every address) and ``port`` (0: a free one, the same for all), as asyncio's
    ``create_server`` would make them (``SO_REUSEADDR``, IPv6 only on IPv6 sockets)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    out: list[GuardedSocket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = GuardedSocket(family, kind, proto)
            out.append(sock)
            sock.limits = limits
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(out) > 1:
                address = (address[0], out[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out
