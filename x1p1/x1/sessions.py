"""Portal logins, sessions and admin elevations, sans-I/O, as transition tables.

Everything that decides how a portal login request, an admin elevation or a portal
session changes lives in this file (the habit of h11's ``_state.py``, as
:mod:`x1p1.x1.pairing` does for API tokens). No I/O, no clock: every method takes
``now``; what changed comes out of :meth:`Sessions.take_changes` for the gateway to
persist, log and put in the comlog.

Login (X1 §5.1.3, §5.1.4): a browser that opens the portal without a session starts a
login request. It shows on the meter's display, recognisable by the browser's
User-Agent and a four-digit code that the waiting page shows too. No user name, no
password: the customer approves with the meter's button, or from another browser that is
logged in already. The browser holds a *login secret* (a cookie); only its SHA-256 is
kept. Once approved, the browser's next poll *claims* the request: a session is made and
its secret goes to the browser, once, as the session cookie::

    pending  --APPROVE--> approved     on the meter, or by another session (with admin access)
    pending  --DENY-----> denied       stays visible in the portal for 10 minutes (§5.1.4)
    pending  --EXPIRE---> expired      10 minutes unanswered: denied automatically (§5.1.4)
    pending  --CANCEL---> cancelled    the same browser asked again, or logged in otherwise
    approved --CLAIM----> claimed      the browser fetched its session
    approved --EXPIRE---> expired      the browser never came back within the 10 minutes
    approved --CANCEL---> cancelled    history was blocked before the browser came back

Admin elevation (§9.2.2): a session that wants the admin functions (approve or deny
requests, change profiles, revoke devices, block history) asks for it; the request shows
on the meter's display and only the meter's button confirms it. Access then holds for
60 minutes::

    pending --APPROVE--> approved      on the meter only: the session is elevated 60 min
    pending --DENY-----> denied
    pending --EXPIRE---> expired       10 minutes unanswered
    pending --CANCEL---> cancelled     the session ended

Sessions (§5.2: "van toepassing op zowel API-tokens als login-tokens")::

    active --USE--------> active       renewed to 90 days (persisted at most hourly)
    active --ELEVATE----> active       admin access until now + 60 minutes
    active --UNELEVATE--> active       the customer ended admin access early
    active --LOGOUT-----> logged-out
    active --REVOKE-----> revoked      another session, the meter, or a history block (§12.1)
    active --EXPIRE-----> expired      90 days without use

- A session secret is 256 random bits (base64url); only its SHA-256 is kept.
- The CSRF token of a session's forms is an HMAC of its secret (:func:`csrf_token`): the
  gateway stores nothing for it and can check it from the cookie of every request.
- At most :data:`MAX_PENDING` login and elevation requests pend at once (the display is
  small); past that :class:`~x1p1.exceptions.RateLimited` until the oldest expires.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from x1p1.exceptions import BadRequest, NotFound, RateLimited, RequestNotPending, Unauthorized
from x1p1.x1.api import REQUEST_LIFETIME, TOKEN_LIFETIME
from x1p1.x1.pairing import looks_like_token, new_token, token_digest

LOGIN_LIFETIME = REQUEST_LIFETIME
"""A login or elevation request is valid 10 minutes (§5.1.4)."""
SESSION_LIFETIME = TOKEN_LIFETIME
"""A session is valid 90 days, renewed on use (§5.2)."""
ELEVATION_LIFETIME = timedelta(minutes=60)
"""Admin access, once confirmed on the meter, holds 60 minutes (§9.2.2)."""
RENEW_PERSIST_EVERY = timedelta(hours=1)
"""A renewal on use is persisted at most this often (x1-api.md, as for tokens)."""
KEEP_DECIDED = timedelta(hours=24)
"""Decided requests and ended sessions are kept this long, then dropped by prune."""
MAX_PENDING = 16
"""At most this many login and elevation requests pending at once."""
USER_AGENT_MAX = 256
"""A User-Agent is kept to this many characters."""
METER = "meter"
"""``decided_by`` of a request decided with the meter's buttons."""

_CSRF_LABEL = b"x1p1 portal csrf v1"


class PortalRequestKind(enum.StrEnum):
    """What a portal request asks for."""

    LOGIN = "login"
    ELEVATION = "elevation"


