"""History: Table 8 retention and counts, the calendar, restart gaps, pruning, the block,
and the measurements query (X1 §7.3, §8.1, §11, §12.1, §12.2; x1-api.md, REST)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from x1p1.exceptions import BadRequest, ForbiddenProfile
from x1p1.gateway.history import HistoryStore
from x1p1.x1.api import format_time
from x1p1.x1.history import (
    LOCAL_ZONE,
    RETENTION,
    TABLE_8,
    MeasurementsQuery,
    Resolution,
    Retention,
    ceil_end,
    floor_end,
    interval_ends,
    interval_start,
    is_end,
    measurements_response,
    next_end,
    oldest_kept,
    parse_measurements_query,
    resolutions,
    shift,
)
from x1p1.x1.obis import OBJECTS, Meter
from x1p1.x1.profiles import Profile

E, G = Meter.ELECTRICITY, Meter.GAS
R = Resolution
GAS_CODE = "0-1:24.2.1.255"
E_CODES = [obj.code for obj in OBJECTS if obj.historic and obj.meter is E]
ALL_PROFILES = frozenset(Profile)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


class StandIn:
    """A deterministic stand-in for the meter simulation: every register grows with
    time, each at its own rate, and non-historic objects come along as a real one's do."""

    def __init__(self) -> None:
        self.calls = 0

    def registers(self, at: datetime) -> dict[str, float]:
        self.calls += 1
        hours = at.timestamp() / 3600.0
        out: dict[str, float] = {
            code: round(hours * (n + 1) * 0.0125, 6) for n, code in enumerate(E_CODES)
        }
        out[GAS_CODE] = round(hours * 0.04321, 6)
        out["1-0:1.7.0.255"] = 1.234  # realtime power: never history
        out["0-0:96.14.0.255"] = 2.0
        return out


class BulkStandIn(StandIn):
    """The same, with the simulation's bulk ``interval_registers`` (``start < t <= end``)."""

    def __init__(self) -> None:
        super().__init__()
        self.bulk_calls = 0

    def interval_registers(
        self, start: datetime, end: datetime, step: timedelta
    ) -> Iterator[tuple[datetime, dict[str, float]]]:
        self.bulk_calls += 1
        t = start + step
        while t <= end:
            yield t, self.registers(t)
            t += step


def expected(sim: StandIn, meter: Meter, t: datetime) -> dict[str, float]:
    values = sim.registers(t)
    if meter is G:
        return {GAS_CODE: round(values[GAS_CODE], 3)}
    out: dict[str, float] = {}
    for obj in OBJECTS:
        if obj.historic and obj.meter is E:
            v = values[obj.code]
            out[obj.code] = round(v, obj.decimals) if obj.decimals else round(v)
    return out


def codes_of(meter: Meter) -> tuple[str, ...]:
    return (GAS_CODE,) if meter is G else tuple(E_CODES)


def everything(meter: Meter, resolution: Resolution) -> MeasurementsQuery:
    return MeasurementsQuery(meter, resolution, codes_of(meter), utc(1970, 1, 2), utc(8999, 1, 1))


def open_store(path: Path) -> HistoryStore:
    store = HistoryStore(sqlite3.connect(path))
    store.init_schema()
    return store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gateway.sqlite3"


NOW = utc(2026, 5, 9, 12, 7, 31)


@pytest.fixture
def filled(db: Path) -> HistoryStore:
    store = open_store(db)
    store.backfill(StandIn(), NOW)
    return store


# --- Table 8 --------------------------------------------------------------------------


def test_table_8() -> None:
    rows = [(row.meter, row.resolution.value, row.period, row.count) for row in TABLE_8]
    assert rows == [
        (E, "15m", "7 days", 672),
        (E, "1h", "30 days", 720),
        (E, "1d", "24 months", 730),
        (E, "1M", "60 months", 60),
        (G, "5m", "1 hour", 12),
        (G, "1h", "30 days", 720),
        (G, "1d", "24 months", 730),
        (G, "1M", "60 months", 60),
    ]
    assert [r.resolution.value for r in resolutions(G)] == ["5m", "1h", "1d", "1M"]
    assert RETENTION[(E, R.DAY)].to_json() == {
        "resolution": "1d",
        "retention": "24 months",
        "max_values": 730,
    }


