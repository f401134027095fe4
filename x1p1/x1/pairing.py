"""Pairing, sans-I/O: the life of token requests and API tokens, as transition tables.

Everything that decides how a token request or a token changes lives in this file (the
habit of h11's ``_state.py``): the two transition tables, the rules around them, and
:class:`Pairing`, which applies them to the gateway's requests and tokens held in memory.
It does no I/O and reads no clock: every method takes ``now``. What changed comes out
of :meth:`Pairing.take_changes` (like websockets' ``events_received``) for the gateway
to persist and log; :meth:`Pairing.restore` puts persisted records back after a restart.

Token requests (X1 §5.1.2, §5.1.4–§5.1.7; x1-api.md, "Pairing")::

    pending --APPROVE--> approved     the customer approved on the meter or portal
    pending --DENY-----> denied       the customer denied
    pending --EXPIRE---> expired      10 minutes passed unanswered (§5.1.4: "automatisch
                                      geweigerd"), or the same device (uuid) asked again

- A request is valid for 10 minutes (§5.1.4); its id answers ``GET`` until 10 minutes
  after it was made, then it is unknown (404): the id is the only key to the token.
- Pending requests are shown, approved and denied oldest first (§5.1.5: "in volgorde van
  indienen"); approve or deny without an id acts on the oldest, like the meter's button.
- At most :data:`MAX_PENDING` requests pending at once; past that, 429 until the oldest
  expires. One pending request per uuid: a new request of a device replaces its older
  one (which expires), so the display never shows the same device twice.
- Three denials for one uuid within an hour (§5.1.7): its requests get 429 for an hour
  after the third. Only the customer's own denials count, not expiries: a customer who
  is slow to walk to the meter should not lock their device out.

API tokens (§5.2)::

    active --USE-------------> active     renewed to 90 days (persisted at most hourly)
    active --CHANGE_PROFILES-> active     the portal changes the grant (§5.1.6)
    active --REISSUE---------> active     a new secret for a request whose token was never
                                          fetched before a restart (see below)
    active --REVOKE----------> revoked    DELETE /api/token, the meter, the portal, a
                                          history block (§12.1), or a newer token of the
                                          same uuid (one device, one token)
    active --EXPIRE----------> expired    90 days without use

- A token is 256 random bits, base64url without padding (43 characters); only its SHA-256
  is kept (:func:`token_digest`). The clear token exists in memory only, from approval
  until its request stops answering. If the gateway restarts in between, the next poll
  of the request mints a new secret for the same token (REISSUE): the request id is the
  key, whoever holds it gets the token, and the lost secret is never valid again.
- Renewal on use moves ``expires_at`` in memory on every use; the record is emitted for
  persisting only when the last persisted renewal is an hour old
  (:data:`RENEW_PERSIST_EVERY`), so a busy device costs one write an hour.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import math
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from x1p1.exceptions import BadRequest, NotFound, RateLimited, RequestNotPending, Unauthorized
from x1p1.x1.api import (
    REQUEST_LIFETIME,
    TOKEN_LIFETIME,
    RequestStatus,
    TokenInfo,
    TokenRequestBody,
    TokenRequestState,
)
from x1p1.x1.profiles import Profile

MAX_PENDING = 16
"""At most this many requests pending at once (x1-api.md)."""
DENIALS_TO_THROTTLE = 3
DENIAL_WINDOW = timedelta(hours=1)
THROTTLE_FOR = timedelta(hours=1)
"""§5.1.7: three denials of one uuid within an hour refuse its requests for an hour."""
RENEW_PERSIST_EVERY = timedelta(hours=1)
"""A renewal on use is persisted at most this often (x1-api.md)."""
KEEP_DECIDED = timedelta(hours=24)
"""Decided requests are kept this long (the throttle needs the last two hours), then
dropped by :meth:`Pairing.prune`."""

_TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{43}\Z")


class RequestEvent(enum.Enum):
    """What can happen to a token request."""

    APPROVE = "approve"
    DENY = "deny"
    EXPIRE = "expire"


class TokenStatus(enum.StrEnum):
    """The life of an API token (§5.2)."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class TokenEvent(enum.Enum):
    """What can happen to a token."""

    USE = "use"
    CHANGE_PROFILES = "change-profiles"
    REISSUE = "reissue"
    REVOKE = "revoke"
    EXPIRE = "expire"


