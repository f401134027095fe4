"""The ledger of the meter's button in the running gateway: persisted, with side effects.

:class:`GatewayGrants` puts the sans-I/O :class:`~x1p1.x1.grants.Ledger` next to the
gateway's database and its live streams. Every operation:

1. runs on the ledger with ``now`` from the gateway's clock;
2. writes what changed in **one transaction** (tables ``requests`` and ``grants``, one
   migration set, :data:`GRANTS_MIGRATIONS`);
3. only then closes streams (a revoked or expired grant's with 4401, a token whose
   profiles shrank with 4403) and tells the listeners (the comlog, X1 §2.2; the log).

When the write fails (a full disk, a read-only file system, a damaged file), the ledger
is rolled back to where it was before the operation, nothing is closed or told, and the
caller gets :class:`~x1p1.exceptions.StorageUnavailable` (503): memory and disk never
disagree. :meth:`GatewayGrants.block_history` runs the history block (§12.1) and the
revocations it causes in one transaction, so that a kill at any instant leaves all of
them done or none.

Housekeeping (expiry, the renewal of grants with an open stream, pruning) is
:meth:`GatewayGrants.maintain`; :meth:`GatewayGrants.next_deadline` says when it is next
due, and :attr:`GatewayGrants.on_change` tells the gateway's one housekeeping loop
(:mod:`x1p1.gateway.app`) that a change may have moved that moment (timers are data,
architecture.md, habit 12).

The meter's display and buttons (§5.1.5, §9.2.2) are :meth:`GatewayGrants.display`,
:meth:`GatewayGrants.approve` and :meth:`GatewayGrants.deny`; the control socket
(:mod:`x1p1.gateway.control`) registers each command once and calls them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar, assert_never

from x1p1.exceptions import ForbiddenProfile, StateError, StorageUnavailable, Unauthorized
from x1p1.gateway.comlog import ComlogEvent
from x1p1.gateway.store import Store
from x1p1.gateway.streams import StreamHub
from x1p1.x1.api import TokenRequestBody, TokenRequestState, format_time
from x1p1.x1.grants import (
    METER,
    Change,
    Event,
    Grant,
    GrantKind,
    GrantState,
    Ledger,
    LoginPoll,
    Request,
    RequestKind,
    RequestState,
    session_uuid,
)
from x1p1.x1.profiles import Profile, sorted_profiles

log = logging.getLogger("x1p1.gateway")
T = TypeVar("T")

COMPONENT = "grants"
LOG_EVERY = 60.0
"""A failing database is logged at most once a minute (seconds)."""
_ALL = ",".join(sorted_profiles(Profile))

GRANTS_MIGRATIONS: tuple[str, ...] = (
    # version 1: one pair of tables for devices and browsers alike. It takes over the
    # records of the two older sets (component "pairing": token_requests, tokens;
    # component "portal": portal_requests, portal_sessions) and drops their tables.
    f"""
    CREATE TABLE requests (
        request_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        code TEXT NOT NULL,
        address TEXT NOT NULL,
        created_at TEXT NOT NULL,
        name TEXT NOT NULL,
        uuid TEXT NOT NULL,
        asked TEXT NOT NULL,
        state TEXT NOT NULL,
        decided_at TEXT,
        decided_by TEXT,
        granted TEXT,
        grant_id TEXT,
        secret_digest TEXT
    );
    CREATE TABLE grants (
        grant_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        uuid TEXT NOT NULL,
        profiles TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        state TEXT NOT NULL,
        last_used TEXT,
        renewed_at TEXT,
        elevated_until TEXT,
        request_id TEXT,
        ended_at TEXT
    );
    CREATE TABLE IF NOT EXISTS token_requests (
        request_id TEXT PRIMARY KEY, name TEXT NOT NULL, uuid TEXT NOT NULL,
        asked TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL,
        decided_at TEXT, granted TEXT, token_id TEXT
    );
    CREATE TABLE IF NOT EXISTS tokens (
        token_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
        uuid TEXT NOT NULL, profiles TEXT NOT NULL, created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL, status TEXT NOT NULL, last_used TEXT, renewed_at TEXT,
        request_id TEXT, ended_at TEXT
    );
    CREATE TABLE IF NOT EXISTS portal_requests (
        request_id TEXT PRIMARY KEY, kind TEXT NOT NULL, user_agent TEXT NOT NULL,
        created_at TEXT NOT NULL, status TEXT NOT NULL, secret_digest TEXT,
        session_id TEXT, decided_at TEXT, decided_by TEXT
    );
    CREATE TABLE IF NOT EXISTS portal_sessions (
        session_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, user_agent TEXT NOT NULL,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL, status TEXT NOT NULL,
        last_used TEXT, renewed_at TEXT, elevated_until TEXT, request_id TEXT,
        ended_at TEXT
    );
    INSERT INTO requests SELECT request_id, 'device', printf('%04d', (rowid * 2) % 10000),
        '', created_at, name, uuid, asked, status, decided_at,
        CASE WHEN status IN ('approved', 'denied') THEN 'meter' END, granted, token_id, NULL
        FROM token_requests;
    INSERT INTO requests SELECT request_id, kind, printf('%04d', (rowid * 2 + 1) % 10000),
        '', created_at, user_agent, '', CASE kind WHEN 'login' THEN '{_ALL}' ELSE '' END,
        status, decided_at, decided_by, NULL, session_id, secret_digest
        FROM portal_requests;
    INSERT INTO grants SELECT token_id, 'token', digest, name, uuid, profiles, created_at,
        expires_at, status, last_used, renewed_at, NULL, request_id, ended_at FROM tokens;
    INSERT INTO grants SELECT session_id, 'session', digest, user_agent, '', '{_ALL}',
        created_at, expires_at, status, last_used, renewed_at, elevated_until, request_id,
        ended_at FROM portal_sessions;
    DROP TABLE token_requests;
    DROP TABLE tokens;
    DROP TABLE portal_requests;
    DROP TABLE portal_sessions;
    DELETE FROM schema_versions WHERE component = 'portal'
    """,
)
"""The ledger's tables, one SQL script per schema version (index 0 is version 1)."""


