"""The gateway's SQLite store (x1p1.gateway.store): round trips, schema versions, damage."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from x1p1.exceptions import StateError
from x1p1.gateway.store import COMPONENT, STORE_MIGRATIONS, Store


def test_settings(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    assert stat.S_IMODE((tmp_path / "gateway.db").stat().st_mode) == 0o600
    assert store.get_setting("x1_enabled", True) is True
    store.set_setting("x1_enabled", False)
    store.close()
    store = Store.open(tmp_path)
    assert store.get_setting("x1_enabled", True) is False
    store.close()


def test_migrations_per_component_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    assert store.migrate("other", ["CREATE TABLE other_a (x)"]) == 1
    assert store.migrate("other", ["CREATE TABLE other_a (x)", "CREATE TABLE other_b (y)"]) == 2
    assert store.migrate(COMPONENT, STORE_MIGRATIONS) == len(STORE_MIGRATIONS)
    store.conn.execute("UPDATE schema_versions SET version = 99 WHERE component = ?", (COMPONENT,))
    store.close()
    with pytest.raises(StateError, match="newer"):
        Store.open(tmp_path)


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_a_damaged_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "gateway.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="gateway database"):
        Store.open(tmp_path)


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
        conn.execute("INSERT INTO settings (key, value) VALUES ('a', '1')")
        conn.execute("INSERT INTO settings (key, value) VALUES ('a', '2')")
    assert store.get_setting("a") is None
    store.close()
