"""A pyserial URL handler for tests: ``fakeport://NAME``, a port whose far side the test holds.

No test machine has an RS-232 adapter, and a pty carries no CTS/DSR. This handler goes
through pyserial's own ``serial_for_url`` (the converter opens it like any port), while
the test sets the modem lines (Data Request, P1 §5.7.1), slows writes down, or pulls the
"adapter" out; with :attr:`FakeLine.through` the bytes also go out on a real pty. Register
a line with :func:`register`, then pass ``fakeport://NAME``.
"""

from __future__ import annotations

import threading
import time

import serial

PACKAGE = __name__


class FakeLine:
    """The far side of ``fakeport://NAME``: what the converter wrote, and the inputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cts = False
        self.dsr = False
        self.present = True
        self.write_delay = 0.0
        self.writes: list[bytes] = []
        self.through: int | None = None
        """A pty's slave descriptor: written bytes go on through it too, so that the test
        reads them off a real line while setting the modem lines itself."""
        self.resets = 0
        self.opens = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"fakeport://{self.name}"

    def data(self) -> bytes:
        with self.lock:
            return b"".join(self.writes)


LINES: dict[str, FakeLine] = {}


def register(name: str) -> FakeLine:
    """A new fake line; makes pyserial find the ``fakeport://`` handler."""
    if PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(PACKAGE)
    line = FakeLine(name)
    LINES[name] = line
    return line


def slow_write(line: FakeLine) -> None:
    """Block like a port whose line drains slowly."""
    if line.write_delay:
        time.sleep(line.write_delay)
