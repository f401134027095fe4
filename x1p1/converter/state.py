"""The converter's files: the pairing (token), the installation's uuid, the daemon's status.

In the state directory (``x1p1 pair``/``run``/``status``/``unpair`` ``--state-dir``):

``token.json``
    The pairing (X1 §5.1.2–§5.2): the API token, the gateway it belongs to (serial, host
    name the certificate must carry, port, last address that answered), the root CA it
    was verified against (PEM, so moving the CA file breaks nothing), the granted profiles
    and the token's expiry, and the name and uuid the request carried. Mode 0600; never
    logged (:class:`SavedPairing`'s ``repr`` hides the token).
``uuid``
    The uuid this installation sends with every token request (§5.1.2, §5.1.7): made once,
    kept for good, so that the gateway recognises it as the same device.
``run.lock``
    Held (``flock``) by the running ``x1p1 run`` and holding its pid, so that a second
    one on the same directory is refused by name (:class:`StateDirLock`). The kernel
    drops the lock when the process ends, however it ends (SIGKILL too).
``status.json``
    What the daemon reports for ``x1p1 status`` (:class:`DaemonStatus`). It goes to
    systemd's ``$RUNTIME_DIRECTORY`` (a tmpfs, kept after the service stops:
    ``RuntimeDirectoryPreserve=yes`` in x1p1/data/x1p1.service) when there is one, else
    to the state directory; :class:`StatusPublisher` writes it on a change of state at
    once, its counters at most once a minute, never once per telegram. While it runs,
    ``x1p1 status`` asks it on ``status.sock`` beside the file instead, for counts as of
    that moment (:mod:`x1p1.converter.status_socket`).

Every file is written atomically (temporary file, fsync, ``os.replace``, fsync of the
directory) with mode 0600, so a crash or a reader never sees half a file. Root writing
into a directory that belongs to the service's user gives the file to that user.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
import uuid as uuid_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from x1p1.converter.status_socket import ask_json, socket_path
from x1p1.exceptions import AlreadyRunning, BadRequest, NotPaired, StateDirError, StateError
from x1p1.x1.api import format_time, parse_time
from x1p1.x1.profiles import Profile, parse_profiles, sorted_profiles

__all__ = [
    "LOCK_FILE",
    "STATUS_FILE",
    "TOKEN_FILE",
    "UUID_FILE",
    "DaemonStatus",
    "SavedPairing",
    "StateDirLock",
    "StatusPublisher",
    "TokenFileWatch",
    "ask_status",
    "check_state_dir",
    "find_status",
    "forget_pairing",
    "install_uuid",
    "load_pairing",
    "prepare_state_dir",
    "read_status",
    "save_pairing",
    "status_path",
    "write_atomic",
]

log = logging.getLogger(__name__)

TOKEN_FILE = "token.json"
UUID_FILE = "uuid"
STATUS_FILE = "status.json"
LOCK_FILE = "run.lock"
_FORMAT = 1


# --- files ------------------------------------------------------------------------------


def ensure_dir(directory: Path) -> Path:
    """Create ``directory`` (mode 0700) if needed; StateDirError says why it cannot be."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateDirError(_state_dir_sentence(directory, exc)) from None
    return directory


def _why(exc: OSError) -> str:
    """What an ``OSError`` on a state file or directory means, in words (no errno)."""
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (run as its owner, or with sudo)"
    if exc.errno == errno.ENOTDIR:
        return "a file is in the way (not a directory)"
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    return exc.strerror or str(exc)


def _state_dir_sentence(directory: Path, exc: OSError, *, write: bool = True) -> str:
    """The one sentence for a state directory this user cannot use (README,
    "Troubleshooting"): writing (``run``, ``pair``, ``unpair``) or reading (``status``)."""
    if not write:
        return f"cannot read the state directory {directory}: {_why(exc)}"
    return (
        f"cannot write in the state directory {directory}: {_why(exc)}; give a writable "
        "--state-dir (or state_dir in the config file)"
    )


def _file_sentence(action: str, path: Path, exc: OSError) -> str:
    return f"cannot {action} {path}: {_why(exc)}"