_PENDING, _APPROVED = RequestStatus.PENDING, RequestStatus.APPROVED
_DENIED, _EXPIRED = RequestStatus.DENIED, RequestStatus.EXPIRED

REQUEST_TRANSITIONS: dict[RequestStatus, dict[RequestEvent, RequestStatus]] = {
    _PENDING: {
        RequestEvent.APPROVE: _APPROVED,
        RequestEvent.DENY: _DENIED,
        RequestEvent.EXPIRE: _EXPIRED,
    },
    _APPROVED: {},
    _DENIED: {},
    _EXPIRED: {},
}
"""The whole life of a token request: a state absent from a row cannot happen."""

TOKEN_TRANSITIONS: dict[TokenStatus, dict[TokenEvent, TokenStatus]] = {
    TokenStatus.ACTIVE: {
        TokenEvent.USE: TokenStatus.ACTIVE,
        TokenEvent.CHANGE_PROFILES: TokenStatus.ACTIVE,
        TokenEvent.REISSUE: TokenStatus.ACTIVE,
        TokenEvent.REVOKE: TokenStatus.REVOKED,
        TokenEvent.EXPIRE: TokenStatus.EXPIRED,
    },
    TokenStatus.REVOKED: {},
    TokenStatus.EXPIRED: {},
}
"""The whole life of a token."""


def next_request_status(status: RequestStatus, event: RequestEvent) -> RequestStatus:
    """The state after ``event``; :class:`RequestNotPending` if the table has no such move."""
    try:
        return REQUEST_TRANSITIONS[status][event]
    except KeyError:
        raise RequestNotPending(f"the request is {status.value}, no longer pending") from None


def next_token_status(status: TokenStatus, event: TokenEvent) -> TokenStatus:
    """The state after ``event``; :class:`Unauthorized` if the token can no longer move."""
    try:
        return TOKEN_TRANSITIONS[status][event]
    except KeyError:
        raise Unauthorized(f"the token is {status.value}") from None


