"""Durability: SIGKILL the gateway process while it writes history and serves
pairing, restart it, and find everything it had committed intact and the database sound.

Each round runs ``x1p1 gateway serve`` as a subprocess. A worker thread pairs devices in
a loop (token request over HTTPS, approval on the meter's control socket, the token
fetched) while the main thread reads what is committed: history and billing rows from
the database file (a read-only connection sees committed transactions only) and the
comlog over the control socket. Then SIGKILL, ``PRAGMA integrity_check``, and a restart
that must show every token, request, comlog entry, history row and billing signature seen
before. The first two rounds are killed early in the first start, in the backfill (the
second resumes it) or the signing of the billing readings; the later ones run the meters'
clock 600 times faster, so that history is written several times a second, and are
killed in the middle of that.

History rows may legitimately go in the meantime only by pruning: a row is required
afterwards unless retention at the latest meters' time any run could have reached has
passed it.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway_fixture import RunningGateway, gateway_process

from x1p1.exceptions import ControlError, X1Error
from x1p1.gateway.control_client import ControlClient
from x1p1.x1.billing_query import BILLING_RESOLUTION
from x1p1.x1.history import Resolution, oldest_kept
from x1p1.x1.obis import Meter

ROUNDS = ((1.0, 0.15), (1.0, 0.4), (600.0, 1.5), (600.0, 2.5))
"""(speed of the meters' clock, seconds after the start when SIGKILL comes)."""


@dataclass
class Committed:
    """What the gateway has answered for, so must keep."""

    requests: set[str] = field(default_factory=set)
    approved: set[str] = field(default_factory=set)
    tokens: dict[str, str] = field(default_factory=dict)
    comlog: dict[int, dict[str, Any]] = field(default_factory=dict)
    history: dict[tuple[str, str, int], tuple[Any, ...]] = field(default_factory=dict)
    billing: dict[tuple[str, int, str], tuple[Any, ...]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def pair_loop(gw: RunningGateway, seen: Committed, stop: threading.Event) -> None:
    """Ask, approve, fetch, again and again, until told to stop or the gateway dies."""
    control = ControlClient(gw.state_dir, timeout=5)
    try:
        while not stop.is_set():
            reply = gw.token_request(["E-HISTORIC", "P1"], name="durable", uuid=str(uuid.uuid4()))
            if reply.status != 202:
                continue
            request_id = reply.json["request_id"]
            with seen.lock:
                seen.requests.add(request_id)
            control.approve(request_id)
            with seen.lock:
                seen.approved.add(request_id)
            state = gw.request("GET", f"/api/tokens/requests/{request_id}").json
            if state and state.get("token"):
                with seen.lock:
                    seen.tokens[state["token"]] = request_id
    except (OSError, ControlError, X1Error):
        return  # killed mid-call
    finally:
        control.close()


def read_committed(db: Path, seen: Committed) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT * FROM history_readings").fetchall()
        billing = conn.execute("SELECT * FROM billing_readings").fetchall()
    except sqlite3.OperationalError:  # the tables are not there yet
        return
    finally:
        conn.close()
    with seen.lock:
        for row in rows:
            seen.history[(row[0], row[1], int(row[2]))] = tuple(row)
        for row in billing:
            seen.billing[(row[0], int(row[1]), row[2])] = tuple(row)


def read_comlog(gw: RunningGateway, seen: Committed) -> None:
    try:
        entries = gw.control.comlog(limit=100_000)
    except (ControlError, OSError):
        return
    with seen.lock:
        for entry in entries:
            seen.comlog[int(entry["id"])] = entry


def sim_bound(started: float, speed: float, until: float) -> datetime:
    """The latest meters' time a run started at wall time ``started`` can have shown by
    wall time ``until`` (its clock starts at the whole second at or after ``started``)."""
    anchor = math.floor(started)
    return datetime.fromtimestamp(anchor + speed * (until + 1 - anchor), UTC)


def check(gw: RunningGateway, seen: Committed, bound: datetime) -> None:
    """Everything seen before the kill is there."""
    for token in seen.tokens:
        assert gw.request("GET", "/api/token", token=token).status == 200
    by_request = {request_id: token for token, request_id in seen.tokens.items()}
    for request_id in seen.requests:
        state = gw.request("GET", f"/api/tokens/requests/{request_id}").json
        expected = {"approved"} if request_id in seen.approved else {"pending", "approved"}
        assert state["status"] in expected, (request_id, state)
        if state.get("token") and state["token"] != by_request.get(request_id):
            # a poll after a restart mints a new secret for the request (the first one
            # was never stored), which replaces the old: keep the new one
            seen.tokens.pop(by_request.get(request_id, ""), None)
            seen.tokens[state["token"]] = request_id
    now = {int(e["id"]): e for e in gw.control.comlog(limit=100_000)}
    for entry_id, entry in seen.comlog.items():
        assert entry_id in now, entry
        after = now[entry_id]
        if entry["event"] in ("api-use", "websocket-use"):
            assert after["count"] >= entry["count"]
            assert (after["t"], after["device"]) == (entry["t"], entry["device"])
        else:
            assert after == entry
    db = gw.state_dir / "gateway.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        for key, row in seen.history.items():
            meter, resolution, t = key
            got = conn.execute(
                "SELECT * FROM history_readings WHERE meter = ? AND resolution = ? AND t = ?", key
            ).fetchone()
            if got is None:
                kept = oldest_kept(Meter(meter), Resolution(resolution), bound)
                assert t < kept.timestamp(), (key, "lost, not pruned")
            else:
                assert tuple(got) == row
        for (meter, t, obis), row in seen.billing.items():
            got = conn.execute(
                "SELECT * FROM billing_readings WHERE meter = ? AND t = ? AND obis = ?",
                (meter, t, obis),
            ).fetchone()
            if got is None:
                kept = oldest_kept(Meter(meter), BILLING_RESOLUTION[Meter(meter)], bound)
                assert t < kept.timestamp(), ((meter, t, obis), "lost, not pruned")
            else:
                assert tuple(got) == row
    finally:
        conn.close()


def integrity(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_sigkill_while_writing_history_and_pairing_loses_nothing_committed(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "gw"
    db = state_dir / "gateway.db"
    seen = Committed()
    bound = datetime.fromtimestamp(time.time(), UTC)
    for number, (speed, kill_after) in enumerate(ROUNDS):
        started = time.time()
        with gateway_process(state_dir, "--speed", f"{speed:g}") as gw:
            assert gw.process is not None
            if number:
                check(gw, seen, max(bound, sim_bound(started, speed, time.time() + 5)))
            stop = threading.Event()
            worker = threading.Thread(
                target=pair_loop, args=(gw, seen, stop), name="x1p1-durability-pairing"
            )
            worker.start()
            try:
                deadline = time.monotonic() + kill_after
                while time.monotonic() < deadline:
                    read_committed(db, seen)
                    read_comlog(gw, seen)
                    time.sleep(0.05)
                os.kill(gw.process.pid, signal.SIGKILL)
                gw.process.wait(10)
                killed = time.time()
            finally:
                stop.set()
                worker.join(30)
            assert not worker.is_alive()
            bound = max(bound, sim_bound(started, speed, killed))
        integrity(db)
    assert len(seen.tokens) > 10 and seen.history and seen.billing and seen.comlog
    started = time.time()
    with gateway_process(state_dir) as gw:
        check(gw, seen, max(bound, sim_bound(started, 1.0, time.time() + 5)))
    integrity(db)
