"""The simulated meters as the gateway sees them: :class:`MeterSimulation`.

One object answers every question the gateway asks of its meters (X1 §6.2, §7.2, §7.3):
the P1 telegram of a second (built by :func:`x1p1.p1.dsmr5.build`), the realtime values
of the E-REALTIME, PQ-REALTIME and G-REALTIME objects, the gas meter's 5-minute reading,
and the historic registers at any instant or at every interval end of a period. All of
them come from the same models, so they agree: ``registers(t)`` holds exactly the values
the telegram at ``t`` shows (to its three decimals), and history is nothing but
``registers`` at interval ends.

Everything is a pure function of the seed and the instant: no answer depends on what was
asked before, so history can be backfilled in any order and a restarted gateway carries
on with the same registers. Instants are aware datetimes; fractions of a second are
dropped (the meters live in whole seconds). Times before the meters were installed
(:data:`~x1p1.gateway.simulation.days.EPOCH_DATE`, local midnight) raise ValueError.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

from x1p1.gateway.simulation import rand
from x1p1.gateway.simulation.days import (
    BLOCK,
    EPOCH,
    day,
    day_index,
    from_unix,
    tariff,
    to_unix,
)
from x1p1.gateway.simulation.electricity import ElectricityModel
from x1p1.gateway.simulation.gas import GasModel
from x1p1.gateway.simulation.quality import SAG, SWELL, PowerQuality
from x1p1.p1.dsmr5 import MbusDevice, PowerFailure, Readings, build
from x1p1.x1.api import POWER_FAILURE_LOG, power_failure_json

GAS_DEVICE_TYPE = 3
"""M-Bus device type of a gas meter (P1 §7.3, 0-n:24.1.0)."""

E_REGISTERS = ("1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:2.8.1.255", "1-0:2.8.2.255")
PQ_COUNTERS = (
    "0-0:96.7.21.255",
    "0-0:96.7.9.255",
    "1-0:32.32.0.255",
    "1-0:52.32.0.255",
    "1-0:72.32.0.255",
    "1-0:32.36.0.255",
    "1-0:52.36.0.255",
    "1-0:72.36.0.255",
)
_VOLTAGE = ("1-0:32.7.0.255", "1-0:52.7.0.255", "1-0:72.7.0.255")
_CURRENT = ("1-0:31.7.0.255", "1-0:51.7.0.255", "1-0:71.7.0.255")
_POWER_IN = ("1-0:21.7.0.255", "1-0:41.7.0.255", "1-0:61.7.0.255")
_POWER_OUT = ("1-0:22.7.0.255", "1-0:42.7.0.255", "1-0:62.7.0.255")

_NAMED_STEPS = {
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
}


def _equipment_id(letter: str, seed: int, which: int) -> str:
    """``E0044007312345617``-like: letter, ``00``, maker, ten-digit serial, year."""
    r = rand.rng(seed, rand.IDS, which)
    return f"{letter}00{r.randrange(31, 50)}{r.randrange(10**10):010d}{r.choice((18, 19))}"


class MeterSimulation:
    """A 3-phase electricity meter with PV and a gas meter on M-Bus ``gas_channel``.

    Values by six-group OBIS code (the registry's units: kWh, kW, V, A, m3):

    - :meth:`realtime_values`: every E-REALTIME, PQ-REALTIME and G-REALTIME object.
      Registers and powers are floats with the registry's decimals, counters and the
      tariff ints, equipment ids plain strings. The power-failure log 1-0:99.97.0 is a
      list of ``{"t": "<RFC 3339 end>", "duration_s": N}``, newest entry first: the
      entries the telegram writes after the code (x1-api.md, §6.2.4).
      The gas value is the latest 5-minute reading; :meth:`gas_reading` gives its time.
    - :meth:`registers`: every historic object (E registers, PQ counters, the gas
      register of this channel), the values a telegram at that instant shows.
    """

    def __init__(self, seed: int = 1, *, gas_channel: int = 1) -> None:
        if not 1 <= gas_channel <= 4:
            raise ValueError(f"an M-Bus channel is 1 to 4, not {gas_channel}")
        self.seed = seed
        self.gas_channel = gas_channel
        self.electricity_id = _equipment_id("E", seed, 0)
        """Plain text; the telegram writes it hex-encoded (P1 §6.5)."""
        self.gas_id = _equipment_id("G", seed, 1)
        self.electricity = ElectricityModel(seed)
        self.gas = GasModel(seed)
        self.quality = PowerQuality(seed)
        self._gas_code = f"0-{gas_channel}:24.2.1.255"
        self._lock = threading.RLock()

    # --- the parts ------------------------------------------------------------------------

    def _gas(self, t: int) -> tuple[int, int] | None:
        """(capture time, litres) of the gas meter's latest 5-minute reading at ``t``, or
        None while it has none yet: the one source of the telegram's, the realtime
        messages' and the history's gas value, so that the three agree."""
        return self.gas.reading(t)

    def _registers(self, t: int) -> dict[str, float]:
        wh = [j // 3600 for j in self.electricity.energy(t)]
        pq = self.quality.counters(t)
        values: dict[str, float] = {c: v / 1000 for c, v in zip(E_REGISTERS, wh, strict=True)}
        counts = (pq.power_failures, pq.long_power_failures, *pq.sags, *pq.swells)
        values.update(zip(PQ_COUNTERS, counts, strict=True))
        gas = self._gas(t)
        if gas is not None:  # no reading: the history leaves the gas meter out (§12.2)
            values[self._gas_code] = gas[1] / 1000
        return values

    def _voltages(self, t: int, watts: tuple[int, int, int]) -> tuple[float, float, float]:
        """Volts over the second ``[t-1, t)``: the grid's slow drift, a rise when the
        phase exports and a drop when it imports, a little noise, and, while one lasts, a
        sag (about 30 V down) or a swell (about 24 V up)."""
        s = t - 1
        block, into = divmod(s - EPOCH, BLOCK)
        events = [e for e in self.quality.events(s - 30, s + 1) if e[0] <= s < e[0] + e[3]]
        out = []
        for ph in range(3):
            a = rand.unit(self.seed, rand.GRID, ph, block)
            b = rand.unit(self.seed, rand.GRID, ph, block + 1)
            volts = 228.5 + 5.0 * (a + (b - a) * into / BLOCK)
            p = watts[ph]
            volts += 0.0009 * -p if p < 0 else -0.00035 * p
            volts += 0.6 * (rand.unit(self.seed, rand.VOLTAGE, ph, s) - 0.5)
            for _, kind, phase, _ in events:
                if phase == ph and kind == SAG:
                    volts -= 30.0
                elif phase == ph and kind == SWELL:
                    volts += 24.0
            out.append(round(volts, 1))
        return out[0], out[1], out[2]

    # --- the API --------------------------------------------------------------------------

    def readings(self, at: datetime) -> Readings:
        """What the meters report at ``at`` (for :func:`x1p1.p1.dsmr5.build`)."""
        t = to_unix(at)
        with self._lock:
            return self._readings(t)

    def _readings(self, t: int) -> Readings:
        wh = [j // 3600 for j in self.electricity.energy(t)]
        watts = self.electricity.power(t)
        volts = self._voltages(t, watts)
        pq = self.quality.counters(t)
        gas = self._gas(t)
        imports = tuple(max(p, 0) for p in watts)
        exports = tuple(max(-p, 0) for p in watts)
        return Readings(
            timestamp=from_unix(t),
            equipment_id=self.electricity_id,
            delivered=(wh[0] / 1000, wh[1] / 1000),
            returned=(wh[2] / 1000, wh[3] / 1000),
            tariff=tariff(t),
            power_delivered=sum(imports) / 1000,
            power_returned=sum(exports) / 1000,
            voltages=volts,
            currents=tuple(
                round(abs(p) / v, 3) if v else 0.0 for p, v in zip(watts, volts, strict=True)
            ),
            powers_delivered=tuple(p / 1000 for p in imports),
            powers_returned=tuple(p / 1000 for p in exports),
            power_failures=pq.power_failures,
            long_power_failures=pq.long_power_failures,
            failure_log=self._failure_log(t),
            sags=pq.sags,
            swells=pq.swells,
            mbus=(
                MbusDevice(
                    self.gas_channel,
                    GAS_DEVICE_TYPE,
                    self.gas_id,
                    None if gas is None else from_unix(gas[0]),
                    None if gas is None else gas[1] / 1000,
                ),
            ),
        )

    def _failure_log(self, t: int) -> tuple[PowerFailure, ...]:
        return tuple(PowerFailure(from_unix(end), d) for end, d in self.quality.log(t))

    def failure_log(self, at: datetime) -> tuple[PowerFailure, ...]:
        """The power-failure event log at ``at``: up to ten long failures, newest first."""
        with self._lock:
            return self._failure_log(to_unix(at))

    def telegram(self, at: datetime) -> bytes:
        """The DSMR 5.0.2 P1 telegram of ``at``, byte for byte, CRC included."""
        return build(self.readings(at)).serialize()

    def realtime_values(self, at: datetime) -> dict[str, object]:
        """Every E-, PQ- and G-REALTIME object at ``at`` by six-group code (see the class)."""
        r = self.readings(at)
        values: dict[str, object] = {
            "0-0:96.1.1.255": r.equipment_id,
            "1-0:1.8.1.255": r.delivered[0],
            "1-0:1.8.2.255": r.delivered[1],
            "1-0:2.8.1.255": r.returned[0],
            "1-0:2.8.2.255": r.returned[1],
            "0-0:96.14.0.255": r.tariff,
            "1-0:1.7.0.255": r.power_delivered,
            "1-0:2.7.0.255": r.power_returned,
            "0-0:96.7.21.255": r.power_failures,
            "0-0:96.7.9.255": r.long_power_failures,
            POWER_FAILURE_LOG: [power_failure_json(f.end, f.duration_s) for f in r.failure_log],
        }
        for codes, numbers in (
            (PQ_COUNTERS[2:5], r.sags),
            (PQ_COUNTERS[5:], r.swells),
            (_VOLTAGE, r.voltages),
            (_CURRENT, r.currents),
            (_POWER_IN, r.powers_delivered),
            (_POWER_OUT, r.powers_returned),
        ):
            values.update(zip(codes, numbers, strict=True))
        n = self.gas_channel
        gas = r.mbus[0]
        values[f"0-{n}:24.1.0.255"] = GAS_DEVICE_TYPE
        values[f"0-{n}:96.1.0.255"] = self.gas_id
        if gas.value is not None:  # no reading yet: left out, never an invented 0 (§6.1)
            values[f"0-{n}:24.2.1.255"] = gas.value
        return values

    def gas_reading(self, at: datetime) -> tuple[datetime, float] | None:
        """(capture time, m3) of the latest 5-minute gas reading at or before ``at``;
        None while the gas meter has none yet."""
        with self._lock:
            gas = self._gas(to_unix(at))
        return None if gas is None else (from_unix(gas[0]), gas[1] / 1000)

    def registers(self, at: datetime) -> dict[str, float]:
        """Every historic object's value at ``at``: E registers (kWh), PQ counters (ints),
        the gas register of this channel (m3, its latest 5-minute reading)."""
        t = to_unix(at)
        with self._lock:
            return self._registers(t)

    def interval_registers(
        self, start: datetime, end: datetime, step: timedelta | str
    ) -> Iterator[tuple[datetime, dict[str, float]]]:
        """:meth:`registers` at each interval end ``t`` with ``start < t <= end``, oldest
        first, times in UTC.

        ``step`` is a timedelta of whole seconds that divides a day (5, 15 minutes, an
        hour: ends on multiples of it in Unix time, which are the same in Dutch local time
        for steps that divide an hour), or one of the X1 resolutions ``"5m"``, ``"15m"``,
        ``"1h"``, ``"1d"`` (local midnights) and ``"1M"`` (local midnight on the first of a
        month); ``timedelta(days=1)`` means ``"1d"``.
        """
        for t in self._ends(to_unix(start), to_unix(end), step):
            with self._lock:
                values = self._registers(t)
            yield from_unix(t), values

    def _ends(self, start: int, end: int, step: timedelta | str) -> Iterator[int]:
        if isinstance(step, str):
            if step in _NAMED_STEPS:
                step = _NAMED_STEPS[step]
            elif step not in ("1d", "1M"):
                raise ValueError(f"unknown resolution {step!r}: 5m, 15m, 1h, 1d or 1M")
        if step == timedelta(days=1):
            step = "1d"
        if isinstance(step, str):
            d = day(day_index(start) + 1 if start >= EPOCH else 0)
            while d.start <= end:
                if step == "1d" or d.date.day == 1:
                    yield d.start
                d = day(d.index + 1)
            return
        seconds = step.total_seconds()
        if seconds <= 0 or seconds != int(seconds) or 86400 % int(seconds):
            raise ValueError(f"step must be whole seconds dividing a day, not {step}")
        size = int(seconds)
        t = (max(start, EPOCH - 1) // size + 1) * size
        while t <= end:
            yield t
            t += size
