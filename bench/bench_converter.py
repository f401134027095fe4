"""The converter's relay path beside a naive relay, on the same telegram stream.

One local WSS server (real TLS 1.3 with the embedded gateway's PKI, no compression)
streams the same DSMR 5.0.2 telegrams to two child processes at once:

- ``daemon``: the converter itself (:class:`x1p1.converter.supervisor.Converter`: the
  websockets client, CRC check, latest-wins mailbox, serial worker thread, status file,
  ticks), writing into a pty;
- ``naive``: ``websockets`` + ``pyserial`` in a loop, no checks, writing into another pty.

With ``--realtime`` a third child runs the converter with ``source = realtime``: it
subscribes to ``/api/realtime`` (the server answers ``GET /api/meters`` and sends the
electricity and gas messages the embedded gateway would, for the same seconds: the
electricity meter's every second, the gas meter's on the converter's own gas
subscription at the interval it asks, x1p1/x1/gas_feed.py) and builds each telegram
itself (target: at most 1.5x the naive relay's CPU per telegram).
With ``--three-outputs`` another child relays legacy P1 to three outputs (two ptys and
a TCP client the parent reads; target: at most 1.2x the one-output daemon).

The parent reads every pty. Printed, nothing asserted:

- CPU per telegram of each child (user + system, from ``getrusage``) and the ratio
  (target: the daemon at most 1.3x the naive relay);
- added latency in the daemon from the WebSocket message to the bytes being handed to
  the port, p50/p99 (target p99 within 2 ms; the wire itself takes ~82 ms per telegram);
- end to end, server send to the last byte read from each pty, p50/p99, for both;
- the daemon's resident memory (target at most 33 MB at 1 Hz in legacy mode).

    .venv/bin/python bench/bench_converter.py [--count N] [--rate HZ] [--status-on-disk]
                                              [--realtime] [--three-outputs]

By default 120 telegrams at one a second, as a real meter sends them (two minutes): at
that rate each telegram wakes an idle process, and whatever else the daemon does on a
timer of its own shows up in its CPU per telegram. ``--rate 50`` gets many samples of
the per-telegram path quickly. The daemon's status file goes to a tmpfs as under the
shipped systemd unit (``RuntimeDirectory=``); ``--status-on-disk`` puts it in the state
directory, as for ``x1p1 run`` by hand. The children share the machine's cores with the
parent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def rss_kb() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in kB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_split() -> tuple[float, float, int, int]:
    """(user, system) CPU seconds and (voluntary, involuntary) context switches."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_nvcsw, usage.ru_nivcsw


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process: the event loop's, and the others'."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = "event loop" if task.name == str(os.getpid()) else f"thread {task.name}"
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[f"{name} wake-ups"] = float(line.split()[1])
    return out


class Window:
    """CPU between SIGUSR1 (the parent starts streaming) and SIGTERM (it has ended):
    start-up, imports and the TLS handshake are left out, for both relays alike, and so is
    the first second the parent sends before SIGUSR1 (see :func:`parent`).

    ``counter()`` is how many telegrams the relay has written so far: :meth:`relayed`
    counts those of the window."""

    def __init__(self, counter: Callable[[], int]) -> None:
        self.start: float | None = None
        self.end: float | None = None
        self._counter = counter
        self.count_start = 0
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self._start)

    def relayed(self) -> int:
        return self._counter() - self.count_start

    def _start(self) -> None:
        self.count_start = self._counter()
        self.start = cpu_seconds()
        self.split_start = cpu_split()
        self.threads_start = thread_cpu()

    def stop(self) -> None:
        self.end = cpu_seconds()
        self.split_end = cpu_split()
        self.threads_end = thread_cpu()

    @property
    def threads(self) -> dict[str, float]:
        return {
            name: self.threads_end[name] - self.threads_start.get(name, 0.0)
            for name in self.threads_end
        }

    @property
    def split(self) -> list[float]:
        """user s, system s, voluntary and involuntary context switches in the window."""
        return [b - a for a, b in zip(self.split_start, self.split_end, strict=True)]

    @property
    def cpu(self) -> float:
        assert self.start is not None and self.end is not None
        return self.end - self.start


