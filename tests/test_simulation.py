"""The gateway's simulated meters: deterministic, exact, consistent, and what P1 readers
accept."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser
from hypothesis import given
from hypothesis import strategies as st

from x1p1.gateway.history import historic_values
from x1p1.gateway.simulation import EPOCH_DATE, MeterSimulation, SimClock, rand
from x1p1.gateway.simulation.days import EPOCH, day, day_index, tariff, to_unix
from x1p1.gateway.simulation.electricity import ElectricityModel
from x1p1.gateway.simulation.solar import flicker
from x1p1.gateway.streams import MeterSelection, Tick
from x1p1.p1.telegram import Telegram
from x1p1.p1.values import NL, parse_timestamp
from x1p1.x1.api import parse_time
from x1p1.x1.obis import OBJECTS, Meter, lookup
from x1p1.x1.profiles import Profile

V5 = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)

E_REGS = ("1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.1", "1-0:2.8.2")
P_IN = ("1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0")
P_OUT = ("1-0:22.7.0", "1-0:42.7.0", "1-0:62.7.0")
VOLTS = ("1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0")
AMPS = ("1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0")


@pytest.fixture(scope="module")
def sim() -> MeterSimulation:
    return MeterSimulation(1)


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    """A Dutch local time (aware)."""
    return datetime(y, mo, d, h, mi, s, tzinfo=NL)


def instants(n: int, seed: int = 3) -> list[datetime]:
    """``n`` random whole-second instants between 2020 and 2027."""
    r = random.Random(seed)
    start = to_unix(datetime(2020, 1, 2, tzinfo=UTC))
    return [datetime.fromtimestamp(start + r.randrange(7 * 365 * 86400), UTC) for _ in range(n)]


def watts(text: str) -> int:
    """``01.234*kW`` → 1234."""
    return int(Decimal(text.split("*")[0]) * 1000)


def shown(sim: MeterSimulation, t: int) -> tuple[int, list[int], list[int]]:
    """(tariff of the second before t, +P and -P per phase in W) as the telegram writes."""
    obj = Telegram.parse(sim.telegram(datetime.fromtimestamp(t, UTC))).as_dict()
    return (tariff(t - 1), [watts(obj[c]) for c in P_IN], [watts(obj[c]) for c in P_OUT])


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_values_whatever_was_asked_before(sim: MeterSimulation) -> None:
    moments = instants(12)
    first = [sim.telegram(t) for t in moments]
    other = MeterSimulation(1)
    second = [other.telegram(t) for t in reversed(moments)][::-1]
    assert first == second
    assert other.registers(moments[3]) == sim.registers(moments[3])
    later = MeterSimulation(1)
    t = moments[5]
    assert later.realtime_values(t) == sim.realtime_values(t)
    assert later.gas_reading(t) == sim.gas_reading(t)


def test_different_seeds_differ(sim: MeterSimulation) -> None:
    other = MeterSimulation(2)
    t = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
    assert other.electricity_id != sim.electricity_id
    assert other.gas_id != sim.gas_id
    assert other.registers(t) != sim.registers(t)
    assert other.telegram(t) != sim.telegram(t)


def test_equipment_ids(sim: MeterSimulation) -> None:
    for s in (1, 2, 99, 2**40):
        m = MeterSimulation(s)
        for ident, letter in ((m.electricity_id, "E"), (m.gas_id, "G")):
            assert len(ident) == 17 and ident[0] == letter and ident[1:].isdigit()
    raw = Telegram.parse(sim.telegram(datetime(2024, 1, 1, tzinfo=UTC))).as_dict()
    assert raw["0-0:96.1.1"] == sim.electricity_id.encode().hex().upper()
    assert raw["0-1:96.1.0"] == sim.gas_id.encode().hex().upper()


def test_fractions_of_a_second_are_dropped(sim: MeterSimulation) -> None:
    t = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert sim.telegram(t + timedelta(microseconds=999_999)) == sim.telegram(t)


def test_the_epoch_itself(sim: MeterSimulation) -> None:
    at = datetime.fromtimestamp(EPOCH, UTC)
    r = sim.readings(at)
    assert r.power_delivered == r.power_returned == 0
    assert sim.registers(at)["1-0:1.8.1.255"] == sim.electricity.base[0] // 3600 / 1000
    V5.parse(sim.telegram(at).decode("ascii"), throw_ex=True)


def test_bad_instants_are_refused(sim: MeterSimulation) -> None:
    with pytest.raises(ValueError, match="aware"):
        sim.registers(datetime(2024, 1, 1))
    before = datetime(EPOCH_DATE.year - 1, 6, 1, tzinfo=UTC)
    for call in (sim.registers, sim.telegram, sim.realtime_values, sim.gas_reading):
        with pytest.raises(ValueError, match="installed"):
            call(before)
    with pytest.raises(ValueError):
        MeterSimulation(1, gas_channel=5)
    with pytest.raises(ValueError):
        list(sim.interval_registers(before, before + timedelta(days=1), timedelta(minutes=7)))
    with pytest.raises(ValueError):
        list(sim.interval_registers(before, before + timedelta(days=1), "2w"))


# --- exact energy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start",
    [
        local(2024, 6, 21, 13, 7, 30),  # summer midday: export on the PV phase
        local(2023, 4, 12, 8, 52, 11),  # morning, PV and load near each other
        local(2025, 1, 14, 6, 50, 0),  # across the 07:00 switch to tariff 2
        local(2024, 3, 31, 1, 55, 0),  # across the spring DST switch (02:00 → 03:00)
        local(2022, 5, 6, 23, 59, 1),  # across local midnight
    ],
)
def test_registers_integrate_the_shown_power_exactly(sim: MeterSimulation, start: datetime) -> None:
    """Joules on the four registers after 15 minutes = the watts of each telegram summed."""
    em = sim.electricity
    t0 = to_unix(start)
    acc = list(em.energy(t0))
    for t in range(t0 + 1, t0 + 901):
        p = em.power(t)
        tr = tariff(t - 1)
        acc[tr - 1] += sum(max(x, 0) for x in p)
        acc[tr + 1] += sum(max(-x, 0) for x in p)
        if t % 60 == 0:
            assert tuple(acc) == em.energy(t)
    assert tuple(acc) == em.energy(t0 + 900)
    # ...and the telegrams show exactly those watts (sampled), and whole watt-hours.
    for t in range(t0 + 1, t0 + 901, 37):
        tr, plus, minus = shown(sim, t)
        p = em.power(t)
        assert plus == [max(x, 0) for x in p] and minus == [max(-x, 0) for x in p]
    raw = Telegram.parse(sim.telegram(datetime.fromtimestamp(t0 + 900, UTC))).as_dict()
    assert [watts(raw[c]) for c in E_REGS] == [j // 3600 for j in acc]


def test_telegram_registers_follow_the_telegram_powers(sim: MeterSimulation) -> None:
    """Over 15 minutes, Wh from the telegrams' own +P/-P match their register deltas to 1 Wh."""
    t0 = to_unix(local(2024, 7, 2, 12, 0, 0))
    first = Telegram.parse(sim.telegram(datetime.fromtimestamp(t0, UTC))).as_dict()
    ws = [0, 0, 0, 0]
    for t in range(t0 + 1, t0 + 901):
        tr, plus, minus = shown(sim, t)
        ws[tr - 1] += sum(plus)
        ws[tr + 1] += sum(minus)
    last = Telegram.parse(sim.telegram(datetime.fromtimestamp(t0 + 900, UTC))).as_dict()
    for i, code in enumerate(E_REGS):
        delta_wh = watts(last[code]) - watts(first[code])
        assert abs(delta_wh - ws[i] / 3600) <= 1


