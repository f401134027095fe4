"""Finding X1 gateways on the local network by mDNS: the converter's side (X1 §4.3.3).

A gateway claims the host name ``X1-interface.local``, or ``X1-interface-N.local`` when
that is taken, and advertises the DNS-SD service ``_dsmr-x1-interface._tcp.local.`` with
the TXT keys ``api``, ``version`` and ``serial`` (x1-api.md, Network and discovery).
:func:`discover` browses for that service, resolves every instance, and also asks for the
host names ``X1-interface.local`` … ``X1-interface-9.local`` directly, because a gateway
whose service record was lost still answers for its host name. Results are merged by host
name. :func:`find_gateway` picks the paired gateway by its serial (the E meter's
equipment id), since a router may have handed it a new address.

This module is an adapter over python-zeroconf only; the daemon imports it, so it must
not import the gateway package. The names below are the contract that the embedded
gateway's advertiser (``x1p1.gateway.mdns``) also uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf._services.info import AddressResolver  # re-exported by zeroconf, not in __all__
from zeroconf.asyncio import (
    AsyncServiceBrowser,
    AsyncServiceInfo,
    AsyncZeroconf,
)

from x1p1.exceptions import DiscoveryError
from x1p1.x1 import api as x1api
from x1p1.x1 import hostname

__all__ = [
    "DEFAULT_BASE_NAME",
    "DEFAULT_PORT",
    "HOST_NAME_TRIES",
    "SERVICE_TYPE",
    "DiscoveredGateway",
    "discover",
    "find_gateway",
    "host_name_candidate",
    "mdns_host_names",
]

log = logging.getLogger(__name__)

#: The standard's service identifier "DSMR-X1-interface" as a DNS-SD type
#: (``_dsmr-x1-interface._tcp.local.``, from :mod:`x1p1.x1.api`).
SERVICE_TYPE = x1api.SERVICE_TYPE
#: The host name label of §4.3.3 (``X1-interface``, from :mod:`x1p1.x1.api`).
DEFAULT_BASE_NAME = x1api.DEFAULT_HOST_NAME
#: The port of a gateway found only by its host name (x1-api.md: 443 on a real gateway).
DEFAULT_PORT = 443
#: How many host names :func:`discover` asks for directly: every one a gateway may claim,
#: ``X1-interface.local`` and ``X1-interface-1.local`` … ``X1-interface-9.local``.
HOST_NAME_TRIES = hostname.MAX_INDEX + 1

_NAME_INDEX = re.compile(r"^(?P<base>.+?)(?:-(?P<n>[0-9]+))?\.local\.?$", re.IGNORECASE)


host_name_candidate = hostname.host_name  # the §4.3.3 rule, shared with the gateway


def _strip_dot(name: str) -> str:
    return name[:-1] if name.endswith(".") else name


def _sort_key(gateway: DiscoveredGateway) -> tuple[int, str, int, str]:
    """Standard names first in their number order, then every other name."""
    match = _NAME_INDEX.match(gateway.host_name)
    if match and match["base"].lower() == DEFAULT_BASE_NAME.lower():
        return (0, "", int(match["n"] or 0), gateway.host_name.lower())
    return (1, gateway.host_name.lower(), 0, "")


def _union(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*first, *second]))


@dataclass(frozen=True)
class DiscoveredGateway:
    """One X1 gateway as mDNS describes it.

    ``host_name`` has no trailing dot (``X1-interface-1.local``); it is the name the TLS
    certificate must carry. ``service_name`` is the DNS-SD instance, ``None`` when the
    gateway was found by its host name only; then ``port`` is :data:`DEFAULT_PORT` and
    ``serial`` and ``version`` are unknown.
    """

    host_name: str
    addresses: tuple[str, ...]
    port: int
    serial: str | None = None
    api: str = x1api.API_PREFIX
    version: str | None = None
    service_name: str | None = field(default=None)

    @classmethod
    def from_service_info(cls, info: AsyncServiceInfo) -> DiscoveredGateway:
        """Read a resolved ``_dsmr-x1-interface._tcp`` instance (SRV, TXT, A/AAAA)."""
        props = info.decoded_properties
        server = _strip_dot(info.server or info.name)
        return cls(
            host_name=server,
            addresses=tuple(info.parsed_addresses(IPVersion.All)),
            port=info.port or DEFAULT_PORT,
            serial=props.get("serial") or None,
            api=props.get("api") or x1api.API_PREFIX,
            version=props.get("version") or None,
            service_name=info.name,
        )

    @property
    def key(self) -> str:
        """What results are merged by: the host name, case-folded (DNS names are)."""
        return self.host_name.lower()

    def merge(self, other: DiscoveredGateway) -> DiscoveredGateway:
        """Combine two sightings of one host; service data beats a bare host-name answer."""
        primary, secondary = (
            (other, self) if self.service_name is None and other.service_name else (self, other)
        )
        return replace(primary, addresses=_union(primary.addresses, secondary.addresses))

    def to_json(self) -> dict[str, Any]:
        """The object ``x1p1 discover --json`` prints for this gateway."""
        return {
            "host_name": self.host_name,
            "addresses": list(self.addresses),
            "port": self.port,
            "serial": self.serial,
            "api": self.api,
            "version": self.version,
            "service_name": self.service_name,
        }


class _Discovery:
    """One browse-and-resolve run; results land in :attr:`found`, keyed by host name."""

    def __init__(self, zc: Zeroconf, deadline: float, host_names: Sequence[str]) -> None:
        self.zc = zc
        self.deadline = deadline
        self.host_names = host_names
        self.found: dict[str, DiscoveredGateway] = {}
        self.changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving: set[str] = set()
        self._browser: AsyncServiceBrowser | None = None

    def _remaining_ms(self) -> float:
        return max(0.0, (self.deadline - asyncio.get_running_loop().time()) * 1000.0)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _add(self, gateway: DiscoveredGateway) -> None:
        known = self.found.get(gateway.key)
        self.found[gateway.key] = known.merge(gateway) if known else gateway
        log.debug("mDNS: %s", self.found[gateway.key])
        self.changed.set()

    def start(self) -> None:
        self._browser = AsyncServiceBrowser(
            self.zc, [SERVICE_TYPE], handlers=[self._on_service_state_change]
        )
        for name in self.host_names:
            self._spawn(self._resolve_host(name))

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed or name.lower() in self._resolving:
            return
        self._resolving.add(name.lower())
        self._spawn(self._resolve_service(name))

    async def _resolve_service(self, name: str) -> None:
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(self.zc, self._remaining_ms()):
                self._add(DiscoveredGateway.from_service_info(info))
        finally:
            self._resolving.discard(name.lower())

    async def _resolve_host(self, host_name: str) -> None:
        fqdn = f"{host_name}."
        resolver = AddressResolver(fqdn)  # asks only for the A and AAAA records
        if await resolver.async_request(self.zc, self._remaining_ms()):
            addresses = resolver.parsed_addresses(IPVersion.All)
            self._add(DiscoveredGateway(host_name, tuple(addresses), DEFAULT_PORT))

    async def close(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def mdns_host_names(names: Sequence[str]) -> list[str]:
    """The names of ``names`` that mDNS can answer for: host names in ``.local`` (RFC 6762
    §3), a trailing dot allowed. An address or a name in another domain is left out; the
    resolver, not mDNS, knows those."""
    return [n for n in names if n.rstrip(".").lower().endswith(".local") and " " not in n]


async def discover(
    timeout: float = 3.0,  # noqa: ASYNC109 (a listening window, not a cancel scope)
    zc: AsyncZeroconf | None = None,
    *,
    host_names: Sequence[str] | None = None,
    stop_when: Callable[[list[DiscoveredGateway]], bool] | None = None,
) -> list[DiscoveredGateway]:
    """Find the X1 gateways that answer on mDNS within ``timeout`` seconds.

    Browses ``_dsmr-x1-interface._tcp.local.``, resolves each instance, and asks for
    ``host_names`` directly (default ``X1-interface.local`` … ``X1-interface-9.local``).
    Returns one :class:`DiscoveredGateway` per host name, standard names first. Waits
    the whole ``timeout`` unless ``stop_when(found_so_far)`` returns true earlier.
    Uses ``zc`` if given (and leaves it open), else a fresh IPv4 zeroconf instance on
    every interface, so no stale cache answers for a gateway that moved. Raises
    :class:`~x1p1.exceptions.DiscoveryError` when mDNS cannot be used at all.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    if host_names is None:
        host_names = [host_name_candidate(DEFAULT_BASE_NAME, i) for i in range(HOST_NAME_TRIES)]
    host_names = mdns_host_names(host_names)
    loop = asyncio.get_running_loop()
    own = zc is None
    try:
        aiozc = zc if zc is not None else AsyncZeroconf(ip_version=IPVersion.V4Only)
    except (OSError, RuntimeError) as error:  # RuntimeError: zeroconf found no interface
        raise DiscoveryError(f"cannot use mDNS (UDP 5353) on this host: {error}") from None
    run = _Discovery(aiozc.zeroconf, loop.time() + timeout, host_names)
    try:
        run.start()
        while (remaining := run.deadline - loop.time()) > 0:
            if stop_when is not None and stop_when(_sorted(run.found.values())):
                break
            run.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.changed.wait(), remaining)
    finally:
        await run.close()
        if own:
            await aiozc.async_close()
    return _sorted(run.found.values())


