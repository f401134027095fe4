"""Power quality: failures, voltage sags and swells, and the power-failure log (X1 §6.2.4).

Events are rare, a few a month in all: each phase sees a voltage sag about once a month
and a swell every few months, the house a short power failure about three times a year
and a long one (over three minutes) about once a year. Each week since the epoch draws
its own events from the seed, so the counters at any instant are a running sum over the
weeks before it plus the events of its own week up to that second (an event counts from
its own second on).

The power-failure event log (1-0:99.97.0, P1 §7.1) holds the ten latest long failures,
newest first, each with the time power came back and how long it was out. The counters
start at zero: the meter was new at the epoch.

The events are bookkeeping only: the simulated power and voltages carry on through them.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass

from x1p1.gateway.simulation import rand
from x1p1.gateway.simulation.days import EPOCH

WEEK = 7 * 86400
LOG_SIZE = 10
"""Entries the power-failure log keeps (P1 §7.1)."""

SHORT, LONG, SAG, SWELL = range(4)

# Expected events per week.
_SHORT_RATE = 0.06
_LONG_RATE = 0.02
_SAG_RATE = 0.22
_SWELL_RATE = 0.07


@dataclass(frozen=True, slots=True)
class Counters:
    """The power-quality counters at one instant."""

    power_failures: int
    """0-0:96.7.21: short power failures in any phase."""
    long_power_failures: int
    """0-0:96.7.9: long power failures in any phase."""
    sags: tuple[int, int, int]
    """1-0:32.32.0, 1-0:52.32.0, 1-0:72.32.0."""
    swells: tuple[int, int, int]
    """1-0:32.36.0, 1-0:52.36.0, 1-0:72.36.0."""


Event = tuple[int, int, int, int]
"""(Unix second, kind, phase, duration in seconds)."""


def _poisson(u: float, rate: float) -> int:
    """The Poisson(``rate``) count at cumulative probability ``u``."""
    k, p = 0, math.exp(-rate)
    total = p
    while u > total and k < 20:
        k += 1
        p *= rate / k
        total += p
    return k


class PowerQuality:
    """Power-quality events of one seed. Thread-safe; a pure function of seed and instant."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._weeks: list[list[Event]] = []
        self._before: list[tuple[int, ...]] = [(0,) * 8]
        """Counts (short, long, sag L1–L3, swell L1–L3) before each week."""
        self._long_ends: list[int] = []
        self._long: list[tuple[int, int]] = []
        self._lock = threading.RLock()

    def week(self, w: int) -> list[Event]:
        """The events of week ``w`` since the epoch, in time order."""
        r = rand.rng(self.seed, rand.QUALITY, w)
        start = EPOCH + w * WEEK
        events: list[Event] = []
        for _ in range(_poisson(r.random(), _SHORT_RATE)):
            events.append((start + r.randrange(WEEK), SHORT, r.randrange(3), r.randrange(1, 180)))
        for _ in range(_poisson(r.random(), _LONG_RATE)):
            duration = int(math.exp(r.uniform(math.log(181), math.log(4 * 3600))))
            events.append((start + r.randrange(WEEK), LONG, r.randrange(3), duration))
        for phase in range(3):
            for _ in range(_poisson(r.random(), _SAG_RATE)):
                events.append((start + r.randrange(WEEK), SAG, phase, r.randrange(1, 30)))
            for _ in range(_poisson(r.random(), _SWELL_RATE)):
                events.append((start + r.randrange(WEEK), SWELL, phase, r.randrange(1, 10)))
        events.sort()
        return events

    def _extend(self, w: int) -> None:
        while len(self._weeks) <= w:
            events = self.week(len(self._weeks))
            counts = list(self._before[-1])
            for t, kind, phase, duration in events:
                counts[_slot(kind, phase)] += 1
                if kind == LONG:
                    self._long_ends.append(t)
                    self._long.append((t, duration))
            self._weeks.append(events)
            self._before.append(tuple(counts))

    def counters(self, t: int) -> Counters:
        """The counters at Unix second ``t``: every event at or before ``t`` counted."""
        w = (t - EPOCH) // WEEK
        if w < 0:
            raise ValueError("no power-quality events before the epoch")
        with self._lock:
            self._extend(w)
            counts = list(self._before[w])
            for when, kind, phase, _ in self._weeks[w]:
                if when > t:
                    break
                counts[_slot(kind, phase)] += 1
        return Counters(
            counts[0],
            counts[1],
            (counts[2], counts[3], counts[4]),
            (counts[5], counts[6], counts[7]),
        )

    def log(self, t: int) -> list[tuple[int, int]]:
        """(end, duration) of the latest :data:`LOG_SIZE` long failures at ``t``, newest
        first."""
        w = (t - EPOCH) // WEEK
        if w < 0:
            raise ValueError("no power-quality events before the epoch")
        with self._lock:
            self._extend(w)
            n = bisect.bisect_right(self._long_ends, t)
            return self._long[max(0, n - LOG_SIZE) : n][::-1]

    def events(self, start: int, end: int) -> list[Event]:
        """Every event with ``start <= time < end``, in time order."""
        if end <= start:
            return []
        first, last = (max(start, EPOCH) - EPOCH) // WEEK, (end - 1 - EPOCH) // WEEK
        with self._lock:
            self._extend(max(first, last))
            return [
                e for w in range(first, last + 1) for e in self._weeks[w] if start <= e[0] < end
            ]


def _slot(kind: int, phase: int) -> int:
    if kind == SHORT:
        return 0
    if kind == LONG:
        return 1
    return (2 if kind == SAG else 5) + phase
