"""The portal's logins, sessions and admin elevations in the running gateway.

:class:`GatewaySessions` puts the sans-I/O :class:`~x1p1.x1.sessions.Sessions` next to
the gateway's :class:`~x1p1.gateway.store.Store` and :class:`~x1p1.gateway.state.GatewayState`,
as the state does for pairing:

- every operation calls the core with ``now`` from the gateway's clock, then
  :meth:`GatewaySessions.commit` persists what changed (tables ``portal_requests`` and
  ``portal_sessions``, component ``portal`` of the store's migrations) before the caller
  answers, closes the live streams of a session that ended (4401), and tells the
  gateway's event listeners (the comlog, X1 §2.2) as :class:`GatewayEvent` kinds
  ``login-requested``, ``login-approved``, ``login-denied``, ``login-expired``,
  ``session-started``, ``logout``, ``session-revoked``, ``session-expired``,
  ``elevation-requested``, ``elevation-approved``, ``elevation-denied``,
  ``elevation-expired``, ``elevation-ended``. A session's secret is never in an event.
- A history block (§12.1) ends every session: the state's ``history-blocked`` event
  reaches :meth:`GatewaySessions.on_event`.
- The meter's display and buttons (§5.1.5, §9.2.2) show token requests, login requests
  and elevation requests in one queue, oldest first: :meth:`GatewaySessions.install`
  wraps the control socket's ``list``, ``approve`` and ``deny`` so that ``x1p1 meter
  approve`` without an id acts on the oldest pending item whatever it is, and adds
  ``sessions`` and ``revoke-session``.
- A session reads the API with the customer's full view (every profile): :func:`api_token`
  makes the :class:`~x1p1.x1.pairing.Token` the API's handlers see for it, with the id
  ``session:<session_id>`` under which its WebSocket streams run.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from x1p1.exceptions import BadRequest, NotFound, StateError
from x1p1.gateway.control import Command, ControlServer
from x1p1.gateway.state import CLOSE_REVOKED, GatewayEvent, GatewayState, request_json
from x1p1.x1.api import format_time
from x1p1.x1.pairing import Token, TokenStatus
from x1p1.x1.profiles import Profile
from x1p1.x1.sessions import (
    METER,
    LoginPoll,
    PortalRequest,
    PortalRequestKind,
    PortalRequestStatus,
    Session,
    SessionChange,
    Sessions,
    SessionStatus,
)

log = logging.getLogger("x1p1.gateway")
T = TypeVar("T")

COMPONENT = "portal"
STREAM_PREFIX = "session:"
"""Token ids of portal sessions in the stream hub and the comlog: ``session:<id>``."""

PORTAL_MIGRATIONS: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE portal_requests (
        request_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL,
        secret_digest TEXT,
        session_id TEXT,
        decided_at TEXT,
        decided_by TEXT
    );
    CREATE TABLE portal_sessions (
        session_id TEXT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        user_agent TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        status TEXT NOT NULL,
        last_used TEXT,
        renewed_at TEXT,
        elevated_until TEXT,
        request_id TEXT,
        ended_at TEXT
    );
    """,
)
"""The portal's tables, one SQL script per schema version."""

_QUIET = frozenset(
    {
        "session-renewed",
        "portal-request-dropped",
        "session-dropped",
        "login-claimed",
        "login-cancelled",
        "elevation-cancelled",
        "session-elevated",
    }
)
"""Changes persisted but not told as events (the comlog has their pairs already)."""


def stream_id(session_id: str) -> str:
    return STREAM_PREFIX + session_id


def browser_handle(record: Session | PortalRequest) -> str:
    """One handle per browser for the comlog (its device column): the id of the login
    request that let it in, the same before and after the session existed (an elevation
    request names its session; :meth:`GatewaySessions.commit` resolves that one)."""
    if isinstance(record, Session):
        return record.request_id or record.session_id
    return record.request_id


def api_token(session: Session) -> Token:
    """The token the API's handlers see for a portal session: the customer's full view
    (every profile), expiring with the session."""
    return Token(
        token_id=stream_id(session.session_id),
        digest="",
        name=f"portal: {session.browser}",
        uuid=browser_handle(session),
        profiles=frozenset(Profile),
        created_at=session.created_at,
        expires_at=session.expires_at,
        status=TokenStatus.ACTIVE,
        last_used=session.last_used,
    )