def new_token(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh API token: 256 random bits in base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(random_bytes(32)).rstrip(b"=").decode("ascii")


def token_digest(token: str) -> str:
    """What the gateway keeps of a token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has the form of an API token (43 base64url characters)."""
    return bool(_TOKEN_FORMAT.match(text))


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A token request as the gateway keeps it (§5.1.2)."""

    request_id: str
    name: str
    uuid: str
    asked: frozenset[Profile]
    created_at: datetime
    status: RequestStatus = RequestStatus.PENDING
    decided_at: datetime | None = None
    granted: frozenset[Profile] | None = None
    token_id: str | None = None

    @property
    def expires_at(self) -> datetime:
        """End of its validity (§5.1.4) and of the time its id answers."""
        return self.created_at + REQUEST_LIFETIME

    def answers(self, now: datetime) -> bool:
        """Whether ``GET /api/tokens/requests/{id}`` still knows it."""
        return now <= self.expires_at


@dataclass(frozen=True, slots=True)
class Token:
    """An API token as the gateway keeps it: never the secret, only its digest."""

    token_id: str
    """A public handle (16 hex digits) for the meter, the portal and the control socket."""
    digest: str
    name: str
    uuid: str
    profiles: frozenset[Profile]
    created_at: datetime
    expires_at: datetime
    status: TokenStatus = TokenStatus.ACTIVE
    last_used: datetime | None = None
    renewed_at: datetime | None = None
    """When a renewal was last handed out for persisting (None: never since creation)."""
    request_id: str | None = None
    ended_at: datetime | None = None
    """When it was revoked or found expired."""

    def info(self) -> TokenInfo:
        """``GET /api/token``."""
        return TokenInfo(self.name, self.uuid, self.profiles, self.expires_at)


@dataclass(frozen=True, slots=True)
class Change:
    """One thing that changed, for the gateway to persist and log.

    ``kind`` is one of ``request-created``, ``request-approved``, ``request-denied``,
    ``request-expired``, ``token-issued``, ``token-reissued``, ``token-renewed``,
    ``token-profiles-changed``, ``token-revoked``, ``token-expired``, ``request-dropped``
    (pruned), ``token-dropped`` (pruned). ``record`` is the record after the change.
    """

    kind: str
    record: TokenRequest | Token
    reason: str = ""


class Pairing:
    """Token requests and tokens, in memory, with the rules of this module.

    ``random_bytes`` makes ids and secrets (tests may pass a seeded source).
    """

    def __init__(self, *, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self._random = random_bytes
        self._requests: dict[str, TokenRequest] = {}
        self._tokens: dict[str, Token] = {}
        self._by_digest: dict[str, str] = {}
        self._secrets: dict[str, str] = {}
        """request_id -> the clear token, while the request answers (memory only)."""
        self._changes: list[Change] = []

    # --- restoring and draining --------------------------------------------------------

    def restore(self, requests: Iterable[TokenRequest], tokens: Iterable[Token]) -> None:
        """Put persisted records back (on start). Emits no changes."""
        for request in requests:
            self._requests[request.request_id] = request
        for token in tokens:
            self._tokens[token.token_id] = token
            self._by_digest[token.digest] = token.token_id

    def take_changes(self) -> list[Change]:
        """What changed since the last call, oldest first."""
        changes, self._changes = self._changes, []
        return changes

    def _emit(self, kind: str, record: TokenRequest | Token, reason: str = "") -> None:
        self._changes.append(Change(kind, record, reason))

    # --- transitions -------------------------------------------------------------------

    def _move_request(
        self,
        request: TokenRequest,
        event: RequestEvent,
        now: datetime,
        reason: str = "",
        *,
        granted: frozenset[Profile] | None = None,
        token_id: str | None = None,
    ) -> TokenRequest:
        status = next_request_status(request.status, event)
        moved = replace(
            request,
            status=status,
            decided_at=now,
            granted=granted if granted is not None else request.granted,
            token_id=token_id if token_id is not None else request.token_id,
        )
        self._requests[moved.request_id] = moved
        self._emit(f"request-{status.value}", moved, reason)
        return moved

    def _move_token(
        self,
        token: Token,
        event: TokenEvent,
        now: datetime,
        kind: str,
        reason: str = "",
        changed: Token | None = None,
    ) -> Token:
        """Move ``token`` by ``event`` (the table decides the state); ``changed`` carries
        other fields that change with it. ``kind`` "" changes memory only."""
        status = next_token_status(token.status, event)
        ended = now if status is not TokenStatus.ACTIVE else None
        moved = replace(changed or token, status=status, ended_at=ended)
        self._tokens[moved.token_id] = moved
        if moved.digest != token.digest:
            self._by_digest.pop(token.digest, None)
            self._by_digest[moved.digest] = moved.token_id
        if kind:
            self._emit(kind, moved, reason)
        return moved

    # --- time ----------------------------------------------------------------------------

    def expire_due(self, now: datetime) -> None:
        """Expire requests past their 10 minutes and tokens past their 90 days; forget
        clear tokens whose request no longer answers."""
        for request in list(self._requests.values()):
            if request.status is _PENDING and now >= request.expires_at:
                self._move_request(
                    request, RequestEvent.EXPIRE, request.expires_at, "unanswered for 10 minutes"
                )
            if not request.answers(now):
                self._secrets.pop(request.request_id, None)
        for token in list(self._tokens.values()):
            if token.status is TokenStatus.ACTIVE and now >= token.expires_at:
                self._move_token(
                    token, TokenEvent.EXPIRE, token.expires_at, "token-expired", "90 days unused"
                )

    def prune(self, now: datetime) -> None:
        """Drop decided requests older than :data:`KEEP_DECIDED` and ended tokens older
        than that (their records serve nobody any more)."""
        self.expire_due(now)
        for request in list(self._requests.values()):
            if request.status is not _PENDING and now - request.created_at > KEEP_DECIDED:
                del self._requests[request.request_id]
                self._emit("request-dropped", request)
        for token in list(self._tokens.values()):
            ended = token.ended_at
            if token.status is not TokenStatus.ACTIVE and ended and now - ended > KEEP_DECIDED:
                del self._tokens[token.token_id]
                self._by_digest.pop(token.digest, None)
                self._emit("token-dropped", token)

    # --- token requests ----------------------------------------------------------------

    def pending(self, now: datetime) -> list[TokenRequest]:
        """Pending requests, oldest first (the meter display, §5.1.5)."""
        self.expire_due(now)
        waiting = [r for r in self._requests.values() if r.status is _PENDING]
        return sorted(waiting, key=lambda r: (r.created_at, r.request_id))

    def requests(self) -> list[TokenRequest]:
        """Every request kept, oldest first (the portal shows denied ones 10 minutes)."""
        return sorted(self._requests.values(), key=lambda r: (r.created_at, r.request_id))

    def throttled_until(self, uuid: str, now: datetime) -> datetime | None:
        """The end of a §5.1.7 throttle on ``uuid`` that holds at ``now``, or None."""
        denials = sorted(
            r.decided_at
            for r in self._requests.values()
            if r.uuid == uuid and r.status is _DENIED and r.decided_at is not None
        )
        until: datetime | None = None
        n = DENIALS_TO_THROTTLE
        for first, last in zip(denials, denials[n - 1 :], strict=False):
            if last - first <= DENIAL_WINDOW:
                end = last + THROTTLE_FOR
                until = end if until is None or end > until else until
        return until if until is not None and now < until else None

    def request(self, body: TokenRequestBody, now: datetime) -> TokenRequest:
        """``POST /api/tokens/requests``: a new pending request, or :class:`RateLimited`."""
        self.expire_due(now)
        until = self.throttled_until(body.uuid, now)
        if until is not None:
            raise RateLimited(
                "this device was denied three times within an hour; it may ask again later",
                retry_after=_seconds(until - now),
            )
        pending = self.pending(now)
        older = [r for r in pending if r.uuid == body.uuid]
        if len(pending) - len(older) >= MAX_PENDING:
            raise RateLimited(
                f"{MAX_PENDING} requests are already waiting for the customer",
                retry_after=_seconds(pending[0].expires_at - now),
            )
        for request in older:
            self._move_request(request, RequestEvent.EXPIRE, now, "replaced by a newer request")
        request = TokenRequest(
            request_id=self._hex(16),
            name=body.name,
            uuid=body.uuid,
            asked=body.profiles,
            created_at=now,
        )
        self._requests[request.request_id] = request
        self._emit("request-created", request)
        return request

    def get_request(self, request_id: str, now: datetime) -> TokenRequest:
        """A request whose id still answers; :class:`NotFound` otherwise."""
        self.expire_due(now)
        request = self._requests.get(request_id)
        if request is None or not request.answers(now):
            raise NotFound("no such token request (a request answers for 10 minutes)")
        return request

    def state(self, request_id: str, now: datetime) -> TokenRequestState:
        """``GET /api/tokens/requests/{id}``: the request's state, with the token when
        approved (minting a new secret if a restart lost the first one)."""
        request = self.get_request(request_id, now)
        if request.status is not _APPROVED:
            return TokenRequestState(request.request_id, request.status, request.expires_at)
        secret = self._secrets.get(request_id)
        token = self._tokens.get(request.token_id or "")
        if token is None or token.status is not TokenStatus.ACTIVE:
            raise NotFound("the token of this request is no longer valid")
        if secret is None:
            secret = new_token(self._random)
            self._secrets[request_id] = secret
            self._move_token(
                token,
                TokenEvent.REISSUE,
                now,
                "token-reissued",
                "the first secret was lost in a restart",
                replace(token, digest=token_digest(secret)),
            )
        return TokenRequestState(
            request.request_id, request.status, request.expires_at, secret, token.profiles
        )

    def _pick(self, request_id: str | None, now: datetime) -> TokenRequest:
        if request_id is None:
            pending = self.pending(now)
            if not pending:
                raise NotFound("no token request is pending")
            return pending[0]
        self.expire_due(now)
        request = self._requests.get(request_id)
        if request is None:
            raise NotFound(f"no token request {request_id!r}")
        return request

    def approve(
        self,
        request_id: str | None,
        now: datetime,
        profiles: frozenset[Profile] | None = None,
    ) -> tuple[TokenRequest, Token]:
        """Approve a request (the oldest pending one when ``request_id`` is None), granting
        ``profiles`` (default: those asked, §5.1.6). Issues its token; a token the same
        device held before is revoked."""
        request = self._pick(request_id, now)
        granted = frozenset(profiles) if profiles is not None else request.asked
        if not granted:
            raise BadRequest("profiles: grant at least one profile")
        next_request_status(request.status, RequestEvent.APPROVE)  # raises if not pending
        for old in list(self._tokens.values()):
            if old.uuid == request.uuid and old.status is TokenStatus.ACTIVE:
                self._move_token(
                    old, TokenEvent.REVOKE, now, "token-revoked", "replaced by a newer token"
                )
        secret = new_token(self._random)
        token = Token(
            token_id=self._hex(8),
            digest=token_digest(secret),
            name=request.name,
            uuid=request.uuid,
            profiles=granted,
            created_at=now,
            expires_at=now + TOKEN_LIFETIME,
            renewed_at=now,
            request_id=request.request_id,
        )
        self._tokens[token.token_id] = token
        self._by_digest[token.digest] = token.token_id
        self._secrets[request.request_id] = secret
        approved = self._move_request(
            request, RequestEvent.APPROVE, now, granted=granted, token_id=token.token_id
        )
        self._emit("token-issued", token)
        return approved, token

    def deny(self, request_id: str | None, now: datetime) -> TokenRequest:
        """Deny a request (the oldest pending one when ``request_id`` is None)."""
        request = self._pick(request_id, now)
        return self._move_request(request, RequestEvent.DENY, now, "denied by the customer")

    # --- tokens --------------------------------------------------------------------------

    def authenticate(self, secret: str | None, now: datetime) -> Token:
        """The active token for ``secret``, renewed to 90 days (§5.2); :class:`Unauthorized`
        when there is none, or it is unknown, revoked or expired."""
        if not secret:
            raise Unauthorized("an API token is needed: Authorization: Bearer <token>")
        if not looks_like_token(secret):
            raise Unauthorized("that is not an API token")
        token_id = self._by_digest.get(token_digest(secret))
        token = self._tokens.get(token_id or "")
        if token is None:
            raise Unauthorized("unknown token")
        if token.status is TokenStatus.ACTIVE and now >= token.expires_at:
            token = self._move_token(
                token, TokenEvent.EXPIRE, token.expires_at, "token-expired", "90 days unused"
            )
        if token.status is not TokenStatus.ACTIVE:
            raise Unauthorized(f"the token was {token.status.value}")
        return self.touch(token.token_id, now)

    def touch(self, token_id: str, now: datetime) -> Token:
        """Note a use of an active token: renew it to 90 days from ``now`` (§5.2); emit it
        for persisting when the last persisted renewal is an hour old."""
        token = self._tokens[token_id]
        due = token.renewed_at is None or now - token.renewed_at >= RENEW_PERSIST_EVERY
        renewed = replace(
            token,
            expires_at=max(token.expires_at, now + TOKEN_LIFETIME),
            last_used=now,
            renewed_at=now if due else token.renewed_at,
        )
        kind = "token-renewed" if due else ""
        return self._move_token(token, TokenEvent.USE, now, kind, "", renewed)

    def token(self, token_id: str) -> Token:
        """A token by its public id; :class:`NotFound` if unknown."""
        token = self._tokens.get(token_id)
        if token is None:
            raise NotFound(f"no token {token_id!r}")
        return token

    def tokens(self, now: datetime) -> list[Token]:
        """Active tokens, oldest first (the portal's device list)."""
        self.expire_due(now)
        active = [t for t in self._tokens.values() if t.status is TokenStatus.ACTIVE]
        return sorted(active, key=lambda t: (t.created_at, t.token_id))

    def revoke(self, token_id: str, now: datetime, reason: str = "revoked") -> Token:
        """Revoke an active token (§5.2: "op elk moment … intrekken")."""
        token = self.token(token_id)
        if token.status is not TokenStatus.ACTIVE:
            raise NotFound(f"token {token_id!r} is already {token.status.value}")
        return self._move_token(token, TokenEvent.REVOKE, now, "token-revoked", reason)

    def revoke_all(self, now: datetime, reason: str) -> list[Token]:
        """Revoke every active token (a history block, §12.1)."""
        return [self.revoke(t.token_id, now, reason) for t in self.tokens(now)]

    def set_profiles(self, token_id: str, profiles: frozenset[Profile], now: datetime) -> Token:
        """Grant other profiles to an active token (§5.1.6: "op enig later moment")."""
        token = self.token(token_id)
        if token.status is not TokenStatus.ACTIVE:
            raise NotFound(f"token {token_id!r} is {token.status.value}")
        changed = replace(token, profiles=frozenset(profiles))
        return self._move_token(
            token, TokenEvent.CHANGE_PROFILES, now, "token-profiles-changed", "", changed
        )

    # --- ids -----------------------------------------------------------------------------

    def _hex(self, size: int) -> str:
        """Ids in hex: 128 random bits for a request, 64 for a token's public id. Never
        a leading '-', which a command line would take for an option."""
        return self._random(size).hex()


def _seconds(delta: timedelta) -> int:
    """Whole seconds, rounded up, at least 1 (a ``Retry-After`` value)."""
    return max(1, math.ceil(delta.total_seconds()))