def comlog_event(event: Event) -> ComlogEvent | None:
    """The comlog's event for a ledger event (§2.2), or None for those it does not show
    (renewals, pruning, a claim: their pairs are there already). Exhaustive: mypy
    refuses this function when :class:`~x1p1.x1.grants.Event` gains a member."""
    match event:
        case Event.DEVICE_REQUESTED:
            return ComlogEvent.TOKEN_REQUESTED
        case Event.DEVICE_APPROVED:
            return ComlogEvent.TOKEN_APPROVED
        case Event.DEVICE_DENIED:
            return ComlogEvent.TOKEN_DENIED
        case Event.DEVICE_EXPIRED | Event.TOKEN_EXPIRED:
            return ComlogEvent.TOKEN_EXPIRED
        case Event.TOKEN_REVOKED:
            return ComlogEvent.TOKEN_REVOKED
        case Event.TOKEN_PROFILES_CHANGED:
            return ComlogEvent.PROFILES_CHANGED
        case Event.LOGIN_REQUESTED:
            return ComlogEvent.LOGIN_REQUESTED
        case Event.LOGIN_APPROVED:
            return ComlogEvent.LOGIN_APPROVED
        case Event.LOGIN_DENIED:
            return ComlogEvent.LOGIN_DENIED
        case Event.LOGOUT:
            return ComlogEvent.LOGOUT
        case Event.SESSION_REVOKED:
            return ComlogEvent.SESSION_REVOKED
        case Event.ELEVATION_REQUESTED:
            return ComlogEvent.ELEVATION_REQUESTED
        case Event.ELEVATION_APPROVED:
            return ComlogEvent.ELEVATION_APPROVED
        case Event.ELEVATION_DENIED:
            return ComlogEvent.ELEVATION_DENIED
        case (
            Event.LOGIN_EXPIRED
            | Event.LOGIN_CANCELLED
            | Event.LOGIN_CLAIMED
            | Event.ELEVATION_EXPIRED
            | Event.ELEVATION_CANCELLED
            | Event.REQUEST_DROPPED
            | Event.TOKEN_ISSUED
            | Event.TOKEN_REISSUED
            | Event.TOKEN_RENEWED
            | Event.SESSION_STARTED
            | Event.SESSION_RENEWED
            | Event.SESSION_ELEVATED
            | Event.ELEVATION_ENDED
            | Event.SESSION_EXPIRED
            | Event.GRANT_DROPPED
        ):
            return None
        case _:
            assert_never(event)


