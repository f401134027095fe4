"""A small X1 gateway for the converter's tests: pairing and legacy-P1 per x1-api.md.

Real TLS on loopback (the embedded gateway's PKI, so the certificate verifies under
VERIFY_X509_STRICT), aiohttp for REST and WebSocket. It exists beside the embedded gateway
for the faults a real gateway never sends on purpose: invalid telegrams, half a telegram
and a dropped socket, a stream that stalls, a 429 or a 503 on demand. Tests drive it
directly (``approve``, ``deny``, ``revoke``, ``disable``, ``drop``, ``inject``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
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
    pki: GatewayPKI = field(init=False)
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

    def __post_init__(self) -> None:
        self.pki = GatewayPKI.load_or_create(self.state_dir / "pki")

    @property
    def ca_file(self) -> Path:
        return self.pki.root_cert_path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(TOKEN_REQUESTS, self._post_request)
        app.router.add_get(TOKEN_REQUESTS + "/{request_id}", self._get_request)
        app.router.add_get(TOKEN, self._get_token)
        app.router.add_delete(TOKEN, self._delete_token)
        app.router.add_get(LEGACY_P1, self._legacy_p1)
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
            text = raw.decode("latin-1")
            for sub in list(self._subscribers):
                if sub.token not in self.tokens:
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await sub.ws.send_str(text)
            self.sent.append(raw)

    def _close(self, sub: _Subscriber, code: int, message: str) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(sub)
        asyncio.ensure_future(sub.ws.close(code=code, message=message.encode()))

    # -- handlers --------------------------------------------------------------------

    @staticmethod
    def _error(status: int, code: str, message: str, **headers: str) -> web.Response:
        return web.json_response(
            {"error": code, "message": message}, status=status, headers=headers or None
        )

    def _auth(self, request: web.Request) -> str | web.Response:
        if self.disabled:
            return self._error(503, "x1-disabled", "X1 is switched off by the grid operator")
        token = bearer_token(request.headers.get("Authorization"))
        if token is None or token not in self.tokens:
            return self._error(401, "unauthorized", "no valid token")
        return token

    async def _post_request(self, request: web.Request) -> web.Response:
        if self.disabled:
            return self._error(503, "x1-disabled", "X1 is switched off")
        if self.throttled:
            return self._error(429, "rate-limited", "denied three times", **{"Retry-After": "3600"})
        body = TokenRequestBody.parse(await request.json())
        request_id = secrets.token_urlsafe(16)
        item = _Request(request_id, body, datetime.now(UTC) + self.request_lifetime)
        self.requests[request_id] = item
        if self.auto == "approve":
            self.approve()
        elif self.auto == "deny":
            self.deny()
        return web.json_response(self._state(item).to_json(), status=202)

    def _state(self, item: _Request) -> TokenRequestState:
        if item.status is RequestStatus.PENDING and datetime.now(UTC) >= item.expires_at:
            item.status = RequestStatus.EXPIRED
        profiles = frozenset({Profile.P1}) if item.status is RequestStatus.APPROVED else None
        return TokenRequestState(
            item.request_id, item.status, item.expires_at, item.token, profiles
        )

    async def _get_request(self, request: web.Request) -> web.Response:
        item = self.requests.get(request.match_info["request_id"])
        if item is None:
            return self._error(404, "not-found", "no such request")
        return web.json_response(self._state(item).to_json())

    async def _get_token(self, request: web.Request) -> web.Response:
        token = self._auth(request)
        if isinstance(token, web.Response):
            return token
        expires = datetime.now(UTC) + timedelta(days=90)
        body: dict[str, Any] = {
            "name": "test",
            "uuid": self.tokens[token],
            "profiles": ["P1"],
            "expires_at": format_time(expires),
        }
        return web.json_response(body)

    async def _delete_token(self, request: web.Request) -> web.Response:
        token = self._auth(request)
        if isinstance(token, web.Response):
            return token
        del self.tokens[token]
        return web.Response(status=204)

    async def _legacy_p1(self, request: web.Request) -> web.StreamResponse:
        token = self._auth(request)
        if isinstance(token, web.Response):
            self.handshakes_refused += 1
            return token
        ws = web.WebSocketResponse(heartbeat=None, compress=False)
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
