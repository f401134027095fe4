"""The gateway's HTTPS and WSS server (aiohttp): the X1 API's routes on one port.

X1 §4.1.4 (TLS 1.3, from the PKI's server context), §7–§8 and x1-api.md. This module is
an adapter: it parses requests, calls :mod:`x1p1.gateway.handlers`, and writes answers.

- :data:`ROUTES` is the route table: method, path, handler, whether it needs a token.
  Other parts add their own :class:`Route` objects (history, billing, the portal) and
  :mod:`x1p1.gateway.openapi` documents every one of them.
- :func:`error_response` is the one place where an :class:`~x1p1.exceptions.X1Error`
  becomes an HTTP answer (status, JSON body, headers) and :func:`close_args` the one
  place where it becomes a WebSocket close; aiohttp's own 404/405/413 become the same
  JSON bodies, and anything unexpected a logged 500 with a JSON body.
- While the grid operator has X1 off, every ``/api`` path answers 503 ``x1-disabled``
  (§12.3) before anything else is looked at; then the token is checked (401), then the
  handler checks profiles (403) and parameters (400).
- Bodies over 16 KB, malformed JSON and unknown parameters are 400s.
- WebSockets: the handshake is refused with the JSON error and HTTP status; once open, a
  socket only sends. A client message is garbage: the socket closes with 4400.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from x1p1.exceptions import BadRequest, NotFound, RateLimited, X1Error
from x1p1.gateway import handlers
from x1p1.gateway.state import GatewayState
from x1p1.gateway.streams import MeterSelection, Subscriber, Tick
from x1p1.x1.api import (
    API_PREFIX,
    LEGACY_P1,
    MAX_BODY,
    METERS,
    OPENAPI,
    REALTIME,
    TOKEN,
    TOKEN_REQUESTS,
    bearer_token,
)
from x1p1.x1.grants import Grant
from x1p1.x1.profiles import Profile

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE = web.AppKey("x1p1.state", GatewayState)
TOKEN_KEY = web.RequestKey("x1p1.token", Grant)
"""Where an authenticated request keeps its :class:`~x1p1.x1.grants.Grant` (a device's
token, or a portal session)."""

WS_HEARTBEAT = 20.0
"""Seconds between the server's pings: a peer that vanished is noticed within two."""
WS_MAX_MESSAGE = 4096
"""A client has nothing to send; anything bigger than this is cut off at once."""
WS_CLOSE_TIMEOUT = 2.0
"""Seconds the gateway waits for the client's Close after sending its own (RFC 6455
§5.5.1, §7.1.1: the server closes TCP only then, so the client sees the close code; a
client that never answers loses its connection after this)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One route of the API: ``auth`` routes need ``Authorization: Bearer <token>``."""

    method: str
    path: str
    handler: Handler
    name: str
    auth: bool = True
    websocket: bool = False
    summary: str = ""
    tags: tuple[str, ...] = field(default=())


ROUTES_KEY: web.AppKey[list[Route]] = web.AppKey("x1p1.routes")
CookieAuth = Callable[[web.Request], Grant | None]
COOKIE_AUTH: web.AppKey[CookieAuth] = web.AppKey("x1p1.cookie_auth")
"""The portal's session cookie (X1 §5.1.3): a GET without ``Authorization`` that carries a
valid portal session is let in as the Token this returns (None: not a portal session)."""


# --- answers --------------------------------------------------------------------------------


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer that no cache keeps (tokens travel in some)."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return web.json_response(data, status=status, headers=all_headers, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def error_response(error: X1Error) -> web.Response:
    """The one mapping of an X1 error to an HTTP answer (x1-api.md, Errors)."""
    headers = dict(error.headers())
    if error.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="X1"')
    return json_response(error.body(), status=error.status, headers=headers)


def close_args(error: X1Error) -> tuple[int, bytes]:
    """The one mapping of an X1 error to a WebSocket close: code and reason (≤ 123 bytes)."""
    code = error.close_code or 1011
    return code, f"{error.code}: {error}".encode()[:123]