def _probe_write(directory: Path) -> None:
    """Write and remove a file in ``directory``: the only sure test (a read-only mount,
    an ACL, root squash on NFS all escape ``os.access``)."""
    fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
    os.close(fd)
    os.unlink(probe)


def prepare_state_dir(directory: Path) -> Path:
    """The state directory, ready for ``x1p1 run`` and ``x1p1 pair``: made if missing,
    mode 0700 (an existing one with wider rights is narrowed: the token is a secret),
    and writable.

    :class:`~x1p1.exceptions.StateDirError` in one sentence when it cannot be made or
    written (a read-only file system, no permission), tried by writing a file there.
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            os.chmod(directory, mode & 0o700)
            log.warning(
                "the state directory %s was mode %04o; now %04o, as it holds the token",
                directory,
                mode,
                mode & 0o700,
            )
        _probe_write(directory)
    except OSError as exc:
        raise StateDirError(_state_dir_sentence(directory, exc)) from None
    return directory


def check_state_dir(directory: Path, *, write: bool) -> None:
    """Whether this user can use an existing state directory, without changing it (for
    ``x1p1 status``, reading, and ``x1p1 unpair``, writing); a missing one passes.

    :class:`~x1p1.exceptions.StateDirError` in the sentence ``x1p1 run`` gives (or its
    reading form), never an errno: a plain user asking about the service's directory
    (``/var/lib/x1p1``, mode 0700) is told to use sudo.
    """
    try:
        if not directory.is_dir():
            if directory.exists():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
            return
        with os.scandir(directory):
            pass
        os.stat(directory / TOKEN_FILE)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateDirError(_state_dir_sentence(directory, exc, write=write)) from None
    if write:
        try:
            _probe_write(directory)
        except OSError as exc:
            raise StateDirError(_state_dir_sentence(directory, exc)) from None


class StateDirLock:
    """``run.lock``: one ``x1p1 run`` per state directory (``flock``, released by the
    kernel when the process ends in any way, so a SIGKILL leaves no stale lock)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`~x1p1.exceptions.AlreadyRunning` naming the pid."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateDirError(_state_dir_sentence(self.path.parent, exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            pid = int(text) if text.isdigit() else None
            who = f"pid {pid}" if pid is not None else "its pid unknown"
            raise AlreadyRunning(
                f"another x1p1 run ({who}) uses the state directory {self.path.parent}; "
                "stop it first (sudo systemctl stop x1p1), or give another --state-dir",
                pid=pid,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go (the file stays: removing it could race a starting converter)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` whole or not at all: temp file, fsync, rename, fsync dir.

    ``durable=False`` (the status file, rewritten every few seconds and worthless after
    a crash) skips the fsyncs: readers still see the old file or the new, never half.
    """
    directory = ensure_dir(path.parent)
    if not durable:
        _write_replace(path, data, mode)
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StateDirError(_state_dir_sentence(directory, exc)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            _same_owner_as(directory, handle.fileno())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(_file_sentence("write", path, exc)) from None
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_replace(path: Path, data: bytes, mode: int) -> None:
    """Temp file with a fixed name (one writer: the daemon), then rename; no fsync."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise StateError(_file_sentence("write", path, exc)) from None


def _same_owner_as(directory: Path, fd: int) -> None:
    """Run as root on a directory that belongs to the service (``sudo x1p1 pair
    --state-dir /var/lib/x1p1`` while the daemon runs as its own user): give the file to
    the directory's owner, so the daemon can read it."""
    if os.geteuid() != 0:
        return
    st = os.stat(directory)
    if st.st_uid != 0 or st.st_gid != 0:
        os.fchown(fd, st.st_uid, st.st_gid)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(_file_sentence("read", path, exc)) from None
    except UnicodeDecodeError:
        raise StateError(f"{path} is not text (not UTF-8); run `x1p1 pair` again") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path} is not valid JSON ({exc}); run `x1p1 pair` again") from None


def _dump(data: Mapping[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8")


# --- the installation's uuid -------------------------------------------------------------


def install_uuid(state_dir: Path) -> str:
    """This installation's uuid (§5.1.2): read from ``uuid``, made and saved on first use."""
    path = state_dir / UUID_FILE
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise StateError(_file_sentence("read", path, exc)) from None
    except UnicodeDecodeError:
        raise StateError(f"{path} holds no uuid (not ASCII); remove it to make a new one") from None
    if text:
        try:
            return str(uuid_module.UUID(text))
        except ValueError:
            raise StateError(
                f"{path} holds no uuid ({text[:40]!r}); remove it to make a new one"
            ) from None
    value = str(uuid_module.uuid4())
    write_atomic(path, (value + "\n").encode("ascii"))
    return value


# --- the pairing --------------------------------------------------------------------------


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise StateError(f"{key}: a string expected")
    return value


@dataclass(frozen=True, slots=True)
class SavedPairing:
    """What ``x1p1 pair`` saved: a P1 token and the gateway it belongs to (X1 §5.1–§5.2).

    ``host_name`` is the name the gateway's certificate must carry (its mDNS host name,
    the name given with ``x1p1 pair --tls-name``, or the address the user gave);
    ``address`` is where it last answered (None: resolve ``host_name``). ``ca_pem`` is the
    root to verify it against; None means the system's trust store. ``serial`` is the E
    meter's equipment id, as mDNS advertises it; None until known (the daemon learns it
    from the first telegram's 0-0:96.1.1).
    """

    token: str = field(repr=False)
    host_name: str
    port: int
    address: str | None
    serial: str | None
    ca_pem: str | None = field(repr=False)
    ca_source: str | None
    profiles: frozenset[Profile]
    expires_at: datetime | None
    name: str
    uuid: str
    paired_at: datetime
    api_base: str | None = None
    """The gateway's API base when it is not ``/api`` (TXT ``api=``, ``--api-base``,
    a ``--gateway`` URL's path; x1p1/x1/endpoints.py)."""
    granted_names: tuple[str, ...] | None = None
    """Every profile name the gateway listed as granted (X1 §5.1.6), those the converter
    does not know too (``profiles`` holds the known ones); None: it listed none."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "token": self.token,
            "gateway": {
                "host_name": self.host_name,
                "port": self.port,
                "address": self.address,
                "serial": self.serial,
                **({"api_base": self.api_base} if self.api_base is not None else {}),
            },
            "ca_pem": self.ca_pem,
            "ca_source": self.ca_source,
            "profiles": sorted_profiles(self.profiles),
            "expires_at": format_time(self.expires_at) if self.expires_at else None,
            "name": self.name,
            "uuid": self.uuid,
            "paired_at": format_time(self.paired_at),
            **(
                {"granted_names": list(self.granted_names)}
                if self.granted_names is not None
                else {}
            ),
        }

    @classmethod
    def parse(cls, body: object) -> SavedPairing:
        """Read a ``token.json`` body; StateError names what is wrong."""
        if not isinstance(body, Mapping):
            raise StateError("a JSON object expected")
        gateway = body.get("gateway")
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise StateError("token: missing")
        if not isinstance(gateway, Mapping):
            raise StateError("gateway: missing")
        host_name = gateway.get("host_name")
        port = gateway.get("port")
        if not isinstance(host_name, str) or not host_name:
            raise StateError("gateway.host_name: missing")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise StateError("gateway.port: a port number expected")
        try:
            profiles = parse_profiles(body.get("profiles") or [])
            expires = body.get("expires_at")
            expires_at = parse_time(expires, "expires_at") if expires is not None else None
            paired_at = parse_time(body.get("paired_at"), "paired_at")
        except BadRequest as exc:
            raise StateError(str(exc)) from None
        return cls(
            token=token,
            host_name=host_name,
            port=port,
            address=_opt_str(gateway, "address"),
            serial=_opt_str(gateway, "serial"),
            ca_pem=_opt_str(body, "ca_pem"),
            ca_source=_opt_str(body, "ca_source"),
            profiles=profiles,
            expires_at=expires_at,
            name=_opt_str(body, "name") or "",
            uuid=_opt_str(body, "uuid") or "",
            paired_at=paired_at,
            api_base=_api_base(gateway.get("api_base")),
            granted_names=_granted_names(body.get("granted_names")),
        )

    def with_gateway(
        self,
        *,
        host_name: str | None = None,
        port: int | None = None,
        address: str | None = None,
        serial: str | None = None,
    ) -> SavedPairing:
        """A copy with what was learned about the gateway (None keeps a field)."""
        return replace(
            self,
            host_name=host_name or self.host_name,
            port=port or self.port,
            address=address or self.address,
            serial=serial or self.serial,
        )

    def describe(self) -> str:
        """One line for people: host name, address, serial."""
        where = self.host_name if self.port == 443 else f"{self.host_name}:{self.port}"
        if self.address and self.address != self.host_name:
            where += f" at {self.address}"
        if self.serial:
            where += f" (serial {self.serial})"
        return where


GRANTED_NAMES_MAX = 32
"""Granted profile names kept in ``token.json`` at most (X1 §5.1.6 knows five)."""


def granted_names(names: Iterable[object]) -> tuple[str, ...]:
    """Profile names a gateway granted, as kept: strings only, made printable and capped
    (x1p1/x1/readers.py ``printable``), at most :data:`GRANTED_NAMES_MAX`."""
    from x1p1.x1.readers import printable

    kept = [printable(n, 32) for n in names if isinstance(n, str) and n]
    return tuple(dict.fromkeys(kept))[:GRANTED_NAMES_MAX]


def _granted_names(value: object) -> tuple[str, ...] | None:
    """``granted_names`` read tolerantly: absent or not a list is None (an older file)."""
    return granted_names(value) if isinstance(value, list) else None


def _api_base(value: object) -> str | None:
    from x1p1.x1.endpoints import check_path

    if not isinstance(value, str):
        return None
    try:
        return check_path(value, "api_base")
    except ValueError:
        return None


def load_pairing(state_dir: Path) -> SavedPairing:
    """The saved pairing; :class:`NotPaired` if there is none, StateError if unreadable."""
    path = state_dir / TOKEN_FILE
    try:
        body = _read_json(path)
    except FileNotFoundError:
        raise NotPaired(
            f"not paired: no token in {state_dir}; run `x1p1 pair` and approve the "
            "request on the meter"
        ) from None
    try:
        return SavedPairing.parse(body)
    except StateError as exc:
        raise StateError(f"{path}: {exc}; run `x1p1 pair` again") from None


def save_pairing(state_dir: Path, pairing: SavedPairing) -> None:
    """Save the pairing atomically, mode 0600."""
    write_atomic(state_dir / TOKEN_FILE, _dump(pairing.to_json()))


def forget_pairing(state_dir: Path) -> bool:
    """Remove the saved token; True if there was one."""
    try:
        (state_dir / TOKEN_FILE).unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateError(_file_sentence("remove", state_dir / TOKEN_FILE, exc)) from None
    return True


class TokenFileWatch:
    """Tells when ``token.json`` changed on disk (``x1p1 pair`` saved a new token).

    A ``stat`` per :meth:`changed` call: cheap enough for every couple of seconds.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / TOKEN_FILE
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        """True once after each change (written, replaced or removed) since the last call."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True

    def mark_seen(self) -> None:
        """Take the file as it is now as known (after the daemon saved it itself)."""
        self._seen = self._stamp()


# --- the daemon's status ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What ``x1p1 run`` publishes and ``x1p1 status`` shows.

    Times are aware datetimes; ``latency_ms`` holds p50/p99/max from a WebSocket message
    to its bytes being handed to the serial port, over the recent telegrams.
    """

    pid: int
    state_dir: str
    started_at: datetime
    updated_at: datetime
    connection: str
    connection_since: datetime
    message: str
    gateway: Mapping[str, Any]
    token_expires_at: datetime | None
    last_telegram_at: datetime | None
    counts: Mapping[str, int]
    latency_ms: Mapping[str, float]
    serial: Mapping[str, Any]
    data_request: Mapping[str, Any]
    tcp: Mapping[str, Any] | None
    last_error: Mapping[str, Any] | None = None
    """The last thing that went wrong: ``{"at": time, "message": one sentence}``."""
    outputs: tuple[Mapping[str, Any], ...] = ()
    """Each output (``[[output]]``) with its state and counts; ``serial``,
    ``data_request`` and ``tcp`` describe the first serial and TCP output."""
    source: Mapping[str, Any] | None = None
    """Where telegrams come from: ``mode`` (the config), ``active`` and ``reason``."""

    def to_json(self) -> dict[str, Any]:
        def t(moment: datetime | None) -> str | None:
            return format_time(moment) if moment else None

        return {
            "format": _FORMAT,
            "pid": self.pid,
            "state_dir": self.state_dir,
            "started_at": t(self.started_at),
            "updated_at": t(self.updated_at),
            "connection": self.connection,
            "connection_since": t(self.connection_since),
            "message": self.message,
            "gateway": dict(self.gateway),
            "token_expires_at": t(self.token_expires_at),
            "last_telegram_at": t(self.last_telegram_at),
            "counts": dict(self.counts),
            "latency_ms": dict(self.latency_ms),
            "serial": dict(self.serial),
            "data_request": dict(self.data_request),
            "tcp": dict(self.tcp) if self.tcp is not None else None,
            "last_error": dict(self.last_error) if self.last_error is not None else None,
            "outputs": [dict(o) for o in self.outputs],
            "source": dict(self.source) if self.source is not None else None,
        }

    @classmethod
    def parse(cls, body: object) -> DaemonStatus:
        if not isinstance(body, Mapping):
            raise StateError("a JSON object expected")

        def t(key: str) -> datetime | None:
            value = body.get(key)
            if value is None:
                return None
            try:
                return parse_time(value, key)
            except BadRequest as exc:
                raise StateError(str(exc)) from None

        def m(key: str) -> Mapping[str, Any]:
            value = body.get(key)
            if not isinstance(value, Mapping):
                raise StateError(f"{key}: an object expected")
            return value

        pid, state_dir = body.get("pid"), body.get("state_dir")
        if not isinstance(pid, int) or not isinstance(state_dir, str):
            raise StateError("pid and state_dir expected")
        started, updated, since = t("started_at"), t("updated_at"), t("connection_since")
        if started is None or updated is None or since is None:
            raise StateError("started_at, updated_at and connection_since expected")
        tcp = body.get("tcp")
        last_error = body.get("last_error")
        outputs = body.get("outputs")
        source = body.get("source")
        return cls(
            pid=pid,
            state_dir=state_dir,
            started_at=started,
            updated_at=updated,
            connection=str(body.get("connection", "unknown")),
            connection_since=since,
            message=str(body.get("message", "")),
            gateway=m("gateway"),
            token_expires_at=t("token_expires_at"),
            last_telegram_at=t("last_telegram_at"),
            counts={k: int(v) for k, v in m("counts").items()},
            latency_ms={k: float(v) for k, v in m("latency_ms").items()},
            serial=m("serial"),
            data_request=m("data_request"),
            tcp=tcp if isinstance(tcp, Mapping) else None,
            last_error=last_error if isinstance(last_error, Mapping) else None,
            outputs=tuple(o for o in outputs if isinstance(o, Mapping))
            if isinstance(outputs, list)
            else (),
            source=source if isinstance(source, Mapping) else None,
        )

    def same_content(self, other: DaemonStatus | None) -> bool:
        """Equal but for ``updated_at``: nothing worth writing again."""
        return other is not None and replace(other, updated_at=self.updated_at) == self


def status_path(state_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """Where the daemon publishes its status: ``$RUNTIME_DIRECTORY`` or the state dir."""
    environ = os.environ if env is None else env
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return (Path(runtime) if runtime else state_dir) / STATUS_FILE


def ask_status(path: Path, timeout: float = 2.0) -> DaemonStatus | None:
    """The status a running daemon gives on its socket ``path``, or None when none
    answers there (no socket, a dead daemon's, no permission, a garbled answer)."""
    answer = ask_json(path, timeout)
    if answer is None:
        return None
    try:
        return DaemonStatus.parse(answer)
    except (StateError, ValueError, TypeError):
        return None


def read_status(path: Path) -> DaemonStatus | None:
    """The status in ``path``, or None if there is none or it cannot be read."""
    try:
        return DaemonStatus.parse(_read_json(path))
    except (FileNotFoundError, StateError):
        return None


def find_status(state_dir: Path, env: Mapping[str, str] | None = None) -> DaemonStatus | None:
    """The status of the daemon for ``state_dir``, asked of it or read (:func:`_find_status`)."""
    return _find_status(state_dir, env)[0]


def _status_files(state_dir: Path, env: Mapping[str, str] | None = None) -> list[Path]:
    """Where a daemon for ``state_dir`` may publish: ``$RUNTIME_DIRECTORY``, ``/run/x1p1``
    (systemd's ``RuntimeDirectory=x1p1``), the state directory; each once."""
    candidates = [status_path(state_dir, env), Path("/run/x1p1") / STATUS_FILE]
    candidates.append(state_dir / STATUS_FILE)
    return list(dict.fromkeys(candidates))


def _not_permitted(state_dir: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """A status socket or file that is there but this user may not use (the service's,
    mode 0600, asked by another user): the first one, or None."""
    for path in _status_files(state_dir, env):
        for candidate, access in ((socket_path(path), os.W_OK), (path, os.R_OK)):
            try:
                there = candidate.exists()
            except OSError:  # in a directory this user may not look into
                return candidate
            if there and not os.access(candidate, access):
                return candidate
    return None


def _find_status(
    state_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[DaemonStatus | None, bool]:
    """The status of the daemon for ``state_dir``: its answer on ``status.sock`` while
    it runs (:mod:`x1p1.converter.status_socket`), else the newest status file.

    Looks in ``$RUNTIME_DIRECTORY``, ``/run/x1p1`` (systemd's ``RuntimeDirectory=x1p1``)
    and the state directory, and keeps only answers and files that name this state
    directory. (For :func:`status_report`: also whether the daemon itself answered.)
    """
    wanted = str(state_dir.resolve())
    candidates = _status_files(state_dir, env)
    for path in candidates:  # a running daemon's answer: as of now
        status = ask_status(socket_path(path))
        if status is not None and status.state_dir == wanted:
            return status, True
    best: DaemonStatus | None = None
    for path in candidates:
        status = read_status(path)
        if status is None or status.state_dir != wanted:
            continue
        if best is None or status.updated_at > best.updated_at:
            best = status
    return best, False


class StatusPublisher:
    """Writes :class:`DaemonStatus` to ``path`` when it changed, at most every ``interval``.

    ``now`` is passed in (a monotonic clock), as for every state machine here. A change
    of ``connection`` state may be written after ``urgent_interval`` already.
    """

    def __init__(self, path: Path, interval: float = 5.0, urgent_interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self.urgent_interval = urgent_interval
        self._last: DaemonStatus | None = None
        self._last_at: float | None = None
        self.writes = 0
        self.held_back = False
        """The last call had news of state but came too soon after a write: call again."""

    def publish(self, status: DaemonStatus, now: float) -> bool:
        """Write ``status`` if it is due; True if it was written."""
        self.held_back = False
        if status.same_content(self._last):
            return False
        if self._last is not None and self._last_at is not None:
            urgent = status.connection != self._last.connection
            wait = self.urgent_interval if urgent else self.interval
            if now - self._last_at < wait:
                self.held_back = urgent
                return False
        body = json.dumps(status.to_json(), separators=(",", ":")).encode("utf-8") + b"\n"
        write_atomic(self.path, body, durable=False)
        self._last, self._last_at = status, now
        self.writes += 1
        return True

    def force_next(self) -> None:
        """Write the next status whatever the interval (something worth showing at once)."""
        self._last_at = None

    def remove(self) -> None:
        """Take the status file away (the daemon stopped cleanly)."""
        with contextlib.suppress(OSError):
            self.path.unlink()


def utcnow() -> datetime:
    """The wall clock, aware, UTC."""
    return datetime.now(UTC)


# --- what `x1p1 status` reports ------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"x1p1" in cmdline


def status_report(state_dir: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``x1p1 status --json``: the pairing and what the running daemon last published.

    :class:`~x1p1.exceptions.StateDirError` when this user may not read ``state_dir``
    (the service's, asked without sudo): one sentence, rather than a guess.
    """
    check_state_dir(state_dir, write=False)
    report: dict[str, Any] = {"state_dir": str(state_dir), "paired": False}
    try:
        pairing = load_pairing(state_dir)
    except NotPaired:
        pairing = None
    except StateError as exc:
        pairing = None
        report["pairing_error"] = str(exc)
    if pairing is not None:
        report["paired"] = True
        report["gateway"] = {
            "host_name": pairing.host_name,
            "address": pairing.address,
            "port": pairing.port,
            "serial": pairing.serial,
        }
        report["name"] = pairing.name
        report["token_expires_at"] = format_time(pairing.expires_at) if pairing.expires_at else None
        if pairing.granted_names is not None:
            report["granted_names"] = list(pairing.granted_names)
    status, answered = _find_status(state_dir, env)
    running = (
        status is not None
        and status.connection != "stopped"
        and (answered or _pid_alive(status.pid))
    )
    report["running"] = running
    if not answered:
        denied = _not_permitted(state_dir, env)
        if denied is not None:
            report["status_error"] = (
                f"cannot read {denied}: permission denied; run it as root (sudo x1p1 status)"
            )
    if status is None:
        report["connection"] = "not running"
        return report
    published = status.to_json()
    published.pop("format", None)
    published.pop("state_dir", None)
    in_use = published.pop("gateway", None) or {}
    if running and in_use.get("port"):
        # where the daemon connects (--gateway may override the saved pairing's address)
        host = in_use.get("address") or in_use.get("host_name")
        report["address_in_use"] = (
            f"[{host}]:{in_use['port']}" if ":" in str(host) else (f"{host}:{in_use['port']}")
        )
    if not running:
        published["connection"] = "not running"
        published["message"] = f"the converter stopped (last state: {status.connection})"
    published.pop("token_expires_at", None)
    report.update(published)
    return report


def output_problems(report: Mapping[str, Any]) -> list[str]:
    """One sentence per output of a running converter that is absent or stuck (its
    serial port unplugged, never there, or not taking data), for ``x1p1 status``."""
    if not report.get("running"):
        return []
    # every output ([[output]]); a daemon of an older version reports only its "serial"
    outputs = [o for o in report.get("outputs") or [] if isinstance(o, Mapping)]
    if not outputs:
        outputs = [report.get("serial") or {}]
    problems = []
    for output in outputs:
        state = output.get("state")
        if state not in ("absent", "stuck"):
            continue
        error = f" ({output['error']})" if output.get("error") else ""
        wait = "waits for it" if state == "absent" else "keeps trying"
        name = output.get("name") or output.get("port")
        problems.append(f"the P1 output {name} is {state}{error}; the converter {wait}")
    return problems


def _ago(text: str | None, now: datetime) -> str:
    if not text:
        return "never"
    moment = parse_time(text, "time")
    seconds = int((now - moment).total_seconds())
    local = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{local} ({seconds} s ago)" if seconds < 3600 else local


def _grants_line(names: list[Any]) -> str:
    """The granted profiles, those the converter does not use named as such."""
    known = {p.value for p in Profile}
    shown = [str(n) for n in names]
    unknown = [n for n in shown if n not in known]
    line = ", ".join(shown) or "none"
    if unknown:
        line += f" ({', '.join(unknown)} unknown to the converter, ignored)"
    return line


def _gas_line(gas: Mapping[str, Any]) -> str:
    """The gas subscription in one line (x1p1/x1/gas_feed.py)."""
    if gas.get("state") == "catching":
        text = "waiting for the first reading, asked every second"
    else:
        text = f"asked every {gas.get('interval')} s"
    text += f"; {gas.get('readings', 0)} read"
    if gas.get("reading_at"):
        # the meter's own time: never compared with this machine's clock (docs/x1-api.md)
        held = parse_time(gas["reading_at"], "time").astimezone()
        text += f"; the reading held is of {held:%Y-%m-%d %H:%M:%S} (the meter's time)"
    if gas.get("connection") not in (None, "connected"):
        text += f"; subscription {gas['connection']}"
    return text


def render_status(report: Mapping[str, Any], now: datetime | None = None) -> str:
    """``x1p1 status`` for people: one fact a line."""
    now = now or datetime.now(UTC)
    lines: list[tuple[str, str]] = []
    if report.get("paired"):
        gw = report.get("gateway") or {}
        where = f"{gw.get('host_name')}:{gw.get('port')}"
        if gw.get("address") and gw.get("address") != gw.get("host_name"):
            where += f" at {gw['address']}"
        if gw.get("serial"):
            where += f" (serial {gw['serial']})"
        lines.append(("Paired with", where))
        expires = report.get("token_expires_at")
        lines.append(("Token expires", _ago(expires, now).split(" (")[0] if expires else "?"))
        granted = report.get("granted_names")
        if isinstance(granted, list):
            lines.append(("Token grants", _grants_line(granted)))
    else:
        lines.append(("Paired with", report.get("pairing_error") or "nobody: run `x1p1 pair`"))
    if report.get("running"):
        lines.append(("Converter", f"running (pid {report.get('pid')})"))
    elif report.get("status_error"):
        lines.append(("Converter", f"unknown: {report['status_error']}"))
    else:
        lines.append(("Converter", "not running"))
    connection = str(report.get("connection"))
    if report.get("message") and report.get("message") != connection:
        connection += f": {report['message']}"
    lines.append(("Connection", connection))
    if report.get("address_in_use"):
        lines.append(("Address in use", str(report["address_in_use"])))
    last_error = report.get("last_error")
    if isinstance(last_error, Mapping) and last_error.get("message"):
        lines.append(("Last error", f"{_ago(last_error.get('at'), now)}: {last_error['message']}"))
    source = report.get("source")
    if isinstance(source, Mapping) and ("active" in source or source.get("reason")):
        # no usable source still gets its line: the reason is what the user needs then
        text = f"{source.get('active') or 'none'} (source = {source.get('mode')})"
        if source.get("reason"):
            text += f": {source['reason']}"
        lines.append(("Source", text))
        gas = source.get("gas")
        if isinstance(gas, Mapping):
            lines.append(("Gas", _gas_line(gas)))
    if "counts" in report:
        c = report["counts"]
        lines.append(("Last telegram", _ago(report.get("last_telegram_at"), now)))
        lines.append(
            (
                "Telegrams",
                f"{c.get('relayed', 0)} relayed, {c.get('written', 0)} written to the port, "
                f"{c.get('dropped_invalid', 0)} invalid dropped, {c.get('dropped_stale', 0)} "
                f"stale dropped, {c.get('not_requested', 0)} not requested, "
                f"{c.get('reconnects', 0)} reconnects",
            )
        )
        latency = report.get("latency_ms") or {}
        if latency:
            lines.append(
                (
                    "Latency",
                    f"p50 {latency.get('p50')} ms, p99 {latency.get('p99')} ms "
                    "(WebSocket message to serial port)",
                )
            )
        outputs = report.get("outputs") or []
        if len(outputs) > 1:
            for number, output in enumerate(outputs, 1):
                lines.append((f"Output {number}", _output_line(output)))
        else:
            serial = report.get("serial") or {}
            text = f"{serial.get('port') or 'none'}: {serial.get('state')}"
            if serial.get("error"):
                text += f" ({serial['error']})"
            lines.append(("Serial port", text))
            dr = report.get("data_request") or {}
            lines.append(("Data Request", f"{dr.get('mode')}: {dr.get('state')}"))
            tcp = report.get("tcp")
            if tcp:
                lines.append(("TCP", f"{tcp.get('listen')}, {tcp.get('clients')} client(s)"))
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label + ':':<{width}}{value}" for label, value in lines)


def _output_line(output: Mapping[str, Any]) -> str:
    """One output of ``x1p1 status``: what, how often, its state and counts."""
    every = f"every {output.get('interval', 1)} s"
    if output.get("kind") == "tcp":
        return (
            f"tcp {output.get('listen')} ({every}): {output.get('state')}, "
            f"{output.get('clients', 0)} client(s), {output.get('sent', 0)} sent, "
            f"{output.get('dropped', 0)} dropped"
        )
    dr = output.get("data_request") or {}
    text = f"{output.get('name')} ({every}): {output.get('state')}"
    if output.get("error"):
        text += f" ({output['error']})"
    if dr.get("mode") not in (None, "ignore"):
        text += f", Data Request {dr.get('mode')}: {dr.get('state')}"
    return (
        f"{text}; {output.get('written', 0)} written, {output.get('stale', 0)} stale, "
        f"{output.get('not_requested', 0)} not requested"
    )
