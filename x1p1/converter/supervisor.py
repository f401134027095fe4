"""``x1p1 run``: the supervisor that wires pairing, stream, serial, TCP, status and systemd.

The relay path is short: a WebSocket message goes to the P1 core's reader
(:mod:`x1p1.converter.stream`), a telegram whose CRC matched goes to the serial worker's
one-slot mailbox (:mod:`x1p1.converter.serial_out`) and to the TCP clients
(:mod:`x1p1.converter.tcp_out`). Nothing else happens per telegram: the token watch,
systemd's watchdog and the status file (its counters once a minute; ``x1p1 status``
asks the daemon on a socket, :mod:`x1p1.converter.status_socket`) are one housekeeping
round every 5 s. While telegrams flow, that round rides on the telegram that finds it
due (the process is awake then anyway), so a 1 Hz stream costs no wake-up of its own.
The housekeeping loop waits for its deadline (the round's due time plus a little slack)
or for a round done by a telegram, each time with a fresh timeout computed from the
round's due time, never a timer pushed back (docs/architecture.md, habit 12); it runs
the round itself only when no telegram came.

The supervisor keeps the pairing (``token.json``): it builds each connection's target
from it (the ``--gateway`` and ``--ca`` options override), re-reads it when ``x1p1 pair``
writes a new one, saves what it learns (the gateway's serial from the first telegram's
0-0:96.1.1, a new address found by mDNS), and looks the gateway up by mDNS by its serial
after repeated failures (X1 §4.3.3), unless ``--gateway`` fixed the address.

systemd (``Type=notify``): READY once the first connection attempt has been made,
WATCHDOG from the housekeeping loop (three times per ``WatchdogSec``), STATUS on every
change of the connection's state, STOPPING on the way out. SIGTERM and SIGINT stop it
cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from x1p1.converter import systemd
from x1p1.converter.config import GatewayAddress, ListenAddress, OutputConfig, RunConfig
from x1p1.converter.outputs import Outputs
from x1p1.converter.quiet import CauseLog
from x1p1.converter.serial_out import SerialLike, SerialOutput, open_serial
from x1p1.converter.source_stream import SourceStream
from x1p1.converter.state import (
    DaemonStatus,
    SavedPairing,
    StateDirLock,
    StatusPublisher,
    TokenFileWatch,
    load_pairing,
    prepare_state_dir,
    save_pairing,
    status_path,
)
from x1p1.converter.status_socket import StatusServer, socket_path
from x1p1.converter.stream import StreamSettings, StreamTarget
from x1p1.converter.tcp_out import TcpOutput
from x1p1.converter.tls import converter_context
from x1p1.descriptors import UNLIMITED, open_descriptors, raise_nofile_limit
from x1p1.exceptions import ConfigError, NotPaired, StateError, TelegramError, X1P1Error
from x1p1.p1.reader import InvalidTelegram
from x1p1.p1.telegram import Telegram
from x1p1.x1.api import format_time
from x1p1.x1.connection import Conn
from x1p1.x1.source import Action, Mode, Source, SourceMachine

if TYPE_CHECKING:
    from x1p1.x1.endpoints import ApiPaths
    from x1p1.x1.realtime import MeterInfo

__all__ = ["Converter", "ConverterOptions", "percentiles", "run_converter"]

log = logging.getLogger(__name__)

STATUS_INTERVAL = 60.0
"""Seconds between status files whose only news is counters (a change of state: at once).
``x1p1 status`` asks the running daemon on its socket for the counts of the moment."""
EXPIRY_CHECK = 12 * 3600.0
"""Seconds between reads of the token's expiry (``GET /api/token``)."""
ERROR_STATES = frozenset(
    {
        Conn.BACKOFF,
        Conn.NEEDS_PAIRING,
        Conn.NO_GRANT,
        Conn.X1_DISABLED,
        Conn.CERTIFICATE_ERROR,
        Conn.TLS_VERSION,
    }
)
"""Connection states that mean something went wrong: ``x1p1 status`` shows the last."""
REFUSED = "refused"
"""What ``x1p1 status`` shows after a start refused in one sentence (a serial path that
is no serial device, a TCP port in use, a CA that cannot be used): the daemon stopped."""
DROPPING_INVALID = "dropping-invalid"
"""What ``x1p1 status`` shows for a connection whose every telegram is dropped as invalid
(docs/x1-api.md, "What the converter tolerates"): it exits non-zero then."""
EQUIPMENT_ID = "0-0:96.1.1"
"""The E meter's equipment identifier (P1 §7.1), what mDNS advertises as ``serial``."""


