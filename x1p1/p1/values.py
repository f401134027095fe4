"""Value formats of P1 data lines (P1 §6.4, Table 5-1) and their parsing.

- ``Fn(x,y)``: a decimal number with a fixed count of digits, e.g. F9(3,3) is
  ``123456.789``: :func:`fixed`.
- ``In``: an integer padded with zeros, e.g. I5 ``00004``: :func:`fixed` with 0 decimals.
- ``Sn``: an octet string as hexadecimal characters (P1 §6.5): :func:`hex_string`.
- ``TST``: ``YYMMDDhhmmssX``, X = ``S`` in summer time, ``W`` in winter time:
  :func:`timestamp` and :func:`parse_timestamp`. Dutch meters keep Dutch local time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from x1p1.exceptions import TelegramParseError

NL = ZoneInfo("Europe/Amsterdam")
"""The meter's time zone: TST carries Dutch local time with its DST flag."""

_TST = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW])\Z")


def fixed(value: float, int_digits: int, decimals: int, unit: str | None = None) -> str:
    """``value`` with ``int_digits`` zero-padded integer digits and ``decimals`` decimals.

    ``fixed(1.193, 2, 3, "kW") == "01.193*kW"``. A value too large for the digits wraps
    around as a meter register does (P1 §6.4 fixes the width).
    """
    scale = 10**decimals
    units = round(abs(value) * scale) % (10 ** (int_digits + decimals))
    whole, frac = divmod(units, scale)
    text = f"{whole:0{int_digits}d}" + (f".{frac:0{decimals}d}" if decimals else "")
    if value < 0 and units:
        text = "-" + text
    return f"{text}*{unit}" if unit else text


def hex_string(text: str) -> str:
    """An ``Sn`` octet string: each byte as two upper-case hex digits (P1 §6.5)."""
    return text.encode("utf-8").hex().upper()


def timestamp(moment: datetime) -> str:
    """``YYMMDDhhmmssX`` in Dutch local time; X is ``S`` in summer, ``W`` in winter."""
    if moment.tzinfo is None:
        raise ValueError("timestamp() needs an aware datetime")
    local = moment.astimezone(NL)
    flag = "S" if local.dst() else "W"
    return local.strftime("%y%m%d%H%M%S") + flag


def parse_timestamp(text: str) -> datetime:
    """Parse ``YYMMDDhhmmssX`` into an aware UTC datetime (the DST flag settles the hour
    that occurs twice in autumn)."""
    match = _TST.match(text)
    if not match:
        raise TelegramParseError(f"not a P1 timestamp (YYMMDDhhmmssX): {text!r}")
    yy, mo, dd, hh, mi, ss, flag = match.groups()
    try:
        naive = datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss))
    except ValueError as exc:
        raise TelegramParseError(f"not a valid time: {text!r} ({exc})") from None
    offset = timedelta(hours=2 if flag == "S" else 1)
    return (naive - offset).replace(tzinfo=UTC)


def split_unit(text: str) -> tuple[str, str | None]:
    """``"000123.456*kWh"`` → ``("000123.456", "kWh")``; no unit → ``(text, None)``."""
    number, star, unit = text.partition("*")
    return (number, unit) if star else (text, None)
