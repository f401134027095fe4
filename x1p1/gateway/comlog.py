"""The comlog: every access to the meter's data, with its time (X1 §2.2).

§2.2 promises the customer a comlog in the local portal that shows, among other things,
"de momenten waarop de netbeheerder op afstand de meterstanden heeft uitgelezen". The
gateway writes an entry for each access action: token requests and their outcome
(§5.1.2–§5.1.7), revocations and profile changes (§5.1.6, §5.2), portal logins (§5.1.3,
§9.2), history blocks (§12.1), the grid operator switching X1 off and on (§12.3) and its
remote reads, and the use of the API and the WebSocket — that last one summarised per
device per hour, so a device polling every second adds one row an hour, not 3600.

:class:`Comlog` works on the gateway's :mod:`sqlite3` connection (the token store's;
WAL, ``synchronous=FULL``). :meth:`Comlog.add` commits each entry at once. Use
(:meth:`Comlog.note_use`) is counted in memory and written when a device's first use in
an hour happens (so the row exists at once), when the hour changes, and otherwise at
most every :attr:`Comlog.flush_seconds` seconds, keeping fsyncs off the API's hot path;
:meth:`Comlog.entries` writes pending counts first. After a crash, a use row may show
up to ``flush_seconds`` fewer uses than there were: the row itself is never lost.

A host on the home network must not be able to flood the comlog (docs/reliability.md):

- Failures of unauthenticated requests (:meth:`Comlog.note_failure`: a 401, a refused
  token request) are one row per client address, kind and minute, with a count and the
  latest time, counted like use rows.
- Entries that name the client's address (:meth:`Comlog.add` with ``address``: a token
  request, a login request) are written one by one up to :data:`ROWS_PER_ADDRESS` per
  address and hour; past that, that minute's entries of a kind from that address fold
  into one row with a count.
- What any host can cause without access (:func:`anyone_can_cause`: failures, folded
  rows, token and login requests and the requests they replaced) is capped by
  :meth:`Comlog.prune`: at most :data:`ADDRESS_KEPT` rows per address and
  :data:`ANYONE_KEPT` in all (the newest), whatever their age, besides the two years of
  everything else. A flood of one host lasting two years thus stays at most
  :data:`ADDRESS_KEPT` rows, plus what one hour adds before the next prune.
- :meth:`Comlog.view` (the portal's page) shows the newest entries of each side apart,
  so no flood pushes the meter's buttons, the grid operator, the history block or the
  customer's own logins, approvals and portal actions out of view.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from x1p1.gateway.store import transaction
from x1p1.x1.api import format_time

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS comlog (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        t INTEGER NOT NULL,
        event TEXT NOT NULL,
        device TEXT,
        detail TEXT NOT NULL DEFAULT '{}',
        count INTEGER NOT NULL DEFAULT 1,
        last INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS comlog_t ON comlog (t, id)",
    # One use row per kind, device and hour (t is the hour's start for those).
    """CREATE UNIQUE INDEX IF NOT EXISTS comlog_use ON comlog (event, device, t)
        WHERE event IN ('api-use', 'websocket-use')""",
)
_COLUMNS = (("address", "TEXT"), ("folded", "INTEGER NOT NULL DEFAULT 0"))
"""Columns added since the first schema (an older database gains them on open)."""
_FOLDED_INDEX = (
    # One folded row per kind, address and minute (t is the minute's start for those).
    """CREATE UNIQUE INDEX IF NOT EXISTS comlog_folded ON comlog (event, address, t)
        WHERE folded = 1""",
    "CREATE INDEX IF NOT EXISTS comlog_address ON comlog (address, t) WHERE address IS NOT NULL",
)

ROWS_PER_ADDRESS = 10
"""Entries with an address written one by one per address and hour; the rest fold."""
ADDRESS_KEPT = 1000
"""Rows that any host can cause (:func:`anyone_can_cause`) kept per address at most."""
ANYONE_KEPT = 20_000
"""Rows that any host can cause kept at most in all (two weeks of one row a minute)."""
_ANYONE = (
    "(folded = 1 OR event IN ('unauthorized', 'request-refused') OR (address IS NOT NULL "
    "AND event IN ('token-requested', 'login-requested', 'token-expired')))"
)
"""SQL: the rows of :func:`anyone_can_cause`."""
ADDRESS_MAX = 64

DETAIL_MAX = 4096
"""An entry's detail, as JSON, is at most this many characters (longer strings are cut)."""
DEVICE_MAX = 128


