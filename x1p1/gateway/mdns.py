"""The embedded gateway's mDNS: claim ``X1-interface[-N].local``, advertise the X1 service.

X1 §4.3.3: once it has an address, the gateway announces itself by mDNS as
``X1-interface.local``; it first checks whether that name is in use on the network and,
if so, adds a number, ``X1-interface-1.local``, ``-2``, … until the name is unique. It
also advertises the service (x1-api.md: DNS-SD type ``_dsmr-x1-interface._tcp.local.``,
TXT ``api=/api``, ``version=6.0.0``, ``serial=<E-meter equipment id>``) so that a service
query lists every X1 interface on the network.

python-zeroconf answers, announces and defends records once they are registered, but its
``allow_name_change`` renames service instances only, never the host. So the host name
is claimed here by probing as RFC 6762 §8.1–§8.2 describe, on sockets of our own so that
incoming probes can be seen: after a random 0–250 ms wait, three probe queries 250 ms
apart ask for the candidate host name and the service instance name (QTYPE ANY) and carry
the records we propose (A records, SRV) in the authority section; any response from
another host with different data for either name means "taken"; a simultaneous probe
from another host is settled by the tie-break of §8.2 (the lexicographically later data
wins, the loser waits one second and probes again). The winning name is then registered
in zeroconf with ``cooperating_responders=True`` (the instance name was probed with the
host name) and ``strict=False`` (the type name has 17 characters, RFC 6335 allows 15).

After that zeroconf answers and defends. If another host later answers for our names
with other data (two networks joined, RFC 6762 §9), the advertiser withdraws its records
and claims a name again, and tells ``on_rename``.

IPv4 only: the standard's networks are DHCP or APIPA IPv4 (§4.3.1–§4.3.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import cast

import ifaddr
from zeroconf import IPVersion, RecordUpdate, RecordUpdateListener, Zeroconf

# zeroconf re-exports these at the top level "for backwards compatibility", outside its
# __all__; importing them from where they live keeps mypy --strict exact.
from zeroconf._dns import DNSAddress, DNSQuestion, DNSRecord, DNSService, DNSText
from zeroconf._protocol.incoming import DNSIncoming
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf._utils.net import create_sockets
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from x1p1.exceptions import ConfigError, MdnsError
from x1p1.x1.api import API_PREFIX, DEFAULT_HOST_NAME, SERVICE_TYPE, X1_VERSION
from x1p1.x1.hostname import MAX_INDEX, check_base
from x1p1.x1.hostname import host_name as host_name_candidate

__all__ = ["MdnsAdvertiser", "ipv4_interface_addresses", "probe_records"]

log = logging.getLogger(__name__)

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353
#: RFC 6762 §8.1: wait 0–250 ms, send three probes 250 ms apart, wait 250 ms after the last.
PROBE_START_DELAY = 0.250
PROBE_INTERVAL = 0.250
PROBE_COUNT = 3
#: RFC 6762 §8.2: the loser of a simultaneous probe waits one second before probing again.
TIEBREAK_DEFER = 1.0
#: After this many lost tie-breaks on one name, give the name up and try the next.
MAX_TIEBREAK_LOSSES = 5
#: RFC 6762 §10: 120 s for records with a host name, 75 minutes for the others.
HOST_TTL = 120
OTHER_TTL = 4500

_TYPE_A = 1
_TYPE_PTR = 12
_TYPE_SRV = 33
_TYPE_ANY = 255
_CLASS_IN = 1
_FLAGS_QUERY = 0x0000


def ipv4_interface_addresses() -> list[str]:
    """The IPv4 addresses of this host's interfaces, loopback left out."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.IPv4Address(ip.ip).is_loopback:
                found.append(ip.ip)
    return list(dict.fromkeys(found))


def _rdata(record: DNSRecord) -> bytes:
    """A record's data as bytes for comparison (RFC 6762 §8.2, names uncompressed)."""
    if isinstance(record, DNSAddress):
        return bytes(record.address)
    if isinstance(record, DNSService):
        fixed = struct.pack("!HHH", record.priority, record.weight, record.port)
        return fixed + record.server.lower().encode()
    if isinstance(record, DNSText):
        return bytes(record.text)
    return repr(record).encode()


