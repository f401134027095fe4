"""The simulated meters' calendar: Dutch local days, 15-minute blocks and the tariff.

Both meters keep Dutch local time (Europe/Amsterdam), as DSMR meters do (P1 §6.4, TST).
Everything is counted in whole Unix seconds from :data:`EPOCH`, local midnight on
:data:`EPOCH_DATE`, when the simulated meters were installed; there is nothing before it.

A local day is cut into 15-minute *blocks* (*positions* ``0 … n-1``). Most days have 96;
the day daylight saving time starts has 92 (02:00–03:00 does not happen) and the day it
ends has 100 (02:00–03:00 happens twice). Each position has a *clock block*, its local
clock time ``hh:mm // 15`` (0–95): household habits follow the clock, so the load model
is indexed by clock block, while the sun follows UTC.

Tariff (the electricity meter's 0-0:96.14.0): tariff 1 (low) from 23:00 to 07:00 local
time and all Saturday and Sunday, tariff 2 (normal) on weekdays from 07:00 to 23:00.
Both switches fall on whole hours, so a block has one tariff.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from x1p1.p1.values import NL

EPOCH_DATE = date(2020, 1, 1)
"""The local date the simulated meters were installed."""

EPOCH = int(datetime.combine(EPOCH_DATE, time(), NL).timestamp())
"""Local midnight on :data:`EPOCH_DATE`, in Unix seconds."""

BLOCK = 900
"""Seconds in a block: the electricity model's coarse unit, and the 15-minute interval."""

BLOCKS_PER_DAY = 96
T2_FROM = 28
"""Clock block of 07:00, where tariff 2 starts on weekdays."""
T2_TO = 92
"""Clock block of 23:00, where tariff 1 starts again."""

_NORMAL = tuple(range(BLOCKS_PER_DAY))
_WEEKDAY_TARIFFS = (1,) * T2_FROM + (2,) * (T2_TO - T2_FROM) + (1,) * (BLOCKS_PER_DAY - T2_TO)
_WEEKEND_TARIFFS = (1,) * BLOCKS_PER_DAY


@dataclass(frozen=True, slots=True)
class Day:
    """One local day since :data:`EPOCH_DATE` (``index`` 0 is that day)."""

    index: int
    date: date
    start: int
    """Local midnight in Unix seconds."""
    end: int
    """The next local midnight."""
    clocks: tuple[int, ...]
    """The clock block (0–95) of each position."""
    tariffs: tuple[int, ...]
    """The tariff (1 or 2) of each position."""

    @property
    def positions(self) -> int:
        return len(self.clocks)

    @property
    def weekend(self) -> bool:
        return self.date.weekday() >= 5

    @property
    def normal(self) -> bool:
        """Whether the day has its 96 blocks in clock order (no DST switch)."""
        return self.clocks is _NORMAL


@lru_cache(maxsize=8192)
def day(index: int) -> Day:
    """The local day ``index`` days after :data:`EPOCH_DATE`."""
    if index < 0:
        raise ValueError(
            f"the simulated meters were installed on {EPOCH_DATE.isoformat()}; "
            "there is nothing before that"
        )
    when = EPOCH_DATE + timedelta(days=index)
    start = int(datetime.combine(when, time(), NL).timestamp())
    end = int(datetime.combine(when + timedelta(days=1), time(), NL).timestamp())
    weekend = when.weekday() >= 5
    if end - start == BLOCKS_PER_DAY * BLOCK:
        clocks = _NORMAL
        tariffs = _WEEKEND_TARIFFS if weekend else _WEEKDAY_TARIFFS
    else:
        clock_list = []
        for pos in range((end - start) // BLOCK):
            local = datetime.fromtimestamp(start + pos * BLOCK, NL)
            clock_list.append((local.hour * 60 + local.minute) // 15)
        clocks = tuple(clock_list)
        tariffs = tuple(1 if weekend or not T2_FROM <= c < T2_TO else 2 for c in clocks)
    return Day(index, when, start, end, clocks, tariffs)


def day_index(t: int) -> int:
    """The index of the local day holding Unix second ``t`` (local midnight opens a day)."""
    if t < EPOCH:
        raise ValueError(
            f"{datetime.fromtimestamp(t, UTC).isoformat()} is before the simulated meters "
            f"were installed ({EPOCH_DATE.isoformat()}, local time)"
        )
    local = datetime.fromtimestamp(t, NL).date()
    return (local - EPOCH_DATE).days


def locate(t: int) -> tuple[Day, int, int]:
    """(day, position, seconds into the block) of Unix second ``t``."""
    d = day(day_index(t))
    offset = t - d.start
    return d, offset // BLOCK, offset % BLOCK


def tariff(t: int) -> int:
    """The tariff in force at Unix second ``t`` (1 night and weekend, 2 weekday daytime)."""
    d, pos, _ = locate(t)
    return d.tariffs[pos]


def season(when: date) -> int:
    """0 winter (Nov–Feb), 1 spring and autumn (Mar, Apr, Sep, Oct), 2 summer (May–Aug)."""
    return _SEASON[when.month]


_SEASON = (0, 0, 0, 1, 1, 2, 2, 2, 2, 1, 1, 0, 0)
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def to_unix(moment: datetime) -> int:
    """Whole Unix seconds of an aware datetime (fractions of a second are dropped)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("the simulation needs an aware datetime (UTC or local)")
    return (moment - _UNIX_EPOCH) // _SECOND


def from_unix(t: int) -> datetime:
    """An aware UTC datetime for Unix second ``t``."""
    return datetime.fromtimestamp(t, UTC)
