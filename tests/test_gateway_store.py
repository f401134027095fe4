"""The gateway's SQLite store (x1p1.gateway.store): round trips, schema versions, damage."""

from __future__ import annotations

import sqlite3
import stat
import uuid as uuid_module
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from x1p1.exceptions import StateError
from x1p1.gateway.store import COMPONENT, PAIRING_MIGRATIONS, Store
from x1p1.x1.api import TokenRequestBody
from x1p1.x1.pairing import Pairing, token_digest

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _body() -> TokenRequestBody:
    return TokenRequestBody.parse(
        {"name": "dev", "uuid": str(uuid_module.uuid4()), "profiles": ["P1", "G-REALTIME"]}
    )


def test_records_survive_reopening_and_no_secret_is_stored(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    p = Pairing()
    request = p.request(_body(), T0)
    p.approve(None, T0)
    secret = p.state(request.request_id, T0).token
    assert secret is not None
    p.request(_body(), T0)
    store.apply(p.take_changes())
    store.close()

    raw = b"".join(path.read_bytes() for path in tmp_path.glob("gateway.db*"))
    assert secret.encode() not in raw
    assert token_digest(secret).encode() in raw

    store = Store.open(tmp_path)
    again = Pairing()
    again.restore(store.load_requests(), store.load_tokens())
    assert again.requests() == p.requests()
    assert again.tokens(T0) == p.tokens(T0)
    assert len(again.pending(T0)) == 1
    store.close()
    assert stat.S_IMODE((tmp_path / "gateway.db").stat().st_mode) == 0o600


def test_dropped_records_are_deleted(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    p = Pairing()
    p.request(_body(), T0)
    p.deny(None, T0)
    store.apply(p.take_changes())
    p.prune(T0 + timedelta(days=2))
    store.apply(p.take_changes())
    assert store.load_requests() == []
    store.close()


def test_settings(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
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
    assert store.migrate(COMPONENT, PAIRING_MIGRATIONS) == len(PAIRING_MIGRATIONS)
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
