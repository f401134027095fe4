"""The gas meter on M-Bus: a reading every 5 minutes that follows the heating (P1 §7.3).

The household heats with gas and uses it for hot water and cooking. Top-down and exact,
in whole litres (the telegram's 0.001 m3):

- *Day*: heating in proportion to the degree-days below the house's heating limit, from
  the day's mean outside temperature (a yearly curve for De Bilt, coldest late January,
  plus weather: slow seeded waves of 5 to 28 days and a day-to-day wobble), plus hot
  water and cooking (more at weekends, less in summer). A closed form of the day: the
  litres up to any local midnight are a cheap running sum from the epoch.
- *Hours*: the day's heating is split over its hours by a thermostat program (night
  setback, the morning warm-up peak, a flat day that is higher when people are home, the
  evening); hot water goes to the morning showers and the evening cooking and dishes.
- *5 minutes*: an hour's heating goes to its twelve 5-minute slots, the modulating
  boiler's wobble, or a few burner runs when demand is low; a shower fills one to three
  slots.

Each split is :func:`~x1p1.gateway.simulation.rand.apportion`, so the parts add up to the
whole exactly, and every level is a pure function of the seed and the day. The reading
at instant ``t`` is the register at the latest 5-minute boundary ``c <= t`` (its capture
time): the litres of every slot that ended by ``c``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from x1p1.gateway.simulation import rand
from x1p1.gateway.simulation.days import EPOCH, Day, day, day_index

SLOT = 300
"""Seconds between two gas readings (P1 §7.3: a 5-minute value)."""

# Thermostat program: relative heating demand per local clock hour.
_HEAT_WEEKDAY = (3, 3, 3, 3, 3, 3, 16, 24, 18, 8, 8, 8, 8, 8, 8, 8, 8, 13, 15, 15, 14, 13, 8, 4)
_HEAT_WEEKEND = (
    3,
    3,
    3,
    3,
    3,
    3,
    3,
    14,
    22,
    16,
    10,
    10,
    10,
    10,
    10,
    10,
    10,
    13,
    15,
    15,
    14,
    13,
    9,
    4,
)
# Hot water and cooking: a little all day, the showers and the evening.
_WATER = (0, 0, 0, 0, 0, 0, 2, 2, 2, 1, 1, 1, 2, 1, 1, 1, 1, 3, 4, 3, 3, 2, 2, 1)

_HOURS_CACHE = 64
_SLOTS_CACHE = 64


class GasModel:
    """The gas meter of one seed. Thread-safe; a pure function of seed and instant."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        r = rand.rng(seed, rand.GAS)
        self.base = r.randrange(0, 5000)
        """Litres on the register at the epoch (a new meter)."""
        self.litres_per_degree_day = r.randrange(330, 600)
        self.heating_limit = r.uniform(15.5, 17.0)
        self.water = r.randrange(350, 650)
        """Litres a day for hot water and cooking."""
        self.shower_hour = r.randrange(6, 9)
        self.waves = tuple(
            (amplitude, period, r.uniform(0, 2 * math.pi))
            for amplitude, period in (
                (2.2, r.uniform(4.5, 6.5)),
                (1.8, r.uniform(10, 14)),
                (1.5, r.uniform(24, 32)),
            )
        )
        self._midnights: list[int] = [0]
        self._hours: OrderedDict[int, tuple[list[int], list[int]]] = OrderedDict()
        self._slots: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        self._lock = threading.RLock()

    # --- days ---------------------------------------------------------------------------

    def temperature(self, d: Day) -> float:
        """The day's mean outside temperature in °C."""
        doy = d.date.timetuple().tm_yday
        t = 10.4 - 6.9 * math.cos(2 * math.pi * (doy - 25) / 365.25)
        for amplitude, period, phase in self.waves:
            t += amplitude * math.sin(2 * math.pi * d.index / period + phase)
        return t + 3.0 * (rand.unit(self.seed, rand.WEATHER, d.index) - 0.5)

    def day_parts(self, d: Day) -> tuple[int, int]:
        """(heating, hot water and cooking) litres of day ``d``."""
        wobble = rand.unit(self.seed, rand.GAS, d.index)
        degrees = max(0.0, self.heating_limit - self.temperature(d))
        heating = int(self.litres_per_degree_day * degrees * (0.9 + 0.2 * wobble))
        summer = max(0.0, math.cos(2 * math.pi * (d.date.timetuple().tm_yday - 200) / 365.25))
        water = self.water * (1.15 if d.weekend else 1.0) * (1.0 - 0.2 * summer)
        water *= 0.75 + 0.5 * rand.unit(self.seed, rand.GAS, d.index, 1)
        return heating, int(water)

    def midnight(self, index: int) -> int:
        """Litres from the epoch to the start of day ``index``."""
        with self._lock:
            known = self._midnights
            while len(known) <= index:
                heating, water = self.day_parts(day(len(known) - 1))
                known.append(known[-1] + heating + water)
            return known[index]

    # --- hours and slots ----------------------------------------------------------------

    def _hour_split(self, d: Day) -> tuple[list[int], list[int]]:
        """(heating, water) litres per hour position of day ``d``."""
        heating, water = self.day_parts(d)
        r = rand.rng(self.seed, rand.GAS, d.index, 2)
        program = _HEAT_WEEKEND if d.weekend else _HEAT_WEEKDAY
        clocks = [d.clocks[4 * h] // 4 for h in range(d.positions // 4)]
        heat_w = [program[c] * r.randrange(80, 121) for c in clocks]
        shower = self.shower_hour + (2 if d.weekend else 0)
        water_w = [(_WATER[c] + (12 if c == shower else 0)) * r.randrange(50, 151) for c in clocks]
        return rand.apportion(heating, heat_w), rand.apportion(water, water_w)

    def _split(self, index: int) -> tuple[list[int], list[int]]:
        found = self._hours.get(index)
        if found is None:
            found = self._hours[index] = self._hour_split(day(index))
            if len(self._hours) > _HOURS_CACHE:
                self._hours.popitem(last=False)
        else:
            self._hours.move_to_end(index)
        return found

    def hours(self, index: int) -> list[int]:
        """Litres of each hour position of day ``index`` (23, 24 or 25 of them)."""
        with self._lock:
            heat, water = self._split(index)
            return [a + b for a, b in zip(heat, water, strict=True)]

    def slots(self, index: int, hour: int) -> list[int]:
        """Litres of each 5-minute slot of hour position ``hour`` of day ``index``."""
        with self._lock:
            k = (index, hour)
            found = self._slots.get(k)
            if found is not None:
                return found
            heat, water = self._split(index)
            h, w = heat[hour], water[hour]
            r = rand.rng(self.seed, rand.GAS, index, 3, hour)
            if h < 120:  # low demand: the burner runs a few slots, off in between
                runs = max(1, min(12, h // 10))
                weights = [0] * 12
                for i in r.sample(range(12), runs):
                    weights[i] = r.randrange(60, 141)
            else:
                weights = [r.randrange(70, 131) for _ in range(12)]
            heat_slots = rand.apportion(h, weights)
            start, length = r.randrange(12), r.randrange(1, 4)
            weights = [1 if start <= i < start + length else 0 for i in range(12)]
            found = [a + b for a, b in zip(heat_slots, rand.apportion(w, weights), strict=True)]
            self._slots[k] = found
            if len(self._slots) > _SLOTS_CACHE:
                self._slots.popitem(last=False)
            return found

    # --- readings -----------------------------------------------------------------------

    def reading(self, t: int) -> tuple[int, int]:
        """(capture time, litres on the register) of the latest 5-minute value at ``t``."""
        capture = t - (t - EPOCH) % SLOT
        index = day_index(capture)
        d = day(index)
        litres = self.base + self.midnight(index)
        offset = capture - d.start
        hour, rest = divmod(offset, 3600)
        if hour:
            litres += sum(self.hours(index)[:hour])
        if rest:
            litres += sum(self.slots(index, hour)[: rest // SLOT])
        return capture, litres
