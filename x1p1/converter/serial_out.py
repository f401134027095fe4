"""The serial side: write each telegram whole to the P1 line, latest wins (DSMR 5.0.2 P1).

P1 §6: 115200 baud, 8N1, one telegram a second, each complete within the second.
``--serial`` is a device (``/dev/x1p1-p1``, ``/dev/ttyUSB0``) or any pyserial URL
(``loop://``, ``socket://…``, a pty's path); pyserial opens it (``serial_for_url``).

Latest wins. The event loop hands each telegram to :meth:`SerialOutput.offer`. When the
port is idle (the worker is not writing, nothing waits, the port's output queue is empty,
Data Request asserted) the telegram goes to the kernel right there, in one non-blocking
``write(2)`` that cannot block the event loop: the cheap common case, one telegram a
second. Otherwise it goes into a one-slot mailbox, and a worker thread does the blocking
write. A telegram that a newer one replaces before the port took it is counted ``stale``;
a slow or stuck port therefore never builds a queue, in the mailbox or in the port:
before each write the port's output queue must be empty (``TIOCOUTQ``), so the kernel
never holds more than the one telegram on its way out. Both writers take one lock, and
the fast path is used only while the mailbox is empty, so telegrams never overtake.

Never partly, never twice, never a bad CRC. Only telegrams whose CRC the P1 core
checked reach :meth:`offer`, and each is handed over once, into an empty output queue (a
real UART's queue holds several kilobytes, a telegram about one). If the kernel takes
only part of it (a full pty), the worker writes the rest before anything else, with
pyserial's blocking ``write`` and its timeout (``stuck_after``). A port that has not
taken the whole telegram by then is stuck: its output queue is flushed
(``tcflush(TCOFLUSH)``) and the port reset, so no stale tail goes out later. What may
then be on the wire is the head of that one telegram, sent before the port stalled: a P1
reader discards it (no ``!CRC``, or a new ``/`` first). A port that does not report its
queue (a pty always says 0) is written the same way.

Data Request (P1 §5.7.1): with ``--data-request cts`` or ``dsr`` a telegram goes out
only while that input is asserted, checked right before each write and every 50 ms
while it is not; when it drops, nothing new starts (the one telegram already on the wire,
at most 82 ms, is finished rather than cut: a cut telegram is never written). When it
rises, the newest telegram goes out at once if it is fresh.

Port gone (USB adapter pulled: the write fails with EIO): the port is closed, the X1
side keeps running, and the worker tries to open it again every second, at once when
udev reports a new tty (:mod:`x1p1.converter.hotplug`), and resumes.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import serial
from serial import serialposix

from x1p1.converter.hotplug import Hotplug, open_hotplug
from x1p1.exceptions import NotASerialDevice

__all__ = [
    "BAUDRATE",
    "DataRequestState",
    "PortState",
    "SerialLike",
    "SerialOutput",
    "SerialStats",
    "check_serial_path",
    "open_serial",
]

log = logging.getLogger(__name__)

BAUDRATE = 115200
"""P1 §6: fixed, 8N1."""
BYTE_TIME = 10 / BAUDRATE
"""Seconds per byte on the wire: start, 8 data bits, stop."""
IDLE_CHECK = 1.0
"""While Data Request is asserted and no telegram waits: look at the line this often."""


class SerialLike(Protocol):
    """The part of a pyserial port that the worker uses."""

    @property
    def out_waiting(self) -> int: ...
    @property
    def cts(self) -> bool: ...
    @property
    def dsr(self) -> bool: ...
    def write(self, data: bytes, /) -> int | None: ...
    def reset_output_buffer(self) -> None: ...
    def close(self) -> None: ...


TTY_DRIVERS = "/proc/tty/drivers"
"""The kernel's tty drivers and their device numbers: what is a serial device here."""
SYS_CHAR = "/sys/dev/char"
"""sysfs's character devices by ``major:minor``; ``subsystem`` names a device's class."""
DEV_DIR = "/dev"
"""Where a serial device appears when plugged in: the only place a missing one is waited for."""


