"""The embedded gateway's SQLite database: settings, and a home for the other parts'
tables (the ledger, history, comlog) in the same file.

One file, ``<state dir>/gateway.db``, in WAL mode with ``synchronous=FULL``: a committed
transaction survives SIGKILL and power loss. One :class:`sqlite3.Connection`, used from
the event loop's thread only. That is a deliberate choice: the ledger's writes are a
handful of small rows (a request, an approval, an hourly renewal), reads of tokens are
served from memory by :class:`~x1p1.x1.grants.Ledger`, and a commit with an fsync takes a
millisecond or two on an SD card; a thread would add locking and ordering questions to
save that. Parts that run long queries (history backfill) may run them in a thread with
a connection of their own (:meth:`Store.connect` opens one on the same file).

What is kept here:

- ``settings``: small key/value pairs, such as whether the grid operator switched X1 off
  (§12.3), as JSON.

Schema versions are kept per component in ``schema_versions``, so that another module
adds its tables with :meth:`Store.migrate` without touching this one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from x1p1.exceptions import StateError

DB_NAME = "gateway.db"
COMPONENT = "pairing"
"""The store's own component in ``schema_versions`` (its name from the days when it
also held the token tables; :mod:`x1p1.gateway.grants` moved those to its own set)."""

STORE_MIGRATIONS: tuple[str, ...] = (
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
"""The store's tables, one SQL script per schema version (index 0 is version 1). Version 1
also made the token tables of older x1p1 versions, which the ledger's first migration
takes over and drops (:data:`x1p1.gateway.grants.GRANTS_MIGRATIONS`)."""


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


def checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the write-ahead log into the main file and truncate the log to nothing
    (``PRAGMA wal_checkpoint(TRUNCATE)``); True when it got through. Only outside a
    transaction: what an open one wrote is not in the log yet. After a history block
    (§12.1) this is what takes the overwritten pages out of ``gateway.db-wal``."""
    if conn.in_transaction:
        raise RuntimeError("a checkpoint inside an open transaction would miss its writes")
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


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
        """Open (or create) ``<state_dir>/gateway.db`` and bring the store's tables to the
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
            store.migrate(COMPONENT, STORE_MIGRATIONS)
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

    def checkpoint(self) -> bool:
        """:func:`checkpoint` on the store's connection."""
        return checkpoint(self.conn)

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


def _statements(script: str) -> list[str]:
    """The statements of a migration script (none of ours holds a ';' in a literal)."""
    return [part.strip() for part in script.split(";") if part.strip()]