def portal_request_json(request: PortalRequest, now: datetime) -> dict[str, Any]:
    """A login or elevation request as the meter display and ``x1p1 meter list`` show
    it: the fields of a token request (``name`` is the browser) plus ``kind``, ``code``
    and ``user_agent``."""
    return {
        "request_id": request.request_id,
        "kind": request.kind.value,
        "name": request.browser,
        "code": request.code,
        "user_agent": request.user_agent,
        "uuid": None,
        "profiles": [],
        "status": request.status.value,
        "created_at": format_time(request.created_at),
        "expires_at": format_time(request.expires_at),
        "expires_in": max(0, int((request.expires_at - now).total_seconds())),
        "decided_by": request.decided_by,
    }


def session_json(session: Session, now: datetime) -> dict[str, Any]:
    """A session as the portal and the control socket show it: never its secret."""
    return {
        "session_id": session.session_id,
        "browser": session.browser,
        "user_agent": session.user_agent,
        "status": session.status.value,
        "created_at": format_time(session.created_at),
        "expires_at": format_time(session.expires_at),
        "last_used": format_time(session.last_used) if session.last_used else None,
        "elevated_until": (
            format_time(session.elevated_until)
            if session.elevated(now) and session.elevated_until
            else None
        ),
    }


def _details(change: SessionChange, handle: str) -> dict[str, Any]:
    record = change.record
    out: dict[str, Any] = {
        "name": f"portal: {record.browser}",
        "uuid": handle,
        "browser": record.browser,
        "user_agent": record.user_agent,
    }
    if isinstance(record, PortalRequest):
        out["request_id"] = record.request_id
        out["code"] = record.code
        if record.session_id:
            out["session_id"] = record.session_id
        if record.decided_by:
            out["by"] = record.decided_by
    else:
        out["session_id"] = record.session_id
        if record.elevated_until:
            out["elevated_until"] = format_time(record.elevated_until)
    if change.reason:
        out["reason"] = change.reason
    return out