def _tty_majors(drivers: str) -> set[int] | None:
    """The major device numbers of the kernel's tty drivers, or None if unreadable.

    Each line of ``/proc/tty/drivers``: name, node, major, minor range, type.
    """
    try:
        text = open(drivers, encoding="ascii", errors="replace").read()
    except OSError:
        return None
    majors = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2].isdigit():
            majors.add(int(fields[2]))
    return majors or None


def _is_tty(rdev: int, drivers: str, sys_char: str) -> bool | None:
    """Whether a character device is a tty: sysfs's class for it, else the tty drivers'
    major numbers (ptys have no sysfs entry; the service's sandbox hides /proc/tty);
    None when neither tells."""
    link = os.path.join(sys_char, f"{os.major(rdev)}:{os.minor(rdev)}", "subsystem")
    if os.path.lexists(link):
        return os.path.basename(os.path.realpath(link)) == "tty"
    majors = _tty_majors(drivers)
    return None if majors is None else os.major(rdev) in majors


def check_serial_path(path: str, *, drivers: str = TTY_DRIVERS, sys_char: str = SYS_CHAR) -> None:
    """Refuse a ``--serial`` path that is no serial device, or never will be one.

    A regular file, a directory or ``/dev/null`` would be "waited for" for ever, so they
    raise :class:`~x1p1.exceptions.NotASerialDevice` in one sentence. So does a missing
    path outside ``/dev`` (a typo, ``/tmp/nope/ttyUSB0``): no adapter ever appears there.
    A missing path under ``/dev`` (an adapter not plugged in yet, a udev name) and a
    pyserial URL (``socket://``, ``loop://``, ``rfc2217://``) pass: the converter waits
    for the device. A character device counts as serial when sysfs puts it in the tty
    class, or its major number belongs to one of the kernel's tty drivers
    (``/proc/tty/drivers``); the device is not opened, so no modem line moves. Call it
    once per serial output.
    """
    if "://" in path:
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.abspath(path).startswith(DEV_DIR + "/"):
            return
        raise NotASerialDevice(
            f"--serial {path} does not exist, and only a device under {DEV_DIR} is waited "
            "for; give the P1 adapter's device (x1p1 serial list shows them) or none for "
            "the TCP output only"
        ) from None
    except OSError as exc:
        raise NotASerialDevice(
            f"--serial {path} cannot be looked at ({exc.strerror or exc}); give the P1 "
            "adapter's device (x1p1 serial list shows them)"
        ) from None
    import stat

    what = None
    if stat.S_ISREG(st.st_mode):
        what = "a regular file"
    elif stat.S_ISDIR(st.st_mode):
        what = "a directory"
    elif not stat.S_ISCHR(st.st_mode):
        what = "not a character device"
    elif _is_tty(st.st_rdev, drivers, sys_char) is False:
        what = "a device that is no tty"
    if what is not None:
        raise NotASerialDevice(
            f"--serial {path} is not a serial device ({what}); give the P1 adapter's device "
            "(x1p1 serial list shows them) or none for the TCP output only"
        )


def open_serial(url: str, write_timeout: float) -> SerialLike:
    """Open ``url`` at 115200 8N1, no flow control, non-blocking reads (P1 §6).

    A device path is locked exclusively (``flock``), so two converters never share it.
    """
    kwargs: dict[str, Any] = {
        "baudrate": BAUDRATE,
        "bytesize": serial.EIGHTBITS,
        "parity": serial.PARITY_NONE,
        "stopbits": serial.STOPBITS_ONE,
        "timeout": 0,
        "write_timeout": write_timeout,
        "xonxoff": False,
        "rtscts": False,
        "dsrdtr": False,
    }
    if "://" not in url:
        kwargs["exclusive"] = True
    port: SerialLike = serial.serial_for_url(url, **kwargs)
    return port


