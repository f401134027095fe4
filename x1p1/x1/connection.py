"""The converter's connection machine: a subscription's policy as tables, ``now`` passed in.

Everything that decides what a WebSocket subscription (x1-api.md, WebSocket;
``/api/legacy-p1`` or ``/api/realtime``) does next lives in this file, as h11's
``_state.py`` keeps its machine (architecture.md, habits 2 and 12):

* :data:`TRANSITIONS`: the states, the events, and where each event leads;
* :data:`STATUS_EVENTS` and :data:`CLOSE_EVENTS`: how each refused handshake's HTTP
  status and each close code is classified (the codes come from
  :mod:`x1p1.exceptions`, the one home the gateway shares); anything else is a failure
  worth retrying;
* the backoff (jittered, at most 30 s), re-discovery after repeated failures, the 60 s
  retry while X1 is off (X1 §12.3), ``Retry-After`` (parsed by
  :func:`x1p1.x1.readers.retry_after`), and the two states that wait for a new token
  instead of retrying (``needs-pairing`` after 401/4401, ``certificate-error``: never
  retried in a loop);
* a 403 or a close 4403 is no revoked token but a changed grant (X1 §5.1.6: the customer
  changes a device's profiles in the portal): ``reading-grant`` waits for the grant to
  be read again (``GET /api/token``, x1p1/x1/source.py decides when) and then connects
  at once to what it allows (:attr:`Ev.RETARGET`); a grant that allows nothing waits in
  ``waiting-for-grant`` (:attr:`Ev.NO_GRANT`) until the portal grants a profile;
* :data:`HANDSHAKE_EVENTS`: how a failed TLS handshake is classified once the adapter
  has told what it was: a gateway that speaks only TLS 1.2 or older (X1 §4.1.4 requires
  1.3) is ``tls-version``, said in one sentence (:data:`TLS_VERSION_SENTENCE`) and tried
  again only every :data:`TLS_VERSION_RETRY` s, never in a loop;
* the stall deadline, which follows the pace the gateway actually keeps: telegrams (or
  any message) count as liveness, so a gateway that never answers pings is not dropped
  while it sends.

The machine knows statuses, closes and deadlines, not which URL it serves.
:meth:`ConnectionMachine.deadline` is when it next needs to run; the adapter
(:mod:`x1p1.converter.stream`) waits for a message or that moment and then calls
:meth:`ConnectionMachine.expire`. It never sleeps and reads no clock.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from x1p1.exceptions import ForbiddenProfile, RateLimited, Unauthorized, X1Disabled

__all__ = [
    "AWAITS_GRANT_READ",
    "BACKOFF_MAX",
    "CLOSE_EVENTS",
    "HANDSHAKE_EVENTS",
    "TLS_VERSION_RETRY",
    "TLS_VERSION_SENTENCE",
    "DISCOVER_AFTER",
    "DROPPING_AFTER",
    "FAST_TRIES",
    "STATUS_EVENTS",
    "TRANSITIONS",
    "Conn",
    "ConnectionMachine",
    "Ev",
    "Verdict",
    "backoff_delay",
    "classify_close",
    "classify_handshake",
    "classify_status",
]

log = logging.getLogger(__name__)


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
    """The token was refused (401/4401): waiting for ``x1p1 pair``."""
    REGRANT = "reading-grant"
    """A 403 or close 4403: the customer changed this device's profiles (X1 §5.1.6);
    reading the grant again (``GET /api/token``) before connecting to what it allows."""
    NO_GRANT = "waiting-for-grant"
    """The grant allows no source (x1p1/x1/source.py): waiting for the portal to grant a
    profile (the grant is read again every minute) or for ``x1p1 pair``."""
    X1_DISABLED = "x1-disabled"
    """503/4503: the grid operator switched X1 off (X1 §12.3); retried every 60 s."""
    CERTIFICATE_ERROR = "certificate-error"
    """The certificate or host name did not verify: waiting for ``x1p1 pair`` (never
    retried in a loop)."""
    TLS_VERSION = "tls-version"
    """The gateway speaks only TLS 1.2 or older (X1 §4.1.4 requires 1.3): tried again every
    :data:`TLS_VERSION_RETRY` s, in case its firmware was updated."""
    STOPPED = "stopped"


class Ev(enum.StrEnum):
    """What can happen to the connection."""

    CONNECT = "connect"
    """Start, or a waiting time is over."""
    OPENED = "opened"
    RELAYING = "relaying"
    """The first useful message arrived on this connection: the link is healthy."""
    FAILED = "failed"
    """Refused, unreachable, timed out, closed, stalled: worth retrying."""
    RATE_LIMITED = "rate-limited"
    UNAUTHORIZED = "unauthorized"
    """401/4401: the token is revoked, expired or unknown."""
    FORBIDDEN = "forbidden"
    """403/4403: the token lacks the profile now (X1 §5.1.6): read the grant again."""
    NO_GRANT = "no-grant"
    """The grant, as read, allows no source (x1p1/x1/source.py)."""
    DISABLED = "disabled"
    BAD_CERTIFICATE = "bad-certificate"
    OLD_TLS = "old-tls"
    """The handshake failed because the gateway offers no TLS 1.3 (X1 §4.1.4)."""
    DISCOVERED = "discovered"
    NOT_DISCOVERED = "not-discovered"
    TOKEN_CHANGED = "token-changed"
    """``token.json`` changed: paired again (or unpaired)."""
    RETARGET = "retarget"
    """What to subscribe to changed (another source, x1p1/x1/source.py): connect anew."""
    STOP = "stop"


_RETRY = "retry"
"""A target resolved by :meth:`ConnectionMachine.handle`: backoff, or rediscovery."""

TRANSITIONS: dict[Conn, dict[Ev, Conn | str]] = {
    Conn.STARTING: {
        Ev.CONNECT: Conn.CONNECTING,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.CONNECTING: {
        Ev.OPENED: Conn.CONNECTED,
        Ev.FAILED: _RETRY,
        Ev.RATE_LIMITED: Conn.BACKOFF,
        Ev.UNAUTHORIZED: Conn.NEEDS_PAIRING,
        Ev.FORBIDDEN: Conn.REGRANT,
        Ev.NO_GRANT: Conn.NO_GRANT,
        Ev.DISABLED: Conn.X1_DISABLED,
        Ev.BAD_CERTIFICATE: Conn.CERTIFICATE_ERROR,
        Ev.OLD_TLS: Conn.TLS_VERSION,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.CONNECTED: {
        Ev.RELAYING: Conn.CONNECTED,
        Ev.FAILED: _RETRY,
        Ev.RATE_LIMITED: Conn.BACKOFF,
        Ev.UNAUTHORIZED: Conn.NEEDS_PAIRING,
        Ev.FORBIDDEN: Conn.REGRANT,
        Ev.DISABLED: Conn.X1_DISABLED,
        Ev.BAD_CERTIFICATE: Conn.CERTIFICATE_ERROR,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.BACKOFF: {
        Ev.CONNECT: Conn.CONNECTING,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.DISCOVERING: {
        Ev.DISCOVERED: Conn.CONNECTING,
        Ev.NOT_DISCOVERED: Conn.BACKOFF,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.NEEDS_PAIRING: {
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.REGRANT: {
        # the grant was read again: connect to what it allows (none: waiting-for-grant)
        Ev.RETARGET: Conn.CONNECTING,
        Ev.UNAUTHORIZED: Conn.NEEDS_PAIRING,  # GET /api/token answered 401
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.NO_GRANT: {
        Ev.RETARGET: Conn.CONNECTING,
        Ev.UNAUTHORIZED: Conn.NEEDS_PAIRING,  # GET /api/token answered 401
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.X1_DISABLED: {
        Ev.CONNECT: Conn.CONNECTING,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.CERTIFICATE_ERROR: {
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.TLS_VERSION: {
        Ev.CONNECT: Conn.CONNECTING,
        Ev.TOKEN_CHANGED: Conn.CONNECTING,
        Ev.RETARGET: Conn.CONNECTING,
        Ev.STOP: Conn.STOPPED,
    },
    Conn.STOPPED: {},
}

STATUS_EVENTS: dict[int, Ev] = {
    Unauthorized.status: Ev.UNAUTHORIZED,
    ForbiddenProfile.status: Ev.FORBIDDEN,
    RateLimited.status: Ev.RATE_LIMITED,
    X1Disabled.status: Ev.DISABLED,
}
"""A refused handshake's HTTP status (x1-api.md, WebSocket); any other is :attr:`Ev.FAILED`."""

