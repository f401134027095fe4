"""Pairing the converter with a gateway: ask for a P1 token, wait for the customer, unpair.

X1 §5.1.2: a device asks for an API token with ``POST /api/tokens/requests`` (a name, a
uuid that stays the same for the installation, the profiles it wants: here ``P1``,
§5.3). The request shows on the meter's display (§5.1.5); the customer approves or
denies it there or in the portal; after 10 minutes it is denied automatically (§5.1.4);
three denials within an hour get the uuid 429 for an hour (§5.1.7). The device polls
``GET /api/tokens/requests/{id}`` and, once approved, keeps the token (x1-api.md,
Pairing). ``DELETE /api/token`` unpairs (§5.2).

HTTP goes through the standard library's :mod:`http.client` (the daemon carries no
aiohttp, architecture.md), over :func:`~x1p1.converter.tls.converter_context`: TLS 1.3,
the certificate verified against the gateway's host name (or ``--tls-name``) even when
connecting by address.
The calls block; ``x1p1 pair`` is a command, not the daemon's event loop.

Every way a pairing can end has its own sentence and exit code (:class:`PairExit`),
listed in ``x1p1 pair --help``.

Answers are read tolerantly (:mod:`x1p1.x1.readers`; docs/x1-api.md, "What the converter
tolerates"): a gateway of another vendor may leave out or add fields, write statuses in
capitals, redirect within itself, or answer a 429 in plain text. The HTTP exchange is
one callable (:data:`Transport`), so tests run the client against a scripted gateway
without sockets (``tests/x1_harness.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from x1p1.converter.config import GatewayAddress
from x1p1.converter.state import (
    GRANTED_NAMES_MAX,
    SavedPairing,
    forget_pairing,
    granted_names,
    install_uuid,
    load_pairing,
    save_pairing,
)
from x1p1.converter.tls import (
    TLS_VERSION_SENTENCE,
    AddressedHTTPS,
    converter_context,
    speaks_only_legacy_tls,
)
from x1p1.exceptions import (
    APIError,
    BadRequest,
    CertificateError,
    DiscoveryError,
    ForbiddenProfile,
    GatewayError,
    GatewayUnreachable,
    NotFound,
    NotPaired,
    PairingDenied,
    PairingError,
    PairingExpired,
    PairingThrottled,
    RateLimited,
    RequestNotPending,
    TLSVersionError,
    Unauthorized,
    X1Disabled,
    X1Error,
    X1P1Error,
)
from x1p1.x1.api import REQUEST_LIFETIME, RequestStatus, TokenRequestBody
from x1p1.x1.endpoints import ApiPaths
from x1p1.x1.profiles import BUILD_PROFILES, Profile
from x1p1.x1.readers import (
    RequestAnswer,
    TokenAnswer,
    printable,
    read_error,
    read_request_state,
    read_token_info,
    retry_after,
    x1_error_from_body,
)

__all__ = [
    "Countdown",
    "GatewayEndpoint",
    "PairExit",
    "X1Client",
    "default_request_name",
    "exit_code_for",
    "pair",
    "resolve_endpoint",
    "unpair",
    "wait_for_approval",
]

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0
"""Seconds between polls of the request's state."""
HTTP_TIMEOUT = 10.0
EXPIRY_GRACE = 30.0
"""How long past the request's expiry an unanswered poll still waits for the verdict."""
_MAX_RESPONSE = 64 * 1024
PLAIN_TEXT_MAX = 200
"""A non-JSON error body longer than this (an HTML page, a stack trace) is not quoted."""
API_ELSEWHERE = "the gateway serves its API elsewhere; set --api-base (api_base in the config)"
"""Why a 404 at the token-request endpoint ends ``x1p1 pair`` (as ``x1p1 doctor`` says)."""


