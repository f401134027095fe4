"""The comlog (X1 §2.2): entries, use summarised per device per hour, durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from x1p1.gateway import comlog as comlog_module
from x1p1.gateway.comlog import (
    ADDRESS_KEPT,
    DETAIL_MAX,
    ROWS_PER_ADDRESS,
    Comlog,
    ComlogEntry,
    ComlogEvent,
)

T0 = datetime(2026, 5, 9, 12, 7, 31, tzinfo=UTC)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def log(db: Path) -> Comlog:
    comlog = Comlog(connect(db))
    comlog.init_schema()
    return comlog


def test_every_kind_of_event_of_the_issue() -> None:
    assert [e.value for e in ComlogEvent] == [
        "token-requested",
        "token-approved",
        "token-denied",
        "token-expired",
        "token-revoked",
        "profiles-changed",
        "login-requested",
        "login-approved",
        "login-denied",
        "logout",
        "session-revoked",
        "elevation-requested",
        "elevation-approved",
        "elevation-denied",
        "admin-action",  # the portal
        "history-blocked",
        "x1-disabled",
        "x1-enabled",
        "operator-read",
        "api-use",
        "websocket-use",
        "unauthorized",  # a client on the network: per address and minute
        "request-refused",
    ]


def test_add_and_read_back_in_order(log: Comlog, db: Path) -> None:
    log.add(
        T0,
        ComlogEvent.TOKEN_REQUESTED,
        "x1p1 on raspberrypi",
        {"uuid": "0b5c2f0e-0000-4000-8000-000000000000", "profiles": ["P1"]},
    )
    log.add(
        T0 + timedelta(seconds=20),
        "token-approved",
        "x1p1 on raspberrypi",
        {"profiles": ["P1"], "by": "button"},
    )
    log.add(T0 + timedelta(minutes=5), ComlogEvent.OPERATOR_READ, None)
    log.add(T0 + timedelta(minutes=6), ComlogEvent.HISTORY_BLOCKED)
    entries = log.entries()
    assert [e.event for e in entries] == [
        ComlogEvent.TOKEN_REQUESTED,
        ComlogEvent.TOKEN_APPROVED,
        ComlogEvent.OPERATOR_READ,
        ComlogEvent.HISTORY_BLOCKED,
    ]
    assert entries[1].detail == {"profiles": ["P1"], "by": "button"}
    assert entries[2].device is None
    assert entries[0].to_json() == {
        "id": entries[0].id,
        "t": "2026-05-09T12:07:31Z",
        "event": "token-requested",
        "device": "x1p1 on raspberrypi",
        "count": 1,
        "detail": {"uuid": "0b5c2f0e-0000-4000-8000-000000000000", "profiles": ["P1"]},
    }
    # Committed at once: another connection sees them.
    other = Comlog(connect(db))
    assert [e.id for e in other.entries()] == [e.id for e in entries]


def test_entries_since_and_limit(log: Comlog) -> None:
    for n in range(10):
        log.add(T0 + timedelta(minutes=n), ComlogEvent.X1_DISABLED if n % 2 else "x1-enabled")
    assert len(log.entries()) == 10
    newest = log.entries(limit=3)
    assert [e.t for e in newest] == [T0 + timedelta(minutes=n) for n in (7, 8, 9)]
    since = log.entries(since=T0 + timedelta(minutes=4))
    assert [e.t.minute for e in since] == [11, 12, 13, 14, 15, 16]
    assert log.entries(limit=0) == []


def test_use_is_one_row_per_device_per_hour(log: Comlog) -> None:
    t = T0
    for _ in range(1500):  # a device polling every 3 s for 75 minutes, into the next hour
        log.note_use(t, "dongle", ComlogEvent.API_USE)
        t += timedelta(seconds=3)
    log.note_use(T0, "portal", "api-use")
    log.note_use(T0, "dongle", ComlogEvent.WEBSOCKET_USE)
    rows = log.entries()
    use = [(e.event.value, e.device, e.t, e.count) for e in rows]
    hour = datetime(2026, 5, 9, 12, tzinfo=UTC)
    in_first_hour = sum(
        1 for n in range(1500) if T0 + timedelta(seconds=3 * n) < hour + timedelta(hours=1)
    )
    assert sorted(use, key=str) == sorted(
        [
            ("api-use", "dongle", hour, in_first_hour),
            ("api-use", "dongle", hour + timedelta(hours=1), 1500 - in_first_hour),
            ("api-use", "portal", hour, 1),
            ("websocket-use", "dongle", hour, 1),
        ],
        key=str,
    )
    last = next(e for e in rows if e.device == "dongle" and e.t == hour + timedelta(hours=1))
    assert in_first_hour == 1050
    assert last.last == T0 + timedelta(seconds=3 * 1499)
    assert last.to_json()["last"] == "2026-05-09T13:22:28Z"
    assert "450 uses" in last.describe()


def test_use_rows_reach_the_disk_at_first_use_and_then_at_least_every_minute(
    log: Comlog, db: Path
) -> None:
    def on_disk() -> list[tuple[int, int]]:
        other = sqlite3.connect(db)
        return other.execute("SELECT count, last FROM comlog WHERE event = 'api-use'").fetchall()

    log.note_use(T0, "dongle")
    assert on_disk() == [(1, int(T0.timestamp()))]
    log.note_use(T0 + timedelta(seconds=10), "dongle")
    log.note_use(T0 + timedelta(seconds=20), "dongle")
    assert on_disk() == [(1, int(T0.timestamp()))]  # counted in memory
    log.note_use(T0 + timedelta(seconds=61), "dongle")
    assert on_disk() == [(4, int(T0.timestamp()) + 61)]
    log.note_use(T0 + timedelta(seconds=70), "dongle")
    log.flush(T0 + timedelta(seconds=71))
    assert on_disk() == [(5, int(T0.timestamp()) + 70)]


def test_use_counts_survive_a_new_process(db: Path) -> None:
    first = Comlog(connect(db))
    first.init_schema()
    first.note_use(T0, "dongle")
    first.note_use(T0 + timedelta(seconds=1), "dongle")
    first.flush()
    second = Comlog(connect(db))
    second.init_schema()
    second.note_use(T0 + timedelta(seconds=2), "dongle")
    [entry] = second.entries()
    assert entry.count == 3


def test_wrong_use(log: Comlog) -> None:
    with pytest.raises(ValueError, match="note_use"):
        log.add(T0, ComlogEvent.API_USE, "x")
    with pytest.raises(ValueError, match="add"):
        log.note_use(T0, "x", ComlogEvent.LOGOUT)
    with pytest.raises(ValueError):
        log.add(T0, "coffee-made")
    with pytest.raises(ValueError, match="not JSON"):
        log.add(T0, ComlogEvent.LOGOUT, "x", {"when": datetime.now()})
    with pytest.raises(ValueError, match="aware"):
        log.add(datetime(2026, 1, 1), ComlogEvent.LOGOUT)
    assert log.entries() == []


def test_long_details_and_devices_are_cut(log: Comlog) -> None:
    entry = log.add(T0, ComlogEvent.TOKEN_REQUESTED, "d" * 1000, {"name": "n" * 10_000})
    assert entry.device is not None and len(entry.device) == 128
    [back] = log.entries()
    assert len(str(back.detail)) < DETAIL_MAX
    assert back.detail["name"].startswith("nnn")
    huge = log.add(T0, ComlogEvent.TOKEN_REQUESTED, "d", {str(n): n for n in range(2000)})
    assert "truncated" in huge.detail


def test_entry_json_round_trip(log: Comlog) -> None:
    log.add(T0, ComlogEvent.PROFILES_CHANGED, "dev", {"profiles": ["E-HISTORIC"]})
    log.note_use(T0, "dev", ComlogEvent.WEBSOCKET_USE)
    for entry in log.entries():
        assert ComlogEntry.parse(entry.to_json()) == entry
    with pytest.raises(ValueError):
        ComlogEntry.parse([])


def test_describe_is_one_readable_line(log: Comlog) -> None:
    entry = log.add(T0, ComlogEvent.TOKEN_DENIED, "phone", {"reason": "button"})
    assert entry.describe() == "2026-05-09T12:07:31Z  token-denied  phone  reason=button"


def test_prune(log: Comlog) -> None:
    log.add(T0 - timedelta(days=800), ComlogEvent.LOGOUT, "old")
    log.add(T0, ComlogEvent.LOGOUT, "new")
    assert log.prune(T0) == 1
    assert [e.device for e in log.entries()] == ["new"]


def test_committed_entries_survive_sigkill(db: Path) -> None:
    child = textwrap.dedent(
        f"""
        import sqlite3
        from datetime import UTC, datetime, timedelta
        from x1p1.gateway.comlog import Comlog
        conn = sqlite3.connect({str(db)!r}, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        log = Comlog(conn)
        log.init_schema()
        t = datetime(2026, 5, 9, tzinfo=UTC)
        n = 0
        while True:
            n += 1
            log.add(t + timedelta(seconds=n), "operator-read", None, {{"n": n}})
            print(n, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = [int(proc.stdout.readline()) for _ in range(100)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    numbers = [e.detail["n"] for e in Comlog(conn).entries(limit=100_000)]
    assert numbers[: len(seen)] == seen
    assert numbers == list(range(1, len(numbers) + 1))


# --- a hostile home network: failures and floods fold per address and minute ------------------


def _rows(db: Path) -> int:
    return int(connect(db).execute("SELECT count(*) FROM comlog").fetchone()[0])


def test_failures_are_one_row_per_address_kind_and_minute(log: Comlog, db: Path) -> None:
    """docs/reliability.md: 6000 refused requests from one host in three minutes are
    three rows a kind, each with its count; another address has rows of its own."""
    start = T0.replace(second=0)
    for k in range(3000):
        at = start + timedelta(seconds=k * 180 / 3000)
        log.note_failure(at, "127.0.0.2", ComlogEvent.UNAUTHORIZED)
        log.note_failure(at, "127.0.0.2", ComlogEvent.REFUSED)
    log.note_failure(start, "127.0.0.3", ComlogEvent.UNAUTHORIZED)
    entries = log.entries()
    assert _rows(db) == 7
    by_kind = {(e.event, e.address, e.t): e for e in entries}
    for minute in range(3):
        t = start + timedelta(minutes=minute)
        for kind in (ComlogEvent.UNAUTHORIZED, ComlogEvent.REFUSED):
            entry = by_kind[(kind, "127.0.0.2", t)]
            assert entry.count == 1000 and entry.folded and entry.summarised
            assert entry.last is not None and t <= entry.last < t + timedelta(minutes=1)
    assert by_kind[(ComlogEvent.UNAUTHORIZED, "127.0.0.3", start)].count == 1
    parsed = ComlogEntry.parse(entries[0].to_json())
    assert parsed == entries[0]
    assert "times, last" in entries[0].describe()
    with pytest.raises(ValueError):
        log.note_failure(start, "127.0.0.2", ComlogEvent.TOKEN_REQUESTED)
    with pytest.raises(ValueError):
        log.add(start, ComlogEvent.UNAUTHORIZED, "x")


def test_a_failure_row_exists_at_once(log: Comlog, db: Path) -> None:
    """The first failure of a minute is on disk before note_failure returns; the count
    follows within flush_seconds."""
    log.note_failure(T0, "127.0.0.2")
    assert _rows(db) == 1
    log.note_failure(T0 + timedelta(seconds=1), "127.0.0.2")
    log.flush()
    (count,) = connect(db).execute("SELECT count FROM comlog").fetchone()
    assert count == 2


def test_entries_of_an_address_fold_past_its_share(log: Comlog, db: Path) -> None:
    """A host that asks for tokens 500 times a minute writes ROWS_PER_ADDRESS entries
    one by one, then one folded row of that minute with the rest counted; the customer's
    own entries from elsewhere stay rows of their own."""
    start = T0.replace(second=0)
    for k in range(500):
        log.add(
            start + timedelta(seconds=k * 0.1),
            ComlogEvent.TOKEN_REQUESTED,
            f"evil {k}",
            address="127.0.0.2",
        )
    log.add(start + timedelta(seconds=30), ComlogEvent.TOKEN_REQUESTED, "mine", address="::1")
    log.add(start + timedelta(seconds=31), ComlogEvent.TOKEN_APPROVED, "mine")
    entries = log.entries()
    assert _rows(db) == ROWS_PER_ADDRESS + 1 + 2
    folded = [e for e in entries if e.folded]
    assert [(f.address, f.count) for f in folded] == [("127.0.0.2", 500 - ROWS_PER_ADDRESS)]
    assert [e.device for e in entries if not e.folded][-2:] == ["mine", "mine"]
    # the share is an hour's: the next minute folds too, the next hour has a new share
    later = start + timedelta(minutes=1)
    assert log.add(later, ComlogEvent.TOKEN_REQUESTED, "evil", address="127.0.0.2") is None
    later = start.replace(minute=0) + timedelta(hours=1)
    entry = log.add(later, ComlogEvent.TOKEN_REQUESTED, "evil", address="127.0.0.2")
    assert entry is not None and entry.address == "127.0.0.2" and not entry.folded


def test_prune_keeps_the_newest_folded_rows(
    log: Comlog, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(comlog_module, "ANYONE_KEPT", 5)
    start = T0.replace(second=0)
    for minute in range(12):
        log.note_failure(start + timedelta(minutes=minute), "127.0.0.2")
    log.add(start, ComlogEvent.X1_DISABLED)
    log.flush()
    assert log.prune(start + timedelta(minutes=12)) == 7
    kept = log.entries()
    assert [e.t for e in kept if e.folded] == [start + timedelta(minutes=m) for m in range(7, 12)]
    assert any(e.event is ComlogEvent.X1_DISABLED for e in kept)


def test_an_older_comlog_gains_the_new_columns(db: Path) -> None:
    conn = connect(db)
    conn.execute(
        """CREATE TABLE comlog (
        id INTEGER PRIMARY KEY AUTOINCREMENT, t INTEGER NOT NULL, event TEXT NOT NULL,
        device TEXT, detail TEXT NOT NULL DEFAULT '{}', count INTEGER NOT NULL DEFAULT 1,
        last INTEGER)"""
    )
    conn.execute("INSERT INTO comlog (t, event, device) VALUES (1, 'x1-disabled', NULL)")
    log = Comlog(connect(db))
    log.init_schema()
    log.init_schema()  # twice: nothing to do the second time
    log.note_failure(T0, "127.0.0.2")
    assert [e.event.value for e in log.entries()] == ["x1-disabled", "unauthorized"]


_REAL = (
    (ComlogEvent.TOKEN_APPROVED, "dongle", None),  # the meter's button
    (ComlogEvent.LOGIN_APPROVED, "portal: Firefox", None),
    (ComlogEvent.ADMIN_ACTION, "portal: Firefox", "127.0.0.1"),  # the customer, in the portal
    (ComlogEvent.X1_DISABLED, None, None),  # the grid operator
    (ComlogEvent.HISTORY_BLOCKED, None, None),
)


def test_a_flood_over_two_days_stays_bounded_and_hides_nothing_real(tmp_path: Path) -> None:
    """docs/reliability.md: one host asks for tokens, logs in and sends wrong tokens three
    times a minute each for 48 simulated hours, the hourly prune running. Its rows stay
    under ADDRESS_KEPT plus one hour's worth, and the portal's view still shows every
    entry of the meter, the grid operator and the customer, the oldest included."""
    conn = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # speed only: durability is tested above
    log = Comlog(conn)
    log.init_schema()
    start = T0.replace(minute=0, second=0)
    for event, device, address in _REAL:
        log.add(start, event, device, address=address)
    attacker = "127.0.0.2"
    per_hour = []
    for minute in range(48 * 60):
        now = start + timedelta(minutes=minute)
        for second in (1, 20, 40):
            at = now + timedelta(seconds=second)
            log.add(at, ComlogEvent.TOKEN_REQUESTED, "evil", address=attacker)
            log.add(at, ComlogEvent.TOKEN_EXPIRED, "evil", address=attacker)
            log.add(at, ComlogEvent.LOGIN_REQUESTED, "portal: evil", address=attacker)
            log.note_failure(at, attacker)
        if minute % 60 == 59:
            log.flush(now)
            per_hour.append(_rows_of(conn, attacker))
            log.prune(now + timedelta(seconds=59))
    log.flush()
    # between two prunes one hour adds its single rows and a folded row per minute and kind
    hour = ROWS_PER_ADDRESS + 60 * 4
    assert 200 < per_hour[0] <= hour
    assert max(per_hour) <= ADDRESS_KEPT + hour
    assert _rows_of(conn, attacker) <= ADDRESS_KEPT
    counted = conn.execute("SELECT sum(count) FROM comlog WHERE address = ?", (attacker,))
    assert counted.fetchone()[0] > 0
    shown = log.view(500)
    real = [(e.event, e.device, e.address) for e in shown if e.t == start and not e.folded]
    assert all(row in real for row in _REAL), real
    assert len(shown) <= 1000 and shown == sorted(shown, key=lambda e: (e.t, e.id))
    # what the portal showed before (the newest 500 of all) had none of them
    assert not any(e.t == start for e in log.entries(limit=500))


def _rows_of(conn: sqlite3.Connection, address: str) -> int:
    return int(
        conn.execute("SELECT count(*) FROM comlog WHERE address = ?", (address,)).fetchone()[0]
    )
