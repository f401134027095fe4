"""The subscription that follows the source: legacy P1, or telegrams built from realtime.

:class:`SourceStream` is the :class:`~x1p1.converter.stream.LegacyP1Stream` adapter with
a second endpoint. Which one it opens is decided by the sans-I/O
:class:`~x1p1.x1.source.SourceMachine` (docs/config.example.toml, ``source``); this file
only does what it says:

- legacy P1 (``/api/legacy-p1``): telegrams are relayed byte for byte, as before;
- realtime (``/api/realtime``, docs/x1-api.md, WebSocket): before each connection the
  meters the token may read come from ``GET /api/meters`` (§8.1), the subscription asks
  every second for every realtime object of the electricity meter's granted profiles
  (:func:`x1p1.x1.realtime.subscription`), and each electricity message becomes one DSMR
  5.0.2 telegram (:class:`x1p1.x1.realtime_builder.RealtimeBuilder`) that goes the same
  way as a relayed one. With G-REALTIME, :class:`GasStream` keeps a second subscription for the gas
  meters (:func:`x1p1.x1.realtime.gas_subscription`) at the interval the sans-I/O
  :class:`~x1p1.x1.gas_feed.GasFeed` chooses (every second until a reading is held, then
  every minute; P1 §7.3); each telegram carries its latest reading with the reading's own
  time.

In ``auto``, a 404 on the legacy handshake moves to realtime at once (when the token has
a realtime profile); a 403 or a close 4403 means the grant changed in the portal
(§5.1.6): the connection waits in ``reading-grant`` while the supervisor re-reads
``GET /api/token`` (``on_forbidden``) and reports it (:meth:`SourceStream.grant_read`),
which connects anew to what the grant allows, or waits in ``waiting-for-grant`` when it
allows nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from x1p1.converter.stream import LegacyP1Stream, StreamSettings, StreamTarget, Subscription
from x1p1.exceptions import ForbiddenProfile, GatewayError, X1P1Error
from x1p1.p1.reader import InvalidTelegram
from x1p1.x1.api import format_time
from x1p1.x1.connection import AWAITS_GRANT_READ, STATE_SENTENCES, Conn, Ev
from x1p1.x1.gas_feed import GAS_INTERVAL, Gas, GasEv, GasFeed
from x1p1.x1.readers import printable
from x1p1.x1.source import Mode, Source, SourceMachine

if TYPE_CHECKING:
    from x1p1.x1.realtime import MeterInfo, RealtimeMessage
    from x1p1.x1.realtime import Subscription as RealtimeSubscription
    from x1p1.x1.realtime_builder import RealtimeBuilder

# The realtime reader and builder (x1p1/x1/realtime.py, realtime_builder.py,
# realtime_telegram.py, and the OBIS registry they need) are imported when the source
# first is realtime: a converter that relays legacy P1 never needs them and stays
# smaller (docs/performance.md).

__all__ = ["GasStream", "SourceStream"]

log = logging.getLogger(__name__)

BAD_MESSAGE_LOG_EVERY = 60.0
"""A gateway sending unusable realtime messages gets one log line a minute."""
NOT_FOUND = 404


class SourceStream(LegacyP1Stream):
    """Keeps the subscription the :class:`SourceMachine` chooses up (see the module).

    ``target()`` gives the legacy-P1 target (token, address, TLS); ``realtime_path()``
    the realtime endpoint's path; ``fetch_meters(target)`` asks ``GET /api/meters``;
    ``on_forbidden()`` asks the supervisor to re-read the token's profiles.
    """

    def __init__(
        self,
        target: Callable[[], StreamTarget | None],
        on_telegram: Callable[[bytes, float], None],
        *,
        sources: SourceMachine,
        realtime_path: Callable[[], str],
        fetch_meters: Callable[[StreamTarget], Awaitable[tuple[MeterInfo, ...]]],
        on_forbidden: Callable[[], None] | None = None,
        on_invalid: Callable[[InvalidTelegram], None] | None = None,
        on_state: Callable[[Conn, str], None] | None = None,
        rediscover: Callable[[], Awaitable[bool]] | None = None,
        settings: StreamSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            self._source_target,
            on_telegram,
            on_invalid=on_invalid,
            on_state=on_state,
            rediscover=rediscover,
            settings=settings,
            clock=clock,
        )
        self.sources = sources
        self._legacy_target = target
        self._realtime_path = realtime_path
        self._fetch_meters = fetch_meters
        self._on_forbidden = on_forbidden
        self._meters: tuple[MeterInfo, ...] = ()
        self._builder: RealtimeBuilder | None = None
        self._assembled_for: tuple[tuple[MeterInfo, ...], RealtimeSubscription | None] | None = None
        self.gas = GasFeed()
        """The gas subscription's life cycle (x1p1/x1/gas_feed.py)."""
        self._gas_sub: RealtimeSubscription | None = None
        self._gas_stream: GasStream | None = None
        self.connected_source: Source | None = None
        """The endpoint of the open connection (None: none open)."""
        self.built = 0
        """Telegrams built from realtime messages."""
        self.bad_messages = 0
        self._bad_logged_at = -BAD_MESSAGE_LOG_EVERY
        self._repeated = b""
        """The last message that built nothing (a gas reading): the same bytes again are
        skipped without parsing."""
        self._parse: Callable[[bytes], RealtimeMessage] | None = None

    @property
    def profile(self) -> str:  # type: ignore[override]
        """The profile a 403 names: P1, or the realtime ones."""
        if self.sources.active is Source.REALTIME:
            return "E-REALTIME"
        return "P1"

    @property
    def what(self) -> str:  # type: ignore[override]
        if self.sources.active is Source.REALTIME:
            return "telegrams built from realtime values"
        return "legacy P1"

    # -- from the supervisor -----------------------------------------------------------

    def grant_changed(self, message: str) -> None:
        """The source machine moved (or the realtime grant changed): connect anew."""
        log.info("%s", message)
        self.retarget(message)

    def grant_read(self, changed: bool, message: str) -> None:
        """The token's profiles were read (``GET /api/token``): connect anew when the
        source or its grant ``changed``, and after a refusal whatever the grant says
        (:data:`~x1p1.x1.connection.AWAITS_GRANT_READ`)."""
        if changed or self.machine.state in AWAITS_GRANT_READ:
            self.grant_changed(message)

    def token_refused(self) -> None:
        """``GET /api/token`` answered 401: the token itself was revoked, so a wait for
        the grant becomes a wait for ``x1p1 pair`` (x1p1/x1/connection.py)."""
        self._apply(Ev.UNAUTHORIZED, STATE_SENTENCES[Ev.UNAUTHORIZED])

    def grant_unread(self, sentence: str) -> None:
        """Reading the token's profiles failed (``sentence``): after a refusal, connect
        anew anyway; the gateway's answer to the subscription tells again."""
        if self.machine.state in AWAITS_GRANT_READ:
            self.grant_changed(f"{sentence}; connecting again")

    # -- where to connect ------------------------------------------------------------------

    def _source_target(self) -> StreamTarget | None:
        base = self._legacy_target()
        if base is None or self.sources.active is not Source.REALTIME:
            return base
        from x1p1.x1.realtime import subscription

        sub = subscription(self.sources.granted, self._meters)
        if sub is None:
            return None
        query = (("equipment_id", ",".join(sub.equipment_ids)), ("obis", ",".join(sub.codes)))
        return replace(base, path=self._realtime_path(), query=query)

    async def _connect_and_relay(self) -> None:
        sources = self.sources
        if self._legacy_target() is None:
            await super()._connect_and_relay()  # says "not paired"
            return
        if sources.active is None:
            sentence = (
                f"{sources.reason}; waiting until the customer grants a profile in the "
                "portal (read again every minute) or `x1p1 pair` saves a new token"
            )
            log.warning("%s", sentence)
            self._apply(Ev.NO_GRANT, sentence)
            return
        if sources.active is Source.REALTIME:
            from x1p1.x1.realtime import subscription

            base = self._legacy_target()
            assert base is not None
            try:
                self._meters = await self._fetch_meters(base)
            except ForbiddenProfile:
                self._forbidden("the gateway refused GET /api/meters (HTTP 403)")
                self._apply(Ev.FORBIDDEN, "the token's profiles changed: reading them again")
                return
            except X1P1Error as exc:
                self._failed(f"cannot list the gateway's meters: {printable(exc)}")
                return
            if subscription(sources.granted, self._meters) is None:
                sentence = (
                    "the gateway lists no electricity meter this token may read, so no "
                    "telegram can be built; waiting for the portal's grant or `x1p1 pair`"
                )
                log.error("%s", sentence)
                self._apply(Ev.UNAUTHORIZED, sentence)
                return
        self.connected_source = sources.active
        gas_task = self._start_gas() if sources.active is Source.REALTIME else None
        try:
            await super()._connect_and_relay()
        finally:
            self.connected_source = None
            if gas_task is not None:
                await self._stop_gas(gas_task)

    # -- the gas meters' subscription --------------------------------------------------------

    def _start_gas(self) -> asyncio.Task[None] | None:
        """Join messages afresh if the meters or the grant changed; start the gas
        subscription when there is gas to read (x1p1/x1/gas_feed.py)."""
        from x1p1.x1.realtime import RealtimeMessage, gas_subscription
        from x1p1.x1.realtime_builder import RealtimeBuilder

        self._parse = RealtimeMessage.parse
        gas = gas_subscription(self.sources.granted, self._meters)
        key = (self._meters, gas)
        if self._builder is None or self._assembled_for != key:
            self._builder = RealtimeBuilder(self._meters)
            self._assembled_for = key
        now = self._clock()
        self._gas_sub = gas
        if gas is None:
            self.gas.handle(GasEv.STOP, now)
            return None
        held = self._builder.assembler.has_gas
        self.gas.handle(GasEv.START_HELD if held else GasEv.START_EMPTY, now)
        # its own messages, at least one a GAS_INTERVAL, keep NAT and firewall state alive:
        # no pings (each would wake the converter twice); liveness is the stall deadline
        settings = replace(
            self.settings,
            stall_timeout=max(self.settings.stall_timeout, 2.0 * GAS_INTERVAL),
            ping_interval=None,
        )
        stream = GasStream(self, settings=settings, clock=self._clock)
        self._gas_stream = stream
        return asyncio.ensure_future(stream.run())

    async def _stop_gas(self, task: asyncio.Task[None]) -> None:
        stream, self._gas_stream = self._gas_stream, None
        try:
            if stream is not None:
                stream.stop()
            await asyncio.wait({task}, timeout=self.settings.close_timeout + 1.0)
        finally:
            task.cancel()

    def _gas_target(self) -> StreamTarget | None:
        base = self._legacy_target()
        gas = self._gas_sub
        if base is None or gas is None:
            return None
        query = (("equipment_id", ",".join(gas.equipment_ids)), ("obis", ",".join(gas.codes)))
        return replace(base, path=self._realtime_path(), query=query, interval=self.gas.interval)

    def gas_status(self) -> dict[str, object] | None:
        """``x1p1 status``: the gas subscription (x1p1/x1/gas_feed.py), None when off:
        its state and interval, its connection, the readings read and the meter's time
        of the latest one held."""
        if self.gas.state is Gas.OFF:
            return None
        stream = self._gas_stream
        held = self._builder.assembler.gas if self._builder is not None else ()
        latest = max((g.captured for g in held), default=None)
        return {
            **self.gas.status(),
            "connection": stream.state.value if stream is not None else None,
            "reading_at": format_time(latest) if latest is not None else None,
        }

    def gas_received(self, data: bytes, now: float) -> None:
        """One message of the gas subscription: keep its readings for the telegrams."""
        builder = self._builder
        gas = self._gas_sub
        parse = self._parse
        if builder is None or gas is None or parse is None:
            return
        try:
            message = parse(data)
            if message.equipment_id not in gas.equipment_ids:
                return
            builder.assembler.receive(message)
        except Exception as exc:  # GatewayError, or a message this code did not foresee
            self._bad_message(exc, now)
            return
        stream = self._gas_stream
        if stream is not None:
            stream.machine.useful(now)
        if self.gas.handle(GasEv.READING, now) and stream is not None:
            stream.retarget(f"a gas reading is held: asking for one every {GAS_INTERVAL} s")

    # -- the messages ----------------------------------------------------------------------

    def begin(self) -> None:
        super().begin()
        self.sources.opened()
        self._repeated = b""

    def received(self, data: bytes, now: float) -> None:
        if self.connected_source is not Source.REALTIME:
            super().received(data, now)
            return
        if data == self._repeated:
            return  # the same gas reading again (it changes every 5 minutes): known
        builder = self._builder
        assert builder is not None
        try:
            raw = builder.receive(data)
        except Exception as exc:  # GatewayError, or a message this code did not foresee
            self._bad_message(exc, now)
            return
        if raw is None:
            self._repeated = data
            return
        if not self.gas.builds(now):
            return  # the first gas reading is on its way (x1p1/x1/gas_feed.py)
        self.built += 1
        self._on_telegram(raw, now)
        self.machine.useful(now)

    def _bad_message(self, error: Exception, now: float) -> None:
        """Drop a realtime message that could not be used; say why at most once a minute
        (the type too when it is not the reader's own :class:`GatewayError`)."""
        self.bad_messages += 1
        self.machine.dropped_one("realtime-message")
        if now - self._bad_logged_at >= BAD_MESSAGE_LOG_EVERY:
            self._bad_logged_at = now
            why = printable(str(error))
            if not isinstance(error, GatewayError):
                why = f"{type(error).__name__}: {why}"
            log.warning("dropped a realtime message from the gateway: %s", why)

    # -- refusals and closes ---------------------------------------------------------------

    def _forbidden(self, sentence: str) -> None:
        """Have the token's profiles read again (X1 §5.1.6), saying why."""
        log.warning("%s; reading the token's profiles again (X1 §5.1.6)", sentence)
        self.sources.forbidden(self._clock())
        if self._on_forbidden is not None:
            self._on_forbidden()

    def refused(self, status: int, headers: Mapping[str, str], where: str) -> None:
        legacy = self.sources.active is Source.LEGACY_P1
        if status == NOT_FOUND and legacy and self.sources.mode is Mode.AUTO:
            if self.sources.legacy_not_found(self._clock()):
                log.warning(
                    "the gateway %s has no legacy P1 (HTTP 404); %s", where, self.sources.reason
                )
                self._apply(Ev.RETARGET, self.sources.reason)
                return
            # the saved grant has no realtime profile: ask what the gateway grants now
            self._forbidden(f"the gateway {where} has no legacy P1 (HTTP 404)")
        if status == ForbiddenProfile.status:
            self._forbidden(f"the gateway refused the {self.sources.active} subscription (403)")
        super().refused(status, headers, where)

    def closed(self, code: int | None, reason: str) -> None:
        if code == ForbiddenProfile.close_code:
            self._forbidden(f"the gateway closed the {self.sources.active} subscription (4403)")
        super().closed(code, reason)


class GasStream(Subscription):
    """The gas meters' subscription to ``/api/realtime`` (x1p1/x1/gas_feed.py): its own
    connection machine (backoff, stall deadline); its messages go to
    :meth:`SourceStream.gas_received`, a refusal for the grant to the source stream."""

    profile = "G-REALTIME"
    what = "gas readings"

    def __init__(
        self,
        owner: SourceStream,
        *,
        settings: StreamSettings,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(owner._gas_target, settings=settings, clock=clock)
        self._owner = owner

    def received(self, data: bytes, now: float) -> None:
        self._owner.gas_received(data, now)

    def refused(self, status: int, headers: Mapping[str, str], where: str) -> None:
        if status == ForbiddenProfile.status:
            self._owner._forbidden(f"the gateway refused the gas subscription (403) {where}")
        super().refused(status, headers, where)

    def closed(self, code: int | None, reason: str) -> None:
        if code == ForbiddenProfile.close_code:
            self._owner._forbidden("the gateway closed the gas subscription (4403)")
        super().closed(code, reason)
