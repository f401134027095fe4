"""The meter's buttons and the grid operator, as a local control channel (server side).

A real DSMR6 meter shows pending token requests on its display and has buttons to
approve or deny them (X1 §5.1.5); the grid operator reaches the gateway over X4 to
switch X1 off (§12.3) or read the meter remotely (§2.2). The embedded gateway offers
these on a Unix socket in its state directory, ``control.sock``, mode 0600 in a 0700
directory, and only to processes of the same user (or root): never reachable from the
network (x1-api.md, "Meter display, buttons and the grid operator").

Protocol: JSON lines. Each request is one line ``{"command": "<name>", ...arguments}``;
each answer one line, ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error":
"<code>", "message": "<sentence>"}`` with the X1 error codes of x1-api.md
(``not-found``, ``request-not-pending``, ``bad-request``) or ``unknown-command``.
A connection may carry any number of requests.

Commands, each registered once (the ledger's in :mod:`x1p1.gateway.grants`):

=================== =====================================================================
``status``          host name, URL, port, root CA path, X1 switch, counts
``list``            ``display``: the one request the display shows (the oldest waiting),
                    and ``requests``: every waiting one, oldest first, each with its
                    ``kind`` (device, login, elevation) and four-digit ``code`` (§5.1.5)
``approve``         ``id`` or ``code``; neither: the only waiting request, and
                    ``several-waiting`` (409, listing them) when more than one waits.
                    Profiles as asked, as a whole (§5.1.5)
``deny``            ``id`` or ``code``, as ``approve``
``devices``         active tokens and portal sessions (never their secrets)
``tokens``          active tokens only; ``sessions``: active portal sessions only
``revoke``          ``id`` (or ``token_id``, ``session_id``) of a token or session
                    (§5.2): its open sockets close with 4401
``set-profiles``    ``token_id``, ``profiles``: the portal's change of a grant (§5.1.6),
                    for tools and tests; the meter itself has no such button
``operator``        ``action``: ``disable`` | ``enable`` | ``read`` (§12.3, §2.2)
=================== =====================================================================

Other parts register their own with :meth:`ControlServer.register`: ``comlog``
(:mod:`x1p1.gateway.app`, which owns the comlog) and ``block-history`` (the history
service). The client is :mod:`x1p1.gateway.control_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from x1p1.exceptions import BadRequest, StateError, X1Error
from x1p1.gateway import handlers
from x1p1.gateway.grants import grant_json, request_json
from x1p1.gateway.state import GatewayState
from x1p1.x1.api import format_time
from x1p1.x1.grants import Request, RequestKind
from x1p1.x1.profiles import parse_profiles

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_LINE = 64 * 1024
"""A request line longer than this is refused and the connection closed."""

Command = Callable[[Mapping[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


def _short_path(path: Path) -> tuple[str, int | None]:
    """A name for ``path`` that fits ``sun_path`` (108 bytes): the path itself, or
    ``/proc/self/fd/<dir fd>/<name>`` with an open descriptor of its directory."""
    text = str(path)
    if len(os.fsencode(text)) < 100:
        return text, None
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def _text(args: Mapping[str, Any], key: str, required: bool = False) -> str | None:
    value = args.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key}: missing")
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key}: a non-empty string expected")
    return value


def _code(args: Mapping[str, Any]) -> str | None:
    """The four-digit code of a request as the display shows it (§5.1.5)."""
    code = _text(args, "code")
    if code is not None and not (len(code) == 4 and code.isascii() and code.isdigit()):
        raise BadRequest("code: four digits expected, as the meter's display shows them")
    return code


def _profiles_arg(args: Mapping[str, Any]) -> Any:
    value = args.get("profiles")
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest("profiles: a list of profile names expected")
    return parse_profiles(value)


class ControlServer:
    """The control socket of one gateway; :meth:`start` binds it, :meth:`close` removes it.

    ``info`` is called for the ``status`` command (the gateway's URL and names)."""

    def __init__(
        self,
        state: GatewayState,
        path: Path,
        info: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.state = state
        self.path = Path(path)
        self.info = info or dict
        self._server: asyncio.AbstractServer | None = None
        self.commands: dict[str, Command] = {
            "status": self._status,
            "list": self._list,
            "approve": self._approve,
            "deny": self._deny,
            "devices": self._devices,
            "tokens": self._tokens,
            "sessions": self._sessions,
            "revoke": self._revoke,
            "set-profiles": self._set_profiles,
            "operator": self._operator,
        }

    def register(self, name: str, command: Command) -> None:
        """Add a command (``block-history``, ``comlog``). Each name is registered once:
        nothing replaces or wraps another's command."""
        if name in self.commands:
            raise ValueError(f"the control command {name!r} is registered already")
        self.commands[name] = command

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket (mode 0600 before it listens) and serve it."""
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name, fd = _short_path(self.path)
        try:
            sock.bind(name)
            os.chmod(self.path, 0o600)  # before listen(): nobody can connect earlier
            sock.listen(16)
        except OSError as exc:
            sock.close()
            raise StateError(f"cannot create the control socket {self.path}: {exc}") from None
        finally:
            if fd is not None:
                os.close(fd)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)

    def _remove_stale(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name, fd = _short_path(self.path)
        try:
            probe.connect(name)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # left behind by a gateway that was killed
            return
        finally:
            probe.close()
            if fd is not None:
                os.close(fd)
        raise StateError(f"another gateway is running on {self.path.parent}")

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # --- connections -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _peer_allowed(writer):
                await self._answer(writer, _error("forbidden", "not the gateway's user"))
                return
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._answer(writer, _error("bad-request", "request line too long"))
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await self._answer(writer, await self.handle_line(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
        await writer.drain()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        """One request line in, one answer out (never raises)."""
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return _error("bad-request", "a JSON object per line expected")
        if not isinstance(request, dict):
            return _error("bad-request", "a JSON object per line expected")
        name = request.get("command")
        command = self.commands.get(name) if isinstance(name, str) else None
        if command is None:
            known = ", ".join(sorted(self.commands))
            return _error("unknown-command", f"unknown command {name!r}; known: {known}")
        try:
            result = command(request)
            if inspect.isawaitable(result):
                result = await result
        except X1Error as exc:
            return {"ok": False, **exc.body()}
        except Exception:
            log.exception("control command %s failed", name)
            return _error("internal-error", f"the command {name} failed; see the gateway's log")
        return {"ok": True, "result": result}

    # --- the commands ----------------------------------------------------------------------

    def _status(self, args: Mapping[str, Any]) -> dict[str, Any]:
        state = self.state
        return {
            **self.info(),
            "meters": [m.to_json() for m in handlers.meter_refs(state.meters)],
            "x1_enabled": state.x1_enabled,
            "pending": len(state.grants.pending()),
            "tokens": len(state.grants.tokens()),
            "streams": len(state.hub.subscribers),
        }

    def _list(self, args: Mapping[str, Any]) -> dict[str, Any]:
        now = self.state.now()
        pending = self.state.grants.pending()
        return {
            "display": request_json(pending[0], now) if pending else None,
            "requests": [request_json(r, now) for r in pending],
        }

    def _decided(self, request: Request) -> dict[str, Any]:
        now = self.state.now()
        out: dict[str, Any] = {"kind": request.kind.value, "request": request_json(request, now)}
        if request.kind is RequestKind.DEVICE and request.grant_id:
            out["token"] = grant_json(self.state.grants.grant(request.grant_id), now)
        return out

    def _approve(self, args: Mapping[str, Any]) -> dict[str, Any]:
        if args.get("profiles") is not None:
            raise BadRequest(
                "profiles: the meter approves the profiles as asked (§5.1.5); change them "
                "in the portal (§5.1.6)"
            )
        request = self.state.grants.approve(_text(args, "id"), code=_code(args))
        return self._decided(request)

    def _deny(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return self._decided(self.state.grants.deny(_text(args, "id"), code=_code(args)))

    def _devices(self, args: Mapping[str, Any]) -> dict[str, Any]:
        now = self.state.now()
        return {"devices": [grant_json(g, now) for g in self.state.grants.grants()]}

    def _tokens(self, args: Mapping[str, Any]) -> dict[str, Any]:
        now = self.state.now()
        return {"tokens": [grant_json(t, now) for t in self.state.grants.tokens()]}

    def _sessions(self, args: Mapping[str, Any]) -> dict[str, Any]:
        now = self.state.now()
        return {"sessions": [grant_json(s, now) for s in self.state.grants.sessions()]}

    def _revoke(self, args: Mapping[str, Any]) -> dict[str, Any]:
        grant_id = _text(args, "id") or _text(args, "token_id") or _text(args, "session_id")
        if grant_id is None:
            raise BadRequest("id: missing (a device's or a session's id)")
        grant = self.state.grants.revoke(grant_id, "revoked on the meter")
        return {"device": grant_json(grant, self.state.now())}

    def _set_profiles(self, args: Mapping[str, Any]) -> dict[str, Any]:
        token_id = _text(args, "token_id", required=True)
        profiles = _profiles_arg(args)
        if token_id is None or profiles is None:
            raise BadRequest("set-profiles needs token_id and profiles")
        token = self.state.grants.set_profiles(token_id, profiles)
        return {"token": grant_json(token, self.state.now())}

    def _operator(self, args: Mapping[str, Any]) -> dict[str, Any]:
        action = _text(args, "action", required=True)
        state = self.state
        if action in ("disable", "enable"):
            changed = state.set_x1_enabled(action == "enable")
            return {"x1_enabled": state.x1_enabled, "changed": changed}
        if action == "read":
            at = state.hub.sim_time(time.time())
            reading = handlers.operator_read(state.meters, at)
            state.emit("operator-read", t=format_time(at))
            return {"x1_enabled": state.x1_enabled, **reading}
        raise BadRequest(f"action: {action!r} is not disable, enable or read")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
    """Only the gateway's own user, or root, may press the meter's buttons."""
    sock = writer.get_extra_info("socket")
    if sock is None:  # pragma: no cover - every Unix socket transport has one
        return False
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:  # pragma: no cover - not Linux
        return True
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.getuid())
