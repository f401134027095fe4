"""Client of the embedded gateway's local control socket: the meter's buttons and the grid
operator for ``x1p1 meter …``, ``x1p1 operator …`` and the tests.

Standard library only (no aiohttp, no asyncio): it opens ``<state dir>/control.sock``,
writes one JSON line per command and reads one back (the protocol is described in
:mod:`x1p1.gateway.control`). An answer with an X1 error code raises that
:class:`~x1p1.exceptions.X1Error` (``NotFound``, ``RequestNotPending``, ``BadRequest``);
no gateway, a dead socket or an unknown command raise
:class:`~x1p1.exceptions.ControlError` with a sentence that says what to do.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from x1p1.exceptions import ControlError, X1Error
from x1p1.x1.readers import x1_error_from_body

SOCKET_NAME = "control.sock"
_STATUS = {
    "bad-request": 400,
    "not-found": 404,
    "request-not-pending": 409,
    "several-waiting": 409,
    "rate-limited": 429,
    "x1-disabled": 503,
    "storage-unavailable": 503,
}
_MAX_ANSWER = 4 * 1024 * 1024


class ControlClient:
    """A connection to a running gateway's control socket (opened on first use).

    ``ControlClient(state_dir)`` or ``ControlClient(socket=path)``. Usable as a context
    manager; :meth:`close` when done. Not thread-safe: one per thread."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        socket_path: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        if socket_path is None:
            if state_dir is None:
                raise ValueError("ControlClient needs state_dir or socket_path")
            socket_path = Path(state_dir) / SOCKET_NAME
        self.path = Path(socket_path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer = b""
        if sock is not None:
            sock.close()

    # --- transport -------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        text = str(self.path)
        fd: int | None = None
        try:
            if len(os.fsencode(text)) >= 100:  # sun_path holds 108 bytes
                fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                text = f"/proc/self/fd/{fd}/{self.path.name}"
            sock.connect(text)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise ControlError(
                f"no gateway is running with the state directory {self.path.parent} "
                "(start one with: x1p1 gateway serve)"
            ) from None
        except PermissionError:
            sock.close()
            raise ControlError(
                f"no permission to use {self.path}: run as the gateway's user"
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot reach the gateway at {self.path}: {exc}") from None
        finally:
            if fd is not None:
                os.close(fd)
        self._sock = sock
        return sock

    def call(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send one command; its ``result``, or raise (see the module docstring)."""
        sock = self._connect()
        line = json.dumps({"command": command, **arguments}).encode() + b"\n"
        try:
            sock.sendall(line)
            while b"\n" not in self._buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlError("the gateway closed the control connection")
                self._buffer += chunk
                if len(self._buffer) > _MAX_ANSWER:
                    raise ControlError("the gateway's answer is too long")
        except TimeoutError:
            self.close()
            raise ControlError(f"the gateway did not answer within {self.timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise ControlError(f"the control connection failed: {exc}") from None
        raw, _, self._buffer = self._buffer.partition(b"\n")
        try:
            answer = json.loads(raw)
        except ValueError:
            self.close()
            raise ControlError("the gateway's answer is not JSON") from None
        if not isinstance(answer, dict):
            raise ControlError("the gateway's answer is not a JSON object")
        if answer.get("ok") is True:
            result = answer.get("result")
            return result if isinstance(result, dict) else {}
        code = str(answer.get("error", "unknown"))
        message = str(answer.get("message", "the command failed"))
        if code in _STATUS:
            error = x1_error_from_body(
                _STATUS[code], answer, {"Retry-After": "60"}, now=datetime.now(UTC)
            )
            if isinstance(error, X1Error):
                raise error
        raise ControlError(f"{code}: {message}")

    # --- the commands ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The gateway's URL, host name, root CA path, X1 switch and counts."""
        return self.call("status")

    def requests(self) -> list[dict[str, Any]]:
        """Every request waiting on the meter, oldest first, with its ``kind`` (device,
        login, elevation) and the four-digit ``code`` the display shows (§5.1.5)."""
        return list(self.call("list")["requests"])

    def display(self) -> dict[str, Any] | None:
        """The one request the display shows: the oldest waiting, or None."""
        shown = self.call("list")["display"]
        return dict(shown) if isinstance(shown, dict) else None

    def approve(self, request_id: str | None = None, code: str | None = None) -> dict[str, Any]:
        """Approve ``request_id``, or the request showing ``code``, or the only one
        waiting (:class:`~x1p1.exceptions.SeveralWaiting` when several wait). Profiles are
        granted as asked (§5.1.5). Returns ``{"kind", "request"}`` and, for a device,
        ``"token"`` (never its secret)."""
        return self.call("approve", **_which(request_id, code))

    def deny(self, request_id: str | None = None, code: str | None = None) -> dict[str, Any]:
        """Deny, choosing the request as :meth:`approve` does."""
        return self.call("deny", **_which(request_id, code))

    def devices(self) -> list[dict[str, Any]]:
        """Active tokens and portal sessions: id, kind, name, uuid, profiles, times."""
        return list(self.call("devices")["devices"])

    def tokens(self) -> list[dict[str, Any]]:
        """Active tokens: id, name, uuid, profiles, expiry, last use."""
        return list(self.call("tokens")["tokens"])

    def sessions(self) -> list[dict[str, Any]]:
        """Browsers logged in to the portal (X1 §5.1.3): id, browser, User-Agent, times."""
        return list(self.call("sessions")["sessions"])

    def revoke(self, grant_id: str) -> dict[str, Any]:
        """Revoke a token or a portal session (§5.2); its open sockets close with 4401."""
        return self.call("revoke", id=grant_id)

    def set_profiles(self, token_id: str, profiles: Iterable[str]) -> dict[str, Any]:
        """The portal's change of a token's profiles (§5.1.6)."""
        return self.call("set-profiles", token_id=token_id, profiles=list(profiles))

    def comlog(self, since: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest ``limit`` comlog entries (§2.2) since ``since`` (RFC 3339), oldest
        first, as :meth:`x1p1.gateway.comlog.ComlogEntry.to_json` writes them."""
        args: dict[str, Any] = {"limit": limit}
        if since is not None:
            args["since"] = since
        return list(self.call("comlog", **args)["entries"])

    def block_history(self) -> dict[str, Any]:
        """The meter's button combination that blocks history (X1 §12.1), irreversibly:
        ``{"blocked_at": RFC 3339, "tokens_revoked": n}``."""
        return self.call("block-history")

    def operator(self, action: str) -> dict[str, Any]:
        """The grid operator: ``disable``, ``enable`` or ``read``."""
        return self.call("operator", action=action)


def _which(request_id: str | None, code: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if request_id is not None:
        args["id"] = request_id
    if code is not None:
        args["code"] = code
    return args
