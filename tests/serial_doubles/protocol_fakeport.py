"""pyserial's URL handler for ``fakeport://NAME`` (see the package docstring)."""

from __future__ import annotations

import errno
import os
from typing import Any
from urllib.parse import urlsplit

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from serial_doubles import LINES, FakeLine, slow_write


class Serial(SerialBase):  # type: ignore[misc]
    """A port whose far side is a :class:`~serial_doubles.FakeLine`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.line: FakeLine | None = None
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        name = urlsplit(self.portstr).netloc
        line = LINES.get(name)
        if line is None or not line.present:
            raise SerialException(errno.ENOENT, f"could not open port {self.portstr}")
        self.line = line
        with line.lock:
            line.opens += 1
        self.is_open = True

    def _line(self) -> FakeLine:
        if not self.is_open or self.line is None:
            raise PortNotOpenError()
        if not self.line.present:
            raise SerialException(errno.EIO, "Input/output error")
        return self.line

    def close(self) -> None:
        self.is_open = False

    def _reconfigure_port(self) -> None:
        pass

    def write(self, data: bytes) -> int:
        line = self._line()
        slow_write(line)
        if not line.present:
            raise SerialException(errno.EIO, "Input/output error")
        with line.lock:
            line.writes.append(bytes(data))
        if line.through is not None:
            os.write(line.through, data)
        return len(data)

    def read(self, size: int = 1) -> bytes:
        self._line()
        return b""

    @property
    def in_waiting(self) -> int:
        return 0

    @property
    def out_waiting(self) -> int:
        self._line()
        return 0

    def reset_input_buffer(self) -> None:
        self._line()

    def reset_output_buffer(self) -> None:
        line = self._line()
        with line.lock:
            line.resets += 1

    @property
    def cts(self) -> bool:
        return self._line().cts

    @property
    def dsr(self) -> bool:
        return self._line().dsr

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return False

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass
