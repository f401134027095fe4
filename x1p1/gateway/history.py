"""The gateway's history of both meters in SQLite (X1 §7.3, Table 8; §11, §12.1, §12.2).

:class:`HistoryStore` works on a :mod:`sqlite3` connection it is handed (the gateway's
one database, shared with the token store and the comlog). What it keeps:

- ``history_readings``: one row per reading, keyed ``(meter, resolution, t)`` in a
  ``WITHOUT ROWID`` table, so a period is one range scan and pruning one range delete.
  ``t`` is the interval end in Unix seconds (:mod:`x1p1.x1.history` for the calendar),
  ``ts`` the same end in RFC 3339, and every historic object of the registry has a
  column named by its code (gas with ``n``: ``"0-n:24.2.1.255"``): the E-HISTORIC
  registers and the PQ-HISTORIC counters of the electricity meter, the G-HISTORIC
  objects of the gas meter (§6.1, §6.2). Counters (``Numeric(n,0)``) are INTEGER
  columns, registers REAL. A row per value measured twice as slow to read back (730
  daily readings of 4 objects: 6 ms against 3 ms here), and
  :meth:`HistoryStore.query_json` lets SQLite write the ``readings`` JSON itself from
  these rows (2.5 ms, against 7 ms for reading rows and ``json.dumps``).
- ``history_meta``: when the gateway first started (``born``), which resolutions the
  backfill has filled, and the history block (``blocked``).

Life of the store
-----------------
- :meth:`HistoryStore.backfill` on every start: on the first start it fills the whole
  retention of every resolution of both meters from the simulation's seed, so history is
  there at once and agrees with the registers shown now. One transaction per resolution;
  a start cut short resumes with the resolutions not yet filled, never past ``born``.
- :meth:`HistoryStore.record_due`, every few seconds: records every interval end passed
  since the last one recorded — but only ends at or after the moment this process
  started (``running_since``). While the gateway is down nothing is recorded, and those
  intervals stay absent afterwards: a gap, never an invented value (§12.2). It prunes
  what retention has passed in the same transaction.
- :meth:`HistoryStore.block` (§11, §12.1): the customer's irreversible history block. The
  moment is stored, every row at or before it is deleted (with ``secure_delete``), and
  no row at or before it can be inserted or returned again: a trigger refuses such
  inserts and refuses to move the block back or remove it. New history accrues after it.

Durability: the database is in WAL mode with ``synchronous=FULL`` (set by
:meth:`HistoryStore.init_schema`), so a committed transaction survives SIGKILL and power
loss alike; every method commits its own transaction, or joins the caller's if one is
open.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

from x1p1.exceptions import X1P1Error
from x1p1.gateway.store import checkpoint, transaction
from x1p1.x1.api import format_time
from x1p1.x1.history import (
    TABLE_8,
    MeasurementsQuery,
    Resolution,
    floor_end,
    interval_ends,
    is_end,
    oldest_kept,
    retention,
    shift,
)
from x1p1.x1.obis import OBJECTS, Meter, ObisObject, lookup

Reading = tuple[datetime, dict[str, float]]
"""One interval's reading: its end and the values by six-group OBIS code."""


class RegisterSource(Protocol):
    """What the history needs of the meter simulation (``gateway/simulation.py``):
    every register's value at a moment, by OBIS code. ``interval_registers(start, end,
    step)``, if the simulation has it, is used for the UTC-aligned resolutions."""

    def registers(self, at: datetime) -> Mapping[str, float]: ...


HISTORIC: dict[Meter, tuple[ObisObject, ...]] = {
    meter: tuple(obj for obj in OBJECTS if obj.historic and obj.meter is meter) for meter in Meter
}
"""The objects recorded per meter, in registry order: one column each."""

