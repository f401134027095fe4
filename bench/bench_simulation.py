"""Benchmark of the gateway's meter simulation.

Prints how long :meth:`MeterSimulation.interval_registers` takes for the whole Table 8
retention of both meters on a fresh simulation (electricity 15m 7 days, 1h 30 days,
1d 24 months, 1M 60 months; gas 5m 1 hour and the same 1h, 1d, 1M, which the same
register calls serve), and how many telegrams a second :meth:`MeterSimulation.telegram`
builds.

    .venv/bin/python bench/bench_simulation.py [--seed N] [--now 2026-05-01T12:00:00Z]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from x1p1.gateway.simulation import MeterSimulation

RESOLUTIONS = (  # (name, step, how far back)
    ("15m", "15m", timedelta(days=7)),
    ("1h", "1h", timedelta(days=30)),
    ("1d", "1d", timedelta(days=731)),
    ("1M", "1M", timedelta(days=366 * 5 + 31)),
    ("5m", "5m", timedelta(hours=1)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--now", default=None, help="simulated now (default: the wall clock)")
    parser.add_argument("--telegrams", type=int, default=2000)
    args = parser.parse_args()
    now = (
        datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        if args.now
        else datetime.now(UTC).replace(microsecond=0)
    )
    sim = MeterSimulation(args.seed)
    print(f"seed {args.seed}, now {now.isoformat()}, PV {sim.electricity.pv}")
    total = 0.0
    for name, step, back in RESOLUTIONS:
        t0 = time.perf_counter()
        n = sum(1 for _ in sim.interval_registers(now - back, now, step))
        elapsed = time.perf_counter() - t0
        total += elapsed
        print(f"interval_registers {name:>3}: {n:4d} ends in {elapsed * 1000:7.1f} ms")
    print(f"full Table 8 retention, both meters: {total * 1000:.1f} ms (fresh simulation)")

    again = MeterSimulation(args.seed + 1)
    t0 = time.perf_counter()
    n = sum(1 for _ in again.interval_registers(now - timedelta(days=5 * 365), now, "1d"))
    print(f"5 years of daily ends, fresh seed: {n} in {(time.perf_counter() - t0) * 1000:.1f} ms")
    t0 = time.perf_counter()
    n = sum(1 for _ in again.interval_registers(now - timedelta(days=7), now, "15m"))
    print(f"7 days of 15-minute ends: {n} in {(time.perf_counter() - t0) * 1000:.1f} ms")

    start = now - timedelta(hours=1)
    sim.telegram(start)
    t0 = time.perf_counter()
    for k in range(args.telegrams):
        sim.telegram(start + timedelta(seconds=k))
    elapsed = time.perf_counter() - t0
    print(
        f"telegram(): {args.telegrams / elapsed:.0f} per second "
        f"({elapsed / args.telegrams * 1e6:.0f} µs each)"
    )
    t0 = time.perf_counter()
    for k in range(args.telegrams):
        sim.realtime_values(start + timedelta(seconds=k))
    elapsed = time.perf_counter() - t0
    print(f"realtime_values(): {elapsed / args.telegrams * 1e6:.0f} µs each")


if __name__ == "__main__":
    main()
