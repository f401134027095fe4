"""Every exception x1p1 raises on purpose, in one tree.

.. code-block:: text

    X1P1Error
    ├── TelegramError                 a P1 telegram that cannot be used (DSMR 5.0.2 §6)
    │   └── TelegramParseError        its text does not follow §6.2–§6.12
    ├── ConfigError                   a bad config file, option or environment variable
    ├── StateError                    a state file that cannot be read or written
    │   ├── StateDirError             the state directory cannot be written at all
    │   └── AlreadyRunning            another `x1p1 run` holds the state directory
    ├── SerialPortError               the serial port cannot be opened or written
    ├── OutputError                   an output cannot be set up when the converter starts
    │   ├── NotASerialDevice          --serial names a file, directory or /dev/null
    │   └── TcpPortUnavailable        --tcp's port is busy or not permitted
    ├── DiscoveryError                no X1 gateway answered on mDNS (X1 §4.3.3)
    ├── MdnsError                     the gateway cannot claim a host name or advertise
    ├── GatewayError                  talking to a gateway went wrong (client side)
    │   ├── GatewayUnreachable        no TCP/TLS connection could be made
    │   ├── CertificateError          TLS verification failed: fatal, never retried
    │   ├── TLSVersionError           the gateway offers no TLS 1.3 (X1 §4.1.4)
    │   └── APIError                  the gateway answered with an X1 error body
    ├── PairingError                  a token request did not end in a token (X1 §5.1)
    │   ├── PairingDenied             the customer pressed "deny" (§5.1.5)
    │   ├── PairingExpired            nobody answered within 10 minutes (§5.1.4)
    │   └── PairingThrottled          three denials within an hour (§5.1.7)
    ├── NotPaired                     no token saved; run `x1p1 pair`
    ├── ControlError                  the gateway's local control socket failed
    ├── BillingVerificationError      a billing file is malformed (not: a bad signature)
    └── X1Error                       an X1 API error, as the gateway reports it
        ├── BadRequest                400 / 4400  bad-request
        ├── Unauthorized              401 / 4401  unauthorized
        ├── ForbiddenProfile          403 / 4403  forbidden-profile
        ├── NotFound                  404         not-found
        ├── RequestNotPending         409         request-not-pending
        ├── SeveralWaiting            409         several-waiting
        ├── RateLimited               429 / 4429  rate-limited
        ├── X1Disabled                503 / 4503  x1-disabled
        └── StorageUnavailable        503         storage-unavailable

:class:`X1Error` subclasses carry their HTTP status, WebSocket close code and error code
as class attributes (the status hint of h11's ``_util.py``), so the gateway maps any of
them to a response in one place and the client maps an error body back to the same
class with :func:`x1p1.x1.readers.x1_error_from_body` (through :data:`BY_CODE`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class X1P1Error(Exception):
    """Base of every exception that x1p1 raises on purpose."""


class TelegramError(X1P1Error):
    """A P1 telegram that cannot be used (DSMR 5.0.2 P1 §6)."""


class TelegramParseError(TelegramError):
    """A telegram's text does not follow DSMR 5.0.2 §6.2–§6.12."""


class ConfigError(X1P1Error):
    """A bad configuration value; ``where`` says which file and line, if any."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class StateError(X1P1Error):
    """A state file (token, uuid, status) that cannot be read or written."""


class StateDirError(StateError):
    """The state directory cannot be created or written: read-only, or not permitted."""


class AlreadyRunning(StateError):
    """Another ``x1p1 run`` holds the state directory's lock; ``pid`` is its process."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


class OutputError(X1P1Error):
    """An output of the converter cannot be set up when it starts (nothing was relayed)."""


class NotASerialDevice(OutputError):
    """``--serial`` names something that exists but is no serial device (a regular file,
    a directory, ``/dev/null``): refused at start, not waited for."""


class TcpPortUnavailable(OutputError):
    """``--tcp``'s address cannot be listened on: the port is in use, below 1024 without
    the right, or the address is not this machine's."""


class SerialPortError(X1P1Error):
    """The serial port cannot be opened, configured or written."""


class DiscoveryError(X1P1Error):
    """No X1 gateway could be found by mDNS or by its host names (X1 §4.3.3)."""


class MdnsError(X1P1Error):
    """The gateway cannot advertise itself by mDNS (X1 §4.3.3).

    No usable IPv4 address, the mDNS port cannot be opened, or no free host name
    ``X1-interface[-N].local`` was found.
    """


class GatewayError(X1P1Error):
    """Talking to an X1 gateway went wrong (client side)."""


class GatewayUnreachable(GatewayError):
    """No TCP or TLS connection to the gateway could be made."""


