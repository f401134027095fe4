"""Stream figures: 100 ``/api/realtime`` and 10 ``/api/legacy-p1``
subscribers at 1 Hz against ``x1p1 gateway serve`` for 60 seconds.

Prints the CPU the gateway process used (percent of one core, from /proc), the seconds a
subscriber missed, and the delivery skew: when a message arrived minus the whole second
it belongs to (its ``t``, or the telegram's 0-0:1.0.0 timestamp; the gateway runs at
speed 1, so the meters' clock is the wall clock). Asserts nothing.

    .venv/bin/python bench/bench_gateway_streams.py [--duration S] [--realtime N] [--legacy N]

The clients (the ``websockets`` library, the converter's own) run in ``--clients`` child
processes on the same machine: their CPU is not counted, but they share the cores, and
their own time to read a message is part of the skew measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from websockets.asyncio.client import connect

from x1p1.converter.tls import client_ssl_context

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
TST = re.compile(r"0-0:1\.0\.0\((\d{12})([SW])\)")
SELECTIONS = [
    "1-0:1.7.0.255,1-0:2.7.0.255",
    "1-0:1.7.0.255,1-0:2.7.0.255,1-0:32.7.0.255,1-0:52.7.0.255,1-0:72.7.0.255",
    "1-0:1.8.1.255,1-0:1.8.2.255,1-0:2.8.1.255,1-0:2.8.2.255,0-0:96.14.0.255",
    "1-0:21.7.0.255,1-0:41.7.0.255,1-0:61.7.0.255,1-0:31.7.0.255,1-0:51.7.0.255",
]


def telegram_second(text: str) -> float:
    """The telegram's own timestamp (P1 local time with its S/W flag) as a Unix time."""
    match = TST.search(text)
    assert match, "telegram without 0-0:1.0.0"
    naive = datetime.strptime(match.group(1), "%y%m%d%H%M%S")
    fold = 1 if match.group(2) == "W" else 0  # the repeated hour in October is winter time
    return naive.replace(tzinfo=AMSTERDAM, fold=fold).timestamp()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stats:
    """What one client process saw inside the measured window."""

    def __init__(self, start: float, end: float) -> None:
        self.skews: list[float] = []
        self.seconds: dict[int, set[int]] = defaultdict(set)
        self.window = (start, end)
        self.errors: list[str] = []

    def note(self, subscriber: int, due: float, arrived: float) -> None:
        start, end = self.window
        if start <= due < end:
            self.skews.append(arrived - due)
            self.seconds[subscriber].add(int(due))

    def to_json(self) -> dict[str, object]:
        return {
            "skews": self.skews,
            "errors": self.errors,
            "seconds": {str(k): sorted(v) for k, v in self.seconds.items()},
        }