def test_registers_never_decrease(sim: MeterSimulation) -> None:
    moments = sorted(instants(60, seed=11))
    previous = sim.registers(moments[0])
    for t in moments[1:]:
        now = sim.registers(t)
        assert all(now[k] >= previous[k] for k in now), t
        previous = now
    t0 = to_unix(local(2024, 10, 27, 1, 0, 0))  # the autumn DST night, second by second
    em = sim.electricity
    last = em.energy(t0)
    for s in range(t0 + 1, t0 + 4 * 3600, 7):
        now_j = em.energy(s)
        assert all(a >= b for a, b in zip(now_j, last, strict=True))
        last = now_j


def test_day_totals_agree_with_block_detail() -> None:
    """The fast path of a day's energy (prefix sums) equals the block-by-block one."""
    for seed in (1, 5, 17):  # 17 has a three-phase inverter
        em = ElectricityModel(seed)
        r = random.Random(seed)
        days = [day(r.randrange(0, 7 * 365)) for _ in range(40)]
        days += [
            day(day_index(to_unix(local(y, m, d, 12))))
            for y, m, d in ((2024, 3, 31), (2024, 10, 27), (2021, 6, 21), (2022, 12, 21))
        ]
        for d in days:
            assert em.day_energy(d) == em.detail(d.index).running[-1], (seed, d.date)
    assert ElectricityModel(17).pv.phases == (0, 1, 2)


