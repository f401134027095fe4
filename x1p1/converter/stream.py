"""The legacy-P1 subscription: connection states as a table, and the websockets adapter.

x1-api.md, WebSocket: ``wss://<host>/api/legacy-p1?interval=1`` sends one complete DSMR
5.0.2 telegram per text message (X1 §6.2.7, §8.2), with ``Authorization: Bearer`` on the
handshake (§7.1). Refused handshakes answer 401/403/429/503; a connection is closed with
4401 when the token is revoked and 4503 when the grid operator switches X1 off (§12.3).

Everything that decides what the connection does next lives in this file, in
:data:`TRANSITIONS` (h11's ``_state.py`` habit): the states, the events, the backoff
(jittered, at most 30 s), re-discovery after repeated failures, the 60 s retry while X1
is off, and the two states that wait for a new token instead of retrying
(``needs-pairing`` after 401/4401/403/4403, ``certificate-error`` after a certificate
or host-name mismatch: fatal, never retried in a loop). :class:`ConnectionMachine` takes
``now`` as an argument and never sleeps.

:class:`LegacyP1Stream` is the adapter: it opens the WebSocket with the websockets
library (TLS from :func:`~x1p1.converter.tls.converter_context`, ``server_hostname``
the gateway's host name or ``--tls-name`` while connecting by address), feeds each
message's bytes to the P1 core's :class:`~x1p1.p1.reader.TelegramReader`, and hands on
only telegrams whose CRC matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from x1p1 import __version__
from x1p1.p1.reader import Garbage, InvalidTelegram, TelegramReader, ValidTelegram
from x1p1.x1.api import LEGACY_P1

__all__ = [
    "TRANSITIONS",
    "Conn",
    "ConnectionMachine",
    "Ev",
    "LegacyP1Stream",
    "StreamSettings",
    "StreamTarget",
    "backoff_delay",
]

log = logging.getLogger(__name__)


# --- the state machine ------------------------------------------------------------------


class Conn(enum.StrEnum):
    """Connection states, as ``x1p1 status`` shows them."""

    STARTING = "starting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "reconnecting"
    """Waiting (jittered backoff) before the next try."""
    DISCOVERING = "discovering"
    """Looking for the paired gateway by mDNS (its address may have changed)."""
    NEEDS_PAIRING = "needs-pairing"
    """The token was refused (401/4401, 403/4403): waiting for ``x1p1 pair``."""
    X1_DISABLED = "x1-disabled"
    """503/4503: the grid operator switched X1 off (X1 §12.3); retried every 60 s."""
    CERTIFICATE_ERROR = "certificate-error"
    """The certificate or host name did not verify: waiting for ``x1p1 pair`` (never
    retried in a loop)."""
    STOPPED = "stopped"


class Ev(enum.StrEnum):
    """What can happen to the connection."""

    CONNECT = "connect"
    """Start, or a waiting time is over."""
    OPENED = "opened"
    RELAYING = "relaying"
    """The first valid telegram arrived on this connection: the link is healthy."""
    FAILED = "failed"
    """Refused, unreachable, timed out, closed, stalled: worth retrying."""
    RATE_LIMITED = "rate-limited"
    UNAUTHORIZED = "unauthorized"
    DISABLED = "disabled"
    BAD_CERTIFICATE = "bad-certificate"
    DISCOVERED = "discovered"
    NOT_DISCOVERED = "not-discovered"
    TOKEN_CHANGED = "token-changed"
    """``token.json`` changed: paired again (or unpaired)."""
    STOP = "stop"


_RETRY = "retry"
"""A target resolved by :meth:`ConnectionMachine.handle`: backoff, or rediscovery."""

TRANSITIONS: dict[Conn, dict[Ev, Conn | str]] = {
    Conn.STARTING: {
        Ev.CONNECT: Conn.CONNECTING,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.CONNECTING: {
        Ev.OPENED: Conn.CONNECTED,
        Ev.FAILED: _RETRY,
        Ev.RATE_LIMITED: Conn.BACKOFF,
        Ev.UNAUTHORIZED: Conn.NEEDS_PAIRING,
        Ev.DISABLED: Conn.X1_DISABLED,
        Ev.BAD_CERTIFICATE: Conn.CERTIFICATE_ERROR,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.CONNECTED: {
        Ev.RELAYING: Conn.CONNECTED,
        Ev.FAILED: _RETRY,
        Ev.RATE_LIMITED: Conn.BACKOFF,
        Ev.UNAUTHORIZED: Conn.NEEDS_PAIRING,
        Ev.DISABLED: Conn.X1_DISABLED,
        Ev.BAD_CERTIFICATE: Conn.CERTIFICATE_ERROR,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.BACKOFF: {
        Ev.CONNECT: Conn.CONNECTING,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.DISCOVERING: {
        Ev.DISCOVERED: Conn.CONNECTING,
        Ev.NOT_DISCOVERED: Conn.BACKOFF,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.NEEDS_PAIRING: {
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.X1_DISABLED: {
        Ev.CONNECT: Conn.CONNECTING,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.CERTIFICATE_ERROR: {
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.STOPPED: {},
}

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
"""No more than 30 s between tries."""
FAST_TRIES = 10
"""The first tries of an outage come every 0.5–1 s; only then does the wait double. A
gateway that restarts is back within seconds, and its next telegram should be on the
line within 2 s of its return: a doubling wait from the first failure on would
often still be asleep for seconds when the gateway is back."""
DISABLED_RETRY = 60.0
"""While X1 is switched off, try again every 60 s."""
DISCOVER_AFTER = 3
"""Look for the gateway by mDNS after this many failures in a row (and every as many)."""
INVALID_LOG_EVERY = 60.0
"""A gateway sending bad telegrams gets one log line a minute, not one a second."""
WAITING = frozenset({Conn.BACKOFF, Conn.X1_DISABLED})
"""States that end by themselves at :attr:`ConnectionMachine.wake_at`."""


def backoff_delay(failures: int, rng: Callable[[], float] = random.random) -> float:
    """The wait after ``failures`` failures in a row, each times 0.5–1: 1 s for the first
    :data:`FAST_TRIES`, then 2, 4 … 30 s."""
    base = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, min(failures, 64) - FAST_TRIES))
    return float(base * (0.5 + 0.5 * rng()))


@dataclass
class ConnectionMachine:
    """The connection's state, driven by events and the time they happen (no I/O).

    ``scale`` multiplies every waiting time (tests run the real schedule faster);
    ``can_discover`` is False when the user fixed the gateway's address.
    """

    can_discover: bool = True
    scale: float = 1.0
    rng: Callable[[], float] = random.random
    state: Conn = Conn.STARTING
    since: float = 0.0
    failures: int = 0
    """Failures since the link last carried a valid telegram."""
    wake_at: float | None = None
    opened: int = 0
    """Connections opened so far."""
    history: list[tuple[Conn, Ev, Conn]] = field(default_factory=list, repr=False)

    @property
    def reconnects(self) -> int:
        """Connections opened after the first."""
        return max(0, self.opened - 1)

    def handle(self, event: Ev, now: float, *, retry_after: float | None = None) -> Conn:
        """Apply ``event`` at ``now``; returns the new state (unchanged if it does not apply).

        ``retry_after`` (seconds) goes with :attr:`Ev.RATE_LIMITED`.
        """
        old = self.state
        target = TRANSITIONS[old].get(event)
        if target is None:
            log.debug("connection: %s ignored in state %s", event.value, old.value)
            return old
        self.wake_at = None
        if event is Ev.OPENED:
            self.opened += 1
        elif event is Ev.RELAYING:
            self.failures = 0
        if target == _RETRY:
            self.failures += 1
            if self.can_discover and self.failures % DISCOVER_AFTER == 0:
                target = Conn.DISCOVERING
            else:
                target = Conn.BACKOFF
        new = Conn(target)
        if new is Conn.BACKOFF:
            if event is Ev.RATE_LIMITED:
                self.failures += 1
            delay = backoff_delay(self.failures, self.rng)
            if retry_after is not None:
                delay = max(delay, retry_after)
            self.wake_at = now + delay * self.scale
        elif new is Conn.X1_DISABLED:
            self.wake_at = now + DISABLED_RETRY * self.scale
        elif new in (Conn.NEEDS_PAIRING, Conn.CERTIFICATE_ERROR):
            self.failures = 0
        if new is not old:
            self.since = now
        self.state = new
        self.history.append((old, event, new))
        del self.history[:-64]
        return new

    def due(self, now: float) -> bool:
        """A waiting state whose time is up: send :attr:`Ev.CONNECT`."""
        return self.state in WAITING and self.wake_at is not None and now >= self.wake_at


# --- the adapter ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTarget:
    """Where to subscribe: connect to ``connect_host``, verify ``tls_name``."""

    tls_name: str
    port: int
    connect_host: str
    token: str = field(repr=False)
    ssl_context: ssl.SSLContext = field(repr=False)
    interval: int = 1

    @property
    def uri(self) -> str:
        host = f"[{self.tls_name}]" if ":" in self.tls_name else self.tls_name
        return f"wss://{host}:{self.port}{LEGACY_P1}?interval={self.interval}"

    def describe(self) -> str:
        where = f"{self.tls_name}:{self.port}"
        if self.connect_host != self.tls_name:
            where += f" at {self.connect_host}"
        return where


@dataclass
class StreamSettings:
    """Timeouts of the subscription; ``scale`` multiplies the machine's waiting times."""

    open_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    stall_timeout: float = 15.0
    """No message for this long (the gateway sends one a second): reconnect."""
    close_timeout: float = 2.0
    scale: float = 1.0
    max_message: int = 64 * 1024
    rng: Callable[[], float] = random.random


