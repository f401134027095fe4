"""The ledger of the meter's button, sans-I/O: every request and every grant, as tables.

X1 §5.1–§5.2 describe one mechanism: something asks on the meter's display, the customer
approves or denies with the button, and a secret is issued whose digest alone is kept,
renewed to 90 days on use and revocable from the portal or the meter. §5.2 applies it to
"zowel API-tokens als login-tokens". This file holds that mechanism once, for devices and
browsers alike (the habit of h11's ``_state.py``: everything that decides how a request
or a grant changes lives here). It does no I/O and reads no clock: every method takes
``now``. What changed comes out of :meth:`Ledger.take_changes` as typed
:class:`Change` records (an :class:`Event` each) for the gateway to persist and log;
:meth:`Ledger.restore` puts persisted records back after a restart;
:meth:`Ledger.checkpoint` and :meth:`Ledger.rollback` let the gateway undo an operation
whose write failed, so that memory and disk never disagree (docs/x1-api.md, "Pairing").

Requests (:class:`Request`), one table per :class:`RequestKind`::

    device     POST /api/tokens/requests (§5.1.2): a device asks for profiles
      pending  --APPROVE--> approved   on the meter (as asked, §5.1.5) or in the portal
                                       (other profiles allowed there, §5.1.6)
      pending  --DENY-----> denied     stays visible in the portal 10 minutes (§5.1.4)
      pending  --EXPIRE---> expired    10 minutes unanswered (§5.1.4: "automatisch
                                       geweigerd"), replaced, or a history block
    login      a browser asks to log in to the portal (§5.1.3)
      pending  --APPROVE/DENY/EXPIRE-- as above; --CANCEL--> cancelled (replaced, block)
      approved --CLAIM----> claimed    the browser fetched its session
      approved --EXPIRE---> expired    the browser never came back within the 10 minutes
      approved --CANCEL---> cancelled  history was blocked before the browser came back
    elevation  a session asks for admin access (§9.2.2); only the meter approves it, and
               it elevates only the session that asked
      pending  --APPROVE/DENY/EXPIRE/CANCEL--

Grants (:class:`Grant`), one table per :class:`GrantKind`::

    token      an API token (§5.2)
      active --USE, CHANGE_PROFILES, REISSUE--> active
      active --REVOKE--> revoked       the device, the meter, the portal, a history block,
                                       or a newer token of the same device
      active --EXPIRE--> expired       90 days without use
    session    a portal session (§5.2, "login-tokens")
      active --USE, ELEVATE, UNELEVATE--> active
      active --LOGOUT--> logged-out;  --REVOKE--> revoked;  --EXPIRE--> expired

The rules around the tables are tables too (:data:`LIFETIME`, :data:`MAX_PENDING`,
:data:`PER_ADDRESS`, :data:`REPLACE`, ...):

- **Codes.** Every request carries four digits, unique among pending requests, that the
  display shows next to its name; the waiting page and ``x1p1 pair`` show the same code.
- **The button** (:meth:`Ledger.pick`) acts on a request named by id or code, or on the
  only one waiting. With more than one waiting and none named it refuses
  (:class:`~x1p1.exceptions.SeveralWaiting`): the oldest-first button of a single queue
  handed the customer's press to whoever queued first (§5.1.5 "in volgorde van indienen"
  is the order of the display, not a licence to guess).
- **Caps.** At most :data:`MAX_PENDING` requests of each kind wait at once; each client
  address holds at most :data:`PER_ADDRESS` of each kind, and a further one replaces its
  oldest, so no single host can fill a queue. When a queue is full, a host with none
  waiting takes the place of the oldest request of the host that holds the most
  (:func:`gives_way`); only when each waits alone is it refused.
- **Throttling** (§5.1.7): three denials of one device (uuid) within an hour refuse its
  requests for an hour. Expiries do not count.
- **Answers.** A device request answers ``GET`` for its 10 minutes; an approved one for
  :data:`ANSWER_GRACE` more, so an approval at 9:50 still reaches a poll at 10:05.
- **Renewal** moves ``expires_at`` on every use; the record is handed out for persisting
  only when the last persisted renewal is :data:`RENEW_PERSIST_EVERY` old.
- **Secrets** are 256 random bits (base64url, 43 characters); only their SHA-256 is kept.
  A device's clear token lives in memory from approval until its request stops
  answering; after a restart the next poll mints a new secret for the same token
  (REISSUE). One authentication path, :meth:`Ledger.authenticate`, serves the API's
  bearer tokens and the portal's cookies.
- **Ids** are hex (never a leading ``-``, which a command line takes for an option).
- **Time.** :meth:`Ledger.maintain` does what is due at ``now`` (expiry, the renewal of
  grants in use by an open stream, pruning); :meth:`Ledger.next_deadline` says when that
  next is, so that the adapter waits for that moment or a change, never on a round.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import math
import re
import secrets
import uuid as uuid_module
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from x1p1.exceptions import (
    BadRequest,
    NotFound,
    RateLimited,
    RequestNotPending,
    SeveralWaiting,
    Unauthorized,
)
from x1p1.x1.api import (
    REQUEST_LIFETIME,
    TOKEN_LIFETIME,
    RequestStatus,
    TokenInfo,
    TokenRequestBody,
    TokenRequestState,
)
from x1p1.x1.profiles import Profile


class RequestKind(enum.StrEnum):
    """What a request asks for."""

    DEVICE = "device"
    """An API token for a device (§5.1.2)."""
    LOGIN = "login"
    """A portal session for a browser (§5.1.3)."""
    ELEVATION = "elevation"
    """Admin access for a portal session (§9.2.2)."""


class RequestState(enum.StrEnum):
    """The life of a request."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    CLAIMED = "claimed"


class RequestEvent(enum.Enum):
    """What can happen to a request."""

    APPROVE = "approve"
    DENY = "deny"
    EXPIRE = "expire"
    CANCEL = "cancel"
    CLAIM = "claim"


class GrantKind(enum.StrEnum):
    """What a grant is."""

    TOKEN = "token"
    """An API token (§5.2)."""
    SESSION = "session"
    """A portal session (§5.2's "login-tokens")."""


class GrantState(enum.StrEnum):
    """The life of a grant."""

    ACTIVE = "active"
    LOGGED_OUT = "logged-out"
    REVOKED = "revoked"
    EXPIRED = "expired"


class GrantEvent(enum.Enum):
    """What can happen to a grant."""

    USE = "use"
    CHANGE_PROFILES = "change-profiles"
    REISSUE = "reissue"
    ELEVATE = "elevate"
    UNELEVATE = "unelevate"
    LOGOUT = "logout"
    REVOKE = "revoke"
    EXPIRE = "expire"


