"""The gateway on a hostile home network: another host on the LAN (a client bound to
127.0.0.2) or a web page in the customer's browser attacks it (docs/reliability.md).

- Request checks: a ``Host`` that is not the gateway's (DNS rebinding) and a JSON body not
  declared ``application/json`` (a cross-site form POST) are refused with a clear 400.
- WebSocket closes complete the closing handshake (RFC 6455 §7.1.1), so aiohttp's client
  sees 4401, 4403 and 4503; a token holds at most 8 streams, the 9th is closed with 4429.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from gateway_fixture import RunningGateway, gateway, gateway_process
from reliability_support import open_fds, wait_for
from test_portal_http import Client

from x1p1.gateway.comlog import ROWS_PER_ADDRESS
from x1p1.gateway.listener import HEADROOM, PER_ADDRESS, ConnectionLimits, total_for
from x1p1.gateway.server import WS_CLOSE_TIMEOUT
from x1p1.gateway.streams import MAX_STREAMS_PER_TOKEN
from x1p1.x1.grants import PER_ADDRESS as PENDING_PER_ADDRESS

__all__ = ["gateway"]

ATTACKER = "127.0.0.2"
"""A second host on the home network."""


def _request(
    gw: RunningGateway,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    source: str = ATTACKER,
    server_hostname: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """One HTTPS request from ``source``; ``headers`` may set ``Host`` itself."""
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10, source_address=(source, 0))
    with gw.ssl_context().wrap_socket(raw, server_hostname=server_hostname or "127.0.0.1") as tls:
        conn = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=10)
        conn.sock = tls
        all_headers = dict(headers or {})
        skip_host = "Host" in all_headers
        conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
        for name, value in all_headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
    return response.status, json.loads(data) if data.startswith(b"{") else {}


TOKEN_BODY = json.dumps(
    {"name": "evil", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab", "profiles": ["P1"]}
).encode()


# --- request checks: Host and Content-Type ---------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_cross_site_post_is_refused(gateway: RunningGateway, content_type: str | None) -> None:
    """A form on another site may POST text/plain to the gateway without a preflight; the
    body is valid JSON, yet nothing is created (x1-api.md, Requests)."""
    headers = {"Origin": "https://evil.example"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, body = _request(
        gateway, "POST", "/api/tokens/requests", body=TOKEN_BODY, headers=headers
    )
    assert status == 400
    assert body["error"] == "bad-request"
    assert "application/json" in body["message"]
    assert gateway.control.requests() == []


def test_json_post_is_taken(gateway: RunningGateway) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, body = _request(
        gateway, "POST", "/api/tokens/requests", body=TOKEN_BODY, headers=headers
    )
    assert status == 202, body
    assert [r["name"] for r in gateway.control.requests()] == ["evil"]


@pytest.mark.parametrize(
    "host",
    ["evil.example", f"evil.example:{0}", "x1-interface.local.evil.example", "[::2]", "10.9.8.7"],
)
def test_foreign_host_is_refused(gateway: RunningGateway, host: str) -> None:
    """DNS rebinding: a page on evil.example whose name now points at the gateway sends
    ``Host: evil.example``. Every path refuses it, the open ones and the portal too."""
    host = host.replace(":0", f":{gateway.port}")
    for method, path in (("GET", "/api/openapi.json"), ("GET", "/"), ("GET", "/api/meters")):
        status, body = _request(gateway, method, path, headers={"Host": host})
        assert status == 400, (host, path)
        assert body["error"] == "bad-request"
        assert body["message"].startswith("Host:")
    headers = {"Host": host, "Content-Type": "application/json"}
    status, _ = _request(gateway, "POST", "/api/tokens/requests", body=TOKEN_BODY, headers=headers)
    assert status == 400
    assert gateway.control.requests() == []


@pytest.mark.parametrize("host", ["bad host", "[::1", "127.0.0.1:x", ""])
def test_malformed_host_is_refused(gateway: RunningGateway, host: str) -> None:
    status, body = _request(gateway, "GET", "/api/openapi.json", headers={"Host": host})
    assert status == 400
    assert body["message"].startswith("Host:")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:{port}",
        "localhost",
        "LOCALHOST:{port}",
        "[::1]",
        "[::1]:{port}",
        "X1-interface.local",
        "x1-interface-3.local:{port}",
        "X1-interface.local.",
    ],
)
def test_own_names_are_taken(gateway: RunningGateway, host: str) -> None:
    host = host.replace("{port}", str(gateway.port))
    status, body = _request(gateway, "GET", "/api/openapi.json", headers={"Host": host})
    assert status == 200, body


def test_foreign_host_is_refused_on_websockets(gateway: RunningGateway) -> None:
    token = gateway.pair(["P1"])
    headers = {
        "Host": "evil.example",
        "Authorization": f"Bearer {token}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    status, body = _request(gateway, "GET", "/api/legacy-p1", headers=headers)
    assert status == 400
    assert body["message"].startswith("Host:")


def test_tls_name_does_not_stand_in_for_host(gateway: RunningGateway) -> None:
    """The check reads the Host header, not the TLS server name."""
    status, _ = _request(
        gateway,
        "GET",
        "/api/openapi.json",
        headers={"Host": "evil.example"},
        server_hostname="localhost",
    )
    assert status == 400


# --- WebSocket closes: the closing handshake, and streams per token ---------------------------


@contextlib.asynccontextmanager
async def _aiohttp(gw: RunningGateway, source: str = ATTACKER) -> AsyncIterator[ClientSession]:
    """aiohttp's client (Home Assistant's library) from ``source``."""
    connector = aiohttp.TCPConnector(ssl=gw.ssl_context(), local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def _open(session: ClientSession, gw: RunningGateway, token: str) -> ClientWebSocketResponse:
    return await session.ws_connect(
        gw.ws_url + "/api/legacy-p1",
        headers={"Authorization": f"Bearer {token}"},
        autoping=True,
    )


async def _close_code(ws: ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the socket closes; the close code the client saw, and the reason."""
    reason = ""
    async with asyncio.timeout(15):
        while True:
            message = await ws.receive()
            if message.type is WSMsgType.CLOSE:
                reason = str(message.extra or "")
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
    await ws.close()
    return ws.close_code, reason