async def subscribe(
    url: str, ssl_ctx: object, token: str, index: int, legacy: bool, stats: Stats
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with connect(
            url, ssl=ssl_ctx, additional_headers=headers, open_timeout=60, max_size=2**20
        ) as ws:
            while time.time() < stats.window[1] + 2:
                try:
                    async with asyncio.timeout(3):
                        message = await ws.recv()
                except TimeoutError:
                    continue
                arrived = time.time()
                assert isinstance(message, str)
                if legacy:
                    stats.note(index, telegram_second(message), arrived)
                else:
                    body = json.loads(message)
                    if body["equipment_id"] == stats_meter[0]:
                        due = datetime.fromisoformat(body["t"]).timestamp()
                        stats.note(index, due, arrived)
    except Exception as exc:  # report, do not hide
        stats.errors.append(f"subscriber {index}: {exc!r}")


stats_meter = [""]
"""The electricity meter's id: its messages carry the second they belong to."""


def http_json(url: str, ssl_ctx: object, body: object = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, headers)
    with urllib.request.urlopen(request, context=ssl_ctx, timeout=30) as response:
        return json.load(response)


def pair(base: str, ssl_ctx: object) -> str:
    """A token for every streaming profile, from a gateway started with --auto-approve."""
    body = {
        "name": "bench",
        "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab",
        "profiles": ["P1", "E-REALTIME", "PQ-REALTIME", "G-REALTIME"],
    }
    request_id = http_json(base + "/api/tokens/requests", ssl_ctx, body)["request_id"]
    state = http_json(base + f"/api/tokens/requests/{request_id}", ssl_ctx)
    assert state["status"] == "approved", state
    return str(state["token"])


async def client(args: argparse.Namespace) -> None:
    """A client process: subscribers ``first`` … of the run; prints its Stats as JSON."""
    ssl_ctx = client_ssl_context(Path(args.ca))
    token = os.environ["X1P1_BENCH_TOKEN"]
    e_id, g_id = args.meters.split(",")
    stats_meter[0] = e_id
    stats = Stats(args.start, args.end)
    wss = args.base.replace("https://", "wss://")
    tasks = []
    for index in range(args.first, args.first + args.count):
        if index < args.realtime:
            obis = SELECTIONS[index % len(SELECTIONS)] + ",0-1:24.2.1.255"
            url = f"{wss}/api/realtime?equipment_id={e_id},{g_id}&obis={obis}&interval=1"
        else:
            url = f"{wss}/api/legacy-p1?interval=1"
        tasks.append(subscribe(url, ssl_ctx, token, index, index >= args.realtime, stats))
    await asyncio.gather(*tasks)
    print(json.dumps(stats.to_json()))


async def run(args: argparse.Namespace, state_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "x1p1.cli",
        "-q",
        "gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-mdns",
        "--auto-approve",
        "--state-dir",
        str(state_dir),
    ]
    gateway = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert gateway.stdout is not None
    try:
        line = (await gateway.stdout.readline()).decode()
        match = re.search(r"https://(\S+)", line)
        assert match, f"the gateway did not start: {line!r}"
        base = "https://" + match.group(1)
        ca = state_dir / "pki" / "root-ca.pem"
        ssl_ctx = client_ssl_context(ca)
        token = await asyncio.to_thread(pair, base, ssl_ctx)
        meters = await asyncio.to_thread(http_json, base + "/api/meters", ssl_ctx, None, token)
        ids = {m["type"]: m["equipment_id"] for m in meters["meters"]}
        start = float(int(time.time() + args.warmup))
        end = start + args.duration
        total = args.realtime + args.legacy
        per = -(-total // args.clients)
        children = []
        for first in range(0, total, per):
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--client",
                    "--base",
                    base,
                    "--ca",
                    str(ca),
                    "--meters",
                    f"{ids['electricity']},{ids['gas']}",
                    "--first",
                    str(first),
                    "--count",
                    str(min(per, total - first)),
                    "--realtime",
                    str(args.realtime),
                    "--start",
                    str(start),
                    "--end",
                    str(end),
                    stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, "X1P1_BENCH_TOKEN": token},
                )
            )
        await asyncio.sleep(start - time.time())
        cpu_start = cpu_seconds(gateway.pid)
        await asyncio.sleep(end - time.time())
        cpu_used = cpu_seconds(gateway.pid) - cpu_start
        results = [json.loads((await c.communicate())[0]) for c in children]
    finally:
        gateway.terminate()
        await gateway.wait()

    skews = sorted(s * 1000 for r in results for s in r["skews"])
    seen: dict[int, set[int]] = defaultdict(set)
    for r in results:
        for key, seconds in r["seconds"].items():
            seen[int(key)].update(seconds)
    expected = set(range(int(start), int(end)))
    missed = {i: len(expected - seen.get(i, set())) for i in range(total)}
    p99 = skews[min(len(skews) - 1, int(len(skews) * 0.99))] if skews else float("nan")
    print(
        f"subscribers      {args.realtime} realtime + {args.legacy} legacy-p1, 1 Hz, "
        f"{args.duration:g} s, clients in {len(children)} processes"
    )
    print(
        f"gateway CPU      {100 * cpu_used / args.duration:5.1f} % of one core "
        f"({cpu_used:.2f} s in {args.duration:g} s)"
    )
    print(
        f"missed seconds   {sum(missed.values())} "
        f"(subscribers with a miss: {sum(1 for m in missed.values() if m)})"
    )
    print(f"messages         {len(skews)} timed of {total * len(expected)} due")
    if skews:
        print(
            f"delivery skew    p50 {statistics.median(skews):6.1f} ms   p99 {p99:6.1f} ms   "
            f"max {skews[-1]:6.1f} ms   min {skews[0]:6.1f} ms"
        )
    for error in [e for r in results for e in r["errors"]][:5]:
        print("error:", error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--realtime", type=int, default=100)
    parser.add_argument("--legacy", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before measuring")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    # a client process (internal)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    for name in ("--base", "--ca", "--meters"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    for name in ("--first", "--count"):
        parser.add_argument(name, type=int, help=argparse.SUPPRESS)
    for name in ("--start", "--end"):
        parser.add_argument(name, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client(args))
        return
    with tempfile.TemporaryDirectory(prefix="x1p1-bench-gw-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