def _sort_key(record: DNSRecord) -> tuple[int, int, bytes]:
    return (record.class_, record.type, _rdata(record))


class _Prober(asyncio.DatagramProtocol):
    """RFC 6762 §8.1–§8.2 probing for a set of unique records, on sockets of its own.

    The listen socket shares UDP 5353 with any other responder on the host (SO_REUSEPORT)
    and joins the mDNS group on each interface; one send socket per interface. Probes
    are QM questions so that answers come by multicast and reach every listener.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._transport: asyncio.DatagramTransport | None = None
        self._send_sockets: list[socket.socket] = []
        self._sent: set[bytes] = set()
        self._mine: dict[str, list[tuple[int, int, bytes]]] = {}
        self._conflict: str | None = None
        self._lost = False
        self._event = asyncio.Event()

    @classmethod
    async def open(cls, interfaces: Sequence[str], rng: random.Random) -> _Prober:
        listen, send = create_sockets(list(interfaces), ip_version=IPVersion.V4Only)
        if listen is None or not send:
            for sock in [listen, *send]:
                if sock is not None:
                    sock.close()
            raise OSError(f"cannot join the mDNS group on {', '.join(interfaces)}")
        prober = cls(rng)
        prober._send_sockets = send
        for sock in send:
            sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: prober, sock=listen)
        except BaseException:
            listen.close()
            prober.close()
            raise
        return prober

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for sock in self._send_sockets:
            sock.close()
        self._send_sockets = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self._mine or data in self._sent:
            return  # not probing, or our own probe looped back
        msg = DNSIncoming(data, (str(addr[0]), int(addr[1])))
        if not msg.valid:
            return
        if msg.is_response():
            for record in msg.answers():
                name = record.name.lower()
                if name in self._mine and record.ttl > 0:
                    if _sort_key(record) not in self._mine[name]:
                        self._flag_conflict(name, addr)
            return
        if not msg.is_probe():
            return
        asked = {q.name.lower() for q in msg.questions}
        theirs: dict[str, list[tuple[int, int, bytes]]] = {}
        for record in msg.answers():
            if record.name.lower() in asked:
                theirs.setdefault(record.name.lower(), []).append(_sort_key(record))
        for name, records in theirs.items():
            mine = self._mine.get(name)
            # Identical data is no conflict; the lexicographically later data wins.
            if mine is not None and mine < sorted(records):
                log.debug("mDNS: lost the probe tie-break for %s to %s", name, addr[0])
                self._lost = True
                self._event.set()

    def _flag_conflict(self, name: str, addr: tuple[str | int, ...]) -> None:
        if self._conflict is None:
            log.debug("mDNS: %s answers for %s", addr[0], name)
            self._conflict = name
            self._event.set()

    def _send(self, packets: list[bytes]) -> None:
        for sock in self._send_sockets:
            for packet in packets:
                try:
                    sock.sendto(packet, (MDNS_GROUP, MDNS_PORT))
                except OSError as error:  # one dead interface must not stop the others
                    log.debug("mDNS: probe not sent on %s: %s", sock.getsockname(), error)

    async def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a conflict or a lost tie-break comes in."""
        if self._conflict is not None or self._lost:
            return
        self._event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)

    async def probe(self, records: Sequence[DNSRecord]) -> bool:
        """Probe for the names of ``records``: True when nobody else holds them."""
        mine: dict[str, list[tuple[int, int, bytes]]] = {}
        for record in records:
            mine.setdefault(record.name.lower(), []).append(_sort_key(record))
        out = DNSOutgoing(_FLAGS_QUERY, multicast=True)
        for name in dict.fromkeys(r.name for r in records):
            out.add_question(DNSQuestion(name, _TYPE_ANY, _CLASS_IN))
        # add_authorative_answer() takes PTR records only; a probe proposes A and SRV.
        out.authorities.extend(records)  # type: ignore[arg-type]
        packets = out.packets()
        self._sent.update(packets)
        self._mine = {name: sorted(keys) for name, keys in mine.items()}
        self._conflict, self._lost = None, False
        try:
            await self._wait(self._rng.uniform(0.0, PROBE_START_DELAY))
            losses = 0
            while True:
                for _ in range(PROBE_COUNT):
                    if self._conflict is not None or self._lost:
                        break
                    self._send(packets)
                    await self._wait(PROBE_INTERVAL)
                if self._conflict is not None:
                    return False
                if not self._lost:
                    return True
                losses += 1
                if losses >= MAX_TIEBREAK_LOSSES:
                    return False
                self._lost = False
                await asyncio.sleep(TIEBREAK_DEFER)
        finally:
            self._mine = {}