CLOSE_REVOKED = Unauthorized.close_code
"""A stream's close code when its token or session ends (x1-api.md)."""
CLOSE_FORBIDDEN = ForbiddenProfile.close_code
"""A stream's close code when its token may no longer read it (x1-api.md)."""

_QUIET = frozenset(
    {Event.TOKEN_RENEWED, Event.SESSION_RENEWED, Event.REQUEST_DROPPED, Event.GRANT_DROPPED}
)
"""Persisted, but told to nobody (the comlog and the log would fill with them)."""

_ENDED_WHY = {
    Event.TOKEN_REVOKED: "token revoked",
    Event.TOKEN_EXPIRED: "token expired",
    Event.LOGOUT: "logged out",
    Event.SESSION_REVOKED: "session revoked",
    Event.SESSION_EXPIRED: "session expired",
}
"""Events that end a grant's streams (4401), with the close reason."""


# --- rows ----------------------------------------------------------------------------------


def _t(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _pt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _rt(text: str | None) -> datetime:
    if text is None:
        raise StateError("a required time is missing in the gateway database")
    return datetime.fromisoformat(text)


def _profiles(profiles: Iterable[Profile] | None) -> str | None:
    return None if profiles is None else ",".join(sorted_profiles(profiles))


def _parse_profiles(text: str | None) -> frozenset[Profile]:
    return frozenset(Profile(p) for p in (text or "").split(",") if p)


def load(conn: sqlite3.Connection) -> tuple[list[Request], list[Grant]]:
    """Every request and grant kept in the database."""
    requests = [
        Request(
            request_id=r[0],
            kind=RequestKind(r[1]),
            code=r[2],
            address=r[3],
            created_at=_rt(r[4]),
            name=r[5],
            uuid=r[6],
            asked=_parse_profiles(r[7]),
            state=RequestState(r[8]),
            decided_at=_pt(r[9]),
            decided_by=r[10],
            granted=None if r[11] is None else _parse_profiles(r[11]),
            grant_id=r[12],
            secret_digest=r[13],
        )
        for r in conn.execute(
            "SELECT request_id, kind, code, address, created_at, name, uuid, asked, state, "
            "decided_at, decided_by, granted, grant_id, secret_digest FROM requests"
        )
    ]
    grants = [
        Grant(
            grant_id=r[0],
            kind=GrantKind(r[1]),
            digest=r[2],
            name=r[3],
            uuid=r[4] or session_uuid(r[12] or r[0]),
            profiles=_parse_profiles(r[5]),
            created_at=_rt(r[6]),
            expires_at=_rt(r[7]),
            state=GrantState(r[8]),
            last_used=_pt(r[9]),
            renewed_at=_pt(r[10]),
            elevated_until=_pt(r[11]),
            request_id=r[12],
            ended_at=_pt(r[13]),
        )
        for r in conn.execute(
            "SELECT grant_id, kind, digest, name, uuid, profiles, created_at, expires_at, "
            "state, last_used, renewed_at, elevated_until, request_id, ended_at FROM grants"
        )
    ]
    return requests, grants


def persist(conn: sqlite3.Connection, changes: Iterable[Change]) -> None:
    """Write the records of ``changes`` (the caller holds the transaction)."""
    for change in changes:
        record = change.record
        if isinstance(record, Request):
            if change.event is Event.REQUEST_DROPPED:
                conn.execute("DELETE FROM requests WHERE request_id = ?", (record.request_id,))
                continue
            conn.execute(
                "INSERT OR REPLACE INTO requests (request_id, kind, code, address, created_at, "
                "name, uuid, asked, state, decided_at, decided_by, granted, grant_id, "
                "secret_digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.request_id,
                    record.kind.value,
                    record.code,
                    record.address,
                    _t(record.created_at),
                    record.name,
                    record.uuid,
                    _profiles(record.asked),
                    record.state.value,
                    _t(record.decided_at),
                    record.decided_by,
                    _profiles(record.granted),
                    record.grant_id,
                    record.secret_digest,
                ),
            )
        elif change.event is Event.GRANT_DROPPED:
            conn.execute("DELETE FROM grants WHERE grant_id = ?", (record.grant_id,))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO grants (grant_id, kind, digest, name, uuid, profiles, "
                "created_at, expires_at, state, last_used, renewed_at, elevated_until, "
                "request_id, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.grant_id,
                    record.kind.value,
                    record.digest,
                    record.name,
                    record.uuid,
                    _profiles(record.profiles),
                    _t(record.created_at),
                    _t(record.expires_at),
                    record.state.value,
                    _t(record.last_used),
                    _t(record.renewed_at),
                    _t(record.elevated_until),
                    record.request_id,
                    _t(record.ended_at),
                ),
            )