CLOSE_EVENTS: dict[int, Ev] = {
    Unauthorized.close_code: Ev.UNAUTHORIZED,
    ForbiddenProfile.close_code: Ev.FORBIDDEN,
    RateLimited.close_code: Ev.RATE_LIMITED,
    X1Disabled.close_code: Ev.DISABLED,
}
"""A close code (x1-api.md, WebSocket); any other (1000, 1001, 1011, none) is a failure."""

TLS_VERSION_SENTENCE = (
    "the gateway does not speak TLS 1.3, which X1 §4.1.4 requires (it offered an older "
    "version); the converter does not go below TLS 1.3, so ask the meter's supplier for a "
    "firmware update"
)
"""What ``x1p1 pair``, ``x1p1 run`` (and ``x1p1 status``) and ``x1p1 doctor`` say about a
TLS-1.2-only gateway."""

HANDSHAKE_EVENTS: dict[str, Ev] = {
    "tls-version": Ev.OLD_TLS,
}
"""A failed TLS handshake, as the adapter found it (``tls-version``: the gateway refused
TLS 1.3 with an alert, or settles on an older version when offered one); any other
failure is :attr:`Ev.FAILED`. A certificate that does not verify is
:attr:`Ev.BAD_CERTIFICATE`, which the adapter applies with the certificate's sentence."""

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
TLS_VERSION_RETRY = 2 * BACKOFF_MAX
"""A gateway that speaks only an older TLS is tried again every 60 s (twice the slowest
backoff): it changes only with a firmware update, and a loop would gain nothing."""
DISCOVER_AFTER = 3
"""Look for the gateway by mDNS after this many failures in a row (and every as many)."""
AWAITS_GRANT_READ = frozenset({Conn.REGRANT})
"""States that a read of the grant (``GET /api/token``) ends, whatever it says: the
adapter then connects anew (:attr:`Ev.RETARGET`) to what the grant allows, and a grant
that allows nothing leads to ``waiting-for-grant``. A failed read connects anew too: the
gateway's answer to the subscription tells again."""
WAITING = frozenset({Conn.BACKOFF, Conn.X1_DISABLED, Conn.TLS_VERSION})
"""States that end by themselves at :attr:`ConnectionMachine.wake_at`."""