# --- the calendar -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resolution", "moment", "floor"),
    [
        (R.MIN5, utc(2026, 5, 9, 12, 7, 31), utc(2026, 5, 9, 12, 5)),
        (R.MIN15, utc(2026, 5, 9, 12, 7, 31), utc(2026, 5, 9, 12, 0)),
        (R.MIN15, utc(2026, 5, 9, 12, 15), utc(2026, 5, 9, 12, 15)),
        (R.HOUR, utc(2026, 5, 9, 12, 59, 59), utc(2026, 5, 9, 12)),
        # Local midnight: 22:00Z in summer time, 23:00Z in winter time.
        (R.DAY, utc(2026, 5, 9, 12), utc(2026, 5, 8, 22)),
        (R.DAY, utc(2026, 5, 9, 21, 59), utc(2026, 5, 8, 22)),
        (R.DAY, utc(2026, 5, 9, 22), utc(2026, 5, 9, 22)),
        (R.DAY, utc(2026, 1, 9, 23, 30), utc(2026, 1, 9, 23)),
        (R.MONTH, utc(2026, 5, 9, 12), utc(2026, 4, 30, 22)),
        (R.MONTH, utc(2026, 1, 15), utc(2025, 12, 31, 23)),
        (R.MONTH, utc(2025, 12, 31, 23), utc(2025, 12, 31, 23)),
        (R.MONTH, utc(2025, 12, 31, 22, 59), utc(2025, 11, 30, 23)),
    ],
)
def test_floor_end(resolution: Resolution, moment: datetime, floor: datetime) -> None:
    assert floor_end(resolution, moment) == floor
    assert is_end(resolution, floor)
    assert next_end(resolution, moment) > moment
    assert ceil_end(resolution, floor) == floor


def test_days_are_local_calendar_days_with_23_and_25_hours() -> None:
    # DST starts on 29 March 2026 and ends on 25 October 2026 in the Netherlands.
    spring = list(interval_ends(R.DAY, utc(2026, 3, 27), utc(2026, 3, 31)))
    assert [format_time(t) for t in spring] == [
        "2026-03-27T23:00:00Z",
        "2026-03-28T23:00:00Z",
        "2026-03-29T22:00:00Z",
        "2026-03-30T22:00:00Z",
    ]
    assert spring[2] - interval_start(R.DAY, spring[2]) == timedelta(hours=23)
    autumn = list(interval_ends(R.DAY, utc(2026, 10, 24), utc(2026, 10, 26)))
    assert autumn[1] - autumn[0] == timedelta(hours=25)
    assert all(t.astimezone(LOCAL_ZONE).hour == 0 for t in spring + autumn)


def test_months_are_local_calendar_months() -> None:
    ends = list(interval_ends(R.MONTH, utc(2025, 12, 1), utc(2026, 5, 1)))
    local = [t.astimezone(LOCAL_ZONE) for t in ends]
    assert [(d.year, d.month, d.day, d.hour) for d in local] == [
        (2026, 1, 1, 0),
        (2026, 2, 1, 0),
        (2026, 3, 1, 0),
        (2026, 4, 1, 0),
        (2026, 5, 1, 0),
    ]
    assert shift(R.MONTH, ends[0], -13).astimezone(LOCAL_ZONE).date().isoformat() == "2024-12-01"
    assert shift(R.MONTH, ends[0], 12) == utc(2026, 12, 31, 23)


def test_interval_ends_are_inclusive_at_both_edges() -> None:
    ends = list(interval_ends(R.HOUR, utc(2026, 5, 9), utc(2026, 5, 10)))
    assert len(ends) == 25
    assert ends[0] == utc(2026, 5, 9) and ends[-1] == utc(2026, 5, 10)
    assert list(interval_ends(R.HOUR, utc(2026, 5, 9, 0, 0, 1), utc(2026, 5, 9, 0, 59))) == []


def test_shift_refuses_a_time_that_is_no_end() -> None:
    with pytest.raises(ValueError):
        shift(R.MIN15, utc(2026, 5, 9, 12, 1), 1)
    with pytest.raises(ValueError):
        floor_end(R.HOUR, datetime(2026, 5, 9))