class PortalRequestStatus(enum.StrEnum):
    """The life of a login or elevation request."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    CLAIMED = "claimed"


class PortalRequestEvent(enum.Enum):
    APPROVE = "approve"
    DENY = "deny"
    EXPIRE = "expire"
    CANCEL = "cancel"
    CLAIM = "claim"


class SessionStatus(enum.StrEnum):
    """The life of a portal session (§5.2)."""

    ACTIVE = "active"
    LOGGED_OUT = "logged-out"
    REVOKED = "revoked"
    EXPIRED = "expired"


class SessionEvent(enum.Enum):
    USE = "use"
    ELEVATE = "elevate"
    UNELEVATE = "unelevate"
    LOGOUT = "logout"
    REVOKE = "revoke"
    EXPIRE = "expire"


_R, _E = PortalRequestStatus, PortalRequestEvent

LOGIN_TRANSITIONS: dict[PortalRequestStatus, dict[PortalRequestEvent, PortalRequestStatus]] = {
    _R.PENDING: {
        _E.APPROVE: _R.APPROVED,
        _E.DENY: _R.DENIED,
        _E.EXPIRE: _R.EXPIRED,
        _E.CANCEL: _R.CANCELLED,
    },
    _R.APPROVED: {_E.CLAIM: _R.CLAIMED, _E.EXPIRE: _R.EXPIRED, _E.CANCEL: _R.CANCELLED},
    _R.DENIED: {},
    _R.EXPIRED: {},
    _R.CANCELLED: {},
    _R.CLAIMED: {},
}
"""The whole life of a login request: a move absent from a row cannot happen."""

ELEVATION_TRANSITIONS: dict[PortalRequestStatus, dict[PortalRequestEvent, PortalRequestStatus]] = {
    _R.PENDING: {
        _E.APPROVE: _R.APPROVED,
        _E.DENY: _R.DENIED,
        _E.EXPIRE: _R.EXPIRED,
        _E.CANCEL: _R.CANCELLED,
    },
    _R.APPROVED: {},
    _R.DENIED: {},
    _R.EXPIRED: {},
    _R.CANCELLED: {},
    _R.CLAIMED: {},
}
"""The whole life of an elevation request (never claimed: approval elevates at once)."""

REQUEST_TABLES = {
    PortalRequestKind.LOGIN: LOGIN_TRANSITIONS,
    PortalRequestKind.ELEVATION: ELEVATION_TRANSITIONS,
}

_S, _SE = SessionStatus, SessionEvent

SESSION_TRANSITIONS: dict[SessionStatus, dict[SessionEvent, SessionStatus]] = {
    _S.ACTIVE: {
        _SE.USE: _S.ACTIVE,
        _SE.ELEVATE: _S.ACTIVE,
        _SE.UNELEVATE: _S.ACTIVE,
        _SE.LOGOUT: _S.LOGGED_OUT,
        _SE.REVOKE: _S.REVOKED,
        _SE.EXPIRE: _S.EXPIRED,
    },
    _S.LOGGED_OUT: {},
    _S.REVOKED: {},
    _S.EXPIRED: {},
}
"""The whole life of a session."""


def next_request_status(
    kind: PortalRequestKind, status: PortalRequestStatus, event: PortalRequestEvent
) -> PortalRequestStatus:
    """The state after ``event``; :class:`RequestNotPending` if the table has no such move."""
    try:
        return REQUEST_TABLES[kind][status][event]
    except KeyError:
        raise RequestNotPending(
            f"the {kind.value} request is {status.value}, no longer pending"
        ) from None


def next_session_status(status: SessionStatus, event: SessionEvent) -> SessionStatus:
    """The state after ``event``; :class:`Unauthorized` if the session can no longer move."""
    try:
        return SESSION_TRANSITIONS[status][event]
    except KeyError:
        raise Unauthorized(f"the portal session is {status.value}; log in again") from None


# --- pure helpers -------------------------------------------------------------------------


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


def _code(request_id: str) -> str:
    number = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")
    return f"{number % 10000:04d}"


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortalRequest:
    """A login or elevation request, as the gateway keeps it."""

    request_id: str
    """Public (the meter's display, ``x1p1 meter approve ID``): 128 random bits."""
    kind: PortalRequestKind
    user_agent: str
    created_at: datetime
    status: PortalRequestStatus = PortalRequestStatus.PENDING
    secret_digest: str | None = None
    """Login: SHA-256 of the browser's login secret (its cookie)."""
    session_id: str | None = None
    """Elevation: the asking session. Login: the session made when claimed."""
    decided_at: datetime | None = None
    decided_by: str | None = None
    """``meter``, or ``session:<id>`` of the browser that decided it."""

    @property
    def expires_at(self) -> datetime:
        return self.created_at + LOGIN_LIFETIME

    @property
    def code(self) -> str:
        """Four digits the waiting page and the display both show, to tell browsers apart."""
        return _code(self.request_id)

    @property
    def browser(self) -> str:
        return describe_user_agent(self.user_agent)

    def visible(self, now: datetime) -> bool:
        """Whether the portal still lists it: pending, or decided less than 10 minutes
        ago and not by the browser itself (§5.1.4)."""
        if self.status is PortalRequestStatus.PENDING:
            return True
        decided = self.decided_at or self.created_at
        return self.status is PortalRequestStatus.DENIED and now - decided < LOGIN_LIFETIME


@dataclass(frozen=True, slots=True)
class Session:
    """A portal session as the gateway keeps it: never the secret, only its digest."""

    session_id: str
    """A public handle (16 hex digits) for the portal's device list and the comlog."""
    digest: str
    user_agent: str
    created_at: datetime
    expires_at: datetime
    status: SessionStatus = SessionStatus.ACTIVE
    last_used: datetime | None = None
    renewed_at: datetime | None = None
    elevated_until: datetime | None = None
    request_id: str | None = None
    ended_at: datetime | None = None

    @property
    def browser(self) -> str:
        return describe_user_agent(self.user_agent)

    def elevated(self, now: datetime) -> bool:
        """Whether the session holds admin access at ``now`` (§9.2.2)."""
        return (
            self.status is SessionStatus.ACTIVE
            and self.elevated_until is not None
            and now < self.elevated_until
        )


@dataclass(frozen=True, slots=True)
class SessionChange:
    """One thing that changed, for the gateway to persist and log.

    ``kind``: ``login-requested``, ``login-approved``, ``login-denied``,
    ``login-expired``, ``login-cancelled``, ``session-started`` (claimed),
    ``login-claimed``, ``elevation-requested``, ``elevation-approved``,
    ``elevation-denied``, ``elevation-expired``, ``elevation-cancelled``,
    ``session-elevated``, ``elevation-ended``,
    ``session-renewed``, ``logout``, ``session-revoked``, ``session-expired``,
    ``portal-request-dropped``, ``session-dropped``. ``record`` is after the change."""

    kind: str
    record: PortalRequest | Session
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LoginPoll:
    """What a waiting browser learns: its request, and once claimed its session and the
    session secret (handed out exactly once)."""

    request: PortalRequest
    session: Session | None = None
    secret: str | None = None


class Sessions:
    """Login and elevation requests and portal sessions, in memory, with the rules of
    this module. ``random_bytes`` makes ids and secrets (tests may pass a seeded one)."""

    def __init__(self, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._random = random_bytes
        self._requests: dict[str, PortalRequest] = {}
        self._by_login: dict[str, str] = {}
        """login secret digest -> request id."""
        self._sessions: dict[str, Session] = {}
        self._by_digest: dict[str, str] = {}
        self._changes: list[SessionChange] = []

    # --- restoring and draining --------------------------------------------------------

    def restore(self, requests: Iterable[PortalRequest], sessions: Iterable[Session]) -> None:
        """Put persisted records back (on start). Emits no changes."""
        for request in requests:
            self._requests[request.request_id] = request
            if request.secret_digest:
                self._by_login[request.secret_digest] = request.request_id
        for session in sessions:
            self._sessions[session.session_id] = session
            self._by_digest[session.digest] = session.session_id

    def take_changes(self) -> list[SessionChange]:
        changes, self._changes = self._changes, []
        return changes

    def _emit(self, kind: str, record: PortalRequest | Session, reason: str = "") -> None:
        self._changes.append(SessionChange(kind, record, reason))

    # --- transitions -------------------------------------------------------------------

    def _move_request(
        self,
        request: PortalRequest,
        event: PortalRequestEvent,
        now: datetime,
        reason: str = "",
        *,
        decided_by: str | None = None,
        session_id: str | None = None,
    ) -> PortalRequest:
        status = next_request_status(request.kind, request.status, event)
        first = request.status is PortalRequestStatus.PENDING
        moved = replace(
            request,
            status=status,
            decided_at=now if first else request.decided_at,
            decided_by=decided_by if decided_by is not None else request.decided_by,
            session_id=session_id if session_id is not None else request.session_id,
        )
        self._requests[moved.request_id] = moved
        self._emit(f"{request.kind.value}-{_REQUEST_WORD[status]}", moved, reason)
        return moved

    def _move_session(
        self,
        session: Session,
        event: SessionEvent,
        now: datetime,
        kind: str,
        reason: str = "",
        changed: Session | None = None,
    ) -> Session:
        """Move ``session`` by ``event``; ``changed`` carries other fields that change with
        it. ``kind`` "" changes memory only."""
        status = next_session_status(session.status, event)
        ended = now if status is not SessionStatus.ACTIVE else None
        moved = replace(changed or session, status=status, ended_at=ended)
        if status is not SessionStatus.ACTIVE:
            moved = replace(moved, elevated_until=None)
        self._sessions[moved.session_id] = moved
        if kind:
            self._emit(kind, moved, reason)
        if status is not SessionStatus.ACTIVE:
            for request in list(self._requests.values()):
                if (
                    request.kind is PortalRequestKind.ELEVATION
                    and request.session_id == moved.session_id
                    and request.status is PortalRequestStatus.PENDING
                ):
                    self._move_request(request, _E.CANCEL, now, "the session ended")
        return moved

    # --- time ----------------------------------------------------------------------------

    def expire_due(self, now: datetime) -> None:
        """Expire requests past their 10 minutes and sessions past their 90 days."""
        for request in list(self._requests.values()):
            if now < request.expires_at:
                continue
            if request.status is PortalRequestStatus.PENDING:
                self._move_request(
                    request, _E.EXPIRE, request.expires_at, "unanswered for 10 minutes"
                )
            elif (
                request.status is PortalRequestStatus.APPROVED
                and request.kind is PortalRequestKind.LOGIN
            ):
                self._move_request(
                    request,
                    _E.EXPIRE,
                    request.expires_at,
                    "the browser did not come back for its session",
                )
        for session in list(self._sessions.values()):
            if session.status is SessionStatus.ACTIVE and now >= session.expires_at:
                self._move_session(
                    session, _SE.EXPIRE, session.expires_at, "session-expired", "90 days unused"
                )

    def prune(self, now: datetime) -> None:
        """Drop requests and ended sessions older than :data:`KEEP_DECIDED`."""
        self.expire_due(now)
        for request in list(self._requests.values()):
            if (
                request.status is not PortalRequestStatus.PENDING
                and now - request.created_at > KEEP_DECIDED
            ):
                del self._requests[request.request_id]
                if request.secret_digest:
                    self._by_login.pop(request.secret_digest, None)
                self._emit("portal-request-dropped", request)
        for session in list(self._sessions.values()):
            ended = session.ended_at
            if session.status is not SessionStatus.ACTIVE and ended and now - ended > KEEP_DECIDED:
                del self._sessions[session.session_id]
                self._by_digest.pop(session.digest, None)
                self._emit("session-dropped", session)

    # --- requests ------------------------------------------------------------------------

    def pending(self, now: datetime) -> list[PortalRequest]:
        """Pending login and elevation requests, oldest first (the meter's display)."""
        self.expire_due(now)
        waiting = [r for r in self._requests.values() if r.status is PortalRequestStatus.PENDING]
        return sorted(waiting, key=lambda r: (r.created_at, r.request_id))

    def requests(self, now: datetime) -> list[PortalRequest]:
        """Requests the portal lists: pending ones and those denied in the last 10
        minutes (§5.1.4), oldest first."""
        self.expire_due(now)
        shown = [r for r in self._requests.values() if r.visible(now)]
        return sorted(shown, key=lambda r: (r.created_at, r.request_id))

    def request(self, request_id: str) -> PortalRequest:
        request = self._requests.get(request_id)
        if request is None:
            raise NotFound(f"no login or elevation request {request_id!r}")
        return request

    def _check_room(self, now: datetime) -> None:
        pending = self.pending(now)
        if len(pending) >= MAX_PENDING:
            raise RateLimited(
                f"{MAX_PENDING} requests are already waiting on the meter",
                retry_after=_seconds(pending[0].expires_at - now),
            )

    def start_login(
        self, user_agent: str | None, now: datetime, *, previous_secret: str | None = None
    ) -> tuple[PortalRequest, str]:
        """A new login request for a browser (§5.1.3); returns it and the login secret for
        the browser's cookie. A pending request of the same browser (``previous_secret``)
        is cancelled, so the display never shows one browser twice."""
        self.expire_due(now)
        if previous_secret:
            old = self._login_request(previous_secret)
            if old is not None and old.status is PortalRequestStatus.PENDING:
                self._move_request(old, _E.CANCEL, now, "replaced by a newer login request")
        self._check_room(now)
        secret = new_token(self._random)
        request = PortalRequest(
            request_id=self._id(16),
            kind=PortalRequestKind.LOGIN,
            user_agent=clean_user_agent(user_agent),
            created_at=now,
            secret_digest=token_digest(secret),
        )
        self._requests[request.request_id] = request
        self._by_login[token_digest(secret)] = request.request_id
        self._emit("login-requested", request)
        return request, secret

    def _login_request(self, secret: str | None) -> PortalRequest | None:
        if not secret or not looks_like_token(secret):
            return None
        request_id = self._by_login.get(token_digest(secret))
        return self._requests.get(request_id or "")

    def poll_login(self, secret: str | None, now: datetime) -> LoginPoll:
        """A waiting browser asks how its login request stands. Approved: it is claimed
        now, and the answer carries the new session and its secret (once).
        :class:`NotFound` when the browser holds no known request."""
        self.expire_due(now)
        request = self._login_request(secret)
        if request is None:
            raise NotFound("no login request for this browser; start one")
        if request.status is not PortalRequestStatus.APPROVED:
            return LoginPoll(request)
        session_secret = new_token(self._random)
        session = Session(
            session_id=self._hex(8),
            digest=token_digest(session_secret),
            user_agent=request.user_agent,
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
            last_used=now,
            renewed_at=now,
            request_id=request.request_id,
        )
        self._sessions[session.session_id] = session
        self._by_digest[session.digest] = session.session_id
        claimed = self._move_request(request, _E.CLAIM, now, session_id=session.session_id)
        self._emit("session-started", session)
        return LoginPoll(claimed, session, session_secret)

    def request_elevation(self, session_id: str, now: datetime) -> PortalRequest:
        """Ask the meter for admin access for a session (§9.2.2); a pending elevation of
        the same session is returned rather than a second one made."""
        self.expire_due(now)
        session = self.session(session_id)
        if session.status is not SessionStatus.ACTIVE:
            raise Unauthorized(f"the portal session is {session.status.value}; log in again")
        for request in self.pending(now):
            if request.kind is PortalRequestKind.ELEVATION and request.session_id == session_id:
                return request
        self._check_room(now)
        request = PortalRequest(
            request_id=self._id(16),
            kind=PortalRequestKind.ELEVATION,
            user_agent=session.user_agent,
            created_at=now,
            session_id=session_id,
        )
        self._requests[request.request_id] = request
        self._emit("elevation-requested", request)
        return request

    def _pick(self, request_id: str | None, now: datetime) -> PortalRequest:
        if request_id is None:
            pending = self.pending(now)
            if not pending:
                raise NotFound("no login or elevation request is pending")
            return pending[0]
        self.expire_due(now)
        return self.request(request_id)

    def approve(self, request_id: str | None, now: datetime, *, by: str = METER) -> PortalRequest:
        """Approve a request (the oldest pending one when ``request_id`` is None).

        ``by`` is :data:`METER` or ``session:<id>``. A login may be approved by another
        session (§5.1.3; the gateway checks that one holds admin access); an elevation
        only on the meter (§9.2.2). Approving an elevation elevates its session for
        :data:`ELEVATION_LIFETIME`."""
        request = self._pick(request_id, now)
        next_request_status(request.kind, request.status, _E.APPROVE)  # raises if decided
        if request.kind is PortalRequestKind.ELEVATION:
            if by != METER:
                raise BadRequest("admin access is confirmed with the meter's button only")
            session = self.session(request.session_id or "")
            next_session_status(session.status, _SE.ELEVATE)  # raises if it ended
            approved = self._move_request(request, _E.APPROVE, now, decided_by=by)
            self._move_session(
                session,
                _SE.ELEVATE,
                now,
                "session-elevated",
                "",
                replace(session, elevated_until=now + ELEVATION_LIFETIME),
            )
            return approved
        return self._move_request(request, _E.APPROVE, now, decided_by=by)

    def deny(self, request_id: str | None, now: datetime, *, by: str = METER) -> PortalRequest:
        """Deny a request (the oldest pending one when ``request_id`` is None)."""
        request = self._pick(request_id, now)
        if request.kind is PortalRequestKind.ELEVATION and by != METER:
            raise BadRequest("admin access is decided with the meter's buttons only")
        return self._move_request(request, _E.DENY, now, "denied", decided_by=by)

    # --- sessions ------------------------------------------------------------------------

    def authenticate(self, secret: str | None, now: datetime) -> Session:
        """The active session of a cookie's ``secret``, renewed to 90 days (§5.2);
        :class:`Unauthorized` when there is none, or it is unknown or ended."""
        if not secret or not looks_like_token(secret):
            raise Unauthorized("not logged in to the portal")
        session_id = self._by_digest.get(token_digest(secret))
        session = self._sessions.get(session_id or "")
        if session is None:
            raise Unauthorized("unknown portal session; log in again")
        if session.status is SessionStatus.ACTIVE and now >= session.expires_at:
            session = self._move_session(
                session, _SE.EXPIRE, session.expires_at, "session-expired", "90 days unused"
            )
        if session.status is not SessionStatus.ACTIVE:
            raise Unauthorized(f"the portal session is {session.status.value}; log in again")
        return self.touch(session.session_id, now)

    def touch(self, session_id: str, now: datetime) -> Session:
        """Note a use: renew to 90 days from ``now`` (§5.2); emitted for persisting when
        the last persisted renewal is an hour old."""
        session = self.session(session_id)
        due = session.renewed_at is None or now - session.renewed_at >= RENEW_PERSIST_EVERY
        renewed = replace(
            session,
            expires_at=max(session.expires_at, now + SESSION_LIFETIME),
            last_used=now,
            renewed_at=now if due else session.renewed_at,
        )
        return self._move_session(
            session, _SE.USE, now, "session-renewed" if due else "", "", renewed
        )

    def session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no portal session {session_id!r}")
        return session

    def sessions(self, now: datetime) -> list[Session]:
        """Active sessions, oldest first (the portal's list of logged-in browsers)."""
        self.expire_due(now)
        active = [s for s in self._sessions.values() if s.status is SessionStatus.ACTIVE]
        return sorted(active, key=lambda s: (s.created_at, s.session_id))

    def _active(self, session_id: str) -> Session:
        session = self.session(session_id)
        if session.status is not SessionStatus.ACTIVE:
            raise NotFound(f"portal session {session_id!r} is already {session.status.value}")
        return session

    def unelevate(self, session_id: str, now: datetime) -> Session:
        """End a session's admin access before its 60 minutes are over."""
        session = self._active(session_id)
        changed = replace(session, elevated_until=None)
        return self._move_session(session, _SE.UNELEVATE, now, "elevation-ended", "", changed)

    def logout(self, session_id: str, now: datetime) -> Session:
        return self._move_session(self._active(session_id), _SE.LOGOUT, now, "logout")

    def revoke(self, session_id: str, now: datetime, reason: str = "revoked") -> Session:
        """End another browser's session (the portal, the meter)."""
        session = self._active(session_id)
        return self._move_session(session, _SE.REVOKE, now, "session-revoked", reason)

    def revoke_all(self, now: datetime, reason: str) -> list[Session]:
        """End every session and cancel every request still open, approved logins not yet
        claimed included (a history block, §12.1: every authorisation given ends)."""
        ended = [self.revoke(s.session_id, now, reason) for s in self.sessions(now)]
        for request in list(self._requests.values()):
            if _E.CANCEL in REQUEST_TABLES[request.kind][request.status]:
                self._move_request(request, _E.CANCEL, now, reason)
        return ended

    # --- ids -----------------------------------------------------------------------------

    def _id(self, size: int) -> str:
        return base64.urlsafe_b64encode(self._random(size)).rstrip(b"=").decode("ascii")

    def _hex(self, size: int) -> str:
        return self._random(size).hex()


_REQUEST_WORD = {
    PortalRequestStatus.APPROVED: "approved",
    PortalRequestStatus.DENIED: "denied",
    PortalRequestStatus.EXPIRED: "expired",
    PortalRequestStatus.CANCELLED: "cancelled",
    PortalRequestStatus.CLAIMED: "claimed",
    PortalRequestStatus.PENDING: "requested",
}


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))