STALL_PACES = 3.0
"""Silence allowed, in gaps of the gateway's own pace (and never less than the
``stall_timeout`` setting): a gateway that sends every 20 s is stalled after 60 s."""
PACE_SAMPLES = 8
"""The pace is the longest of this many latest gaps between messages."""
PACE_MAX = 600.0
"""Gaps longer than this are not a pace but an outage: the stall limit stops growing."""
DROPPING_AFTER = 3
"""This many messages dropped in a row (and none useful since) and the connection is
reported as dropping everything (``x1p1 status`` exits non-zero)."""
FIRST_MESSAGE_WAIT = 4.0
"""Before the gateway's pace is known, the first message may take this many
``stall_timeout`` s (a gateway that sends at its own 10 or 20 s boundaries)."""


def backoff_delay(failures: int, rng: Callable[[], float] = random.random) -> float:
    """The wait after ``failures`` failures in a row, each times 0.5–1: 1 s for the first
    :data:`FAST_TRIES`, then 2, 4 … 30 s."""
    base = min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, min(failures, 64) - FAST_TRIES))
    return float(base * (0.5 + 0.5 * rng()))


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a refusal or a close is taken: the event, a sentence for people (gateway text
    through :func:`~x1p1.x1.readers.printable`), and how loudly to log it."""

    event: Ev
    sentence: str
    level: int = logging.WARNING
    retry_after: float | None = None


_FOLLOWING = "the customer changed this device's profiles; following them"
"""A 403 or close 4403 (X1 §5.1.6): the grant is read again and followed, no pairing."""

_PAIR_AGAIN = (
    "stopped relaying: run `x1p1 pair` to pair again, the converter picks up the new "
    "token by itself"
)


def classify_status(
    status: int, *, profile: str, where: str, retry_after: float | None = None
) -> Verdict:
    """A refused handshake (HTTP ``status``), for a subscription that needs ``profile``
    to the gateway ``where``. ``retry_after``: the 429's header, already parsed."""
    event = STATUS_EVENTS.get(status, Ev.FAILED)
    if event is Ev.UNAUTHORIZED:
        why = "the gateway refused the token (revoked, expired or unknown)"
        return Verdict(event, f"{why} (HTTP {status}); {_PAIR_AGAIN}", logging.ERROR)
    if event is Ev.FORBIDDEN:
        return Verdict(
            event,
            f"the token lacks the {profile} profile now (HTTP {status}): {_FOLLOWING}",
        )
    if event is Ev.DISABLED:
        return Verdict(event, f"X1 is switched off by the grid operator (HTTP {status})")
    if event is Ev.RATE_LIMITED:
        return Verdict(
            event,
            "the gateway asks to slow down (HTTP 429); waiting before trying again",
            retry_after=retry_after,
        )
    return Verdict(event, f"the gateway {where} refused the subscription (HTTP {status})")