class LegacyP1Stream:
    """Subscribes to ``/api/legacy-p1`` and keeps the subscription up, as the table says.

    ``target()`` gives where to connect (read again before every try, so a new token or
    address is used). ``on_telegram(raw, received_at)`` gets each valid telegram and
    the monotonic time its message arrived; ``on_invalid`` each invalid one;
    ``on_state(state, message)`` every change of state with a sentence for people.
    ``rediscover()`` looks for the gateway by mDNS and returns whether it found it.
    """

    def __init__(
        self,
        target: Callable[[], StreamTarget | None],
        on_telegram: Callable[[bytes, float], None],
        *,
        on_invalid: Callable[[InvalidTelegram], None] | None = None,
        on_state: Callable[[Conn, str], None] | None = None,
        rediscover: Callable[[], Awaitable[bool]] | None = None,
        settings: StreamSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or StreamSettings()
        self.machine = ConnectionMachine(
            can_discover=rediscover is not None, scale=self.settings.scale, rng=self.settings.rng
        )
        self._target = target
        self._on_telegram = on_telegram
        self._on_invalid = on_invalid
        self._on_state = on_state
        self._rediscover = rediscover
        self._clock = clock
        self._wake = asyncio.Event()
        self._pending: list[Ev] = []
        self._ws: ClientConnection | None = None
        self._step: asyncio.Future[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self.message = "starting"
        self.last_message_at: float | None = None
        self.garbage_bytes = 0
        self._last_failure = ""
        self._invalid_logged_at = -INVALID_LOG_EVERY
        self._invalid_unlogged = 0

    @property
    def state(self) -> Conn:
        return self.machine.state

    # -- from outside ------------------------------------------------------------------

    def token_changed(self) -> None:
        """``token.json`` changed: use the new token (or stop if it is gone)."""
        self._post(Ev.TOKEN_CHANGED)

    def stop(self) -> None:
        self._post(Ev.STOP)

    def _post(self, event: Ev) -> None:
        self._pending.append(event)
        self._wake.set()
        ws = self._ws
        if ws is not None:  # relaying: close the connection politely
            reason = "converter stopping" if event is Ev.STOP else "new token"
            self._keep(asyncio.ensure_future(ws.close(1001, reason)))
        elif self._step is not None:  # connecting or discovering: give up on it now
            self._step.cancel()

    def _keep(self, task: asyncio.Future[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the loop ------------------------------------------------------------------------

    def _apply(self, event: Ev, message: str, *, retry_after: float | None = None) -> None:
        old = self.machine.state
        new = self.machine.handle(event, self._clock(), retry_after=retry_after)
        if new is not old or message != self.message:
            self.message = message
            if self._on_state is not None:
                self._on_state(new, message)

    def _take_pending(self) -> bool:
        """Apply posted events; True if one changed what to do."""
        acted = False
        while self._pending:
            event = self._pending.pop(0)
            if event is Ev.STOP:
                self._apply(Ev.STOP, "stopped")
            else:
                self._apply(event, "paired again: connecting with the new token")
            acted = True
        return acted

    async def run(self) -> None:
        """Keep the subscription up until :meth:`stop`."""
        self._apply(Ev.CONNECT, "connecting")
        while self.machine.state is not Conn.STOPPED:
            if self._take_pending():
                continue
            state = self.machine.state
            if state is Conn.CONNECTING:
                await self._cancellable(self._connect_and_relay())
            elif state is Conn.DISCOVERING:
                await self._cancellable(self._discover())
            elif state in WAITING:
                await self._sleep_until(self.machine.wake_at)
                if self.machine.due(self._clock()):
                    self._apply(Ev.CONNECT, f"connecting again ({self._last_failure})")
            else:  # needs-pairing, certificate-error: only a new token gets us out
                await self._sleep_until(None)

    async def _cancellable(self, step: Awaitable[None]) -> None:
        """Run ``step`` so that :meth:`_post` can cut it short (stop, new token)."""
        task = asyncio.ensure_future(step)
        self._step = task
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # run() itself is being cancelled
        finally:
            self._step = None

    async def _sleep_until(self, wake_at: float | None) -> None:
        self._wake.clear()
        if self._pending:
            return
        timeout = None if wake_at is None else max(0.0, wake_at - self._clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _discover(self) -> None:
        assert self._rediscover is not None
        try:
            found = await self._rediscover()
        except Exception as exc:  # noqa: BLE001 - discovery must never end the stream
            log.warning("looking for the gateway by mDNS failed: %s", exc)
            found = False
        if self._pending:
            return
        if found:
            self._apply(Ev.DISCOVERED, "found the gateway by mDNS; connecting")
        else:
            self._apply(Ev.NOT_DISCOVERED, f"gateway not found by mDNS ({self._last_failure})")

    async def _connect_and_relay(self) -> None:
        target = self._target()
        if target is None:
            self._apply(Ev.UNAUTHORIZED, "not paired: run `x1p1 pair`")
            log.error("not paired (no token saved): run `x1p1 pair`; waiting for a token")
            return
        settings = self.settings
        try:
            ws = await connect(
                target.uri,
                host=target.connect_host,
                port=target.port,
                ssl=target.ssl_context,
                server_hostname=target.tls_name,
                additional_headers={"Authorization": f"Bearer {target.token}"},
                user_agent_header=f"x1p1/{__version__}",
                proxy=None,
                compression=None,
                open_timeout=settings.open_timeout,
                ping_interval=settings.ping_interval,
                ping_timeout=settings.ping_timeout,
                close_timeout=settings.close_timeout,
                max_size=settings.max_message,
                max_queue=4,
            )
        except InvalidStatus as exc:
            self._refused(target, exc)
            return
        except ssl.SSLCertVerificationError as exc:
            self._bad_certificate(target, exc)
            return
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ssl.SSLError) as exc:
            self._failed(f"cannot reach the gateway {target.describe()}: {_reason(exc)}")
            return
        if self._pending:
            await ws.close()
            return
        self._ws = ws
        self._apply(Ev.OPENED, f"connected to {target.describe()}")
        log.info("connected to the gateway %s; relaying legacy P1", target.describe())
        try:
            await self._relay(ws)
        finally:
            self._ws = None

    async def _relay(self, ws: ClientConnection) -> None:
        """Each message through the P1 core's reader; checked telegrams to ``on_telegram``.

        A connection that stays open but carries nothing for ``stall_timeout`` s (a
        stalled gateway) is cut. That deadline is pushed back from here, at most every
        third of it, so a healthy 1 Hz stream costs no timer wake-up of its own: silence
        is noticed after between ``stall_timeout`` and 4/3 of it.
        """
        reader = TelegramReader()
        on_telegram = self._on_telegram
        clock = time.monotonic
        recv = ws.recv
        limit = self.settings.stall_timeout
        loop = asyncio.get_running_loop()
        self.last_message_at = push_at = clock()
        relaying = False
        try:
            async with asyncio.timeout(limit) as stall:
                while True:
                    data = await recv(decode=False)
                    received = clock()
                    self.last_message_at = received
                    reader.receive_data(data)
                    for event in reader.events_received():
                        if type(event) is ValidTelegram:
                            on_telegram(event.raw, received)
                            if not relaying:
                                relaying = True
                                self.machine.handle(Ev.RELAYING, received)
                        elif type(event) is InvalidTelegram:
                            self._invalid(event, received)
                        elif type(event) is Garbage:
                            self.garbage_bytes += event.size
                    if received >= push_at and not stall.expired():
                        # (expired: it fired as this message came, after a silence of
                        # ``limit`` s or more; the next await raises and we reconnect)
                        push_at = received + limit / 3
                        stall.reschedule(loop.time() + limit + limit / 3)
        except TimeoutError:
            log.warning(
                "no telegram from the gateway for %.0f s although the connection is open; "
                "reconnecting",
                clock() - (self.last_message_at or 0.0),
            )
            ws.transport.abort()
            self._failed("the gateway stopped sending telegrams")
        except ConnectionClosed as exc:
            if self._pending:
                return
            self._closed(exc)
        finally:
            reader.receive_eof()
            for event in reader.events_received():
                if type(event) is InvalidTelegram and event.raw:
                    log.info("discarded a telegram the connection cut short (never written)")

    def _invalid(self, event: InvalidTelegram, now: float) -> None:
        """Count it; say so at once, then at most once a minute with how many more."""
        self._invalid_unlogged += 1
        if now - self._invalid_logged_at >= INVALID_LOG_EVERY:
            more = self._invalid_unlogged - 1
            log.warning(
                "dropped an invalid telegram from the gateway (%s): %s%s; it was not written",
                event.reason.value,
                event.message,
                f" (and {more} more since the last such message)" if more else "",
            )
            self._invalid_logged_at, self._invalid_unlogged = now, 0
        if self._on_invalid is not None:
            self._on_invalid(event)

    # -- outcomes ------------------------------------------------------------------------

    def _failed(self, sentence: str) -> None:
        if sentence != self._last_failure or self.machine.failures % 10 == 0:
            log.warning("%s; trying again", sentence)
        else:
            log.debug("%s; trying again", sentence)
        self._last_failure = sentence
        self._apply(Ev.FAILED, sentence)

    def _refused(self, target: StreamTarget, exc: InvalidStatus) -> None:
        status = exc.response.status_code
        if status in (401, 403):
            why = (
                "the gateway refused the token (revoked, expired or unknown)"
                if status == 401
                else "the token lacks the P1 profile"
            )
            log.error(
                "%s (HTTP %d); stopped relaying: run `x1p1 pair` to pair again, the "
                "converter picks up the new token by itself",
                why,
                status,
            )
            self._apply(Ev.UNAUTHORIZED, f"{why}: run `x1p1 pair`")
        elif status == 503:
            self._x1_disabled(f"HTTP {status}")
        elif status == 429:
            retry = exc.response.headers.get("Retry-After", "")
            seconds = float(retry) if retry.isdigit() else None
            log.warning("the gateway asks to slow down (HTTP 429); waiting before trying again")
            self._apply(Ev.RATE_LIMITED, "rate limited by the gateway", retry_after=seconds)
        else:
            self._failed(
                f"the gateway {target.describe()} refused the subscription (HTTP {status})"
            )

    def _x1_disabled(self, how: str) -> None:
        log.warning(
            "X1 is switched off by the grid operator (%s); trying again every %.0f s",
            how,
            DISABLED_RETRY,
        )
        self._apply(Ev.DISABLED, "X1 is switched off by the grid operator")

    def _bad_certificate(self, target: StreamTarget, exc: ssl.SSLCertVerificationError) -> None:
        from x1p1.converter.pairing import certificate_sentence

        sentence = certificate_sentence(exc, target.tls_name)
        log.error(
            "%s; stopped: not retrying. Fix the CA (x1p1 run --ca) or run `x1p1 pair` again",
            sentence,
        )
        self._apply(Ev.BAD_CERTIFICATE, sentence)

    def _closed(self, exc: ConnectionClosed) -> None:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code in (4401, 4403):
            log.error(
                "the gateway revoked the token (close %d%s); stopped relaying: run "
                "`x1p1 pair` to pair again, the converter picks up the new token by itself",
                code,
                f": {reason}" if reason else "",
            )
            self._apply(Ev.UNAUTHORIZED, "the gateway revoked the token: run `x1p1 pair`")
        elif code == 4503:
            self._x1_disabled("close 4503")
        elif code == 4429:
            self._apply(Ev.RATE_LIMITED, "rate limited by the gateway")
        else:
            what = f"close code {code}" if code is not None else "no close frame"
            self._failed(f"lost the connection to the gateway ({what})")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__
