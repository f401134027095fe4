"""The embedded gateway's simulated meters, deterministic from a seed and computable at any instant.

- :class:`MeterSimulation` (``meter.py``): the telegram, realtime values, gas reading and
  historic registers at any instant; :class:`SimClock` (``clock.py``): ``--speed``.
- ``days.py``: the Dutch local calendar, 15-minute blocks and the tariff;
  ``electricity.py``: power per second and registers that integrate it exactly;
  ``load.py``: the household's appliances; ``solar.py``: the PV system; ``gas.py``: the
  gas meter's 5-minute readings; ``quality.py``: power failures, sags, swells and the
  failure log; ``rand.py``: counter-based randomness (no sequential state anywhere).

Pure computation: no I/O, no asyncio, no clock reads (time is always an argument).
"""

from x1p1.gateway.simulation.clock import SimClock
from x1p1.gateway.simulation.days import EPOCH_DATE
from x1p1.gateway.simulation.meter import MeterSimulation

__all__ = ["EPOCH_DATE", "MeterSimulation", "SimClock"]