def _t(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _pt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _rt(text: str | None) -> datetime:
    if text is None:
        raise StateError("a required time is missing in the portal's tables")
    return datetime.fromisoformat(text)


class GatewaySessions:
    """Portal logins, sessions and elevations, persisted, with their side effects."""

    def __init__(self, state: GatewayState, core: Sessions | None = None) -> None:
        self.state = state
        self.store = state.store
        self.core = core or Sessions()
        try:
            self.store.migrate(COMPONENT, PORTAL_MIGRATIONS)
            self.core.restore(self._load_requests(), self._load_sessions())
        except sqlite3.Error as exc:
            raise StateError(f"the portal's tables are unusable: {exc}") from None
        state.listeners.append(self.on_event)

    def now(self) -> datetime:
        return self.state.now()

    # --- persistence -----------------------------------------------------------------------

    def _load_requests(self) -> list[PortalRequest]:
        rows = self.store.conn.execute(
            "SELECT request_id, kind, user_agent, created_at, status, secret_digest, "
            "session_id, decided_at, decided_by FROM portal_requests ORDER BY created_at"
        ).fetchall()
        return [
            PortalRequest(
                request_id=r[0],
                kind=PortalRequestKind(r[1]),
                user_agent=r[2],
                created_at=_rt(r[3]),
                status=PortalRequestStatus(r[4]),
                secret_digest=r[5],
                session_id=r[6],
                decided_at=_pt(r[7]),
                decided_by=r[8],
            )
            for r in rows
        ]

    def _load_sessions(self) -> list[Session]:
        rows = self.store.conn.execute(
            "SELECT session_id, digest, user_agent, created_at, expires_at, status, last_used, "
            "renewed_at, elevated_until, request_id, ended_at FROM portal_sessions "
            "ORDER BY created_at"
        ).fetchall()
        return [
            Session(
                session_id=r[0],
                digest=r[1],
                user_agent=r[2],
                created_at=_rt(r[3]),
                expires_at=_rt(r[4]),
                status=SessionStatus(r[5]),
                last_used=_pt(r[6]),
                renewed_at=_pt(r[7]),
                elevated_until=_pt(r[8]),
                request_id=r[9],
                ended_at=_pt(r[10]),
            )
            for r in rows
        ]

    def _persist(self, changes: list[SessionChange]) -> None:
        with self.store.transaction() as conn:
            for change in changes:
                record = change.record
                dropped = change.kind.endswith("-dropped")
                if isinstance(record, PortalRequest):
                    if dropped:
                        conn.execute(
                            "DELETE FROM portal_requests WHERE request_id = ?", (record.request_id,)
                        )
                        continue
                    conn.execute(
                        "INSERT INTO portal_requests (request_id, kind, user_agent, created_at, "
                        "status, secret_digest, session_id, decided_at, decided_by) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE "
                        "SET status = excluded.status, session_id = excluded.session_id, "
                        "decided_at = excluded.decided_at, decided_by = excluded.decided_by",
                        (
                            record.request_id,
                            record.kind.value,
                            record.user_agent,
                            _t(record.created_at),
                            record.status.value,
                            record.secret_digest,
                            record.session_id,
                            _t(record.decided_at),
                            record.decided_by,
                        ),
                    )
                elif dropped:
                    conn.execute(
                        "DELETE FROM portal_sessions WHERE session_id = ?", (record.session_id,)
                    )
                else:
                    conn.execute(
                        "INSERT INTO portal_sessions (session_id, digest, user_agent, "
                        "created_at, expires_at, status, last_used, renewed_at, elevated_until, "
                        "request_id, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (session_id) DO UPDATE SET expires_at = excluded.expires_at, "
                        "status = excluded.status, last_used = excluded.last_used, "
                        "renewed_at = excluded.renewed_at, "
                        "elevated_until = excluded.elevated_until, ended_at = excluded.ended_at",
                        (
                            record.session_id,
                            record.digest,
                            record.user_agent,
                            _t(record.created_at),
                            _t(record.expires_at),
                            record.status.value,
                            _t(record.last_used),
                            _t(record.renewed_at),
                            _t(record.elevated_until),
                            record.request_id,
                            _t(record.ended_at),
                        ),
                    )

    def commit(self) -> None:
        """Persist what the core changed, then close streams and tell listeners."""
        changes = self.core.take_changes()
        if not changes:
            return
        self._persist(changes)
        for change in changes:
            record = change.record
            if isinstance(record, Session) and change.kind in (
                "logout",
                "session-revoked",
                "session-expired",
            ):
                why = {
                    "logout": "logged out",
                    "session-revoked": "session revoked",
                    "session-expired": "session expired",
                }[change.kind]
                self.state.hub.close_token(
                    stream_id(record.session_id), CLOSE_REVOKED, f"unauthorized: {why}"
                )
            if change.kind in _QUIET:
                continue
            details = _details(change, self._handle(record))
            log.info("portal: %s (%s)", change.kind, details["browser"])
            self.state.emit(change.kind, **details)

    def _handle(self, record: Session | PortalRequest) -> str:
        if isinstance(record, PortalRequest) and record.kind is PortalRequestKind.ELEVATION:
            try:
                return browser_handle(self.core.session(record.session_id or ""))
            except NotFound:
                return record.request_id
        return browser_handle(record)

    def _run(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        finally:
            self.commit()

    # --- logins ----------------------------------------------------------------------------

    def start_login(
        self, user_agent: str | None, previous_secret: str | None = None
    ) -> tuple[PortalRequest, str]:
        """A new login request (§5.1.3) and the browser's login secret."""
        now = self.now()
        return self._run(
            lambda: self.core.start_login(user_agent, now, previous_secret=previous_secret)
        )

    def poll_login(self, secret: str | None) -> LoginPoll:
        return self._run(lambda: self.core.poll_login(secret, self.now()))

    def authenticate(self, secret: str | None) -> Session:
        return self._run(lambda: self.core.authenticate(secret, self.now()))

    def session(self, session_id: str) -> Session:
        return self.core.session(session_id)

    def sessions(self) -> list[Session]:
        return self._run(lambda: self.core.sessions(self.now()))

    def requests(self) -> list[PortalRequest]:
        """Login and elevation requests the portal lists (pending, or recently denied)."""
        return self._run(lambda: self.core.requests(self.now()))

    def pending(self) -> list[PortalRequest]:
        return self._run(lambda: self.core.pending(self.now()))

    def request_elevation(self, session_id: str) -> PortalRequest:
        return self._run(lambda: self.core.request_elevation(session_id, self.now()))

    def approve(self, request_id: str | None, by: str = METER) -> PortalRequest:
        return self._run(lambda: self.core.approve(request_id, self.now(), by=by))

    def deny(self, request_id: str | None, by: str = METER) -> PortalRequest:
        return self._run(lambda: self.core.deny(request_id, self.now(), by=by))

    def unelevate(self, session_id: str) -> Session:
        return self._run(lambda: self.core.unelevate(session_id, self.now()))

    def logout(self, session_id: str) -> Session:
        return self._run(lambda: self.core.logout(session_id, self.now()))

    def revoke(self, session_id: str, reason: str) -> Session:
        return self._run(lambda: self.core.revoke(session_id, self.now(), reason))

    def revoke_all(self, reason: str) -> list[Session]:
        return self._run(lambda: self.core.revoke_all(self.now(), reason))

    def maintain(self) -> None:
        """Every few seconds: expire and prune; an open live stream is use of its session,
        so a browser watching the live page is renewed (§5.2)."""
        now = self.now()
        try:
            for token_id in self.state.hub.token_ids():
                if not token_id.startswith(STREAM_PREFIX):
                    continue
                session_id = token_id[len(STREAM_PREFIX) :]
                try:
                    session = self.core.session(session_id)
                except NotFound:
                    continue
                if session.status is SessionStatus.ACTIVE and now < session.expires_at:
                    self.core.touch(session_id, now)
            self.core.prune(now)
        finally:
            self.commit()

    def on_event(self, event: GatewayEvent) -> None:
        """A history block (§12.1) revokes every authorisation: every session ends."""
        if event.kind == "history-blocked":
            self.revoke_all("history was blocked")

    # --- the meter's display and buttons -----------------------------------------------

    def meter_queue(self) -> list[dict[str, Any]]:
        """Everything waiting on the meter's display, oldest first: token requests,
        login requests and elevation requests (§5.1.5, §5.1.3, §9.2.2)."""
        now = self.now()
        items: list[tuple[datetime, str, dict[str, Any]]] = []
        for request in self.state.pending():
            items.append(
                (
                    request.created_at,
                    request.request_id,
                    {**request_json(request, now), "kind": "token"},
                )
            )
        for portal in self.pending():
            items.append((portal.created_at, portal.request_id, portal_request_json(portal, now)))
        items.sort(key=lambda item: (item[0], item[1]))
        return [item[2] for item in items]

    def _is_portal(self, request_id: str) -> bool:
        try:
            self.core.request(request_id)
        except NotFound:
            return False
        return True

    def install(self, control: ControlServer) -> None:
        """Put the portal's requests on the meter's display and buttons (see the module
        docstring)."""
        token_list = control.commands["list"]
        token_approve = control.commands["approve"]
        token_deny = control.commands["deny"]
        del token_list  # replaced: the display shows the merged queue

        def listing(args: Mapping[str, Any]) -> dict[str, Any]:
            return {"requests": self.meter_queue()}

        def target(args: Mapping[str, Any]) -> tuple[str | None, bool]:
            request_id = args.get("id")
            if request_id is not None and (not isinstance(request_id, str) or not request_id):
                raise BadRequest("id: a non-empty string expected")
            if request_id is None:
                queue = self.meter_queue()
                if not queue:  # nothing waits: the token command says so (or what is wrong)
                    return None, False
                return str(queue[0]["request_id"]), queue[0]["kind"] != "token"
            return request_id, self._is_portal(request_id)

        def by_id(args: Mapping[str, Any], request_id: str | None) -> dict[str, Any]:
            return {**args, "id": request_id} if request_id is not None else dict(args)

        def approve(args: Mapping[str, Any]) -> Any:
            request_id, portal = target(args)
            if not portal:
                return token_approve(by_id(args, request_id))
            if args.get("profiles") is not None:
                raise BadRequest("profiles: a login or admin request has no profiles")
            request = self.approve(request_id, METER)
            return {"kind": request.kind.value, "request": portal_request_json(request, self.now())}

        def deny(args: Mapping[str, Any]) -> Any:
            request_id, portal = target(args)
            if not portal:
                return token_deny(by_id(args, request_id))
            request = self.deny(request_id, METER)
            return {"kind": request.kind.value, "request": portal_request_json(request, self.now())}

        def sessions(args: Mapping[str, Any]) -> dict[str, Any]:
            now = self.now()
            return {"sessions": [session_json(s, now) for s in self.sessions()]}

        def revoke_session(args: Mapping[str, Any]) -> dict[str, Any]:
            session_id = args.get("session_id")
            if not isinstance(session_id, str) or not session_id:
                raise BadRequest("session_id: a non-empty string expected")
            session = self.revoke(session_id, "ended on the meter")
            return {"session": session_json(session, self.now())}

        commands: dict[str, Command] = {
            "list": listing,
            "approve": approve,
            "deny": deny,
            "sessions": sessions,
            "revoke-session": revoke_session,
        }
        for name, command in commands.items():
            control.register(name, command)
