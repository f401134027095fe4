"""The embedded DSMR6 gateway, wired: store, PKI, meters, server, control socket, mDNS.

:class:`GatewayConfig` holds what ``x1p1 gateway serve`` takes; :class:`Gateway` starts
and stops the parts in order; :func:`run_gateway` runs one until SIGINT or SIGTERM.

Start, in order: lock the state directory (one gateway per directory), open the
database (and the comlog in it, §2.2), load or create the PKI (X1 §10.1), make the
meters and their clock, listen for HTTPS and WSS on one port with TLS 1.3 (§4.1.4), open
the control socket, start the stream ticks and the housekeeping loop, then claim a host
name and advertise on mDNS (§4.3.3) unless told not to. If the claimed name is one the
certificate does not cover, the leaf is issued again and the server's context loads it.

Stop, in reverse: mDNS goodbye, close every stream with 1001, stop the server, remove the
control socket, close the database, unlock.

Defaults, and why:

- ``host`` ``0.0.0.0``: a gateway is there to be reached from the customer's network, and
  mDNS advertises the host's addresses, so it listens on all IPv4 addresses. The data are
  simulated, nothing is readable without a token, and a token needs the customer's
  approval on the local control socket; ``--host 127.0.0.1`` keeps it to this machine
  (mDNS is then off: advertising a loopback-only server would send clients nowhere).
  ``--auto-approve`` on a non-loopback address is logged as a warning.
- ``port`` 8443 (a real gateway: 443); 0 picks a free port.
- the state directory: ``$XDG_STATE_HOME/x1p1/gateway``, else
  ``~/.local/state/x1p1/gateway``; made with mode 0700.
- ``seed`` 1 and ``speed`` 1: the simulated clock then shows the wall clock's seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiohttp import web

from x1p1.descriptors import raise_nofile_limit
from x1p1.exceptions import BadRequest, MdnsError, StateError, StorageUnavailable
from x1p1.gateway.control import ControlServer, socket_path
from x1p1.gateway.listener import (
    PER_ADDRESS,
    TOTAL,
    ConnectionLimits,
    listening_sockets,
    total_for,
)
from x1p1.gateway.server import CLIENT_ADDRESS, FAILURES, HOST_NAMES, Route, build_app
from x1p1.gateway.state import GatewayEvent, GatewayState, utc_now
from x1p1.gateway.store import Store
from x1p1.gateway.streams import MeterSource, SimTime, StreamHub
from x1p1.x1.api import DEFAULT_HOST_NAME, DEFAULT_PORT, X1_VERSION
from x1p1.x1.grants import Grant

if TYPE_CHECKING:
    from x1p1.gateway.comlog import Comlog
    from x1p1.gateway.history_service import HistoryService

log = logging.getLogger("x1p1.gateway")

DEFAULT_HOST = "0.0.0.0"
LOCK_NAME = "gateway.lock"
IDLE_TIMEOUT = 60.0
"""Seconds a connection may sit without a whole request (idle between requests, or never
finishing its headers, slowloris-style) before the gateway closes it; aiohttp's own
default is an hour. A TLS handshake gets asyncio's 60 s too. Open WebSockets are not idle."""
RELEASE_MEMORY_EVERY = 60.0
"""Freed memory is handed back to the system (:func:`release_memory`) at most this often
(seconds), and only after a connection closed."""
MAINTAIN_RETRY = 5.0
"""Seconds before housekeeping that the database refused is tried again (unless a change
comes first)."""