# --- the children -----------------------------------------------------------------------


async def child_daemon(
    state_dir: Path, serial: str, source: str = "auto", extra: str = ""
) -> dict[str, Any]:
    from x1p1.converter.config import ListenAddress, OutputConfig
    from x1p1.converter.supervisor import Converter, ConverterOptions

    options = ConverterOptions(state_dir=state_dir, serial=serial, source=source)
    if extra:  # more outputs: "PTY,HOST:PORT"
        pty2, tcp = extra.split(",")
        host, port = tcp.rsplit(":", 1)
        options.outputs = (
            OutputConfig(serial=serial),
            OutputConfig(serial=pty2),
            OutputConfig(tcp=ListenAddress(host, int(port))),
        )
    converter = Converter(options)
    window = Window(lambda: converter.relayed)

    def stop() -> None:
        window.stop()
        converter.stop()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    await converter.run()
    assert converter.serial is not None
    stats = converter.serial.stats
    latencies = sorted(stats.latencies)
    rss, hwm = rss_kb()
    return {
        "cpu": window.cpu,
        "split": window.split,
        "threads": window.threads,
        "relayed": window.relayed(),
        "written": stats.written,
        "written_direct": stats.written_direct,
        "stale": stats.stale,
        "invalid": converter.dropped_invalid,
        "latency_ms": [x * 1000 for x in latencies],
        "rss_kb": rss,
        "hwm_kb": hwm,
        "modules": sorted(m for m in sys.modules if unneeded(m, source)),
    }


REALTIME_ONLY = (
    "x1p1.x1.realtime",
    "x1p1.x1.realtime_builder",
    "x1p1.x1.realtime_telegram",
    "x1p1.x1.obis",
    "x1p1.p1.dsmr5",
)
"""Modules a converter relaying legacy P1 never needs (imported when the source is realtime)."""


def unneeded(module: str, source: str) -> bool:
    """Whether a converter with this source should not have imported ``module``."""
    if module.split(".")[0] in ("aiohttp", "cryptography"):
        return True
    return source == "legacy-p1" and module in REALTIME_ONLY


async def child_naive(url: str, cafile: str, serial_path: str) -> dict[str, Any]:
    import serial
    from websockets.asyncio.client import connect

    from x1p1.converter.tls import client_ssl_context

    stop = asyncio.Event()
    count = 0
    window = Window(lambda: count)

    def on_term() -> None:
        window.stop()
        stop.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
    port = serial.serial_for_url(serial_path, baudrate=115200)
    context = client_ssl_context(Path(cafile))
    async with connect(url, ssl=context, compression=None, host="127.0.0.1", proxy=None) as ws:

        async def relay() -> None:
            nonlocal count
            async for message in ws:
                port.write(message.encode() if isinstance(message, str) else message)
                count += 1

        task = asyncio.ensure_future(relay())
        await stop.wait()
        task.cancel()
    rss, hwm = rss_kb()
    return {
        "cpu": window.cpu,
        "split": window.split,
        "relayed": window.relayed(),
        "rss_kb": rss,
        "hwm_kb": hwm,
    }


def child_main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "daemon":
        result = asyncio.run(child_daemon(Path(argv[1]), argv[2], *argv[3:]))
    else:
        result = asyncio.run(child_naive(argv[1], argv[2], argv[3]))
    sys.stdout.write(json.dumps(result) + "\n")


# --- the parent -------------------------------------------------------------------------