class PairExit(enum.IntEnum):
    """Exit codes of ``x1p1 pair``, as its ``--help`` lists them."""

    APPROVED = 0
    ERROR = 1
    USAGE = 2
    DENIED = 3
    EXPIRED = 4
    THROTTLED = 5
    UNREACHABLE = 6
    CERTIFICATE = 7
    X1_DISABLED = 8
    STATE_DIR = 12
    """The state directory cannot be written: ``x1p1 run``'s exit code for it too."""
    INTERRUPTED = 130


def exit_code_for(error: BaseException) -> PairExit:
    """The exit code of ``x1p1 pair`` for an error that ended it."""
    table: Sequence[tuple[type[BaseException], PairExit]] = (
        (PairingDenied, PairExit.DENIED),
        (PairingExpired, PairExit.EXPIRED),
        (PairingThrottled, PairExit.THROTTLED),
        (RateLimited, PairExit.THROTTLED),
        (CertificateError, PairExit.CERTIFICATE),
        (TLSVersionError, PairExit.CERTIFICATE),
        (GatewayUnreachable, PairExit.UNREACHABLE),
        (DiscoveryError, PairExit.UNREACHABLE),
        (X1Disabled, PairExit.X1_DISABLED),
        (KeyboardInterrupt, PairExit.INTERRUPTED),
    )
    for cls, code in table:
        if isinstance(error, cls):
            return code
    return PairExit.ERROR


def default_request_name(hostname: str | None = None) -> str:
    """``x1p1 on <hostname>``, cut to the 64 characters a name may have (§5.1.2)."""
    host = hostname if hostname is not None else socket.gethostname()
    host = "".join(c for c in host if c.isprintable()) or "this computer"
    return f"x1p1 on {host}"[:64]


# --- where the gateway is -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayEndpoint:
    """How to reach a gateway: connect to ``addresses`` (or resolve ``host_name``), on
    ``port``, and verify the certificate against ``host_name`` (x1-api.md)."""

    host_name: str
    port: int
    addresses: tuple[str, ...] = ()
    serial: str | None = None
    paths: ApiPaths = field(default_factory=ApiPaths)
    """Where its endpoints are (``api_base``: TXT ``api=`` when found by mDNS)."""

    @property
    def connect_hosts(self) -> tuple[str, ...]:
        return self.addresses or (self.host_name,)

    def with_tls_name(self, tls_name: str | None) -> GatewayEndpoint:
        """The same gateway, its certificate verified for ``tls_name`` (``--tls-name``);
        connect to the addresses found, never to the name."""
        if tls_name is None or tls_name == self.host_name:
            return self
        return replace(self, host_name=tls_name, addresses=self.connect_hosts)

    def describe(self) -> str:
        text = f"{self.host_name}:{self.port}"
        if self.addresses and self.addresses != (self.host_name,):
            text += f" ({', '.join(self.addresses)})"
        return text


def _is_address(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.split("%")[0])
    except OSError:
        return False
    return True


