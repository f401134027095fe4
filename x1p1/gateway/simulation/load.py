"""The household's electricity use: base load, appliance cycles and the evening peak.

A :class:`Household` is drawn from the seed once: standby load per phase, a fridge (and
perhaps a freezer) cycling all day, and on which phase the kitchen, the laundry and the
living room are wired. What the household does on a day is a :class:`LoadTemplate`: the
power of each phase in watts for every minute of the local clock (1440 values), with the
morning routine, kettle and coffee, a working or a weekend day, lunch, cooking on the hob
and in the oven (the evening peak), lights after sunset, TV and computers, the dishwasher
and, some days, the washing machine and the dryer.

Templates are drawn per (season, weekday or weekend, variant) and each simulated day uses
one of a dozen variants, chosen from the seed and the day. So there are few templates (at
most 72), each built once, and everything the electricity model needs of a day's load over
a 15-minute block (its sum, its smallest and its largest minute) is precomputed with them.
That keeps a whole day's energy a matter of a few additions (see ``electricity.py``).
"""

from __future__ import annotations

import operator
import random
from array import array
from dataclasses import dataclass
from functools import lru_cache

from x1p1.gateway.simulation import rand

MINUTES = 1440
VARIANTS = 12
"""Templates per (season, weekday or weekend)."""


@dataclass(frozen=True, slots=True)
class Cycle:
    """A compressor that runs ``on`` minutes of every ``period`` at ``watts``."""

    phase: int
    watts: int
    period: int
    on: int


@dataclass(frozen=True, slots=True)
class Household:
    """What does not change from day to day: the appliances and their wiring."""

    standby: tuple[int, int, int]
    """Always-on load per phase (W): routers, clocks, stand-by, the boiler's pump."""
    fridge: Cycle
    freezer: Cycle | None
    kitchen: int
    """Phase of the kettle, coffee machine, hob, oven, microwave and dishwasher."""
    laundry: int
    """Phase of the washing machine and the dryer."""
    living: int
    """Phase of lights, TV and computers."""
    home_office: bool
    dryer_watts: int
    """800 W for a heat-pump dryer, about 2300 W for a condenser dryer."""
    hob_watts: int
    """Largest draw of the induction hob (it is on one phase here)."""

    @classmethod
    def from_seed(cls, seed: int) -> Household:
        r = rand.rng(seed, rand.HOUSEHOLD)
        phases = [0, 1, 2]
        r.shuffle(phases)
        kitchen, laundry, living = phases
        fridge = Cycle(r.randrange(3), r.randrange(70, 111), r.randrange(45, 71), 0)
        fridge = Cycle(
            fridge.phase, fridge.watts, fridge.period, int(fridge.period * r.uniform(0.30, 0.45))
        )
        freezer = None
        if r.random() < 0.6:
            period = r.randrange(60, 91)
            freezer = Cycle(
                r.randrange(3), r.randrange(80, 121), period, int(period * r.uniform(0.35, 0.5))
            )
        return cls(
            standby=(r.randrange(30, 61), r.randrange(25, 56), r.randrange(25, 56)),
            fridge=fridge,
            freezer=freezer,
            kitchen=kitchen,
            laundry=laundry,
            living=living,
            home_office=r.random() < 0.5,
            dryer_watts=r.choice((800, 850, 2200, 2400)),
            hob_watts=r.choice((2800, 3000, 3400, 3700)),
        )


@dataclass(frozen=True, slots=True)
class LoadTemplate:
    """One day's load: watts per phase per clock minute, and per 15-minute clock block its
    sum, smallest and largest minute, and the running sum of blocks."""

    minutes: tuple[array[int], array[int], array[int]]
    block_sum: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    block_min: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    block_max: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    prefix: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    """``prefix[phase][b]``: the sum of blocks ``0 … b-1`` (97 values)."""


_LOW3 = bytes(b & 7 for b in range(256))
"""A byte → its three low bits: 0–7 W of wobble from a random byte."""

_SUNSET = (16 * 60 + 45, 19 * 60 + 30, 21 * 60 + 20)
"""Rough local clock minute at which lights go on in the evening, by season."""


