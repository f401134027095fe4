"""The WebSocket subscriptions' adapter: websockets in, the connection machine's verdicts out.

x1-api.md, WebSocket: ``wss://<host><api_base>/legacy-p1?interval=1`` sends DSMR 5.0.2
telegrams (X1 §6.2.7, §8.2), with ``Authorization: Bearer`` on the handshake (§7.1).
Refused handshakes answer 401/403/429/503; a connection is closed with 4401 when the
token is revoked and 4503 when the grid operator switches X1 off (§12.3).

What the connection does next (statuses, close codes, ``Retry-After``, backoff, the
stall deadline) is decided by the sans-I/O :class:`~x1p1.x1.connection.ConnectionMachine`.
This file only moves bytes and events: :class:`Subscription` opens the WebSocket with the
websockets library (TLS from :func:`~x1p1.converter.tls.converter_context`,
``server_hostname`` the gateway's host name or ``--tls-name`` while connecting by
address), waits for a message or the machine's next deadline (no rescheduled timers), and
hands each message to :meth:`Subscription.received`. :class:`LegacyP1Stream` feeds the
messages to the P1 core's :class:`~x1p1.p1.reader.TelegramReader` and hands on only
telegrams whose CRC matched. A second endpoint (``/api/realtime``) subclasses
:class:`Subscription` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from x1p1 import __version__
from x1p1.converter.quiet import CauseLog
from x1p1.p1.reader import Garbage, InvalidTelegram, TelegramReader, ValidTelegram
from x1p1.x1.api import LEGACY_P1
from x1p1.x1.connection import (
    DISABLED_RETRY,
    STATE_SENTENCES,
    TLS_VERSION_RETRY,
    TRANSITIONS,
    WAITING,
    Conn,
    ConnectionMachine,
    Ev,
    Verdict,
    classify_close,
    classify_handshake,
    classify_status,
)

__all__ = [
    "LegacyP1Stream",
    "StreamSettings",
    "StreamTarget",
    "Subscription",
]

log = logging.getLogger(__name__)

INVALID_LOG_EVERY = 60.0
"""A gateway sending bad telegrams gets one log line a minute, not one a second."""


# --- where and how -------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTarget:
    """Where to subscribe: connect to ``connect_host``, verify ``tls_name``, open ``path``
    (the API base included) with ``interval`` and the ``query`` pairs."""

    tls_name: str
    port: int
    connect_host: str
    token: str = field(repr=False)
    ssl_context: ssl.SSLContext = field(repr=False)
    interval: int = 1
    path: str = LEGACY_P1
    query: tuple[tuple[str, str], ...] = ()

    @property
    def uri(self) -> str:
        host = f"[{self.tls_name}]" if ":" in self.tls_name else self.tls_name
        query = urlencode((("interval", str(self.interval)), *self.query))
        return f"wss://{host}:{self.port}{self.path}?{query}"

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
    """Pings keep NAT and firewall state alive; they are not the liveness check."""
    ping_timeout: float | None = None
    """None: a gateway that never answers pings is not dropped while it sends. Liveness
    is the machine's stall deadline, which every message pushes back."""
    stall_timeout: float = 15.0
    """The least silence counted as a stall (the machine allows more for a slow pace)."""
    close_timeout: float = 2.0
    scale: float = 1.0
    max_message: int = 64 * 1024
    rng: Callable[[], float] = random.random


# --- the adapter ---------------------------------------------------------------------------