def test_minutes_add_up_to_blocks() -> None:
    """Each block's import and export = its minutes' (what the seconds then show)."""
    for seed in (1, 7):
        em = ElectricityModel(seed)
        r = random.Random(seed)
        indices = [r.randrange(0, 7 * 365) for _ in range(12)]
        indices += [day_index(to_unix(local(2024, m, 10 + m, 12))) for m in range(3, 10)]
        indices.append(day_index(to_unix(local(2024, 10, 27, 12))))
        for index in indices:
            d = day(index)
            running = em.detail(index).running
            for pos in range(d.positions):
                imp = sum(max(n, 0) for row in em.block_minutes(d, pos) for n in row)
                exp = sum(max(-n, 0) for row in em.block_minutes(d, pos) for n in row)
                delta = [b - a for a, b in zip(running[pos], running[pos + 1], strict=True)]
                want = [imp, 0, exp, 0] if d.tariffs[pos] == 1 else [0, imp, 0, exp]
                assert delta == want, (seed, d.date, pos)


def test_midnights_sum_the_days() -> None:
    em = ElectricityModel(4)
    total = [0, 0, 0, 0]
    for i in range(20):
        for k, v in enumerate(em.day_energy(day(i))):
            total[k] += v
    assert em.midnight(20) == tuple(total)
    j = em.energy(day(20).start)
    assert j == tuple(60 * a + b for a, b in zip(total, em.base, strict=True))


# --- tariffs, PV, phases ----------------------------------------------------------------------


def test_tariff_switches_at_local_times() -> None:
    def at(*args: int) -> int:
        return tariff(to_unix(local(*args)))

    # Monday 2024-01-15 (winter): 07:00 and 23:00 local
    assert at(2024, 1, 15, 6, 59, 59) == 1 and at(2024, 1, 15, 7, 0, 0) == 2
    assert at(2024, 1, 15, 22, 59, 59) == 2 and at(2024, 1, 15, 23, 0, 0) == 1
    assert at(2024, 1, 16, 3, 0, 0) == 1
    # Summer time: the same local hours, two hours from UTC
    assert tariff(to_unix(datetime(2024, 7, 15, 4, 59, 59, tzinfo=UTC))) == 1
    assert tariff(to_unix(datetime(2024, 7, 15, 5, 0, 0, tzinfo=UTC))) == 2
    assert tariff(to_unix(datetime(2024, 7, 15, 20, 59, 59, tzinfo=UTC))) == 2
    assert tariff(to_unix(datetime(2024, 7, 15, 21, 0, 0, tzinfo=UTC))) == 1
    # Weekend: Friday 23:00 until Monday 07:00
    assert at(2024, 1, 19, 22, 59, 59) == 2 and at(2024, 1, 19, 23, 0, 0) == 1
    for hour in range(24):
        assert at(2024, 1, 20, hour, 30, 0) == 1 and at(2024, 1, 21, hour, 30, 0) == 1
    assert at(2024, 1, 22, 6, 59, 59) == 1 and at(2024, 1, 22, 7, 0, 0) == 2
    # The Mondays after the DST switches (they fall on Sundays)
    assert tariff(to_unix(datetime(2024, 4, 1, 4, 59, 59, tzinfo=UTC))) == 1
    assert tariff(to_unix(datetime(2024, 4, 1, 5, 0, 0, tzinfo=UTC))) == 2
    assert tariff(to_unix(datetime(2024, 10, 28, 5, 59, 59, tzinfo=UTC))) == 1
    assert tariff(to_unix(datetime(2024, 10, 28, 6, 0, 0, tzinfo=UTC))) == 2