class ComlogEvent(enum.StrEnum):
    """What happened (X1 §2.2)."""

    TOKEN_REQUESTED = "token-requested"  # §5.1.2
    TOKEN_APPROVED = "token-approved"  # §5.1.5
    TOKEN_DENIED = "token-denied"  # §5.1.5, §5.1.7
    TOKEN_EXPIRED = "token-expired"  # §5.1.4, §5.2
    TOKEN_REVOKED = "token-revoked"  # §5.2, §12.1
    PROFILES_CHANGED = "profiles-changed"  # §5.1.6
    LOGIN_REQUESTED = "login-requested"  # §5.1.3
    LOGIN_APPROVED = "login-approved"  # §5.1.3, §9.2.2
    LOGIN_DENIED = "login-denied"
    LOGOUT = "logout"
    SESSION_REVOKED = "session-revoked"  # §5.2: a portal session ended by another or the meter
    ELEVATION_REQUESTED = "elevation-requested"  # §9.2.2: admin access asked in the portal
    ELEVATION_APPROVED = "elevation-approved"  # §9.2.2: confirmed on the meter
    ELEVATION_DENIED = "elevation-denied"
    ADMIN_ACTION = "admin-action"  # §9.2: an admin function used in the portal
    HISTORY_BLOCKED = "history-blocked"  # §12.1
    X1_DISABLED = "x1-disabled"  # §12.3
    X1_ENABLED = "x1-enabled"  # §12.3
    OPERATOR_READ = "operator-read"  # §2.2: the grid operator read the meter remotely
    API_USE = "api-use"  # REST calls, per device per hour
    WEBSOCKET_USE = "websocket-use"  # WebSocket connections, per device per hour
    UNAUTHORIZED = "unauthorized"  # §5.2: a request without a valid token, per address/minute
    REFUSED = "request-refused"  # §5.1.2: an unauthenticated request refused, per address/minute

    @property
    def summarised(self) -> bool:
        """Counted per device per hour by :meth:`Comlog.note_use`."""
        return self in (ComlogEvent.API_USE, ComlogEvent.WEBSOCKET_USE)

    @property
    def failure(self) -> bool:
        """Counted per address per minute by :meth:`Comlog.note_failure`."""
        return self in (ComlogEvent.UNAUTHORIZED, ComlogEvent.REFUSED)


def anyone_can_cause(event: ComlogEvent, address: str | None, folded: bool) -> bool:
    """Whether any host on the network can cause an entry like this without access: a
    failure, a folded row, a token or login request, or (with the client's address) the
    expiry of a request that a newer one replaced. The meter's buttons, the grid
    operator, the history block and what a session does are the other side."""
    if folded or event.failure:
        return True
    return address is not None and event in (
        ComlogEvent.TOKEN_REQUESTED,
        ComlogEvent.LOGIN_REQUESTED,
        ComlogEvent.TOKEN_EXPIRED,
    )