async def probe_records(
    records: Sequence[DNSRecord],
    interfaces: Sequence[str],
    rng: random.Random | None = None,
) -> bool:
    """Probe once (RFC 6762 §8.1) on ``interfaces``: True when the names are free."""
    prober = await _Prober.open(interfaces, rng or random.Random())
    try:
        return await prober.probe(records)
    finally:
        prober.close()


class _ConflictWatch(RecordUpdateListener):
    """Watches zeroconf's incoming records for another host answering for our names."""

    def __init__(self, owner: MdnsAdvertiser) -> None:
        self._owner = owner

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            self._owner._check_record(update.new)


class MdnsAdvertiser:
    """Claims ``<base>.local`` or ``<base>-N.local`` and advertises the X1 service on it.

    ``addresses``: the IPv4 addresses to advertise and to run mDNS on; by default every
    non-loopback IPv4 address of the host. ``on_rename`` is called with the new host name
    when a conflict after start (RFC 6762 §9) made the advertiser take another one.
    """

    def __init__(
        self,
        *,
        port: int,
        serial: str,
        base_name: str = DEFAULT_HOST_NAME,
        addresses: Sequence[str] | None = None,
        api: str = API_PREFIX,
        version: str = X1_VERSION,
        max_index: int = MAX_INDEX,
        on_rename: Callable[[str], Awaitable[None] | None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is not a TCP port (1–65535)")
        properties = {"api": api, "version": version, "serial": serial}
        for key, value in properties.items():
            if not value or not value.isprintable() or len(key) + 1 + len(value.encode()) > 255:
                raise ConfigError(f"mDNS TXT value {key}={value!r} must be 1–250 printable bytes")
        if addresses is not None:
            for address in addresses:
                try:
                    ipaddress.IPv4Address(address)
                except ValueError:
                    raise ConfigError(f"{address!r} is not an IPv4 address") from None
        self.base_name = check_base(base_name)
        self.port = port
        self.properties = properties
        self.max_index = max_index
        self.on_rename = on_rename
        self._requested = list(addresses) if addresses is not None else None
        self._rng = rng or random.Random()
        self._addresses: list[str] = []
        self._index = 0
        self._host: str | None = None
        self._zc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._announce: Awaitable[object] | None = None
        self._reclaim: asyncio.Task[None] | None = None
        self._closed = False

    # -- what others read -------------------------------------------------------------

    @property
    def claimed_host_name(self) -> str:
        """The host name claimed, without the trailing dot: ``X1-interface-1.local``."""
        if self._host is None:
            raise MdnsError("the mDNS advertiser has not claimed a host name yet")
        return self._host

    @property
    def service_name(self) -> str:
        """The DNS-SD instance: ``X1-interface-1._dsmr-x1-interface._tcp.local.``."""
        return f"{self.claimed_host_name[: -len('.local')]}.{SERVICE_TYPE}"

    @property
    def addresses(self) -> list[str]:
        """The IPv4 addresses advertised for the host name."""
        return list(self._addresses)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> str:
        """Probe for a free host name, register it with the service; return the name."""
        if self._host is not None:
            return self._host
        addresses = self._requested if self._requested is not None else ipv4_interface_addresses()
        if not addresses:
            raise MdnsError("no IPv4 address to advertise: the host has no network address yet")
        self._addresses = list(addresses)
        await self._claim(self._index)
        return self.claimed_host_name

    async def close(self) -> None:
        """Withdraw the records (goodbye packets) and close the sockets."""
        self._closed = True
        if self._reclaim is not None and self._reclaim is not asyncio.current_task():
            self._reclaim.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reclaim
        await self._withdraw()

    async def __aenter__(self) -> MdnsAdvertiser:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- claiming ---------------------------------------------------------------------

    def _records(self, index: int) -> tuple[str, str, list[DNSRecord]]:
        host = host_name_candidate(self.base_name, index)
        fqdn = f"{host}."
        instance = f"{host[: -len('.local')]}.{SERVICE_TYPE}"
        records: list[DNSRecord] = [
            DNSAddress(fqdn, _TYPE_A, _CLASS_IN, HOST_TTL, socket.inet_aton(a))
            for a in self._addresses
        ]
        records.append(DNSService(instance, _TYPE_SRV, _CLASS_IN, OTHER_TTL, 0, 0, self.port, fqdn))
        return host, instance, records

    async def _claim(self, first_index: int) -> None:
        try:
            prober = await _Prober.open(self._addresses, self._rng)
        except OSError as error:
            raise MdnsError(f"cannot open mDNS (UDP 5353) on {self._addresses}: {error}") from None
        try:
            for index in range(first_index, self.max_index + 1):
                host, instance, records = self._records(index)
                if await prober.probe(records):
                    break
                log.info("mDNS: %s is in use on the network; trying the next name", host)
            else:
                raise MdnsError(
                    f"no free host name from {host_name_candidate(self.base_name, first_index)} "
                    f"to {host_name_candidate(self.base_name, self.max_index)}"
                )
        finally:
            prober.close()
        await self._register(index, host, instance)

    async def _register(self, index: int, host: str, instance: str) -> None:
        try:
            zc = AsyncZeroconf(interfaces=list(self._addresses), ip_version=IPVersion.V4Only)
        except OSError as error:
            raise MdnsError(f"cannot open mDNS (UDP 5353) on {self._addresses}: {error}") from None
        info = AsyncServiceInfo(
            SERVICE_TYPE,
            instance,
            port=self.port,
            properties=dict(self.properties),
            server=f"{host}.",
            parsed_addresses=list(self._addresses),
            host_ttl=HOST_TTL,
            other_ttl=OTHER_TTL,
        )
        try:
            # Our probe covered the instance name too, so zeroconf need not probe again.
            self._announce = await zc.async_register_service(
                info, cooperating_responders=True, strict=False
            )
        except BaseException:
            await zc.async_close()
            raise
        self._zc, self._info, self._index, self._host = zc, info, index, host
        zc.zeroconf.async_add_listener(_ConflictWatch(self), None)
        log.info(
            "mDNS: claimed %s (%s), service %s on port %d",
            host,
            ", ".join(self._addresses),
            instance,
            self.port,
        )

    async def _withdraw(self) -> None:
        zc, info, announce = self._zc, self._info, self._announce
        self._zc = self._info = self._announce = None
        if zc is None:
            return
        if announce is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(announce, 5.0)  # let the announcements finish first
        try:
            if info is not None:
                goodbye = await zc.async_unregister_service(info)
                await asyncio.wait_for(goodbye, 5.0)
        finally:
            await zc.async_close()

    # -- conflicts after start (RFC 6762 §9) -----------------------------------------------

    def _check_record(self, record: DNSRecord) -> None:
        if self._host is None or self._closed or self._reclaim is not None or record.ttl == 0:
            return
        name = record.name.lower()
        host, instance = f"{self._host}.".lower(), self.service_name.lower()
        conflict = False
        if name == host and isinstance(record, DNSAddress):
            conflict = len(record.address) == 4 and socket.inet_ntoa(record.address) not in set(
                self._addresses
            )
        elif name == instance and isinstance(record, DNSService):
            conflict = record.port != self.port or record.server.lower() != host
        if conflict:
            log.warning(
                "mDNS: another host answers for %s (%s); claiming a name again",
                record.name,
                record,
            )
            self._reclaim = asyncio.get_running_loop().create_task(self._claim_again())

    async def _claim_again(self) -> None:
        old = self._host
        try:
            await self._withdraw()
            await self._claim(self._index)
        except MdnsError as error:
            log.error("mDNS: advertising stopped: %s", error)
            self._host = None
            return
        finally:
            self._reclaim = None
        if self._host != old and self.on_rename is not None:
            result = self.on_rename(self.claimed_host_name)
            if result is not None:
                await result
