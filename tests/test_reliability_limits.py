"""Limits: a gateway under connection churn, big bodies and slow clients
keeps its subscribers at 1 Hz and gives back what it took.

One gateway process (``x1p1 gateway serve``). A subscriber in a process of its own reads
``/api/realtime`` at ``interval=1`` for the whole run; meanwhile this test

- opens 500 WebSocket connections (``/api/legacy-p1``) in batches of 50, each getting
  its first telegram, then drops them: half with a close frame, half cut without one;
- sends bodies over the 16 KB limit (declared by Content-Length, and chunked without
  one, and one of 1 MB): each a 400 with the JSON error;
- holds slow handshakes open (slowloris): TCP connections that sent a few bytes of a
  TLS ClientHello, and TLS connections that sent half an HTTP request's headers, while
  checking that the gateway answers others at once, and until the gateway closes them
  itself (after 60 s: asyncio's TLS handshake timeout and the gateway's idle timeout).

Then everything is closed, and the subscriber must have missed no second (each message
carries its second, ``t``) through the whole run of more than a minute, and the
gateway's open file descriptors and resident memory must be back where they were (a
small tolerance: the gateway hands freed memory back to the system once a minute). The
figures (descriptors and memory before, at the peak and after; the subscriber's gaps;
when the gateway closed the slow connections) are printed, and written to
``$X1P1_FIGURES_DIR/limits.json`` when that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    CLI,
    GatewayProcess,
    child_env,
    open_fds,
    rss_kib,
    wait_for,
    write_figures,
)
from websockets.asyncio.client import connect

from x1p1.converter.tls import client_ssl_context

CONNECTIONS = int(os.environ.get("X1P1_LIMITS_CONNECTIONS", "500"))
BATCH = 50
SLOW_TLS = 100
SLOW_HTTP = 100
FD_TOLERANCE = 4
RSS_TOLERANCE_KIB = 8 * 1024

SUBSCRIBER = r"""
import asyncio, json, ssl, sys, time
from websockets.asyncio.client import connect