class PtyEnd:
    """The reader's end of a pty: frames telegrams and notes when each one completed."""

    def __init__(self, name: str, index: dict[bytes, int]) -> None:
        from x1p1.p1 import TelegramReader

        self.name = name
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self.reader = TelegramReader()
        self.index = index
        self.arrived: dict[int, float] = {}
        self.invalid = 0

    def attach(self) -> None:
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        from x1p1.p1 import InvalidTelegram, ValidTelegram

        try:
            data = os.read(self.master, 65536)
        except OSError:
            return
        now = time.monotonic()
        for event in self.reader.feed(data):
            if isinstance(event, ValidTelegram) and event.raw in self.index:
                self.arrived[self.index[event.raw]] = now
            elif isinstance(event, InvalidTelegram):
                self.invalid += 1

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def realtime_feed(
    count: int,
) -> tuple[list[bytes], list[dict[str, str]], dict[str, Any], dict[bytes, int]]:
    """The embedded gateway's own legacy telegrams and realtime messages (``gas`` and
    ``electricity``) for ``count`` seconds, its ``GET /api/meters`` answer, and the
    telegrams the converter should build from them, with the second each stands for.

    The converter asks for gas every :data:`~x1p1.x1.gas_feed.GAS_INTERVAL` s once it
    holds a reading; at a second when both a gas and an electricity message come, on two
    sockets, either may be read first, so both telegrams count as right."""
    from datetime import UTC, datetime, timedelta

    from x1p1.gateway import handlers
    from x1p1.gateway.simulation.meter import MeterSimulation
    from x1p1.gateway.streams import Tick
    from x1p1.x1.gas_feed import GAS_INTERVAL
    from x1p1.x1.grants import Grant, GrantKind
    from x1p1.x1.profiles import Profile
    from x1p1.x1.realtime import (
        RealtimeAssembler,
        RealtimeMessage,
        gas_subscription,
        parse_meters,
        subscription,
    )
    from x1p1.x1.realtime_telegram import realtime_telegram

    start = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    sim = MeterSimulation(seed=1)
    granted = frozenset({Profile.P1, Profile.E_REALTIME, Profile.G_REALTIME, Profile.PQ_REALTIME})
    token = Grant(
        "b", GrantKind.TOKEN, "0" * 64, "bench", "u", granted, start, start + timedelta(days=90)
    )
    meters = handlers.list_meters(sim, token)
    listed = parse_meters(meters)
    subs = {"gas": gas_subscription(granted, listed), "electricity": subscription(granted, listed)}
    selections = {}
    for kind, sub in subs.items():
        assert sub is not None
        params = dict(part.split("=", 1) for part in sub.query().split("&"))
        (selections[kind],), _ = handlers.realtime_selection(sim, token, params)
    telegrams: list[bytes] = []
    messages: list[dict[str, str]] = []
    built: dict[bytes, int] = {}
    assembler = RealtimeAssembler(listed)
    for i in range(count):
        tick = Tick(i, start + timedelta(seconds=i), sim)
        telegrams.append(tick.telegram.encode("ascii"))
        messages.append({kind: tick.realtime(sel) for kind, sel in selections.items()})
        electricity = RealtimeMessage.parse(messages[-1]["electricity"])
        if i % GAS_INTERVAL == 0:
            if i:  # read before this second's gas message
                readings = assembler.receive(electricity)
                assert readings is not None
                built.setdefault(realtime_telegram(readings), i)
            assembler.receive(RealtimeMessage.parse(messages[-1]["gas"]))
        readings = assembler.receive(electricity)
        assert readings is not None
        built[realtime_telegram(readings)] = i
    return telegrams, messages, meters, built


