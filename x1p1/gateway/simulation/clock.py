"""Simulated time: ``--speed X`` runs the meters' clock X times faster than the wall clock.

:class:`SimClock` maps a wall-clock reading (``time.time()``, injected by the caller, never
read here) to the simulated instant, from an anchor: at wall time ``start_wall`` the
meters' clock shows ``start_sim``, and each wall second after it is ``speed`` simulated
seconds. At speed 1 the two clocks tick the same seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class SimClock:
    """Wall clock → simulated clock, ``speed`` times faster from an anchor."""

    start_wall: float
    """A wall-clock reading in seconds (``time.time()``)."""
    start_sim: datetime
    """The simulated instant at ``start_wall`` (aware)."""
    speed: float = 1.0

    def __post_init__(self) -> None:
        if self.start_sim.tzinfo is None or self.start_sim.utcoffset() is None:
            raise ValueError("SimClock.start_sim must be an aware datetime")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed must be a positive number, not {self.speed!r}")
        if not math.isfinite(self.start_wall):
            raise ValueError("SimClock.start_wall must be a finite number of seconds")

    def sim_now(self, wall: float) -> datetime:
        """The simulated instant at wall-clock time ``wall`` (microsecond resolution)."""
        elapsed = (wall - self.start_wall) * self.speed
        return self.start_sim + timedelta(microseconds=round(elapsed * 1_000_000))

    def wall_at(self, sim: datetime) -> float:
        """The wall-clock time at which the simulated clock shows ``sim``."""
        return self.start_wall + (sim - self.start_sim).total_seconds() / self.speed