class CertificateError(GatewayError):
    """The gateway's certificate did not verify, or names another host.

    Fatal: a client never retries this in a loop (x1-api.md, Network and discovery).
    """


class TLSVersionError(GatewayError):
    """The gateway refused a TLS 1.3 handshake: it speaks only an older version.

    X1 §4.1.4 asks for TLS 1.3, and the converter never offers less.
    """


class PairingError(X1P1Error):
    """A token request (X1 §5.1.2) did not end in a token."""


class PairingDenied(PairingError):
    """The customer denied the request on the meter or in the portal (§5.1.5)."""


class PairingExpired(PairingError):
    """Nobody approved the request within its 10 minutes (§5.1.4)."""


class PairingThrottled(PairingError):
    """Three denials within an hour: the gateway refuses requests for a while (§5.1.7)."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class NotPaired(X1P1Error):
    """No API token is saved in the state directory."""


class ControlError(X1P1Error):
    """The embedded gateway's local control socket failed or refused a command."""


class BillingVerificationError(X1P1Error):
    """A saved billing response is malformed (a bad signature is a result, not this)."""


class X1Error(X1P1Error):
    """An error of the X1 API, with its HTTP status, WebSocket close code and code.

    The body on the wire is ``{"error": code, "message": str(self)}`` plus
    :meth:`extra` (x1-api.md, Errors).
    """

    status: ClassVar[int] = 500
    close_code: ClassVar[int | None] = None
    code: ClassVar[str] = "internal-error"

    def extra(self) -> dict[str, Any]:
        """Fields the error body carries beyond ``error`` and ``message``."""
        return {}

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the error response."""
        return {}

    def body(self) -> dict[str, Any]:
        """The JSON error body of x1-api.md."""
        return {"error": self.code, "message": str(self), **self.extra()}


class BadRequest(X1Error):
    """Malformed parameters or body; the message names the parameter."""

    status = 400
    close_code: ClassVar[int] = 4400
    code = "bad-request"


class Unauthorized(X1Error):
    """No token, or an unknown, expired or revoked one (§7.1)."""

    status = 401
    close_code: ClassVar[int] = 4401
    code = "unauthorized"


class ForbiddenProfile(X1Error):
    """The token lacks a profile the request needs (§5.3, §7.1)."""

    status = 403
    close_code: ClassVar[int] = 4403
    code = "forbidden-profile"

    def __init__(self, message: str, *, missing: list[str]) -> None:
        self.missing = list(missing)
        super().__init__(message)

    def extra(self) -> dict[str, Any]:
        return {"missing": self.missing}


class NotFound(X1Error):
    """Unknown meter, request or path."""

    status = 404
    code = "not-found"


class RequestNotPending(X1Error):
    """Approving or denying a token request that is no longer pending."""

    status = 409
    code = "request-not-pending"


class SeveralWaiting(X1Error):
    """The meter's button pressed without naming a request while several wait (§5.1.5):
    the customer picks one by the code on the display."""

    status = 409
    code = "several-waiting"

    def __init__(self, message: str, *, waiting: list[tuple[str, str, str, str]]) -> None:
        self.waiting = list(waiting)
        """(request id, code, kind, name) of each waiting request, oldest first."""
        super().__init__(message)

    def extra(self) -> dict[str, Any]:
        return {
            "waiting": [
                {"request_id": i, "code": c, "kind": k, "name": n} for i, c, k, n in self.waiting
            ]
        }


class RateLimited(X1Error):
    """History rate limit (§7.3), repeated denied requests (§5.1.7), or one stream more
    than a token may hold open (x1-api.md, WebSocket)."""

    status = 429
    close_code: ClassVar[int] = 4429
    code = "rate-limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class X1Disabled(X1Error):
    """The grid operator switched the X1 interface off (§12.3)."""

    status = 503
    close_code: ClassVar[int] = 4503
    code = "x1-disabled"


class StorageUnavailable(X1Error):
    """The gateway could not write a change to its database (a full disk, a read-only
    file system): nothing changed, in memory or on disk; try again later."""

    status = 503
    code = "storage-unavailable"


class APIError(GatewayError):
    """The gateway answered with an X1 error body that maps to no known code."""

    def __init__(
        self, status: int, code: str, message: str, *, sentence: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        super().__init__(sentence or f"{status} {code}: {message}")


BY_CODE: dict[str, type[X1Error]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        ForbiddenProfile,
        NotFound,
        RequestNotPending,
        SeveralWaiting,
        RateLimited,
        X1Disabled,
        StorageUnavailable,
    )
}
"""Each X1 error code (x1-api.md, Errors) and its class, for reading a gateway's error
body back (:func:`x1p1.x1.readers.x1_error_from_body`)."""