def _token_id(gw: RunningGateway, name: str) -> str:
    (token,) = [t for t in gw.control.tokens() if t["name"] == name and t["status"] == "active"]
    return str(token["token_id"])


def _open_streams(gw: RunningGateway, token_id: str) -> int:
    return gw.call(lambda g: g.state.hub.open_streams(token_id) if g.state else 0)


async def test_aiohttp_sees_4401_4403_and_4503(gateway: RunningGateway) -> None:
    """RFC 6455 §7.1.1: the gateway waits for the client's Close before it drops TCP, so
    aiohttp reports the gateway's code, not 1006 (x1-api.md, WebSocket)."""
    gw = gateway
    revoked = await asyncio.to_thread(gw.pair, ["P1"], name="revoked")
    narrowed = await asyncio.to_thread(gw.pair, ["P1", "E-REALTIME"], name="narrowed")
    switched = await asyncio.to_thread(gw.pair, ["P1"], name="switched")
    async with _aiohttp(gw) as session:
        ws = await _open(session, gw, revoked)
        assert (await ws.receive()).type is WSMsgType.TEXT
        await asyncio.to_thread(gw.control.revoke, _token_id(gw, "revoked"))
        code, reason = await _close_code(ws)
        assert code == 4401, reason
        assert reason.startswith("unauthorized")

        ws = await _open(session, gw, narrowed)
        assert (await ws.receive()).type is WSMsgType.TEXT
        await asyncio.to_thread(gw.control.set_profiles, _token_id(gw, "narrowed"), ["E-REALTIME"])
        code, reason = await _close_code(ws)
        assert code == 4403, reason

        ws = await _open(session, gw, switched)
        assert (await ws.receive()).type is WSMsgType.TEXT
        await asyncio.to_thread(gw.control.operator, "disable")
        try:
            code, reason = await _close_code(ws)
        finally:
            await asyncio.to_thread(gw.control.operator, "enable")
        assert code == 4503, reason
        assert reason.startswith("x1-disabled")