def test_tariff_in_telegram_and_registers(sim: MeterSimulation) -> None:
    saturday = local(2024, 6, 1, 0, 0, 0)
    monday = local(2024, 6, 3, 0, 0, 0)
    a, b = sim.registers(saturday), sim.registers(monday)
    assert b["1-0:1.8.2.255"] == a["1-0:1.8.2.255"]  # nothing on tariff 2 all weekend
    assert b["1-0:2.8.2.255"] == a["1-0:2.8.2.255"]
    assert b["1-0:1.8.1.255"] > a["1-0:1.8.1.255"]
    noon = sim.realtime_values(local(2024, 6, 4, 12, 0, 0))
    assert noon["0-0:96.14.0.255"] == 2
    raw = Telegram.parse(sim.telegram(local(2024, 6, 4, 12, 0, 0))).as_dict()
    assert raw["0-0:96.14.0"] == "0002"
    night = Telegram.parse(sim.telegram(local(2024, 6, 4, 2, 0, 0))).as_dict()
    assert night["0-0:96.14.0"] == "0001"


def test_pv_exports_at_midday_in_summer_and_never_at_night(sim: MeterSimulation) -> None:
    summer = winter = 0
    exporting_days = 0
    for k in range(20):
        noon = local(2024, 6, 1 + k, 13, 30, 0)
        ws = [sum(shown(sim, to_unix(noon) + 60 * m)[2]) for m in range(0, 60, 6)]
        exporting_days += any(ws)
        summer += sum(ws)
        wnoon = local(2023, 12, 1 + k, 13, 30, 0)
        winter += sum(sum(shown(sim, to_unix(wnoon) + 60 * m)[2]) for m in range(0, 60, 6))
        for hour in (0, 2, 4, 23):
            assert shown(sim, to_unix(local(2024, 6, 1 + k, hour, 17, 0)))[2] == [0, 0, 0]
    assert exporting_days >= 15
    assert summer > 3 * winter
    # Over a summer day, export registers grow and over a winter night they do not.
    a, b = sim.registers(local(2024, 6, 10)), sim.registers(local(2024, 6, 17))
    assert b["1-0:2.8.1.255"] + b["1-0:2.8.2.255"] > a["1-0:2.8.1.255"] + a["1-0:2.8.2.255"] + 20
    n1, n2 = sim.registers(local(2024, 1, 10, 0)), sim.registers(local(2024, 1, 10, 6))
    assert n1["1-0:2.8.1.255"] == n2["1-0:2.8.1.255"]


