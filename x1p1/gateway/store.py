"""The embedded gateway's SQLite database: token requests, tokens, settings, and a home
for the other parts' tables (history, comlog) in the same file.

One file, ``<state dir>/gateway.db``, in WAL mode with ``synchronous=FULL``: a committed
transaction survives SIGKILL and power loss. One :class:`sqlite3.Connection`, used from
the event loop's thread only. That is a deliberate choice: pairing writes are a handful
of small rows (a request, an approval, an hourly renewal), reads of tokens are served
from memory by :class:`~x1p1.x1.pairing.Pairing`, and a commit with an fsync takes a
millisecond or two on an SD card; a thread would add locking and ordering questions to
save that. Parts that run long queries (history backfill) may run them in a thread with
a connection of their own (:meth:`Store.connect` opens one on the same file).

What is kept (X1 §5.1.2, §5.2; x1-api.md, "Pairing"):

- ``token_requests``: every request until a day after it was decided;
- ``tokens``: the token's public id and the SHA-256 of its secret, never the secret;
- ``settings``: small key/value pairs, such as whether the grid operator switched X1 off
  (§12.3), as JSON.

Schema versions are kept per component in ``schema_versions``, so that another module
adds its tables with :meth:`Store.migrate` without touching this one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from x1p1.exceptions import StateError
from x1p1.x1.api import RequestStatus
from x1p1.x1.pairing import Change, Token, TokenRequest, TokenStatus
from x1p1.x1.profiles import Profile, sorted_profiles

DB_NAME = "gateway.db"
COMPONENT = "pairing"

PAIRING_MIGRATIONS: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE token_requests (
        request_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        uuid TEXT NOT NULL,
        asked TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL,
        decided_at TEXT,
        granted TEXT,
        token_id TEXT
    );
    CREATE INDEX token_requests_uuid ON token_requests (uuid);
    CREATE TABLE tokens (
        token_id TEXT PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        uuid TEXT NOT NULL,
        profiles TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        status TEXT NOT NULL,
        last_used TEXT,
        renewed_at TEXT,
        request_id TEXT,
        ended_at TEXT
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
)
"""The pairing tables, one SQL script per schema version (index 0 is version 1)."""


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _profiles(profiles: Iterable[Profile] | None) -> str | None:
    return None if profiles is None else ",".join(sorted_profiles(profiles))


def _parse_profiles(text: str | None) -> frozenset[Profile] | None:
    if text is None:
        return None
    return frozenset(Profile(p) for p in text.split(",") if p)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error), or the caller's own
    transaction if one is open: the caller then commits. Every part of the gateway's
    database (store, history, billing, comlog, sessions) writes through this."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


class Store:
    """The gateway's database. Open it with :meth:`open`; close it with :meth:`close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        """The connection: other parts (history, comlog) use it from the event loop."""

    # --- opening -------------------------------------------------------------------------

    @staticmethod
    def connect(path: Path) -> sqlite3.Connection:
        """A connection to ``path`` in autocommit mode (transactions are explicit), WAL,
        ``synchronous=FULL``, foreign keys on."""
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the gateway database {path}: {exc}") from None
        return conn

    @classmethod
    def open(cls, state_dir: Path) -> Store:
        """Open (or create) ``<state_dir>/gateway.db`` and bring the pairing tables to the
        current schema. :class:`StateError` if the directory or database is unusable."""
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state directory {state_dir}: {exc}") from None
        path = state_dir / DB_NAME
        store = cls(path, cls.connect(path))
        try:
            os.chmod(path, 0o600)
            store.migrate(COMPONENT, PAIRING_MIGRATIONS)
            rows = store.conn.execute("PRAGMA quick_check").fetchall()
        except (sqlite3.Error, OSError) as exc:
            store.close()
            raise StateError(f"the gateway database {path} is unusable: {exc}") from None
        if rows != [("ok",)]:
            store.close()
            raise StateError(f"the gateway database {path} is damaged: {rows[:3]}")
        return store

    def close(self) -> None:
        """Close the connection (a WAL checkpoint happens on the last close)."""
        self.conn.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on error; joins an open one."""
        return transaction(self.conn)

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Run the scripts of ``migrations`` that ``component`` has not run yet (script
        ``i`` makes version ``i + 1``), each in its own transaction; return the version.

        A database from a newer x1p1 (a version beyond ``migrations``) is refused."""
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
        row = self.conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).fetchone()
        version = 0 if row is None else int(row[0])
        if version > len(migrations):
            raise StateError(
                f"{self.path}: the {component} tables are at version {version}, newer than "
                f"this x1p1 knows ({len(migrations)}); use a newer x1p1 or another state dir"
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            with self.transaction() as conn:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, number),
                )
            version = number
        return version

    # --- pairing records -------------------------------------------------------------------

    def load_requests(self) -> list[TokenRequest]:
        rows = self.conn.execute(
            "SELECT request_id, name, uuid, asked, created_at, status, decided_at, granted, "
            "token_id FROM token_requests ORDER BY created_at"
        ).fetchall()
        return [
            TokenRequest(
                request_id=r[0],
                name=r[1],
                uuid=r[2],
                asked=_parse_profiles(r[3]) or frozenset(),
                created_at=_req(_parse_time(r[4])),
                status=RequestStatus(r[5]),
                decided_at=_parse_time(r[6]),
                granted=_parse_profiles(r[7]),
                token_id=r[8],
            )
            for r in rows
        ]

    def load_tokens(self) -> list[Token]:
        rows = self.conn.execute(
            "SELECT token_id, digest, name, uuid, profiles, created_at, expires_at, status, "
            "last_used, renewed_at, request_id, ended_at FROM tokens ORDER BY created_at"
        ).fetchall()
        return [
            Token(
                token_id=r[0],
                digest=r[1],
                name=r[2],
                uuid=r[3],
                profiles=_parse_profiles(r[4]) or frozenset(),
                created_at=_req(_parse_time(r[5])),
                expires_at=_req(_parse_time(r[6])),
                status=TokenStatus(r[7]),
                last_used=_parse_time(r[8]),
                renewed_at=_parse_time(r[9]),
                request_id=r[10],
                ended_at=_parse_time(r[11]),
            )
            for r in rows
        ]

    def apply(self, changes: Iterable[Change]) -> None:
        """Persist the records of ``changes`` in one transaction (nothing if empty)."""
        changes = list(changes)
        if not changes:
            return
        with self.transaction() as conn:
            for change in changes:
                record = change.record
                dropped = change.kind.endswith("-dropped")
                if isinstance(record, TokenRequest):
                    if dropped:
                        conn.execute(
                            "DELETE FROM token_requests WHERE request_id = ?",
                            (record.request_id,),
                        )
                    else:
                        _save_request(conn, record)
                elif dropped:
                    conn.execute("DELETE FROM tokens WHERE token_id = ?", (record.token_id,))
                else:
                    _save_token(conn, record)

    # --- settings ----------------------------------------------------------------------------

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A setting's value (JSON-decoded), or ``default``."""
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value: Any) -> None:
        """Set a setting (JSON-encoded), committed at once."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )


def _req(moment: datetime | None) -> datetime:
    if moment is None:
        raise StateError("a required time is missing in the gateway database")
    return moment


def _statements(script: str) -> list[str]:
    """The statements of a migration script (none of ours holds a ';' in a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]