def _sorted(gateways: Iterable[DiscoveredGateway]) -> list[DiscoveredGateway]:
    return sorted(gateways, key=_sort_key)


async def find_gateway(
    serial: str | None,
    timeout: float = 5.0,  # noqa: ASYNC109 (a listening window, not a cancel scope)
    zc: AsyncZeroconf | None = None,
) -> DiscoveredGateway:
    """Find the gateway with this serial (E-meter equipment id), or the only one.

    With a serial, returns as soon as that gateway answers. Without one, waits the whole
    ``timeout`` and returns the gateway if exactly one answered. Raises
    :class:`~x1p1.exceptions.DiscoveryError` with a sentence that says what was found.
    """

    def has_serial(found: list[DiscoveredGateway]) -> bool:
        return any(g.serial == serial for g in found)

    found = await discover(timeout, zc, stop_when=has_serial if serial else None)
    where = (
        f"within {timeout:g} s (service {SERVICE_TYPE}, host names "
        f"{host_name_candidate(DEFAULT_BASE_NAME, 0)} … "
        f"{host_name_candidate(DEFAULT_BASE_NAME, HOST_NAME_TRIES - 1)})"
    )
    if serial:
        for gateway in found:
            if gateway.serial == serial:
                return gateway
        others = ", ".join(f"{g.host_name} (serial {g.serial or 'unknown'})" for g in found)
        raise DiscoveryError(
            f"the X1 gateway with serial {serial} did not answer on mDNS {where}"
            + (f"; found only {others}" if others else "")
        )
    if not found:
        raise DiscoveryError(
            f"no X1 gateway answered on mDNS {where}; check that the meter's X1 port is "
            "on this network, or give the gateway with --gateway"
        )
    if len(found) > 1:
        names = ", ".join(f"{g.host_name} (serial {g.serial or 'unknown'})" for g in found)
        raise DiscoveryError(
            f"{len(found)} X1 gateways answered: {names}; choose one with --gateway"
        )
    return found[0]
