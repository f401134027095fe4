"""The running gateway's state: pairing, persistence, the operator's switch, and events.

:class:`GatewayState` is what the HTTP handlers, the WebSocket streams and the local
control channel all act on. It puts the sans-I/O :class:`~x1p1.x1.pairing.Pairing` next
to the :class:`~x1p1.gateway.store.Store` and the :class:`~x1p1.gateway.streams.StreamHub`:

- every operation calls the pairing core with ``now`` from the injected clock, then
  :meth:`GatewayState.commit` persists what changed (before the caller answers, so an
  answer never promises what a crash could lose) and turns it into side effects: a token
  that was revoked or expired has its open sockets closed with 4401 (x1-api.md), one
  whose profiles changed has those it may no longer read closed with 4403, every
  change becomes a :class:`GatewayEvent` for the listeners (the comlog, §2.2) and the log;
- the grid operator's switch (§12.3) is kept in the store's settings; switching X1 off
  closes every stream with 4503.

Everything here runs on the event loop's thread and never blocks for long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from x1p1.exceptions import ForbiddenProfile, NotFound, Unauthorized, X1Disabled
from x1p1.gateway.store import Store
from x1p1.gateway.streams import MeterSource, StreamHub
from x1p1.x1.api import TokenRequestBody, TokenRequestState, format_time
from x1p1.x1.pairing import Change, Pairing, Token, TokenRequest, TokenStatus
from x1p1.x1.profiles import Profile, sorted_profiles

log = logging.getLogger("x1p1.gateway")

X1_ENABLED = "x1_enabled"
"""Settings key: False while the grid operator has X1 switched off (§12.3)."""

CLOSE_REVOKED = Unauthorized.close_code
CLOSE_FORBIDDEN = ForbiddenProfile.close_code
CLOSE_DISABLED = X1Disabled.close_code
"""The close codes' one home is :mod:`x1p1.exceptions`, which the converter reads too."""


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """Something the comlog records (§2.2): ``kind`` as :class:`~x1p1.x1.pairing.Change`
    names it, or ``x1-disabled``, ``x1-enabled``, ``operator-read``; never a secret."""

    kind: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)


