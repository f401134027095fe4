"""History over the X1 API of a real gateway:
retention and counts of every resolution of both meters, period edges, gaps after a stop,
pruning, the rate limit, errors, power quality, the portal's cookie, and the history
block — irreversible, also across a restart of the gateway process."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gateway_fixture import ALL_PROFILES, RunningGateway, default_meters, gateway_process
from history_support import (
    E_REGISTERS,
    EVER,
    T0,
    FakeMonotonic,
    MeterClock,
    history_gateway,
    portal_cookie,
    q,
    record,
)

from x1p1.cli import main
from x1p1.gateway.history import HISTORIC, historic_values
from x1p1.x1.api import format_time, parse_time
from x1p1.x1.billing_query import BILLING_RESOLUTION
from x1p1.x1.history import TABLE_8, Resolution, floor_end, interval_ends, oldest_kept, shift
from x1p1.x1.obis import Meter

E, G = Meter.ELECTRICITY, Meter.GAS
GAS = "0-1:24.2.1.255"
PQ = "0-0:96.7.21.255,0-0:96.7.9.255,1-0:32.32.0.255,1-0:52.36.0.255"
SIM = default_meters()


def codes(meter: Meter) -> str:
    return ",".join(obj.for_channel(1) if meter is G else obj.code for obj in HISTORIC[meter])


@dataclass
class Hist:
    gw: RunningGateway
    mono: FakeMonotonic
    clock: MeterClock
    token: str

    def meter_id(self, meter: Meter) -> str:
        return self.gw.electricity_id if meter is E else self.gw.gas_id

    def get(self, path: str, token: str | None = None, **headers: str) -> Any:
        self.mono.advance(10)  # one more call in the bucket: only the rate-limit test waits
        return self.gw.request("GET", path, token=token or self.token, headers=headers)

    def measurements(self, meter: Meter, token: str | None = None, **params: str) -> Any:
        return self.get(f"/api/meters/{self.meter_id(meter)}/measurements{q(**params)}", token)

    def readings(
        self, meter: Meter, resolution: str, obis: str | None = None, **period: str
    ) -> list[dict[str, Any]]:
        reply = self.measurements(
            meter, obis=obis or codes(meter), resolution=resolution, **{**EVER, **period}
        )
        assert reply.status == 200, reply.body
        readings: list[dict[str, Any]] = reply.json["readings"]
        return readings


@pytest.fixture
def hist(tmp_path: Path) -> Iterator[Hist]:
    clock = MeterClock()
    with history_gateway(tmp_path / "gw", clock) as (gw, mono):
        yield Hist(gw, mono, clock, gw.pair(list(ALL_PROFILES)))


def ends(readings: list[dict[str, Any]]) -> list[datetime]:
    return [parse_time(r["t"], "t") for r in readings]


# --- retention and counts (Table 8) -------------------------------------------------------------


def test_every_resolution_of_both_meters_holds_its_table_8_count(hist: Hist) -> None:
    now = hist.clock.now
    for row in TABLE_8:
        meter, resolution = row.meter, row.resolution
        reply = hist.measurements(meter, obis=codes(meter), resolution=resolution.value, **EVER)
        assert reply.status == 200, (row, reply.body)
        body = reply.json
        readings = body["readings"]
        assert len(readings) == row.count, row
        got = ends(readings)
        assert got == list(interval_ends(resolution, got[0], got[-1])), row  # no hole
        assert got[-1] == floor_end(resolution, now), row
        assert got[0] == oldest_kept(meter, resolution, now), row
        assert body["from"] == format_time(got[0]) and body["to"] == EVER["to"]
        assert body["resolution"] == resolution.value
        assert body["equipment_id"] == hist.meter_id(meter)
        for reading in (readings[0], readings[len(readings) // 2], readings[-1]):
            t = parse_time(reading["t"], "t")
            expected = historic_values(meter, SIM.registers(t))
            assert reading["values"] == {
                obj.for_channel(1) if meter is G else obj.code: value
                for obj, value in expected.items()
            }, (row, reading["t"])
    units = hist.measurements(E, obis=f"{E_REGISTERS},{PQ}", resolution="1d", **EVER).json
    assert units["units"]["1-0:1.8.1.255"] == "kWh" and units["units"]["0-0:96.7.21.255"] is None


def test_a_period_beyond_retention_is_clamped_and_never_more_than_the_count(hist: Hist) -> None:
    for row in TABLE_8:
        last = floor_end(row.resolution, hist.clock.now)
        start = shift(row.resolution, last, -(row.count + 50))
        got = hist.readings(
            row.meter, row.resolution.value, from_=format_time(start), to=format_time(last)
        )
        assert len(got) == row.count, row


def test_period_edges_are_inclusive(hist: Hist) -> None:
    last = floor_end(Resolution.MIN15, hist.clock.now)
    first = last - timedelta(hours=2)
    second = timedelta(seconds=1)

    def count(start: datetime, end: datetime) -> int:
        return len(
            hist.readings(E, "15m", E_REGISTERS, from_=format_time(start), to=format_time(end))
        )

    assert count(first, last) == 9
    assert count(first + second, last) == 8
    assert count(first, last - second) == 8
    assert count(first + second, last - second) == 7
    assert count(first - second, first + second) == 1
    cet = first.astimezone(timezone(timedelta(hours=1))).isoformat()  # an offset, not Z
    offset = hist.readings(E, "15m", E_REGISTERS, from_=cet, to=format_time(first + second))
    assert ends(offset) == [first]
    # days follow Dutch local time: midnight there, 23:00 UTC in winter
    days = hist.readings(
        E, "1d", E_REGISTERS, from_="2026-03-01T00:00:00+01:00", to="2026-03-03T00:00:00+01:00"
    )
    assert [r["t"] for r in days] == [
        "2026-02-28T23:00:00Z",
        "2026-03-01T23:00:00Z",
        "2026-03-02T23:00:00Z",
    ]


def test_pruning_keeps_the_count_as_time_passes(hist: Hist) -> None:
    before = ends(hist.readings(E, "15m", E_REGISTERS))
    hist.clock.advance(timedelta(minutes=30))
    record(hist.gw)
    after = ends(hist.readings(E, "15m", E_REGISTERS))
    assert len(after) == 672
    assert after[0] == before[2] and after[-3] == before[-1]
    hist.clock.advance(timedelta(hours=2))
    record(hist.gw)
    gas = ends(hist.readings(G, "5m", GAS))
    now = hist.clock.now
    assert len(gas) == 12 and gas[-1] == floor_end(Resolution.MIN5, now)
    assert gas[0] > now - timedelta(hours=1)
    with sqlite3.connect(hist.gw.state_dir / "gateway.db") as conn:  # pruned on disk
        rows = conn.execute(
            "SELECT resolution, count(*) FROM history_readings WHERE meter = 'gas' "
            "GROUP BY resolution"
        ).fetchall()
    assert dict(rows)["5m"] == 12


# --- gaps (§12.2) -----------------------------------------------------------------------------


def test_intervals_that_ended_while_the_gateway_was_down_are_absent(tmp_path: Path) -> None:
    clock = MeterClock()
    state_dir = tmp_path / "gw"
    with history_gateway(state_dir, clock) as (gw, mono):
        token = gw.pair(list(ALL_PROFILES))
        before = Hist(gw, mono, clock, token).readings(E, "15m", E_REGISTERS)
    assert before[-1]["t"] == "2026-03-10T12:00:00Z"
    clock.advance(timedelta(hours=3))  # down from 12:07:30 to 15:07:30
    with history_gateway(state_dir, clock) as (gw, mono):
        hist = Hist(gw, mono, clock, token)
        clock.advance(timedelta(hours=1))
        record(gw)
        quarter = {r["t"]: r for r in hist.readings(E, "15m", E_REGISTERS)}
        hourly = {r["t"] for r in hist.readings(G, "1h", GAS)}
        gas = hist.readings(G, "5m", GAS)
    for end in interval_ends(Resolution.MIN15, T0, T0 + timedelta(hours=3)):
        assert format_time(end) not in quarter, end
    for t in ("2026-03-10T12:00:00Z", "2026-03-10T15:15:00Z", "2026-03-10T16:00:00Z"):
        assert t in quarter
    assert quarter["2026-03-10T12:00:00Z"] == before[-1]  # kept as it was
    assert {"2026-03-10T13:00:00Z", "2026-03-10T14:00:00Z", "2026-03-10T15:00:00Z"}.isdisjoint(
        hourly
    )
    assert {"2026-03-10T12:00:00Z", "2026-03-10T16:00:00Z"} <= hourly
    assert [r["t"] for r in gas][0] == "2026-03-10T15:10:00Z" and len(gas) == 12


# --- the rate limit (§7.3) -----------------------------------------------------------------------


def test_rate_limit_and_retry_after(hist: Hist) -> None:
    gw, mono = hist.gw, hist.mono
    path = f"/api/meters/{gw.electricity_id}/measurements" + q(
        obis=E_REGISTERS, resolution="1h", **EVER
    )
    billing = f"/api/meters/{gw.electricity_id}/billing" + q(**EVER)
    token = gw.pair(list(ALL_PROFILES), name="eager")
    for _ in range(9):
        assert gw.request("GET", path, token=token).status == 200
    assert gw.request("GET", billing, token=token).status == 200  # one bucket for both
    refused = gw.request("GET", path, token=token)
    assert refused.status == 429 and refused.headers["retry-after"] == "10"
    assert refused.json["error"] == "rate-limited" and "10 s" in refused.json["message"]
    assert gw.request("GET", billing, token=token).status == 429
    assert gw.request("GET", path, token=hist.token).status == 200  # another token's bucket
    mono.advance(4)
    assert gw.request("GET", path, token=token).headers["retry-after"] == "6"
    mono.advance(6)
    assert gw.request("GET", path, token=token).status == 200
    assert gw.request("GET", path, token=token).status == 429
    mono.advance(10_000)  # a full bucket holds 10, no more
    assert [gw.request("GET", path, token=token).status for _ in range(11)] == [200] * 10 + [429]
    # other routes are not limited
    assert gw.request("GET", f"/api/meters/{gw.electricity_id}", token=token).status == 200


# --- errors ------------------------------------------------------------------------------------


def test_bad_requests_name_the_parameter(hist: Hist) -> None:
    cases = [
        ({"obis": E_REGISTERS, "resolution": "1h", **EVER, "limit": "3"}, "limit"),
        ({"resolution": "1h", **EVER}, "obis"),
        ({"obis": E_REGISTERS, **EVER}, "resolution"),
        ({"obis": E_REGISTERS, "resolution": "5m", **EVER}, "resolution"),
        ({"obis": E_REGISTERS, "resolution": "1h", "from": "yesterday", "to": EVER["to"]}, "from"),
        ({"obis": E_REGISTERS, "resolution": "1h", "from": EVER["from"]}, "to"),
        ({"obis": "1-0:1.7.0.255", "resolution": "1h", **EVER}, "obis"),  # no history
        ({"obis": GAS, "resolution": "1h", **EVER}, "obis"),  # the other meter
        ({"obis": "9-9:9.9.9.9", "resolution": "1h", **EVER}, "obis"),
        ({"obis": E_REGISTERS, "resolution": "1h", "from": EVER["to"], "to": EVER["from"]}, "from"),
    ]
    for params, name in cases:
        reply = hist.measurements(
            E, **{k + ("_" if k == "from" else ""): v for k, v in params.items()}
        )
        assert reply.status == 400, (params, reply.body)
        assert reply.json["error"] == "bad-request"
        assert reply.json["message"].startswith(name + ":"), (params, reply.json)
    twice = hist.get(
        f"/api/meters/{hist.gw.electricity_id}/measurements?obis=1-0:1.8.1.255"
        f"&obis=1-0:1.8.2.255&resolution=1h&from=2026-01-01T00:00:00Z"
        f"&to=2026-02-01T00:00:00Z"
    )
    assert twice.status == 400 and twice.json["message"].startswith("obis:")
    plus = hist.get(
        f"/api/meters/{hist.gw.electricity_id}/measurements?obis=1-0:1.8.1.255"
        "&resolution=1h&from=2026-01-01T00:00:00+01:00&to=2026-02-01T00:00:00Z"
    )
    assert plus.status == 400 and "%2B" in plus.json["message"]


def test_unknown_meter_forbidden_objects_and_no_token(hist: Hist) -> None:
    gw = hist.gw
    unknown = hist.get(
        "/api/meters/E000/measurements" + q(obis=E_REGISTERS, resolution="1h", **EVER)
    )
    assert unknown.status == 404 and unknown.json["error"] == "not-found"
    p1 = gw.pair(["P1"], name="p1 only")
    forbidden = hist.measurements(E, p1, obis=E_REGISTERS, resolution="1h", **EVER)
    assert forbidden.status == 403 and forbidden.json["missing"] == ["E-HISTORIC"]
    e_only = gw.pair(["E-HISTORIC"], name="energy only")
    pq = hist.measurements(E, e_only, obis=f"1-0:1.8.1.255,{PQ}", resolution="1h", **EVER)
    assert pq.status == 403 and pq.json["missing"] == ["PQ-HISTORIC"]
    gas = hist.measurements(G, e_only, obis=GAS, resolution="1h", **EVER)
    assert gas.status == 403 and gas.json["missing"] == ["G-HISTORIC"]
    assert hist.measurements(E, e_only, obis=E_REGISTERS, resolution="1h", **EVER).status == 200
    anonymous = gw.request(
        "GET",
        f"/api/meters/{gw.electricity_id}/measurements"
        + q(obis=E_REGISTERS, resolution="1h", **EVER),
    )
    assert anonymous.status == 401 and anonymous.json["error"] == "unauthorized"
    gw.control.operator("disable")
    off = hist.measurements(E, obis=E_REGISTERS, resolution="1h", **EVER)
    assert off.status == 503 and off.json["error"] == "x1-disabled"
    gw.control.operator("enable")


# --- power quality (§6.2.4) ---------------------------------------------------------------------


def test_pq_counters_are_in_history_with_pq_historic(hist: Hist) -> None:
    token = hist.gw.pair(["PQ-HISTORIC"], name="pq")
    reply = hist.measurements(E, token, obis=PQ, resolution="15m", **EVER)
    assert reply.status == 200 and len(reply.json["readings"]) == 672
    last = reply.json["readings"][-1]
    registers = SIM.registers(parse_time(last["t"], "t"))
    assert last["values"] == {code: registers[code] for code in PQ.split(",")}
    assert all(isinstance(v, int) for v in last["values"].values())
    assert reply.json["units"] == {code: None for code in PQ.split(",")}


async def test_pq_values_on_realtime_with_pq_realtime(hist: Hist) -> None:
    gw = hist.gw
    token = await asyncio.to_thread(gw.pair, ["PQ-REALTIME"], name="pq live")
    obis = f"{PQ},1-0:99.97.0.255"
    path = f"/api/realtime?equipment_id={gw.electricity_id}&obis={obis}"
    async with gw.ws(path, token=token) as ws:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
    expected = SIM.realtime_values(parse_time(message["t"], "t"))
    assert message["values"] == {code: expected[code] for code in obis.split(",")}
    refused = await asyncio.to_thread(
        gw.request,
        "GET",
        f"/api/realtime?equipment_id={gw.electricity_id}&obis=1-0:1.7.0.255",
        token=token,
    )
    assert refused.status in (400, 403)


# --- the portal's session cookie ---------------------------------------------------------------


def test_a_portal_session_reads_history_and_is_rate_limited_too(hist: Hist) -> None:
    gw = hist.gw
    cookie = portal_cookie(gw)
    path = f"/api/meters/{gw.gas_id}/measurements" + q(obis=GAS, resolution="1d", **EVER)
    replies = [
        gw.request("GET", path, headers={"Cookie": cookie, "Origin": gw.url}) for _ in range(11)
    ]
    assert [r.status for r in replies] == [200] * 10 + [429]
    assert len(replies[0].json["readings"]) == 730
    assert (
        gw.request("GET", path, headers={"Cookie": cookie, "Origin": "https://evil.example"}).status
        == 401
    )


# --- the history block (§11, §12.1) -----------------------------------------------------------


def test_block_removes_the_past_revokes_everyone_and_history_accrues_again(hist: Hist) -> None:
    gw, clock = hist.gw, hist.clock
    cookie = portal_cookie(gw)
    assert len(hist.readings(E, "1M", E_REGISTERS)) == 60
    result = CliRunner().invoke(
        main, ["meter", "block-history", "--state-dir", str(gw.state_dir)], input="n\n"
    )
    assert result.exit_code == 1 and "cannot be undone" in result.output
    assert gw.request("GET", "/api/token", token=hist.token).status == 200  # not blocked
    result = CliRunner().invoke(
        main, ["meter", "block-history", "--yes", "--json", "--state-dir", str(gw.state_dir)]
    )
    assert result.exit_code == 0, result.output
    blocked = json.loads(result.stdout)
    assert blocked["blocked_at"] == format_time(clock.now) and blocked["tokens_revoked"] == 1
    assert gw.request("GET", "/api/token", token=hist.token).status == 401
    assert (
        gw.request("GET", "/api/meters", headers={"Cookie": cookie, "Origin": gw.url}).status == 401
    )
    assert gw.control.sessions() == []
    entries = gw.control.comlog()
    assert [e["detail"]["by"] for e in entries if e["event"] == "history-blocked"] == [
        "on the meter (button combination)"
    ]
    token = gw.pair(list(ALL_PROFILES), name="after the block")
    hist.token = token
    for row in TABLE_8:
        assert hist.readings(row.meter, row.resolution.value, codes(row.meter)) == [], row
    csv_cookie = portal_cookie(gw)
    csv = gw.request(
        "GET",
        "/history.csv?meter=electricity&resolution=1M&from=2000-01-01T00:00"
        ":00Z&to=2030-01-01T00:00:00Z",
        headers={"Cookie": csv_cookie},
    )
    assert csv.status == 200 and csv.body.decode().count("\r\n") == 1  # the header only
    clock.advance(timedelta(hours=1))
    record(gw)
    quarter = hist.readings(E, "15m", E_REGISTERS)
    assert [r["t"] for r in quarter] == [
        "2026-03-10T12:15:00Z",
        "2026-03-10T12:30:00Z",
        "2026-03-10T12:45:00Z",
        "2026-03-10T13:00:00Z",
    ]
    assert len(hist.readings(G, "5m", GAS)) == 12
    assert hist.readings(E, "1d", E_REGISTERS) == []
    # x1-api.md: after a block, from is the oldest reading kept
    reply = hist.measurements(E, obis=E_REGISTERS, resolution="15m", **EVER)
    assert reply.json["from"] == "2026-03-10T12:15:00Z"
    assert reply.json["readings"][0]["t"] == reply.json["from"]
    billing = hist.get(f"/api/meters/{gw.electricity_id}/billing" + q(**EVER), hist.token)
    assert billing.json["from"] == "2026-03-10T12:15:00Z"
    with sqlite3.connect(gw.state_dir / "gateway.db") as conn:
        old = int((T0 - timedelta(days=1)).timestamp())
        conn.execute(
            "INSERT INTO history_readings (meter, resolution, t, ts) VALUES "
            "('electricity', '1d', ?, 'x')",
            (old,),
        )
        assert conn.execute(
            "SELECT count(*) FROM history_readings WHERE t <= ?", (int(T0.timestamp()),)
        ).fetchone() == (0,)
        with pytest.raises(sqlite3.IntegrityError, match="cannot be undone"):
            conn.execute("DELETE FROM history_meta WHERE key = 'blocked'")


def _database_bytes(db: Path) -> bytes:
    """``gateway.db`` and its ``-wal`` and ``-shm`` files, as they are on disk."""
    return b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))


def test_a_block_through_the_gateway_leaves_no_blocked_reading_in_the_files(hist: Hist) -> None:
    """§12.1: the blocked readings leave the disk, not only the query. The block runs in
    the ledger's transaction; the WAL is checkpointed and truncated after its commit."""
    db = hist.gw.state_dir / "gateway.db"
    day_ago = int((hist.clock.now - timedelta(days=1)).timestamp())
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT * FROM history_readings WHERE t < ?", (day_ago,)).fetchall()
    # A fraction is stored as an 8-byte big-endian REAL (a whole number may be an integer).
    old = {struct.pack(">d", v) for row in rows for v in row if isinstance(v, float) and v % 1}
    assert len(old) > 100
    before = _database_bytes(db)
    assert all(value in before for value in old)
    result = CliRunner().invoke(
        main, ["meter", "block-history", "--yes", "--state-dir", str(hist.gw.state_dir)]
    )
    assert result.exit_code == 0, result.output
    after = _database_bytes(db)
    assert [value for value in old if value in after] == []


