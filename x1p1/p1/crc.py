"""CRC-16 of a DSMR 5.0.2 P1 telegram (P1 §6.2).

"CRC is a CRC16 value calculated over the preceding characters in the data message (from
“/” to “!” using the polynomial: x16+x15+x2+1). CRC16 uses no XOR in, no XOR out and is
computed with least significant bit first. The value is represented as 4 hexadecimal
characters (MSB first)." That is CRC-16/ARC: reflected 0xA001, init 0, check value
``crc16(b"123456789") == 0xBB3D``.

Two implementations compute it. The C extension of the ``crcmod`` module (the maintained
crcmod-plus distribution) is used when it can be imported. Where it cannot (a platform
without a crcmod-plus wheel, such as 32-bit Raspberry Pi OS, installs no compiler and so
no crcmod; README, "Raspberry Pi"), :func:`crc16_table` does the same in pure Python, one
table lookup per byte: 86 µs for 1 kB on the development PC against crcmod's 3.5 µs
(``bench/bench_p1.py``), nothing at one telegram a second. :data:`CRC_IMPLEMENTATION`
says which one runs (``x1p1 monitor`` prints it).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["CRC_IMPLEMENTATION", "crc16", "crc16_hex", "crc16_table"]

_POLY = 0xA001  # x16+x15+x2+1, bit-reversed: the CRC runs least significant bit first


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc16_table(data: bytes) -> int:
    """CRC-16/ARC of ``data`` in pure Python: init 0, reflected, no final XOR (P1 §6.2)."""
    crc = 0
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def _crcmod() -> Callable[[bytes], int] | None:
    """crcmod's C implementation, or None when crcmod or its C extension is missing.

    Without its extension crcmod falls back to its own pure Python, slower than
    :func:`crc16_table`; so the extension itself is what is asked for.
    """
    try:
        import crcmod._crcfunext  # noqa: F401  (the C extension, or ImportError)
        import crcmod.predefined
    except ImportError:
        return None
    function: Callable[[bytes], int] = crcmod.predefined.mkPredefinedCrcFun("crc-16")
    return function


_C = _crcmod()

crc16: Callable[[bytes], int] = _C if _C is not None else crc16_table
"""CRC-16/ARC of ``data``, an int in 0..0xFFFF."""

CRC_IMPLEMENTATION = "crcmod (C)" if _C is not None else "pure Python (crcmod not installed)"
"""Which :func:`crc16` runs, for people: ``x1p1 monitor`` prints it."""


def crc16_hex(data: bytes) -> str:
    """The CRC of ``data`` as the telegram carries it: four upper-case hex digits."""
    return f"{crc16(data):04X}"