class Subscription:
    """Keeps one WebSocket subscription up, as the connection machine decides.

    ``target()`` gives where to connect (read again before every try, so a new token or
    address is used). ``on_state(state, message)`` gets every change of state with a
    sentence for people. ``rediscover()`` looks for the gateway by mDNS and returns
    whether it found it. Subclasses say what the messages are: :meth:`received` gets
    each one with the monotonic time it arrived and tells the machine whether it was
    useful (:meth:`~x1p1.x1.connection.ConnectionMachine.useful`) or dropped.
    """

    profile = "P1"
    """The profile the subscription needs (named when a 403 refuses it)."""
    what = "legacy P1"
    """What is relayed, for the log."""

    def __init__(
        self,
        target: Callable[[], StreamTarget | None],
        *,
        on_state: Callable[[Conn, str], None] | None = None,
        rediscover: Callable[[], Awaitable[bool]] | None = None,
        settings: StreamSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or StreamSettings()
        self.machine = ConnectionMachine(
            can_discover=rediscover is not None,
            scale=self.settings.scale,
            rng=self.settings.rng,
            stall_timeout=self.settings.stall_timeout,
        )
        self._target = target
        self._on_state = on_state
        self._rediscover = rediscover
        self._clock = clock
        self._wake = asyncio.Event()
        self._pending: list[Ev] = []
        self._ws: ClientConnection | None = None
        self._step: asyncio.Future[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self.message = "starting"
        self._last_failure = ""
        self._retarget_message = "connecting anew"
        self._quiet = CauseLog(log, clock=clock)

    @property
    def state(self) -> Conn:
        return self.machine.state

    @property
    def last_message_at(self) -> float | None:
        return self.machine.last_message_at

    # -- what the messages are (subclasses) ------------------------------------------------

    def begin(self) -> None:
        """A connection opened: start reading its messages afresh."""

    def received(self, data: bytes, now: float) -> None:
        """One message's bytes, arrived at ``now``."""
        raise NotImplementedError

    def end(self) -> None:
        """The connection is over (closed, cut, stalled)."""

    def feed(self, data: bytes, now: float) -> None:
        """A message arrived at ``now``: liveness for the machine, then :meth:`received`."""
        self.machine.message(now)
        self.received(data, now)

    # -- from outside ------------------------------------------------------------------

    def token_changed(self) -> None:
        """``token.json`` changed: use the new token (or stop if it is gone)."""
        self._post(Ev.TOKEN_CHANGED)

    def stop(self) -> None:
        self._post(Ev.STOP)

    def retarget(self, message: str) -> None:
        """What to subscribe to changed (x1p1/x1/source.py): connect anew, saying why."""
        self._retarget_message = message
        self._post(Ev.RETARGET)

    def _post(self, event: Ev) -> None:
        self._pending.append(event)
        self._wake.set()
        ws = self._ws
        if ws is not None:  # relaying: close the connection politely
            reason = {Ev.STOP: "converter stopping", Ev.RETARGET: "switching source"}.get(
                event, "new token"
            )
            self._keep(asyncio.ensure_future(ws.close(1001, reason)))
        elif self._step is not None:  # connecting or discovering: give up on it now
            self._step.cancel()

    def _keep(self, task: asyncio.Future[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- the loop ------------------------------------------------------------------------

    def _show(self, old: Conn, message: str) -> None:
        new = self.machine.state
        if new is not old or message != self.message:
            self.message = message
            if self._on_state is not None:
                try:
                    self._on_state(new, message)
                except Exception as exc:  # noqa: BLE001 - a status not shown ends nothing
                    from x1p1.x1.readers import printable

                    cause = f"{type(exc).__name__} while showing the state"
                    self._quiet.log(logging.ERROR, cause, "%s: %s", cause, printable(exc))

    def _apply(self, event: Ev, message: str, *, retry_after: float | None = None) -> None:
        old = self.machine.state
        self.machine.handle(event, self._clock(), retry_after=retry_after)
        self._show(old, message)

    def _take_pending(self) -> bool:
        """Apply posted events; True if one changed what to do."""
        acted = False
        while self._pending:
            event = self._pending.pop(0)
            if event is Ev.STOP:
                self._apply(Ev.STOP, "stopped")
            elif event is Ev.RETARGET:
                self._apply(event, self._retarget_message)
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
                await self._sleep_until(self.machine.deadline())
                old = self.machine.state
                if self.machine.expire(self._clock()) is Ev.CONNECT:
                    self._show(old, f"connecting again ({self._last_failure})")
            else:  # needs-pairing, certificate-error: a new token; the grant ones: a read
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
            from x1p1.x1.readers import printable

            log.warning("looking for the gateway by mDNS failed: %s", printable(exc))
            found = False
        if self._pending:
            return
        if found:
            self._apply(Ev.DISCOVERED, "found the gateway by mDNS; connecting")
        else:
            self._apply(Ev.NOT_DISCOVERED, f"gateway not found by mDNS ({self._last_failure})")

    async def _connect_and_relay(self) -> None:
        """One connection; whatever goes wrong in it is a reason to reconnect, never the
        end of ``x1p1 run`` (docs/x1-api.md, "What the converter tolerates")."""
        try:
            await self._connect_and_relay_once()
        except Exception as exc:  # noqa: BLE001 - nothing a gateway sends ends the stream
            self._unexpected(exc)

    def _unexpected(self, exc: Exception) -> None:
        from x1p1.x1.readers import printable

        cause = f"{type(exc).__name__} in the {self.what} stream"
        sentence = f"unexpected {cause}: {printable(exc) or 'no message'}"
        self._quiet.log(logging.ERROR, cause, "%s; reconnecting", sentence)
        log.debug("the %s stream's unexpected error", self.what, exc_info=exc)
        if TRANSITIONS[self.machine.state].get(Ev.FAILED) is not None:
            self._last_failure = sentence
            self._apply(Ev.FAILED, sentence)

    async def _connect_and_relay_once(self) -> None:
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
            response = exc.response
            self.refused(response.status_code, response.headers, target.describe())
            return
        except ssl.SSLCertVerificationError as exc:
            self._bad_certificate(target, exc)
            return
        except (ssl.SSLError, ConnectionResetError, ConnectionAbortedError) as exc:
            await self._handshake_failed(target, exc)
            return
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._failed(f"cannot reach the gateway {target.describe()}: {_reason(exc)}")
            return
        if self._pending:
            await ws.close()
            return
        self._ws = ws
        self._apply(Ev.OPENED, f"connected to {target.describe()}")
        log.info("connected to the gateway %s; relaying %s", target.describe(), self.what)
        try:
            await self._relay(ws)
        except BaseException:
            ws.transport.abort()
            raise
        finally:
            self._ws = None

    async def _relay(self, ws: ClientConnection) -> None:
        """Each message to :meth:`received`, until a close or the machine's deadline.

        The wait for a message ends at :meth:`ConnectionMachine.deadline`, which every
        message moves on: a fresh timeout per wait, never a rescheduled one.
        """
        machine = self.machine
        clock = self._clock
        recv = ws.recv
        feed = self.feed
        self.begin()
        try:
            while True:
                deadline = machine.deadline()
                if deadline is None:
                    return
                try:
                    async with asyncio.timeout(max(0.0, deadline - clock())):
                        data = await recv(decode=False)
                except TimeoutError:
                    now = clock()
                    silence = machine.silence(now)
                    old = machine.state
                    if machine.expire(now) is Ev.FAILED:
                        log.warning(
                            "no message from the gateway for %.0f s although the connection "
                            "is open; reconnecting",
                            silence,
                        )
                        ws.transport.abort()
                        self._stalled(old)
                        return
                    continue
                feed(data, clock())
        except ConnectionClosed as exc:
            if self._pending:
                return
            self._closed(exc)
        finally:
            self.end()

    # -- outcomes ------------------------------------------------------------------------

    def _failed(self, sentence: str) -> None:
        if not self._quiet.log(logging.WARNING, sentence, "%s; trying again", sentence):
            log.debug("%s; trying again", sentence)
        self._last_failure = sentence
        self._apply(Ev.FAILED, sentence)

    def _stalled(self, old: Conn) -> None:
        self._last_failure = "the gateway stopped sending telegrams"
        self._show(old, self._last_failure)

    def _verdict(self, verdict: Verdict) -> None:
        if verdict.event is Ev.FAILED:
            self._failed(verdict.sentence)
            return
        self._quiet.log(verdict.level, verdict.sentence, "%s", verdict.sentence)
        if verdict.event is Ev.DISABLED:
            log.warning("trying again every %.0f s while X1 is off", DISABLED_RETRY)
        elif verdict.event is Ev.OLD_TLS:
            self._last_failure = "the gateway does not speak TLS 1.3"
            self._quiet.log(
                logging.INFO,
                "tls-version retry",
                "trying again every %.0f s, in case the gateway's firmware was updated",
                TLS_VERSION_RETRY * self.settings.scale,
            )
        self._apply(
            verdict.event,
            STATE_SENTENCES.get(verdict.event, verdict.sentence),
            retry_after=verdict.retry_after,
        )

    def refused(self, status: int, headers: Mapping[str, str], where: str) -> None:
        """The gateway ``where`` refused the handshake with HTTP ``status``."""
        from x1p1.x1.readers import retry_after

        wait = None
        if status == 429:
            wait = retry_after(headers.get("Retry-After"), now=datetime.now(UTC), default=None)
        self._verdict(classify_status(status, profile=self.profile, where=where, retry_after=wait))

    def closed(self, code: int | None, reason: str) -> None:
        """The gateway closed the connection with ``code`` (None: no close frame)."""
        self._verdict(classify_close(code, reason))

    def _bad_certificate(self, target: StreamTarget, exc: ssl.SSLCertVerificationError) -> None:
        from x1p1.converter.pairing import certificate_sentence

        sentence = certificate_sentence(exc, target.tls_name)
        log.error(
            "%s; stopped: not retrying. Fix the CA (x1p1 run --ca) or run `x1p1 pair` again",
            sentence,
        )
        self._apply(Ev.BAD_CERTIFICATE, sentence)

    async def _handshake_failed(self, target: StreamTarget, exc: OSError) -> None:
        """Tell a gateway that speaks only an older TLS from a broken handshake or a reset
        (a second handshake, offered TLS 1.2 at most, in a thread); the machine decides
        the rest."""
        from x1p1.converter.tls import speaks_only_legacy_tls

        old = await asyncio.to_thread(
            speaks_only_legacy_tls,
            exc,
            target.connect_host,
            target.port,
            target.tls_name,
            self.settings.open_timeout,
        )
        verdict = classify_handshake(
            "tls-version" if old else "failed",
            where=target.describe(),
            detail=_reason(exc),
        )
        self._verdict(verdict)

    def _closed(self, exc: ConnectionClosed) -> None:
        if exc.rcvd is not None:
            self.closed(exc.rcvd.code, exc.rcvd.reason)
        elif exc.sent is not None and exc.sent.code == 1009:  # RFC 6455 §7.4.1
            self.closed(None, f"a message over {self.settings.max_message // 1024} KiB")
        else:
            self.closed(None, "")


class LegacyP1Stream(Subscription):
    """Subscribes to ``/api/legacy-p1`` and relays each telegram whose CRC matched.

    ``on_telegram(raw, received_at)`` gets each valid telegram and the monotonic time its
    message arrived; ``on_invalid`` each invalid one. The rest is :class:`Subscription`.
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
        super().__init__(
            target, on_state=on_state, rediscover=rediscover, settings=settings, clock=clock
        )
        self._on_telegram = on_telegram
        self._on_invalid = on_invalid
        self._reader = TelegramReader(tolerant=True)
        self.garbage_bytes = 0
        self._invalid_logged_at = -INVALID_LOG_EVERY
        self._invalid_unlogged = 0

    def begin(self) -> None:
        self._reader = TelegramReader(tolerant=True)

    def received(self, data: bytes, now: float) -> None:
        reader = self._reader
        reader.receive_data(data)
        reader.end_of_message()
        for event in reader.events_received():
            if type(event) is ValidTelegram:
                self._on_telegram(event.raw, now)
                self.machine.useful(now)
            elif type(event) is InvalidTelegram:
                self.machine.dropped_one(event.reason.value)
                self._invalid(event, now)
            elif type(event) is Garbage:
                self.garbage_bytes += event.size

    def end(self) -> None:
        reader = self._reader
        reader.receive_eof()
        for event in reader.events_received():
            if type(event) is InvalidTelegram and event.raw:
                log.info("discarded a telegram the connection cut short (never written)")

    def _invalid(self, event: InvalidTelegram, now: float) -> None:
        """Count it; say so at once, then at most once a minute with how many more."""
        self._invalid_unlogged += 1
        if now - self._invalid_logged_at >= INVALID_LOG_EVERY:
            from x1p1.x1.readers import printable

            more = self._invalid_unlogged - 1
            log.warning(
                "dropped an invalid telegram from the gateway (%s): %s%s; it was not written",
                event.reason.value,
                printable(event.message),
                f" (and {more} more since the last such message)" if more else "",
            )
            self._invalid_logged_at, self._invalid_unlogged = now, 0
        if self._on_invalid is not None:
            self._on_invalid(event)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    from x1p1.x1.readers import printable

    return printable(str(exc) or type(exc).__name__)
