"""A hostile home network against ``x1p1 -vv gateway serve`` (docs/reliability.md, 6).

Three attacks, one after the other, by hosts on 127.0.1.x; prints what the gateway held,
what it wrote to its log (at ``-vv``, the most talkative level), and how long a request
of the customer's own host (127.0.0.1) took meanwhile. Asserts nothing.

1. ``--streams`` legacy-P1 WebSockets with one token, 50 at a time from 20 hosts, held
   for ``--hold`` seconds.
2. ``--connections`` idle TCP connections from one host, held for ``--hold`` seconds.
3. ``--flood`` requests with a wrong token from one host on one kept-alive connection.

    .venv/bin/python bench/bench_hostile.py [--streams N] [--connections N] [--flood N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from x1p1.converter.tls import client_ssl_context


def http_json(url: str, ctx: Any, body: Any = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), context=ctx) as r:
        return json.load(r)


def timed_get(base: str, ctx: Any) -> float:
    started = time.perf_counter()
    http_json(base + "/api/openapi.json", ctx)
    return time.perf_counter() - started


async def streams(base: str, ctx: Any, token: str, count: int, hold: float) -> dict[str, Any]:
    url = base.replace("https://", "wss://") + "/api/legacy-p1"
    codes: dict[int, int] = {}
    held: list[Any] = []

    async def one(i: int) -> None:
        try:
            ws = await connect(
                url,
                ssl=ctx,
                additional_headers={"Authorization": f"Bearer {token}"},
                local_addr=(f"127.0.1.{i % 20 + 1}", 0),
                open_timeout=30,
            )
        except (OSError, TimeoutError):
            codes[-1] = codes.get(-1, 0) + 1
            return
        try:
            await asyncio.wait_for(ws.recv(), 5)
            held.append(ws)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            codes[code] = codes.get(code, 0) + 1
        except TimeoutError:
            held.append(ws)

    for start in range(0, count, 50):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 50))))
    served = await asyncio.to_thread(timed_get, base, ctx)
    await asyncio.sleep(hold)
    for ws in held:
        await ws.close()
    return {"open": len(held), "closed_by_code": codes, "served_s": served}


def connections(base: str, ctx: Any, port: int, count: int, hold: float) -> dict[str, Any]:
    held, reset = [], 0
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(10)
        sock.bind(("127.0.1.99", 0))
        try:
            sock.connect(("127.0.0.1", port))
            held.append(sock)
        except ConnectionResetError:
            reset += 1
            sock.close()
    time.sleep(1.0)
    for sock in held:
        sock.settimeout(0)
        try:
            if sock.recv(1) == b"":
                reset += 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            reset += 1
    served = timed_get(base, ctx)
    time.sleep(hold)
    for sock in held:
        sock.close()
    return {"held": count - reset, "reset": reset, "served_s": served}


def flood(ctx: Any, port: int, count: int) -> float:
    raw = socket.create_connection(("127.0.0.1", port), source_address=("127.0.1.98", 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (
        "GET /api/meters HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
        + "A" * 43
        + "\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        for _ in range(count):
            tls.sendall(request)
            data = b""
            while not data.endswith(b"}"):
                data += tls.recv(65536)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1100)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--hold", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state, log_path = Path(tmp) / "gw", Path(tmp) / "gateway.log"
        command = [sys.executable, "-m", "x1p1.cli", "-vv", "gateway", "serve", "--host"]
        command += ["127.0.0.1", "--port", "0", "--no-mdns", "--auto-approve"]
        with open(log_path, "wb") as log:
            gateway = subprocess.Popen(
                [*command, "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=log
            )
        try:
            assert gateway.stdout is not None
            line = gateway.stdout.readline().decode()
            match = re.search(r"https://127\.0\.0\.1:(\d+)", line)
            assert match, line
            port = int(match.group(1))
            base = f"https://127.0.0.1:{port}"
            ctx = client_ssl_context(state / "pki" / "root-ca.pem")
            body = {"name": "bench", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab"}
            asked = http_json(base + "/api/tokens/requests", ctx, {**body, "profiles": ["P1"]})
            token = http_json(base + f"/api/tokens/requests/{asked['request_id']}", ctx)["token"]
            print(f"a request, no attack: {timed_get(base, ctx) * 1000:.0f} ms")

            size = log_path.stat().st_size
            result = asyncio.run(streams(base, ctx, token, args.streams, args.hold))
            grown = log_path.stat().st_size - size
            print(
                f"{args.streams} streams of one token from 20 hosts: {result['open']} open, "
                f"closed by code {result['closed_by_code']}; a request meanwhile "
                f"{result['served_s'] * 1000:.0f} ms; log +{grown / 1024:.0f} KiB"
            )
            size = log_path.stat().st_size
            result = connections(base, ctx, port, args.connections, args.hold)
            grown = log_path.stat().st_size - size
            print(
                f"{args.connections} idle connections from one host: {result['held']} held, "
                f"{result['reset']} reset; a request meanwhile {result['served_s'] * 1000:.0f} "
                f"ms; log +{grown / 1024:.0f} KiB"
            )
            size = log_path.stat().st_size
            db = state / "gateway.db"
            rows = sqlite3.connect(db).execute("SELECT count(*) FROM comlog").fetchone()[0]
            seconds = flood(ctx, port, args.flood)
            http_json(base + "/api/openapi.json", ctx)
            after = sqlite3.connect(db).execute("SELECT count(*) FROM comlog").fetchone()[0]
            grown = log_path.stat().st_size - size
            print(
                f"{args.flood} wrong tokens from one host in {seconds:.1f} s "
                f"({args.flood / seconds:.0f}/s): comlog +{after - rows} rows; "
                f"log +{grown / 1024:.0f} KiB"
            )
        finally:
            gateway.terminate()
            gateway.wait(20)


if __name__ == "__main__":
    main()