def classify_close(code: int | None, reason: str = "") -> Verdict:
    """A connection the gateway closed with ``code`` (None: no close frame)."""
    from x1p1.x1.readers import printable  # only when a connection ends

    event = CLOSE_EVENTS.get(code, Ev.FAILED) if code is not None else Ev.FAILED
    said = f": {printable(reason)}" if reason else ""
    if event is Ev.UNAUTHORIZED:
        return Verdict(
            event,
            f"the gateway revoked the token (close {code}{said}); {_PAIR_AGAIN}",
            logging.ERROR,
        )
    if event is Ev.FORBIDDEN:
        return Verdict(event, f"{_FOLLOWING} (close {code}{said})")
    if event is Ev.DISABLED:
        return Verdict(event, f"X1 is switched off by the grid operator (close {code})")
    if event is Ev.RATE_LIMITED:
        return Verdict(event, f"the gateway asks to slow down (close {code}{said})")
    what = f"close code {code}{said}" if code is not None else f"no close frame{said}"
    return Verdict(event, f"lost the connection to the gateway ({what})")


def classify_handshake(kind: str, *, where: str, detail: str = "") -> Verdict:
    """A connection to the gateway ``where`` that failed in the TLS handshake as ``kind`` (a
    key of :data:`HANDSHAKE_EVENTS`, or anything else for a plain failure); ``detail`` is
    the adapter's words for a plain failure (``TLS handshake failed (…)``)."""
    from x1p1.x1.readers import printable  # only when a handshake fails

    event = HANDSHAKE_EVENTS.get(kind, Ev.FAILED)
    if event is Ev.OLD_TLS:
        return Verdict(event, TLS_VERSION_SENTENCE, logging.ERROR)
    return Verdict(event, f"cannot reach the gateway {where}: {printable(detail) or 'no reason'}")


STATE_SENTENCES: dict[Ev, str] = {
    Ev.UNAUTHORIZED: "the gateway refused or revoked the token: run `x1p1 pair`",
    Ev.FORBIDDEN: f"{_FOLLOWING}: reading the token's profiles again (GET /api/token)",
    Ev.DISABLED: "X1 is switched off by the grid operator",
    Ev.RATE_LIMITED: "rate limited by the gateway",
}
"""What ``x1p1 status`` shows after a verdict (the log line says more)."""


