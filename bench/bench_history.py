"""History figures: backfill of full retention on first start, and
a measurements query for 730 daily values of 4 OBIS objects (X1 §7.3, Table 8).

Prints figures; asserts nothing. The HTTPS round trip is measured with the server.

    .venv/bin/python bench/bench_history.py [--runs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from x1p1.gateway.history import HistoryStore
from x1p1.gateway.simulation import MeterSimulation
from x1p1.x1.api import format_time
from x1p1.x1.history import parse_measurements_query
from x1p1.x1.obis import Meter
from x1p1.x1.profiles import Profile

CODES = "1-0:1.8.1.255,1-0:1.8.2.255,1-0:2.8.1.255,1-0:2.8.2.255"


def percentiles(label: str, fn: Callable[[], object], runs: int) -> None:
    for _ in range(max(5, runs // 20)):  # warm up
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{label:<48} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {times[-1]:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="x1p1-history-bench-") as tmp:
        path = Path(tmp) / "gateway.db"
        conn = sqlite3.connect(path, isolation_level=None)
        store = HistoryStore(conn)
        store.init_schema()
        now = datetime.now(UTC)
        sim = MeterSimulation(seed=args.seed)

        start = time.perf_counter()
        readings = store.backfill(sim, now)
        backfill = time.perf_counter() - start
        print(
            f"backfill of full retention, cold simulation: {readings} readings in {backfill:.2f} s"
        )
        size = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
        print(f"database after backfill: {size:.2f} MB (db + WAL)")

        start = time.perf_counter()
        store.record_due(sim, now)
        print(f"record_due with nothing due: {(time.perf_counter() - start) * 1000:.2f} ms")

        params = {
            "obis": CODES,
            "resolution": "1d",
            "from": "2000-01-01T00:00:00Z",
            "to": format_time(now),
        }
        profiles = {Profile.E_HISTORIC}
        q = parse_measurements_query(params, Meter.ELECTRICITY, profiles, now=now)
        got = store.query(q)
        assert len(got) == 730 and all(len(v) == 4 for _, v in got), len(got)
        print(f"query: {len(got)} daily readings x {len(q.codes)} OBIS objects, {args.runs} runs")

        percentiles(
            "parse_measurements_query",
            lambda: parse_measurements_query(params, Meter.ELECTRICITY, profiles, now=now),
            args.runs,
        )
        percentiles("HistoryStore.query", lambda: store.query(q), args.runs)
        percentiles(
            "HistoryStore.query_json (SQLite writes JSON)", lambda: store.query_json(q), args.runs
        )

        def python_json() -> str:
            return json.dumps(
                [{"t": format_time(t), "values": v} for t, v in store.query(q)],
                separators=(",", ":"),
            )

        percentiles("HistoryStore.query + json.dumps", python_json, args.runs)
        conn.close()


if __name__ == "__main__":
    main()
