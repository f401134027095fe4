"""Benchmark: a DSMR 5.0.2 telegram built from one X1 realtime message (x1p1.x1.realtime_telegram).

Run: .venv/bin/python bench/bench_realtime.py [--seconds S]

Target: reading the second's realtime message (E+PQ, as the embedded gateway writes it),
joining it with the gas reading held (G, which comes once a minute on its own
subscription, x1p1/x1/gas_feed.py) and building the telegram with its CRC costs at most
100 µs.
Also prints the build alone and, for scale, the gateway's own ``dsmr5.build``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

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
from x1p1.x1.realtime_telegram import realtime_telegram  # noqa: E402

AT = datetime(2026, 1, 15, 12, 0, 7, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    sim = MeterSimulation(seed=1)
    granted = frozenset({Profile.E_REALTIME, Profile.PQ_REALTIME, Profile.G_REALTIME})
    token = Grant("t", GrantKind.TOKEN, "0" * 64, "bench", "u", granted, AT, AT)
    meters = parse_meters(handlers.list_meters(sim, token))
    tick = Tick(0, AT, sim)
    texts = []
    for sub in (gas_subscription(granted, meters), subscription(granted, meters)):
        assert sub is not None
        params = dict(part.split("=", 1) for part in sub.query().split("&"))
        selections, _ = handlers.realtime_selection(sim, token, params)
        texts += [tick.realtime(s) for s in selections]
    gas_text, electricity = texts
    assembler = RealtimeAssembler(meters)
    assert assembler.receive(RealtimeMessage.parse(gas_text)) is None
    readings = assembler.receive(RealtimeMessage.parse(electricity))
    assert readings is not None and readings.gas
    gateway_readings = sim.readings(AT)

    def whole() -> bytes:
        got = assembler.receive(RealtimeMessage.parse(electricity))
        assert got is not None
        return realtime_telegram(got)

    raw = whole()
    t_whole = per_call(whole, args.seconds)
    t_build = per_call(lambda: realtime_telegram(readings), args.seconds)
    t_gateway = per_call(lambda: build(gateway_readings).serialize(), args.seconds)
    print(f"realtime message (E+PQ)               {len(electricity)} bytes")
    print(f"built telegram                        {len(raw)} bytes")
    print(f"parse + join + build + serialize      {t_whole * 1e6:9.1f} µs   (target <= 100 µs)")
    print(f"realtime_telegram alone                {t_build * 1e6:9.1f} µs")
    print(f"dsmr5.build of the gateway (for scale) {t_gateway * 1e6:8.1f} µs")
    print("ok" if t_whole <= 100e-6 else "OVER TARGET")


if __name__ == "__main__":
    main()
