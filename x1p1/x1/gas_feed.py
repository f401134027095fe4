"""How often the converter asks the gateway for the gas meters' readings (sans-I/O).

A gas meter's reading changes every 5 minutes and carries its own time (P1 §7.3;
docs/x1-api.md, WebSocket: "Gas values carry their own 5-minute timestamp"). Asked for
together with the electricity meter every second, it would cost a WebSocket message a
second that says nothing new: most of what made a telegram built from realtime values
dearer than a relayed one (docs/performance.md). So the gas meters get a subscription
of their own (:func:`x1p1.x1.realtime.gas_subscription`), and this machine decides its
interval:

- ``catching``: no gas reading held yet: subscribe every second, so the first telegrams
  already carry gas; telegrams wait for it at most :data:`GAS_CATCH_WAIT` s;
- ``steady``: a reading held: subscribe every :data:`GAS_INTERVAL` s. Each telegram built
  from an electricity message carries the latest reading with that reading's own time, so
  a new 5-minute value reaches the line at most :data:`GAS_INTERVAL` s late;
- ``off``: no gas meter to read (no G-REALTIME, none listed, or not building at all).

The life cycle is the table :data:`GAS_TRANSITIONS`, with ``now`` passed in; the one
deadline (the end of the wait for a first reading) is computed here
(architecture.md, habits 2 and 12).
"""

from __future__ import annotations

import enum

__all__ = [
    "GAS_CATCH_WAIT",
    "GAS_INTERVAL",
    "GAS_TRANSITIONS",
    "Gas",
    "GasEv",
    "GasFeed",
]

GAS_INTERVAL = 60
"""Seconds between gas messages once a reading is held: a twelfth of the meter's 5-minute
period (P1 §7.3), 1/60 of the messages of a subscription every second."""
GAS_CATCH_WAIT = 3.0
"""Seconds telegrams wait for the first gas reading after the gas subscription starts;
past them they go without gas lines until it comes (a gas stream that does not answer
must never hold the electricity back)."""


class Gas(enum.StrEnum):
    OFF = "off"
    CATCHING = "catching"
    STEADY = "steady"


class GasEv(enum.StrEnum):
    START_EMPTY = "start-empty"
    """The gas subscription starts and no reading is held."""
    START_HELD = "start-held"
    """The gas subscription starts again; a reading of these meters is held."""
    READING = "reading"
    """A gas message was read."""
    STOP = "stop"
    """No gas subscription (the grant or the meters changed, or the source did)."""


GAS_TRANSITIONS: dict[Gas, dict[GasEv, Gas]] = {
    Gas.OFF: {
        GasEv.START_EMPTY: Gas.CATCHING,
        GasEv.START_HELD: Gas.STEADY,
        GasEv.STOP: Gas.OFF,
    },
    Gas.CATCHING: {
        GasEv.START_EMPTY: Gas.CATCHING,
        GasEv.START_HELD: Gas.STEADY,
        GasEv.READING: Gas.STEADY,
        GasEv.STOP: Gas.OFF,
    },
    Gas.STEADY: {
        GasEv.START_EMPTY: Gas.CATCHING,
        GasEv.START_HELD: Gas.STEADY,
        GasEv.READING: Gas.STEADY,
        GasEv.STOP: Gas.OFF,
    },
}
"""State × event → state; an event missing from a row is ignored (a gas message after
the subscription was stopped)."""


class GasFeed:
    """The gas subscription's interval and whether a telegram waits for gas (no I/O)."""

    def __init__(self) -> None:
        self.state = Gas.OFF
        self.catch_until: float | None = None
        self.readings = 0

    def handle(self, event: GasEv, now: float) -> bool:
        """Apply ``event`` at ``now``; True when the subscription's interval changed
        (the adapter then subscribes anew)."""
        old = self.state
        new = GAS_TRANSITIONS[old].get(event)
        if new is None:
            return False
        if event is GasEv.READING:
            self.readings += 1
        if new is Gas.CATCHING and old is not Gas.CATCHING:
            self.catch_until = now + GAS_CATCH_WAIT
        elif new is not Gas.CATCHING:
            self.catch_until = None
        self.state = new
        return old is not Gas.OFF and new is not Gas.OFF and self.interval_of(old) != self.interval

    @staticmethod
    def interval_of(state: Gas) -> int:
        return 1 if state is Gas.CATCHING else GAS_INTERVAL

    @property
    def interval(self) -> int:
        """The ``interval`` to subscribe with (x1-api.md, WebSocket)."""
        return self.interval_of(self.state)

    def deadline(self) -> float | None:
        """Until when telegrams wait for the first gas reading (None: they do not)."""
        return self.catch_until

    def builds(self, now: float) -> bool:
        """Whether an electricity message at ``now`` builds a telegram: always, except
        while the first gas reading is awaited and :meth:`deadline` has not come."""
        return self.catch_until is None or now >= self.catch_until

    def status(self) -> dict[str, object]:
        return {"state": self.state.value, "interval": self.interval, "readings": self.readings}