async def main(url, ca, token):
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    async with connect(url, ssl=context, additional_headers={"Authorization": "Bearer " + token},
                       open_timeout=20) as ws:
        print("open", flush=True)
        async for message in ws:
            print(json.loads(message)["t"], time.monotonic(), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


async def _subscriber(gateway: GatewayProcess, token: str, equipment_id: str) -> Any:
    url = (
        f"wss://127.0.0.1:{gateway.port}/api/realtime?equipment_id={equipment_id}"
        "&obis=1-0:1.7.0&interval=1"
    )
    process = await asyncio.create_subprocess_exec(
        CLI[0],
        "-c",
        SUBSCRIBER,
        url,
        str(gateway.ca_path),
        token,
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.strip() == b"open", line
    return process


def _host(network: int, i: int) -> str:
    """The i-th of 50 LAN hosts on 127.0.<network>.x: the gateway caps connections per
    address (64) and streams per token (8), so a load this size comes from many
    devices, as it would in a home (docs/reliability.md)."""
    return f"127.0.{network}.{i % 50 + 1}"


async def _churn(url: str, context: ssl.SSLContext, tokens: list[str], count: int) -> int:
    """Open ``count`` legacy-P1 sockets in batches, each until its first telegram; drop
    them, half politely, half by cutting the TCP connection. Each socket comes from a
    host of its own and uses ``tokens`` in turn. Returns the peak of open sockets."""

    async def one(i: int) -> Any:
        ws = await connect(
            url,
            ssl=context,
            additional_headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
            open_timeout=30,
            ping_interval=None,
            compression=None,
            local_addr=(_host(4, i), 0),
        )
        await asyncio.wait_for(ws.recv(), 30)
        return ws

    peak = 0
    for start in range(0, count, BATCH):
        sockets = await asyncio.gather(*(one(i) for i in range(start, min(count, start + BATCH))))
        peak = max(peak, len(sockets))
        for i, ws in enumerate(sockets):
            if i % 2:
                ws.transport.abort()
            else:
                await ws.close()
    return peak


def _big_bodies(port: int, context: ssl.SSLContext) -> list[tuple[str, int, str]]:
    """Requests over the 16 KB limit; (how, status, error code)."""
    body = json.dumps(
        {
            "name": "x" * (17 * 1024),
            "uuid": "0b5c2f0e-1111-4222-8333-444455556666",
            "profiles": ["P1"],
        }
    ).encode()
    results = []
    for how in ("length", "chunked", "1MB"):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                head = (
                    "POST /api/tokens/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nConnection: close\r\n"
                )
                if how == "length":
                    data = head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                elif how == "chunked":
                    chunks = b"".join(
                        f"{len(body[i : i + 4096]):x}\r\n".encode() + body[i : i + 4096] + b"\r\n"
                        for i in range(0, len(body), 4096)
                    )
                    data = (
                        head.encode()
                        + b"Transfer-Encoding: chunked\r\n\r\n"
                        + chunks
                        + b"0\r\n\r\n"
                    )
                else:
                    big = b"{" + b" " * (1024 * 1024) + b"}"
                    data = head.encode() + f"Content-Length: {len(big)}\r\n\r\n".encode() + big
                with contextlib.suppress(OSError):
                    tls.sendall(data)
                answer = b""
                with contextlib.suppress(OSError):
                    while chunk := tls.recv(65536):
                        answer += chunk
        head_text, _, rest = answer.partition(b"\r\n\r\n")
        status = int(head_text.split()[1]) if head_text else 0
        code = json.loads(rest).get("error", "") if rest.startswith(b"{") else ""
        results.append((how, status, code))
    return results


@pytest.mark.slow(seconds=125)  # about, in CI: the longest start first
@pytest.mark.timeout(600)
async def test_churn_big_bodies_and_slow_clients(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gw", tmp_path / "gateway.log", verbosity="-v")
    await gateway.start()
    handle = gateway.handle()
    subscriber = None
    slow: list[socket.socket] = []
    try:
        token = await asyncio.to_thread(handle.pair, ["P1", "E-REALTIME"], name="limits")
        equipment_id = await asyncio.to_thread(lambda: handle.electricity_id)
        context = client_ssl_context(gateway.ca_path)
        url = f"wss://127.0.0.1:{gateway.port}/api/legacy-p1?interval=1"
        churners = [
            await asyncio.to_thread(handle.pair, ["P1"], name=f"churn {k}") for k in range(13)
        ]
        subscriber = await _subscriber(gateway, token, equipment_id)
        # warm up what a first connection allocates, then take the baseline
        await _churn(url, context, churners, 10)
        await asyncio.to_thread(_big_bodies, gateway.port, context)
        await asyncio.sleep(2.0)
        pid = gateway.pid
        fds_before, rss_before = open_fds(pid), rss_kib(pid)
        started = time.monotonic()

        peak_fds = fds_before
        churned = 0
        for _ in range(CONNECTIONS // (BATCH * 2)):
            await _churn(url, context, churners, BATCH * 2)
            churned += BATCH * 2
            peak_fds = max(peak_fds, open_fds(pid))
        bodies = await asyncio.to_thread(_big_bodies, gateway.port, context)

        # slowloris: half a ClientHello, and half an HTTP request's headers over TLS
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        for k in range(SLOW_TLS):
            sock = socket.create_connection(
                ("127.0.0.1", gateway.port), timeout=10, source_address=(_host(5, k), 0)
            )
            sock.sendall(hello)
            slow.append(sock)
        slow_tls_context = client_ssl_context(gateway.ca_path)
        for k in range(SLOW_HTTP):
            raw = socket.create_connection(
                ("127.0.0.1", gateway.port), timeout=10, source_address=(_host(6, k), 0)
            )
            tls = slow_tls_context.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(b"GET /api/meters HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthori")
            slow.append(tls)
        peak_fds = max(peak_fds, open_fds(pid))
        peak_rss = rss_kib(pid)
        # the gateway serves others while the slow ones hang
        served = time.monotonic()
        answer = await asyncio.to_thread(handle.request, "GET", "/api/token", token=token)
        assert answer.status == 200
        serve_seconds = time.monotonic() - served
        await _churn(url, context, churners, 10)
        # and closes the slow ones by itself (a TLS handshake: 60 s; half a request: the
        # idle timeout, 60 s), not an hour later
        held = time.monotonic()
        await wait_for(
            lambda: all(_closed(sock) for sock in slow),
            100,
            "the gateway to close the slow connections",
            step=1.0,
        )
        slow_closed_after = time.monotonic() - held
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.close()
        slow.clear()

        # everything given back (freed memory is handed back once a minute)
        fds_after = rss_after = 0
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            fds_after, rss_after = open_fds(pid), rss_kib(pid)
            if (
                fds_after <= fds_before + FD_TOLERANCE
                and rss_after <= rss_before + RSS_TOLERANCE_KIB
            ):
                break
        elapsed = time.monotonic() - started
        await asyncio.sleep(1.5)
    finally:
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.close()
        if subscriber is not None and subscriber.returncode is None:
            subscriber.send_signal(signal.SIGTERM)
            out, _ = await subscriber.communicate()
        else:
            out = b""
        handle.control.close()
        await gateway.stop()

    seconds, arrivals = [], []
    for line in out.decode().splitlines():
        t, _, at = line.partition(" ")
        seconds.append(int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()))
        arrivals.append(float(at))
    during = [s for s, a in zip(seconds, arrivals, strict=True) if a >= started]
    gaps = [b - a for a, b in zip(seconds, seconds[1:], strict=False)]
    missed = sum(g - 1 for g in gaps if g > 1)
    beats = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    figures = {
        "seconds": round(elapsed, 1),
        "websocket_connections_churned": churned,
        "big_bodies": bodies,
        "slow_tls_held": SLOW_TLS,
        "slow_http_held": SLOW_HTTP,
        "slow_closed_by_gateway_after_s": round(slow_closed_after, 1),
        "request_answered_while_slow_held_s": round(serve_seconds, 3),
        "fds": {"before": fds_before, "peak": peak_fds, "after": fds_after},
        "rss_kib": {"before": rss_before, "peak": peak_rss, "after": rss_after},
        "subscriber": {
            "messages": len(seconds),
            "during_load": len(during),
            "missed_seconds": missed,
            "duplicates": gaps.count(0),
            "max_gap_between_arrivals_s": round(max(beats), 3) if beats else None,
        },
    }
    write_figures(figures, "limits")

    assert churned >= CONNECTIONS
    assert all(status == 400 and code == "bad-request" for _, status, code in bodies), bodies
    assert len(during) >= elapsed - 2, "the subscriber stopped getting messages"
    assert missed == 0 and gaps.count(0) == 0, gaps
    assert peak_fds >= fds_before + SLOW_TLS + SLOW_HTTP  # the slow ones were held
    assert fds_after <= fds_before + FD_TOLERANCE
    assert rss_after <= rss_before + RSS_TOLERANCE_KIB


def _closed(sock: socket.socket) -> bool:
    """Whether the peer has closed ``sock`` (a read returns EOF or fails at once)."""
    try:
        sock.setblocking(False)
        if isinstance(sock, ssl.SSLSocket):
            return sock.recv(1) == b""
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True