# --- JSON for the control socket and the portal -----------------------------------------


def request_json(request: Request, now: datetime) -> dict[str, Any]:
    """A request as ``x1p1 meter list`` shows it (the display's fields, §5.1.5)."""
    return {
        "request_id": request.request_id,
        "kind": request.kind.value,
        "code": request.code,
        "name": request.browser,
        "uuid": request.uuid or None,
        "profiles": sorted_profiles(request.granted or request.asked)
        if request.kind is RequestKind.DEVICE
        else [],
        "admin": request.admin,
        "address": request.address,
        "status": request.state.value,
        "created_at": format_time(request.created_at),
        "expires_at": format_time(request.expires_at),
        "expires_in": max(0, int((request.expires_at - now).total_seconds())),
        "decided_by": request.decided_by,
        "user_agent": None if request.kind is RequestKind.DEVICE else request.user_agent,
    }


def grant_json(grant: Grant, now: datetime) -> dict[str, Any]:
    """A token or session as ``x1p1 meter devices`` and the portal show it: never its
    secret."""
    out: dict[str, Any] = {
        "id": grant.grant_id,
        "kind": grant.kind.value,
        "name": grant.browser,
        "uuid": grant.uuid,
        "profiles": sorted_profiles(grant.profiles),
        "status": grant.state.value,
        "created_at": format_time(grant.created_at),
        "expires_at": format_time(grant.expires_at),
        "last_used": format_time(grant.last_used) if grant.last_used else None,
    }
    if grant.kind is GrantKind.TOKEN:
        out["token_id"] = grant.grant_id
    else:
        out["session_id"] = grant.grant_id
        out["browser"] = grant.browser
        out["user_agent"] = grant.user_agent
        out["elevated_until"] = (
            format_time(grant.elevated_until)
            if grant.elevated(now) and grant.elevated_until
            else None
        )
    return out


def _details(change: Change, ledger: Ledger) -> dict[str, Any]:
    """What the comlog and the log get of a change: never a secret."""
    record = change.record
    out: dict[str, Any]
    if isinstance(record, Request):
        handle = record.uuid
        if record.kind is RequestKind.LOGIN:
            handle = session_uuid(record.request_id)
        elif record.kind is RequestKind.ELEVATION:
            handle = ledger.grant(record.grant_id or "").uuid
        name = record.name if record.kind is RequestKind.DEVICE else f"portal: {record.browser}"
        out = {"name": name, "uuid": handle, "request_id": record.request_id}
        out["code"] = record.code
        if record.kind is RequestKind.DEVICE:
            out["profiles"] = sorted_profiles(record.granted or record.asked)
        else:
            out["browser"] = record.browser
        if record.decided_by:
            out["by"] = record.decided_by
        if record.kind is not RequestKind.DEVICE and record.grant_id:
            out["session_id"] = record.grant_id
    else:
        out = {"name": record.label, "uuid": record.uuid}
        if record.kind is GrantKind.TOKEN:
            out["token_id"] = record.grant_id
            out["profiles"] = sorted_profiles(record.profiles)
        else:
            out["session_id"] = record.grant_id
            out["browser"] = record.browser
    if change.reason:
        out["reason"] = change.reason
    return out


