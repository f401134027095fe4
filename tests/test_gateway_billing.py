"""Signed billing readings from a real gateway (X1 §6.2.5–§6.2.6; x1-api.md, Billing):
what a response holds, that a saved response verifies with ``x1p1
verify-billing`` and fails on any tampering, that each reading is signed once and only
read afterwards, that gaps and the history block hold for billing too, and that a new
signing certificate re-signs what is kept."""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gateway_fixture import ALL_PROFILES, RunningGateway
from history_support import (
    E_REGISTERS,
    EVER,
    T0,
    FakeMonotonic,
    MeterClock,
    history_gateway,
    q,
    record,
)

from x1p1.cli import main
from x1p1.gateway.billing_signature import verify_billing
from x1p1.x1.api import format_time, parse_time
from x1p1.x1.billing import format_register_value
from x1p1.x1.history import Resolution, floor_end, interval_ends, oldest_kept
from x1p1.x1.obis import Meter

E, G = Meter.ELECTRICITY, Meter.GAS
GAS = "0-1:24.2.1.255"
REGISTERS = E_REGISTERS.split(",")


@dataclass
class Bill:
    gw: RunningGateway
    mono: FakeMonotonic
    clock: MeterClock
    token: str

    def get(self, path: str, token: str | None = None) -> Any:
        self.mono.advance(10)
        return self.gw.request("GET", path, token=token or self.token)

    def billing(self, meter_id: str, token: str | None = None, **params: str) -> Any:
        return self.get(f"/api/meters/{meter_id}/billing{q(**params)}", token)

    def response(self, meter_id: str, **period: str) -> dict[str, Any]:
        reply = self.billing(meter_id, **{**EVER, **period})
        assert reply.status == 200, reply.body
        assert reply.headers["cache-control"] == "no-store"
        body: dict[str, Any] = reply.json
        return body

    def measurements(self, meter_id: str, obis: str, resolution: str) -> list[dict[str, Any]]:
        path = f"/api/meters/{meter_id}/measurements" + q(obis=obis, resolution=resolution, **EVER)
        reply = self.get(path)
        assert reply.status == 200
        readings: list[dict[str, Any]] = reply.json["readings"]
        return readings


@pytest.fixture
def bill(tmp_path: Path) -> Iterator[Bill]:
    clock = MeterClock()
    with history_gateway(tmp_path / "gw", clock) as (gw, mono):
        yield Bill(gw, mono, clock, gw.pair(list(ALL_PROFILES)))


def root(gw: RunningGateway) -> bytes:
    return gw.ca_path.read_bytes()


# --- what a response holds ------------------------------------------------------------------