def _save_request(conn: sqlite3.Connection, r: TokenRequest) -> None:
    conn.execute(
        "INSERT INTO token_requests (request_id, name, uuid, asked, created_at, status, "
        "decided_at, granted, token_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (request_id) DO UPDATE SET status = excluded.status, "
        "decided_at = excluded.decided_at, granted = excluded.granted, "
        "token_id = excluded.token_id",
        (
            r.request_id,
            r.name,
            r.uuid,
            _profiles(r.asked),
            _time(r.created_at),
            r.status.value,
            _time(r.decided_at),
            _profiles(r.granted),
            r.token_id,
        ),
    )


def _save_token(conn: sqlite3.Connection, t: Token) -> None:
    conn.execute(
        "INSERT INTO tokens (token_id, digest, name, uuid, profiles, created_at, expires_at, "
        "status, last_used, renewed_at, request_id, ended_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (token_id) DO UPDATE SET digest = excluded.digest, "
        "profiles = excluded.profiles, expires_at = excluded.expires_at, "
        "status = excluded.status, last_used = excluded.last_used, "
        "renewed_at = excluded.renewed_at, ended_at = excluded.ended_at",
        (
            t.token_id,
            t.digest,
            t.name,
            t.uuid,
            _profiles(t.profiles),
            _time(t.created_at),
            _time(t.expires_at),
            t.status.value,
            _time(t.last_used),
            _time(t.renewed_at),
            t.request_id,
            _time(t.ended_at),
        ),
    )