async def resolve_endpoint(
    gateway: GatewayAddress | None,
    timeout: float = 5.0,  # noqa: ASYNC109
    *,
    api_base: str | None = None,
    token_requests_path: str | None = None,
    saved_base: str | None = None,
    legacy_p1_path: str | None = None,
) -> GatewayEndpoint:
    """Find the gateway to pair with: ``--gateway`` as given, or the one mDNS finds.

    A ``.local`` host name that the system cannot resolve is asked for on mDNS. Raises
    :class:`~x1p1.exceptions.DiscoveryError` when nothing is found. The API base is
    ``api_base`` if given, else the ``--gateway`` URL's path, else ``saved_base`` (a
    saved pairing's), else the TXT ``api=`` of the gateway found by mDNS, else ``/api``
    (:meth:`~x1p1.x1.endpoints.ApiPaths.resolve`).
    """
    from x1p1.converter import discovery  # zeroconf only when we need it

    def paths(advertised: str | None) -> ApiPaths:
        if advertised is not None and ApiPaths.advertised_base(advertised) is None:
            log.warning("the TXT record api=%s is not a path; ignored", printable(advertised, 64))
        return ApiPaths.resolve(
            api_base=api_base,
            url_base=gateway.api_base if gateway is not None else None,
            saved_base=saved_base,
            advertised=advertised,
            token_requests_path=token_requests_path,
            legacy_p1_path=legacy_p1_path,
        )

    if gateway is None:
        found = await discovery.find_gateway(None, timeout)
        return GatewayEndpoint(
            found.host_name, found.port, _ordered(found.addresses), found.serial, paths(found.api)
        )
    host = gateway.host
    if _is_address(host):
        return GatewayEndpoint(host, gateway.port, (host,), paths=paths(None))
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, gateway.port, type=socket.SOCK_STREAM)
        addresses = _ordered(str(info[4][0]) for info in infos)
        return GatewayEndpoint(host, gateway.port, addresses, paths=paths(None))
    except OSError:
        if not host.lower().rstrip(".").endswith(".local"):
            raise DiscoveryError(f"cannot resolve the gateway's host name {host}") from None
    name = host.rstrip(".")
    seen = await discovery.discover(
        timeout,
        host_names=[name],
        stop_when=lambda found: any(g.host_name.lower() == name.lower() for g in found),
    )
    for item in seen:
        if item.host_name.lower() == name.lower() and item.addresses:
            return GatewayEndpoint(
                name, gateway.port, _ordered(item.addresses), item.serial, paths(item.api)
            )
    raise DiscoveryError(f"{name} did not answer on mDNS within {timeout:g} s")


def _ordered(addresses: Sequence[str] | Any) -> tuple[str, ...]:
    """IPv4 first (a Pi's link-local IPv6 needs a zone), each once."""
    unique = list(dict.fromkeys(addresses))
    return tuple(sorted(unique, key=lambda a: ":" in a))


# --- HTTP ---------------------------------------------------------------------------------


def certificate_sentence(error: ssl.SSLCertVerificationError, host_name: str) -> str:
    """What a certificate failure means, in words."""
    detail = error.verify_message or str(error)
    if "hostname" in detail.lower() or "ip address mismatch" in detail.lower():
        return (
            f"the gateway's certificate is not valid for {host_name} ({detail}); "
            "this is not the gateway you paired with, or its name changed"
        )
    return (
        f"the gateway's certificate did not verify against the CA ({detail}); "
        "give the gateway's root certificate with --ca (`x1p1 gateway ca` prints the "
        "embedded gateway's)"
    )


Transport = Callable[
    [str, str, str, bytes | None, dict[str, str]], tuple[int, dict[str, str], bytes]
]
"""One HTTP exchange: ``(address, method, path, body, headers)`` to ``(status, headers,
body)``; raises :class:`OSError` (or ``ssl.SSLCertVerificationError``) when no answer
came. The default speaks HTTPS; tests pass a scripted gateway (no sockets)."""

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class Reply:
    """A 2xx answer: its status, its JSON body (None when empty or not JSON), its headers
    (title-cased names)."""

    status: int
    body: Any
    headers: dict[str, str]