@dataclass
class ConverterOptions:
    """Everything the converter needs; :meth:`from_run_config` builds it for ``x1p1 run``."""

    state_dir: Path
    gateway: GatewayAddress | None = None
    ca: Path | None = None
    tls_name: str | None = None
    """Verify the certificate for this name (``--tls-name``) instead of the saved one."""
    serial: str | None = "/dev/x1p1-p1"
    data_request: str = "ignore"
    tcp: ListenAddress | None = None
    outputs: tuple[OutputConfig, ...] | None = None
    """Every output (``[[output]]``); None: ``serial`` with ``data_request``, and ``tcp``."""
    stream: StreamSettings = field(default_factory=StreamSettings)
    opener: Callable[[str, float], SerialLike] = open_serial
    serial_reopen: float = 1.0
    tick: float = 5.0
    """Seconds between housekeeping rounds (a third of systemd's watchdog at most)."""
    token_check: float = 5.0
    discover_timeout: float = 5.0
    rediscover: Callable[[SavedPairing], Awaitable[SavedPairing | None]] | None = None
    """Look the paired gateway up (default: mDNS by serial); None result: not found."""
    status_file: Path | None = None
    status_interval: float | None = None
    env: dict[str, str] | None = None
    api_base: str | None = None
    """The API base (``--api-base``, ``api_base``); None: the --gateway URL's, the
    pairing's, or ``/api``."""
    source: str = "auto"
    """Where telegrams come from: auto, legacy-p1 or realtime (x1p1/x1/source.py)."""
    legacy_p1_path: str | None = None
    tcp_clients: int = 16

    @classmethod
    def from_run_config(cls, config: RunConfig) -> ConverterOptions:
        return cls(
            state_dir=config.state_dir,
            gateway=config.gateway,
            ca=config.ca,
            tls_name=config.tls_name,
            serial=config.serial or None,
            data_request=config.data_request,
            tcp=config.tcp,
            api_base=config.api_base,
            legacy_p1_path=config.legacy_p1_path,
            tcp_clients=config.tcp_clients,
            outputs=config.all_outputs(),
            source=config.data_source,
        )

    def all_outputs(self) -> tuple[OutputConfig, ...]:
        """The outputs to run (see ``outputs``)."""
        if self.outputs is not None:
            return self.outputs
        out = []
        if self.serial:
            out.append(OutputConfig(serial=self.serial, data_request=self.data_request))  # type: ignore[arg-type]
        if self.tcp is not None:
            out.append(OutputConfig(tcp=self.tcp))
        return tuple(out)


def percentiles(samples: tuple[float, ...]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (seconds), in milliseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] * 1000.0, 3)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1] * 1000.0, 3)}


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