@pytest.mark.parametrize("row", TABLE_8, ids=lambda r: f"{r.meter.value}-{r.resolution.value}")
def test_oldest_kept_leaves_exactly_the_count(row: Retention) -> None:
    for now in (NOW, utc(2026, 3, 29, 1, 30), utc(2026, 10, 25, 1, 30), utc(2028, 2, 29, 23)):
        first = oldest_kept(row.meter, row.resolution, now)
        ends = list(interval_ends(row.resolution, first, now))
        assert len(ends) == row.count


# --- backfill: retention and counts of every resolution of both meters ------------------


@pytest.mark.parametrize("row", TABLE_8, ids=lambda r: f"{r.meter.value}-{r.resolution.value}")
def test_backfill_fills_every_resolution_to_its_count(filled: HistoryStore, row: Retention) -> None:
    meter, resolution, count = row.meter, row.resolution, row.count
    ends = filled.ends(meter, resolution)
    assert len(ends) == count == filled.count(meter, resolution)
    assert ends[-1] == floor_end(resolution, NOW)
    assert ends == list(interval_ends(resolution, ends[0], ends[-1]))  # no holes
    readings = filled.query(everything(meter, resolution))
    assert len(readings) == count
    sim = StandIn()
    for t, values in (readings[0], readings[len(readings) // 2], readings[-1]):
        assert values == expected(sim, meter, t)


def test_backfill_agrees_with_the_registers_now(filled: HistoryStore) -> None:
    t, values = filled.query(everything(G, R.MIN5))[-1]
    assert t == utc(2026, 5, 9, 12, 5)
    assert values == {GAS_CODE: round(StandIn().registers(t)[GAS_CODE], 3)}
    counters = filled.query(everything(E, R.MIN15))[-1][1]
    assert isinstance(counters["0-0:96.7.21.255"], int)  # Numeric(3,0): a count
    assert "1-0:1.7.0.255" not in counters  # realtime power is not history


def test_backfill_happens_once(db: Path) -> None:
    store = open_store(db)
    first = store.backfill(StandIn(), NOW)
    assert first == sum(row.count for row in TABLE_8)
    again = open_store(db)
    assert again.backfill(StandIn(), NOW + timedelta(days=3)) == 0
    assert again.born() == NOW.replace(microsecond=0)


def test_a_backfill_cut_short_resumes_up_to_born_only(db: Path) -> None:
    store = open_store(db)

    class Dies(StandIn):
        def registers(self, at: datetime) -> dict[str, float]:
            if at > NOW - timedelta(days=3) and at.minute == 0 and at.hour == 5:
                raise RuntimeError("power cut")
            return super().registers(at)

    with pytest.raises(RuntimeError):
        store.backfill(Dies(), NOW)
    assert store.count(E, R.MIN15) == 0  # that resolution's transaction rolled back
    later = NOW + timedelta(days=1)
    again = open_store(db)
    again.backfill(StandIn(), later)
    ends = again.ends(E, R.MIN15)
    assert ends[-1] == floor_end(R.MIN15, NOW)  # nothing of the day it was down
    assert ends[0] == oldest_kept(E, R.MIN15, later)


def test_bulk_interval_registers_give_the_same_history(tmp_path: Path) -> None:
    a, b = open_store(tmp_path / "a.db"), open_store(tmp_path / "b.db")
    plain, bulk = StandIn(), BulkStandIn()
    a.backfill(plain, NOW)
    b.backfill(bulk, NOW)
    assert bulk.bulk_calls > 0
    assert bulk.calls <= plain.calls  # the bulk pass read what was needed, once
    for row in TABLE_8:
        q = everything(row.meter, row.resolution)
        assert a.query(q) == b.query(q)


def test_backfill_reads_each_register_once(db: Path) -> None:
    sim = StandIn()
    open_store(db).backfill(sim, NOW)
    # One register read per distinct interval end, shared across resolutions and meters.
    distinct = set()
    for row in TABLE_8:
        distinct |= set(
            interval_ends(row.resolution, oldest_kept(row.meter, row.resolution, NOW), NOW)
        )
    assert sim.calls == len(distinct)


# --- recording while running; gaps after a stop (§12.2) ---------------------------------


def test_record_due_records_each_end_once(filled: HistoryStore) -> None:
    sim = StandIn()
    now = NOW
    for _ in range(40):  # 40 calls 37 s apart: 24 minutes
        now += timedelta(seconds=37)
        filled.record_due(sim, now)
    ends = filled.ends(G, R.MIN5)
    assert len(ends) == 12
    assert ends[-1] == floor_end(R.MIN5, now)
    assert ends == list(interval_ends(R.MIN5, ends[0], ends[-1]))
    e15 = filled.ends(E, R.MIN15)
    assert len(e15) == 672 and e15[-1] == floor_end(R.MIN15, now)
    assert filled.query(everything(E, R.MIN15))[-1][1] == expected(sim, E, e15[-1])


def test_a_late_call_catches_up_but_never_before_the_start(db: Path) -> None:
    store = open_store(db)
    sim = StandIn()
    started = utc(2026, 5, 9, 12, 7)
    store.start(started)
    assert store.record_due(sim, started + timedelta(hours=2)) > 0
    hours = store.ends(E, R.HOUR)
    assert hours == list(interval_ends(R.HOUR, started, started + timedelta(hours=2)))
    assert store.ends(E, R.MIN15)[0] == utc(2026, 5, 9, 12, 15)


def test_nothing_is_recorded_for_intervals_that_ended_while_stopped(db: Path) -> None:
    sim = StandIn()
    first = open_store(db)
    first.backfill(sim, NOW)
    running = NOW
    for _ in range(10):
        running += timedelta(minutes=3)
        first.record_due(sim, running)
    last_before_stop = floor_end(R.MIN15, running)
    del first  # the gateway stops (or is killed) at `running`

    restart = running + timedelta(hours=11, minutes=2)  # down over local midnight
    second = open_store(db)
    assert second.backfill(sim, restart) == 0  # never a second backfill
    now = restart
    for _ in range(30):
        now += timedelta(minutes=1)
        second.record_due(sim, now)

    ends = second.ends(E, R.MIN15)
    gap = [t for t in ends if last_before_stop < t < restart]
    assert gap == []
    after = [t for t in ends if t >= restart]
    assert after == list(interval_ends(R.MIN15, restart, now))
    assert after  # and recording resumed
    # The local midnight of 9/10 May passed while stopped: that day's reading is absent.
    midnight = utc(2026, 5, 9, 22)
    assert last_before_stop < midnight < restart
    assert midnight not in second.ends(E, R.DAY)
    assert midnight not in second.ends(G, R.HOUR)
    assert floor_end(R.HOUR, running) in second.ends(G, R.HOUR)
    # Absent, not zero: the query leaves the gap out.
    q = MeasurementsQuery(E, R.MIN15, ("1-0:1.8.1.255",), running, now)
    got = [t for t, _ in second.query(q)]
    assert got == [t for t in ends if running <= t <= now]


def test_gas_history_after_a_stop_longer_than_its_retention(db: Path) -> None:
    sim = StandIn()
    store = open_store(db)
    store.backfill(sim, NOW)
    later = open_store(db)
    restart = NOW + timedelta(hours=3)
    later.start(restart)
    later.record_due(sim, restart + timedelta(minutes=12))
    later.prune(restart + timedelta(minutes=12))
    ends = later.ends(G, R.MIN5)
    assert ends == list(interval_ends(R.MIN5, restart, restart + timedelta(minutes=12)))
    assert [format_time(t) for t in ends] == ["2026-05-09T15:10:00Z", "2026-05-09T15:15:00Z"]


# --- pruning -----------------------------------------------------------------------------


def test_prune_keeps_exactly_the_table_8_count(filled: HistoryStore) -> None:
    later = NOW + timedelta(days=40)
    gone = filled.prune(later)
    assert gone > 0
    for row in TABLE_8:
        ends = filled.ends(row.meter, row.resolution)
        assert not ends or ends[0] >= oldest_kept(row.meter, row.resolution, later)
    assert filled.count(G, R.MIN5) == 0
    assert filled.count(E, R.MIN15) == 0
    assert filled.count(E, R.HOUR) == 0  # 30 days
    assert filled.count(E, R.DAY) == 730 - 40
    assert filled.count(E, R.MONTH) == 59  # the month of May ended within 40 days
    assert filled.prune(later) == 0


def test_query_never_returns_more_than_the_count(filled: HistoryStore) -> None:
    # Rows older than retention that pruning has not reached yet are not returned either.
    old = shift(R.MIN5, oldest_kept(G, R.MIN5, NOW), -5)
    filled.record(G, R.MIN5, old, {GAS_CODE: 1.0})
    readings = filled.query(everything(G, R.MIN5))
    assert len(readings) == 12 and readings[0][0] > old
    assert json.loads(filled.query_json(everything(G, R.MIN5)))[0]["t"] == format_time(
        readings[0][0]
    )


# --- the history block (§11, §12.1) ------------------------------------------------------


def test_block_is_irreversible_across_reopening(db: Path) -> None:
    sim = StandIn()
    store = open_store(db)
    store.backfill(sim, NOW)
    blocked = store.block(NOW + timedelta(minutes=1))
    assert blocked == NOW.replace(microsecond=0) + timedelta(minutes=1)
    for row in TABLE_8:
        assert store.query(everything(row.meter, row.resolution)) == []
        assert store.count(row.meter, row.resolution) == 0  # deleted, not hidden
    store.conn.close()

    conn = sqlite3.connect(db)
    reopened = HistoryStore(conn)
    reopened.init_schema()
    assert reopened.blocked_at() == blocked
    with pytest.raises(sqlite3.IntegrityError, match="cannot be undone"):
        with conn:
            conn.execute("DELETE FROM history_meta WHERE key = 'blocked'")
    with pytest.raises(sqlite3.IntegrityError, match="cannot be undone"):
        with conn:
            conn.execute("UPDATE history_meta SET value = 0 WHERE key = 'blocked'")
    # An earlier block cannot move it back; a later one moves it forward.
    assert reopened.block(NOW) == blocked
    # Nothing at or before the block can be stored again, by any path.
    assert reopened.record(E, R.MIN15, floor_end(R.MIN15, blocked), expected(sim, E, NOW)) == 0
    assert reopened.backfill(sim, NOW) == 0
    assert reopened.count(E, R.MIN15) == 0

    # New history accrues from the moment of the block on.
    reopened.start(blocked)
    reopened.record_due(sim, blocked + timedelta(hours=1))
    ends = reopened.ends(E, R.MIN15)
    assert ends == list(interval_ends(R.MIN15, blocked, blocked + timedelta(hours=1)))
    assert all(t > blocked for t in ends)
    assert reopened.ends(E, R.DAY) == []


def test_a_fresh_gateway_blocked_before_backfill_backfills_nothing_old(db: Path) -> None:
    store = open_store(db)
    store.block(NOW)
    store.backfill(StandIn(), NOW)
    for row in TABLE_8:
        assert store.count(row.meter, row.resolution) == 0


def test_rows_from_before_a_block_in_the_file_are_gone(db: Path) -> None:
    store = open_store(db)
    store.record(G, R.HOUR, utc(2026, 5, 9, 11), {GAS_CODE: 4242.125})
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert struct.pack(">d", 4242.125) in db.read_bytes()
    store.block(NOW)  # the gateway goes on running: the file must be clean already
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    assert struct.pack(">d", 4242.125) not in raw


# --- record() ----------------------------------------------------------------------------


def test_record_checks_its_arguments(db: Path) -> None:
    store = open_store(db)
    with pytest.raises(ValueError, match="interval end"):
        store.record(E, R.MIN15, utc(2026, 5, 9, 12, 1), {"1-0:1.8.1.255": 1.0})
    with pytest.raises(ValueError, match="no 5m history"):
        store.record(E, R.MIN5, utc(2026, 5, 9, 12, 5), {"1-0:1.8.1.255": 1.0})
    with pytest.raises(ValueError, match="historic objects"):
        store.record(E, R.MIN15, utc(2026, 5, 9, 12), {GAS_CODE: 1.0})
    with pytest.raises(ValueError, match="historic objects"):
        store.record(G, R.HOUR, utc(2026, 5, 9, 12), {"0-0:96.1.1.255": 1.0})
    assert store.record(G, R.HOUR, utc(2026, 5, 9, 12), {GAS_CODE: 1.23456}) == 1
    assert store.record(G, R.HOUR, utc(2026, 5, 9, 12), {GAS_CODE: 9.0}) == 0  # kept first
    q = MeasurementsQuery(G, R.HOUR, (GAS_CODE,), utc(2026, 5, 9), utc(2026, 5, 10))
    assert store.query(q) == [(utc(2026, 5, 9, 12), {GAS_CODE: 1.235})]


def test_a_reading_without_some_objects_leaves_them_out(db: Path) -> None:
    store = open_store(db)
    t = utc(2026, 5, 9, 12)
    store.record(E, R.HOUR, t, {"1-0:1.8.1.255": 5.5})
    q = MeasurementsQuery(E, R.HOUR, ("1-0:1.8.1.255", "1-0:1.8.2.255"), t, t)
    assert store.query(q) == [(t, {"1-0:1.8.1.255": 5.5})]
    assert json.loads(store.query_json(q)) == [
        {"t": "2026-05-09T12:00:00Z", "values": {"1-0:1.8.1.255": 5.5}}
    ]
    only_missing = MeasurementsQuery(E, R.HOUR, ("1-0:1.8.2.255",), t, t)
    assert store.query(only_missing) == []
    assert store.query_json(only_missing) == "[]"


def test_query_json_is_query_as_json(filled: HistoryStore) -> None:
    for row in TABLE_8:
        q = MeasurementsQuery(
            row.meter, row.resolution, codes_of(row.meter)[:4], utc(2025, 1, 1), NOW
        )
        readings = filled.query(q)
        body = json.loads(filled.query_json(q))
        assert body == [{"t": format_time(t), "values": v} for t, v in readings]
        assert all(list(item["values"]) == list(q.codes) for item in body)
        whole = json.loads(filled.response_text("E0001", q))
        assert whole == measurements_response("E0001", q, readings)
        assert list(whole) == ["equipment_id", "resolution", "from", "to", "units", "readings"]


# --- durability --------------------------------------------------------------------------


def test_wal_and_full_sync(db: Path) -> None:
    store = open_store(db)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_sigkill_while_recording_loses_no_committed_reading(db: Path) -> None:
    child = textwrap.dedent(
        f"""
        import sqlite3, sys
        from datetime import timedelta
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_history import StandIn, NOW
        from x1p1.gateway.history import HistoryStore
        store = HistoryStore(sqlite3.connect({str(db)!r}))
        store.init_schema()
        store.backfill(StandIn(), NOW)
        now = NOW
        while True:
            now += timedelta(minutes=5)
            store.record_due(StandIn(), now)
            print(now.timestamp(), flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    committed = [float(proc.stdout.readline()) for _ in range(50)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last = datetime.fromtimestamp(committed[-1], UTC)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = HistoryStore(conn)
    ends = store.ends(G, R.MIN5)
    assert floor_end(R.MIN5, last) in ends
    e15 = store.ends(E, R.MIN15)
    assert e15[-1] >= floor_end(R.MIN15, last)
    assert e15 == list(interval_ends(R.MIN15, e15[0], e15[-1]))


# --- the measurements query's parameters -------------------------------------------------


def params(**kw: str) -> dict[str, str]:
    base = {
        "obis": "1-0:1.8.1.255",
        "resolution": "1d",
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-02-01T00:00:00+01:00",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v != "-"}


def test_a_good_query() -> None:
    q = parse_measurements_query(
        params(obis="1-0:1.8.1.255, 1-0:2.8.1, 0-0:96.7.21.255,1-0:1.8.1.255"), E, ALL_PROFILES
    )
    assert q.meter is E and q.resolution is R.DAY
    assert q.codes == ("1-0:1.8.1.255", "1-0:2.8.1.255", "0-0:96.7.21.255")
    assert q.start == utc(2026, 1, 1) and q.end == utc(2026, 1, 31, 23)
    g = parse_measurements_query(params(obis=GAS_CODE, resolution="5m"), G, {Profile.G_HISTORIC})
    assert g.codes == (GAS_CODE,) and g.resolution is R.MIN5
    assert q.response_head("E1") == {
        "equipment_id": "E1",
        "resolution": "1d",
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-31T23:00:00Z",
        "units": {"1-0:1.8.1.255": "kWh", "1-0:2.8.1.255": "kWh", "0-0:96.7.21.255": None},
    }


@pytest.mark.parametrize(
    ("changes", "meter", "field", "words"),
    [
        ({"obis": "-"}, E, "obis", "missing"),
        ({"obis": ""}, E, "obis", "missing"),
        ({"obis": "1-0:1.8.1.255,,1-0:1.8.2.255"}, E, "obis", "comma-separated"),
        ({"obis": ",".join(["1-0:1.8.1.255"] * 65)}, E, "obis", "at most 64"),
        ({"obis": "kWh"}, E, "obis", "not an OBIS code"),
        ({"obis": "1-0:99.99.9.255"}, E, "obis", "not an object"),
        ({"obis": "1-0:1.7.0.255"}, E, "obis", "has no history"),
        ({"obis": "0-0:96.1.1.255"}, E, "obis", "has no history"),
        ({"obis": "1-0:99.97.0.255"}, E, "obis", "has no history"),
        ({"obis": GAS_CODE}, E, "obis", "gas meter"),
        ({"obis": "1-0:1.8.1.255", "resolution": "1h"}, G, "obis", "electricity meter"),
        ({"obis": "0-n:24.2.1.255", "resolution": "1h"}, G, "obis", "0-1:24.2.1.255"),
        ({"obis": "0-2:24.2.1.255", "resolution": "1h"}, G, "obis", "channel 2"),
        ({"resolution": "-"}, E, "resolution", "missing"),
        ({"resolution": "5m"}, E, "resolution", "15m, 1h, 1d, 1M"),
        ({"resolution": "1m"}, E, "resolution", "not a resolution"),
        ({"resolution": "15M"}, E, "resolution", "not a resolution"),
        ({"resolution": "day"}, E, "resolution", "not a resolution"),
        ({"resolution": "1h,1d"}, E, "resolution", "not a resolution"),
        ({"obis": GAS_CODE, "resolution": "15m"}, G, "resolution", "5m, 1h, 1d, 1M"),
        ({"from": "-"}, E, "from", "missing"),
        ({"to": ""}, E, "to", "missing"),
        ({"from": "2026-01-01"}, E, "from", "RFC 3339"),
        ({"from": "2026-01-01T00:00:00"}, E, "from", "RFC 3339"),  # no offset
        ({"from": "2026-01-01T00:00:00 01:00"}, E, "from", "%2B"),  # '+' lost in the URL
        ({"from": "2026-13-01T00:00:00Z"}, E, "from", "not a valid time"),
        ({"from": "yesterday"}, E, "from", "RFC 3339"),
        ({"from": "0001-01-01T00:00:00+01:00"}, E, "from", "out of range"),
        ({"to": "9999-12-31T23:59:59-01:00"}, E, "to", "out of range"),
        ({"from": "1900-01-01T00:00:00Z"}, E, "from", "out of range"),
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, E, "from", "before"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00+01:00"}, E, "from", "before"),
        ({"form": "2026-01-01T00:00:00Z"}, E, "form", "unknown parameter"),
    ],
)
def test_every_bad_parameter_is_named(
    changes: dict[str, str], meter: Meter, field: str, words: str
) -> None:
    with pytest.raises(BadRequest) as info:
        parse_measurements_query(params(**changes), meter, ALL_PROFILES)
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    assert words in message, message
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("obis", "profiles", "missing"),
    [
        ("1-0:1.8.1.255", {Profile.E_REALTIME, Profile.E_BILLING, Profile.P1}, ["E-HISTORIC"]),
        ("0-0:96.7.21.255", {Profile.E_HISTORIC}, ["PQ-HISTORIC"]),
        ("1-0:1.8.1.255,1-0:32.36.0.255", {Profile.PQ_REALTIME}, ["E-HISTORIC", "PQ-HISTORIC"]),
        ("1-0:1.8.1.255", {Profile.G_HISTORIC}, ["E-HISTORIC"]),
    ],
)
def test_objects_the_token_may_not_read(
    obis: str, profiles: set[Profile], missing: list[str]
) -> None:
    with pytest.raises(ForbiddenProfile) as info:
        parse_measurements_query(params(obis=obis), E, profiles)
    assert info.value.missing == missing
    assert info.value.body()["missing"] == missing
    assert info.value.status == 403


def test_gas_history_needs_g_historic() -> None:
    with pytest.raises(ForbiddenProfile) as info:
        parse_measurements_query(params(obis=GAS_CODE), G, {Profile.G_REALTIME, Profile.P1})
    assert info.value.missing == ["G-HISTORIC"]


def test_a_bad_parameter_is_400_even_for_a_token_without_rights() -> None:
    with pytest.raises(BadRequest, match="^resolution: "):
        parse_measurements_query(params(resolution="5m"), E, {Profile.P1})


def test_a_fractional_from_rounds_up() -> None:
    """x1-api.md: readings fall on whole seconds; from=…:00.5 must not return the reading
    of …:00, which lies before it. Lower-case t and z are RFC 3339 too."""
    period = {"from": "2026-01-01t00:00:00.5z", "to": "2026-01-01T01:00:00.9Z"}
    q = parse_measurements_query(params(resolution="15m", **period), E, ALL_PROFILES)
    assert q.start == utc(2026, 1, 1, 0, 0, 1)
    assert list(interval_ends(q.resolution, q.start, q.end))[0] == utc(2026, 1, 1, 0, 15)
    whole = parse_measurements_query(params(resolution="15m"), E, ALL_PROFILES)
    assert whole.start == utc(2026, 1, 1)


def test_from_moves_past_a_history_block() -> None:
    """x1-api.md: after a block (§12.1) from is the oldest reading kept, the first
    interval end after the block."""
    q = parse_measurements_query(params(resolution="15m"), E, ALL_PROFILES)
    blocked = utc(2026, 1, 10, 12, 7)
    assert q.after(blocked).start == utc(2026, 1, 10, 12, 15)
    assert q.after(utc(2026, 1, 10, 12, 15)).start == utc(2026, 1, 10, 12, 30)
    assert q.after(None) is q
    assert q.after(utc(2025, 1, 1)) is q  # a block before the period: nothing to move
    assert q.after(utc(2027, 1, 1)) is q  # the whole period before the block: empty anyway


def test_a_period_beyond_retention_is_clamped_not_refused() -> None:
    now = NOW
    q = parse_measurements_query(
        params(**{"from": "2000-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}),
        E,
        ALL_PROFILES,
        now=now,
    )
    assert q.start == oldest_kept(E, R.DAY, now)
    assert q.end == utc(2030, 1, 1)
    inside = parse_measurements_query(params(), E, ALL_PROFILES, now=now)
    assert inside.start == utc(2026, 1, 1)
    before = parse_measurements_query(
        params(**{"from": "2000-01-01T00:00:00Z", "to": "2001-01-01T00:00:00Z"}),
        E,
        ALL_PROFILES,
        now=now,
    )
    assert before.start == utc(2000, 1, 1)  # wholly before retention: nothing to return


def test_clamped_query_against_the_store(filled: HistoryStore) -> None:
    q = parse_measurements_query(
        params(
            obis=",".join(E_CODES[:4]),
            resolution="15m",
            **{"from": "2020-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        ),
        E,
        ALL_PROFILES,
        now=NOW,
    )
    readings = filled.query(q)
    assert len(readings) == 672
    assert readings[0][0] == q.start
    assert all(list(values) == list(q.codes) for _, values in readings)


def test_a_mapping_of_parameters_is_enough() -> None:
    class Params(Mapping[str, str]):
        def __init__(self, data: dict[str, str]) -> None:
            self.data = data

        def __getitem__(self, key: str) -> str:
            return self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    q = parse_measurements_query(Params(params()), E, ALL_PROFILES)
    assert q.codes == ("1-0:1.8.1.255",)


def test_with_the_meter_simulation(db: Path) -> None:
    from x1p1.gateway.simulation import MeterSimulation

    sim = MeterSimulation(seed=7)
    store = open_store(db)
    assert store.backfill(sim, NOW) == sum(row.count for row in TABLE_8)
    now = NOW + timedelta(minutes=20)
    store.record_due(sim, now)
    t, values = store.query(everything(E, R.MIN15))[-1]
    assert t == floor_end(R.MIN15, now)
    assert values == {code: sim.registers(t)[code] for code in E_CODES}
    t, gas = store.query(everything(G, R.MIN5))[-1]
    assert gas == {GAS_CODE: sim.registers(t)[GAS_CODE]}
    days = store.query(everything(E, R.DAY))
    assert len(days) == 730
    # Registers only grow: consecutive daily readings never go down.
    totals = [v["1-0:1.8.1.255"] + v["1-0:1.8.2.255"] for _, v in days]
    assert totals == sorted(totals)


def test_a_parameter_given_twice_is_refused() -> None:
    from multidict import MultiDict

    query = MultiDict(params())
    query.add("obis", "1-0:1.8.2.255")
    with pytest.raises(BadRequest, match="^obis: given more than once"):
        parse_measurements_query(query, E, ALL_PROFILES)
    assert parse_measurements_query(MultiDict(params()), E, ALL_PROFILES).codes == (
        "1-0:1.8.1.255",
    )