def test_yearly_figures_are_plausible(sim: MeterSimulation) -> None:
    a, b = sim.registers(local(2023, 1, 1)), sim.registers(local(2024, 1, 1))
    used = b["1-0:1.8.1.255"] + b["1-0:1.8.2.255"] - a["1-0:1.8.1.255"] - a["1-0:1.8.2.255"]
    back = b["1-0:2.8.1.255"] + b["1-0:2.8.2.255"] - a["1-0:2.8.1.255"] - a["1-0:2.8.2.255"]
    gas = b["0-1:24.2.1.255"] - a["0-1:24.2.1.255"]
    assert 1500 < used < 6000 and 500 < back < 6000 and 500 < gas < 2500


def test_phases_sum_to_totals_and_currents_follow(sim: MeterSimulation) -> None:
    for t in instants(150, seed=5):
        raw = Telegram.parse(sim.telegram(t)).as_dict()
        plus = [watts(raw[c]) for c in P_IN]
        minus = [watts(raw[c]) for c in P_OUT]
        assert watts(raw["1-0:1.7.0"]) == sum(plus)
        assert watts(raw["1-0:2.7.0"]) == sum(minus)
        values = sim.realtime_values(t)
        for ph in range(3):
            assert plus[ph] == 0 or minus[ph] == 0
            volts = float(raw[VOLTS[ph]].split("*")[0])
            assert 190 < volts < 260
            amps = int(raw[AMPS[ph]].split("*")[0])
            assert amps == round((plus[ph] + minus[ph]) / volts)
            precise = values[AMPS[ph] + ".255"]
            assert isinstance(precise, float)
            assert abs(precise - (plus[ph] + minus[ph]) / volts) <= 0.0005


def test_voltage_rises_when_exporting(sim: MeterSimulation) -> None:
    exporting, importing = [], []
    for t in instants(400, seed=8):
        r = sim.readings(t)
        for ph in range(3):
            if r.powers_returned[ph] > 1.0:
                exporting.append(r.voltages[ph])
            elif r.powers_delivered[ph] > 1.0:
                importing.append(r.voltages[ph])
    assert exporting and importing
    assert sum(exporting) / len(exporting) > sum(importing) / len(importing)


# --- P1 readers -------------------------------------------------------------------------------


def test_dsmr_parser_accepts_every_telegram(sim: MeterSimulation) -> None:
    for t in instants(200, seed=21):
        raw = sim.telegram(t)
        parsed = V5.parse(raw.decode("ascii"), throw_ex=True)
        regs = sim.registers(t)
        assert parsed.P1_MESSAGE_TIMESTAMP.value == t
        assert float(parsed.ELECTRICITY_USED_TARIFF_1.value) == regs["1-0:1.8.1.255"]
        assert float(parsed.ELECTRICITY_DELIVERED_TARIFF_2.value) == regs["1-0:2.8.2.255"]
        assert int(parsed.VOLTAGE_SAG_L2_COUNT.value) == regs["1-0:52.32.0.255"]
        gas = parsed.get_mbus_device_by_channel(1).MBUS_METER_READING
        capture, m3 = sim.gas_reading(t)
        assert gas.datetime == capture and float(gas.value) == m3 == regs["0-1:24.2.1.255"]
        assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")


def test_registers_are_what_the_telegram_shows(sim: MeterSimulation) -> None:
    for t in instants(40, seed=31):
        raw = Telegram.parse(sim.telegram(t)).as_dict()
        regs = sim.registers(t)
        assert set(regs) == {obj.for_channel(1) for obj in OBJECTS if obj.historic}
        for code, value in regs.items():
            p1 = code.rsplit(".", 1)[0]
            text = raw[p1]
            if p1.startswith("0-1:24.2.1"):
                text = text.split(")(")[1].rstrip(")")
            number = Decimal(text.split("*")[0])
            assert number == Decimal(str(value)), code
        values = sim.realtime_values(t)
        assert all(values[code] == regs[code] for code in regs)