def default_state_dir(env: dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/x1p1/gateway`` (an absolute one), else
    ``~/.local/state/x1p1/gateway``."""
    environ = os.environ if env is None else env
    xdg = environ.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "x1p1" / "gateway"
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "x1p1" / "gateway"


@dataclass
class GatewayConfig:
    """What ``x1p1 gateway serve`` takes, plus what tests inject."""

    state_dir: Path = field(default_factory=default_state_dir)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    hostname: str = DEFAULT_HOST_NAME
    """The mDNS base name: ``<hostname>.local``, or ``<hostname>-N.local`` when taken."""
    mdns: bool = True
    auto_approve: bool = False
    speed: float = 1.0
    seed: int = 1
    now: Callable[[], datetime] = utc_now
    """The clock of pairing and tokens (tests move it to expire requests and tokens)."""
    meters: MeterSource | None = None
    """The meters (default: the simulation from ``seed``)."""
    sim_time: SimTime | None = None
    """Wall clock → the meters' clock (default: a SimClock at ``speed`` from start)."""
    mdns_addresses: Sequence[str] | None = None
    """IPv4 addresses to advertise (default: every non-loopback one, or ``host``)."""
    extra_routes: Sequence[Route] = ()
    per_address: int = PER_ADDRESS
    """Connections one client address may hold at once (:mod:`x1p1.gateway.listener`)."""
    total: int = TOTAL
    """Connections the gateway holds at most (fewer if descriptors are short)."""


COMLOG_EVENTS: dict[str, str] = {
    "x1-disabled": "x1-disabled",
    "x1-enabled": "x1-enabled",
    "operator-read": "operator-read",
    "admin-action": "admin-action",
    "history-blocked": "history-blocked",
}
"""Gateway events that are not the ledger's → comlog events (§2.2)."""


def comlog_kind(kind: str) -> str | None:
    """The comlog event of a gateway event: the ledger's own are mapped by
    :func:`x1p1.gateway.grants.comlog_event` (exhaustively), the others here."""
    from x1p1.gateway.grants import comlog_event
    from x1p1.x1.grants import Event

    try:
        event = Event(kind)
    except ValueError:
        return COMLOG_EVENTS.get(kind)
    found = comlog_event(event)
    return None if found is None else found.value


WEBSOCKET_ROUTES = frozenset({"legacy-p1", "realtime"})


def _device(name: str, uuid: str) -> str:
    """How the comlog names a device: its name and the start of its uuid (two devices
    may share a name)."""
    return f"{name} ({uuid[:8]})"


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normal_address(name: str) -> str:
    """An IPv6 address in the short form :func:`~x1p1.gateway.server.host_of` gives;
    anything else as it is."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _url_host(host: str) -> str:
    if _wildcard(host):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _lock(state_dir: Path) -> IO[bytes]:
    path = state_dir / LOCK_NAME
    handle = open(path, "ab")  # noqa: SIM115 - held open while the gateway runs
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StateError(
            f"another gateway is running with the state directory {state_dir}"
        ) from None
    return handle


def default_meters(seed: int) -> MeterSource:
    """The simulated electricity and gas meters of ``seed``."""
    from x1p1.gateway.simulation import MeterSimulation

    return MeterSimulation(seed, gas_channel=1)


class Gateway:
    """One embedded gateway: :meth:`start`, then :meth:`stop`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.port = 0
        self.host_name: str | None = None
        """The mDNS host name claimed (``X1-interface.local``), or None without mDNS."""
        self.state: GatewayState | None = None
        self._lock: IO[bytes] | None = None
        self._store: Store | None = None
        self._pki: Any = None
        self._ssl: Any = None
        self._runner: web.AppRunner | None = None
        self._control: ControlServer | None = None
        self._hub: StreamHub | None = None
        self._addresses: list[str] = []
        self.connections: ConnectionLimits | None = None
        """Open connections by client address, once listening."""
        self._housekeeping: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        """Set by a change the housekeeping loop must see (see :meth:`_housekeep`)."""
        self._release_due: float | None = None
        """When freed memory is next handed back (monotonic), once a connection closed."""
        self._released = -math.inf
        """When freed memory was last handed back (monotonic)."""
        self.last_timeout: float | None = None
        """What the housekeeping loop last waited for at most (seconds; None: a change)."""
        self.housekeeping_rounds = 0
        """How often the housekeeping loop ran (bench/bench_housekeeping.py counts them)."""
        self._advertiser: Any = None
        self.comlog: Comlog | None = None
        """The comlog (§2.2), on the gateway's database, once started."""
        self.portal: Any = None
        """The customer portal (:class:`x1p1.gateway.portal.Portal`), once started."""
        self.history: HistoryService | None = None
        """History, billing and the history block, once started."""

    # --- what others read ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``https://<address>:<port>``: loopback when listening on all addresses."""
        return f"https://{_url_host(self.config.host)}:{self.port}"

    @property
    def ca_path(self) -> Path:
        """The root CA's PEM file: what clients trust (``x1p1 gateway ca``)."""
        from x1p1.gateway.pki import GatewayPKI

        return GatewayPKI.directory_for(self.state_dir) / "root-ca.pem"

    @property
    def control_path(self) -> Path:
        return socket_path(self.state_dir)

    def host_names(self) -> list[str]:
        """The names and addresses a request's ``Host`` may name (x1-api.md, Requests):
        the mDNS host name claimed and every one it may claim (§4.3.3), the listening
        address and the interface addresses at start; the server adds localhost and
        the address each connection arrived on."""
        from x1p1.gateway.pki import candidate_host_names

        names = [*self._addresses, *candidate_host_names(self.config.hostname)]
        if self.host_name:
            names.append(self.host_name)
        if not _wildcard(self.config.host):
            names.append(self.config.host)
        return [_normal_address(name) for name in names]

    def info(self) -> dict[str, Any]:
        """What ``status`` on the control socket and the start banner report."""
        limits = self.connections
        return {
            "url": self.url,
            "port": self.port,
            "host": self.config.host,
            "host_name": self.host_name,
            "ca": str(self.ca_path),
            "state_dir": str(self.state_dir),
            "pid": os.getpid(),
            "version": X1_VERSION,
            "connections": None
            if limits is None
            else {
                "open": len(limits),
                "refused": limits.refused,
                "total": limits.total,
                "per_address": limits.per_address,
            },
        }

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every part; on failure, stop what was started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        from x1p1.gateway.pki import GatewayPKI, local_addresses

        config = self.config
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {self.state_dir}: {exc}") from None
        self._lock = _lock(self.state_dir)
        self._store = Store.open(self.state_dir)
        addresses = [a for a in local_addresses() if not a.startswith("fe80")]
        if not _wildcard(config.host) and config.host not in addresses:
            addresses.append(config.host)
        self._pki = await asyncio.to_thread(
            GatewayPKI.load_or_create,
            self.state_dir,
            (),
            addresses,
            base_name=config.hostname,
        )
        self._ssl = self._pki.server_ssl_context()

        meters = config.meters or default_meters(config.seed)
        sim_time = config.sim_time or _sim_clock(config.speed)
        # the simulation's first second of a day takes a while: not on the loop
        await asyncio.to_thread(meters.telegram, sim_time(time.time()))
        self._hub = StreamHub(meters, sim_time)
        self.state = GatewayState(
            self._store, self._hub, now=config.now, auto_approve=config.auto_approve
        )
        self.state.grants.maintain()
        self._attach_comlog(self.state, self._store)

        from x1p1.gateway.history_routes import HISTORY_ROUTES
        from x1p1.gateway.history_service import HistoryService

        self.history = HistoryService(self.state, self._store, self._pki.signer(), self.comlog)
        self.history.open()
        app = build_app(self.state, [*HISTORY_ROUTES, *config.extra_routes])
        self._addresses = addresses
        app[HOST_NAMES] = self.host_names
        app[FAILURES] = self._note_failure
        self.history.mount(app)
        from x1p1.gateway.portal import Portal

        self.portal = Portal(self.state, self.info)
        self.portal.comlog = self.comlog
        self.portal.mount(app)
        self.history.attach_portal(self.portal)
        from x1p1.gateway.openapi_portal import document_portal

        document_portal()
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=2.0,
            keepalive_timeout=IDLE_TIMEOUT,
        )
        await self._runner.setup()
        nofile = raise_nofile_limit()
        self.connections = ConnectionLimits(config.per_address, total_for(nofile, config.total))
        self.connections.on_release = self._connection_closed
        try:
            sockets = listening_sockets(config.host or None, config.port, self.connections)
        except OSError as exc:
            raise StateError(
                f"cannot listen on {config.host or '*'}:{config.port}: {exc.strerror or exc}"
            ) from None
        for sock in sockets:
            await web.SockSite(self._runner, sock, ssl_context=self._ssl).start()
        self.port = int(self._runner.addresses[0][1])
        log.debug(
            "connections: at most %d, %d per address (%d descriptors)",
            self.connections.total,
            self.connections.per_address,
            nofile,
        )

        self._control = ControlServer(self.state, self.control_path, self.info)
        self._control.register("comlog", self._comlog_command)
        self.history.install(self._control)
        await self._control.start()
        self._hub.start()
        await self.history.start()
        self._wake = asyncio.Event()
        self.state.grants.on_change = self.wake
        self._hub.on_subscribe = self.wake
        self._housekeeping = asyncio.create_task(self._housekeep(), name="x1p1-housekeeping")
        if config.auto_approve and not _loopback(config.host):
            log.warning("--auto-approve: any device on the network gets a token unasked")
        if config.mdns:
            await self._start_mdns(meters.electricity_id)

    # --- the comlog (§2.2) ------------------------------------------------------------------

    def _attach_comlog(self, state: GatewayState, store: Store) -> None:
        """Record pairing, the operator's switch and reads, and API/WebSocket use."""
        from x1p1.gateway.comlog import Comlog, ComlogEvent

        comlog = Comlog(store.conn)
        comlog.init_schema()
        self.comlog = comlog

        def record(event: GatewayEvent) -> None:
            kind = comlog_kind(event.kind)
            if kind is None:
                return
            details = dict(event.details)
            name, uuid = details.pop("name", None), details.get("uuid")
            device = _device(str(name), str(uuid)) if name is not None else None
            address = details.pop("address", None) or CLIENT_ADDRESS.get()
            comlog.add(event.at, kind, device, details, address=address)

        def use(token: Grant, route: str) -> None:
            kind = ComlogEvent.WEBSOCKET_USE if route in WEBSOCKET_ROUTES else ComlogEvent.API_USE
            comlog.note_use(state.now(), _device(token.label, token.uuid), kind)

        state.listeners.append(record)
        state.use_listeners.append(use)

    def _note_failure(self, address: str, status: int) -> None:
        """A refused unauthenticated request (server.client_middleware): one comlog row
        per address, kind and minute (docs/reliability.md)."""
        from x1p1.gateway.comlog import ComlogEvent

        if self.comlog is None:
            return
        kind = ComlogEvent.UNAUTHORIZED if status == 401 else ComlogEvent.REFUSED
        self.comlog.note_failure(self.config.now(), address, kind)

    def _comlog_command(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from x1p1.x1.api import parse_time

        since = args.get("since")
        limit = args.get("limit", 1000)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 100_000:
            raise BadRequest("limit: a whole number from 1 to 100000 expected")
        moment = None if since is None else parse_time(since, "since")
        entries = self.comlog.entries(moment, limit) if self.comlog is not None else []
        return {"entries": [entry.to_json() for entry in entries]}

    async def _start_mdns(self, serial: str) -> None:
        config = self.config
        if _loopback(config.host):
            log.info("mDNS is off: the gateway listens on loopback only")
            return
        from x1p1.gateway.mdns import MdnsAdvertiser

        addresses = config.mdns_addresses
        if addresses is None and not _wildcard(config.host):
            addresses = [config.host]
        self._advertiser = MdnsAdvertiser(
            port=self.port,
            serial=serial,
            base_name=config.hostname,
            addresses=addresses,
            on_rename=self._renamed,
        )
        try:
            self.host_name = await self._advertiser.start()
        except MdnsError as exc:
            log.warning("mDNS is off: %s", exc)
            await self._advertiser.close()
            self._advertiser = None
            return
        await self._cover(self.host_name)

    async def _renamed(self, host_name: str) -> None:
        self.host_name = host_name
        log.warning("mDNS: another host took our name; now %s", host_name)
        await self._cover(host_name)

    async def _cover(self, host_name: str) -> None:
        """Make the TLS leaf name ``host_name`` (issued again if it does not yet)."""
        from x1p1.gateway.pki import GatewayPKI

        if self._pki is None or self._pki.covers([host_name], base_name=self.config.hostname):
            return
        self._pki = await asyncio.to_thread(
            GatewayPKI.load_or_create,
            self.state_dir,
            [host_name],
            self._pki.leaf_ip_addresses,
            base_name=self.config.hostname,
        )
        self._ssl.load_cert_chain(self._pki.leaf_cert_path, self._pki.leaf_key_path)

    def wake(self) -> None:
        """Make the housekeeping loop look at its deadlines again (a change it may not
        know of: a new request, an approval, a new stream, a moved test clock). Call it on
        the gateway's event loop."""
        if self._wake is not None:
            self._wake.set()

    def _connection_closed(self) -> None:
        """A connection closed: hand freed memory back once the minute since the last
        time has passed (one wake per minute at most, none while nothing closes)."""
        if self._release_due is None:
            self._release_due = max(time.monotonic(), self._released + RELEASE_MEMORY_EVERY)
            self.wake()

    def housekeeping_timeout(self, failed: bool = False) -> float | None:
        """Seconds until the housekeeping loop has something to do: the earlier of the
        ledger's next deadline (:meth:`~x1p1.x1.grants.Ledger.next_deadline`) and the
        next hand-back of memory; None when nothing is due (it then waits for a change
        alone). After a refused write, at least :data:`MAINTAIN_RETRY`."""
        assert self.state is not None
        waits: list[float] = []
        deadline = self.state.grants.next_deadline()
        if deadline is not None:
            waits.append((deadline - self.config.now()).total_seconds())
            if failed:
                waits[-1] = max(waits[-1], MAINTAIN_RETRY)
        if self._release_due is not None:
            waits.append(self._release_due - time.monotonic())
        return max(0.0, min(waits)) if waits else None

    async def _housekeep(self) -> None:
        """The one housekeeping loop (timers are data, architecture.md, habit 12): run the
        ledger's maintenance with ``now``, then wait for the earlier of what the ledger
        says is next due and a change (:meth:`wake`). Nothing wakes it while nothing is
        due; nothing is rescheduled. The wait is measured on the monotonic clock; if the
        wall clock jumps meanwhile, the ledger still expires what is due on every read
        (the API, the portal, the meter's buttons), and the next change wakes the loop."""
        assert self.state is not None and self._wake is not None
        while True:
            self.housekeeping_rounds += 1
            failed = False
            try:
                self.state.grants.maintain()
            except StorageUnavailable:
                failed = True  # logged by the ledger, at most once a minute
            except Exception:
                failed = True
                log.exception("housekeeping failed")
            if self._release_due is not None and time.monotonic() >= self._release_due:
                self._release_due = None
                self._released = time.monotonic()
                release_memory()
            self._wake.clear()
            self.last_timeout = self.housekeeping_timeout(failed)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that comes as the event is set (a connection closing at stop)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.last_timeout):
                    await self._wake.wait()

    async def stop(self) -> None:
        """Stop every part that was started (safe to call twice)."""
        advertiser, self._advertiser = self._advertiser, None
        if advertiser is not None:
            with contextlib.suppress(Exception):
                await advertiser.close()
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        hub = self._hub
        if hub is not None:
            hub.close_all(1001, "the gateway is shutting down")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await hub.wait_idle()
            await hub.stop()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        control, self._control = self._control, None
        if control is not None:
            await control.close()
        history, self.history = self.history, None
        if history is not None:
            await history.stop()
        comlog, self.comlog = self.comlog, None
        if comlog is not None:
            with contextlib.suppress(Exception):
                comlog.flush(self.config.now())
        store, self._store = self._store, None
        if store is not None:
            store.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()