async def test_a_client_that_never_answers_close_is_dropped(gateway: RunningGateway) -> None:
    """A peer that ignores the Close frame holds its socket for at most WS_CLOSE_TIMEOUT:
    the stream leaves the hub once the bounded wait ends."""
    gw = gateway
    token = await asyncio.to_thread(gw.pair, ["P1"], name="mute")
    async with _aiohttp(gw) as session:
        ws = await session.ws_connect(
            gw.ws_url + "/api/legacy-p1",
            headers={"Authorization": f"Bearer {token}"},
            autoclose=False,
        )
        assert (await ws.receive()).type is WSMsgType.TEXT
        await asyncio.to_thread(gw.control.revoke, _token_id(gw, "mute"))
        async with asyncio.timeout(10):
            while (message := await ws.receive()).type is WSMsgType.TEXT:
                pass
        assert message.type is WSMsgType.CLOSE and message.data == 4401
        # no Close goes back: the gateway gives up after its bounded wait
        await wait_for(
            lambda: not gw.call(lambda g: len(g.state.hub.subscribers) if g.state else 0),
            WS_CLOSE_TIMEOUT + 8,
            "the mute stream to leave the hub",
        )
        message = await ws.receive(timeout=5)
        assert message.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
        await ws.close()


async def test_streams_per_token_are_capped(gateway: RunningGateway) -> None:
    """A token holds at most MAX_STREAMS_PER_TOKEN open streams; the next one is closed
    with 4429 at once, the open ones go on, and a freed slot can be used again."""
    gw = gateway
    token = await asyncio.to_thread(gw.pair, ["P1"], name="greedy")
    other = await asyncio.to_thread(gw.pair, ["P1"], name="neighbour")
    async with _aiohttp(gw) as session:
        streams = [await _open(session, gw, token) for _ in range(MAX_STREAMS_PER_TOKEN)]
        extra = await _open(session, gw, token)
        code, reason = await _close_code(extra)
        assert code == 4429, reason
        assert reason.startswith("rate-limited")
        for ws in streams:
            assert (await ws.receive(timeout=10)).type is WSMsgType.TEXT
        async with _aiohttp(gw, source="127.0.0.1") as own:
            neighbour = await _open(own, gw, other)  # another token is not held up
            assert (await neighbour.receive(timeout=10)).type is WSMsgType.TEXT
            await neighbour.close()
        await streams.pop().close()
        token_id = await asyncio.to_thread(_token_id, gw, "greedy")
        await wait_for(
            lambda: _open_streams(gw, token_id) < MAX_STREAMS_PER_TOKEN, 10, "a freed slot"
        )
        again = await _open(session, gw, token)
        assert (await again.receive(timeout=10)).type is WSMsgType.TEXT
        for ws in [*streams, again]:
            await ws.close()


# --- connections: caps per address and in all, descriptor headroom ----------------------------


def _hold(source: str, port: int, count: int) -> list[socket.socket]:
    """``count`` raw TCP connections from ``source``, opened and left idle (no TLS); the
    ones the gateway reset before ``connect`` returned are closed and left out."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(20)
        sock.bind((source, 0))
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionResetError:
            sock.close()
            continue
        held.append(sock)
    return held


def _until(check: Callable[[], bool], limit: float, what: str) -> None:
    """Wait until ``check()`` holds; AssertionError after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what} after {limit:g} s"
        time.sleep(0.02)


def _status(gw: RunningGateway) -> dict[str, int]:
    return dict(gw.control.status()["connections"])


