"""``x1p1 monitor``: read a P1 stream, frame it, check every CRC and report each telegram.

The reader side of a P1 line, for troubleshooting a converter or a meter: it takes bytes
from a serial port, a pyserial URL or standard input, feeds them to the sans-I/O
:class:`~x1p1.p1.reader.TelegramReader` and prints one report per telegram, as text or
as one JSON object per line. Bad input never stops it; memory stays bounded whatever
arrives (the reader's buffer is capped, input is read in fixed chunks).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from x1p1.exceptions import TelegramParseError
from x1p1.p1.reader import Garbage, InvalidTelegram, TelegramReader, ValidTelegram
from x1p1.p1.telegram import Telegram

CHUNK = 65536


@dataclass
class MonitorSummary:
    """What a monitor run saw."""

    valid: int = 0
    invalid: int = 0
    noise_bytes: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        """The closing line on standard error."""
        total = self.valid + self.invalid
        text = f"x1p1 monitor: {total} telegrams, {self.valid} valid, {self.invalid} invalid"
        if self.reasons:
            text += " (" + ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items())) + ")"
        return text + f", {self.noise_bytes} bytes outside telegrams"


def report(event: ValidTelegram | InvalidTelegram) -> dict[str, Any]:
    """The JSON report of one telegram (``x1p1 monitor --json``).

    ``valid``, ``size`` (bytes of the raw telegram), ``crc`` (the digits it carried, or
    null), ``header``, ``objects`` (``{"1-0:1.8.1": "000123.456*kWh"}``: the raw value
    text; several groups are written ``(a)(b)``) and, for invalid ones, ``error`` and
    ``reason``.
    """
    out: dict[str, Any] = {
        "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "valid": isinstance(event, ValidTelegram),
        "size": len(event.raw),
        "crc": event.crc,
        "header": event.header,
        "objects": {},
    }
    try:
        out["objects"] = Telegram.parse(event.raw, check_crc=False).as_dict()
    except TelegramParseError as exc:
        if isinstance(event, ValidTelegram):
            out["warning"] = f"CRC matches but the content does not parse: {exc}"
    if isinstance(event, InvalidTelegram):
        out["reason"] = event.reason.value
        out["error"] = event.message
    return out


def _text(event: ValidTelegram | InvalidTelegram, number: int) -> str:
    if isinstance(event, ValidTelegram):
        head = f"--- telegram {number}: valid, {len(event.raw)} bytes, CRC {event.crc} ---"
        return head + "\n" + event.raw.decode("ascii", "replace").replace("\r\n", "\n")
    return f"--- telegram {number}: INVALID, {len(event.raw)} bytes: {event.message} ---\n"


def monitor(
    read: Callable[[int], bytes],
    out: TextIO,
    *,
    as_json: bool = False,
    max_size: int | None = None,
    on_telegram: Callable[[ValidTelegram | InvalidTelegram], None] | None = None,
) -> MonitorSummary:
    """Read until ``read`` returns ``b""`` (end of input), reporting each telegram to ``out``.

    ``read(n)`` returns up to n bytes (a serial port's ``read``, ``stdin.buffer.read1``).
    """
    reader = TelegramReader() if max_size is None else TelegramReader(max_size)
    summary = MonitorSummary()
    while True:
        data = read(CHUNK)
        if not data:
            reader.receive_eof()
        else:
            reader.receive_data(data)
        for event in reader.events_received():
            if isinstance(event, Garbage):
                summary.noise_bytes += event.size
                continue
            if isinstance(event, ValidTelegram):
                summary.valid += 1
            else:
                summary.invalid += 1
                summary.reasons[event.reason.value] += 1
            number = summary.valid + summary.invalid
            out.write(json.dumps(report(event)) + "\n" if as_json else _text(event, number))
            out.flush()
            if on_telegram is not None:
                on_telegram(event)
        if not data:
            return summary
