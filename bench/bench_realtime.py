"""Benchmark: a DSMR 5.0.2 telegram built from one X1 realtime message (x1p1.x1.realtime_telegram).

Run: .venv/bin/python bench/bench_realtime.py [--seconds S]

Target: reading the second's realtime message (E+PQ, as the embedded gateway writes it),
joining it with the gas reading held (G, which comes once a minute on its own
subscription, x1p1/x1/gas_feed.py) and building the telegram with its CRC costs at most
100 µs.

Two paths are timed: the converter's, :class:`~x1p1.x1.realtime_builder.RealtimeBuilder`
(bytes in, telegram out, in one pass), and the general one it stands in for
(``RealtimeMessage.parse``, ``RealtimeAssembler``, ``realtime_telegram``). Each is timed
in a loop (a warm cache), and with ``--cold N`` also one message after each of N pauses
of 0.3 s, the two paths taking turns: at one message a second the converter meets a cold
cache every time, where each step costs several times what it costs in a loop (the
median of the N is printed). Also prints the build alone and, for scale, the gateway's
own ``dsmr5.build``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_p1 import per_call  # noqa: E402

from x1p1.gateway import handlers  # noqa: E402
from x1p1.gateway.simulation.meter import MeterSimulation  # noqa: E402
from x1p1.gateway.streams import Tick  # noqa: E402
from x1p1.p1.dsmr5 import build  # noqa: E402
from x1p1.x1.grants import Grant, GrantKind  # noqa: E402
from x1p1.x1.profiles import Profile  # noqa: E402
from x1p1.x1.realtime import (  # noqa: E402
    RealtimeAssembler,
    RealtimeMessage,
    gas_subscription,
    parse_meters,
    subscription,
)
from x1p1.x1.realtime_builder import RealtimeBuilder  # noqa: E402
from x1p1.x1.realtime_telegram import realtime_telegram  # noqa: E402

AT = datetime(2026, 1, 15, 12, 0, 7, tzinfo=UTC)
PAUSE = 0.3
"""Seconds before each message of ``--cold``: long enough for the caches to go cold."""


def cold(paths: dict[str, Callable[[int], object]], count: int) -> dict[str, float]:
    """Median thread CPU seconds of one call after a pause, the paths taking turns."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for i in range(count):
        for name in names if i % 2 == 0 else names[::-1]:
            time.sleep(PAUSE)
            start = time.thread_time()
            paths[name](i)
            times[name].append(time.thread_time() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--cold", type=int, default=0, help="messages after a pause, each path")
    args = parser.parse_args()

    sim = MeterSimulation(seed=1)
    granted = frozenset({Profile.E_REALTIME, Profile.PQ_REALTIME, Profile.G_REALTIME})
    token = Grant("t", GrantKind.TOKEN, "0" * 64, "bench", "u", granted, AT, AT)
    meters = parse_meters(handlers.list_meters(sim, token))
    selections = []
    for sub in (gas_subscription(granted, meters), subscription(granted, meters)):
        assert sub is not None
        params = dict(part.split("=", 1) for part in sub.query().split("&"))
        (selection,), _ = handlers.realtime_selection(sim, token, params)
        selections.append(selection)
    gas_text = Tick(0, AT, sim).realtime(selections[0])
    # one electricity message a second, as the converter gets them (every one is new)
    seconds = [
        Tick(i, AT + timedelta(seconds=i), sim).realtime(selections[1]).encode()
        for i in range(1 + 2 * args.cold)
    ]
    # for the loops: 60 seconds' values, all at the first second's time (a message is
    # used when it is not older than the last), so each call reads values anew
    first_t = f'"t":"{AT:%Y-%m-%dT%H:%M:%SZ}"'.encode()
    loop = [
        re.sub(
            rb'"t":"[^"]*"',
            first_t,
            Tick(i, AT + timedelta(seconds=i), sim).realtime(selections[1]).encode(),
        )
        for i in range(60)
    ]
    turn = itertools.cycle(loop)
    electricity = seconds[0]
    assembler = RealtimeAssembler(meters)
    builder = RealtimeBuilder(meters)
    assert assembler.receive(RealtimeMessage.parse(gas_text)) is None
    assert builder.receive(gas_text) is None
    readings = assembler.receive(RealtimeMessage.parse(electricity))
    assert readings is not None and readings.gas
    gateway_readings = sim.readings(AT)

    def general(data: bytes | None = None) -> bytes:
        got = assembler.receive(RealtimeMessage.parse(data or next(turn)))
        assert got is not None
        return realtime_telegram(got)

    def one_pass(data: bytes | None = None) -> bytes:
        got = builder.receive(data or next(turn))
        assert got is not None
        return got

    raw = general(electricity)
    assert one_pass(electricity) == raw
    t_builder = per_call(one_pass, args.seconds)
    t_whole = per_call(general, args.seconds)
    t_build = per_call(lambda: realtime_telegram(readings), args.seconds)
    t_gateway = per_call(lambda: build(gateway_readings).serialize(), args.seconds)
    print(f"realtime message (E+PQ)                 {len(electricity)} bytes")
    print(f"built telegram                          {len(raw)} bytes")
    print(
        f"RealtimeBuilder.receive (the converter)  {t_builder * 1e6:9.1f} µs   (target <= 100 µs)"
    )
    print(f"parse + join + build (the general path)  {t_whole * 1e6:9.1f} µs")
    print(f"realtime_telegram alone                  {t_build * 1e6:9.1f} µs")
    print(f"dsmr5.build of the gateway (for scale)   {t_gateway * 1e6:9.1f} µs")
    if args.cold:
        medians = cold(
            {
                "builder": lambda i: one_pass(seconds[1 + i]),
                "general": lambda i: general(seconds[1 + i]),
            },
            args.cold,
        )
        print(
            f"after a {PAUSE} s pause (median of {args.cold}): "
            f"RealtimeBuilder.receive {medians['builder'] * 1e6:.1f} µs, "
            f"the general path {medians['general'] * 1e6:.1f} µs"
        )
    print("ok" if t_builder <= 100e-6 else "OVER TARGET")


if __name__ == "__main__":
    main()