_META = (
    """CREATE TABLE IF NOT EXISTS history_meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID""",
    # §12.1: "Deze blokkering kan niet ongedaan worden gemaakt."
    """CREATE TRIGGER IF NOT EXISTS history_block_not_back BEFORE UPDATE ON history_meta
        WHEN OLD.key = 'blocked' AND (NEW.key != 'blocked' OR NEW.value < OLD.value)
        BEGIN SELECT RAISE(ABORT, 'a history block cannot be undone'); END""",
    """CREATE TRIGGER IF NOT EXISTS history_block_not_removed BEFORE DELETE ON history_meta
        WHEN OLD.key = 'blocked'
        BEGIN SELECT RAISE(ABORT, 'a history block cannot be undone'); END""",
)
_READINGS = """CREATE TABLE IF NOT EXISTS history_readings (
        meter TEXT NOT NULL,
        resolution TEXT NOT NULL,
        t INTEGER NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (meter, resolution, t)
    ) WITHOUT ROWID"""
_NOTHING_BEFORE_BLOCK = """CREATE TRIGGER IF NOT EXISTS history_nothing_before_block
        BEFORE INSERT ON history_readings
        WHEN NEW.t <= (SELECT value FROM history_meta WHERE key = 'blocked')
        BEGIN SELECT RAISE(IGNORE); END"""
_BLOCKED = "coalesce((SELECT value FROM history_meta WHERE key = 'blocked'), -1)"


def _column(obj: ObisObject) -> str:
    """The quoted column of an object: its registry code, ``"0-n:24.2.1.255"``."""
    return '"' + obj.code.replace('"', "") + '"'