async def parent(
    count: int, rate: float, runtime: Path | None, realtime: bool, three: bool
) -> None:
    import socket
    from datetime import UTC, datetime

    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request, Response

    from x1p1.converter.state import SavedPairing, save_pairing
    from x1p1.gateway.pki import GatewayPKI
    from x1p1.p1 import dsmr5
    from x1p1.x1.gas_feed import GAS_INTERVAL
    from x1p1.x1.profiles import Profile

    work = Path(tempfile.mkdtemp(prefix="x1p1-bench-converter-"))
    pki = GatewayPKI.load_or_create(work / "pki")
    messages: list[dict[str, str]] = []
    meters: dict[str, Any] = {}
    built_index: dict[bytes, int] = {}
    if realtime:
        telegrams, messages, meters, built_index = realtime_feed(count)
    else:
        telegrams = list(dsmr5.sample_stream(count))
    index = {raw: i for i, raw in enumerate(telegrams)}
    gas_ids = {m["equipment_id"] for m in meters.get("meters", ()) if m["type"] == "gas"}
    clients: dict[ServerConnection, tuple[str, int]] = {}

    async def handler(ws: ServerConnection) -> None:
        from urllib.parse import parse_qs, urlsplit

        path = ws.request.path if ws.request is not None else ""
        query = parse_qs(urlsplit(path).query)
        interval = int(query.get("interval", ["1"])[0])
        if not path.startswith("/api/realtime"):
            clients[ws] = ("legacy", interval)
        elif set(query.get("equipment_id", [""])[0].split(",")) <= gas_ids:
            clients[ws] = ("gas", interval)
        else:
            clients[ws] = ("electricity", interval)
        try:
            await ws.wait_closed()
        finally:
            clients.pop(ws, None)

    def rest(connection: ServerConnection, request: Request) -> Response | None:
        """``GET /api/meters`` and ``GET /api/token`` for the realtime child."""
        if request.path.startswith("/api/meters"):
            return connection.respond(200, json.dumps(meters))
        if request.path.startswith("/api/token"):
            answer = {"profiles": ["P1", "E-REALTIME", "G-REALTIME", "PQ-REALTIME"]}
            return connection.respond(200, json.dumps(answer))
        return None

    server = await serve(
        handler,
        "127.0.0.1",
        0,
        ssl=pki.server_ssl_context(),
        compression=None,
        process_request=rest,
    )
    port = server.sockets[0].getsockname()[1]
    pairing = SavedPairing(
        token="b" * 43,
        host_name="X1-interface.local",
        port=port,
        address="127.0.0.1",
        serial=None,
        ca_pem=pki.root_pem.decode(),
        ca_source=None,
        profiles=frozenset(
            {Profile.P1, Profile.E_REALTIME, Profile.G_REALTIME, Profile.PQ_REALTIME}
        ),
        expires_at=None,
        name="bench",
        uuid="0b5c2f0e-1111-4222-8333-444455556666",
        paired_at=datetime.now(UTC).replace(microsecond=0),
    )
    names = ["daemon", "naive"] + (["realtime"] if realtime else []) + (["three"] if three else [])
    ends = {name: PtyEnd(name, built_index if name == "realtime" else index) for name in names}
    second = PtyEnd("three-2", index) if three else None
    for end in [*ends.values(), *([second] if second else [])]:
        end.attach()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    # As under the shipped unit (RuntimeDirectory=x1p1): the status file on a tmpfs.
    # --status-on-disk: in the state directory instead (x1p1 run by hand).
    env.pop("RUNTIME_DIRECTORY", None)
    # X1P1_BENCH_CHILD: another script to run the children with (e.g. one under cProfile).
    me = [sys.executable, os.environ.get("X1P1_BENCH_CHILD", __file__), "--child"]
    tcp_port = 0
    if three:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            tcp_port = probe.getsockname()[1]
    children = {}
    for name in names:
        child_env = dict(env)
        if runtime is not None:
            (runtime / name).mkdir(exist_ok=True)
            child_env["RUNTIME_DIRECTORY"] = str(runtime / name)
        if name == "naive":
            args = [
                "naive",
                f"wss://X1-interface.local:{port}/api/legacy-p1?interval=1",
                str(pki.root_cert_path),
                ends["naive"].path,
            ]
        else:
            state_dir = work / f"state-{name}"
            save_pairing(state_dir, pairing)
            args = ["daemon", str(state_dir), ends[name].path]
            if name == "realtime":
                args.append("realtime")
            elif name == "three":
                assert second is not None
                args += ["legacy-p1", f"{second.path},127.0.0.1:{tcp_port}"]
            else:
                args.append("legacy-p1")
        children[name] = await asyncio.create_subprocess_exec(
            *me, *args, stdout=asyncio.subprocess.PIPE, env=child_env
        )
    # every relay subscribed, within 30 s (the realtime child holds two subscriptions)
    subscriptions = len(names) + (1 if realtime else 0)
    for _ in range(600):
        if len(clients) == subscriptions:
            break
        await asyncio.sleep(0.05)
    if len(clients) < subscriptions:
        for child in children.values():
            child.kill()
        raise SystemExit(f"only {len(clients)} of {len(names)} relays connected")
    sent: dict[int, float] = {}

    async def send(i: int) -> None:
        text = telegrams[i].decode("ascii")
        sent[i] = time.monotonic()
        for ws, (kind, interval) in sorted(clients.items(), key=lambda c: c[1][0] != "gas"):
            if kind == "legacy":
                await ws.send(text)
            elif i % interval == 0:  # as the gateway's hub: seconds that divide evenly
                with contextlib.suppress(ConnectionClosed):  # the gas one, subscribing anew
                    await ws.send(messages[i][kind])

    # The first second is start-up, outside the measured window for every child alike: its
    # first message makes each relay import and warm what it imports lazily, and the
    # realtime child, once it holds a gas reading, subscribes to gas anew at its long
    # interval (x1p1/x1/gas_feed.py), a second TLS handshake.
    await asyncio.sleep(1.0)
    await send(0)
    for _ in range(200):
        if not realtime or any(c == ("gas", GAS_INTERVAL) for c in clients.values()):
            break
        await asyncio.sleep(0.05)
    else:
        print("WARNING: the realtime child did not subscribe to gas at its long interval")
    tcp_data = bytearray()
    tcp_task = tcp_writer = None
    if three:
        # Hold the writer until the end: a StreamWriter that is garbage collected closes
        # its connection (asyncio's StreamWriter.__del__), and this reader then gets nothing.
        reader, tcp_writer = await asyncio.open_connection("127.0.0.1", tcp_port)

        async def read_tcp() -> None:
            while chunk := await reader.read(65536):
                tcp_data.extend(chunk)

        tcp_task = asyncio.ensure_future(read_tcp())
    await asyncio.sleep(1.0)
    for child in children.values():
        child.send_signal(signal.SIGUSR1)
    await asyncio.sleep(0.1)
    period = 1.0 / rate
    t0 = time.monotonic()
    for i in range(1, len(telegrams)):
        target = t0 + (i - 1) * period
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)
    await asyncio.sleep(0.5)
    results: dict[str, dict[str, Any]] = {}
    for name, child in children.items():
        child.send_signal(signal.SIGTERM)
        out, _ = await child.communicate()
        results[name] = json.loads(out.decode().strip().splitlines()[-1])
    if tcp_task is not None:
        tcp_task.cancel()
    if tcp_writer is not None:
        tcp_writer.close()
    for end in [*ends.values(), *([second] if second else [])]:
        end.close()
    server.close()
    await server.wait_closed()

    per = {name: r["cpu"] / max(1, r["relayed"]) for name, r in results.items()}
    d = results["daemon"]
    cpu_d, cpu_n = per["daemon"], per["naive"]
    if runtime is not None:
        shutil.rmtree(runtime, ignore_errors=True)
    print(
        f"telegrams sent: {count} at {rate:g}/s, {len(telegrams[0])} bytes each "
        "(the first one before the measured window)"
    )
    where = f"{runtime} (tmpfs, as under systemd)" if runtime else "the state directory"
    print(f"daemon status file: in {where}")
    print("".join([f"{'':24}", *(f"{name:>14}" for name in names)]))

    def row(label: str, values: list[str]) -> None:
        print("".join([f"{label:24}", *(f"{v:>14}" for v in values)]))

    row("relayed", [str(results[x]["relayed"]) for x in names])
    row("at the pty", [str(len(ends[x].arrived)) for x in names])
    row("invalid at the pty", [str(ends[x].invalid) for x in names])
    row("CPU per telegram (us)", [f"{per[x] * 1e6:.1f}" for x in names])
    for i, label in enumerate(("  of it user (us)", "  of it system (us)")):
        row(
            label,
            [f"{results[x]['split'][i] / max(1, results[x]['relayed']) * 1e6:.1f}" for x in names],
        )
    for i, label in ((2, "wake-ups per telegram"), (3, "preempted per telegram")):
        row(label, [f"{results[x]['split'][i] / max(1, results[x]['relayed']):.2f}" for x in names])
    e2e = {}
    for name in names:
        end = ends[name]
        e2e[name] = [(end.arrived[i] - sent[i]) * 1000 for i in end.arrived if i]
    for q in (0.5, 0.99):
        row(f"end to end p{int(q * 100)} (ms)", [f"{pct(e2e[x], q):.3f}" for x in names])
    row("RSS (MB)", [f"{results[x]['rss_kb'] / 1024:.1f}" for x in names])
    row("peak RSS (MB)", [f"{results[x]['hwm_kb'] / 1024:.1f}" for x in names])
    lat = d["latency_ms"]
    print()
    print(f"CPU ratio daemon/naive: {cpu_d / cpu_n:.2f}x (target <= 1.3x)")
    if realtime:
        print(f"CPU ratio realtime/naive: {per['realtime'] / cpu_n:.2f}x (target <= 1.5x)")
    if three:
        assert second is not None
        tcp_count = len(_framed(bytes(tcp_data)))
        print(
            f"CPU ratio three outputs/one: {per['three'] / cpu_d:.2f}x (target <= 1.2x); "
            f"second pty {len(second.arrived)}, TCP client {tcp_count} telegrams (it connects "
            "after the first)"
        )
    print(
        f"daemon: WebSocket message -> handed to the port: p50 {pct(lat, 0.5):.3f} ms, "
        f"p99 {pct(lat, 0.99):.3f} ms, max {max(lat) if lat else float('nan'):.3f} ms "
        f"over the last {len(lat)} (target p99 <= 2 ms)"
    )
    per_thread = ", ".join(
        f"{name} {cpu / max(1, d['relayed']):.2f}"
        if name.endswith("wake-ups")
        else f"{name} {cpu / max(1, d['relayed']) * 1e6:.0f} us"
        for name, cpu in d["threads"].items()
    )
    print(f"daemon CPU per telegram by thread: {per_thread}")
    if realtime:
        r = results["realtime"]
        per_thread = ", ".join(
            f"{name} {cpu / max(1, r['relayed']):.2f}"
            if name.endswith("wake-ups")
            else f"{name} {cpu / max(1, r['relayed']) * 1e6:.0f} us"
            for name, cpu in r["threads"].items()
        )
        print(f"realtime CPU per telegram by thread: {per_thread}")
    print(f"daemon resident memory: {d['rss_kb'] / 1024:.1f} MB (target <= 33 MB)")
    print(
        f"daemon: {d['written']} written ({d['written_direct']} straight from the event loop), "
        f"{d['stale']} stale dropped, {d['invalid']} invalid"
    )
    for name in names:
        if name != "naive" and results[name]["modules"]:
            print(f"WARNING: {name} imported {results[name]['modules']}")


def _framed(data: bytes) -> list[bytes]:
    from x1p1.p1 import TelegramReader, ValidTelegram

    return [e.raw for e in TelegramReader().feed(data) if isinstance(e, ValidTelegram)]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--rate", type=float, default=1.0, help="telegrams a second")
    parser.add_argument(
        "--realtime", action="store_true", help="also a converter with source = realtime"
    )
    parser.add_argument(
        "--three-outputs", action="store_true", help="also a converter with three outputs"
    )
    parser.add_argument(
        "--status-on-disk",
        action="store_true",
        help="the daemon's status file in its state directory, not on a tmpfs",
    )
    args = parser.parse_args()
    runtime = None
    if not args.status_on_disk and Path("/dev/shm").is_dir():
        runtime = Path(tempfile.mkdtemp(prefix="x1p1-bench-run-", dir="/dev/shm"))
    asyncio.run(parent(args.count, args.rate, runtime, args.realtime, args.three_outputs))


if __name__ == "__main__":
    main()