class X1Client:
    """Blocking X1 REST calls to one gateway (x1-api.md). Errors come out as exceptions:

    :class:`~x1p1.exceptions.CertificateError`, :class:`GatewayUnreachable`, or the
    :class:`~x1p1.exceptions.X1Error` subclass that the answer's HTTP status names
    (:func:`error_for`). Answers are read tolerantly (:mod:`x1p1.x1.readers`); redirects
    to the same gateway are followed.
    """

    def __init__(
        self,
        endpoint: GatewayEndpoint,
        context: ssl.SSLContext | None,
        *,
        timeout: float = HTTP_TIMEOUT,
        token: str | None = None,
        paths: ApiPaths | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.context = context
        self.timeout = timeout
        self.token = token
        self.paths = paths or endpoint.paths
        self._transport = transport or self._https
        self.answered_by: str | None = None
        """The address that last answered."""

    def call(self, method: str, path: str, body: object | None = None) -> Reply:
        """One request, following redirects to the same gateway; raises for non-2xx."""
        headers = {"Accept": "application/json", "User-Agent": "x1p1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        for _ in range(MAX_REDIRECTS + 1):
            status, answer_headers, data = self._exchange(method, path, payload, headers)
            if status not in REDIRECTS:
                return self._result(status, answer_headers, data)
            location = answer_headers.get("Location", "")
            target = self._same_gateway(location)
            if target is None:
                where = f"{printable(location)}, another host" if location else "nowhere"
                raise GatewayError(
                    f"the gateway redirected {path} to {where} (HTTP {status}); the "
                    "converter follows redirects only within the same gateway: set api_base "
                    "or the endpoint's path in the config"
                )
            log.info("the gateway redirected %s to %s (HTTP %d)", path, printable(target), status)
            path = target
            if status == 303:
                method, payload = "GET", None
                headers.pop("Content-Type", None)
        raise GatewayError(f"the gateway redirected {path} more than {MAX_REDIRECTS} times")

    def _same_gateway(self, location: str) -> str | None:
        """The path to follow for ``location``, or None if it leaves the gateway."""
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(location.strip())
            port = parts.port
        except ValueError:
            return None
        if not parts.path.startswith("/") or any(c in location for c in "\r\n"):
            return None
        if parts.scheme or parts.netloc:
            names = {self.endpoint.host_name.lower(), *(a.lower() for a in self.endpoint.addresses)}
            if parts.scheme.lower() not in ("https", "wss"):
                return None
            if (parts.hostname or "").lower() not in names:
                return None
            if (port or 443) != self.endpoint.port:
                return None
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _exchange(
        self, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        last: OSError | None = None
        hosts = self.endpoint.connect_hosts
        if self.answered_by in hosts:
            hosts = (self.answered_by, *(h for h in hosts if h != self.answered_by))
        for address in hosts:
            try:
                status, answer_headers, data = self._transport(
                    address, method, path, payload, dict(headers)
                )
            except ssl.SSLCertVerificationError as exc:
                raise CertificateError(certificate_sentence(exc, self.endpoint.host_name)) from None
            except ssl.SSLError as exc:
                port, name = self.endpoint.port, self.endpoint.host_name
                if speaks_only_legacy_tls(exc, address, port, name, self.timeout):
                    raise TLSVersionError(TLS_VERSION_SENTENCE) from None
                last = exc
                continue
            except (OSError, http.client.HTTPException) as exc:
                last = exc if isinstance(exc, OSError) else OSError(str(exc))
                continue
            self.answered_by = address
            return status, {k.title(): v for k, v in answer_headers.items()}, data
        reason = _os_reason(last)
        raise GatewayUnreachable(f"the gateway {self.endpoint.describe()} did not answer: {reason}")

    def _https(
        self, address: str, method: str, path: str, payload: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        assert self.context is not None
        conn = AddressedHTTPS(
            self.endpoint.host_name, self.endpoint.port, address, self.context, self.timeout
        )
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read(_MAX_RESPONSE + 1)
            return response.status, dict(response.getheaders()), data
        finally:
            conn.close()

    def _result(self, status: int, headers: dict[str, str], data: bytes) -> Reply:
        if len(data) > _MAX_RESPONSE:
            raise GatewayError(
                f"the gateway's answer (HTTP {status}) is over {_MAX_RESPONSE // 1024} KiB"
            )
        try:
            parsed: Any = json.loads(data) if data.strip() else None
        except (ValueError, RecursionError):
            parsed = None
        if 200 <= status < 300:
            return Reply(status, parsed, headers)
        text = data.decode("utf-8", "replace") if parsed is None else ""
        raise error_for(status, parsed, text, headers)

    # -- the calls -----------------------------------------------------------------------

    def request_token(self, body: TokenRequestBody) -> RequestAnswer:
        """``POST /api/tokens/requests`` (§5.1.2). The answer must carry a status and a
        request id (in the body, or as the last part of a ``Location`` header)."""
        path = self.paths.token_requests
        try:
            reply = self.call("POST", path, body.to_json())
        except NotFound:
            # the contract's endpoint (§5.1.2) is not there: a wrong API base
            raise NotFound(f"HTTP 404 at {printable(path)}: {API_ELSEWHERE}") from None
        answer = _answer(reply.body, "the token request")
        if answer.request_id is None:
            location = reply.headers.get("Location", "").rstrip("/")
            found = location.rpartition("/")[2] if "/" in location else ""
            if not found:
                raise GatewayError(
                    "the gateway's answer to the token request names no request_id, so "
                    "its state cannot be asked; the gateway does not follow docs/x1-api.md"
                )
            answer = replace(answer, request_id=found)
        return answer

    def request_state(self, request_id: str) -> RequestAnswer:
        """``GET /api/tokens/requests/{id}`` (§5.1.4–§5.1.6); the id is the one we hold."""
        reply = self.call("GET", self.paths.token_request(request_id))
        return replace(_answer(reply.body, "a poll"), request_id=request_id)

    def token_info(self) -> TokenAnswer:
        """``GET /api/token`` with this client's token (§5.2): expiry and profiles."""
        return read_token_info(self.call("GET", self.paths.token).body)

    def delete_token(self) -> None:
        """``DELETE /api/token``: the device unpairs itself."""
        self.call("DELETE", self.paths.token)


def _answer(body: object, what: str) -> RequestAnswer:
    answer = read_request_state(body)
    if answer is None:
        shape = (
            "keys " + ", ".join(sorted(printable(k, 32) for k in body)[:12])
            if isinstance(body, dict)
            else type(body).__name__
            if body is not None
            else "no JSON"
        )
        raise GatewayError(f"the gateway's answer to {what} has no status ({shape})")
    return answer


_BY_STATUS: dict[int, type[X1Error]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        ForbiddenProfile,
        NotFound,
        RequestNotPending,
        RateLimited,
        X1Disabled,
    )
}


def error_for(
    status: int, body: object, text: str = "", headers: dict[str, str] | None = None
) -> X1Error | APIError:
    """The exception for a gateway's non-2xx answer, read tolerantly (docs/x1-api.md,
    "What the converter tolerates").

    The HTTP status decides the kind (a 429 is throttling whatever its body says); the
    body gives only the message (through :func:`~x1p1.x1.readers.printable`): a JSON
    body's message, else "HTTP n" with the first line of a short plain-text body (an
    HTML page is never quoted). An X1 error code in the body names the kind only
    when the status is one the contract does not use. ``Retry-After`` goes through
    :func:`~x1p1.x1.readers.retry_after`.
    """
    is_json = isinstance(body, dict)
    if is_json:
        error = read_error(body)
        message = error.message or f"HTTP {status} without a message"
    else:
        error = read_error(None, _plain_line(text, headers))
        message = f"HTTP {status}: {error.message}" if error.message else f"HTTP {status}"
    cls = _BY_STATUS.get(status)
    if cls is None:
        body = {"error": error.code, "message": error.message}
        named = x1_error_from_body(status, body, now=datetime.now(UTC))
        if not isinstance(named, APIError):
            cls = type(named)
    if cls is None:
        code = f" ({error.code})" if error.code else ""
        said = f": {error.message}" if error.message else ""
        if not said and is_json:
            said = " without a message"
        return APIError(
            status,
            error.code or "unknown",
            message,
            sentence=f"the gateway answered HTTP {status}{code}{said}",
        )
    if cls is RateLimited:  # its message is the gateway's own, empty when it gave none
        wait = retry_after((headers or {}).get("Retry-After"), now=datetime.now(UTC), default=60.0)
        return RateLimited(error.message, retry_after=int(60.0 if wait is None else wait))
    if cls is ForbiddenProfile:
        missing = body.get("missing") if isinstance(body, dict) else None
        names = [printable(m, 32) for m in missing] if isinstance(missing, list) else []
        return ForbiddenProfile(message, missing=names)
    return cls(message)


def _plain_line(text: str, headers: dict[str, str] | None) -> str:
    """The first line of a short plain-text error body, or "" for anything else (an HTML
    page, XML, a long text): what a user can read in one sentence."""
    kind = (headers or {}).get("Content-Type", "").lower()
    stripped = text.strip()
    if not stripped or len(stripped) > PLAIN_TEXT_MAX or stripped.startswith("<"):
        return ""
    if kind and not kind.startswith("text/plain"):
        return ""
    return stripped.splitlines()[0]


def _os_reason(error: OSError | None) -> str:
    if error is None:
        return "no address to try"
    if isinstance(error, socket.gaierror):
        return f"its name does not resolve ({error.strerror})"
    if isinstance(error, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason or error})"
    return error.strerror or str(error) or type(error).__name__


# --- waiting for the customer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """One tick of the countdown: seconds left, and a note when something is off."""

    remaining: float
    note: str | None = None


APPROVED = RequestStatus.APPROVED.value
DENIED = frozenset({RequestStatus.DENIED.value, "rejected", "refused"})
EXPIRED = RequestStatus.EXPIRED.value


def wait_for_approval(
    client: X1Client,
    body: TokenRequestBody,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_request: Callable[[RequestAnswer], None] | None = None,
    on_tick: Callable[[Progress], None] | None = None,
    poll_interval: float | None = None,
) -> RequestAnswer:
    """Send the token request and poll until the customer decides (§5.1.4–§5.1.7).

    Returns the approved answer (with the token). Raises :class:`PairingDenied`,
    :class:`PairingExpired`, :class:`PairingThrottled`, :class:`X1Disabled`,
    :class:`CertificateError` or :class:`GatewayUnreachable`.

    The request's 10 minutes (§5.1.4) are counted from the moment it was sent, on
    ``clock`` (monotonic seconds): the gateway's ``expires_at`` is never compared with
    this computer's clock, which may be off by hours before NTP syncs. Statuses are read
    without regard to case; one the converter does not know keeps it polling. A poll
    that fails for a while (unreachable, a 5xx, a malformed answer, a 429) is a note on
    the countdown, not the end. ``on_tick`` is called about once a second.
    """
    interval = POLL_INTERVAL if poll_interval is None else poll_interval
    started = clock()
    try:
        answer = client.request_token(body)
    except RateLimited as exc:
        raise _throttled(exc) from None
    request_id = answer.request_id or ""
    if on_request is not None:
        on_request(answer)
    deadline = started + REQUEST_LIFETIME.total_seconds()
    next_poll = clock() + interval
    note: str | None = None
    while True:
        status = answer.status
        if status == APPROVED:
            if answer.token is None:
                raise PairingError(
                    "the gateway approved the request but sent no token; run `x1p1 pair` again"
                )
            return answer
        if status in DENIED:
            raise PairingDenied(
                f"the request '{body.name}' was denied on the meter or in the portal; "
                "run `x1p1 pair` again to ask once more"
            )
        if status == EXPIRED:
            raise _expired(body)
        moment = clock()
        remaining = deadline - moment
        if on_tick is not None:
            on_tick(Progress(max(0.0, remaining), note))
        if remaining < -EXPIRY_GRACE:
            raise _expired(body)
        if moment >= next_poll:
            next_poll = moment + interval
            try:
                fresh = client.request_state(request_id)
            except NotFound:
                raise _expired(body) from None
            except RateLimited as exc:
                next_poll = moment + max(interval, float(exc.retry_after))
                note = f"the gateway asks to poll less often; next in {exc.retry_after} s"
            except (GatewayUnreachable, APIError, GatewayError, BadRequest) as exc:
                if isinstance(exc, CertificateError):
                    raise
                note = f"{exc}; still trying"
                log.debug("poll failed: %s", exc)
            else:
                note = None
                if fresh.status not in (APPROVED, EXPIRED, RequestStatus.PENDING.value, *DENIED):
                    note = f"the gateway says {printable(fresh.status, 40)!r}; still waiting"
                answer = replace(fresh, code=fresh.code or answer.code)
                continue
        sleep(min(1.0, interval))


def _expired(body: TokenRequestBody) -> PairingExpired:
    return PairingExpired(
        f"nobody approved '{body.name}' within 10 minutes (X1 §5.1.4); run `x1p1 pair` "
        "again and press the button on the meter while the request shows"
    )


def _throttled(exc: RateLimited) -> PairingThrottled:
    """A 429 on the first ``POST``, told as the gateway told it: a device denied three
    times within an hour (X1 §5.1.7), or a gateway with too many requests waiting on the
    meter (docs/reliability.md). The gateway's own message (already through
    :func:`~x1p1.x1.readers.printable`) is quoted; the §5.1.7 sentence only when the
    gateway speaks of denials, a neutral one when it gave no message."""
    said = str(exc)
    if "denied" in said.lower():
        why = ": this device was denied three times within an hour (X1 §5.1.7)"
    else:
        why = ""
    quoted = f" (it said: {said})" if said else ""
    return PairingThrottled(
        f"the gateway refuses new token requests for now{why}{quoted}; "
        f"try again in {_minutes(exc.retry_after)}",
        retry_after=exc.retry_after,
    )


def _minutes(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{round(seconds / 60)} minutes"


class Countdown:
    """What ``x1p1 pair`` shows while waiting: what to do, then the minutes left.

    On a terminal one line counts down in place; elsewhere (a log, a pipe) a line is
    written each minute.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._drawn = False
        self._last_minute: int | None = None
        self._note: str | None = None

    def request(self, answer: RequestAnswer) -> None:
        if answer.code is not None:
            self._write(
                f"The request now shows on the meter's display with the code {answer.code}: "
                "check that the display shows that code, then press the meter's button to "
                "approve it (or approve it in the customer portal); it is valid for 10 "
                "minutes.\n"
            )
            return
        self._write(
            "The request now shows on the meter's display. Press the meter's button to "
            "approve it (or approve it in the customer portal); it is valid for 10 minutes.\n"
        )

    def tick(self, progress: Progress) -> None:
        left = int(progress.remaining)
        text = f"Waiting for approval: {left // 60}:{left % 60:02d} left"
        if progress.note and progress.note != self._note:
            self.close()
            self._write(f"  ({progress.note})\n")
        self._note = progress.note
        if self.live:
            self._write(f"\r{text}   ")
            self._drawn = True
        elif left // 60 != self._last_minute:
            self._last_minute = left // 60
            self._write(text + "\n")

    def close(self) -> None:
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def pair(
    state_dir: Path,
    endpoint: GatewayEndpoint,
    *,
    ca_file: Path | None,
    name: str,
    on_request: Callable[[RequestAnswer], None] | None = None,
    on_tick: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    transport: Transport | None = None,
    profiles: frozenset[Profile] = frozenset({Profile.P1}),
) -> SavedPairing:
    """Ask ``endpoint`` for a token with ``profiles`` (default P1), wait for the
    customer, save and return the pairing.

    The granted profiles (§5.1.6) are read tolerantly: none listed means "as asked",
    names the converter does not know are logged and kept apart (``granted_names``),
    and only whether the grant can feed the P1 line decides: P1, or E-REALTIME or
    PQ-REALTIME (from which the converter builds telegrams, x1p1/x1/source.py).
    """
    ca_pem: str | None = None
    if ca_file is not None:
        try:
            ca_pem = ca_file.read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise X1P1Error(f"cannot read the CA file {ca_file}: {exc}") from None
    context = converter_context(ca_file) if transport is None else None
    body = TokenRequestBody(name, install_uuid(state_dir), profiles)
    client = X1Client(endpoint, context, transport=transport)
    approved = wait_for_approval(
        client, body, clock=clock, sleep=sleep, on_request=on_request, on_tick=on_tick
    )
    assert approved.token is not None  # wait_for_approval checks it
    granted = granted_profiles(approved.profiles, body.profiles)
    if Profile.P1 not in granted and not granted & BUILD_PROFILES:
        shown = ", ".join(printable(p, 32) for p in approved.profiles or ()) or "none"
        raise PairingError(
            f"the request was approved without the P1 profile (granted: {shown}); the "
            "converter needs P1, or E-REALTIME to build telegrams itself (X1 §5.1.6). "
            "Approve it with one of them in the portal, or run `x1p1 pair` again"
        )
    client.token = approved.token
    expires_at: datetime | None = None
    try:
        expires_at = client.token_info().expires_at
    except (GatewayError, X1Error) as exc:
        log.info("could not read the token's expiry: %s", exc)
    api_base = endpoint.paths.api_base
    pairing = SavedPairing(
        token=approved.token,
        host_name=endpoint.host_name,
        port=endpoint.port,
        address=client.answered_by,
        serial=endpoint.serial,
        ca_pem=ca_pem,
        ca_source=str(ca_file.resolve()) if ca_file is not None else None,
        profiles=granted,
        expires_at=expires_at,
        name=name,
        uuid=body.uuid,
        paired_at=datetime.now(UTC).replace(microsecond=0),
        api_base=api_base if api_base != ApiPaths().api_base else None,
        granted_names=granted_names(approved.profiles) if approved.profiles is not None else None,
    )
    save_pairing(state_dir, pairing)
    return pairing


def granted_profiles(
    granted: tuple[str, ...] | None, asked: frozenset[Profile]
) -> frozenset[Profile]:
    """The known profiles among ``granted`` (None: the gateway did not say, so ``asked``).

    Unknown names are never fatal: the pairing keeps them (``SavedPairing.granted_names``)
    and each is logged the first time this process sees it, not on every read of the
    grant."""
    if granted is None:
        return asked
    known = {p.value: p for p in Profile}
    unknown = [printable(name, 32) for name in granted if name not in known]
    new = [name for name in dict.fromkeys(unknown) if name not in _UNKNOWN_LOGGED]
    if new:
        if len(_UNKNOWN_LOGGED) < GRANTED_NAMES_MAX * 4:  # bounded, whatever a gateway says
            _UNKNOWN_LOGGED.update(new)
        log.info(
            "the gateway also granted profiles the converter does not know (kept, ignored): %s",
            ", ".join(new),
        )
    return frozenset(known[name] for name in granted if name in known)


_UNKNOWN_LOGGED: set[str] = set()
"""The unknown granted profile names this process has logged (each once)."""


def pairing_context(pairing: SavedPairing, ca_file: Path | None = None) -> ssl.SSLContext:
    """The TLS context for a saved pairing: ``ca_file`` if given, else the saved root."""
    return converter_context(ca_file, pairing.ca_pem)


def unpair(state_dir: Path, *, timeout: float = 5.0) -> tuple[bool, str]:
    """Revoke the token on the gateway (``DELETE /api/token``) and forget it here.

    Works when the gateway is gone: the token is forgotten anyway. Returns whether a
    pairing was removed and a sentence for the user.
    """
    try:
        pairing = load_pairing(state_dir)
    except NotPaired:
        return False, f"not paired (no token in {state_dir}); nothing to do"
    except X1P1Error as exc:
        forget_pairing(state_dir)
        return True, f"removed an unreadable pairing ({exc})"
    endpoint = GatewayEndpoint(
        pairing.host_name,
        pairing.port,
        tuple(a for a in (pairing.address,) if a),
        paths=ApiPaths(pairing.api_base) if pairing.api_base is not None else ApiPaths(),
    )
    note: str
    try:
        client = X1Client(endpoint, pairing_context(pairing), timeout=timeout, token=pairing.token)
        client.delete_token()
        note = f"the gateway {pairing.describe()} revoked the token"
    except Unauthorized:
        note = "the gateway no longer knew the token (revoked or expired already)"
    except (X1P1Error, OSError) as exc:
        note = (
            f"the gateway could not be told ({exc}); the token is forgotten here, and you "
            "can remove it on the meter or in the portal"
        )
    with contextlib.suppress(NotPaired):
        forget_pairing(state_dir)
    return True, f"unpaired: {note}"