@lru_cache(maxsize=256)
def _code_column(code: str) -> str:
    """The column of a concrete code from a checked query."""
    return _column(lookup(code).obj)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _stamp(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("history times must be aware datetimes")
    return int(moment.timestamp())


@lru_cache(maxsize=8192)
def _time(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


@lru_cache(maxsize=256)
def _historic(code: str) -> tuple[Meter, ObisObject] | None:
    """(meter, object) of a concrete historic object's code, else None."""
    try:
        ref = lookup(code)
    except X1P1Error:
        return None
    if not ref.obj.historic or (ref.obj.meter is Meter.GAS and ref.channel is None):
        return None
    return ref.obj.meter, ref.obj


def historic_values(meter: Meter, values: Mapping[str, object]) -> dict[ObisObject, float]:
    """The values of ``meter``'s historic objects among ``values`` (a simulation's
    registers, by concrete code), rounded to the decimals of their format (§6.2)."""
    out: dict[ObisObject, float] = {}
    for code, value in values.items():
        known = _historic(code)
        if known is None or known[0] is not meter:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        obj = known[1]
        out[obj] = round(float(value), obj.decimals) if obj.decimals else round(value)
    return out


def set_durable_wal(conn: sqlite3.Connection) -> None:
    """WAL with ``synchronous=FULL``: a committed transaction survives SIGKILL and power
    loss. Idempotent; needs no open transaction."""
    if not conn.in_transaction:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")


Row = tuple[object, ...]


class HistoryStore:
    """Readings of both meters at every Table 8 resolution, on a SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.running_since: datetime | None = None
        """When this process started recording (§12.2: nothing before it is recorded)."""
        self._cursor: dict[tuple[Meter, Resolution], int] = {}
        self._insert = {
            meter: "INSERT OR IGNORE INTO history_readings (meter, resolution, t, ts, "
            + ", ".join(_column(obj) for obj in objs)
            + ") VALUES (?, ?, ?, ?"
            + ", ?" * len(objs)
            + ")"
            for meter, objs in HISTORIC.items()
        }

    # --- schema and markers -------------------------------------------------------

    def init_schema(self) -> None:
        """Create the tables and triggers if absent, add a column for any historic
        object the registry gained, and make the database durable WAL."""
        set_durable_wal(self.conn)
        with transaction(self.conn) as conn:
            for statement in (*_META, _READINGS, _NOTHING_BEFORE_BLOCK):
                conn.execute(statement)
            have = {row[1] for row in conn.execute("PRAGMA table_info(history_readings)")}
            for objs in HISTORIC.values():
                for obj in objs:
                    if obj.code not in have:
                        kind = "INTEGER" if obj.decimals == 0 else "REAL"
                        conn.execute(
                            f"ALTER TABLE history_readings ADD COLUMN {_column(obj)} {kind}"
                        )

    def _meta(self, key: str) -> int | None:
        row = self.conn.execute("SELECT value FROM history_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def blocked_at(self) -> datetime | None:
        """The moment of the history block, if the customer blocked history (§12.1)."""
        stamp = self._meta("blocked")
        return None if stamp is None else _time(stamp)

    def born(self) -> datetime | None:
        """The gateway's first start: the backfill's last interval ends at or before it."""
        stamp = self._meta("born")
        return None if stamp is None else _time(stamp)

    def start(self, now: datetime) -> None:
        """Mark this process as recording from ``now`` on (§12.2). Only intervals that end
        at or after it are recorded; a restart leaves the ones in between absent."""
        self.running_since = _time(_stamp(now))
        self._cursor.clear()

    # --- writing ------------------------------------------------------------------

    def _row(
        self, meter: Meter, resolution: Resolution, t: datetime, values: Mapping[str, object]
    ) -> Row | None:
        clean = historic_values(meter, values)
        if not clean:
            return None
        stamp = _stamp(t)
        return (
            meter.value,
            resolution.value,
            stamp,
            format_time(_time(stamp)),
            *(clean.get(obj) for obj in HISTORIC[meter]),
        )

    def _store(self, conn: sqlite3.Connection, meter: Meter, rows: Sequence[Row]) -> int:
        before = conn.total_changes
        conn.executemany(self._insert[meter], rows)
        return conn.total_changes - before

    def record(
        self, meter: Meter, resolution: Resolution, t_end: datetime, values: Mapping[str, float]
    ) -> int:
        """Store one reading (values by concrete code); returns 1 if stored, 0 if there
        already was one for ``t_end`` or it is at or before a history block.

        ValueError if ``t_end`` is not an interval end of ``resolution``, the meter has
        no such resolution, or a code is not a historic object of ``meter``."""
        retention(meter, resolution)
        if not is_end(resolution, t_end):
            raise ValueError(f"{t_end.isoformat()} is not a {resolution.value} interval end")
        stray = sorted(c for c in values if (_historic(c) or (None,))[0] is not meter)
        if stray:
            raise ValueError(f"not historic objects of the {meter.value} meter: {stray}")
        row = self._row(meter, resolution, t_end, values)
        if row is None:
            return 0
        with transaction(self.conn) as conn:
            return self._store(conn, meter, [row])

    def backfill(self, sim: RegisterSource, now: datetime) -> int:
        """Fill the full retention of every resolution of both meters from ``sim``, on
        the first start only; returns the readings stored.

        The first call stores ``born`` = ``now``. Each resolution is one transaction and
        marks itself done in it, so a start cut short fills the rest on the next start,
        still only up to ``born``: nothing from a time the gateway was down is invented.
        Also :meth:`start` this process if that was not done yet."""
        if self.running_since is None:
            self.start(now)
        born = self._meta("born")
        if born is None:
            with transaction(self.conn) as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO history_meta VALUES ('born', ?)", (_stamp(now),)
                )
            born = self._meta("born")
            assert born is not None
        done = {
            key
            for (key,) in self.conn.execute(
                "SELECT key FROM history_meta WHERE key LIKE 'backfilled:%'"
            )
        }
        cache: dict[int, Mapping[str, float]] = {}
        stored = 0
        for row in TABLE_8:
            key = f"backfilled:{row.meter.value}:{row.resolution.value}"
            if key in done:
                continue
            last = floor_end(row.resolution, _time(born))
            first = max(
                shift(row.resolution, last, -(row.count - 1)),
                oldest_kept(row.meter, row.resolution, now),
            )
            ends = list(interval_ends(row.resolution, first, last))
            rows = [
                out
                for t, values in _registers_at(sim, row.resolution, ends, cache)
                if (out := self._row(row.meter, row.resolution, t, values)) is not None
            ]
            with transaction(self.conn) as conn:
                stored += self._store(conn, row.meter, rows)
                conn.execute("INSERT OR IGNORE INTO history_meta VALUES (?, 1)", (key,))
        return stored

    def record_due(self, sim: RegisterSource, now: datetime) -> int:
        """Record every interval end passed since the last one this process recorded,
        from ``running_since`` on (§12.2), and prune; returns the readings stored.

        Called every few seconds by the server. Never records more than the Table 8
        count per resolution, however late the call."""
        if self.running_since is None:
            self.start(now)
        assert self.running_since is not None
        since = self.running_since
        cache: dict[int, Mapping[str, float]] = {}
        rows: dict[Meter, list[Row]] = {meter: [] for meter in Meter}
        cursors: dict[tuple[Meter, Resolution], int] = {}
        for row in TABLE_8:
            key = (row.meter, row.resolution)
            after = self._cursor.get(key)
            lower = max(since, oldest_kept(row.meter, row.resolution, now))
            ends = [
                t
                for t in interval_ends(row.resolution, lower, now)
                if after is None or _stamp(t) > after
            ]
            if not ends:
                continue
            for t, values in _registers_at(sim, row.resolution, ends, cache):
                out = self._row(row.meter, row.resolution, t, values)
                if out is not None:
                    rows[row.meter].append(out)
            cursors[key] = _stamp(ends[-1])
        if not cursors:
            return 0
        with transaction(self.conn) as conn:
            stored = sum(self._store(conn, meter, batch) for meter, batch in rows.items())
            self._prune(conn, now)
        self._cursor.update(cursors)
        return stored

    def prune(self, now: datetime) -> int:
        """Delete readings older than the Table 8 count allows at ``now``; returns how
        many went."""
        with transaction(self.conn) as conn:
            return self._prune(conn, now)

    def _prune(self, conn: sqlite3.Connection, now: datetime) -> int:
        before = conn.total_changes
        for row in TABLE_8:
            oldest = _stamp(oldest_kept(row.meter, row.resolution, now))
            conn.execute(
                "DELETE FROM history_readings WHERE meter = ? AND resolution = ? AND t < ?",
                (row.meter.value, row.resolution.value, oldest),
            )
        return conn.total_changes - before

    def block(self, now: datetime) -> datetime:
        """Block history at ``now`` (§11, §12.1); returns the block's moment.

        Irreversible: the moment is stored (a later block can only move it forward),
        every reading at or before it is deleted and overwritten on disk, and none at or
        before it is ever stored or returned again. Revoking tokens and sessions and the
        comlog entry are the caller's part of §12.1."""
        stamp = _stamp(now)
        secure = self.conn.execute("PRAGMA secure_delete").fetchone()[0]
        self.conn.execute("PRAGMA secure_delete = ON")
        try:
            with transaction(self.conn) as conn:
                conn.execute(
                    "INSERT INTO history_meta VALUES ('blocked', ?) ON CONFLICT (key) "
                    "DO UPDATE SET value = max(value, excluded.value)",
                    (stamp,),
                )
                conn.execute(f"DELETE FROM history_readings WHERE t <= {_BLOCKED}")
        finally:
            self.conn.execute(f"PRAGMA secure_delete = {int(secure)}")
        if not self.conn.in_transaction:
            # Move the deletion out of the WAL into the main file now. Inside the
            # caller's transaction the caller does it once that has committed
            # (GatewayGrants.block_history).
            checkpoint(self.conn)
        blocked = self._meta("blocked")
        assert blocked is not None
        return _time(blocked)

    # --- reading ------------------------------------------------------------------

    def _select(self, q: MeasurementsQuery, fields: str) -> tuple[str, tuple[object, ...]]:
        """``SELECT <fields>`` over the newest Table 8 count of rows of ``q`` after any
        block that hold at least one of the asked values, oldest first. The bound comes
        from one index walk (``OFFSET count - 1``), so the scan needs no sort: a
        ``WITHOUT ROWID`` table is its primary key's b-tree, and a range of it is read
        in ``(meter, resolution, t)`` order (what lets an aggregate see them in order)."""
        columns = ", ".join(_code_column(code) for code in q.codes)
        where = (
            f"meter = ?1 AND resolution = ?2 AND t BETWEEN ?3 AND ?4 AND t > {_BLOCKED} "
            f"AND coalesce({columns}, NULL) IS NOT NULL"
        )
        sql = (
            f"SELECT {fields} FROM history_readings WHERE {where} AND t >= coalesce("
            f"(SELECT t FROM history_readings WHERE {where} ORDER BY t DESC LIMIT 1 "
            "OFFSET ?5), -1)"
        )
        params = (
            q.meter.value,
            q.resolution.value,
            _stamp(q.start),
            _stamp(q.end),
            q.retention.count - 1,
        )
        return sql, params

    def query(self, q: MeasurementsQuery) -> list[Reading]:
        """The readings of ``q``, oldest first: interval ends ``from <= t <= to`` after
        any history block, at most the Table 8 count (the newest). Intervals the gateway
        did not record are absent (§12.2); so is a value a reading lacks."""
        if not q.codes:
            return []
        columns = ", ".join(_code_column(code) for code in q.codes)
        sql, params = self._select(q, f"t, {columns}")
        codes = q.codes
        rows = self.conn.execute(sql + " ORDER BY t", params).fetchall()
        out = [(_time(row[0]), dict(zip(codes, row[1:], strict=True))) for row in rows]
        if any(None in row for row in rows):  # an object the registry gained later
            out = [(t, {c: v for c, v in values.items() if v is not None}) for t, values in out]
        return out

    def query_json(self, q: MeasurementsQuery) -> str:
        """The same readings as :meth:`query`, written by SQLite as the JSON text of
        the response's ``readings`` array (x1-api.md, REST): ``[{"t": "<RFC 3339>",
        "values": {obis: number}}, …]``. For the server's hot path."""
        if not q.codes:
            return "[]"
        pairs = ", ".join(f"{_sql_text(code)}, {_code_column(code)}" for code in q.codes)
        any_null = " OR ".join(f"{_code_column(code)} IS NULL" for code in q.codes)
        values = (
            f"CASE WHEN {any_null} THEN json_patch('{{}}', json_object({pairs})) "
            f"ELSE json_object({pairs}) END"
        )
        sql, params = self._select(q, f"json_group_array(json_object('t', ts, 'values', {values}))")
        row = self.conn.execute(sql, params).fetchone()
        return str(row[0]) if row and row[0] is not None else "[]"

    def response_text(self, equipment_id: str, q: MeasurementsQuery) -> str:
        """The whole measurements response as JSON text (x1-api.md, REST), its
        ``readings`` written by SQLite (:meth:`query_json`); equal, once parsed, to
        :func:`~x1p1.x1.history.measurements_response` of :meth:`query`."""
        head = json.dumps(q.response_head(equipment_id), separators=(",", ":"))
        return head[:-1] + ',"readings":' + self.query_json(q) + "}"

    def count(self, meter: Meter, resolution: Resolution) -> int:
        """How many readings of ``meter`` at ``resolution`` are stored."""
        row = self.conn.execute(
            "SELECT count(*) FROM history_readings WHERE meter = ? AND resolution = ?",
            (meter.value, resolution.value),
        ).fetchone()
        return int(row[0])

    def ends(self, meter: Meter, resolution: Resolution) -> list[datetime]:
        """Every stored interval end of ``meter`` at ``resolution``, oldest first."""
        return [
            _time(t)
            for (t,) in self.conn.execute(
                "SELECT t FROM history_readings WHERE meter = ? AND resolution = ? ORDER BY t",
                (meter.value, resolution.value),
            )
        ]


def _registers_at(
    sim: RegisterSource,
    resolution: Resolution,
    ends: list[datetime],
    cache: dict[int, Mapping[str, float]],
) -> list[tuple[datetime, Mapping[str, float]]]:
    """The simulation's registers at each of ``ends`` (shared across resolutions through
    ``cache``); ``interval_registers(start, end, step)`` (ends ``start < t <= end``) in
    one pass for an unbroken run of a UTC-aligned resolution, ``registers`` for the rest."""
    wanted = [t for t in ends if _stamp(t) not in cache]
    bulk = getattr(sim, "interval_registers", None)
    step = resolution.step
    contiguous = (
        step is not None
        and len(wanted) > 1
        and (wanted[-1] - wanted[0] == (len(wanted) - 1) * step)
    )
    if bulk is not None and step is not None and contiguous:
        targets = {_stamp(t) for t in wanted}
        last = wanted[-1]
        for t, values in bulk(wanted[0] - step, last, step):
            if t > last:
                break
            stamp = _stamp(t)
            if stamp in targets:
                cache[stamp] = values
    for t in wanted:
        stamp = _stamp(t)
        if stamp not in cache:
            cache[stamp] = sim.registers(t)
    return [(t, cache[_stamp(t)]) for t in ends]
