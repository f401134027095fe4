"""The ledger in the gateway (x1p1.gateway.grants): persistence, migration, failed writes,
and a kill during the history block (§12.1).

- one transaction per change, memory changed only once it is on disk: with the database
  made to fail, every operation answers ``storage-unavailable`` (503) and leaves memory
  and disk as they were, across a restart too;
- a state directory made by the schema before the ledger (tables ``token_requests``,
  ``tokens``, ``portal_requests``, ``portal_sessions``) migrates: its tokens and sessions
  keep working;
- the block and the revocations it causes are one transaction: ``x1p1 gateway serve`` is
  killed with SIGKILL at moments spread over the block, in a loop, and the database
  always holds all of it or none of it."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import time
import uuid as uuid_module
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gateway_fixture import RunningGateway, default_meters, gateway_process, running_gateway
from reliability_support import write_figures
from test_portal_http import Client

from x1p1.exceptions import ControlError, StorageUnavailable
from x1p1.gateway.grants import GRANTS_MIGRATIONS, GatewayGrants
from x1p1.gateway.store import Store
from x1p1.gateway.streams import StreamHub
from x1p1.x1.api import TokenRequestBody
from x1p1.x1.grants import GrantKind, secret_digest

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _body(name: str = "dev") -> TokenRequestBody:
    return TokenRequestBody.parse(
        {"name": name, "uuid": str(uuid_module.uuid4()), "profiles": ["P1", "G-REALTIME"]}
    )


def _grants(store: Store, clock: Clock) -> GatewayGrants:
    hub = StreamHub(default_meters())  # no streams: the ledger closes none
    return GatewayGrants(store, hub, clock, lambda kind, **details: None)


@pytest.fixture
def ledger_store(tmp_path: Path) -> Iterator[tuple[Store, Clock]]:
    store = Store.open(tmp_path)
    yield store, Clock()
    store.close()


# --- persistence ---------------------------------------------------------------------------


def test_records_survive_reopening_and_no_secret_is_stored(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path)
    grants = _grants(store, clock)
    asked = grants.create_request(_body(), "192.168.1.20")
    grants.approve(asked.request_id)
    secret = grants.request_state(asked.request_id).token
    assert secret is not None
    waiting = grants.create_request(_body(), "192.168.1.21")
    store.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("gateway.db*"))
    assert secret.encode() not in raw and secret_digest(secret).encode() in raw

    store = Store.open(tmp_path)
    again = _grants(store, clock)
    assert again.authenticate(secret).kind is GrantKind.TOKEN
    [pending] = again.pending()
    assert pending.request_id == waiting.request_id and pending.code == waiting.code
    assert pending.address == "192.168.1.21"
    store.close()


def test_dropped_records_are_deleted(ledger_store: tuple[Store, Clock]) -> None:
    store, clock = ledger_store
    grants = _grants(store, clock)
    grants.create_request(_body(), "192.168.1.20")
    grants.deny()
    clock.now += timedelta(days=2)
    grants.maintain()
    assert store.conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)


# --- a failed write ----------------------------------------------------------------------------


def _rows(store: Store) -> list[tuple[object, ...]]:
    return [
        *store.conn.execute("SELECT * FROM requests ORDER BY request_id"),
        *store.conn.execute("SELECT * FROM grants ORDER BY grant_id"),
    ]


def test_a_failed_write_changes_neither_memory_nor_disk(
    ledger_store: tuple[Store, Clock],
) -> None:
    store, clock = ledger_store
    grants = _grants(store, clock)
    asked = grants.create_request(_body("dongle"), "192.168.1.20")
    grants.approve(asked.request_id)
    secret = grants.request_state(asked.request_id).token
    assert secret is not None
    token_id = grants.tokens()[0].grant_id
    waiting = grants.create_request(_body("meter reader"), "192.168.1.21")
    before = _rows(store)
    store.conn.execute("PRAGMA query_only = ON")  # every write now fails in SQLite
    with pytest.raises(StorageUnavailable):
        grants.revoke(token_id, "revoked in the portal")
    with pytest.raises(StorageUnavailable):
        grants.approve(waiting.request_id)
    with pytest.raises(StorageUnavailable):
        grants.create_request(_body("third"), "192.168.1.22")
    with pytest.raises(StorageUnavailable):
        grants.start_login("Firefox/130", "192.168.1.23")
    with pytest.raises(StorageUnavailable):
        grants.block_history(lambda: store.conn.execute("SELECT 1"), "history was blocked")
    # memory is as it was: the token works, the request still waits, nothing issued
    assert grants.authenticate(secret).grant_id == token_id
    assert [r.request_id for r in grants.pending()] == [waiting.request_id]
    assert grants.request_state(waiting.request_id).token is None
    store.conn.execute("PRAGMA query_only = OFF")
    assert _rows(store) == before
    # and the retry works, once the storage does
    assert grants.revoke(token_id, "revoked in the portal").grant_id == token_id
    store.close()
    store = Store.open(store.path.parent)
    again = _grants(store, clock)
    assert again.tokens() == []
    store.close()


def test_a_full_disk_answers_503_and_a_restart_shows_the_truth(tmp_path: Path) -> None:
    """The gateway's whole stack, with its database made to fail (as a full disk or a
    read-only file system does): the API and the meter answer 503 storage-unavailable;
    a revoked token stays revoked across a restart, and an approval that failed to save
    hands out no token."""
    state = tmp_path / "gw"
    with running_gateway(state) as gw:
        token = gw.pair(["P1"], name="dongle")
        token_id = gw.control.tokens()[0]["token_id"]
        asked = gw.token_request(["P1"], name="second").json
        gw.call(lambda g: g.state.store.conn.execute("PRAGMA query_only = ON"))
        with pytest.raises(StorageUnavailable, match="nothing changed"):
            gw.control.revoke(token_id)
        with pytest.raises(StorageUnavailable):
            gw.control.approve(asked["request_id"])
        reply = gw.token_request(["P1"], name="third")
        assert reply.status == 503 and reply.json["error"] == "storage-unavailable"
        state_now = gw.request("GET", f"/api/tokens/requests/{asked['request_id']}").json
        assert state_now["status"] == "pending" and "token" not in state_now
        assert gw.request("GET", "/api/token", token=token).status == 200
        gw.call(lambda g: g.state.store.conn.execute("PRAGMA query_only = OFF"))
        assert gw.control.revoke(token_id)["device"]["status"] == "revoked"
        assert gw.request("GET", "/api/token", token=token).status == 401
    with running_gateway(state) as gw:
        assert gw.request("GET", "/api/token", token=token).status == 401
        state_now = gw.request("GET", f"/api/tokens/requests/{asked['request_id']}").json
        assert state_now["status"] == "pending"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that can really fill up (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = 65536
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2
    finally:
        os.close(fd)
    return filler


def test_a_really_full_disk_changes_neither_memory_nor_disk(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    store = Store.open(tiny_disk)
    grants = _grants(store, clock)
    asked = grants.create_request(_body("dongle"), "192.168.1.20")
    grants.approve(asked.request_id)
    secret = grants.request_state(asked.request_id).token
    assert secret is not None
    token_id = grants.tokens()[0].grant_id
    waiting = grants.create_request(_body("meter reader"), "192.168.1.21")
    before = _rows(store)
    filler = _fill(tiny_disk)
    failures = 0
    for attempt in (
        lambda: grants.revoke(token_id, "revoked in the portal"),
        lambda: grants.approve(waiting.request_id),
        lambda: grants.create_request(_body("third"), "192.168.1.22"),
    ):
        try:
            attempt()
        except StorageUnavailable:
            failures += 1
    assert failures == 3, "every write on a full disk fails"
    assert caplog.text.count("refused a change") == 1  # logged once a minute, not per call
    assert grants.authenticate(secret).grant_id == token_id
    assert [r.request_id for r in grants.pending()] == [waiting.request_id]
    assert grants.request_state(waiting.request_id).token is None
    assert _rows(store) == before
    filler.unlink()
    assert grants.revoke(token_id, "revoked in the portal").grant_id == token_id
    store.close()
    store = Store.open(tiny_disk)
    assert _grants(store, clock).tokens() == []
    store.close()


# --- migrating a state directory of the schema before the ledger ----------------------------

OLD_SCHEMA = """
CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
INSERT INTO schema_versions VALUES ('pairing', 1), ('portal', 1);
CREATE TABLE token_requests (
    request_id TEXT PRIMARY KEY, name TEXT NOT NULL, uuid TEXT NOT NULL,
    asked TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL,
    decided_at TEXT, granted TEXT, token_id TEXT
);
CREATE INDEX token_requests_uuid ON token_requests (uuid);
CREATE TABLE tokens (
    token_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    uuid TEXT NOT NULL, profiles TEXT NOT NULL, created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL, status TEXT NOT NULL, last_used TEXT, renewed_at TEXT,
    request_id TEXT, ended_at TEXT
);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE portal_requests (
    request_id TEXT PRIMARY KEY, kind TEXT NOT NULL, user_agent TEXT NOT NULL,
    created_at TEXT NOT NULL, status TEXT NOT NULL, secret_digest TEXT,
    session_id TEXT, decided_at TEXT, decided_by TEXT
);
CREATE TABLE portal_sessions (
    session_id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, user_agent TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_at TEXT NOT NULL, status TEXT NOT NULL,
    last_used TEXT, renewed_at TEXT, elevated_until TEXT, request_id TEXT, ended_at TEXT
);
"""
"""The tables as x1p1 made them before the ledger (components "pairing" and "portal",
version 1 each), copied from that version's ``gateway/store.py`` and
``gateway/sessions.py``."""

TOKEN = "A" * 42 + "w"
COOKIE = "B" * 42 + "w"


def _old_database(path: Path, now: datetime) -> None:
    conn = sqlite3.connect(path / "gateway.db", isolation_level=None)
    conn.executescript(OLD_SCHEMA)
    t = now.isoformat
    later = (now + timedelta(days=90)).isoformat()
    conn.execute(
        "INSERT INTO token_requests VALUES ('a1', 'dongle', ?, 'P1', ?, 'approved', ?, "
        "'P1', 'ffff000011112222')",
        (str(uuid_module.uuid4()), t(), t()),
    )
    conn.execute(
        "INSERT INTO token_requests VALUES ('b2', 'waiting', ?, 'P1,E-REALTIME', ?, "
        "'pending', NULL, NULL, NULL)",
        (str(uuid_module.uuid4()), t()),
    )
    conn.execute(
        "INSERT INTO tokens VALUES ('ffff000011112222', ?, 'dongle', ?, 'P1', ?, ?, "
        "'active', NULL, ?, 'a1', NULL)",
        (secret_digest(TOKEN), str(uuid_module.uuid4()), t(), later, t()),
    )
    conn.execute(
        "INSERT INTO portal_requests VALUES ('-Xy_login', 'login', 'Firefox/130', ?, "
        "'claimed', NULL, '0123456789abcdef', ?, 'meter')",
        (t(), t()),
    )
    conn.execute(
        "INSERT INTO portal_sessions VALUES ('0123456789abcdef', ?, 'Firefox/130', ?, ?, "
        "'active', ?, ?, NULL, '-Xy_login', NULL)",
        (secret_digest(COOKIE), t(), later, t(), t()),
    )
    conn.execute("INSERT INTO settings VALUES ('x1_enabled', 'true')")
    conn.close()


def test_a_state_directory_of_the_previous_schema_migrates(tmp_path: Path) -> None:
    clock = Clock()
    _old_database(tmp_path, clock.now)
    store = Store.open(tmp_path)
    grants = _grants(store, clock)
    token = grants.authenticate(TOKEN)
    assert token.kind is GrantKind.TOKEN and token.name == "dongle"
    session = grants.authenticate(COOKIE)
    assert session.kind is GrantKind.SESSION and session.label == "portal: Firefox 130"
    uuid_module.UUID(session.uuid)
    [waiting] = grants.pending()
    assert waiting.request_id == "b2" and len(waiting.code) == 4 and waiting.code.isdigit()
    tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
    assert not tables & {"token_requests", "tokens", "portal_requests", "portal_sessions"}
    versions = dict(store.conn.execute("SELECT component, version FROM schema_versions"))
    assert versions == {"pairing": 1, "grants": len(GRANTS_MIGRATIONS)}
    assert store.get_setting("x1_enabled") is True
    store.close()
    store = Store.open(tmp_path)  # and a second start finds it migrated
    assert _grants(store, clock).authenticate(TOKEN).grant_id == token.grant_id
    store.close()


def test_the_migrated_gateway_serves_the_old_token(tmp_path: Path) -> None:
    state = tmp_path / "gw"
    state.mkdir(mode=0o700)
    _old_database(state, datetime.now(UTC))
    with gateway_process(state) as gw:
        assert gw.request("GET", "/api/token", token=TOKEN).json["name"] == "dongle"
        assert [r["request_id"] for r in gw.control.requests()] == ["b2"]


# --- a SIGKILL during the block ---------------------------------------------------------------

KILLS = int(os.environ.get("X1P1_BLOCK_KILLS", "12"))


def _block_and_kill(gw: RunningGateway, delay: float) -> None:
    """Send ``block-history`` on the control socket and SIGKILL the gateway ``delay``
    seconds after the line went out."""
    assert gw.process is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(gw.state_dir / "control.sock"))
        sock.sendall(b'{"command": "block-history"}\n')
        sent = time.monotonic()
        while time.monotonic() - sent < delay:
            pass  # a busy wait: sleep() overshoots by more than the block lasts
        gw.process.send_signal(signal.SIGKILL)
    gw.process.wait(10)


def _on_disk(state: Path) -> tuple[bool, int, int]:
    """(history blocked, active grants, pending requests), read from the database."""
    conn = sqlite3.connect(state / "gateway.db")
    try:
        blocked = conn.execute("SELECT 1 FROM history_meta WHERE key = 'blocked'").fetchone()
        active = conn.execute("SELECT count(*) FROM grants WHERE state = 'active'").fetchone()
        pending = conn.execute("SELECT count(*) FROM requests WHERE state = 'pending'").fetchone()
    finally:
        conn.close()
    return blocked is not None, int(active[0]), int(pending[0])


@pytest.mark.slow
def test_a_sigkill_during_the_block_leaves_all_of_it_or_none(tmp_path: Path) -> None:
    rng = random.Random(1201)
    outcomes = {"done": 0, "none": 0}
    durations: list[float] = []
    for round_ in range(KILLS):
        state = tmp_path / f"gw{round_}"
        with gateway_process(state, "--seed", "3") as gw:
            for i in range(3):
                gw.pair(["P1"], name=f"dongle {i}")
            Client(gw).log_in()
            gw.token_request(["P1"], name="waiting")
            started = time.monotonic()
            if round_ == 0:  # one whole block, to know how long it takes here
                gw.control.block_history()
                durations.append(time.monotonic() - started)
                continue
            high = max(durations[0] * 1.5, 0.002)
            _block_and_kill(gw, rng.uniform(0.0, high))
        blocked, active, pending = _on_disk(state)
        if blocked:
            assert (active, pending) == (0, 0), f"round {round_}: blocked, grants still active"
            outcomes["done"] += 1
        else:
            assert (active, pending) == (4, 1), f"round {round_}: not blocked, grants ended"
            outcomes["none"] += 1
    write_figures(
        {
            "kills": KILLS - 1,
            "block_seconds": round(durations[0], 4),
            "blocked_and_all_revoked": outcomes["done"],
            "neither": outcomes["none"],
            "half_done": 0,
        },
        "block_kill",
    )
    assert outcomes["done"] + outcomes["none"] == KILLS - 1


def test_the_control_socket_registers_each_command_once(tmp_path: Path) -> None:
    from x1p1.gateway.control import ControlServer

    with running_gateway(tmp_path / "gw") as gw:
        server = gw.call(lambda g: g._control)
        assert isinstance(server, ControlServer)
        with pytest.raises(ValueError, match="registered already"):
            server.register("approve", lambda args: {})
        with pytest.raises(ControlError) as caught:
            gw.control.call("nonsense")
        known = str(caught.value).split("known: ")[1].split(", ")
        assert sorted(set(known)) == known
        assert {"list", "approve", "deny", "devices", "revoke", "block-history"} <= set(known)
