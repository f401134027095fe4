"""Build a DSMR 5.0.2 telegram from X1 realtime values (P1 §6.2–§6.12, X1 §6.2, §8.2): the
X1 registry's knowledge written with the P1 core's tools, so it lives in ``x1/``.

A gateway need not offer ``/api/legacy-p1`` (X1 §6.2.7: it *can* supply P1 telegrams),
and a customer may grant a device realtime profiles instead of P1 (X1 §5.1.6). Then the
converter reads ``/api/realtime`` and writes the telegram itself, here:

- the identification line is the converter's own, :data:`REALTIME_HEADER` (``XPP``: the
  same made-up flag as the embedded gateway, ``5``: 115200 baud, P1 §6.2);
- ``1-3:0.2.8(50)`` and ``0-0:1.0.0`` with the S/W flag of Dutch time (P1 §6.4, TST);
- every object the realtime values hold, in the order of the example telegram (P1 §6.13,
  :data:`x1p1.x1.obis.P1_ORDER`) and in the format the registry gives it (P1 §7, Table
  5-1): equipment identifiers hex-encoded (P1 §6.5), registers, tariff, powers, per-phase
  powers, voltages, currents in whole amperes, the power-failure counts, log, sags and
  swells (PQ-REALTIME), and per M-Bus channel the device type, equipment identifier and
  gas reading ``0-n:24.2.1(TST)(value*m3)`` with its own 5-minute capture time (P1 §7.3);
- a fresh CRC (P1 §6.2).

An object the values do not hold is left out: never invented, never written as zero. The
text message ``0-0:96.13.0`` is in no realtime profile, so a built telegram has none.
P1 numbers carry no sign (Table 5-1): a negative value is written as its magnitude.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from x1p1.exceptions import TelegramParseError
from x1p1.p1.crc import crc16
from x1p1.p1.dsmr5 import PowerFailure, failure_log_values
from x1p1.p1.telegram import Telegram
from x1p1.p1.values import timestamp
from x1p1.x1.obis import BY_CODE, P1_ORDER, Meter, P1Format, P1Kind

REALTIME_HEADER = "XPP5X1P1-REALTIME"
"""``/XXX5Ident`` of a telegram the converter built from realtime values (P1 §6.2)."""
INFINITY = math.inf
"""A scaled value must be below it: NaN and values beyond a float are left out."""
VERSION = "50"
"""``1-3:0.2.8``: DSMR 5.0 (P1 §7.1)."""
MAX_ID_OCTETS = 96
"""An equipment identifier is an ``Sn`` of at most 96 octets (P1 §7.1, §7.3); a longer
one is left out rather than cut."""

Value = float | int | str | tuple[PowerFailure, ...]
"""One realtime value: a number, a string (equipment id), or the power-failure log."""


@dataclass(frozen=True, slots=True)
class GasReadings:
    """The latest realtime values of one M-Bus meter (X1 Table 6), by six-group code
    with the channel (``0-1:24.2.1.255``), and the capture time of its reading."""

    channel: int
    captured: datetime
    values: Mapping[str, Value] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RealtimeReadings:
    """What one second of realtime messages says: the electricity meter's values (by
    six-group code) at ``timestamp``, and the latest reading of each M-Bus meter."""

    timestamp: datetime
    electricity: Mapping[str, Value] = field(default_factory=dict)
    gas: tuple[GasReadings, ...] = ()


@dataclass(frozen=True, slots=True)
class Line:
    """How one object is written: its six-group code, its kind, its P1 code, and for
    ``Fn(x,y)`` the scale, the wrap-around modulus and a ``%`` template of the whole
    line (as :func:`~x1p1.p1.values.fixed` writes the number)."""

    code: str
    kind: P1Kind
    p1_code: str
    scale: int
    modulus: int
    template: str
    number_template: str

    @classmethod
    def of(cls, code: str, fmt: P1Format) -> Line:
        p1_code = code.rsplit(".", 1)[0]
        unit = f"*{fmt.unit}" if fmt.unit else ""
        digits = f"%0{fmt.int_digits}d" + (f".%0{fmt.decimals}d" if fmt.decimals else "")
        return cls(
            code,
            fmt.kind,
            p1_code,
            10**fmt.decimals,
            10 ** (fmt.int_digits + fmt.decimals),
            f"{p1_code}({digits}{unit})\r\n",
            digits + unit,
        )

    def number(self, value: float) -> str | None:
        """:func:`~x1p1.p1.values.fixed` of ``abs(value)``, without its general checks;
        None when ``value`` scaled is no finite number (NaN, or beyond a float)."""
        scaled = abs(value) * self.scale
        if not scaled < INFINITY:
            return None
        units = round(scaled) % self.modulus
        if self.scale == 1:
            return self.number_template % units
        return self.number_template % divmod(units, self.scale)


def _plan(meter: Meter, channel: int | None = None) -> tuple[Line, ...]:
    lines = []
    for code in P1_ORDER:
        obj = BY_CODE[code]
        if obj.meter is not meter or obj.p1 is None or code in _FIXED_LINES:
            continue
        concrete = obj.code if channel is None else obj.for_channel(channel)
        lines.append(Line.of(concrete, obj.p1))
    return tuple(lines)


_FIXED = P1Kind.FIXED
_FIXED_LINES = frozenset({"1-3:0.2.8.255", "0-0:1.0.0.255"})
_ELECTRICITY = _plan(Meter.ELECTRICITY)
_GAS = {channel: _plan(Meter.GAS, channel) for channel in range(1, 5)}
ELECTRICITY_ROWS = tuple(
    (line.code, line.kind is _FIXED, line.scale, line.modulus, line.template, line)
    for line in _ELECTRICITY
)
"""The plan unpacked into plain tuples, in P1 order: (six-group code, whether it is written
as ``Fn(x,y)``, scale, modulus, the whole line's ``%`` template, the :class:`Line`), for
the one-pass builder (:mod:`x1p1.x1.realtime_builder`), which reads every row each
second."""


@functools.lru_cache(maxsize=64)
def _timestamp(moment: datetime) -> str:
    """:func:`~x1p1.p1.values.timestamp`, remembered: a gas reading's time and the
    power-failure log stay the same for minutes."""
    return timestamp(moment)


_LOG_TEXT: list[object] = [None, ""]
"""The last power-failure log written and its text (it changes only at a long power
failure, P1 §7.1; hashing its ten entries for the cache each second cost more)."""


@functools.lru_cache(maxsize=16)
def _failure_log(log: tuple[PowerFailure, ...]) -> str:
    return ")(".join(failure_log_values(log))


def realtime_telegram(readings: RealtimeReadings, header: str = REALTIME_HEADER) -> bytes:
    """The whole telegram for these readings, byte for byte, with its CRC (P1 §6.2).

    Every line is made from the registry's codes and formats, so it needs none of the
    checks of :class:`~x1p1.p1.telegram.CosemObject` (hex, digits and TST hold no
    parenthesis or line end); ``header`` is checked."""
    parts = [head(header), _timestamp(readings.timestamp), ")\r\n"]
    for line in _ELECTRICITY:
        value = readings.electricity.get(line.code)
        if value is not None:
            text = line_text(line, value)
            if text is not None:
                parts.append(text)
    parts.append(gas_lines(readings.gas))
    return frame(parts)


def head(header: str = REALTIME_HEADER) -> str:
    """The identification line, the version line and ``0-0:1.0.0(`` up to its time."""
    if "\r" in header or "\n" in header or not header.isascii():
        raise TelegramParseError("the identification line must be ASCII without CR or LF")
    return f"/{header}\r\n\r\n1-3:0.2.8({VERSION})\r\n0-0:1.0.0("


def line_text(line: Line, value: Value) -> str | None:
    """One electricity object's whole line, or None when the value does not fit."""
    text = _write(line, value)
    return None if text is None else f"{line.p1_code}({text})\r\n"


def gas_lines(gas: Iterable[GasReadings]) -> str:
    """The lines of every M-Bus meter, by channel, each reading with its own capture time
    (P1 §7.3)."""
    parts = []
    for readings in sorted(gas, key=lambda g: g.channel):
        for line in _GAS.get(readings.channel, ()):
            value = readings.values.get(line.code)
            if value is not None:
                text = _write(line, value, readings.captured)
                if text is not None:
                    parts.append(f"{line.p1_code}({text})\r\n")
    return "".join(parts)


def frame(parts: list[str]) -> bytes:
    """The telegram from its lines up to the last object: ``!``, the CRC and CR LF."""
    parts.append("!")
    body = "".join(parts).encode("ascii")
    return b"%s%04X\r\n" % (body, crc16(body))


def build_realtime(readings: RealtimeReadings, header: str = REALTIME_HEADER) -> Telegram:
    """:func:`realtime_telegram` as a :class:`~x1p1.p1.telegram.Telegram` value object."""
    return Telegram.parse(realtime_telegram(readings, header))


def _write(line: Line, value: Value, captured: datetime | None = None) -> str | None:
    """The text between the first ``(`` and the last ``)`` of one object, or None when
    the value does not fit its format."""
    kind = line.kind
    if kind is P1Kind.LOG:
        if not isinstance(value, tuple):
            return None
        memo = _LOG_TEXT
        if value is not memo[0]:  # the reader gives the same log object while it holds
            memo[0], memo[1] = value, _failure_log(value)
        return memo[1]  # type: ignore[return-value]
    if kind is P1Kind.HEX:
        if not isinstance(value, str):
            return None
        octets = value.encode("utf-8")
        return None if len(octets) > MAX_ID_OCTETS else octets.hex().upper()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = line.number(value)
    if kind is P1Kind.MBUS:
        return None if captured is None or number is None else f"{_timestamp(captured)})({number}"
    return number