def release_memory() -> None:
    """Hand memory that closed connections freed back to the system (glibc's
    ``malloc_trim``; elsewhere nothing). asyncio gives every TLS connection a 256 KiB
    buffer, and glibc keeps what it freed: without this, a burst of a few hundred
    connections (or a slowloris) would leave the gateway that much bigger for good."""
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes

        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _sim_clock(speed: float) -> SimTime:
    """The meters' clock: at wall second ``start`` it shows that second; ``speed`` times
    faster after it."""
    from x1p1.gateway.simulation.clock import SimClock

    start = math.floor(time.time())
    clock = SimClock(float(start), datetime.fromtimestamp(start, UTC), speed)
    return clock.sim_now


def banner(gateway: Gateway) -> list[str]:
    """The lines ``x1p1 gateway serve`` prints on start (tests parse the first)."""
    lines = [f"x1p1 gateway listening on {gateway.url}"]
    if gateway.host_name:
        lines.append(
            f"mDNS host name: {gateway.host_name} (https://{gateway.host_name}:{gateway.port})"
        )
    lines += [
        f"root CA: {gateway.ca_path}",
        f"control socket: {gateway.control_path} (x1p1 meter list|approve|deny)",
        f"customer portal: {gateway.url}/ (log in by approving it: x1p1 meter approve)",
    ]
    return lines


async def run_gateway(
    config: GatewayConfig,
    *,
    ready: Callable[[Gateway], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a gateway until SIGINT/SIGTERM (in the main thread) or until ``stop`` is set.
    ``ready`` is called once it serves (default: print the banner)."""
    gateway = Gateway(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await gateway.start()
        if ready is not None:
            ready(gateway)
        else:
            print("\n".join(banner(gateway)), flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await gateway.stop()