_P, _A, _D = RequestState.PENDING, RequestState.APPROVED, RequestState.DENIED
_X, _C, _CL = RequestState.EXPIRED, RequestState.CANCELLED, RequestState.CLAIMED
_RE = RequestEvent

REQUEST_TABLES: dict[RequestKind, dict[RequestState, dict[RequestEvent, RequestState]]] = {
    RequestKind.DEVICE: {
        _P: {_RE.APPROVE: _A, _RE.DENY: _D, _RE.EXPIRE: _X},
        _A: {},
        _D: {},
        _X: {},
        _C: {},
        _CL: {},
    },
    RequestKind.LOGIN: {
        _P: {_RE.APPROVE: _A, _RE.DENY: _D, _RE.EXPIRE: _X, _RE.CANCEL: _C},
        _A: {_RE.CLAIM: _CL, _RE.EXPIRE: _X, _RE.CANCEL: _C},
        _D: {},
        _X: {},
        _C: {},
        _CL: {},
    },
    RequestKind.ELEVATION: {
        _P: {_RE.APPROVE: _A, _RE.DENY: _D, _RE.EXPIRE: _X, _RE.CANCEL: _C},
        _A: {},
        _D: {},
        _X: {},
        _C: {},
        _CL: {},
    },
}
"""The whole life of each kind of request: a move absent from a row cannot happen."""

_GE, _GA = GrantEvent, GrantState.ACTIVE

GRANT_TABLES: dict[GrantKind, dict[GrantState, dict[GrantEvent, GrantState]]] = {
    GrantKind.TOKEN: {
        _GA: {
            _GE.USE: _GA,
            _GE.CHANGE_PROFILES: _GA,
            _GE.REISSUE: _GA,
            _GE.REVOKE: GrantState.REVOKED,
            _GE.EXPIRE: GrantState.EXPIRED,
        },
        GrantState.LOGGED_OUT: {},
        GrantState.REVOKED: {},
        GrantState.EXPIRED: {},
    },
    GrantKind.SESSION: {
        _GA: {
            _GE.USE: _GA,
            _GE.ELEVATE: _GA,
            _GE.UNELEVATE: _GA,
            _GE.LOGOUT: GrantState.LOGGED_OUT,
            _GE.REVOKE: GrantState.REVOKED,
            _GE.EXPIRE: GrantState.EXPIRED,
        },
        GrantState.LOGGED_OUT: {},
        GrantState.REVOKED: {},
        GrantState.EXPIRED: {},
    },
}
"""The whole life of each kind of grant."""

# --- the rules, as tables ------------------------------------------------------------------

LIFETIME: dict[RequestKind | GrantKind, timedelta] = {
    RequestKind.DEVICE: REQUEST_LIFETIME,
    RequestKind.LOGIN: REQUEST_LIFETIME,
    RequestKind.ELEVATION: REQUEST_LIFETIME,
    GrantKind.TOKEN: TOKEN_LIFETIME,
    GrantKind.SESSION: TOKEN_LIFETIME,
}
"""Requests: 10 minutes, then denied automatically (§5.1.4). Grants: 90 days from their
last use (§5.2)."""
ANSWER_GRACE = timedelta(minutes=1)
"""An approved device request answers its id this long after its 10 minutes."""
DENIED_VISIBLE = timedelta(minutes=10)
"""A denied request stays in the portal's list this long (§5.1.4)."""
ELEVATION_LIFETIME = timedelta(minutes=60)
"""Admin access, once confirmed on the meter, holds 60 minutes (§9.2.2)."""
RENEW_PERSIST_EVERY = timedelta(hours=1)
"""A renewal on use is persisted at most this often (docs/x1-api.md)."""
KEEP_DECIDED = timedelta(hours=24)
"""Decided requests and ended grants are kept this long (the throttle needs the last two
hours), then dropped by :meth:`Ledger.prune`."""
MAX_PENDING: dict[RequestKind, int] = {
    RequestKind.DEVICE: 16,
    RequestKind.LOGIN: 16,
    RequestKind.ELEVATION: 16,
}
"""At most this many requests of a kind wait at once (the display is small)."""
PER_ADDRESS = 2
"""Pending requests of one kind that one client address may hold; another replaces its
oldest."""
REPLACE: dict[RequestKind, RequestEvent] = {
    RequestKind.DEVICE: RequestEvent.EXPIRE,
    RequestKind.LOGIN: RequestEvent.CANCEL,
    RequestKind.ELEVATION: RequestEvent.CANCEL,
}
"""How a replaced request ends (a device request can only expire: the wire has no
"cancelled", x1-api.md)."""


def gives_way(pending: Sequence[Request], address: str) -> Request | None:
    """The request that makes room in a full queue of one kind for a request from
    ``address`` (``pending`` oldest first): when ``address`` has none waiting, the oldest
    request of the address that holds the most, if that is more than one. None when
    ``address`` already waits or every request is the only one of its address: then the
    newcomer is refused. So hosts that each hold :data:`PER_ADDRESS` requests cannot
    keep a host that holds none out of the queue."""
    held = Counter(r.address for r in pending)
    if held[address] or not held:
        return None
    most = max(held.values())
    if most < 2:
        return None
    return next(r for r in pending if held[r.address] == most)


DENIALS_TO_THROTTLE = 3
DENIAL_WINDOW = timedelta(hours=1)
THROTTLE_FOR = timedelta(hours=1)
"""§5.1.7: three denials of one device within an hour refuse its requests for an hour."""
USER_AGENT_MAX = 256
"""A User-Agent is kept to this many characters."""
METER = "meter"
"""``decided_by`` of a request decided with the meter's buttons."""

_TICK = timedelta(microseconds=1)
"""The resolution of :class:`datetime`: a rule that acts once ``now`` is past a moment
(``now > moment``) is due at ``moment + _TICK``."""
_TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{43}\Z")
_CSRF_LABEL = b"x1p1 portal csrf v1"
_SESSION_UUIDS = uuid_module.UUID("6f1c3a52-8e5b-4d0e-9a57-3c1e0b2a7d41")
"""Namespace of the uuids that portal sessions answer in ``GET /api/token``."""


