"""A small X1 gateway for the converter's tests: pairing and legacy-P1 per x1-api.md.

Real TLS on loopback (the embedded gateway's PKI, so the certificate verifies under
VERIFY_X509_STRICT), aiohttp for REST and WebSocket. It exists beside the embedded gateway
for the faults a real gateway never sends on purpose: invalid telegrams, half a telegram
and a dropped socket, a stream that stalls, a 429 or a 503 on demand. Tests drive it
directly (``approve``, ``deny``, ``revoke``, ``disable``, ``drop``, ``inject``).

It also speaks the dialects of gateways written by others (:class:`Dialect`; the rows of
docs/x1-api.md, "What the converter tolerates"): other answer shapes, a path prefix, a
redirect, a plain-text 429, other framing, no pongs. Its REST side is one pure method,
:meth:`TestGateway.answer` (bytes in, an answer out), so the in-memory harness
(``tests/x1_harness.py``) runs the converter's pairing client against the very same
gateway with no sockets; aiohttp only carries it on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

from x1p1.gateway.pki import GatewayPKI
from x1p1.p1 import dsmr5
from x1p1.x1.api import (
    LEGACY_P1,
    TOKEN,
    TOKEN_REQUESTS,
    RequestStatus,
    TokenRequestBody,
    TokenRequestState,
    bearer_token,
    format_time,
)
from x1p1.x1.profiles import Profile

SERIAL = "E0044007312345617"  # the equipment id of dsmr5.sample_readings

Answer = tuple[int, dict[str, str], bytes]
"""An HTTP answer: status, headers, body."""


def _identity(body: dict[str, Any]) -> dict[str, Any]:
    return body


@dataclass(frozen=True)
class Dialect:
    """How this gateway bends docs/x1-api.md (the contract itself by default)."""

    name: str = "contract"
    api_base: str = "/api"
    """Where the API is served (a vendor's path prefix)."""
    answer: Callable[[dict[str, Any]], dict[str, Any]] = _identity
    """Rewrites every token request answer (``POST`` 202 and each poll)."""
    code: str | None = None
    """The 4 digits the display shows with a request, given in its answers."""
    redirect_from: str | None = None
    """A second base whose REST calls are answered ``308`` to the same path under
    ``api_base`` (a gateway that moved its API)."""
    throttle: Answer | None = None
    """The answer to a throttled ``POST`` (default: the X1 429 JSON body)."""
    handshake: Answer | None = None
    """Refuse every WebSocket handshake with this answer."""
    frame: Callable[[bytes], list[bytes]] | None = None
    """A telegram into the messages that carry it (split, merged, bent CRC line)."""
    binary: bool = False
    """Telegrams in binary messages, not text."""
    answers_pings: bool = True
    close_with: tuple[int, str] | None = None
    """Close each subscription with this code and reason after its first telegram."""


@dataclass
class _Request:
    request_id: str
    body: TokenRequestBody
    expires_at: datetime
    status: RequestStatus = RequestStatus.PENDING
    token: str | None = None


@dataclass
class _Subscriber:
    ws: web.WebSocketResponse
    request: web.Request
    token: str


@dataclass
class TestGateway:
    """An X1 gateway on ``127.0.0.1:<port>``; ``host_name`` is in its certificate."""

    __test__ = False

    state_dir: Path
    period: float = 0.02
    """Seconds between telegrams on the legacy-P1 stream (1 s on a real meter)."""
    request_lifetime: timedelta = timedelta(minutes=10)
    auto: str | None = None
    """None (tests decide), ``approve`` or ``deny``: what happens to each new request."""
    host_name: str = "X1-interface.local"
    port: int = 0
    dialect: Dialect = field(default_factory=Dialect)
    clock_skew: timedelta = timedelta(0)
    """How far this gateway's clock is off (its ``expires_at`` times show it)."""
    _pki: GatewayPKI | None = field(default=None, init=False)
    requests: dict[str, _Request] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> uuid
    disabled: bool = False
    throttled: bool = False
    stalled: bool = False
    sent: list[bytes] = field(default_factory=list)
    """Every telegram message sent, in order, to any subscriber."""
    connections: int = 0
    handshakes_refused: int = 0
    _subscribers: list[_Subscriber] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _stream: Iterator[bytes] = field(default_factory=lambda: dsmr5.sample_stream())
    _pending: list[bytes] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)
    """Every REST call, as (method, path)."""

    @property
    def pki(self) -> GatewayPKI:
        """The PKI, made on first use (the in-memory harness never needs one)."""
        if self._pki is None:
            self._pki = GatewayPKI.load_or_create(self.state_dir / "pki")
        return self._pki

    @property
    def ca_file(self) -> Path:
        return self.pki.root_cert_path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.dialect.api_base + LEGACY_P1.removeprefix("/api"), self._legacy_p1)
        app.router.add_route("*", "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.pki.server_ssl_context()
        )
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        await self.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def restart(self, downtime: float = 0.0) -> None:
        await self.stop()
        await asyncio.sleep(downtime)
        await self.start()

    # -- what tests do ---------------------------------------------------------------

    def pending(self) -> list[_Request]:
        return [r for r in self.requests.values() if r.status is RequestStatus.PENDING]

    def approve(self) -> str:
        """Approve every pending request (the meter's button); returns the last token."""
        token = ""
        for request in self.pending():
            token = secrets.token_urlsafe(32)
            request.status, request.token = RequestStatus.APPROVED, token
            self.tokens[token] = request.body.uuid
        return token

    def deny(self) -> None:
        for request in self.pending():
            request.status = RequestStatus.DENIED

    def save_pairing(self, state_dir: Path) -> None:
        """What `x1p1 pair` would have saved for this gateway: a fresh token, its CA,
        its address on loopback and its meter's serial."""
        from converter_support import save_test_pairing

        save_test_pairing(
            state_dir,
            token=self.issue_token(),
            port=self.port,
            ca_pem=self.ca_file.read_text(),
            serial=SERIAL,
        )

    def issue_token(self) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = "00000000-0000-4000-8000-000000000000"
        return token

    def revoke_all(self) -> None:
        """Revoke every token; subscribers are closed with 4401."""
        self.tokens.clear()
        for sub in list(self._subscribers):
            self._close(sub, 4401, "token revoked")

    def disable(self) -> None:
        """The grid operator switches X1 off: 4503 to subscribers, 503 to the rest."""
        self.disabled = True
        for sub in list(self._subscribers):
            self._close(sub, 4503, "X1 is switched off")

    def enable(self) -> None:
        self.disabled = False

    async def drop(self, *, half_telegram: bool = False) -> None:
        """Cut every subscriber's TCP connection, optionally right after half a telegram."""
        for sub in list(self._subscribers):
            with contextlib.suppress(ValueError):
                self._subscribers.remove(sub)
            if half_telegram:
                raw = next(self._stream)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await sub.ws.send_str(raw[: len(raw) // 2].decode())
            transport = sub.request.transport
            if transport is not None:
                transport.abort()

    def inject(self, *messages: bytes) -> None:
        """Send these messages next, instead of sample telegrams."""
        self._pending.extend(messages)

    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- the stream ------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            if self.stalled or not self._subscribers:
                continue
            raw = self._pending.pop(0) if self._pending else next(self._stream)
            dialect = self.dialect
            messages = dialect.frame(raw) if dialect.frame is not None else [raw]
            for sub in list(self._subscribers):
                if sub.token not in self.tokens:
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    for message in messages:
                        if dialect.binary:
                            await sub.ws.send_bytes(message)
                        else:
                            await sub.ws.send_str(message.decode("latin-1"))
                if dialect.close_with is not None:
                    self._close(sub, *dialect.close_with)
            self.sent.append(raw)

    def _close(self, sub: _Subscriber, code: int, message: str) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)
        asyncio.ensure_future(sub.ws.close(code=code, message=message.encode()))

    # -- handlers --------------------------------------------------------------------

    @staticmethod
    def _json(status: int, body: object, **headers: str) -> Answer:
        return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()

    def _error(self, status: int, code: str, message: str, **headers: str) -> Answer:
        return self._json(status, {"error": code, "message": message}, **headers)

    def _auth(self, headers: dict[str, str]) -> str | Answer:
        if self.disabled:
            return self._error(503, "x1-disabled", "X1 is switched off by the grid operator")
        token = bearer_token(headers.get("Authorization"))
        if token is None or token not in self.tokens:
            return self._error(401, "unauthorized", "no valid token")
        return token

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """One REST call, with no I/O: what the gateway answers (its dialect included)."""
        self.calls.append((method, path))
        dialect = self.dialect
        path = path.partition("?")[0]
        if dialect.redirect_from is not None and path.startswith(dialect.redirect_from + "/"):
            moved = dialect.api_base + path.removeprefix(dialect.redirect_from)
            return 308, {"Location": moved}, b""
        if not path.startswith(dialect.api_base + "/"):
            return self._error(404, "not-found", "no such path")
        tail = "/api" + path.removeprefix(dialect.api_base)
        if method == "POST" and tail == TOKEN_REQUESTS:
            return self._post_request(body)
        if method == "GET" and tail.startswith(TOKEN_REQUESTS + "/"):
            return self._get_request(tail.removeprefix(TOKEN_REQUESTS + "/"))
        if method == "GET" and tail == TOKEN:
            return self._get_token(headers)
        if method == "DELETE" and tail == TOKEN:
            return self._delete_token(headers)
        return self._error(404, "not-found", "no such path")

    async def _rest(self, request: web.Request) -> web.Response:
        body = await request.read()
        status, headers, data = self.answer(
            request.method, request.path_qs, dict(request.headers), body
        )
        return web.Response(status=status, headers=headers, body=data)

    def _post_request(self, raw: bytes) -> Answer:
        if self.disabled:
            return self._error(503, "x1-disabled", "X1 is switched off")
        if self.throttled:
            if self.dialect.throttle is not None:
                return self.dialect.throttle
            return self._error(429, "rate-limited", "denied three times", **{"Retry-After": "3600"})
        body = TokenRequestBody.parse(json.loads(raw))
        request_id = secrets.token_urlsafe(16)
        item = _Request(request_id, body, self._now() + self.request_lifetime)
        self.requests[request_id] = item
        if self.auto == "approve":
            self.approve()
        elif self.auto == "deny":
            self.deny()
        return self._json(202, self._shown(item))

    def _now(self) -> datetime:
        return datetime.now(UTC) + self.clock_skew

    def _state(self, item: _Request) -> TokenRequestState:
        if item.status is RequestStatus.PENDING and self._now() >= item.expires_at:
            item.status = RequestStatus.EXPIRED
        profiles = frozenset({Profile.P1}) if item.status is RequestStatus.APPROVED else None
        return TokenRequestState(
            item.request_id, item.status, item.expires_at, item.token, profiles
        )

    def _shown(self, item: _Request) -> dict[str, Any]:
        body = self._state(item).to_json()
        if self.dialect.code is not None:
            body["code"] = self.dialect.code
        return self.dialect.answer(body)

    def _get_request(self, request_id: str) -> Answer:
        item = self.requests.get(request_id)
        if item is None:
            return self._error(404, "not-found", "no such request")
        return self._json(200, self._shown(item))

    def _get_token(self, headers: dict[str, str]) -> Answer:
        token = self._auth(headers)
        if not isinstance(token, str):
            return token
        expires = datetime.now(UTC) + timedelta(days=90)
        body: dict[str, Any] = {
            "name": "test",
            "uuid": self.tokens[token],
            "profiles": ["P1"],
            "expires_at": format_time(expires),
        }
        return self._json(200, body)

    def _delete_token(self, headers: dict[str, str]) -> Answer:
        token = self._auth(headers)
        if not isinstance(token, str):
            return token
        del self.tokens[token]
        return 204, {}, b""

    async def _legacy_p1(self, request: web.Request) -> web.StreamResponse:
        token = self._auth(dict(request.headers))
        refusal = self.dialect.handshake
        if not isinstance(token, str) or refusal is not None:
            self.handshakes_refused += 1
            status, headers, data = token if not isinstance(token, str) else refusal  # type: ignore[misc]
            return web.Response(status=status, headers=headers, body=data)
        ws = web.WebSocketResponse(
            heartbeat=None, compress=False, autoping=self.dialect.answers_pings
        )
        await ws.prepare(request)
        self.connections += 1
        sub = _Subscriber(ws, request, token)
        self._subscribers.append(sub)
        try:
            async for _ in ws:
                pass
        finally:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(sub)
        if not ws.closed:
            await ws.close(code=WSCloseCode.GOING_AWAY)
        return ws


@contextlib.asynccontextmanager
async def running_gateway(state_dir: Path, **kwargs: Any) -> AsyncIterator[TestGateway]:
    gateway = TestGateway(state_dir, **kwargs)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()