class Converter:
    """One run of the converter. ``await run()``; ``stop()`` from a signal or a test."""

    def __init__(self, options: ConverterOptions) -> None:
        self.options = options
        self.state_dir = options.state_dir
        self.pairing: SavedPairing | None = None
        self.relayed = 0
        self.dropped_invalid = 0
        self._quiet = CauseLog(log)
        self.invalid_reasons: Counter[str] = Counter()
        self.last_telegram: float | None = None
        self.started_at = datetime.now(UTC)
        self._state_wall = self.started_at
        self._last_error: dict[str, Any] | None = None
        self._refusal: str | None = None
        """The sentence that refused the start, if one did (:data:`REFUSED`)."""
        self._ssl: tuple[tuple[str | None, str | None], ssl.SSLContext] | None = None
        self._watch = TokenFileWatch(self.state_dir)
        self._state_dir_text = str(self.state_dir.resolve())
        self._stop = asyncio.Event()
        self._ready_sent = False
        self._learn_serial = False
        self._expiry_checked: float | None = None
        self._first_on_link = False
        self._memory_released = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._period = options.tick
        self._housekeeping_due = float("inf")  # set when the run starts
        self._next_token_check = 0.0
        self._next_status = 0.0
        self._replan = asyncio.Event()
        """Set when a telegram did the round or the run should stop: the housekeeping
        loop computes its deadline anew."""
        self._watchdog = False
        self._slack = 0.0
        self._republish: asyncio.TimerHandle | None = None
        self.outputs = Outputs(
            options.all_outputs(),
            opener=options.opener,
            serial_reopen=options.serial_reopen,
            tcp_clients=options.tcp_clients,
            quiet=self._quiet,
        )
        self.serial: SerialOutput | None = next(iter(self.outputs.serials), None)
        """The first serial output (what the flat status fields describe)."""
        self.tcp: TcpOutput | None = next(iter(self.outputs.tcps), None)
        path = options.status_file or status_path(self.state_dir, options.env)
        interval = options.status_interval
        if interval is None:
            interval = STATUS_INTERVAL
        self.publisher = StatusPublisher(path, interval)
        self.status_server = StatusServer(socket_path(path), self.status)
        self.sources = SourceMachine(Mode(options.source), scale=options.stream.scale)
        self._grant_task: asyncio.Future[None] | None = None
        self.stream = SourceStream(
            self._target,
            self._on_telegram,
            sources=self.sources,
            realtime_path=lambda: self.paths().realtime,
            fetch_meters=self._fetch_meters,
            on_forbidden=self._read_grant_soon,
            on_invalid=self._on_invalid,
            on_state=self._on_state,
            rediscover=self._rediscover if options.gateway is None else None,
            settings=options.stream,
        )

    # -- the relay path (per telegram) -----------------------------------------------------

    def _on_telegram(self, raw: bytes, received: float) -> None:
        self.relayed += 1
        self.last_telegram = received
        self.outputs.publish(raw, received)
        if self._first_on_link:
            self._first_on_link = False
            asyncio.get_running_loop().call_soon(self._publish_first)
        if self._learn_serial:
            self._learn_serial = False
            self._save_serial(raw)
        if received >= self._housekeeping_due:
            self._housekeep(received)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """What asyncio reports (such as ``socket.accept() out of system resource`` when
        file descriptors run out): once a minute per message, with no traceback above
        debug level, and never the end of anything."""
        from x1p1.x1.readers import printable

        message = str(context.get("message") or "an error in the event loop")
        exc = context.get("exception")
        detail = f": {printable(exc)}" if isinstance(exc, BaseException) else ""
        self._quiet.log(logging.WARNING, message, "%s%s", printable(message), detail)
        if isinstance(exc, BaseException):
            log.debug("%s", message, exc_info=exc)

    def _unexpected(self, where: str, exc: Exception) -> None:
        """Log an unexpected error once a minute per cause, with its cause; carry on."""
        from x1p1.x1.readers import printable

        cause = f"{type(exc).__name__} in {where}"
        self._quiet.log(
            logging.ERROR, cause, "unexpected %s: %s; carrying on", cause, printable(exc)
        )
        log.debug("unexpected error in %s", where, exc_info=exc)

    def _on_invalid(self, event: InvalidTelegram) -> None:
        self.dropped_invalid += 1
        self.invalid_reasons[event.reason.value] += 1

    # -- pairing ---------------------------------------------------------------------------

    def _load_pairing(self) -> None:
        try:
            self.pairing = load_pairing(self.state_dir)
        except NotPaired as exc:
            self.pairing = None
            log.error("%s; waiting for a token", exc)
        except StateError as exc:
            self.pairing = None
            log.error("%s; waiting for a new token", exc)
        self._learn_serial = self.pairing is not None and self.pairing.serial is None
        granted = self.pairing.profiles if self.pairing is not None else frozenset()
        self.sources.new_pairing(granted)

    def _context(self, pairing: SavedPairing) -> ssl.SSLContext:
        ca = self.options.ca
        key = (str(ca) if ca else None, None if ca else pairing.ca_pem)
        if self._ssl is None or self._ssl[0] != key:
            self._ssl = (key, converter_context(ca, pairing.ca_pem))
        return self._ssl[1]

    def _target(self) -> StreamTarget | None:
        pairing = self.pairing
        if pairing is None:
            return None
        tls_name, port = pairing.host_name, pairing.port
        connect = pairing.address or pairing.host_name
        gateway = self.options.gateway
        if gateway is not None:
            port = gateway.port
            connect = gateway.host
            if not _is_address(gateway.host):
                tls_name = gateway.host
        if self.options.tls_name is not None:
            tls_name = self.options.tls_name
        try:
            context = self._context(pairing)
        except ConfigError as exc:
            log.error("%s", exc)
            return None
        return StreamTarget(
            tls_name, port, connect, pairing.token, context, path=self.paths().legacy_p1
        )

    def paths(self) -> ApiPaths:
        """Where the gateway's endpoints are (x1p1/x1/endpoints.py, strongest first)."""
        from x1p1.x1.endpoints import ApiPaths  # once per connection attempt

        options = self.options
        return ApiPaths.resolve(
            api_base=options.api_base,
            url_base=options.gateway.api_base if options.gateway is not None else None,
            saved_base=self.pairing.api_base if self.pairing is not None else None,
            legacy_p1_path=options.legacy_p1_path,
        )

    def _save(self, pairing: SavedPairing) -> None:
        self.pairing = pairing
        try:
            save_pairing(self.state_dir, pairing)
        except StateError as exc:
            log.warning("could not save what was learned about the gateway: %s", exc)
        self._watch.mark_seen()

    def _save_serial(self, raw: bytes) -> None:
        pairing = self.pairing
        if pairing is None or pairing.serial is not None:
            return
        try:
            obj = Telegram.parse(raw).get(EQUIPMENT_ID)
            serial = bytes.fromhex(obj.value).decode("ascii") if obj is not None else ""
        except (TelegramError, ValueError):
            serial = ""
        if serial.isprintable() and serial:
            log.info("the gateway's meter has equipment id %s; saved for finding it again", serial)
            self._save(pairing.with_gateway(serial=serial))

    def _check_token_file(self) -> None:
        if not self._watch.changed():
            return
        old = self.pairing
        self._load_pairing()
        new = self.pairing
        if new is None:
            if old is not None:
                log.warning("the token was removed (unpaired); stopped relaying")
                self.stream.token_changed()
            return
        if old is None or (old.token, old.host_name, old.port, old.ca_pem) != (
            new.token,
            new.host_name,
            new.port,
            new.ca_pem,
        ):
            log.info("a new pairing was saved (%s); connecting with it", new.describe())
            self._ssl = None
            self.stream.token_changed()
        elif old.profiles != new.profiles:
            self.stream.grant_changed(f"the saved profiles changed: {self.sources.reason}")

    async def _rediscover(self) -> bool:
        pairing = self.pairing
        if pairing is None:
            return False
        look = self.options.rediscover or self._mdns_lookup
        log.info("looking for the gateway %s by mDNS", pairing.describe())
        found = await look(pairing)
        if found is None:
            return False
        if (found.host_name, found.address, found.port, found.api_base) != (
            pairing.host_name,
            pairing.address,
            pairing.port,
            pairing.api_base,
        ):
            log.info("found the gateway at %s", found.describe())
            self._save(found)
        return True

    async def _mdns_lookup(self, pairing: SavedPairing) -> SavedPairing | None:
        from x1p1.converter import discovery

        timeout = self.options.discover_timeout
        try:
            if pairing.serial:
                gateway = await discovery.find_gateway(pairing.serial, timeout)
            else:
                name = pairing.host_name
                if not discovery.mdns_host_names([name]):
                    return None  # an address, or a name the resolver knows: not mDNS's
                found = await discovery.discover(
                    timeout,
                    host_names=[name],
                    stop_when=lambda gs: any(g.host_name.lower() == name.lower() for g in gs),
                )
                matches = [g for g in found if g.host_name.lower() == name.lower()]
                if not matches:
                    return None
                gateway = matches[0]
        except X1P1Error as exc:
            log.info("%s", exc)
            return None
        if not gateway.addresses:
            return None
        addresses = sorted(gateway.addresses, key=lambda a: ":" in a)
        moved = pairing.with_gateway(
            host_name=gateway.host_name, port=gateway.port, address=addresses[0]
        )
        from x1p1.x1.endpoints import ApiPaths

        api = ApiPaths.advertised_base(gateway.api)  # the TXT api= it advertises now
        if api is None:
            return moved
        return replace(moved, api_base=None if api == ApiPaths().api_base else api)

    def _maybe_refresh_expiry(self) -> None:
        """Ask ``GET /api/token`` for the token's expiry (renewed on use, X1 §5.2) after a
        connection is made, at most every 12 hours; saved when it moved by a day or more."""
        now = time.monotonic()
        if self._expiry_checked is not None and now - self._expiry_checked < EXPIRY_CHECK:
            return
        target = self._target()
        if target is None:
            return
        self._expiry_checked = now
        task = asyncio.ensure_future(self._refresh_expiry(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_expiry(self, target: StreamTarget) -> None:
        from x1p1.converter.pairing import GatewayEndpoint, X1Client

        endpoint = GatewayEndpoint(target.tls_name, target.port, (target.connect_host,))
        client = X1Client(
            endpoint, target.ssl_context, token=target.token, timeout=10.0, paths=self.paths()
        )
        try:
            info = await asyncio.to_thread(client.token_info)
        except X1P1Error as exc:
            log.debug("could not read the token's expiry: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - nothing a gateway answers ends the run
            self._unexpected("the token's expiry check", exc)
            return
        pairing = self.pairing
        if pairing is None or pairing.token != target.token or info.expires_at is None:
            return
        old = pairing.expires_at
        if old is None or abs((info.expires_at - old).total_seconds()) >= 86400:
            log.info("the token is valid until %s", info.expires_at.strftime("%Y-%m-%d"))
            self._save(replace(pairing, expires_at=info.expires_at))

    # -- the source: legacy P1 or realtime (x1p1/x1/source.py) ------------------------------

    def _source_due(self, now: float) -> None:
        """The source machine's deadline, checked in each housekeeping round."""
        if not self.sources.due(now):
            return
        action = self.sources.expire(now)
        if action is Action.READ_TOKEN:
            self._start_grant_read()
        elif action is Action.PROBE_LEGACY:
            self.stream.grant_changed(f"trying legacy P1 again: {self.sources.reason}")

    def _read_grant_soon(self) -> None:
        """A refusal asked for the token's profiles: read them now if the source machine
        allows it (else its deadline brings the housekeeping round to it)."""
        now = time.monotonic()
        due = self.sources.read_token_at
        if due is not None and now >= due:
            self.sources.read_token_at = None
            self._start_grant_read()

    def _start_grant_read(self) -> None:
        if self._grant_task is not None:
            return
        target = self._target()
        if target is None:
            return
        task = asyncio.ensure_future(self._read_grant(target))
        self._grant_task = task
        self._tasks.add(task)

        def done(finished: asyncio.Future[None]) -> None:
            self._tasks.discard(finished)
            self._grant_task = None

        task.add_done_callback(done)

    async def _read_grant(self, target: StreamTarget) -> None:
        """``GET /api/token``: the profiles the portal grants now (X1 §5.1.6); follow them."""
        from x1p1.converter.pairing import granted_profiles
        from x1p1.exceptions import Unauthorized

        try:
            info = await asyncio.to_thread(self._client(target).token_info)
        except Unauthorized as exc:
            log.error("the gateway refused the token reading its profiles: %s", exc)
            self.sources.token_unread(time.monotonic())
            self.stream.token_refused()
            return
        except X1P1Error as exc:
            log.warning("could not read the token's profiles: %s", exc)
            self.sources.token_unread(time.monotonic())
            self.stream.grant_unread("could not read the token's profiles")
            return
        pairing = self.pairing
        if pairing is None or pairing.token != target.token:
            return
        granted = granted_profiles(info.profiles, pairing.profiles)
        old_grant = self.sources.granted
        moved = self.sources.token_read(granted, time.monotonic())
        if granted != pairing.profiles:
            self._save(replace(pairing, profiles=granted))
        realtime_grant = granted != old_grant and self.sources.active is Source.REALTIME
        # after a refusal the connection follows whatever the grant says now (x1p1/x1/
        # connection.py, reading-grant); otherwise only a change reconnects
        self.stream.grant_read(
            moved or realtime_grant, f"the token's profiles: {self.sources.reason}"
        )

    def _client(self, target: StreamTarget) -> Any:
        from x1p1.converter.pairing import GatewayEndpoint, X1Client

        endpoint = GatewayEndpoint(target.tls_name, target.port, (target.connect_host,))
        return X1Client(
            endpoint, target.ssl_context, token=target.token, timeout=10.0, paths=self.paths()
        )

    async def _fetch_meters(self, target: StreamTarget) -> tuple[MeterInfo, ...]:
        """``GET /api/meters`` (X1 §8.1): the meters this token may read."""
        from x1p1.x1.realtime import parse_meters

        client = self._client(target)
        reply = await asyncio.to_thread(client.call, "GET", self.paths().meters)
        return parse_meters(reply.body)

    # -- state -----------------------------------------------------------------------------

    def _on_state(self, state: Conn, message: str) -> None:
        self._state_wall = datetime.now(UTC)
        if state in ERROR_STATES and message:
            self._last_error = {"at": format_time(self._state_wall), "message": message}
        if state is Conn.CONNECTED:
            self._first_on_link = True
            self._maybe_refresh_expiry()
        systemd.status(f"{state.value}: {message}", env=self.options.env)
        if not self._ready_sent and state not in (Conn.STARTING, Conn.CONNECTING):
            self._ready_sent = True
            systemd.ready(env=self.options.env)
        self._publish()

    def status(self) -> DaemonStatus:
        """What ``x1p1 status`` shows, as of now."""
        now_wall = datetime.now(UTC)
        now = time.monotonic()
        pairing = self.pairing
        serial = self.serial
        target = self._target() if pairing is not None else None
        gateway: dict[str, Any] = {}
        if pairing is not None:
            gateway = {
                "host_name": pairing.host_name,
                "address": target.connect_host if target else pairing.address,
                "port": target.port if target else pairing.port,
                "serial": pairing.serial,
            }
        last = None
        if self.last_telegram is not None:
            last = now_wall - timedelta(seconds=now - self.last_telegram)
        counts = {
            "relayed": self.relayed,
            "dropped_invalid": self.dropped_invalid,
            "dropped_stale": serial.stats.stale if serial else 0,
            "reconnects": self.stream.machine.reconnects,
            "written": serial.stats.written if serial else 0,
            "not_requested": serial.stats.not_requested if serial else 0,
            "serial_resets": serial.stats.resets if serial else 0,
        }
        serial_info: dict[str, Any] = {"port": None, "state": "off"}
        mode = serial.data_request if serial is not None else self.options.data_request
        data_request: dict[str, Any] = {"mode": mode, "state": "ignored"}
        if serial is not None:
            serial_info = {"port": serial.url, "state": serial.state.value, "error": serial.error}
            data_request["state"] = serial.dr_state.value
        for reason, count in sorted(self.invalid_reasons.items()):
            counts["invalid_" + reason.replace("-", "_")] = count
        connection, message = self.stream.state.value, self.stream.message
        if self._refusal is not None:
            connection, message = REFUSED, self._refusal
        machine = self.stream.machine
        if machine.dropping:
            connection = DROPPING_INVALID
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(machine.dropped.items()))
            message = (
                f"connected, but every telegram from the gateway is dropped as invalid "
                f"({reasons}); nothing reaches the P1 line"
            )
        tcp = None
        if self.tcp is not None:
            tcp = {"listen": self.tcp.address_text, "clients": self.tcp.clients}
            counts["tcp_dropped"] = self.tcp.dropped
            counts["tcp_refused"] = self.tcp.refused
        return DaemonStatus(
            pid=os.getpid(),
            state_dir=self._state_dir_text,
            started_at=self.started_at,
            updated_at=now_wall,
            connection=connection,
            connection_since=self._state_wall,
            message=message,
            gateway=gateway,
            token_expires_at=pairing.expires_at if pairing else None,
            last_telegram_at=last,
            counts=counts,
            latency_ms=percentiles(tuple(serial.stats.latencies)) if serial else {},
            serial=serial_info,
            data_request=data_request,
            tcp=tcp,
            last_error=self._last_error,
            outputs=tuple(self.outputs.status()),
            source=self._source_status(),
        )

    def _source_status(self) -> dict[str, object]:
        """The source machine's status, with the gas subscription's when it is on."""
        status = self.sources.status()
        gas = self.stream.gas_status()
        if gas is not None:
            status["gas"] = gas
        return status

    def _publish_first(self) -> None:
        """The first telegram on a new connection: worth showing at once."""
        self.publisher.force_next()
        self._publish()
        if not self._memory_released:  # start-up is over: hand back what it freed
            self._memory_released = True
            from x1p1.converter.memory import release_free_memory

            release_free_memory()

    def _publish(self) -> None:
        try:
            self.publisher.publish(self.status(), time.monotonic())
        except StateError as exc:
            log.debug("status not written: %s", exc)
        if self.publisher.held_back and self._republish is None:
            # a new state within a second of the last write: write it a second later
            self._republish = asyncio.get_running_loop().call_later(
                self.publisher.urgent_interval, self._publish_held_back
            )

    def _publish_held_back(self) -> None:
        self._republish = None
        self._publish()

    # -- the run -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the converter to stop (safe from a signal handler)."""
        self._stop.set()
        self._replan.set()

    async def run(self) -> int:
        """Run until :meth:`stop`; returns the exit code.

        Refused at once, in one sentence, before anything is relayed: a state directory
        that cannot be written or that another ``x1p1 run`` holds, a ``--serial`` path
        that is no serial device, a TCP output's port that cannot be listened on (each
        output is checked).
        """
        prepare_state_dir(self.state_dir)
        lock = StateDirLock(self.state_dir)
        lock.acquire()
        try:
            try:
                self.outputs.check_serial_paths()
                nofile, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
                self.outputs.fit_descriptors(
                    UNLIMITED if nofile == resource.RLIM_INFINITY else nofile, open_descriptors()
                )
                await self.outputs.start()
                self._load_pairing()
                self._watch.mark_seen()
                if self.pairing is not None:
                    self._context(self.pairing)  # a bad --ca or saved CA fails now, clearly
            except X1P1Error as error:
                self._refused(error)
                raise
            return await self._run()
        finally:
            await self.outputs.close()
            lock.release()

    def _refused(self, error: X1P1Error) -> None:
        """Publish a refusal at start, so that ``x1p1 status`` shows it rather than the
        last run's state. Only once this process holds the state directory's lock: a
        second ``x1p1 run`` refused for that lock never overwrites the running daemon's
        status."""
        self._refusal = str(error)
        self._state_wall = datetime.now(UTC)
        self._last_error = {"at": format_time(self._state_wall), "message": self._refusal}
        self.publisher.interval = self.publisher.urgent_interval = 0.0
        try:
            self.publisher.publish(self.status(), time.monotonic())
        except Exception as exc:  # the refusal itself is what the user must see
            log.debug("the refusal's status was not written: %s", exc)

    async def _run(self) -> int:
        options = self.options
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self.outputs.start_threads()
        try:
            await self.status_server.start()
            stream_task = asyncio.ensure_future(self.stream.run())
            try:
                await self._supervise(stream_task)
            finally:
                self.stream.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(stream_task, 5.0)
                for task in list(self._tasks):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            loop.set_exception_handler(previous_handler)
            systemd.stopping(env=options.env)
            await self.status_server.close()
            await asyncio.gather(
                *(asyncio.to_thread(serial.stop) for serial in self.outputs.serials)
            )
            if self._republish is not None:
                self._republish.cancel()
            self.publisher.interval = 0.0
            self.publisher.urgent_interval = 0.0
            self._publish()
        log.info(
            "stopped: %d telegrams relayed, %d invalid dropped", self.relayed, self.dropped_invalid
        )
        return 0

    async def _supervise(self, stream_task: asyncio.Future[None]) -> None:
        """Housekeeping every ``period`` s: watchdog, token file, status. This loop runs
        it when no telegram did (see the module's docstring)."""
        options = self.options
        watchdog = systemd.watchdog_interval(env=options.env)
        self._period = options.tick if watchdog is None else min(options.tick, watchdog / 3)
        # the loop waits a little longer than the round is due: at 1 Hz a telegram comes
        # first and does the round, and the loop plans its wait anew
        self._slack = min(1.5, self._period / 2)
        self._watchdog = watchdog is not None
        now = time.monotonic()
        self._next_token_check = now + options.token_check
        self._next_status = now + self.publisher.interval
        self._housekeeping_due = now + self._period
        while not self._stop.is_set():
            self._replan.clear()
            wait = max(0.0, self.wake_at() - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._replan.wait()
            if stream_task.done():
                stream_task.result()  # a bug in the stream: raise it
                return
            now = time.monotonic()
            if now >= self._housekeeping_due:
                self._housekeep(now)

    def wake_at(self) -> float:
        """When the housekeeping loop must wake by itself (monotonic seconds): the round's
        due time plus the slack that lets a telegram do it first."""
        return self._housekeeping_due + self._slack

    def _housekeep(self, now: float) -> None:
        """One round: systemd's watchdog, the token file when due, the status when due;
        then the next round is due ``period`` s from now (the loop waits for it anew)."""
        self._housekeeping_due = now + self._period
        self._replan.set()
        if self._watchdog:
            systemd.watchdog(env=self.options.env)
        if now >= self._next_token_check:
            self._next_token_check = now + self.options.token_check
            self._check_token_file()
        self._source_due(now)
        if now >= self._next_status:
            self._next_status = now + self.publisher.interval
            self._publish()
        self.outputs.summarise(now)


def run_converter(config: RunConfig) -> int:
    """``x1p1 run``: the converter in the foreground until SIGTERM or SIGINT."""
    raise_nofile_limit()  # the TCP clients are capped below it (Outputs.fit_descriptors)
    converter = Converter(ConverterOptions.from_run_config(config))

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, converter.stop)
        try:
            return await converter.run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