def _http_error(request: web.Request, exc: web.HTTPException) -> web.StreamResponse:
    if exc.status == 404:
        return error_response(NotFound(f"no such path: {request.path}"))
    if exc.status == 413:
        return error_response(BadRequest(f"body: larger than {MAX_BODY // 1024} KB"))
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"{request.method} is not allowed here (allowed: {allowed})"
        body = {"error": "method-not-allowed", "message": message}
        return json_response(body, status=405, headers={"Allow": allowed})
    if exc.status < 400:
        raise exc
    body = {"error": "bad-request" if exc.status < 500 else "internal-error", "message": exc.reason}
    return json_response(body, status=exc.status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON: X1 errors, aiohttp's own, and (logged) the unexpected."""
    try:
        return await handler(request)
    except X1Error as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        return _http_error(request, exc)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        body = {"error": "internal-error", "message": "the gateway failed on this request"}
        return json_response(body, status=500)


CLIENT_ADDRESS: ContextVar[str | None] = ContextVar("x1p1_client_address", default=None)
"""The address of the client whose request is being handled: events emitted meanwhile
(a token or login request) carry it to the comlog, which folds a flood of them."""
FailureListener = Callable[[str, int], None]
FAILURES: web.AppKey[FailureListener] = web.AppKey("x1p1.failures")
"""Called with the client's address and the status of each refused unauthenticated
request (:func:`client_middleware`): the comlog counts them per address and minute."""
_UNAUTHENTICATED_PATHS = (API_PREFIX + "/", "/login")


@web.middleware
async def client_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost layer: makes the client's address :data:`CLIENT_ADDRESS` while the
    request is handled, and tells :data:`FAILURES` of every 401, and of every other 4xx
    answered on the API or the login without a valid token (docs/reliability.md)."""
    address = request.remote or "unknown"
    reset = CLIENT_ADDRESS.set(address)
    try:
        response = await handler(request)
    finally:
        CLIENT_ADDRESS.reset(reset)
    status = response.status
    if 400 <= status < 500 and (
        status == 401
        or (TOKEN_KEY not in request and request.path.startswith(_UNAUTHENTICATED_PATHS))
    ):
        listener = request.app.get(FAILURES)
        if listener is not None:
            try:
                listener(address, status)
            except Exception:
                log.exception("cannot count a refused request from %s", address)
    return response


HostNames = Callable[[], Collection[str]]
HOST_NAMES: web.AppKey[HostNames] = web.AppKey("x1p1.host_names")
"""The names and addresses the gateway answers to besides :data:`ALWAYS_HOSTS` and the
address a connection arrived on (its mDNS host names, interface addresses)."""
ALWAYS_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def host_of(header: str) -> str | None:
    """The host of a ``Host`` header without its port (RFC 9110 §7.2), lower case, an
    IPv6 literal without brackets and in its short form; None when it is malformed."""
    text = header.strip().lower()
    if text.startswith("["):
        literal, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        try:
            return str(ipaddress.IPv6Address(literal))
        except ValueError:
            return None
    name, sep, port = text.partition(":")
    if sep and not port.isdigit():
        return None
    name = name.removesuffix(".")
    return name or None


def _allowed_host(request: web.Request, host: str) -> bool:
    if host in ALWAYS_HOSTS:
        return True
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if sockname and str(sockname[0]).split("%", 1)[0].lower() == host:
        return True
    names = request.app.get(HOST_NAMES)
    return names is not None and host in {n.lower().removesuffix(".") for n in names()}


@web.middleware
async def request_checks_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse what no browser of the customer's would send (x1-api.md, Requests):

    - a ``Host`` that is not one of the gateway's names or addresses (a DNS rebinding
      page on another site sends its own name), with or without the port;
    - a POST whose body is not declared ``application/json`` where JSON is read (a
      cross-site form may POST ``text/plain`` without asking first; ``application/json``
      makes the browser ask, and the gateway answers no CORS preflight)."""
    host = host_of(request.headers.get("Host", ""))
    if host is None:
        raise BadRequest("Host: missing or malformed; name the gateway, e.g. X1-interface.local")
    if not _allowed_host(request, host):
        shown = host if len(host) <= 64 else host[:61] + "..."
        raise BadRequest(
            f"Host: {shown!r} is not a name or address of this gateway; "
            "use X1-interface.local or its IP address"
        )
    return await handler(request)


@web.middleware
async def x1_switch_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 ``x1-disabled`` on every ``/api`` path while the operator has X1 off (§12.3)."""
    if request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/"):
        request.app[STATE].check_enabled()
    return await handler(request)


def _with_access(route: Route) -> Handler:
    """The route's handler behind the token check: 401 without a valid token."""
    if not route.auth:
        return route.handler

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        secret = bearer_token(request.headers.get("Authorization"))
        cookie_auth = request.app.get(COOKIE_AUTH)
        by_cookie = None
        if secret is None and request.method == "GET" and cookie_auth is not None:
            by_cookie = cookie_auth(request)
        token = by_cookie or state.authenticate(secret)
        request[TOKEN_KEY] = token
        state.note_use(token, route.name)
        return await route.handler(request)

    return handle


def client_address(request: web.Request) -> str:
    """The client's IP address (the ledger caps pending requests per address)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else (request.remote or "")


def token_of(request: web.Request) -> Grant:
    return request[TOKEN_KEY]


async def read_json(request: web.Request) -> object:
    """The request body as JSON: 400 when it is not declared ``application/json`` (see
    :func:`request_checks_middleware`), over 16 KB, not UTF-8 or not JSON."""
    if request.content_type != "application/json":
        raise BadRequest(
            f"Content-Type: {request.content_type!r}; a JSON body must be sent as application/json"
        )
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"body: larger than {MAX_BODY // 1024} KB")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest(f"body: larger than {MAX_BODY // 1024} KB") from None
    if not raw.strip():
        raise BadRequest("body: empty; a JSON object expected")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("body: not UTF-8 text") from None
    except RecursionError:
        raise BadRequest("body: JSON nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"body: not valid JSON ({exc})") from None


# --- REST handlers -------------------------------------------------------------------------


async def post_token_requests(request: web.Request) -> web.StreamResponse:
    handlers.check_parameters(request.query, frozenset())
    body = await read_json(request)
    state, address = request.app[STATE], client_address(request)
    return json_response(handlers.post_token_request(state, body, address), status=202)


async def get_token_request(request: web.Request) -> web.StreamResponse:
    handlers.check_parameters(request.query, frozenset())
    state = request.app[STATE]
    return json_response(handlers.get_token_request(state, request.match_info["request_id"]))


async def get_token(request: web.Request) -> web.StreamResponse:
    handlers.check_parameters(request.query, frozenset())
    return json_response(handlers.get_token(token_of(request)))


async def delete_token(request: web.Request) -> web.StreamResponse:
    handlers.check_parameters(request.query, frozenset())
    handlers.delete_token(request.app[STATE], token_of(request))
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def get_meters(request: web.Request) -> web.StreamResponse:
    handlers.check_parameters(request.query, frozenset())
    return json_response(handlers.list_meters(request.app[STATE].meters, token_of(request)))


async def get_meter(request: web.Request) -> web.StreamResponse:
    handlers.check_parameters(request.query, frozenset())
    equipment_id = request.match_info["equipment_id"]
    meters = request.app[STATE].meters
    return json_response(handlers.describe_meter(meters, token_of(request), equipment_id))


async def get_openapi(request: web.Request) -> web.StreamResponse:
    from x1p1.gateway.openapi import document  # late: the document is built on demand

    routes: list[Route] = request.app[ROUTES_KEY]
    return json_response(document(routes))


# --- WebSockets ------------------------------------------------------------------------------


async def legacy_p1(request: web.Request) -> web.StreamResponse:
    """``/api/legacy-p1?interval=N``: one whole P1 telegram per text message (§6.2.7)."""
    token = token_of(request)
    interval = handlers.legacy_p1_interval(token, request.query)

    def render(tick: Tick) -> list[str]:
        return [tick.telegram]

    permitted = handlers.stream_permission(None)
    return await _stream(request, token, interval, render, "legacy-p1", permitted)


async def realtime(request: web.Request) -> web.StreamResponse:
    """``/api/realtime?equipment_id=…&obis=…&interval=N``: one JSON message per meter."""
    token = token_of(request)
    selections, interval = handlers.realtime_selection(
        request.app[STATE].meters, token, request.query
    )

    def render(tick: Tick, chosen: Sequence[MeterSelection] = tuple(selections)) -> list[str]:
        return [tick.realtime(selection) for selection in chosen]

    permitted = handlers.stream_permission(selections)
    return await _stream(request, token, interval, render, "realtime", permitted)


async def _stream(
    request: web.Request,
    token: Grant,
    interval: int,
    render: Callable[[Tick], list[str]],
    kind: str,
    permitted: Callable[[frozenset[Profile]], bool],
) -> web.StreamResponse:
    ws = web.WebSocketResponse(
        heartbeat=WS_HEARTBEAT,
        compress=False,
        max_msg_size=WS_MAX_MESSAGE,
        timeout=WS_CLOSE_TIMEOUT,
    )
    if not ws.can_prepare(request).ok:
        raise BadRequest(f"{request.path} is a WebSocket: open it with an Upgrade: websocket")
    hub = request.app[STATE].hub
    try:
        subscriber = hub.subscribe(token.token_id, interval, render, kind, permitted)
    except RateLimited as exc:  # one stream too many for this token: 4429 (x1-api.md)
        await ws.prepare(request)
        await _close(ws, *close_args(exc))
        return ws
    try:
        await ws.prepare(request)
        reader = asyncio.create_task(_read_until_closed(ws, subscriber))
        try:
            await _send_until_closed(ws, subscriber)
        finally:
            # aiohttp's close() would not wait for the client's Close while another
            # task is in receive(): the reader goes first
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if subscriber.closing is not None:
            code, reason = subscriber.closing
            await _close(ws, code, reason.encode())
    finally:
        hub.unsubscribe(subscriber)
    return ws


async def _send_until_closed(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    try:
        while True:
            messages = await subscriber.next_messages()
            if messages is None:
                break
            for message in messages:
                await ws.send_str(message)
            subscriber.sent += len(messages)
    except ConnectionError:
        return  # the peer went away mid-send


async def _close(ws: web.WebSocketResponse, code: int, reason: bytes) -> None:
    """Send Close with ``code`` and wait, at most :data:`WS_CLOSE_TIMEOUT`, for the
    client's Close before TCP goes (RFC 6455 §7.1.1): only then does a client such as
    aiohttp's see the code rather than 1006."""
    if ws.closed:
        return
    with contextlib.suppress(ConnectionError):
        await ws.close(code=code, message=reason[:123])


async def _read_until_closed(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    """A stream takes no messages: the first one closes it with 4400 (garbage on the
    socket is bad input, never a crash); the peer's close ends the stream."""
    async for message in ws:
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            code, reason = close_args(BadRequest("this WebSocket only sends; it takes no messages"))
            subscriber.close(code, reason.decode())
    subscriber.close(1000, "")


# --- the application ---------------------------------------------------------------------------

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        TOKEN_REQUESTS,
        post_token_requests,
        "token-request-create",
        auth=False,
        summary="Ask for an API token (§5.1.2)",
        tags=("pairing",),
    ),
    Route(
        "GET",
        TOKEN_REQUESTS + "/{request_id}",
        get_token_request,
        "token-request-get",
        auth=False,
        summary="Poll a token request (§5.1.4)",
        tags=("pairing",),
    ),
    Route(
        "GET", TOKEN, get_token, "token-get", summary="The caller's token (§5.2)", tags=("pairing",)
    ),
    Route(
        "DELETE",
        TOKEN,
        delete_token,
        "token-delete",
        summary="Unpair: revoke the caller's token (§5.2)",
        tags=("pairing",),
    ),
    Route("GET", METERS, get_meters, "meters-list", summary="The meters (§8.1)", tags=("meters",)),
    Route(
        "GET",
        METERS + "/{equipment_id}",
        get_meter,
        "meter-get",
        summary="One meter: objects and resolutions (§8.1)",
        tags=("meters",),
    ),
    Route(
        "GET",
        LEGACY_P1,
        legacy_p1,
        "legacy-p1",
        websocket=True,
        summary="WebSocket: DSMR 5.0.2 P1 telegrams (§6.2.7, §8.2)",
        tags=("streams",),
    ),
    Route(
        "GET",
        REALTIME,
        realtime,
        "realtime",
        websocket=True,
        summary="WebSocket: realtime OBIS values (§7.2, §8.2)",
        tags=("streams",),
    ),
    Route(
        "GET",
        OPENAPI,
        get_openapi,
        "openapi",
        auth=False,
        summary="This API as an OpenAPI 3.1 document",
        tags=("meta",),
    ),
)
"""The X1 API's core routes; history and billing add theirs."""


def build_app(state: GatewayState, extra_routes: Sequence[Route] = ()) -> web.Application:
    """The aiohttp application: :data:`ROUTES` plus ``extra_routes``."""
    app = web.Application(
        middlewares=[
            client_middleware,
            errors_middleware,
            request_checks_middleware,
            x1_switch_middleware,
        ],
        client_max_size=MAX_BODY + 1,
    )
    app[STATE] = state
    routes = [*ROUTES, *extra_routes]
    app[ROUTES_KEY] = routes
    for route in routes:
        app.router.add_route(route.method, route.path, _with_access(route))
    return app