@dataclass(frozen=True, slots=True)
class ComlogEntry:
    """One line of the comlog.

    For ``api-use`` and ``websocket-use``, ``t`` is the start of the hour, ``count`` the
    uses in it and ``last`` the latest. A ``folded`` row (failures, and entries past an
    address's share) is one minute's entries of a kind from ``address``: ``t`` the
    minute's start, ``count`` how many, ``last`` the latest. For every other entry
    ``count`` is 1 and ``last`` is None."""

    id: int
    t: datetime
    event: ComlogEvent
    device: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    count: int = 1
    last: datetime | None = None
    address: str | None = None
    """The client's address, for entries a client on the network caused."""
    folded: bool = False

    @property
    def summarised(self) -> bool:
        """A row that counts several events (use per hour, or folded per minute)."""
        return self.event.summarised or self.folded

    def to_json(self) -> dict[str, Any]:
        """As ``x1p1 meter comlog --json`` and the portal show it."""
        out: dict[str, Any] = {
            "id": self.id,
            "t": format_time(self.t),
            "event": self.event.value,
            "device": self.device,
            "detail": dict(self.detail),
            "count": self.count,
        }
        if self.last is not None:
            out["last"] = format_time(self.last)
        if self.address is not None:
            out["address"] = self.address
        if self.folded:
            out["folded"] = True
        return out

    @classmethod
    def parse(cls, body: object) -> ComlogEntry:
        """Back from :meth:`to_json` (the control socket's client reads it so)."""
        if not isinstance(body, Mapping):
            raise ValueError("comlog entry: a JSON object expected")
        last = body.get("last")
        detail = body.get("detail") or {}
        if not isinstance(detail, Mapping):
            raise ValueError("comlog entry: detail must be an object")
        device = body.get("device")
        address = body.get("address")
        return cls(
            id=int(body["id"]),
            t=datetime.fromisoformat(str(body["t"])).astimezone(UTC),
            event=ComlogEvent(body["event"]),
            device=None if device is None else str(device),
            detail=dict(detail),
            count=int(body.get("count", 1)),
            last=None if last is None else datetime.fromisoformat(str(last)).astimezone(UTC),
            address=None if address is None else str(address),
            folded=bool(body.get("folded", False)),
        )

    def describe(self) -> str:
        """One line for a terminal: time, event, device, count and detail."""
        parts = [format_time(self.t), self.event.value]
        if self.device is not None:
            parts.append(self.device)
        if self.address is not None and self.address != self.device:
            parts.append(f"from {self.address}")
        if self.event.summarised:
            parts.append(f"{self.count} uses, last {format_time(self.last or self.t)}")
        elif self.folded:
            parts.append(f"{self.count} times, last {format_time(self.last or self.t)}")
        if self.detail:
            parts.append(" ".join(f"{k}={_short(v)}" for k, v in sorted(self.detail.items())))
        return "  ".join(parts)


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "…"


