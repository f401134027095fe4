"""Sans-I/O DSMR 5.0.2 P1: CRC, framing (bytes in, events out), telegram value objects.

Nothing in this package imports asyncio, serial or network code: adapters feed it bytes
and act on the events it returns (architecture.md, habit 1).
"""

from x1p1.p1.crc import crc16, crc16_hex
from x1p1.p1.reader import (
    DEFAULT_MAX_SIZE,
    Event,
    Garbage,
    InvalidTelegram,
    InvalidTelegramReason,
    TelegramReader,
    ValidTelegram,
)
from x1p1.p1.telegram import CosemObject, Telegram

__all__ = [
    "DEFAULT_MAX_SIZE",
    "CosemObject",
    "Event",
    "Garbage",
    "InvalidTelegram",
    "InvalidTelegramReason",
    "Telegram",
    "TelegramReader",
    "ValidTelegram",
    "crc16",
    "crc16_hex",
]
