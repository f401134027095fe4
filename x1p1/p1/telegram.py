"""Telegram value objects: parse a P1 telegram into COSEM objects and serialize it back.

A telegram (P1 §6.2, §6.13) is::

    /XXX5Identification CR LF
    CR LF
    OBIS(value*unit) CR LF            one object a line (P1 §6.4)
    0-n:24.2.1(TST)(value*m3) CR LF   M-Bus: capture time, then value (P1 §7.3)
    1-0:99.97.0(n)(0-0:96.7.19)(TST)(v*s)…   power-failure event log (P1 §7.1)
    !CRC CR LF

:class:`CosemObject` keeps the text of each ``(…)`` group exactly as it arrived, so
``Telegram.parse(raw).serialize() == raw`` for every telegram that follows the standard:
nothing is normalised, padded or reordered. :meth:`Telegram.build` makes a telegram from
objects and appends the right CRC (P1 §6.2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from x1p1.exceptions import TelegramParseError
from x1p1.p1.crc import crc16, crc16_hex

_OBIS = re.compile(r"\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}\Z")
_CRC = re.compile(rb"[0-9A-F]{1,4}\Z")


@dataclass(frozen=True, slots=True)
class CosemObject:
    """One data line: an OBIS reference and the text of each ``(…)`` group (P1 §6.4).

    ``values`` holds the group texts without parentheses: ``("000123.456*kWh",)`` for a
    register, ``("101209112500W", "12785.123*m3")`` for an M-Bus value with its capture
    time, ``("",)`` for an empty value ``()``.
    """

    obis: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _OBIS.match(self.obis):
            raise TelegramParseError(f"not an OBIS reference: {self.obis!r}")
        if not self.values:
            raise TelegramParseError(f"{self.obis}: no value group")
        for value in self.values:
            if not value.isascii() or any(c in value for c in "()\r\n"):
                raise TelegramParseError(f"{self.obis}: bad character in value {value!r}")

    @classmethod
    def parse(cls, line: str) -> CosemObject:
        """Parse one line without its CR LF, e.g. ``1-0:1.8.1(000123.456*kWh)``."""
        open_at = line.find("(")
        if open_at < 0 or not line.endswith(")"):
            raise TelegramParseError(f"not a COSEM object line: {line[:80]!r}")
        groups = line[open_at + 1 : -1].split(")(")
        return cls(line[:open_at], tuple(groups))

    def serialize(self) -> str:
        """The line as it goes on the wire, without CR LF."""
        return self.obis + "".join(f"({value})" for value in self.values)

    @property
    def text(self) -> str:
        """The raw value text: the single group's text, or every group ``(a)(b)``."""
        if len(self.values) == 1:
            return self.values[0]
        return "".join(f"({value})" for value in self.values)

    @property
    def value(self) -> str:
        """The measured value's text: the last group (after an M-Bus capture time)."""
        return self.values[-1]


@dataclass(frozen=True, slots=True)
class Telegram:
    """A whole telegram: identification ``header``, ``objects`` in order, and ``crc``.

    ``header`` is the identification line without ``/`` and CR LF. ``crc`` holds the
    digits as they arrived (parse) or as computed (build).
    """

    header: str
    objects: tuple[CosemObject, ...]
    crc: str

    @classmethod
    def parse(cls, raw: bytes, *, check_crc: bool = True) -> Telegram:
        """Parse the raw bytes of one telegram (``/`` through the CRC's CR LF).

        Raises :class:`~x1p1.exceptions.TelegramParseError` when the text does not follow
        P1 §6.2, or when ``check_crc`` and the CRC does not match.
        """
        if not raw.startswith(b"/") or not raw.endswith(b"\r\n"):
            raise TelegramParseError("a telegram starts with '/' and ends with CR LF")
        bang = raw.rfind(b"\r\n!")
        if bang < 0:
            raise TelegramParseError("no '!' line before the CRC")
        crc = raw[bang + 3 : -2]
        if not _CRC.match(crc):
            raise TelegramParseError(f"bad CRC line {crc[:16]!r}")
        if check_crc and int(crc, 16) != crc16(raw[: bang + 3]):
            raise TelegramParseError(
                f"CRC mismatch: telegram says {crc.decode()}, "
                f"content has {crc16_hex(raw[: bang + 3])}"
            )
        try:
            text = raw[1:bang].decode("ascii")
        except UnicodeDecodeError as exc:
            raise TelegramParseError(f"non-ASCII byte at offset {exc.start + 1}") from None
        header, sep, body = text.partition("\r\n\r\n")
        if not sep or "\r\n" in header:
            raise TelegramParseError("the identification line must be followed by an empty line")
        lines = body.split("\r\n") if body else []
        objects = tuple(CosemObject.parse(line) for line in lines)
        return cls(header, objects, crc.decode("ascii"))

    @classmethod
    def build(cls, header: str, objects: Iterable[CosemObject]) -> Telegram:
        """Make a telegram from objects, with the CRC that its content has (P1 §6.2)."""
        objs = tuple(objects)
        body = _body(header, objs)
        return cls(header, objs, crc16_hex(body))

    def serialize(self) -> bytes:
        """The telegram as it goes on the wire, byte for byte."""
        return _body(self.header, self.objects) + self.crc.encode("ascii") + b"\r\n"

    @property
    def crc_valid(self) -> bool:
        """Whether ``crc`` matches the content."""
        return int(self.crc, 16) == crc16(_body(self.header, self.objects))

    def __iter__(self) -> Iterator[CosemObject]:
        return iter(self.objects)

    def get(self, obis: str) -> CosemObject | None:
        """The first object with this OBIS reference, or None."""
        for obj in self.objects:
            if obj.obis == obis:
                return obj
        return None

    def as_dict(self) -> dict[str, str]:
        """``{obis: raw value text}`` (see :attr:`CosemObject.text`); the first one wins."""
        out: dict[str, str] = {}
        for obj in self.objects:
            out.setdefault(obj.obis, obj.text)
        return out


def _body(header: str, objects: tuple[CosemObject, ...]) -> bytes:
    if "\r" in header or "\n" in header:
        raise TelegramParseError("the identification line cannot hold CR or LF")
    lines = "".join(obj.serialize() + "\r\n" for obj in objects)
    return f"/{header}\r\n\r\n{lines}!".encode("ascii")