class Event(enum.Enum):
    """Everything the ledger reports, for the gateway to persist, log and put in the
    comlog (§2.2). The gateway maps each one exhaustively."""

    DEVICE_REQUESTED = "request-created"
    DEVICE_APPROVED = "request-approved"
    DEVICE_DENIED = "request-denied"
    DEVICE_EXPIRED = "request-expired"
    LOGIN_REQUESTED = "login-requested"
    LOGIN_APPROVED = "login-approved"
    LOGIN_DENIED = "login-denied"
    LOGIN_EXPIRED = "login-expired"
    LOGIN_CANCELLED = "login-cancelled"
    LOGIN_CLAIMED = "login-claimed"
    ELEVATION_REQUESTED = "elevation-requested"
    ELEVATION_APPROVED = "elevation-approved"
    ELEVATION_DENIED = "elevation-denied"
    ELEVATION_EXPIRED = "elevation-expired"
    ELEVATION_CANCELLED = "elevation-cancelled"
    REQUEST_DROPPED = "request-dropped"
    TOKEN_ISSUED = "token-issued"
    TOKEN_REISSUED = "token-reissued"
    TOKEN_RENEWED = "token-renewed"
    TOKEN_PROFILES_CHANGED = "token-profiles-changed"
    TOKEN_REVOKED = "token-revoked"
    TOKEN_EXPIRED = "token-expired"
    SESSION_STARTED = "session-started"
    SESSION_RENEWED = "session-renewed"
    SESSION_ELEVATED = "session-elevated"
    ELEVATION_ENDED = "elevation-ended"
    LOGOUT = "logout"
    SESSION_REVOKED = "session-revoked"
    SESSION_EXPIRED = "session-expired"
    GRANT_DROPPED = "grant-dropped"


_REQUEST_EVENTS: dict[tuple[RequestKind, RequestState], Event] = {
    (RequestKind.DEVICE, _P): Event.DEVICE_REQUESTED,
    (RequestKind.DEVICE, _A): Event.DEVICE_APPROVED,
    (RequestKind.DEVICE, _D): Event.DEVICE_DENIED,
    (RequestKind.DEVICE, _X): Event.DEVICE_EXPIRED,
    (RequestKind.LOGIN, _P): Event.LOGIN_REQUESTED,
    (RequestKind.LOGIN, _A): Event.LOGIN_APPROVED,
    (RequestKind.LOGIN, _D): Event.LOGIN_DENIED,
    (RequestKind.LOGIN, _X): Event.LOGIN_EXPIRED,
    (RequestKind.LOGIN, _C): Event.LOGIN_CANCELLED,
    (RequestKind.LOGIN, _CL): Event.LOGIN_CLAIMED,
    (RequestKind.ELEVATION, _P): Event.ELEVATION_REQUESTED,
    (RequestKind.ELEVATION, _A): Event.ELEVATION_APPROVED,
    (RequestKind.ELEVATION, _D): Event.ELEVATION_DENIED,
    (RequestKind.ELEVATION, _X): Event.ELEVATION_EXPIRED,
    (RequestKind.ELEVATION, _C): Event.ELEVATION_CANCELLED,
}
"""The event of a request reaching a state (the tables above say which can happen)."""

_GRANT_EVENTS: dict[tuple[GrantKind, GrantEvent], Event] = {
    (GrantKind.TOKEN, _GE.USE): Event.TOKEN_RENEWED,
    (GrantKind.TOKEN, _GE.CHANGE_PROFILES): Event.TOKEN_PROFILES_CHANGED,
    (GrantKind.TOKEN, _GE.REISSUE): Event.TOKEN_REISSUED,
    (GrantKind.TOKEN, _GE.REVOKE): Event.TOKEN_REVOKED,
    (GrantKind.TOKEN, _GE.EXPIRE): Event.TOKEN_EXPIRED,
    (GrantKind.SESSION, _GE.USE): Event.SESSION_RENEWED,
    (GrantKind.SESSION, _GE.ELEVATE): Event.SESSION_ELEVATED,
    (GrantKind.SESSION, _GE.UNELEVATE): Event.ELEVATION_ENDED,
    (GrantKind.SESSION, _GE.LOGOUT): Event.LOGOUT,
    (GrantKind.SESSION, _GE.REVOKE): Event.SESSION_REVOKED,
    (GrantKind.SESSION, _GE.EXPIRE): Event.SESSION_EXPIRED,
}


def next_request_state(kind: RequestKind, state: RequestState, event: RequestEvent) -> RequestState:
    """The state after ``event``; :class:`RequestNotPending` if the table has no such move."""
    try:
        return REQUEST_TABLES[kind][state][event]
    except KeyError:
        raise RequestNotPending(f"the {kind.value} request is {state.value}") from None


def next_grant_state(kind: GrantKind, state: GrantState, event: GrantEvent) -> GrantState:
    """The state after ``event``; :class:`Unauthorized` if the grant can no longer move."""
    try:
        return GRANT_TABLES[kind][state][event]
    except KeyError:
        what = "token" if kind is GrantKind.TOKEN else "portal session"
        raise Unauthorized(f"the {what} is {state.value}") from None


# --- pure helpers -------------------------------------------------------------------------


