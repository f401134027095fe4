"""The three-phase electricity meter: power each second and registers that integrate it.

What it feeds: the registers 1-0:1.8.1/2 and 1-0:2.8.1/2, the powers 1-0:1.7.0 and
1-0:2.7.0 and the per-phase +P/-P 1-0:21.7.0 … 1-0:62.7.0 (P1 §7.1; X1 Table 4, 5).

Power model (per phase, integer watts):

- *Minutes*: in minute ``k`` of a block, phase ``ph`` draws ``n = load - pv - flicker``:
  ``load`` from the day's :class:`~x1p1.gateway.simulation.load.LoadTemplate`, ``pv``
  the block's production on that phase and ``flicker`` its per-minute deviation (zero
  over the block; :mod:`~x1p1.gateway.simulation.solar`). ``n > 0`` imports (+P),
  ``n < 0`` exports (-P).
- *Seconds*: second ``i`` of the minute shows ``p = n + D(i) - D(i-1)`` (``D(-1)`` is
  ``D(59)``), ``D`` drawn in ``0 … h`` with ``h <= |n|``. The jitter sums to exactly
  zero over the minute and never changes the sign of ``p``, so the minute's import or
  export is exactly ``60 * n`` watt-seconds, and the sum of its first ``j`` seconds is
  ``j * n + D(j-1) - D(59)``: constant time for any second.

The telegram at Unix second ``t`` shows the power of the second that ends at ``t``
(``[t-1, t)``), and the registers at ``t`` hold the energy of every second before ``t``
since :data:`~x1p1.gateway.simulation.days.EPOCH` on top of their seeded start values.
Per phase ``+P = max(p, 0)`` and ``-P = max(-p, 0)``; the totals 1-0:1.7.0 and 1-0:2.7.0
are the sums over the phases, and 1-0:1.8.x and 1-0:2.8.x add them up second by second
in the tariff of that second. Energy is kept in integer joules (watt-seconds), so nothing
drifts: the registers at ``t1`` minus those at ``t0`` are exactly the sum of the powers
the telegrams of ``t0+1 … t1`` show. The telegram writes whole watt-hours (P1 F9(3,3)
kWh): ``joules // 3600``.

Random access: a block's energy per phase is ``sum(load) - 15 * pv`` when no minute of it
can change sign (its smallest and largest load minute, the production and the flicker
bound say so); otherwise the block is *mixed*, has no flicker, and its import and export
are summed over its 15 minutes. A day is a few additions on the template's prefix sums
plus the daylight blocks of the inverter's phases, so the energy at each local midnight
since the epoch is summed once, lazily, and kept (about 0.1 ms a day); a day's block by
block running sums are kept for the days recently asked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from x1p1.gateway.simulation import rand
from x1p1.gateway.simulation.days import BLOCK, EPOCH, Day, day, locate, season
from x1p1.gateway.simulation.load import VARIANTS, Household, LoadTemplate, make_template
from x1p1.gateway.simulation.solar import PVSystem, SolarBlock, flicker, solar_blocks

Energy = tuple[int, int, int, int]
"""(1-0:1.8.1, 1-0:1.8.2, 1-0:2.8.1, 1-0:2.8.2): import tariff 1 and 2, export 1 and 2."""

_DETAIL_CACHE = 64
_MINUTE_CACHE = 16


@dataclass(frozen=True, slots=True)
class DayDetail:
    """One day block by block: its template, production and running energy sums."""

    day: Day
    template: LoadTemplate
    solar: dict[int, SolarBlock]
    running: tuple[Energy, ...]
    """Watt-minutes of the four registers from local midnight to the start of each
    position (``positions + 1`` entries)."""


class ElectricityModel:
    """The electricity meter of one seed. Thread-safe; every answer is a pure function of
    the seed and the instant (the caches only remember what was computed)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.household = Household.from_seed(seed)
        self.pv = PVSystem.from_seed(seed)
        r = rand.rng(seed, rand.BASE)
        # A new meter: a few kWh from the installer's tests, in joules.
        self.base: Energy = (
            r.randrange(0, 9 * 3_600_000),
            r.randrange(0, 9 * 3_600_000),
            r.randrange(0, 2 * 3_600_000),
            r.randrange(0, 2 * 3_600_000),
        )
        self._templates: dict[tuple[int, bool, int], LoadTemplate] = {}
        self._midnights: list[Energy] = [(0, 0, 0, 0)]
        self._details: OrderedDict[int, DayDetail] = OrderedDict()
        self._minutes: OrderedDict[tuple[int, int], tuple[list[int], ...]] = OrderedDict()
        self._lock = threading.RLock()

    # --- days ---------------------------------------------------------------------------

    def template(self, d: Day) -> LoadTemplate:
        """The household's load on day ``d``."""
        k = (season(d.date), d.weekend, rand.key(self.seed, rand.VARIANT, d.index) % VARIANTS)
        found = self._templates.get(k)
        if found is None:
            found = self._templates[k] = make_template(self.household, self.seed, *k)
        return found

    def _block(self, tm: LoadTemplate, ph: int, clock: int, pv: int, bound: int) -> Energy:
        """(import, export, flicker bound, 0) of phase ``ph`` in a block with production
        ``pv``: watt-minutes, and the flicker that applies (0 in a mixed block)."""
        total = tm.block_sum[ph][clock]
        if tm.block_min[ph][clock] - pv - bound >= 0:
            return total - 15 * pv, 0, bound, 0
        if tm.block_max[ph][clock] - pv + bound <= 0:
            return 0, 15 * pv - total, bound, 0
        base = clock * 15
        imp = sum(n - pv for n in tm.minutes[ph][base : base + 15] if n > pv)
        return imp, imp - total + 15 * pv, 0, 0

    def day_energy(self, d: Day) -> Energy:
        """Watt-minutes of the four registers over the whole day ``d``."""
        if not d.normal:
            return self._details_of(d).running[-1]
        tm = self.template(d)
        imp1 = imp2 = exp1 = exp2 = 0
        for ph in range(3):
            prefix = tm.prefix[ph]
            t2 = 0 if d.weekend else prefix[92] - prefix[28]
            imp1 += prefix[96] - t2
            imp2 += t2
        tariffs = d.tariffs
        blocks = solar_blocks(self.pv, self.seed, d)
        for ph in self.pv.phases:
            sums, lows, highs = tm.block_sum[ph], tm.block_min[ph], tm.block_max[ph]
            row = tm.minutes[ph]
            for pos, pv, bound in blocks:  # a normal day: the position is the clock block
                # Import less than the load, and perhaps export (as _block, inlined).
                if lows[pos] - pv - bound >= 0:
                    imp, exp = -15 * pv, 0
                elif highs[pos] - pv + bound <= 0:
                    imp, exp = -sums[pos], 15 * pv - sums[pos]
                else:
                    base = pos * 15
                    imp = sum(n - pv for n in row[base : base + 15] if n > pv) - sums[pos]
                    exp = imp + 15 * pv
                if tariffs[pos] == 1:
                    imp1 += imp
                    exp1 += exp
                else:
                    imp2 += imp
                    exp2 += exp
        return imp1, imp2, exp1, exp2

    def _details_of(self, d: Day) -> DayDetail:
        found = self._details.get(d.index)
        if found is not None:
            self._details.move_to_end(d.index)
            return found
        tm = self.template(d)
        solar = {sb[0]: sb for sb in solar_blocks(self.pv, self.seed, d)}
        pv_phases = self.pv.phases
        running: list[Energy] = [(0, 0, 0, 0)]
        imp1 = imp2 = exp1 = exp2 = 0
        for pos, clock in enumerate(d.clocks):
            sb = solar.get(pos)
            imp = exp = 0
            for ph in range(3):
                if sb is not None and ph in pv_phases:
                    i, e, _, _ = self._block(tm, ph, clock, sb[1], sb[2])
                    imp, exp = imp + i, exp + e
                else:
                    imp += tm.block_sum[ph][clock]
            if d.tariffs[pos] == 1:
                imp1, exp1 = imp1 + imp, exp1 + exp
            else:
                imp2, exp2 = imp2 + imp, exp2 + exp
            running.append((imp1, imp2, exp1, exp2))
        found = DayDetail(d, tm, solar, tuple(running))
        self._details[d.index] = found
        if len(self._details) > _DETAIL_CACHE:
            self._details.popitem(last=False)
        return found

    def detail(self, index: int) -> DayDetail:
        """Day ``index`` block by block (cached for the days recently asked)."""
        with self._lock:
            return self._details_of(day(index))

    def midnight(self, index: int) -> Energy:
        """Watt-minutes of the four registers from the epoch to the start of day ``index``."""
        with self._lock:
            known = self._midnights
            while len(known) <= index:
                i1, i2, e1, e2 = known[-1]
                d1, d2, d3, d4 = self.day_energy(day(len(known) - 1))
                known.append((i1 + d1, i2 + d2, e1 + d3, e2 + d4))
            return known[index]

    # --- minutes and seconds ------------------------------------------------------------

    def block_minutes(self, d: Day, pos: int) -> tuple[list[int], ...]:
        """Net watts ``n`` of each phase in each of the 15 minutes of a block."""
        with self._lock:
            k = (d.index, pos)
            found = self._minutes.get(k)
            if found is not None:
                return found
            det = self._details_of(d)
            clock = det.day.clocks[pos]
            base = clock * 15
            sb = det.solar.get(pos)
            rows: list[list[int]] = []
            for ph in range(3):
                row = list(det.template.minutes[ph][base : base + 15])
                if sb is not None and ph in self.pv.phases:
                    _, pv, bound = sb
                    bound = self._block(det.template, ph, clock, pv, bound)[2]
                    fl = flicker(rand.key(self.seed, rand.FLICKER, d.index, pos), bound)
                    row = [n - pv - f for n, f in zip(row, fl, strict=True)]
                rows.append(row)
            found = tuple(rows)
            self._minutes[k] = found
            if len(self._minutes) > _MINUTE_CACHE:
                self._minutes.popitem(last=False)
            return found

    def _jitter(self, ph: int, minute: int, n: int) -> tuple[int, int]:
        """(key, modulus) of the jitter ``D`` of a minute: ``D(i) = mix(key ^ i) % mod``."""
        m = abs(n)
        return rand.key(self.seed, rand.JITTER, ph, minute), min(m, 3 + m // 40) + 1

    def energy(self, t: int) -> Energy:
        """Joules of the four registers at Unix second ``t``, start values included."""
        d, pos, rem = locate(t)
        acc = list(self.midnight(d.index))
        if pos:
            for j, value in enumerate(self.detail(d.index).running[pos]):
                acc[j] += value
        out = [60 * a + b for a, b in zip(acc, self.base, strict=True)]
        if rem:
            rows = self.block_minutes(d, pos)
            i_at, e_at = (0, 2) if d.tariffs[pos] == 1 else (1, 3)
            whole, sec = divmod(rem, 60)
            minute = (d.start - EPOCH + pos * BLOCK) // 60 + whole
            for ph, row in enumerate(rows):
                for n in row[:whole]:
                    if n > 0:
                        out[i_at] += 60 * n
                    else:
                        out[e_at] -= 60 * n
                n = row[whole] if sec else 0
                if n:
                    jkey, mod = self._jitter(ph, minute, n)
                    part = sec * n + rand.mix(jkey ^ (sec - 1)) % mod - rand.mix(jkey ^ 59) % mod
                    if n > 0:
                        out[i_at] += part
                    else:
                        out[e_at] -= part
        return out[0], out[1], out[2], out[3]

    def power(self, t: int) -> tuple[int, int, int]:
        """Watts of each phase over the second ``[t-1, t)`` (positive import, negative
        export): what the telegram at ``t`` shows. Nothing before the epoch."""
        if t == EPOCH:
            return 0, 0, 0
        d, pos, rem = locate(t - 1)
        rows = self.block_minutes(d, pos)
        whole, i = divmod(rem, 60)
        minute = (d.start - EPOCH + pos * BLOCK) // 60 + whole
        out = []
        for ph, row in enumerate(rows):
            n = row[whole]
            if n:
                jkey, mod = self._jitter(ph, minute, n)
                n += rand.mix(jkey ^ i) % mod - rand.mix(jkey ^ ((i - 1) % 60)) % mod
            out.append(n)
        return out[0], out[1], out[2]