def test_realtime_values_cover_the_registry(sim: MeterSimulation) -> None:
    wanted = {Profile.E_REALTIME, Profile.PQ_REALTIME, Profile.G_REALTIME}
    sim2 = MeterSimulation(1, gas_channel=2)
    t = local(2025, 2, 3, 18, 30, 0)
    for m, channel in ((sim, 1), (sim2, 2)):
        values = m.realtime_values(t)
        codes = {obj.for_channel(channel) for obj in OBJECTS if obj.profiles & wanted}
        assert set(values) == codes
        for obj in OBJECTS:
            code = obj.for_channel(channel)
            if code not in values:
                continue
            value = values[code]
            if obj.numeric:
                assert isinstance(value, int | float) and not isinstance(value, bool), code
                assert round(float(value), obj.decimals) == value, code
            elif code == "1-0:99.97.0.255":  # x1-api.md: a list of {t, duration_s}
                assert isinstance(value, list), code
            else:
                assert isinstance(value, str), code
        assert values[f"0-{channel}:24.1.0.255"] == 3
        assert values[f"0-{channel}:96.1.0.255"] == m.gas_id
        assert values["0-0:96.1.1.255"] == m.electricity_id
    raw2 = Telegram.parse(sim2.telegram(t)).as_dict()
    assert "0-2:24.2.1" in raw2 and "0-1:24.2.1" not in raw2
    log = Telegram.parse(sim.telegram(t)).get("1-0:99.97.0")
    assert log is not None
    entries = sim.realtime_values(t)["1-0:99.97.0.255"]
    assert isinstance(entries, list)
    # x1-api.md: a list of {t, duration_s}, newest first, the telegram's entries
    assert int(log.values[0]) == len(entries)
    for k, entry in enumerate(entries):
        stamp, duration = log.values[2 + 2 * k], log.values[3 + 2 * k]
        assert entry["duration_s"] == int(duration.removesuffix("*s"))
        assert parse_time(entry["t"], "t") == parse_timestamp(stamp)


# --- power quality ----------------------------------------------------------------------------


def test_power_quality_changes_now_and_then(sim: MeterSimulation) -> None:
    codes = [obj.code for obj in OBJECTS if obj.historic and obj.meter is Meter.ELECTRICITY]
    pq = [c for c in codes if not c.startswith("1-0:1.8") and not c.startswith("1-0:2.8")]
    assert len(pq) == 8
    a, b = sim.registers(local(2023, 1, 1)), sim.registers(local(2024, 1, 1))
    events = sum(b[c] - a[c] for c in pq)
    assert 12 <= events <= 150  # a few a month
    week_a, week_b = sim.registers(local(2023, 5, 1)), sim.registers(local(2023, 5, 8))
    assert sum(week_b[c] - week_a[c] for c in pq) <= 12
    log = sim.failure_log(local(2026, 1, 1))
    assert 0 < len(log) <= 10
    assert [e.end for e in log] == sorted((e.end for e in log), reverse=True)
    assert all(180 < e.duration_s <= 4 * 3600 for e in log)
    regs = sim.registers(local(2026, 1, 1))
    assert regs["0-0:96.7.9.255"] >= len(log)
    before = sim.failure_log(log[0].end - timedelta(seconds=1))
    assert before == log[1 : len(before) + 1]  # the newest one appears at its end


# --- gas ----------------------------------------------------------------------------------------


class NoGasReadingYet(MeterSimulation):
    """A gas meter on M-Bus that has not delivered its first 5-minute reading yet."""

    def _gas(self, t: int) -> tuple[int, int] | None:
        return None