@dataclass
class ConnectionMachine:
    """The connection's state, driven by events and the time they happen (no I/O).

    ``scale`` multiplies every waiting time (tests run the real schedule faster);
    ``can_discover`` is False when the user fixed the gateway's address;
    ``stall_timeout`` is the silence allowed while the gateway keeps a fast pace.
    """

    can_discover: bool = True
    scale: float = 1.0
    rng: Callable[[], float] = random.random
    stall_timeout: float = 15.0
    state: Conn = Conn.STARTING
    since: float = 0.0
    failures: int = 0
    """Failures since the link last carried a useful message."""
    wake_at: float | None = None
    opened: int = 0
    """Connections opened so far."""
    opened_at: float = 0.0
    """When the current connection opened."""
    last_message_at: float | None = None
    """When the current connection last carried a message."""
    useful_at: float | None = None
    """When the current connection last carried a useful message (a valid telegram)."""
    stalled: bool = False
    """The last failure was a silence past the stall deadline."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Reasons of the messages dropped since the last useful one (``x1p1 status``)."""
    history: list[tuple[Conn, Ev, Conn]] = field(default_factory=list, repr=False)
    _gaps: deque[float] = field(default_factory=lambda: deque(maxlen=PACE_SAMPLES), repr=False)
    _stall_at: float = 0.0

    @property
    def reconnects(self) -> int:
        """Connections opened after the first."""
        return max(0, self.opened - 1)

    # -- events ------------------------------------------------------------------------------

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
            self.stalled = False
            self.last_message_at = self.useful_at = None
            self.opened_at = now
            self._stall_at = now + self._first_wait()
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
        elif new is Conn.TLS_VERSION:
            self.wake_at = now + TLS_VERSION_RETRY * self.scale
        elif new in (Conn.NEEDS_PAIRING, Conn.NO_GRANT, Conn.CERTIFICATE_ERROR):
            self.failures = 0
        if new is not old:
            self.since = now
        self.state = new
        self.history.append((old, event, new))
        del self.history[:-64]
        return new

    def verdict(self, verdict: Verdict, now: float) -> Conn:
        """Apply a :func:`classify_status` or :func:`classify_close` verdict."""
        return self.handle(verdict.event, now, retry_after=verdict.retry_after)

    def message(self, now: float) -> None:
        """A message arrived on the open connection: liveness, and a sample of the pace."""
        last = self.last_message_at
        gap = now - (self.opened_at if last is None else last)  # the wait for the first, too
        if gap > 0.0:
            self._gaps.append(min(gap, PACE_MAX))
        self.last_message_at = now
        self._stall_at = now + self.stall_limit()

    def useful(self, now: float) -> None:
        """The message carried what the subscription is for (a valid telegram)."""
        first = self.useful_at is None
        self.useful_at = now
        if self.dropped:
            self.dropped.clear()
        if first:
            self.handle(Ev.RELAYING, now)

    def dropped_one(self, reason: str) -> None:
        """The message was dropped (``reason``: a short word such as ``crc``)."""
        self.dropped[reason] += 1

    @property
    def dropping(self) -> bool:
        """Connected, but every recent message was dropped (:data:`DROPPING_AFTER`)."""
        return self.state is Conn.CONNECTED and sum(self.dropped.values()) >= DROPPING_AFTER

    # -- time --------------------------------------------------------------------------------

    @property
    def pace(self) -> float | None:
        """The gateway's pace: the longest recent gap between messages (None: not known)."""
        return max(self._gaps) if self._gaps else None

    def stall_limit(self) -> float:
        """The silence after which an open connection counts as stalled."""
        pace = self.pace
        return self.stall_timeout if pace is None else max(self.stall_timeout, STALL_PACES * pace)

    def _first_wait(self) -> float:
        pace = self.pace
        if pace is None:
            return self.stall_timeout * FIRST_MESSAGE_WAIT
        return max(self.stall_timeout, STALL_PACES * pace)

    def deadline(self) -> float | None:
        """When the machine next needs :meth:`expire` (None: only an event moves it)."""
        if self.state is Conn.CONNECTED:
            return self._stall_at
        if self.state in WAITING:
            return self.wake_at
        return None

    def due(self, now: float) -> bool:
        """:meth:`deadline` has come."""
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def expire(self, now: float) -> Ev | None:
        """The deadline has come: a stalled connection fails (:attr:`stalled` is set), a
        wait ends in :attr:`Ev.CONNECT`. Returns the event applied, if any."""
        if not self.due(now):
            return None
        if self.state is Conn.CONNECTED:
            self.stalled = True
            self.handle(Ev.FAILED, now)
            return Ev.FAILED
        self.handle(Ev.CONNECT, now)
        return Ev.CONNECT

    def silence(self, now: float) -> float:
        """Seconds since the open connection last carried a message (or opened)."""
        last = self.last_message_at
        return now - (self.opened_at if last is None else last)