def test_electricity_quarter_hours_and_gas_hours_signed_from_history(bill: Bill) -> None:
    gw = bill.gw
    body = bill.response(gw.electricity_id)
    assert list(body) == ["equipment_id", "from", "to", "certificate", "readings"]
    assert body["equipment_id"] == gw.electricity_id
    assert body["certificate"] == (gw.state_dir / "pki" / "billing.pem").read_text()
    readings = body["readings"]
    assert len(readings) == 4 * 672
    last = floor_end(Resolution.MIN15, bill.clock.now)
    first = oldest_kept(E, Resolution.MIN15, bill.clock.now)
    assert body["from"] == format_time(first)
    expected_ends = [format_time(t) for t in interval_ends(Resolution.MIN15, first, last)]
    assert [r["t"] for r in readings[::4]] == expected_ends
    assert all(
        [r["obis"] for r in readings[i : i + 4]] == REGISTERS for i in range(0, len(readings), 4)
    )
    history = bill.measurements(gw.electricity_id, E_REGISTERS, "15m")
    for reading, row in zip(readings[::4], history, strict=True):
        assert reading["t"] == row["t"]
    for i in (0, 1, 2, 3, 1000, len(readings) - 1):
        reading = readings[i]
        row = history[i // 4]
        assert reading["value"] == format_register_value(row["values"][reading["obis"]])
        assert reading["unit"] == "kWh"
    gas = bill.response(gw.gas_id)
    assert len(gas["readings"]) == 720 and {r["obis"] for r in gas["readings"]} == {GAS}
    hourly = bill.measurements(gw.gas_id, GAS, "1h")
    assert [r["value"] for r in gas["readings"]] == [
        format_register_value(row["values"][GAS]) for row in hourly
    ]
    assert {r["unit"] for r in gas["readings"]} == {"m3"}
    report = verify_billing(gas, root(gw))
    assert report.ok and report.total == 720


def test_a_period_is_inclusive_and_clamped(bill: Bill) -> None:
    last = floor_end(Resolution.MIN15, bill.clock.now)
    body = bill.response(
        bill.gw.electricity_id, from_=format_time(last - timedelta(hours=1)), to=format_time(last)
    )
    assert len(body["readings"]) == 5 * 4
    assert body["readings"][0]["t"] == format_time(last - timedelta(hours=1))
    assert body["readings"][-1]["t"] == format_time(last)
    early = bill.response(bill.gw.gas_id, from_="2000-01-01T00:00:00Z", to="2000-02-01T00:00:00Z")
    assert early["readings"] == []


def test_each_reading_is_signed_once_and_only_read_afterwards(bill: Bill) -> None:
    one = bill.response(bill.gw.gas_id)
    two = bill.response(bill.gw.gas_id)
    assert one == two  # ECDSA signatures are randomised: signing per request would differ
    with sqlite3.connect(bill.gw.state_dir / "gateway.db") as conn:
        stored = dict(conn.execute("SELECT meter, count(*) FROM billing_readings GROUP BY meter"))
    assert stored == {"electricity": 4 * 672, "gas": 720}
    bill.clock.advance(timedelta(hours=1))
    record(bill.gw)
    three = bill.response(bill.gw.gas_id)
    assert three["readings"][:-1] == one["readings"][1:]  # the old ones as they were
    assert three["readings"][-1]["t"] == format_time(floor_end(Resolution.HOUR, bill.clock.now))
    assert verify_billing(three, root(bill.gw)).ok


# --- verification of a saved response -----------------------------------------------------------


def test_a_saved_response_verifies_and_any_tampering_fails(bill: Bill, tmp_path: Path) -> None:
    gw = bill.gw
    reply = bill.billing(gw.electricity_id, **EVER)
    saved = tmp_path / "billing.json"
    saved.write_bytes(reply.body)  # byte for byte as it came
    ca = tmp_path / "root.pem"
    ca.write_bytes(root(gw))
    result = CliRunner().invoke(main, ["verify-billing", str(saved), "--ca", str(ca)])
    assert result.exit_code == 0, result.output
    assert f"OK: 2688 of 2688 readings of {gw.electricity_id} verified" in result.output

    body = json.loads(reply.body)
    tampered = copy.deepcopy(body)
    tampered["readings"][100]["value"] = "000000.001"
    tampered["readings"][2000]["t"] = "2026-03-09T12:00:00Z"
    saved.write_text(json.dumps(tampered))
    result = CliRunner().invoke(main, ["verify-billing", str(saved), "--ca", str(ca), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [f["index"] for f in report["failed"]] == [100, 2000] and report["valid"] == 2686

    small = bill.response(gw.gas_id, from_=format_time(T0 - timedelta(hours=3)), to=format_time(T0))
    assert len(small["readings"]) == 3 and verify_billing(small, root(gw)).ok
    for index, reading in enumerate(small["readings"]):
        for field in ("t", "obis", "value", "unit"):
            changed = copy.deepcopy(small)
            changed["readings"][index][field] = _changed(field, reading[field])
            report = verify_billing(changed, root(gw))
            assert [f.index for f in report.failures] == [index], (index, field)
    swapped = copy.deepcopy(small)
    a, b = swapped["readings"][0], swapped["readings"][1]
    a["signature"], b["signature"] = b["signature"], a["signature"]
    assert [f.index for f in verify_billing(swapped, root(gw)).failures] == [0, 1]
    other = copy.deepcopy(small)
    other["certificate"] = (gw.state_dir / "pki" / "tls.pem").read_text()
    assert not verify_billing(other, root(gw)).ok


def _changed(field: str, value: str) -> str:
    if field == "t":
        return format_time(parse_time(value, "t") + timedelta(hours=1))
    if field == "value":
        return value[:-1] + ("1" if value[-1] != "1" else "2")
    if field == "obis":
        return "0-2:24.2.1.255"
    return "dm3"


# --- gaps, the block, profiles and parameters ---------------------------------------------------


def test_billing_has_gaps_where_history_has_them_and_nothing_before_a_block(
    tmp_path: Path,
) -> None:
    clock = MeterClock()
    state_dir = tmp_path / "gw"
    with history_gateway(state_dir, clock) as (gw, mono):
        token = gw.pair(list(ALL_PROFILES))
    clock.advance(timedelta(hours=3))
    with history_gateway(state_dir, clock) as (gw, mono):
        bill = Bill(gw, mono, clock, token)
        clock.advance(timedelta(hours=1))
        record(gw)
        ends = {r["t"] for r in bill.response(gw.electricity_id)["readings"]}
        hours = {r["t"] for r in bill.response(gw.gas_id)["readings"]}
        for end in interval_ends(Resolution.MIN15, T0, T0 + timedelta(hours=3)):
            assert format_time(end) not in ends
        assert {"2026-03-10T12:00:00Z", "2026-03-10T15:15:00Z", "2026-03-10T16:00:00Z"} <= ends
        assert "2026-03-10T14:00:00Z" not in hours and "2026-03-10T16:00:00Z" in hours

        blocked = gw.control.block_history()
        assert blocked["blocked_at"] == "2026-03-10T16:07:30Z"
        bill.token = gw.pair(list(ALL_PROFILES), name="after the block")
        assert bill.response(gw.electricity_id)["readings"] == []
        assert bill.response(gw.gas_id)["readings"] == []
        with sqlite3.connect(state_dir / "gateway.db") as conn:
            assert conn.execute("SELECT count(*) FROM billing_readings").fetchone() == (0,)
        clock.advance(timedelta(hours=1))
        record(gw)
        after = bill.response(gw.electricity_id)
        assert [r["t"] for r in after["readings"][::4]] == [
            "2026-03-10T16:15:00Z",
            "2026-03-10T16:30:00Z",
            "2026-03-10T16:45:00Z",
            "2026-03-10T17:00:00Z",
        ]
        assert verify_billing(after, root(gw)).ok


def test_billing_needs_the_meters_billing_profile_and_good_parameters(bill: Bill) -> None:
    gw = bill.gw
    historic = gw.pair(["E-HISTORIC", "G-HISTORIC", "E-BILLING"], name="no gas billing")
    gas = bill.billing(gw.gas_id, historic, **EVER)
    assert gas.status == 403 and gas.json["missing"] == ["G-BILLING"]
    only_history = gw.pair(["E-HISTORIC"], name="history only")
    electricity = bill.billing(gw.electricity_id, only_history, **EVER)
    assert electricity.status == 403 and electricity.json["missing"] == ["E-BILLING"]
    assert bill.billing(gw.electricity_id, historic, **EVER).status == 200
    cases = [
        ({"from_": EVER["from"]}, "to"),
        ({"to": EVER["to"]}, "from"),
        ({**EVER, "obis": GAS}, "obis"),
        ({"from_": "soon", "to": EVER["to"]}, "from"),
        ({"from_": EVER["to"], "to": EVER["from"]}, "from"),
    ]
    for params, name in cases:
        reply = bill.billing(gw.electricity_id, **params)
        assert reply.status == 400 and reply.json["message"].startswith(name + ":"), params
    assert bill.billing("G000", **EVER).status == 404
    assert gw.request("GET", f"/api/meters/{gw.gas_id}/billing" + q(**EVER)).status == 401


def test_a_new_signing_certificate_re_signs_what_is_kept(tmp_path: Path) -> None:
    clock = MeterClock()
    state_dir = tmp_path / "gw"
    with history_gateway(state_dir, clock) as (gw, mono):
        token = gw.pair(list(ALL_PROFILES))
        before = Bill(gw, mono, clock, token).response(gw.gas_id)
    pki = state_dir / "pki"
    for name in ("billing.pem", "billing.key"):  # as when the old signer neared its end
        (pki / name).unlink()
    with history_gateway(state_dir, clock) as (gw, mono):
        after = Bill(gw, mono, clock, token).response(gw.gas_id)
        assert after["certificate"] != before["certificate"]
        assert [r["value"] for r in after["readings"]] == [r["value"] for r in before["readings"]]
        assert verify_billing(after, root(gw)).ok
        stale = {**after, "certificate": before["certificate"]}
        assert not verify_billing(stale, root(gw)).ok  # the old key signed nothing here


def test_the_database_keeps_billing_within_recorded_history(tmp_path: Path) -> None:
    from x1p1.gateway.billing_store import BillingStore
    from x1p1.gateway.history import HistoryStore
    from x1p1.gateway.pki import GatewayPKI

    signer = GatewayPKI.load_or_create(tmp_path / "pki").signer()
    conn = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    history, billing = HistoryStore(conn), BillingStore(conn, gas_channel=1)
    history.init_schema()
    billing.init_schema()
    values = {code: 1000.0 + i for i, code in enumerate(REGISTERS)}
    for minutes in (0, 15, 30):
        history.record(E, Resolution.MIN15, T0.replace(minute=minutes, second=0), values)
    history.record(E, Resolution.HOUR, T0.replace(minute=0, second=0), values)  # not billing
    assert billing.sign_pending(signer) == 12 and billing.sign_pending(signer) == 0
    assert billing.count(E) == 12 and billing.count(G) == 0
    unrecorded = int(T0.replace(minute=45, second=0).timestamp())
    conn.execute(
        "INSERT INTO billing_readings VALUES ('electricity', ?, '1-0:1.8.1.255', "
        "'x', '001000.000', 'kWh', 'forged')",
        (unrecorded,),
    )
    assert billing.count(E) == 12  # refused: the gateway recorded no such interval
    conn.execute(
        "DELETE FROM history_readings WHERE resolution = '15m' AND t = ?",
        (int(T0.replace(minute=0, second=0).timestamp()),),
    )
    assert billing.count(E) == 8  # its readings went with it
    history.block(T0.replace(minute=15, second=0))
    assert [format_time(datetime.fromtimestamp(t, UTC)) for t in billing.ends(E)] == [
        "2026-03-10T12:30:00Z"
    ]
    assert billing.adopt_signer(signer) is False  # the first signer: nothing to re-sign
    assert billing.adopt_signer(signer) is False  # the same one
    before = conn.execute("SELECT signature FROM billing_readings").fetchall()
    other = GatewayPKI.load_or_create(tmp_path / "other").signer()
    assert billing.adopt_signer(other) is True and billing.count(E) == 4
    assert conn.execute("SELECT signature FROM billing_readings").fetchall() != before
    conn.close()