def _stamp(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("comlog times must be aware datetimes")
    return int(moment.timestamp())


def _time(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def _hour(stamp: int) -> int:
    return stamp - stamp % 3600


def _minute(stamp: int) -> int:
    return stamp - stamp % 60


def _detail_json(detail: Mapping[str, Any]) -> str:
    """The detail as JSON, at most :data:`DETAIL_MAX` characters; ValueError if it is
    not JSON."""
    try:
        text = json.dumps(
            dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"comlog detail is not JSON: {exc}") from None
    if len(text) <= DETAIL_MAX:
        return text
    cut = {
        k: (v[:200] + "…" if isinstance(v, str) and len(v) > 200 else v) for k, v in detail.items()
    }
    text = json.dumps(cut, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) <= DETAIL_MAX:
        return text
    return json.dumps({"truncated": text[: DETAIL_MAX - 40]}, ensure_ascii=False)


@dataclass(slots=True)
class _Pending:
    count: int
    last: int


class Comlog:
    """The comlog on a SQLite connection (X1 §2.2)."""

    flush_seconds: float = 60.0
    """Use and failure counts wait at most this long in memory (seconds of ``now``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._pending: dict[tuple[ComlogEvent, str, int], _Pending] = {}
        self._written: set[tuple[ComlogEvent, str, int]] = set()
        """Use rows on disk already (this hour's and the last)."""
        self._folds: dict[tuple[ComlogEvent, str, int], _Pending] = {}
        self._folds_written: set[tuple[ComlogEvent, str, int]] = set()
        """Folded rows on disk already (this minute's and the last)."""
        self._rows_this_hour: dict[str, int] = {}
        self._hour: int | None = None
        self._flushed_at: int | None = None

    def init_schema(self) -> None:
        """Create the table and its indexes if absent; add the columns an older
        database lacks."""
        with transaction(self.conn) as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            have = {row[1] for row in conn.execute("PRAGMA table_info(comlog)")}
            for name, kind in _COLUMNS:
                if name not in have:
                    conn.execute(f"ALTER TABLE comlog ADD COLUMN {name} {kind}")
            for statement in _FOLDED_INDEX:
                conn.execute(statement)

    def add(
        self,
        now: datetime,
        event: ComlogEvent | str,
        device: str | None = None,
        detail: Mapping[str, Any] | None = None,
        *,
        address: str | None = None,
    ) -> ComlogEntry | None:
        """Write one entry at once (committed when this returns) and return it.

        ``device`` names the device or session (a token's name, uuid or id; None for
        the meter's buttons and the grid operator). ``address`` is the client's, for
        what a client on the network caused: past :data:`ROWS_PER_ADDRESS` entries of
        an address in an hour, the entry is folded into that minute's row of its kind
        and address, and None is returned. ``api-use`` and ``websocket-use`` go through
        :meth:`note_use`, failures through :meth:`note_failure`. ValueError for an
        unknown event or a detail that is not JSON."""
        kind = ComlogEvent(event)
        if kind.summarised or kind.failure:
            raise ValueError(f"{kind.value} is counted: use note_use() or note_failure()")
        text = _detail_json(detail or {})
        name = None if device is None else device[:DEVICE_MAX]
        stamp = _stamp(now)
        where = None if address is None else address[:ADDRESS_MAX]
        if where is not None and self._share_used(where, stamp):
            self._fold(kind, where, stamp, now)
            return None
        with transaction(self.conn) as conn:
            cur = conn.execute(
                "INSERT INTO comlog (t, event, device, detail, address) VALUES (?, ?, ?, ?, ?)",
                (stamp, kind.value, name, text, where),
            )
            row_id = cur.lastrowid
        assert row_id is not None
        return ComlogEntry(row_id, _time(stamp), kind, name, json.loads(text), address=where)

    def note_failure(
        self, now: datetime, address: str, kind: ComlogEvent | str = ComlogEvent.UNAUTHORIZED
    ) -> None:
        """Count one failed unauthenticated request from ``address`` at ``now``
        (``unauthorized`` or ``request-refused``): one row per kind, address and
        minute, its count updated in place (written like :meth:`note_use`'s)."""
        failure = ComlogEvent(kind)
        if not failure.failure:
            raise ValueError(f"{failure.value} is not a failure to count; use add()")
        self._fold(failure, address[:ADDRESS_MAX], _stamp(now), now)

    def _share_used(self, address: str, stamp: int) -> bool:
        """Count one entry of ``address`` in this hour; whether its share was used up
        before it."""
        hour = _hour(stamp)
        if hour != self._hour:
            self._hour = hour
            self._rows_this_hour.clear()
        used = self._rows_this_hour.get(address, 0)
        if used >= ROWS_PER_ADDRESS:
            return True
        self._rows_this_hour[address] = used + 1
        return False

    def _fold(self, kind: ComlogEvent, address: str, stamp: int, now: datetime) -> None:
        key = (kind, address, _minute(stamp))
        pending = self._folds.get(key)
        first = pending is None and key not in self._folds_written
        if pending is None:
            pending = self._folds[key] = _Pending(0, stamp)
        pending.count += 1
        pending.last = max(pending.last, stamp)
        if first or self._due(stamp):
            self.flush(now)

    def note_use(
        self, now: datetime, device: str, kind: ComlogEvent | str = ComlogEvent.API_USE
    ) -> None:
        """Count one use of the API (``api-use``) or a WebSocket (``websocket-use``) by
        ``device`` at ``now``: one row per kind, device and hour, its count updated in
        place. See the module docstring for when counts reach the disk."""
        use = ComlogEvent(kind)
        if not use.summarised:
            raise ValueError(f"{use.value} is not a use to count; use add()")
        stamp = _stamp(now)
        key = (use, device[:DEVICE_MAX], _hour(stamp))
        pending = self._pending.get(key)
        first = pending is None and key not in self._written
        if pending is None:
            pending = self._pending[key] = _Pending(0, stamp)
        pending.count += 1
        pending.last = max(pending.last, stamp)
        if first or self._due(stamp):
            self.flush(now)

    def _due(self, stamp: int) -> bool:
        if self._flushed_at is None:
            return True
        if _hour(stamp) != _hour(self._flushed_at):
            return True
        return stamp - self._flushed_at >= self.flush_seconds or stamp < self._flushed_at

    def flush(self, now: datetime | None = None) -> None:
        """Write the counted uses and failures (the server also calls this on shutdown)."""
        if now is not None:
            self._flushed_at = _stamp(now)
        if not self._pending and not self._folds:
            return
        rows = [
            (use.value, device, hour, p.count, p.last)
            for (use, device, hour), p in self._pending.items()
        ]
        folds = [
            (kind.value, address, address, minute, p.count, p.last)
            for (kind, address, minute), p in self._folds.items()
        ]
        with transaction(self.conn) as conn:
            conn.executemany(
                "INSERT INTO comlog (event, device, t, count, last) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (event, device, t) WHERE event IN ('api-use', 'websocket-use') "
                "DO UPDATE SET count = count + excluded.count, "
                "last = max(last, excluded.last)",
                rows,
            )
            conn.executemany(
                "INSERT INTO comlog (event, device, address, t, count, last, folded) "
                "VALUES (?, ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (event, address, t) WHERE folded = 1 "
                "DO UPDATE SET count = count + excluded.count, "
                "last = max(last, excluded.last)",
                folds,
            )
        if self._pending:
            newest = max(hour for _, _, hour in self._pending)
            self._written = {k for k in self._written | set(self._pending) if k[2] >= newest - 3600}
        if self._folds:
            newest = max(minute for _, _, minute in self._folds)
            self._folds_written = {
                k for k in self._folds_written | set(self._folds) if k[2] >= newest - 60
            }
        self._pending.clear()
        self._folds.clear()

    def entries(self, since: datetime | None = None, limit: int = 1000) -> list[ComlogEntry]:
        """The newest ``limit`` entries with ``t >= since``, oldest first (use rows count
        at the start of their hour, so ``since`` within an hour shows that hour's row)."""
        self.flush()
        if limit < 1:
            return []
        lower = -(2**62) if since is None else _hour(_stamp(since))
        exact = lower if since is None else _stamp(since)
        rows = self.conn.execute(
            "SELECT id, t, event, device, detail, count, last, address, folded FROM ("
            "SELECT * FROM comlog WHERE t >= ? AND (event IN ('api-use', 'websocket-use') "
            "OR (folded = 1 AND t >= ?) OR t >= ?) ORDER BY t DESC, id DESC LIMIT ?) "
            "ORDER BY t, id",
            (lower, exact - exact % 60, exact, limit),
        ).fetchall()
        return _entries(rows)

    def view(self, limit: int = 500) -> list[ComlogEntry]:
        """What the portal shows, oldest first: the newest ``limit`` entries that no host
        can cause without access and, apart from them, the newest ``limit`` that any can
        (:func:`anyone_can_cause`). A flood fills only its own side."""
        self.flush()
        if limit < 1:
            return []
        select = (
            "SELECT id, t, event, device, detail, count, last, address, folded FROM comlog "
            "WHERE {} ORDER BY t DESC, id DESC LIMIT ?"
        )
        rows = self.conn.execute(select.format(f"NOT {_ANYONE}"), (limit,)).fetchall()
        rows += self.conn.execute(select.format(_ANYONE), (limit,)).fetchall()
        rows.sort(key=lambda row: (row[1], row[0]))
        return _entries(rows)

    def prune(self, now: datetime, keep: timedelta = timedelta(days=2 * 365)) -> int:
        """Delete entries older than ``keep`` (two years by default, the longest history
        the meter keeps a day's readings: Table 8), and of the rows any host can cause
        (:func:`anyone_can_cause`) those past the newest :data:`ADDRESS_KEPT` of their
        address and past the newest :data:`ANYONE_KEPT` in all; returns how many went."""
        with transaction(self.conn) as conn:
            cur = conn.execute("DELETE FROM comlog WHERE t < ?", (_stamp(now - keep),))
            gone = cur.rowcount
            cur = conn.execute(
                "DELETE FROM comlog WHERE id IN (SELECT id FROM (SELECT id, row_number() "
                "OVER (PARTITION BY address ORDER BY t DESC, id DESC) AS n FROM comlog "
                f"WHERE {_ANYONE}) WHERE n > ?)",
                (ADDRESS_KEPT,),
            )
            gone += cur.rowcount
            cur = conn.execute(
                f"DELETE FROM comlog WHERE {_ANYONE} AND id NOT IN ("
                f"SELECT id FROM comlog WHERE {_ANYONE} ORDER BY t DESC, id DESC LIMIT ?)",
                (ANYONE_KEPT,),
            )
            return gone + cur.rowcount


def _entries(rows: list[Any]) -> list[ComlogEntry]:
    """Rows of ``SELECT id, t, event, device, detail, count, last, address, folded``."""
    out: list[ComlogEntry] = []
    for row_id, t, event, device, detail, count, last, address, folded in rows:
        try:
            kind = ComlogEvent(event)
        except ValueError:
            continue  # an event kind from a newer x1p1
        out.append(
            ComlogEntry(
                int(row_id),
                _time(int(t)),
                kind,
                device,
                json.loads(detail or "{}"),
                int(count),
                None if last is None else _time(int(last)),
                address,
                bool(folded),
            )
        )
    return out