def test_the_block_is_irreversible_across_a_restart_of_the_gateway_process(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "gw"
    with gateway_process(state_dir) as gw:
        token = gw.pair(list(ALL_PROFILES))
        before = gw.request(
            "GET",
            f"/api/meters/{gw.electricity_id}/measurements"
            + q(obis=E_REGISTERS, resolution="1d", **EVER),
            token=token,
        )
        assert before.status == 200 and len(before.json["readings"]) == 730
        result = CliRunner().invoke(
            main, ["meter", "block-history", "--yes", "--state-dir", str(state_dir)]
        )
        assert result.exit_code == 0 and "History blocked at" in result.output, result.output
        at = parse_time(result.output.split("blocked at ")[1].split(";")[0], "at")
    with gateway_process(state_dir) as gw:
        assert gw.request("GET", "/api/token", token=token).status == 401
        fresh = gw.pair(list(ALL_PROFILES), name="new tenant")
        for row in TABLE_8:
            meter_id = gw.electricity_id if row.meter is E else gw.gas_id
            path = f"/api/meters/{meter_id}/measurements" + q(
                obis=codes(row.meter), resolution=row.resolution.value, **EVER
            )
            reply = gw.request("GET", path, token=fresh)
            assert reply.status == 200
            assert all(parse_time(r["t"], "t") > at for r in reply.json["readings"]), row
            if row.resolution is BILLING_RESOLUTION[row.meter]:
                billing = gw.request(
                    "GET", f"/api/meters/{meter_id}/billing" + q(**EVER), token=fresh
                )
                assert billing.status == 200
                assert all(parse_time(r["t"], "t") > at for r in billing.json["readings"])
        events = [e["event"] for e in gw.control.comlog()]
        assert "history-blocked" in events


async def test_the_block_closes_open_sockets_of_tokens_and_portal_sessions(hist: Hist) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    gw = hist.gw
    cookie = await asyncio.to_thread(portal_cookie, gw)
    path = f"/api/realtime?equipment_id={gw.electricity_id}&obis=1-0:1.7.0.255"
    async with (
        gw.ws(path, token=hist.token) as device,
        connect(
            gw.ws_url + path,
            ssl=gw.ssl_context(),
            origin=gw.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            open_timeout=10,
        ) as browser,
    ):
        for ws in (device, browser):
            await asyncio.wait_for(ws.recv(), 10)
        await asyncio.to_thread(gw.control.block_history)
        for ws in (device, browser):
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