class PortState(enum.StrEnum):
    """The serial port as ``x1p1 status`` shows it."""

    OPENING = "opening"
    OPEN = "open"
    ABSENT = "absent"
    """Cannot be opened (unplugged, no such device, no permission): waiting for it."""
    STUCK = "stuck"
    """The last write did not complete in time; the output was flushed."""
    STOPPED = "stopped"


class DataRequestState(enum.StrEnum):
    IGNORED = "ignored"
    ASSERTED = "asserted"
    NOT_ASSERTED = "not-asserted"
    UNKNOWN = "unknown"
    """The line cannot be read on this port."""


@dataclass
class SerialStats:
    """Counters of the serial side. Each field has one writer thread (the event loop or
    the worker), so no count is lost; the properties add them up."""

    written_by_worker: int = 0
    written_direct: int = 0
    """(Event loop.) Handed to an idle port with one non-blocking write."""
    replaced: int = 0
    """(Event loop.) Replaced in the mailbox by a newer telegram before the port took it."""
    replaced_unrequested: int = 0
    """(Event loop.) Replaced while Data Request was not asserted."""
    too_old: int = 0
    """(Worker.) Older than ``max_age`` when the port could take it, or lost with the port."""
    expired_unrequested: int = 0
    """(Worker.) Waited for Data Request longer than ``max_age``."""
    resets: int = 0
    """Writes that timed out: output flushed, port reset."""
    opened: int = 0
    last_write_at: float | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    """Seconds from the WebSocket message to the write call, recent telegrams."""

    @property
    def written(self) -> int:
        """Telegrams handed to the port whole."""
        return self.written_by_worker + self.written_direct

    @property
    def stale(self) -> int:
        """Dropped because a newer one came first, or too old to send."""
        return self.replaced + self.too_old

    @property
    def not_requested(self) -> int:
        """Not sent because Data Request was not asserted (P1 §5.7.1)."""
        return self.replaced_unrequested + self.expired_unrequested