def test_one_host_cannot_take_every_connection(gateway: RunningGateway) -> None:
    """1100 idle connections from one host: the gateway keeps 64 of them (PER_ADDRESS),
    resets the rest before any TLS, and serves another host beside them."""
    gw = gateway
    held = _hold(ATTACKER, gw.port, 1100)
    try:
        _until(lambda: _status(gw)["refused"] == 1100 - PER_ADDRESS, 30, "the refusals")
        status = _status(gw)
        assert status["open"] == PER_ADDRESS
        assert gw.call(lambda g: g.connections.held_by(ATTACKER) if g.connections else 0) == 64
        started = time.perf_counter()
        reply = gw.request("GET", "/api/openapi.json")
        served = time.perf_counter() - started
        assert reply.status == 200
        print(
            f"\n1100 connections from one host: {status['open']} held, served another in "
            f"{served * 1000:.0f} ms"
        )
        reset = 1100 - len(held)  # reset before connect() returned
        for sock in held:
            sock.settimeout(0)
            try:
                if sock.recv(1) == b"":
                    reset += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                reset += 1
        assert reset == 1100 - PER_ADDRESS
    finally:
        for sock in held:
            sock.close()
    _until(lambda: _status(gw)["open"] == 0, 30, "the connections to be let go")


def test_descriptor_exhaustion(tmp_path: Path) -> None:
    """Eight hosts open 512 connections against a gateway allowed 160 descriptors: it
    holds at most 160 - HEADROOM connections, never runs out of descriptors (its control
    socket and database go on), and serves again as soon as the attack ends."""
    with gateway_process(tmp_path / "gw", nofile=160) as gw:
        assert gw.process is not None
        pid = gw.process.pid
        cap = 160 - HEADROOM
        assert _status(gw)["total"] == cap
        held: list[socket.socket] = []
        try:
            for k in range(2, 10):
                held += _hold(f"127.0.0.{k}", gw.port, PER_ADDRESS)
            _until(lambda: _status(gw)["refused"] == 8 * PER_ADDRESS - cap, 30, "the refusals")
            status = _status(gw)
            assert status["open"] == cap
            assert open_fds(pid) <= 160 - HEADROOM // 2
            assert gw.control.requests() == []  # the control socket and the database answer
            print(
                f"\n512 connections from 8 hosts, 160 descriptors: {status['open']} held, "
                f"{open_fds(pid)} descriptors open"
            )
        finally:
            for sock in held:
                sock.close()
        _until(lambda: _status(gw)["open"] == 0, 30, "the connections to be let go")
        started = time.perf_counter()
        assert gw.request("GET", "/api/openapi.json").status == 200
        print(f"served again {(time.perf_counter() - started) * 1000:.0f} ms after the attack")
        assert gw.process.poll() is None


def test_connection_limits_rule() -> None:
    limits = ConnectionLimits(per_address=2, total=3)
    assert limits.admit("a") is None and limits.admit("a") is None
    assert "a holds 2" in str(limits.admit("a"))
    assert limits.admit("b") is None
    assert "3 connections" in str(limits.admit("c"))
    limits.release("a")
    assert limits.admit("c") is None
    assert len(limits) == 3 and limits.refused == 2
    limits.release("zzz")  # never admitted: nothing to give back
    assert len(limits) == 3
    assert total_for(1024) == 512 and total_for(160) == 96 and total_for(10) == 1


# --- the comlog flood ------------------------------------------------------------------------


FLOOD = 6000


def _exchange(tls: ssl.SSLSocket, head: str, body: bytes = b"") -> int:
    """One request written at once on a keep-alive connection; the answer's status."""
    tls.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    length = next(
        int(v) for k, _, v in (x.partition(":") for x in lines) if k.lower() == "content-length"
    )
    while len(rest) < length:
        rest += tls.recv(65536)
    return int(lines[0].split()[1])