def test_a_gas_meter_without_a_reading_is_left_out_never_zero() -> None:
    """No reading: the realtime values, the stream's G-REALTIME message and the history
    leave the reading out, and the P1 telegram writes it empty (P1 §7.3); none invents
    0 m3. The meter itself (its type and id) is still there."""
    sim = NoGasReadingYet(1)
    at = datetime(2026, 3, 2, 9, 0, 7, tzinfo=UTC)
    values = sim.realtime_values(at)
    assert "0-1:24.2.1.255" not in values
    assert values["0-1:96.1.0.255"] == sim.gas_id and values["0-1:24.1.0.255"] == 3
    assert sim.gas_reading(at) is None
    assert "\r\n0-1:24.2.1()\r\n" in sim.telegram(at).decode("ascii")
    assert "0-1:24.2.1.255" not in sim.registers(at)
    assert historic_values(Meter.GAS, sim.registers(at)) == {}  # no history row
    codes = ("0-1:24.2.1.255", "0-1:96.1.0.255")
    selection = MeterSelection(sim.gas_id, Meter.GAS, tuple(lookup(c) for c in codes))
    message = json.loads(Tick(0, at, sim).realtime(selection))
    assert message["values"] == {"0-1:96.1.0.255": sim.gas_id}
    assert parse_time(message["t"], "t") == at  # the tick's time: no capture to carry
    # with a reading, the same code carries it and its own capture time
    message = json.loads(Tick(0, at, MeterSimulation(1)).realtime(selection))
    assert message["values"]["0-1:24.2.1.255"] > 0
    assert parse_time(message["t"], "t") == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_gas_reading_holds_for_five_minutes(sim: MeterSimulation) -> None:
    for t in instants(30, seed=41):
        capture, m3 = sim.gas_reading(t)
        assert capture <= t < capture + timedelta(minutes=5)
        local_capture = capture.astimezone(NL)
        assert local_capture.minute % 5 == 0 and local_capture.second == 0
        for k in (1, 100, 299):
            later = capture + timedelta(seconds=k)
            assert sim.gas_reading(later) == (capture, m3)
        nxt = sim.gas_reading(capture + timedelta(minutes=5))
        assert nxt[0] == capture + timedelta(minutes=5) and nxt[1] >= m3
        tst = Telegram.parse(sim.telegram(t)).get("0-1:24.2.1")
        assert tst is not None and parse_timestamp(tst.values[0]) == capture


def test_gas_follows_season_and_hour(sim: MeterSimulation) -> None:
    def used(a: datetime, b: datetime) -> float:
        return sim.gas_reading(b)[1] - sim.gas_reading(a)[1]

    january = used(local(2024, 1, 8), local(2024, 1, 22))
    july = used(local(2024, 7, 8), local(2024, 7, 22))
    assert january > 4 * july > 0
    night = morning = 0.0
    for k in range(14):
        d = (2024, 1, 8 + k)
        night += used(local(*d, 1), local(*d, 5))
        morning += used(local(*d, 6), local(*d, 10))
    assert morning > 2 * night


def test_gas_splits_add_up() -> None:
    gas = MeterSimulation(3).gas
    for index in (0, 400, 1550, day_index(to_unix(local(2024, 10, 27, 12)))):
        d = day(index)
        hours = gas.hours(index)
        assert len(hours) == d.positions // 4
        assert sum(hours) == sum(gas.day_parts(d))
        for h, litres in enumerate(hours):
            assert sum(gas.slots(index, h)) == litres
        assert gas.midnight(index + 1) - gas.midnight(index) == sum(hours)


# --- history sampling -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "span", "every"),
    [
        (timedelta(minutes=15), timedelta(days=2), timedelta(minutes=15)),
        ("15m", timedelta(days=1), timedelta(minutes=15)),
        (timedelta(hours=1), timedelta(days=5), timedelta(hours=1)),
        ("5m", timedelta(hours=3), timedelta(minutes=5)),
    ],
)
def test_interval_registers_match_registers(
    sim: MeterSimulation, step: timedelta | str, span: timedelta, every: timedelta
) -> None:
    start = datetime(2024, 3, 30, 10, 7, 3, tzinfo=UTC)  # spans the spring DST switch
    ends = list(sim.interval_registers(start, start + span, step))
    assert ends[0][0] > start and ends[-1][0] <= start + span
    assert len(ends) == span // every
    seconds = int(every.total_seconds())
    for t, values in ends:
        assert t.tzinfo is not None and to_unix(t) % seconds == 0
        assert values == sim.registers(t)
    for (a, _), (b, _) in zip(ends, ends[1:], strict=False):
        assert b - a == every