def new_secret(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh secret: 256 random bits in base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode("ascii")


def secret_digest(secret: str) -> str:
    """What the gateway keeps of a secret: its SHA-256 in hex."""
    return hashlib.sha256(secret.encode("ascii", "replace")).hexdigest()


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` has the form of a secret (43 base64url characters)."""
    return bool(_TOKEN_FORMAT.match(text))


def csrf_token(session_secret: str) -> str:
    """The CSRF token of a session's forms: HMAC-SHA256 of a fixed label keyed by the
    session secret, base64url (43 characters). Stored nowhere; checked per request."""
    mac = hmac.new(session_secret.encode("ascii", "replace"), _CSRF_LABEL, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def csrf_ok(session_secret: str, given: str | None) -> bool:
    """Whether ``given`` is the CSRF token of ``session_secret`` (constant time)."""
    if not given:
        return False
    expected = csrf_token(session_secret).encode()
    return hmac.compare_digest(expected, given.encode("utf-8", "replace"))


def clean_user_agent(raw: str | None) -> str:
    """A User-Agent fit for a display and a log: printable, at most
    :data:`USER_AGENT_MAX` characters, ``unknown browser`` when empty."""
    text = "".join(ch if ch.isprintable() else " " for ch in (raw or ""))
    text = re.sub(r"\s+", " ", text).strip()[:USER_AGENT_MAX]
    return text or "unknown browser"


_BROWSERS = (
    ("Edge", r"Edg(?:e|A|iOS)?/(\d+)"),
    ("Opera", r"OPR/(\d+)"),
    ("Samsung Internet", r"SamsungBrowser/(\d+)"),
    ("Firefox", r"(?:Firefox|FxiOS)/(\d+)"),
    ("Headless Chrome", r"HeadlessChrome/(\d+)"),
    ("Chrome", r"(?:Chrome|CriOS)/(\d+)"),
    ("Safari", r"Version/(\d+)[.\d]* (?:Mobile/\S+ )?Safari/"),
    ("curl", r"curl/(\d+)"),
)
_SYSTEMS = (
    ("iPhone", r"iPhone"),
    ("iPad", r"iPad"),
    ("Android", r"Android"),
    ("Windows", r"Windows"),
    ("macOS", r"Mac OS X|Macintosh"),
    ("ChromeOS", r"CrOS"),
    ("Linux", r"Linux|X11"),
)


def describe_user_agent(user_agent: str) -> str:
    """A short name people recognise: ``Firefox 130 on Windows``; the cleaned
    User-Agent itself (cut to 60 characters) when it is none of the well-known ones."""
    browser = next(
        (
            f"{name} {m.group(1)}"
            for name, pattern in _BROWSERS
            if (m := re.search(pattern, user_agent))
        ),
        None,
    )
    system = next((name for name, pattern in _SYSTEMS if re.search(pattern, user_agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser or system:
        return browser or f"a browser on {system}"
    return user_agent[:60]


def session_uuid(login_request_id: str) -> str:
    """The uuid of the session a login request makes (a real UUID, as ``GET /api/token``
    answers it); the comlog names the browser by it before and after it logged in."""
    return str(uuid_module.uuid5(_SESSION_UUIDS, login_request_id))


def _seconds(delta: timedelta) -> int:
    """Whole seconds, rounded up, at least 1 (a ``Retry-After`` value)."""
    return max(1, math.ceil(delta.total_seconds()))


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """Something waiting for, or decided by, the meter's button."""

    request_id: str
    """128 random bits in hex: the key to a device's token, shown to admin sessions only."""
    kind: RequestKind
    code: str
    """Four digits, unique among pending requests: the display shows them (§5.1.5)."""
    address: str
    """The client's IP address (the per-address cap)."""
    created_at: datetime
    name: str
    """A device's name, or a browser's cleaned User-Agent."""
    uuid: str = ""
    """A device's uuid (§5.1.2); empty for logins and elevations."""
    asked: frozenset[Profile] = frozenset()
    """The profiles a device asks for; a login asks for the customer's view (all)."""
    state: RequestState = RequestState.PENDING
    decided_at: datetime | None = None
    decided_by: str | None = None
    """:data:`METER`, or ``session:<id>`` of the portal session that decided it."""
    granted: frozenset[Profile] | None = None
    grant_id: str | None = None
    """Device: the token issued. Login: the session made when claimed. Elevation: the
    session that asked (the only one its approval elevates)."""
    secret_digest: str | None = None
    """Login: SHA-256 of the waiting browser's secret (its cookie)."""

    @property
    def admin(self) -> bool:
        """Whether it asks for admin access (§9.2.2)."""
        return self.kind is RequestKind.ELEVATION

    @property
    def expires_at(self) -> datetime:
        """The end of its 10 minutes (§5.1.4)."""
        return self.created_at + LIFETIME[self.kind]

    @property
    def answers_until(self) -> datetime:
        """Until when ``GET /api/tokens/requests/{id}`` knows it."""
        if self.state is RequestState.APPROVED:
            return self.expires_at + ANSWER_GRACE
        return self.expires_at

    def answers(self, now: datetime) -> bool:
        return now <= self.answers_until

    @property
    def browser(self) -> str:
        """What the display shows: the device's name, or the browser people recognise."""
        if self.kind is RequestKind.DEVICE:
            return self.name
        return describe_user_agent(self.name)

    @property
    def user_agent(self) -> str:
        return self.name

    @property
    def session_id(self) -> str | None:
        """The session of a login (once claimed) or of an elevation."""
        return None if self.kind is RequestKind.DEVICE else self.grant_id

    @property
    def token_id(self) -> str | None:
        return self.grant_id if self.kind is RequestKind.DEVICE else None

    @property
    def status(self) -> RequestState:
        return self.state

    def wire_status(self) -> RequestStatus:
        """A device request's status on the wire (x1-api.md has four)."""
        if self.state is RequestState.CANCELLED:
            return RequestStatus.EXPIRED
        return RequestStatus(self.state.value)

    def visible(self, now: datetime) -> bool:
        """Whether the portal lists it: pending, or denied in the last 10 minutes (§5.1.4)."""
        if self.state is RequestState.PENDING:
            return True
        decided = self.decided_at or self.created_at
        return self.state is RequestState.DENIED and now - decided < DENIED_VISIBLE


@dataclass(frozen=True, slots=True)
class Grant:
    """An API token or a portal session, as the gateway keeps it: never the secret."""

    grant_id: str
    """A public handle (16 hex digits) for the meter, the portal and the comlog."""
    kind: GrantKind
    digest: str
    name: str
    """A device's name, or a browser's cleaned User-Agent."""
    uuid: str
    """A device's uuid; a session's own (a real UUID, for ``GET /api/token``)."""
    profiles: frozenset[Profile]
    created_at: datetime
    expires_at: datetime
    state: GrantState = GrantState.ACTIVE
    last_used: datetime | None = None
    renewed_at: datetime | None = None
    """When a renewal was last handed out for persisting (None: never since creation)."""
    elevated_until: datetime | None = None
    """A session's admin access (§9.2.2)."""
    request_id: str | None = None
    ended_at: datetime | None = None

    @property
    def token_id(self) -> str:
        """The id its streams, rate limits and use run under: a token's own id, or
        ``session:<id>`` for a session."""
        if self.kind is GrantKind.SESSION:
            return f"session:{self.grant_id}"
        return self.grant_id

    @property
    def session_id(self) -> str:
        return self.grant_id

    @property
    def status(self) -> GrantState:
        return self.state

    @property
    def user_agent(self) -> str:
        return self.name

    @property
    def browser(self) -> str:
        if self.kind is GrantKind.TOKEN:
            return self.name
        return describe_user_agent(self.name)

    @property
    def label(self) -> str:
        """How the API's ``GET /api/token`` and the comlog name it."""
        if self.kind is GrantKind.TOKEN:
            return self.name
        return f"portal: {self.browser}"

    def elevated(self, now: datetime) -> bool:
        """Whether the session holds admin access at ``now`` (§9.2.2)."""
        return (
            self.state is GrantState.ACTIVE
            and self.elevated_until is not None
            and now < self.elevated_until
        )

    def info(self) -> TokenInfo:
        """``GET /api/token``."""
        return TokenInfo(self.label, self.uuid, self.profiles, self.expires_at)


@dataclass(frozen=True, slots=True)
class Change:
    """One thing that changed, for the gateway to persist and log; ``record`` is after
    the change."""

    event: Event
    record: Request | Grant
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LoginPoll:
    """What a waiting browser learns: its request, and once claimed its session and the
    session secret (handed out exactly once)."""

    request: Request
    session: Grant | None = None
    secret: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The ledger as it was, for :meth:`Ledger.rollback`."""

    requests: dict[str, Request]
    grants: dict[str, Grant]
    secrets: dict[str, str]
    changes: int


class Ledger:
    """Every request and grant, in memory, with the rules of this module.

    ``random_bytes`` makes ids, codes and secrets (tests may pass a seeded source)."""

    def __init__(self, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._random = random_bytes
        self._requests: dict[str, Request] = {}
        self._grants: dict[str, Grant] = {}
        self._by_digest: dict[str, str] = {}
        """secret digest -> grant id (tokens and sessions)."""
        self._by_login: dict[str, str] = {}
        """login secret digest -> request id."""
        self._secrets: dict[str, str] = {}
        """device request id -> the clear token, while the request answers (memory only)."""
        self._changes: list[Change] = []

    # --- restoring, draining, undoing ----------------------------------------------------

    def restore(self, requests: Iterable[Request], grants: Iterable[Grant]) -> None:
        """Put persisted records back (on start). Emits no changes."""
        for request in requests:
            self._requests[request.request_id] = request
        for grant in grants:
            self._grants[grant.grant_id] = grant
        self._reindex()

    def _reindex(self) -> None:
        self._by_digest = {g.digest: g.grant_id for g in self._grants.values()}
        self._by_login = {
            r.secret_digest: r.request_id for r in self._requests.values() if r.secret_digest
        }

    def take_changes(self) -> list[Change]:
        """What changed since the last call, oldest first."""
        changes, self._changes = self._changes, []
        return changes

    def checkpoint(self) -> Checkpoint:
        """The ledger as it is now (records are frozen: copying the maps is enough)."""
        return Checkpoint(
            dict(self._requests), dict(self._grants), dict(self._secrets), len(self._changes)
        )

    def rollback(self, point: Checkpoint) -> None:
        """Back to ``point``: every change since is forgotten (its write failed)."""
        self._requests = dict(point.requests)
        self._grants = dict(point.grants)
        self._secrets = dict(point.secrets)
        del self._changes[point.changes :]
        self._reindex()

    def _emit(self, event: Event, record: Request | Grant, reason: str = "") -> None:
        self._changes.append(Change(event, record, reason))

    # --- moves -----------------------------------------------------------------------------

    def _move_request(
        self,
        request: Request,
        event: RequestEvent,
        now: datetime,
        reason: str = "",
        *,
        decided_by: str | None = None,
        granted: frozenset[Profile] | None = None,
        grant_id: str | None = None,
    ) -> Request:
        state = next_request_state(request.kind, request.state, event)
        first = request.state is RequestState.PENDING
        moved = replace(
            request,
            state=state,
            decided_at=now if first else request.decided_at,
            decided_by=decided_by if decided_by is not None else request.decided_by,
            granted=granted if granted is not None else request.granted,
            grant_id=grant_id if grant_id is not None else request.grant_id,
        )
        self._requests[moved.request_id] = moved
        self._emit(_REQUEST_EVENTS[(moved.kind, state)], moved, reason)
        return moved

    def _move_grant(
        self,
        grant: Grant,
        event: GrantEvent,
        now: datetime,
        reason: str = "",
        changed: Grant | None = None,
        *,
        quiet: bool = False,
    ) -> Grant:
        """Move ``grant`` by ``event``; ``changed`` carries other fields that change with
        it; ``quiet`` changes memory only (a renewal not yet due for persisting)."""
        state = next_grant_state(grant.kind, grant.state, event)
        moved = replace(changed or grant, state=state)
        if state is not GrantState.ACTIVE:
            moved = replace(moved, ended_at=now, elevated_until=None)
        self._grants[moved.grant_id] = moved
        if moved.digest != grant.digest:
            self._by_digest.pop(grant.digest, None)
            self._by_digest[moved.digest] = moved.grant_id
        if not quiet:
            self._emit(_GRANT_EVENTS[(moved.kind, event)], moved, reason)
        if state is not GrantState.ACTIVE and moved.kind is GrantKind.SESSION:
            for request in list(self._requests.values()):
                if (
                    request.kind is RequestKind.ELEVATION
                    and request.grant_id == moved.grant_id
                    and request.state is RequestState.PENDING
                ):
                    self._move_request(request, RequestEvent.CANCEL, now, "the session ended")
        return moved

    # --- time --------------------------------------------------------------------------------

    def expire_due(self, now: datetime) -> None:
        """Expire requests past their 10 minutes (approved logins never claimed too) and
        grants past their 90 days; forget clear tokens whose request no longer answers."""
        for request in list(self._requests.values()):
            if now >= request.expires_at:
                if request.state is RequestState.PENDING:
                    self._move_request(
                        request, RequestEvent.EXPIRE, request.expires_at, "unanswered for 10 min"
                    )
                elif request.state is RequestState.APPROVED and request.kind is RequestKind.LOGIN:
                    self._move_request(
                        request,
                        RequestEvent.EXPIRE,
                        request.expires_at,
                        "the browser did not come back for its session",
                    )
            if request.request_id in self._secrets and not self._requests[
                request.request_id
            ].answers(now):
                del self._secrets[request.request_id]
        for grant in list(self._grants.values()):
            if grant.state is GrantState.ACTIVE and now >= grant.expires_at:
                self._move_grant(grant, GrantEvent.EXPIRE, grant.expires_at, "90 days unused")

    def maintain(self, now: datetime, live: Collection[str] = frozenset()) -> None:
        """The ledger's housekeeping at ``now``: expire what is due, renew the grants
        whose ``token_id`` is in ``live`` (an open stream is use, §5.2: a streaming
        device never expires mid-stream), drop what :data:`KEEP_DECIDED` has passed."""
        self.expire_due(now)
        for grant in list(self._grants.values()):
            if grant.state is GrantState.ACTIVE and grant.token_id in live:
                self.touch(grant.grant_id, now)
        self.prune(now)

    def next_deadline(self, now: datetime, live: Collection[str] = frozenset()) -> datetime | None:
        """The first moment at which :meth:`maintain` changes something, or None when
        nothing will (timers are data: the adapter waits for that moment or a change,
        architecture.md, habit 12). ``live`` as for :meth:`maintain`. Due are: a request's 10
        minutes (an approved login's too), the end of a clear token's life in memory, a
        grant's 90 days, the renewal of a live grant due for persisting
        (:data:`RENEW_PERSIST_EVERY`), and the pruning of decided requests and ended
        grants. Admin access ends by itself (:meth:`Grant.elevated` reads ``now``):
        nothing is due then. After ``maintain(t, live)`` this is None or later than
        ``t``, so an adapter that runs the one at the other never spins."""
        moments: list[datetime] = []
        for request in self._requests.values():
            if request.state is RequestState.PENDING or (
                request.state is RequestState.APPROVED and request.kind is RequestKind.LOGIN
            ):
                moments.append(request.expires_at)
            if request.request_id in self._secrets:
                moments.append(request.answers_until + _TICK)
            if request.state is not RequestState.PENDING:
                moments.append(request.created_at + KEEP_DECIDED + _TICK)
        for grant in self._grants.values():
            if grant.state is GrantState.ACTIVE:
                moments.append(grant.expires_at)
                if grant.token_id in live:
                    renewed = grant.renewed_at
                    moments.append(now if renewed is None else renewed + RENEW_PERSIST_EVERY)
            elif grant.ended_at is not None:
                moments.append(grant.ended_at + KEEP_DECIDED + _TICK)
        return min(moments, default=None)

    def prune(self, now: datetime) -> None:
        """Drop decided requests and ended grants older than :data:`KEEP_DECIDED`."""
        self.expire_due(now)
        for request in list(self._requests.values()):
            if request.state is not RequestState.PENDING and now - request.created_at > (
                KEEP_DECIDED
            ):
                del self._requests[request.request_id]
                if request.secret_digest:
                    self._by_login.pop(request.secret_digest, None)
                self._emit(Event.REQUEST_DROPPED, request)
        for grant in list(self._grants.values()):
            ended = grant.ended_at
            if grant.state is not GrantState.ACTIVE and ended and now - ended > KEEP_DECIDED:
                del self._grants[grant.grant_id]
                self._by_digest.pop(grant.digest, None)
                self._emit(Event.GRANT_DROPPED, grant)

    # --- requests: reading ---------------------------------------------------------------

    def pending(self, now: datetime, kind: RequestKind | None = None) -> list[Request]:
        """Pending requests (of ``kind``), oldest first: the display's order (§5.1.5)."""
        self.expire_due(now)
        waiting = [
            r
            for r in self._requests.values()
            if r.state is RequestState.PENDING and (kind is None or r.kind is kind)
        ]
        return sorted(waiting, key=lambda r: (r.created_at, r.request_id))

    def display(self, now: datetime) -> Request | None:
        """What the meter's display shows: one request, the oldest waiting (§5.1.5)."""
        pending = self.pending(now)
        return pending[0] if pending else None

    def visible(self, now: datetime, kind: RequestKind | None = None) -> list[Request]:
        """Requests the portal lists: pending, and denied in the last 10 minutes."""
        self.expire_due(now)
        shown = [
            r
            for r in self._requests.values()
            if r.visible(now) and (kind is None or r.kind is kind)
        ]
        return sorted(shown, key=lambda r: (r.created_at, r.request_id))

    def requests(self) -> list[Request]:
        """Every request kept, oldest first."""
        return sorted(self._requests.values(), key=lambda r: (r.created_at, r.request_id))

    def request(self, request_id: str) -> Request:
        """A request by id; :class:`NotFound` if unknown."""
        request = self._requests.get(request_id)
        if request is None:
            raise NotFound(f"no request {request_id!r}")
        return request

    def throttled_until(self, uuid: str, now: datetime) -> datetime | None:
        """The end of a §5.1.7 throttle on device ``uuid`` that holds at ``now``, or None."""
        denials = sorted(
            r.decided_at
            for r in self._requests.values()
            if r.kind is RequestKind.DEVICE
            and r.uuid == uuid
            and r.state is RequestState.DENIED
            and r.decided_at is not None
        )
        until: datetime | None = None
        n = DENIALS_TO_THROTTLE
        for first, last in zip(denials, denials[n - 1 :], strict=False):
            if last - first <= DENIAL_WINDOW:
                end = last + THROTTLE_FOR
                until = end if until is None or end > until else until
        return until if until is not None and now < until else None

    # --- requests: making ----------------------------------------------------------------

    def _make_room(self, kind: RequestKind, address: str, now: datetime) -> None:
        """The per-address cap (a further request replaces the address's oldest), then
        the cap of the kind: room for a newcomer (:func:`gives_way`), or
        :class:`RateLimited`."""
        pending = self.pending(now, kind)
        own = [r for r in pending if r.address == address]
        while len(own) >= PER_ADDRESS:
            oldest = own.pop(0)
            self._move_request(
                oldest, REPLACE[kind], now, f"replaced: at most {PER_ADDRESS} per address"
            )
            pending.remove(oldest)
        if len(pending) >= MAX_PENDING[kind]:
            victim = gives_way(pending, address)
            if victim is not None:
                self._move_request(
                    victim, REPLACE[kind], now, "replaced: the queue was full, another host asked"
                )
                return
            raise RateLimited(
                f"{MAX_PENDING[kind]} requests are already waiting on the meter",
                retry_after=_seconds(pending[0].expires_at - now),
            )

    def _new_request(
        self,
        kind: RequestKind,
        address: str,
        name: str,
        now: datetime,
        *,
        uuid: str = "",
        asked: frozenset[Profile] = frozenset(),
        grant_id: str | None = None,
        login_digest: str | None = None,
    ) -> Request:
        taken = {r.code for r in self.pending(now)}
        request = Request(
            request_id=self._hex(16),
            kind=kind,
            code=self._code(taken),
            address=address,
            created_at=now,
            name=name,
            uuid=uuid,
            asked=asked,
            grant_id=grant_id,
            secret_digest=login_digest,
        )
        self._requests[request.request_id] = request
        if login_digest:
            self._by_login[login_digest] = request.request_id
        self._emit(_REQUEST_EVENTS[(kind, RequestState.PENDING)], request)
        return request

    def request_device(self, body: TokenRequestBody, address: str, now: datetime) -> Request:
        """``POST /api/tokens/requests`` (§5.1.2): a new pending request. A pending one of
        the same device is replaced (the display never shows a device twice)."""
        self.expire_due(now)
        until = self.throttled_until(body.uuid, now)
        if until is not None:
            raise RateLimited(
                "this device was denied three times within an hour; it may ask again later",
                retry_after=_seconds(until - now),
            )
        for older in self.pending(now, RequestKind.DEVICE):
            if older.uuid == body.uuid:
                self._move_request(older, RequestEvent.EXPIRE, now, "replaced by a newer request")
        self._make_room(RequestKind.DEVICE, address, now)
        return self._new_request(
            RequestKind.DEVICE, address, body.name, now, uuid=body.uuid, asked=body.profiles
        )

    def device_state(self, request_id: str, now: datetime) -> TokenRequestState:
        """``GET /api/tokens/requests/{id}``: the state, with the token when approved
        (minting a new secret if a restart lost the first one)."""
        self.expire_due(now)
        request = self._requests.get(request_id)
        if request is None or request.kind is not RequestKind.DEVICE or not request.answers(now):
            raise NotFound("no such token request (a request answers for 10 minutes)")
        status = request.wire_status()
        if request.state is not RequestState.APPROVED:
            return TokenRequestState(
                request.request_id, status, request.expires_at, code=request.code
            )
        grant = self._grants.get(request.grant_id or "")
        if grant is None or grant.state is not GrantState.ACTIVE:
            raise NotFound("the token of this request is no longer valid")
        secret = self._secrets.get(request_id)
        if secret is None:
            secret = new_secret(self._random)
            self._secrets[request_id] = secret
            self._move_grant(
                grant,
                GrantEvent.REISSUE,
                now,
                "the first secret was lost in a restart",
                replace(grant, digest=secret_digest(secret)),
            )
        return TokenRequestState(
            request.request_id,
            status,
            request.expires_at,
            secret,
            grant.profiles,
            code=request.code,
        )

    def start_login(
        self,
        user_agent: str | None,
        address: str,
        now: datetime,
        *,
        previous_secret: str | None = None,
    ) -> tuple[Request, str]:
        """A new login request for a browser (§5.1.3) and the secret for its cookie. A
        pending request of the same browser (``previous_secret``) is cancelled."""
        self.expire_due(now)
        old = self._login_request(previous_secret)
        if old is not None and old.state is RequestState.PENDING:
            self._move_request(old, RequestEvent.CANCEL, now, "replaced by a newer login request")
        self._make_room(RequestKind.LOGIN, address, now)
        secret = new_secret(self._random)
        request = self._new_request(
            RequestKind.LOGIN,
            address,
            clean_user_agent(user_agent),
            now,
            asked=frozenset(Profile),
            login_digest=secret_digest(secret),
        )
        return request, secret

    def _login_request(self, secret: str | None) -> Request | None:
        if not secret or not looks_like_secret(secret):
            return None
        request_id = self._by_login.get(secret_digest(secret))
        return self._requests.get(request_id or "")

    def poll_login(self, secret: str | None, now: datetime) -> LoginPoll:
        """A waiting browser asks how its login stands. Approved: it is claimed now and
        the answer carries the new session and its secret (once). :class:`NotFound` when
        the browser holds no known request."""
        self.expire_due(now)
        request = self._login_request(secret)
        if request is None:
            raise NotFound("no login request for this browser; start one")
        if request.state is not RequestState.APPROVED:
            return LoginPoll(request)
        session_secret = new_secret(self._random)
        grant_id = self._hex(8)
        session = Grant(
            grant_id=grant_id,
            kind=GrantKind.SESSION,
            digest=secret_digest(session_secret),
            name=request.name,
            uuid=session_uuid(request.request_id),
            profiles=frozenset(Profile),
            created_at=now,
            expires_at=now + LIFETIME[GrantKind.SESSION],
            last_used=now,
            renewed_at=now,
            request_id=request.request_id,
        )
        self._grants[grant_id] = session
        self._by_digest[session.digest] = grant_id
        claimed = self._move_request(request, RequestEvent.CLAIM, now, grant_id=grant_id)
        self._emit(Event.SESSION_STARTED, session)
        return LoginPoll(claimed, session, session_secret)

    def request_elevation(self, session_id: str, address: str, now: datetime) -> Request:
        """A session asks the meter for admin access (§9.2.2); its pending elevation is
        returned rather than a second one made."""
        self.expire_due(now)
        session = self.grant(session_id)
        if session.kind is not GrantKind.SESSION or session.state is not GrantState.ACTIVE:
            raise Unauthorized("the portal session has ended; log in again")
        for request in self.pending(now, RequestKind.ELEVATION):
            if request.grant_id == session_id:
                return request
        self._make_room(RequestKind.ELEVATION, address, now)
        return self._new_request(
            RequestKind.ELEVATION, address, session.name, now, grant_id=session_id
        )

    # --- the button ------------------------------------------------------------------------

    def pick(
        self, now: datetime, request_id: str | None = None, code: str | None = None
    ) -> Request:
        """The request the meter's button acts on: the one named by id or code, or the
        only one waiting. :class:`SeveralWaiting` when several wait and none is named;
        :class:`NotFound` when none waits or the name matches none."""
        pending = self.pending(now)
        if request_id is not None:
            return self.request(request_id)
        if code is not None:
            found = [r for r in pending if r.code == code]
            if not found:
                raise NotFound(f"no waiting request shows the code {code}")
            return found[0]
        if not pending:
            raise NotFound("no request is waiting on the meter")
        if len(pending) > 1:
            raise SeveralWaiting(
                f"{len(pending)} requests are waiting; name one by its code (--code NNNN)",
                waiting=[(r.request_id, r.code, r.kind.value, r.browser) for r in pending],
            )
        return pending[0]

    def approve(
        self,
        request_id: str | None,
        now: datetime,
        *,
        code: str | None = None,
        by: str = METER,
        profiles: frozenset[Profile] | None = None,
    ) -> Request:
        """Approve a request (see :meth:`pick`). ``by`` is :data:`METER` or
        ``session:<id>``. The meter grants a device's profiles as asked, as a whole
        (§5.1.5); only the portal may grant others (§5.1.6). An elevation is approved on
        the meter only and elevates the session that asked for it."""
        request = self.pick(now, request_id, code)
        next_request_state(request.kind, request.state, RequestEvent.APPROVE)
        if request.kind is RequestKind.DEVICE:
            if profiles is not None and by == METER:
                raise BadRequest("the meter approves the profiles as asked (§5.1.5)")
            granted = frozenset(profiles) if profiles is not None else request.asked
            if not granted:
                raise BadRequest("profiles: grant at least one profile")
            return self._issue_token(request, granted, now, by)
        if profiles is not None:
            raise BadRequest("profiles: a login or admin request has no profiles")
        if request.kind is RequestKind.ELEVATION:
            if by != METER:
                raise BadRequest("admin access is confirmed with the meter's button only")
            session = self.grant(request.grant_id or "")
            next_grant_state(session.kind, session.state, GrantEvent.ELEVATE)
            approved = self._move_request(request, RequestEvent.APPROVE, now, decided_by=by)
            self._move_grant(
                session,
                GrantEvent.ELEVATE,
                now,
                changed=replace(session, elevated_until=now + ELEVATION_LIFETIME),
            )
            return approved
        return self._move_request(request, RequestEvent.APPROVE, now, decided_by=by)

    def _issue_token(
        self, request: Request, granted: frozenset[Profile], now: datetime, by: str
    ) -> Request:
        for old in list(self._grants.values()):
            if (
                old.kind is GrantKind.TOKEN
                and old.uuid == request.uuid
                and old.state is GrantState.ACTIVE
            ):
                self._move_grant(old, GrantEvent.REVOKE, now, "replaced by a newer token")
        secret = new_secret(self._random)
        token = Grant(
            grant_id=self._hex(8),
            kind=GrantKind.TOKEN,
            digest=secret_digest(secret),
            name=request.name,
            uuid=request.uuid,
            profiles=granted,
            created_at=now,
            expires_at=now + LIFETIME[GrantKind.TOKEN],
            renewed_at=now,
            request_id=request.request_id,
        )
        self._grants[token.grant_id] = token
        self._by_digest[token.digest] = token.grant_id
        self._secrets[request.request_id] = secret
        approved = self._move_request(
            request,
            RequestEvent.APPROVE,
            now,
            decided_by=by,
            granted=granted,
            grant_id=token.grant_id,
        )
        self._emit(Event.TOKEN_ISSUED, token)
        return approved

    def deny(
        self,
        request_id: str | None,
        now: datetime,
        *,
        code: str | None = None,
        by: str = METER,
    ) -> Request:
        """Deny a request (see :meth:`pick`); an elevation only on the meter."""
        request = self.pick(now, request_id, code)
        if request.kind is RequestKind.ELEVATION and by != METER:
            raise BadRequest("admin access is decided with the meter's buttons only")
        return self._move_request(
            request, RequestEvent.DENY, now, "denied by the customer", decided_by=by
        )

    # --- grants ----------------------------------------------------------------------------

    def authenticate(self, secret: str | None, now: datetime) -> Grant:
        """The one authentication path: the active grant of ``secret`` (an API token or a
        session cookie), renewed to 90 days (§5.2); :class:`Unauthorized` otherwise."""
        if not secret:
            raise Unauthorized("an API token is needed: Authorization: Bearer <token>")
        if not looks_like_secret(secret):
            raise Unauthorized("that is not an API token")
        grant = self._grants.get(self._by_digest.get(secret_digest(secret)) or "")
        if grant is None:
            raise Unauthorized("unknown token")
        if grant.state is GrantState.ACTIVE and now >= grant.expires_at:
            grant = self._move_grant(grant, GrantEvent.EXPIRE, grant.expires_at, "90 days unused")
        if grant.state is not GrantState.ACTIVE:
            raise Unauthorized(f"the token was {grant.state.value}")
        return self.touch(grant.grant_id, now)

    def touch(self, grant_id: str, now: datetime) -> Grant:
        """Note a use: renew to 90 days from ``now`` (§5.2); handed out for persisting
        when the last persisted renewal is :data:`RENEW_PERSIST_EVERY` old."""
        grant = self.grant(grant_id)
        due = grant.renewed_at is None or now - grant.renewed_at >= RENEW_PERSIST_EVERY
        renewed = replace(
            grant,
            expires_at=max(grant.expires_at, now + LIFETIME[grant.kind]),
            last_used=now,
            renewed_at=now if due else grant.renewed_at,
        )
        return self._move_grant(grant, GrantEvent.USE, now, "", renewed, quiet=not due)

    def grant(self, grant_id: str) -> Grant:
        """A grant by its public id; :class:`NotFound` if unknown."""
        grant = self._grants.get(grant_id)
        if grant is None:
            raise NotFound(f"no device or session {grant_id!r}")
        return grant

    def grants(self, now: datetime, kind: GrantKind | None = None) -> list[Grant]:
        """Active grants (of ``kind``), oldest first."""
        self.expire_due(now)
        active = [
            g
            for g in self._grants.values()
            if g.state is GrantState.ACTIVE and (kind is None or g.kind is kind)
        ]
        return sorted(active, key=lambda g: (g.created_at, g.grant_id))

    def _active(self, grant_id: str, kind: GrantKind | None = None) -> Grant:
        grant = self.grant(grant_id)
        if kind is not None and grant.kind is not kind:
            raise NotFound(f"no {kind.value} {grant_id!r}")
        if grant.state is not GrantState.ACTIVE:
            raise NotFound(f"{grant_id!r} is already {grant.state.value}")
        return grant

    def revoke(self, grant_id: str, now: datetime, reason: str = "revoked") -> Grant:
        """Revoke an active token or session (§5.2: "op elk moment … intrekken")."""
        return self._move_grant(self._active(grant_id), GrantEvent.REVOKE, now, reason)

    def logout(self, session_id: str, now: datetime) -> Grant:
        grant = self._active(session_id, GrantKind.SESSION)
        return self._move_grant(grant, GrantEvent.LOGOUT, now, "logged out")

    def unelevate(self, session_id: str, now: datetime) -> Grant:
        """End a session's admin access before its 60 minutes are over."""
        grant = self._active(session_id, GrantKind.SESSION)
        return self._move_grant(
            grant, GrantEvent.UNELEVATE, now, "", replace(grant, elevated_until=None)
        )

    def set_profiles(self, token_id: str, profiles: frozenset[Profile], now: datetime) -> Grant:
        """Grant other profiles to an active token (§5.1.6: "op enig later moment")."""
        if not profiles:
            raise BadRequest("profiles: grant at least one profile")
        grant = self._active(token_id, GrantKind.TOKEN)
        return self._move_grant(
            grant, GrantEvent.CHANGE_PROFILES, now, "", replace(grant, profiles=frozenset(profiles))
        )

    def revoke_all(self, now: datetime, reason: str) -> list[Grant]:
        """End every grant and every open request (a history block, §12.1: every
        authorisation given ends, approved logins not yet claimed included)."""
        ended = [self.revoke(g.grant_id, now, reason) for g in self.grants(now)]
        for request in list(self._requests.values()):
            row = REQUEST_TABLES[request.kind][request.state]
            if RequestEvent.CANCEL in row:
                self._move_request(request, RequestEvent.CANCEL, now, reason)
            elif request.state is RequestState.PENDING:
                self._move_request(request, RequestEvent.EXPIRE, now, reason)
        return ended

    # --- ids and codes -------------------------------------------------------------------

    def _hex(self, size: int) -> str:
        """Ids in hex: 128 random bits for a request, 64 for a grant. Never a leading
        '-', which a command line would take for an option."""
        return self._random(size).hex()

    def _code(self, taken: set[str]) -> str:
        """Four random digits that no pending request shows (at most 48 wait)."""
        while True:
            code = f"{int.from_bytes(self._random(4), 'big') % 10000:04d}"
            if code not in taken:
                return code
