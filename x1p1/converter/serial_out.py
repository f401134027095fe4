"""The serial side: write each telegram whole to the P1 line, latest wins (DSMR 5.0.2 P1).

P1 §6: 115200 baud, 8N1, one telegram a second, each complete within the second.
``--serial`` is a device (``/dev/x1p1-p1``, ``/dev/ttyUSB0``) or any pyserial URL
(``loop://``, ``socket://…``, a pty's path); pyserial opens it (``serial_for_url``).

Latest wins. The event loop drops each telegram into a one-slot mailbox
(:meth:`SerialOutput.offer`); a worker thread takes the newest and does the blocking
write. A telegram that a newer one replaces before the port took it is counted
``stale``; a slow or stuck port therefore never builds a queue, in the mailbox or in the
port: before each write the worker waits until the port's output queue is empty
(``TIOCOUTQ``), so the kernel never holds more than the one telegram on its way out.

Never partly, never twice, never a bad CRC. Only telegrams whose CRC the P1 core
checked reach :meth:`offer`, each is taken from the mailbox once, and it is handed to
the kernel in one ``write()`` into an empty output queue (a real UART's queue holds
several kilobytes, a telegram about one). The write has a timeout (``stuck_after``): a
port that has not taken the whole telegram by then is stuck, and its output queue is
flushed (``tcflush(TCOFLUSH)``) and the port reset, so no stale tail goes out later.
What may then be on the wire is the head of one telegram that the port sent before it
stalled: a P1 reader discards it (no ``!CRC``, or a new ``/`` first). A port that does
not report its queue (a pty always says 0) is written the same way; there a reader that
stops reading fills the pty's buffer, and the timeout then applies.

Data Request (P1 §5.7.1): with ``--data-request cts`` or ``dsr`` a telegram goes out
only while that input is asserted, checked right before each write and every 10 ms
while waiting; when it drops, nothing new starts (the one telegram already on the wire,
at most 82 ms, is finished rather than cut: a cut telegram is never written). When it
rises, the newest telegram goes out at once if it is fresh.

Port gone (USB adapter pulled: the write fails with EIO): the port is closed, the X1
side keeps running, and the worker tries to open it again every second, at once when
udev reports a new tty (:mod:`x1p1.converter.hotplug`), and resumes.
"""

from __future__ import annotations

import enum
import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import serial

from x1p1.converter.hotplug import Hotplug, open_hotplug

__all__ = [
    "BAUDRATE",
    "DataRequestState",
    "PortState",
    "SerialLike",
    "SerialOutput",
    "SerialStats",
    "open_serial",
]

log = logging.getLogger(__name__)

BAUDRATE = 115200
"""P1 §6: fixed, 8N1."""
BYTE_TIME = 10 / BAUDRATE
"""Seconds per byte on the wire: start, 8 data bits, stop."""


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
    """Counters of the serial side (read from other threads; ints are atomic enough)."""

    written: int = 0
    stale: int = 0
    """Replaced by a newer telegram before the port took it, or too old to send."""
    not_requested: int = 0
    """Not sent because Data Request was not asserted."""
    resets: int = 0
    """Writes that timed out: output flushed, port reset."""
    opened: int = 0
    last_write_at: float | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    """Seconds from the WebSocket message to the write call, recent telegrams."""


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
        poll: float = 0.01,
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
        self._cond = threading.Condition(threading.Lock())
        self._slot: tuple[bytes, float] | None = None
        self._gated = data_request != "ignore"
        self._stopping = False
        self._stop_event = threading.Event()
        self._port: SerialLike | None = None
        self._thread: threading.Thread | None = None
        self._stuck_in_row = 0
        self._dr_warned = False

    # -- from the event loop -------------------------------------------------------------

    def offer(self, raw: bytes, received_at: float) -> None:
        """Hand over a checked telegram; it replaces one the port has not taken yet."""
        with self._cond:
            if self._slot is not None:
                if self._gated:
                    self.stats.not_requested += 1
                else:
                    self.stats.stale += 1
            self._slot = (raw, received_at)
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="x1p1-serial", daemon=False)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker and close the port (a blocked write is cut short)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
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
                if self._port is None and not self._open():
                    self._wait_for_port()
                    continue
                item = self._next()
                if item is not None:
                    self._write(*item)
        except Exception:  # pragma: no cover - a bug: say so, keep the process alive
            log.exception("the serial worker failed")
            self.error = "the serial worker failed; see the log"
        finally:
            self._close()
            self.state = PortState.STOPPED
            if self._hotplug is not None:
                self._hotplug.close()

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
        with self._cond:
            self._port = port
            self._slot = None  # what waited while the port was away is old now
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
        with self._cond:
            port, self._port = self._port, None
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

    def _next(self) -> tuple[bytes, float] | None:
        """The newest telegram once it may be sent, or None (stop, port failed)."""
        gating = self.data_request != "ignore"
        while not self._stopping:
            if gating:
                asserted = self._sense()
                if asserted is None:
                    return None
                with self._cond:
                    self._gated = not asserted
                    if not asserted:
                        self._drop_old_unrequested()
                        self._cond.wait(self.poll)
                        continue
            with self._cond:
                if self._slot is None and not self._stopping:
                    self._cond.wait(self.poll if gating else 0.5)
                item, self._slot = self._slot, None
            if item is not None:
                return item
            if self._port is None:
                return None
        return None

    def _drop_old_unrequested(self) -> None:
        """(Lock held.) A telegram that waited for Data Request too long is dropped."""
        if self._slot is not None and self._clock() - self._slot[1] > self.max_age:
            self._slot = None
            self.stats.not_requested += 1

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
        if port is None:
            self.stats.stale += 1
            return
        if self._clock() - received_at > self.max_age:
            self.stats.stale += 1
            return
        try:
            if not self._drained(port):
                self.stats.stale += 1
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
            self.stats.stale += 1
            self._lost(exc)
            return
        stats = self.stats
        stats.written += 1
        stats.last_write_at = handed
        stats.latencies.append(handed - received_at)
        if self._stuck_in_row:
            log.info("serial port %s is writing again", self.url)
            self._stuck_in_row = 0
        if self.state is not PortState.OPEN:
            self.state, self.error = PortState.OPEN, ""

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
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)
