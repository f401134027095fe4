"""CRC-16 of a DSMR 5.0.2 P1 telegram (P1 §6.2).

"CRC is a CRC16 value calculated over the preceding characters in the data message (from
“/” to “!” using the polynomial: x16+x15+x2+1). CRC16 uses no XOR in, no XOR out and is
computed with least significant bit first. The value is represented as 4 hexadecimal
characters (MSB first)." That is CRC-16/ARC: reflected 0xA001, init 0, check value
``crc16(b"123456789") == 0xBB3D``. The table-driven C implementation comes from the
``crcmod`` module (the maintained crcmod-plus distribution).
"""

from __future__ import annotations

from collections.abc import Callable

import crcmod.predefined

crc16: Callable[[bytes], int] = crcmod.predefined.mkPredefinedCrcFun("crc-16")
"""CRC-16/ARC of ``data``, an int in 0..0xFFFF."""


def crc16_hex(data: bytes) -> str:
    """The CRC of ``data`` as the telegram carries it: four upper-case hex digits."""
    return f"{crc16(data):04X}"