EventListener = Callable[[GatewayEvent], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _details(change: Change) -> dict[str, Any]:
    record = change.record
    out: dict[str, Any] = {"name": record.name, "uuid": record.uuid}
    if isinstance(record, TokenRequest):
        out["request_id"] = record.request_id
        out["profiles"] = sorted_profiles(record.granted or record.asked)
    else:
        out["token_id"] = record.token_id
        out["profiles"] = sorted_profiles(record.profiles)
    if change.reason:
        out["reason"] = change.reason
    return out


class GatewayState:
    """Pairing, tokens and the operator's switch, persisted, with their side effects."""

    def __init__(
        self,
        store: Store,
        hub: StreamHub,
        *,
        now: Callable[[], datetime] = utc_now,
        auto_approve: bool = False,
        pairing: Pairing | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.clock = now
        self.auto_approve = auto_approve
        self.pairing = pairing or Pairing()
        self.pairing.restore(store.load_requests(), store.load_tokens())
        self.x1_enabled = bool(store.get_setting(X1_ENABLED, True))
        self.listeners: list[EventListener] = []
        """Called with every :class:`GatewayEvent` (the comlog subscribes here)."""
        self.use_listeners: list[Callable[[Token, str], None]] = []
        """Called on every authenticated API call or stream opened, with the token and
        the route's name (the comlog's hourly summary of use per device, §2.2)."""

    @property
    def meters(self) -> MeterSource:
        return self.hub.meters

    def note_use(self, token: Token, what: str) -> None:
        """An authenticated call of ``what`` (a route name); tells the use listeners."""
        for listener in list(self.use_listeners):
            try:
                listener(token, what)
            except Exception:
                log.exception("a use listener failed on %s", what)

    def now(self) -> datetime:
        return self.clock()

    # --- persistence and side effects ----------------------------------------------------

    def commit(self) -> None:
        """Persist what the pairing core changed, then close sockets and tell listeners."""
        changes = self.pairing.take_changes()
        if not changes:
            return
        self.store.apply(changes)
        for change in changes:
            if change.kind in ("token-revoked", "token-expired"):
                token = change.record
                assert isinstance(token, Token)
                why = "token revoked" if change.kind == "token-revoked" else "token expired"
                self.hub.close_token(token.token_id, CLOSE_REVOKED, f"unauthorized: {why}")
            if change.kind == "token-profiles-changed":
                token = change.record
                assert isinstance(token, Token)
                self.hub.recheck(
                    token.token_id,
                    token.profiles,
                    CLOSE_FORBIDDEN,
                    "forbidden-profile: the token's profiles changed",
                )
            if change.kind in ("token-renewed", "request-dropped", "token-dropped"):
                continue
            self._log(change)
            self.emit(change.kind, **_details(change))

    def emit(self, kind: str, **details: Any) -> None:
        """Tell every listener; a failing listener is logged, never fatal."""
        event = GatewayEvent(kind, self.now(), details)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed on %s", kind)

    def _log(self, change: Change) -> None:
        record = change.record
        what = ", ".join(_details(change)["profiles"])
        if change.kind == "request-created":
            log.info(
                "token request from %r asks for %s; approve on the meter: x1p1 meter approve",
                record.name,
                what,
            )
        else:
            extra = f" ({change.reason})" if change.reason else ""
            log.info("%s: %r, %s%s", change.kind, record.name, what, extra)

    # --- the operator's switch (§12.3) ---------------------------------------------------

    def check_enabled(self) -> None:
        if not self.x1_enabled:
            raise X1Disabled("the grid operator has switched the X1 interface off")

    def set_x1_enabled(self, enabled: bool) -> bool:
        """Switch X1 on or off (persisted); off closes every stream with 4503. Returns
        whether anything changed."""
        if enabled == self.x1_enabled:
            return False
        self.store.set_setting(X1_ENABLED, enabled)
        self.x1_enabled = enabled
        if not enabled:
            self.hub.close_all(CLOSE_DISABLED, "x1-disabled: switched off by the grid operator")
        log.warning("the grid operator switched X1 %s", "on" if enabled else "off")
        self.emit("x1-enabled" if enabled else "x1-disabled")
        return True

    # --- pairing ---------------------------------------------------------------------------

    def authenticate(self, secret: str | None) -> Token:
        try:
            return self.pairing.authenticate(secret, self.now())
        finally:
            self.commit()

    def create_request(self, body: TokenRequestBody) -> TokenRequestState:
        """A new token request; with ``auto_approve`` it is approved as soon as made (the
        answer still says pending, as x1-api.md has it; the first poll gets the token)."""
        try:
            request = self.pairing.request(body, self.now())
            answer = TokenRequestState(request.request_id, request.status, request.expires_at)
            if self.auto_approve:
                self.pairing.approve(request.request_id, self.now())
            return answer
        finally:
            self.commit()

    def request_state(self, request_id: str) -> TokenRequestState:
        try:
            return self.pairing.state(request_id, self.now())
        finally:
            self.commit()

    def pending(self) -> list[TokenRequest]:
        try:
            return self.pairing.pending(self.now())
        finally:
            self.commit()

    def tokens(self) -> list[Token]:
        try:
            return self.pairing.tokens(self.now())
        finally:
            self.commit()

    def approve(
        self, request_id: str | None, profiles: frozenset[Profile] | None = None
    ) -> tuple[TokenRequest, Token]:
        try:
            return self.pairing.approve(request_id, self.now(), profiles)
        finally:
            self.commit()

    def deny(self, request_id: str | None) -> TokenRequest:
        try:
            return self.pairing.deny(request_id, self.now())
        finally:
            self.commit()

    def revoke(self, token_id: str, reason: str) -> Token:
        try:
            return self.pairing.revoke(token_id, self.now(), reason)
        finally:
            self.commit()

    def revoke_all(self, reason: str) -> list[Token]:
        try:
            return self.pairing.revoke_all(self.now(), reason)
        finally:
            self.commit()

    def set_profiles(self, token_id: str, profiles: frozenset[Profile]) -> Token:
        try:
            return self.pairing.set_profiles(token_id, profiles, self.now())
        finally:
            self.commit()

    def maintain(self) -> None:
        """Run every few seconds: expire and prune; an open stream is use of its token, so
        streaming devices are renewed (§5.2) and never expire mid-stream."""
        now = self.now()
        try:
            for token_id in self.hub.token_ids():
                try:
                    token = self.pairing.token(token_id)
                except NotFound:
                    continue  # a portal session's stream: the portal renews those
                if token.status is TokenStatus.ACTIVE and now < token.expires_at:
                    self.pairing.touch(token_id, now)
            self.pairing.prune(now)
        finally:
            self.commit()


def request_json(request: TokenRequest, now: datetime) -> dict[str, Any]:
    """A request as the meter display and ``x1p1 meter list`` show it."""
    return {
        "request_id": request.request_id,
        "name": request.name,
        "uuid": request.uuid,
        "profiles": sorted_profiles(request.asked),
        "status": request.status.value,
        "created_at": format_time(request.created_at),
        "expires_at": format_time(request.expires_at),
        "expires_in": max(0, int((request.expires_at - now).total_seconds())),
    }


def token_json(token: Token) -> dict[str, Any]:
    """A token as the portal and the control channel show it: never its secret."""
    return {
        "token_id": token.token_id,
        "name": token.name,
        "uuid": token.uuid,
        "profiles": sorted_profiles(token.profiles),
        "status": token.status.value,
        "created_at": format_time(token.created_at),
        "expires_at": format_time(token.expires_at),
        "last_used": format_time(token.last_used) if token.last_used else None,
    }
