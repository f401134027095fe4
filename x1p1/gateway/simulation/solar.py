"""The PV system on the roof: what it produces in each 15-minute block of a day.

Its output follows the sun over the middle of the Netherlands (52.1° N, 5.1° E): the
sun's elevation from the declination and the hour angle (so it shifts with the seasons
and with the equation of time, not with the clocks), times the system's peak power and
an efficiency, times the clouds. Each day has weather drawn from the seed and the season:
clear, broken cloud (each block its own factor, and a strong flicker from minute to
minute) or overcast. Summer days are clearer and longer; a December day gives little.

Within a block the production is ``power + flicker[k]`` for minute ``k``, where the 15
flicker values sum to exactly zero and never exceed ``bound``: a block's energy is
``15 * power`` watt-minutes whatever the flicker does. The electricity model applies the
flicker only where it cannot turn an import minute into an export one (see
``electricity.py``).

Small systems have a single-phase inverter on one phase (exporting on that phase while the
others import); systems over 4.6 kWp have a three-phase inverter sharing it equally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from x1p1.gateway.simulation import rand
from x1p1.gateway.simulation.days import BLOCK, Day, season

LATITUDE = math.radians(52.1)
LONGITUDE = 5.1
_SIN_LAT, _COS_LAT = math.sin(LATITUDE), math.cos(LATITUDE)
_UNIX_DAY0 = 719163  # date(1970, 1, 1).toordinal()

# Weather kinds and, per season (winter, spring/autumn, summer), how likely each is.
CLEAR, BROKEN, OVERCAST = 0, 1, 2
_KIND_ODDS = ((0.15, 0.50), (0.25, 0.65), (0.38, 0.82))
"""Cumulative P(clear), P(clear or broken) per season; the rest is overcast."""
_FLICKER = (0.02, 0.30, 0.06)


@dataclass(frozen=True, slots=True)
class PVSystem:
    """Peak power in watts and the phases its inverter feeds."""

    peak_w: int
    phases: tuple[int, ...]

    @classmethod
    def from_seed(cls, seed: int) -> PVSystem:
        r = rand.rng(seed, rand.PV)
        peak = r.randrange(2400, 6001, 50)
        phases = (0, 1, 2) if peak > 4600 else (r.randrange(3),)
        return cls(peak, phases)


SolarBlock = tuple[int, int, int]
"""Production in one position of a day: (position, watts on each inverter phase as the
block's mean, flicker bound). A plain tuple: a day makes dozens of them."""


@lru_cache(maxsize=4096)
def clear_sky(doy: int, lead: int, positions: int) -> tuple[tuple[int, float], ...]:
    """(position, relative output) of the blocks of a local day with the sun up.

    ``doy`` is the day of the year, ``lead`` the seconds from local midnight to the next
    UTC midnight (3600 or 7200) and ``positions`` the blocks of the day. The output is
    ``s * (0.55 + 0.45 * s)`` at the block's middle, ``s`` the sine of the sun's
    elevation: the same for every seed, so it is computed once per kind of day.
    """
    gamma = 2 * math.pi * (doy - 1) / 365.0
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
    )
    eot_min = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    a = _SIN_LAT * math.sin(decl)
    b = _COS_LAT * math.cos(decl)
    noon = 43200 - LONGITUDE * 240 - eot_min * 60 + lead  # seconds after local midnight
    out = []
    for pos in range(positions):
        s = a + b * math.cos(2 * math.pi * (pos * BLOCK + BLOCK / 2 - noon) / 86400)
        if s > 0:
            out.append((pos, s * (0.55 + 0.45 * s)))
    return tuple(out)


def solar_blocks(system: PVSystem, seed: int, d: Day) -> list[SolarBlock]:
    """The positions of day ``d`` with production, in order, and their power per phase."""
    lead = (d.date.toordinal() - _UNIX_DAY0) * 86400 - d.start
    sky = clear_sky(d.date.timetuple().tm_yday, lead, d.positions)
    r = rand.rng(seed, rand.CLOUDS, d.index)
    rnd = r.random
    odds = _KIND_ODDS[season(d.date)]
    u = rnd()
    kind = CLEAR if u < odds[0] else BROKEN if u < odds[1] else OVERCAST
    flick = _FLICKER[kind]
    scale = system.peak_w * 0.8 / len(system.phases)
    if kind == CLEAR:
        level = scale * (0.9 + 0.1 * rnd())
        return [
            (pos, w, int(w * flick))
            for pos, c in sky
            if (w := int(level * c * (0.97 + 0.03 * rnd()))) > 0
        ]
    if kind == OVERCAST:
        level = scale * (0.08 + 0.25 * rnd())
        return [
            (pos, w, int(w * flick))
            for pos, c in sky
            if (w := int(level * c * (0.75 + 0.5 * rnd()))) > 0
        ]
    sunny = 0.65 + 0.3 * rnd()  # share of blocks in sunshine between the clouds
    dull = scale * (0.1 + 0.15 * rnd())
    out = []
    for pos, c in sky:
        x = rnd()
        w = int(scale * c * (0.55 + 0.5 * x / sunny)) if x < sunny else int(dull * c)
        if w > 0:
            out.append((pos, w, int(w * flick)))
    return out


def flicker(block_key: int, bound: int) -> list[int]:
    """Fifteen per-minute deviations from a block's mean, each within ``±bound``, that sum
    to exactly zero: ``e[k] - e[k-1]`` around the block (``e[-1]`` is ``e[14]``), ``e``
    drawn in ``0 … bound``."""
    if bound <= 0:
        return [0] * 15
    mod = bound + 1
    e = []
    for j in range(4):  # four 64-bit hashes, 16 bits for each value
        h = rand.mix(block_key ^ j)
        e += [(h >> shift & 0xFFFF) % mod for shift in (0, 16, 32, 48)]
    del e[15:]
    return [e[k] - e[k - 1] for k in range(15)]