def _flood(gw: RunningGateway, count: int) -> float:
    """``count`` requests from the attacker on one keep-alive connection, in turn: a
    bogus token, a guessed request id, and a token request (each past the address's share
    replaces its oldest). Returns the seconds it took."""
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=20, source_address=(ATTACKER, 0))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.perf_counter()
    with gw.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        for k in range(count):
            if k % 3 == 0:
                head = "GET /api/meters HTTP/1.1\r\nAuthorization: Bearer " + "A" * 43 + "\r\n"
                body = b""
            elif k % 3 == 1:
                head = f"GET /api/tokens/requests/{k:032x} HTTP/1.1\r\n"
                body = b""
            else:
                head = "POST /api/tokens/requests HTTP/1.1\r\nContent-Type: application/json\r\n"
                body = json.dumps(
                    {"name": f"evil {k}", "uuid": str(uuid.UUID(int=k)), "profiles": ["P1"]}
                ).encode()
            status = _exchange(tls, head + "Host: 127.0.0.1\r\n", body)
            assert status in (202, 401, 404, 429), status
    return time.perf_counter() - started


def test_comlog_flood_is_bounded(gateway: RunningGateway) -> None:
    """6000 refused or queue-filling requests from one host write a handful of comlog
    rows with counts, not 6000; the customer's own pairing stays in rows of its own."""
    gw = gateway
    before = len(gw.control.comlog())
    seconds = _flood(gw, FLOOD)
    for request in gw.control.requests():  # the customer clears the queue on the meter
        gw.control.deny(request["request_id"])
    token = gw.pair(["P1"], name="the customer's")  # from 127.0.0.1
    assert token
    entries = gw.control.comlog(limit=100_000)
    rows = entries[before:]
    from_attacker = [e for e in rows if e.get("address") == ATTACKER]
    minutes = {e["t"] for e in from_attacker if e.get("folded")}
    # per minute: unauthorized, request-refused, and the folded token-requested and
    # token-expired rows (each request past the address's share replaces its oldest,
    # x1p1/x1/grants.py), plus the single rows (ROWS_PER_ADDRESS) of the hour
    assert len(from_attacker) <= 4 * len(minutes) + ROWS_PER_ADDRESS
    counted = sum(
        e["count"] for e in from_attacker if e["event"] in ("unauthorized", "request-refused")
    )
    assert counted == FLOOD * 2 // 3  # every 401 and 404
    asked = sum(e["count"] for e in from_attacker if e["event"] == "token-requested")
    assert asked == FLOOD // 3  # every token request is queued, replacing the oldest
    replaced = sum(e["count"] for e in from_attacker if e["event"] == "token-expired")
    assert replaced == asked - PENDING_PER_ADDRESS
    mine = [e for e in rows if e["device"] and e["device"].startswith("the customer's")]
    assert {e["event"] for e in mine} >= {"token-requested", "token-approved"}
    print(
        f"\ncomlog flood: {FLOOD} requests in {seconds:.1f} s ({FLOOD / seconds:.0f}/s) from one "
        f"host stored {len(from_attacker)} rows"
    )


def test_a_flood_in_the_comlog_hides_nothing_the_customer_did(gateway: RunningGateway) -> None:
    """The portal's comlog page shows the customer's login and the meter's approval
    although one host's rows, counted over two simulated days, are far more than the
    500 entries the page shows (x1p1/gateway/comlog.py, Comlog.view)."""
    gw = gateway
    customer = Client(gw)
    customer.log_in()  # a login request, approved on the meter
    assert gw.gateway is not None and gw.gateway.comlog is not None and gw.loop is not None
    comlog = gw.gateway.comlog
    now = gw.gateway.state.now()

    async def flood() -> None:  # one host's failures, one folded row a minute, after it
        for minute in range(1, 48 * 60):
            comlog.note_failure(now + timedelta(minutes=minute), ATTACKER)
        comlog.flush()

    asyncio.run_coroutine_threadsafe(flood(), gw.loop).result(120)
    assert len(gw.control.comlog(limit=100_000)) > 2000
    page = customer.get("/comlog").text
    assert "Login approved" in page and page.count("Login approved") == 1
    assert page.count("<tr") <= 2 * 500 + 1  # a header row and both sides of the view