class GatewayGrants:
    """The ledger, persisted, with its side effects (see the module docstring).

    ``emit`` tells the gateway's listeners (``GatewayState.emit``); ``now`` is the
    gateway's clock."""

    def __init__(
        self,
        store: Store,
        hub: StreamHub,
        now: Callable[[], datetime],
        emit: Callable[..., None],
        *,
        auto_approve: bool = False,
        ledger: Ledger | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.clock = now
        self.emit = emit
        self.auto_approve = auto_approve
        self.ledger = ledger or Ledger()
        self._failing_logged: float | None = None
        """When a failing write was last logged (monotonic): at most once a minute."""
        self.on_change: Callable[[], None] | None = None
        """Called after every change that reached the disk: the housekeeping loop
        (:mod:`x1p1.gateway.app`) then asks :meth:`next_deadline` again."""
        try:
            store.migrate(COMPONENT, GRANTS_MIGRATIONS)
            self.ledger.restore(*load(store.conn))
        except (sqlite3.Error, ValueError) as exc:
            raise StateError(f"the gateway's ledger tables are unusable: {exc}") from None

    def now(self) -> datetime:
        return self.clock()

    # --- one operation, one transaction --------------------------------------------------

    def _run(self, operation: Callable[[], T], also: Callable[[], object] | None = None) -> T:
        """Run ``operation`` on the ledger and write what it changed in one transaction
        (with ``also``, another write that belongs to it); roll the ledger back and
        raise :class:`StorageUnavailable` when that fails. An operation that raises an
        X1 error still writes what it changed before (expiries found on the way)."""
        point = self.ledger.checkpoint()
        try:
            result = operation()
        except BaseException:
            self._commit(point, None)
            raise
        self._commit(point, also)
        return result

    def _commit(self, point: Any, also: Callable[[], object] | None) -> None:
        changes = self.ledger.take_changes()
        if not changes and also is None:
            return
        try:
            with self.store.transaction() as conn:
                if also is not None:
                    also()
                persist(conn, changes)
        except sqlite3.Error as exc:
            self.ledger.rollback(point)
            self.ledger.take_changes()
            moment = time.monotonic()
            if self._failing_logged is None or moment - self._failing_logged >= LOG_EVERY:
                self._failing_logged = moment
                log.error("the gateway database refused a change (nothing changed): %s", exc)
            raise StorageUnavailable(
                "the gateway cannot save the change now (its storage failed); nothing "
                "changed, try again later"
            ) from None
        if self._failing_logged is not None:
            self._failing_logged = None
            log.warning("the gateway database takes changes again")
        self._after(changes)
        if self.on_change is not None:
            self.on_change()

    def _after(self, changes: list[Change]) -> None:
        """Side effects of changes that are on disk: close streams, tell listeners."""
        for change in changes:
            record = change.record
            if isinstance(record, Grant):
                why = _ENDED_WHY.get(change.event)
                if why is not None:
                    self.hub.close_token(record.token_id, CLOSE_REVOKED, f"unauthorized: {why}")
                if change.event is Event.TOKEN_PROFILES_CHANGED:
                    self.hub.recheck(
                        record.token_id,
                        record.profiles,
                        CLOSE_FORBIDDEN,
                        "forbidden-profile: the token's profiles changed",
                    )
            if change.event in _QUIET:
                continue
            details = _details(change, self.ledger)
            if isinstance(record, Request) and record.state is RequestState.PENDING:
                log.info(
                    "%s: %r from %s waits on the meter with code %s (x1p1 meter approve --code %s)",
                    change.event.value,
                    details.get("name"),
                    record.address or "?",
                    record.code,
                    record.code,
                )
            else:
                extra = f" ({change.reason})" if change.reason else ""
                log.info("%s: %r%s", change.event.value, details.get("name"), extra)
            self.emit(change.event.value, **details)

    # --- devices (§5.1.2) -----------------------------------------------------------------

    def authenticate(self, secret: str | None) -> Grant:
        """The one authentication path (bearer tokens and portal cookies alike)."""
        return self._run(lambda: self.ledger.authenticate(secret, self.now()))

    def create_request(self, body: TokenRequestBody, address: str) -> TokenRequestState:
        """``POST /api/tokens/requests``; with ``auto_approve`` approved at once (the
        answer still says pending; the first poll gets the token)."""

        def make() -> TokenRequestState:
            now = self.now()
            request = self.ledger.request_device(body, address, now)
            answer = TokenRequestState(
                request.request_id, request.wire_status(), request.expires_at, code=request.code
            )
            if self.auto_approve:
                self.ledger.approve(request.request_id, now, by="auto-approve")
            return answer

        return self._run(make)

    def request_state(self, request_id: str) -> TokenRequestState:
        return self._run(lambda: self.ledger.device_state(request_id, self.now()))

    # --- reading -----------------------------------------------------------------------------

    def pending(self, kind: RequestKind | None = None) -> list[Request]:
        return self._run(lambda: self.ledger.pending(self.now(), kind))

    def visible(self, kind: RequestKind | None = None) -> list[Request]:
        return self._run(lambda: self.ledger.visible(self.now(), kind))

    def display(self) -> Request | None:
        return self._run(lambda: self.ledger.display(self.now()))

    def grants(self, kind: GrantKind | None = None) -> list[Grant]:
        return self._run(lambda: self.ledger.grants(self.now(), kind))

    def tokens(self) -> list[Grant]:
        return self.grants(GrantKind.TOKEN)

    def sessions(self) -> list[Grant]:
        return self.grants(GrantKind.SESSION)

    def grant(self, grant_id: str) -> Grant:
        return self.ledger.grant(grant_id)

    def request(self, request_id: str) -> Request:
        return self.ledger.request(request_id)

    # --- the button and the portal's admin functions -------------------------------------

    def approve(
        self,
        request_id: str | None = None,
        *,
        code: str | None = None,
        by: str = METER,
        profiles: frozenset[Profile] | None = None,
    ) -> Request:
        return self._run(
            lambda: self.ledger.approve(request_id, self.now(), code=code, by=by, profiles=profiles)
        )

    def deny(
        self, request_id: str | None = None, *, code: str | None = None, by: str = METER
    ) -> Request:
        return self._run(lambda: self.ledger.deny(request_id, self.now(), code=code, by=by))

    def revoke(self, grant_id: str, reason: str) -> Grant:
        return self._run(lambda: self.ledger.revoke(grant_id, self.now(), reason))

    def set_profiles(self, token_id: str, profiles: frozenset[Profile]) -> Grant:
        return self._run(lambda: self.ledger.set_profiles(token_id, profiles, self.now()))

    def revoke_all(self, reason: str) -> list[Grant]:
        return self._run(lambda: self.ledger.revoke_all(self.now(), reason))

    def block_history(self, block: Callable[[], T], reason: str) -> tuple[T, list[Grant]]:
        """Run ``block`` (the history store's block, §12.1) and end every grant and open
        request in one transaction: all of it is on disk, or none.

        Once that transaction has committed, the write-ahead log is copied into the main
        file and truncated (§12.1): the deleted readings' pages, overwritten by the block,
        then leave ``gateway.db-wal`` too. (A kill between the two leaves them in the log
        until SQLite's next checkpoint; the block itself is done either way.)"""
        outcome: list[T] = []
        grants = self._run(
            lambda: self.ledger.revoke_all(self.now(), reason),
            also=lambda: outcome.append(block()),
        )
        if not self.store.checkpoint():
            log.warning("history blocked, but a reader kept the old readings in the WAL")
        return outcome[0], grants

    # --- the portal's browsers (§5.1.3, §9.2.2) ------------------------------------------

    def start_login(
        self, user_agent: str | None, address: str, previous_secret: str | None = None
    ) -> tuple[Request, str]:
        return self._run(
            lambda: self.ledger.start_login(
                user_agent, address, self.now(), previous_secret=previous_secret
            )
        )

    def poll_login(self, secret: str | None) -> LoginPoll:
        return self._run(lambda: self.ledger.poll_login(secret, self.now()))

    def request_elevation(self, session_id: str, address: str) -> Request:
        return self._run(lambda: self.ledger.request_elevation(session_id, address, self.now()))

    def unelevate(self, session_id: str) -> Grant:
        return self._run(lambda: self.ledger.unelevate(session_id, self.now()))

    def logout(self, session_id: str) -> Grant:
        return self._run(lambda: self.ledger.logout(session_id, self.now()))

    # --- housekeeping ------------------------------------------------------------------------

    def maintain(self) -> None:
        """The ledger's housekeeping (:meth:`~x1p1.x1.grants.Ledger.maintain`) at the
        gateway's ``now``: expire, prune, and renew the grants with an open stream (their
        use, §5.2), so streaming devices and browsers watching the live page never
        expire mid-stream."""
        self._run(lambda: self.ledger.maintain(self.now(), self.hub.token_ids()))

    def next_deadline(self) -> datetime | None:
        """When :meth:`maintain` next has something to do; None: nothing until a change."""
        return self.ledger.next_deadline(self.now(), self.hub.token_ids())
