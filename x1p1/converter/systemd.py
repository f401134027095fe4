"""A tiny sd_notify client: readiness, watchdog and status for systemd, with no dependency.

systemd passes a service of ``Type=notify`` the address of a datagram socket in
``$NOTIFY_SOCKET`` (sd_notify(3)): a file system path (``/run/systemd/notify``) or an
abstract socket name written with a leading ``@``. Each notification is one datagram of
``KEY=VALUE`` lines: ``READY=1`` once the service works, ``WATCHDOG=1`` at least every
half ``WatchdogSec`` (systemd passes the interval in ``$WATCHDOG_USEC`` and the process it
means in ``$WATCHDOG_PID``), ``STATUS=…`` for ``systemctl status``, ``STOPPING=1`` on the
way out.

Outside systemd ``$NOTIFY_SOCKET`` is unset and every call here is a cheap no-op that
returns ``False``, so the daemon calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval"]

log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    """The socket address for ``$NOTIFY_SOCKET``, or None if it names no AF_UNIX socket."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # abstract namespace: a leading NUL byte (unix(7))
    return None  # unset, empty, or a kind we do not speak (e.g. vsock:)


def notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``KEY=VALUE`` lines) to systemd; True if a datagram was sent.

    False when not running under systemd (no ``$NOTIFY_SOCKET``) or when sending failed;
    a failure is logged at debug level and never raised, as sd_notify(3) does.
    """
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    address = _address(value)
    if address is None:
        if value:
            log.debug("NOTIFY_SOCKET=%r is not an AF_UNIX address; not notifying", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError as error:
        log.debug("sd_notify to %s failed: %s", value, error)
        return False
    return True


def ready(*, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is up (``READY=1``): ``systemctl start`` returns."""
    return notify("READY=1", env=env)


def watchdog(*, env: Mapping[str, str] | None = None) -> bool:
    """Keep the watchdog fed (``WATCHDOG=1``); call at least every half interval."""
    return notify("WATCHDOG=1", env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Show ``text`` as the service's status line in ``systemctl status`` (one line)."""
    line = " ".join(text.split())
    return notify(f"STATUS={line}", env=env)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1", env=env)


def watchdog_interval(*, env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds, or None if no watchdog is asked of this process.

    Read from ``$WATCHDOG_USEC``; ``$WATCHDOG_PID``, when set, must be this process's id
    (sd_watchdog_enabled(3)). Ping at half this interval or more often.
    """
    environ = os.environ if env is None else env
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000