class _Day:
    """A template under construction: three lists of watts per minute."""

    def __init__(self, household: Household, r: random.Random) -> None:
        self.p = [[household.standby[ph]] * MINUTES for ph in range(3)]
        self.r = r

    def add(self, phase: int, start: int, length: int, watts: int) -> None:
        row = self.p[phase]
        a, b = max(start, 0), min(start + length, MINUTES)
        if a < b:
            row[a:b] = [v + watts for v in row[a:b]]

    def cycle(self, c: Cycle) -> None:
        offset = self.r.randrange(c.period)
        one = [c.watts] * c.on + [0] * (c.period - c.on)
        pattern = (one * (MINUTES // c.period + 2))[offset : offset + MINUTES]
        self.p[c.phase] = list(map(operator.add, self.p[c.phase], pattern))

    def pattern(self, phase: int, start: int, steps: list[tuple[int, int]]) -> int:
        """Add (minutes, watts) steps one after another; return where they end."""
        for length, watts in steps:
            self.add(phase, start, length, watts)
            start += length
        return start


@lru_cache(maxsize=512)
def make_template(
    household: Household, seed: int, season: int, weekend: bool, variant: int
) -> LoadTemplate:
    """The load of one (season, weekday/weekend, variant) day; deterministic (and kept:
    simulations of the same seed share their templates)."""
    r = rand.rng(seed, rand.TEMPLATE, season, int(weekend), variant)
    h = household
    day = _Day(h, r)
    rnd, rr = r.random, r.randrange

    # Minute-to-minute wobble of the base load (a few watts), and the cycling fridges.
    day.p = [list(map(operator.add, row, r.randbytes(MINUTES).translate(_LOW3))) for row in day.p]
    day.cycle(h.fridge)
    if h.freezer is not None:
        day.cycle(h.freezer)

    wake = rr(8 * 60, 10 * 60) if weekend else rr(6 * 60 + 15, 7 * 60 + 30)
    bed = rr(22 * 60 + 30, 24 * 60 + 30 if weekend else 24 * 60)
    home = h.home_office or weekend

    # Morning: lights in the dark half of the year, coffee, kettle, toaster, hair dryer.
    if season != 2:
        day.add(h.living, wake, rr(40, 90), rr(60, 140))
    day.add(h.kitchen, wake + rr(3, 10), 1, 1300)
    if rnd() < 0.55:
        day.add(h.kitchen, wake + rr(10, 25), 3, 2000)
    if rnd() < 0.3:
        day.add(h.kitchen, wake + rr(10, 30), 3, 900)
    if rnd() < 0.3:
        day.add(h.living, wake + rr(20, 45), rr(4, 8), 1600)
    day.add(h.living, wake, rr(30, 60), rr(30, 70))  # people about: radio, chargers

    # Daytime: someone at home (home office or weekend), or an empty house.
    if home:
        start = wake + rr(30, 90)
        day.add(h.living, start, 17 * 60 + 30 - start, rr(80, 160))  # computer, screen
        for _ in range(rr(2, 6)):
            day.add(h.kitchen, rr(9 * 60, 17 * 60), 3, 2000)  # kettle
            day.add(h.kitchen, rr(9 * 60, 17 * 60), 1, 1300)  # coffee
        if rnd() < 0.6:
            day.add(h.kitchen, rr(12 * 60, 13 * 60 + 15), rr(2, 5), 900)  # microwave
    if weekend and rnd() < 0.4:
        day.add(h.living, rr(10 * 60, 16 * 60), rr(20, 40), 1400)  # vacuum cleaner

    # Laundry: the washing machine (heat, wash, spin) and sometimes the dryer after it.
    if rnd() < (0.55 if weekend else 0.25):
        start = rr(9 * 60, 19 * 60)
        steps = [(3, 30), (rr(15, 22), 2000)]
        steps += [(1, 250 if rnd() < 0.6 else 40) for _ in range(rr(45, 65))]
        steps += [(rr(8, 14), 450), (3, 20)]
        end = day.pattern(h.laundry, start, steps)
        if rnd() < (0.8, 0.55, 0.3)[season]:
            length, watts = rr(70, 110), h.dryer_watts
            start = end + rr(5, 30)
            for m in range(length):
                day.add(h.laundry, start + m, 1, watts * rr(85, 111) // 100)

    # The evening peak: cooking on the hob (and in the oven), then lights and TV.
    cook = rr(17 * 60 + 15, 18 * 60 + 45)
    if rnd() < 0.88:
        m, end = cook, cook + rr(25, 50)
        while m < end:
            length = rr(3, 9)
            level = r.choice((0, 900, 1500, 2200, h.hob_watts))
            day.add(h.kitchen, m, min(length, end - m), level)
            m += length
        if rnd() < (0.4 if weekend else 0.22):
            start = cook - rr(10, 30)
            end = day.pattern(h.kitchen, start, [(10, 2200)])
            for _ in range(rr(10, 15)):
                end = day.pattern(h.kitchen, end, [(rr(2, 4), 2200), (rr(1, 3), 0)])
    lights = _SUNSET[season] + rr(-30, 31)
    m = lights
    while m < bed:
        length = rr(20, 60)
        day.add(h.living, m, min(length, bed - m), rr(60, 240))
        m += length
    tv = cook + rr(60, 120)
    day.add(h.living, tv, max(bed - tv, 0), rr(80, 170))
    if rnd() < 0.4:
        phase = r.choice((h.living, h.laundry))
        day.add(phase, tv + rr(0, 60), rr(60, 150), rr(180, 350))  # gaming or PC

    # The dishwasher after dinner: two heating phases.
    if rnd() < 0.65:
        start = rr(19 * 60 + 30, 22 * 60 + 30)
        day.pattern(
            h.kitchen,
            start,
            [(5, 60), (rr(12, 18), 2000), (rr(30, 45), 80), (rr(10, 14), 2000), (20, 40)],
        )

    # An unpredictable extra now and then: kettle late, a heater in a cold bathroom.
    for _ in range(rr(0, 3)):
        day.add(r.randrange(3), rr(wake, bed), rr(2, 10), rr(300, 1500))
    if season == 0 and rnd() < 0.25:
        day.add(h.living, wake, rr(20, 45), 1500)

    return _summarise(day.p)


def _summarise(rows: list[list[int]]) -> LoadTemplate:
    sums, mins, maxs, prefixes = [], [], [], []
    for row in rows:
        blocks = [row[b * 15 : b * 15 + 15] for b in range(96)]
        s = tuple(map(sum, blocks))
        sums.append(s)
        mins.append(tuple(map(min, blocks)))
        maxs.append(tuple(map(max, blocks)))
        running, acc = [0], 0
        for value in s:
            acc += value
            running.append(acc)
        prefixes.append(tuple(running))
    return LoadTemplate(
        minutes=(array("i", rows[0]), array("i", rows[1]), array("i", rows[2])),
        block_sum=(sums[0], sums[1], sums[2]),
        block_min=(mins[0], mins[1], mins[2]),
        block_max=(maxs[0], maxs[1], maxs[2]),
        prefix=(prefixes[0], prefixes[1], prefixes[2]),
    )
