"""Framing of a P1 byte stream into telegrams: bytes in, events out (P1 §6.2).

A telegram is ``/XXX5Ident CR LF CR LF Data ! CRC CR LF``. :class:`TelegramReader` takes
bytes in any split (:meth:`~TelegramReader.receive_data`) and hands back events
(:meth:`~TelegramReader.events_received`), the way websockets' ``protocol.py`` and h11's
``_connection.py`` do. It never raises on input:

- :class:`ValidTelegram`: the exact raw bytes from ``/`` through the CRC's CR LF, whose
  CRC-16 matched;
- :class:`InvalidTelegram`: something that started with ``/`` but cannot be passed on,
  with the reason (CRC mismatch, no CRC, too large, cut short by a new ``/``);
- :class:`Garbage`: the count of bytes outside any telegram, reported once the run ends.

With ``tolerant=True`` (the converter reading a gateway, docs/x1-api.md "What the
converter tolerates") the reader also takes, outside what the CRC covers: a CRC in lower
case, or of 1–3 digits (written as four upper-case digits, as P1 §6.2 has it); a CRC
line ended by LF alone, or not at all when the telegram ends a message
(:meth:`~TelegramReader.end_of_message`) or a new ``/`` follows its four digits (CR LF is
supplied). The bytes from ``/`` through ``!`` are never changed, so a valid telegram's
``raw`` is always one that DSMR 5.0.2 and dsmr_parser accept.

The reader resynchronises on the next ``/``. Its buffer never holds more than
``max_size`` bytes (default 8192), so a stream of noise without ``/`` or ``!`` costs
bounded memory (the cap of websockets' ``read_line(m)``). The events do not depend on how
the input was split, byte by byte or all at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from x1p1.p1.crc import crc16

DEFAULT_MAX_SIZE = 8192
"""Default cap on one telegram, in bytes. Real telegrams are 900–1100 bytes (p1.md)."""

MIN_MAX_SIZE = 64
CRC_LINE_MAX = 8
"""Bytes allowed after ``!``: four hex digits, CR LF, and a little slack."""

_SLASH = b"/"
_BANG = b"!"
_LF = b"\n"
_HEX = frozenset(b"0123456789ABCDEF")
_ANY_HEX = frozenset(b"0123456789ABCDEFabcdef")


class InvalidTelegramReason(enum.StrEnum):
    """Why a telegram that started with ``/`` cannot be used."""

    CRC_MISMATCH = "crc-mismatch"
    """The four CRC digits do not match the CRC-16 of ``/`` through ``!`` (P1 §6.2)."""
    MISSING_CRC = "missing-crc"
    """The line after ``!`` holds no CRC, or not as 1–4 upper-case hex digits and CR LF."""
    OVERSIZE = "oversize"
    """No end within ``max_size`` bytes."""
    TRUNCATED = "truncated"
    """A new ``/`` (or the end of input) arrived before the telegram was complete."""


@dataclass(frozen=True, slots=True)
class ValidTelegram:
    """A complete telegram whose CRC matched: pass ``raw`` on byte for byte."""

    raw: bytes
    crc: str
    """The CRC digits exactly as the telegram carried them (``raw`` has them as P1 §6.2
    writes them: four upper-case digits, then CR LF)."""

    @property
    def header(self) -> str:
        """The identification line without ``/`` and CR LF, e.g. ``ISk5\\2MT382-1000``."""
        return _header_of(self.raw)


@dataclass(frozen=True, slots=True)
class InvalidTelegram:
    """Bytes that began as a telegram and must not be passed on."""

    reason: InvalidTelegramReason
    raw: bytes
    """What was received of it, at most ``max_size`` bytes."""
    crc: str | None = None
    """The CRC text it carried, if any."""
    expected: str | None = None
    """For a CRC mismatch: the CRC the content actually has."""

    @property
    def header(self) -> str:
        """The identification line, as far as it arrived."""
        return _header_of(self.raw)

    @property
    def message(self) -> str:
        """A sentence for logs and ``x1p1 monitor``."""
        if self.reason is InvalidTelegramReason.CRC_MISMATCH:
            return f"CRC mismatch: telegram says {self.crc}, content has {self.expected}"
        if self.reason is InvalidTelegramReason.MISSING_CRC:
            return "no valid CRC after '!' (four hex digits and CR LF expected)"
        if self.reason is InvalidTelegramReason.OVERSIZE:
            return f"no end of telegram within {len(self.raw)} bytes"
        return f"telegram cut short after {len(self.raw)} bytes"


@dataclass(frozen=True, slots=True)
class Garbage:
    """``size`` bytes that belonged to no telegram (noise, or the rest of a broken one)."""

    size: int


Event = ValidTelegram | InvalidTelegram | Garbage


def _header_of(raw: bytes) -> str:
    end = raw.find(b"\r\n")
    line = raw[1:end] if end >= 0 else raw[1:80]
    return line.decode("ascii", errors="replace")


class _State(enum.Enum):
    SEARCH = 0  # outside a telegram: looking for "/"
    BODY = 1  # after "/": looking for "!"
    CRC = 2  # after "!": looking for the LF that ends the CRC line


class TelegramReader:
    """Sans-I/O framer: feed bytes with :meth:`receive_data`, take :meth:`events_received`.

    ``max_size`` caps a telegram (and so the buffer); it is at least 64 bytes.
    ``tolerant`` takes the CRC line's variants described in the module's docstring.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, *, tolerant: bool = False) -> None:
        if max_size < MIN_MAX_SIZE:
            raise ValueError(f"max_size must be at least {MIN_MAX_SIZE} bytes")
        self.max_size = max_size
        self.tolerant = tolerant
        self._state = _State.SEARCH
        self._buf = bytearray()
        self._bang = 0  # index of "!" in _buf while in CRC state
        self._garbage = 0
        self._events: list[Event] = []

    # -- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take the next bytes of the stream, in any split."""
        if self._state is _State.SEARCH and data[:1] == _SLASH and self._receive_whole(data):
            return
        pos, n = 0, len(data)
        while pos < n:
            if self._state is _State.SEARCH:
                start = data.find(_SLASH, pos)
                if start < 0:
                    self._garbage += n - pos
                    return
                self._garbage += start - pos
                self._begin()
                pos = start + 1
            elif self._state is _State.BODY:
                pos = self._receive_body(data, pos, n)
            else:
                pos = self._receive_crc(data, pos, n)

    def end_of_message(self) -> None:
        """A message (a WebSocket frame) ended here. A tolerant reader finishes a telegram
        whose CRC digits end the message without CR LF: four digits always, fewer only
        when they match (else more of the CRC may come in the next message)."""
        if not self.tolerant or self._state is not _State.CRC:
            return
        digits = bytes(self._buf[self._bang + 1 :]).rstrip(b"\r")
        if not 1 <= len(digits) <= 4 or not _ANY_HEX.issuperset(digits):
            return
        if len(digits) < 4 and int(digits, 16) != crc16(bytes(self._buf[: self._bang + 1])):
            return
        self._finish(bytes(self._buf[: self._bang + 1]) + digits + b"\r\n", self._bang)

    def receive_eof(self) -> None:
        """The stream ended: report a telegram left incomplete and trailing garbage."""
        if self._state is not _State.SEARCH:
            self._emit_invalid(InvalidTelegramReason.TRUNCATED)
        self._flush_garbage()

    def events_received(self) -> list[Event]:
        """The events produced since the last call, in stream order."""
        events, self._events = self._events, []
        return events

    def feed(self, data: bytes) -> list[Event]:
        """:meth:`receive_data` then :meth:`events_received`, for convenience."""
        self.receive_data(data)
        return self.events_received()

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete telegram (never more than ``max_size``)."""
        return len(self._buf)

    # -- states --------------------------------------------------------------------

    def _receive_whole(self, data: bytes) -> bool:
        """Fast path: ``data`` is exactly one telegram (one WebSocket message).

        Taken only when the general path would see the same thing: one ``/`` at the start,
        the first ``!`` followed by at most :data:`CRC_LINE_MAX` bytes ending in the only
        LF after it, all within ``max_size``. Otherwise the general path runs.
        """
        n = len(data)
        bang = data.find(_BANG)
        if (
            bang < 0
            or n > self.max_size
            or n - 1 - bang > CRC_LINE_MAX
            or data.find(_LF, bang) != n - 1
            or data.find(_SLASH, 1) >= 0
        ):
            return False
        self._flush_garbage()
        self._finish(data, bang)
        return True

    def _begin(self) -> None:
        self._flush_garbage()
        self._buf = bytearray(_SLASH)
        self._state = _State.BODY

    def _receive_body(self, data: bytes, pos: int, n: int) -> int:
        end = min(n, pos + self.max_size - len(self._buf))
        bang = data.find(_BANG, pos, end)
        limit = bang if bang >= 0 else end
        slash = data.find(_SLASH, pos, limit)
        if slash >= 0:
            self._buf += data[pos:slash]
            self._emit_invalid(InvalidTelegramReason.TRUNCATED)
            self._begin()
            return slash + 1
        if bang >= 0:
            self._buf += data[pos : bang + 1]
            self._bang = len(self._buf) - 1
            self._state = _State.CRC
            return bang + 1
        self._buf += data[pos:end]
        if len(self._buf) >= self.max_size:
            self._emit_invalid(InvalidTelegramReason.OVERSIZE)
        return end

    def _receive_crc(self, data: bytes, pos: int, n: int) -> int:
        room = min(CRC_LINE_MAX - (len(self._buf) - self._bang - 1), self.max_size - len(self._buf))
        end = min(n, pos + room)
        lf = data.find(_LF, pos, end)
        limit = lf if lf >= 0 else end
        slash = data.find(_SLASH, pos, limit)
        if slash >= 0:
            self._buf += data[pos:slash]
            digits = bytes(self._buf[self._bang + 1 :]).rstrip(b"\r")
            if self.tolerant and len(digits) == 4 and _ANY_HEX.issuperset(digits):
                # the next telegram follows the CRC without CR LF: supply it
                self._finish(bytes(self._buf[: self._bang + 1]) + digits + b"\r\n", self._bang)
            else:
                self._emit_invalid(InvalidTelegramReason.MISSING_CRC, crc=self._crc_text())
            self._begin()
            return slash + 1
        if lf >= 0:
            self._buf += data[pos : lf + 1]
            self._finish(bytes(self._buf), self._bang)
            return lf + 1
        self._buf += data[pos:end]
        if end - pos == room:  # the CRC line or the telegram is too long
            reason = (
                InvalidTelegramReason.OVERSIZE
                if len(self._buf) >= self.max_size
                else InvalidTelegramReason.MISSING_CRC
            )
            self._emit_invalid(reason, crc=self._crc_text())
        return end

    def _crc_text(self) -> str:
        return bytes(self._buf[self._bang + 1 :]).rstrip(b"\r\n").decode("ascii", "replace")

    def _finish(self, raw: bytes, bang: int) -> None:
        """Judge a complete telegram ``raw`` whose ``!`` is at ``bang``."""
        if self.tolerant:
            digits = raw[bang + 1 :].rstrip(b"\r\n")
            hex_digits = _ANY_HEX
            ended = raw[-1:] == _LF and raw[bang + 1 + len(digits) :] in (b"\r\n", b"\n")
        else:
            digits = raw[bang + 1 : -2]
            hex_digits = _HEX
            ended = raw[-2:] == b"\r\n"
        if not ended or not 1 <= len(digits) <= 4 or not hex_digits.issuperset(digits):
            crc_text = raw[bang + 1 :].rstrip(b"\r\n").decode("ascii", "replace")
            self._emit_invalid(InvalidTelegramReason.MISSING_CRC, crc_text or None, raw=raw)
            return
        actual = crc16(raw[: bang + 1])
        crc = digits.decode("ascii")
        if int(crc, 16) == actual:
            if self.tolerant and (
                len(digits) != 4 or raw[-2:] != b"\r\n" or not _HEX.issuperset(digits)
            ):
                out = b"%s%04X\r\n" % (raw[: bang + 1], actual)
                self._events.append(ValidTelegram(out, crc))
            else:
                self._events.append(ValidTelegram(raw, crc))
            self._reset()
        else:
            self._emit_invalid(
                InvalidTelegramReason.CRC_MISMATCH, crc, expected=f"{actual:04X}", raw=raw
            )

    def _emit_invalid(
        self,
        reason: InvalidTelegramReason,
        crc: str | None = None,
        expected: str | None = None,
        *,
        raw: bytes | None = None,
    ) -> None:
        data = bytes(self._buf) if raw is None else raw
        self._events.append(InvalidTelegram(reason, data, crc, expected))
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._state = _State.SEARCH

    def _flush_garbage(self) -> None:
        if self._garbage:
            self._events.append(Garbage(self._garbage))
            self._garbage = 0
