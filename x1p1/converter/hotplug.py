"""Serial adapters coming and going: a thin pyudev adapter, or nothing where there is no udev.

When the USB serial adapter is pulled, the converter keeps the X1 side up and waits for
the port to come back. :class:`Hotplug` wakes that wait as soon as udev
reports a ``tty`` device; where udev is missing (a container, another OS) :func:`open_hotplug`
returns None and the caller simply polls.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

__all__ = ["Hotplug", "open_hotplug"]

log = logging.getLogger(__name__)


class Hotplug:
    """udev's ``tty`` events from a netlink monitor; :meth:`wait` blocks (use a thread)."""

    def __init__(self, monitor: Any) -> None:
        self._monitor = monitor

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if a tty device was added or changed."""
        try:
            device = self._monitor.poll(timeout=timeout)
        except (OSError, ValueError) as exc:
            log.debug("udev monitor failed: %s", exc)
            return False
        if device is None:
            return False
        log.debug("udev: %s %s", device.action, device.device_node)
        return device.action in ("add", "change", "bind")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._monitor.stop()


def open_hotplug() -> Hotplug | None:
    """A udev monitor for tty devices, or None where udev cannot be used."""
    try:
        import pyudev
    except ImportError:
        return None
    try:
        context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context)
        monitor.filter_by("tty")
        monitor.start()
    except Exception as exc:  # noqa: BLE001 - no udev here: poll instead
        log.debug("udev is not available (%s); polling for the serial port", exc)
        return None
    return Hotplug(monitor)