def test_daily_and_monthly_ends_are_local_midnights(sim: MeterSimulation) -> None:
    start = local(2024, 3, 15)
    days = list(sim.interval_registers(start, local(2024, 11, 15), "1d"))
    assert days[0][0] == local(2024, 3, 16) and days[-1][0] == local(2024, 11, 15)
    assert len(days) == (local(2024, 11, 15).date() - local(2024, 3, 15).date()).days
    for t, values in days[::17]:
        lt = t.astimezone(NL)
        assert (lt.hour, lt.minute, lt.second) == (0, 0, 0)
        assert values == sim.registers(t)
    assert list(sim.interval_registers(start, local(2024, 4, 1), timedelta(days=1)))[-1][
        0
    ] == local(2024, 4, 1)
    months = list(sim.interval_registers(local(2021, 1, 1), local(2025, 12, 31), "1M"))
    assert len(months) == 59 and months[0][0] == local(2021, 2, 1)
    for t, values in months:
        assert t.astimezone(NL).day == 1 and t.astimezone(NL).hour == 0
        assert values == sim.registers(t)
    # from before the meters were installed: the first end is the epoch's next midnight
    early = list(sim.interval_registers(datetime(2019, 1, 1, tzinfo=UTC), local(2020, 1, 3), "1d"))
    assert [t for t, _ in early] == [local(2020, 1, 1), local(2020, 1, 2), local(2020, 1, 3)]


# --- building blocks --------------------------------------------------------------------------


def test_sim_clock() -> None:
    anchor = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    clock = SimClock(1000.0, anchor, 60.0)
    assert clock.sim_now(1000.0) == anchor
    assert clock.sim_now(1001.0) == anchor + timedelta(minutes=1)
    assert clock.sim_now(1000.5) == anchor + timedelta(seconds=30)
    assert clock.sim_now(1000.0 + 86400 / 60) == anchor + timedelta(days=1)
    assert clock.wall_at(anchor + timedelta(hours=1)) == pytest.approx(1060.0)
    same = SimClock(5.0, anchor)
    assert same.sim_now(17.25) == anchor + timedelta(seconds=12.25)
    with pytest.raises(ValueError):
        SimClock(0.0, anchor, 0)
    with pytest.raises(ValueError):
        SimClock(0.0, anchor, float("nan"))
    with pytest.raises(ValueError):
        SimClock(0.0, datetime(2025, 1, 1), 1)


def test_epoch_is_local_midnight() -> None:
    assert datetime.fromtimestamp(EPOCH, NL) == local(
        EPOCH_DATE.year, EPOCH_DATE.month, EPOCH_DATE.day
    )
    assert day(0).start == EPOCH and day(0).positions == 96
    spring = day(day_index(to_unix(local(2024, 3, 31, 12))))
    autumn = day(day_index(to_unix(local(2024, 10, 27, 12))))
    assert spring.positions == 92 and autumn.positions == 100
    assert spring.clocks[7:9] == (7, 12) and autumn.clocks[11:17] == (11, 8, 9, 10, 11, 12)


@given(st.integers(0, 10**9), st.lists(st.integers(0, 10**6), min_size=1, max_size=40))
def test_apportion_is_exact(total: int, weights: list[int]) -> None:
    parts = rand.apportion(total, weights)
    assert sum(parts) == total and all(p >= 0 for p in parts)
    whole = sum(weights)
    if whole:
        assert all(abs(p - total * w / whole) < 1 for p, w in zip(parts, weights, strict=True))


@given(st.integers(0, 2**64 - 1), st.integers(0, 5000))
def test_flicker_sums_to_zero_within_its_bound(block_key: int, bound: int) -> None:
    f = flicker(block_key, bound)
    assert len(f) == 15 and sum(f) == 0 and all(abs(x) <= bound for x in f)