class _Mailbox:
    """One slot, latest wins. The worker blocks in C (``SimpleQueue.get``) until a
    telegram is put; at most one wake-up token is outstanding, so nothing grows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: tuple[bytes, float] | None = None
        self._signalled = False
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()

    def put(self, item: tuple[bytes, float]) -> bool:
        """Leave ``item``; True if it replaced one that was never taken."""
        with self._lock:
            replaced = self._item is not None
            self._item = item
            if not self._signalled:
                self._signalled = True
                self._wake.put(None)
        return replaced

    def wait(self, timeout: float | None) -> None:
        """Block up to ``timeout`` seconds (None: for good) until something was put, or
        :meth:`wake`."""
        with contextlib.suppress(queue.Empty):
            self._wake.get(timeout=timeout)

    def take(self) -> tuple[bytes, float] | None:
        """The newest item, if any, now."""
        with self._lock:
            self._signalled = False
            item, self._item = self._item, None
        return item

    @property
    def empty(self) -> bool:
        return self._item is None

    def drop_older(self, limit: float, now: float) -> bool:
        """Drop the item if it is older than ``limit`` seconds; True if one was dropped."""
        with self._lock:
            if self._item is not None and now - self._item[1] > limit:
                self._item = None
                return True
        return False

    def clear(self) -> None:
        with self._lock:
            self._item = None

    def wake(self) -> None:
        """Wake the worker without an item (to stop)."""
        self._wake.put(None)


class SerialOutput:
    """The worker thread that owns the serial port. Call :meth:`start`, then
    :meth:`offer` from the event loop for each telegram, and :meth:`stop`."""

    def __init__(
        self,
        url: str,
        data_request: str = "ignore",
        *,
        opener: Callable[[str, float], SerialLike] = open_serial,
        max_age: float = 2.0,
        stuck_after: float = 2.0,
        reopen_interval: float = 1.0,
        poll: float = 0.05,
        hotplug: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if data_request not in ("ignore", "cts", "dsr"):
            raise ValueError(f"data_request must be ignore, cts or dsr, not {data_request!r}")
        self.url = url
        self.data_request = data_request
        self.max_age = max_age
        self.stuck_after = stuck_after
        self.reopen_interval = reopen_interval
        self.poll = poll
        self.stats = SerialStats()
        self.state = PortState.OPENING
        self.error = ""
        self.dr_state = (
            DataRequestState.IGNORED if data_request == "ignore" else DataRequestState.UNKNOWN
        )
        self._opener = opener
        self._clock = clock
        self._use_hotplug = hotplug and url.startswith("/dev/")
        self._hotplug: Hotplug | None = None
        self._mailbox = _Mailbox()
        self._gated = data_request != "ignore"
        self._stopping = False
        self._stop_event = threading.Event()
        self._port: SerialLike | None = None
        self._fd: int | None = None
        self._port_lock = threading.Lock()
        """Held for every use of the port (worker or event loop): one writer at a time."""
        self._rest: tuple[bytes, float] | None = None
        """The tail of a telegram the event loop could only partly hand over."""
        self._thread: threading.Thread | None = None
        self._stuck_in_row = 0
        self._dr_warned = False

    # -- from the event loop -------------------------------------------------------------

    def offer(self, raw: bytes, received_at: float) -> None:
        """Hand over a checked telegram; it replaces one the port has not taken yet.

        Fast path: when the port is idle (worker not writing, nothing waiting, output
        queue empty, Data Request asserted), the telegram goes to the kernel right here
        with one non-blocking ``write()``, which cannot block the event loop. If the
        kernel takes only part of it, the worker writes the rest before anything else,
        so it still goes out whole. Everything else goes through the mailbox.
        """
        if self._fd is not None and self._port_lock.acquire(blocking=False):
            try:
                if self._write_direct(raw, received_at):
                    return
            finally:
                self._port_lock.release()
        if self._mailbox.put((raw, received_at)):
            if self._gated:
                self.stats.replaced_unrequested += 1
            else:
                self.stats.replaced += 1

    def _write_direct(self, raw: bytes, received_at: float) -> bool:
        """(Port lock held, event loop.) True if the telegram was handed over."""
        port, fd = self._port, self._fd
        if port is None or fd is None or self._rest is not None or not self._mailbox.empty:
            return False
        try:
            if self.data_request != "ignore":
                asserted = port.cts if self.data_request == "cts" else port.dsr
                if not asserted:
                    return False
            if port.out_waiting:
                return False  # the previous one is still going out: the worker waits
            handed = self._clock()
            written = os.write(fd, raw)
        except (OSError, serial.SerialException):
            return False  # the worker meets the same error and deals with it
        if written < len(raw):
            self._rest = (raw[written:], received_at)
            self._mailbox.wake()
            return True
        stats = self.stats
        stats.written_direct += 1
        stats.last_write_at = handed
        stats.latencies.append(handed - received_at)
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="x1p1-serial", daemon=False)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and close the port (a blocked write is cut short)."""
        self._stopping = True
        self._mailbox.wake()
        self._stop_event.set()
        port = self._port
        cancel = getattr(port, "cancel_write", None)
        if cancel is not None:
            try:
                cancel()
            except Exception as exc:  # noqa: BLE001
                log.debug("cancel_write failed: %s", exc)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        if self._use_hotplug:
            self._hotplug = open_hotplug()
        try:
            while not self._stopping:
                if self._port is None:
                    with self._port_lock:
                        opened = self._open()
                    if not opened:
                        self._wait_for_port()
                    continue
                self._step()
        except Exception:  # pragma: no cover - a bug: say so, keep the process alive
            log.exception("the serial worker failed")
            self.error = "the serial worker failed; see the log"
        finally:
            with self._port_lock:
                self._close()
            self.state = PortState.STOPPED
            if self._hotplug is not None:
                self._hotplug.close()

    def _step(self) -> None:
        """Wait for work, then do it with the port lock held."""
        gating = self.data_request != "ignore"
        if self._rest is None and self._mailbox.empty:
            # Without gating nothing happens until a telegram (or stop) comes. While Data
            # Request is asserted, look at the line again every second even without one.
            self._mailbox.wait(IDLE_CHECK if gating else None)
        held_back = False
        with self._port_lock:
            if self._stopping or self._port is None:
                return
            if self._rest is not None:
                rest, self._rest = self._rest, None
                self._finish(*rest)
                return
            if gating:
                asserted = self._sense()
                if asserted is None:
                    return
                self._gated = held_back = not asserted
                if held_back and self._mailbox.drop_older(self.max_age, self._clock()):
                    self.stats.expired_unrequested += 1
            if not held_back:
                item = self._mailbox.take()
                if item is not None:
                    self._write(*item)
        if held_back:  # Data Request not asserted: look again in a moment
            self._stop_event.wait(self.poll)

    def _open(self) -> bool:
        try:
            port = self._opener(self.url, self.stuck_after)
        except (serial.SerialException, OSError, ValueError) as exc:
            error = _sentence(exc)
            if self.state is not PortState.ABSENT or error != self.error:
                log.warning(
                    "cannot open the serial port %s (%s); waiting for it, the X1 side "
                    "stays connected",
                    self.url,
                    error,
                )
            self.state, self.error = PortState.ABSENT, error
            return False
        try:
            port.reset_output_buffer()
        except (serial.SerialException, OSError, NotImplementedError):
            pass
        self._port = port
        self._fd = _posix_fd(port)
        # What waited while the port was away is old now, but a telegram that came while
        # it was being opened (the first one after start) is fresh: it goes out.
        if self._mailbox.drop_older(self.max_age, self._clock()):
            self.stats.too_old += 1
        self.stats.opened += 1
        if self.stats.opened > 1 or self.state is PortState.ABSENT:
            log.info("serial port %s is back; writing telegrams again", self.url)
        else:
            log.info("writing telegrams to %s at 115200 8N1", self.url)
        self.state, self.error = PortState.OPEN, ""
        return True

    def _wait_for_port(self) -> None:
        if self._hotplug is not None:
            deadline = time.monotonic() + self.reopen_interval
            while not self._stopping and time.monotonic() < deadline:
                if self._hotplug.wait(min(0.25, self.reopen_interval)):
                    return
        else:
            self._stop_event.wait(self.reopen_interval)

    def _close(self) -> None:
        port, self._port, self._fd, self._rest = self._port, None, None, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead port may fail
                log.debug("closing %s: %s", self.url, exc)

    def _lost(self, exc: BaseException) -> None:
        self.error = _sentence(exc)
        log.warning(
            "the serial port %s is gone (%s); waiting for it to come back, the X1 side "
            "stays connected",
            self.url,
            self.error,
        )
        self._close()
        self.state = PortState.ABSENT

    def _sense(self) -> bool | None:
        """Whether Data Request is asserted; None if the port failed."""
        port = self._port
        if port is None:
            return None
        try:
            asserted = port.cts if self.data_request == "cts" else port.dsr
        except (serial.SerialException, OSError) as exc:
            code = getattr(exc, "errno", None)
            if code in (errno.EINVAL, errno.ENOTTY, None) and not _is_gone(exc):
                if not self._dr_warned:
                    log.error(
                        "cannot read %s on %s (%s): Data Request cannot be sensed, so "
                        "nothing is sent; use --data-request ignore on this port",
                        self.data_request.upper(),
                        self.url,
                        _sentence(exc),
                    )
                    self._dr_warned = True
                self.dr_state = DataRequestState.UNKNOWN
                return False
            self._lost(exc)
            return None
        state = DataRequestState.ASSERTED if asserted else DataRequestState.NOT_ASSERTED
        if state is not self.dr_state:
            log.info(
                "Data Request (%s) %s: %s",
                self.data_request.upper(),
                "asserted" if asserted else "dropped",
                "sending telegrams" if asserted else "not sending (P1 §5.7.1)",
            )
            self.dr_state = state
        return bool(asserted)

    def _drained(self, port: SerialLike) -> bool:
        """Wait until the port's output queue is empty; False if it stays full (stuck)."""
        try:
            if port.out_waiting == 0:
                return True
        except (NotImplementedError, AttributeError):
            return True
        deadline = self._clock() + self.stuck_after
        while not self._stopping and self._clock() < deadline:
            time.sleep(0.002)
            if port.out_waiting == 0:
                return True
        return False

    def _write(self, raw: bytes, received_at: float) -> None:
        port = self._port
        if port is None or self._clock() - received_at > self.max_age:
            self.stats.too_old += 1
            return
        try:
            if not self._drained(port):
                self.stats.too_old += 1
                self._stuck("the port has not sent the previous telegram")
                return
            handed = self._clock()
            port.write(raw)
        except serial.SerialTimeoutException:
            self._stuck(f"the port did not take a whole telegram within {self.stuck_after:g} s")
            return
        except (serial.SerialException, OSError) as exc:
            if self._stopping:
                return
            self.stats.too_old += 1
            self._lost(exc)
            return
        stats = self.stats
        stats.written_by_worker += 1
        stats.last_write_at = handed
        stats.latencies.append(handed - received_at)
        if self._stuck_in_row:
            log.info("serial port %s is writing again", self.url)
            self._stuck_in_row = 0
        if self.state is not PortState.OPEN:
            self.state, self.error = PortState.OPEN, ""

    def _finish(self, rest: bytes, received_at: float) -> None:
        """Write the tail of a telegram the event loop began (blocking, with the timeout)."""
        port = self._port
        assert port is not None
        try:
            port.write(rest)
        except serial.SerialTimeoutException:
            self._stuck(f"the port did not take a whole telegram within {self.stuck_after:g} s")
            return
        except (serial.SerialException, OSError) as exc:
            if not self._stopping:
                self._lost(exc)
            return
        self.stats.written_by_worker += 1
        self.stats.last_write_at = self._clock()

    def _stuck(self, why: str) -> None:
        """Flush what the port still holds, so no tail of an old telegram goes out later."""
        port = self._port
        self.stats.resets += 1
        self._stuck_in_row += 1
        self.state, self.error = PortState.STUCK, why
        if self._stuck_in_row == 1 or self._stuck_in_row % 60 == 0:
            log.warning(
                "%s on %s: output flushed, telegrams are dropped until it moves again "
                "(a reader discards the cut one by its CRC)",
                why,
                self.url,
            )
        try:
            if port is not None:
                port.reset_output_buffer()
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            return
        if self._stuck_in_row >= 3:
            self._close()  # open it afresh: some drivers only recover that way


def _posix_fd(port: SerialLike) -> int | None:
    """The file descriptor of a local serial device, for the fast path; None for URLs
    whose ``write`` is not a plain ``write(2)`` (loop://, socket://, test doubles)."""
    if not isinstance(port, serialposix.Serial):
        return None
    try:
        return int(port.fileno())
    except (serial.SerialException, OSError, ValueError):
        return None


def _is_gone(exc: BaseException) -> bool:
    code = getattr(exc, "errno", None)
    return code in (errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF)


def _sentence(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        return "no such device"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied: add the user to the dialout group"
    if code in (errno.EIO, errno.ENXIO, errno.ENODEV):
        return "the device went away"
    if code == errno.EBUSY or "exclusively lock" in str(exc):
        return "in use by another program"
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if code is None and len(args) == 2 and isinstance(args[0], int):
        code = args[0]  # termios.error: (errno, text), no errno attribute
        if code != errno.ENOTTY:
            return str(args[1])
    if code == errno.ENOTTY:
        return "not a serial device (no tty)"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)
