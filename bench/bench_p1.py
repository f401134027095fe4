"""Benchmark: x1p1's P1 framing + CRC and parse against dsmr_parser, side by side in one run.

Run: .venv/bin/python bench/bench_p1.py [--seconds S]

Targets: framing + CRC check of a 1 KB telegram at least 50x cheaper than
dsmr_parser's ``TelegramParser.parse`` (V5, CRC on); a full parse into objects at least
3x cheaper than dsmr_parser's; CRC of 1 KB under 10 µs; the pure-Python CRC fallback
(no crcmod, p1.md) of 1 KB under 1 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsmr_parser import telegram_specifications  # noqa: E402
from dsmr_parser.parsers import TelegramParser  # noqa: E402

from x1p1.p1 import Telegram, TelegramReader, ValidTelegram, crc16  # noqa: E402
from x1p1.p1.crc import CRC_IMPLEMENTATION, crc16_table  # noqa: E402
from x1p1.p1.dsmr5 import build, sample_readings  # noqa: E402


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Best-of-5 mean seconds per call, each round about ``seconds``/5 long."""
    n = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > 0.05:
            break
        n *= 2
    rounds = []
    for _ in range(5):
        reps = max(1, int(n * (seconds / 5) / 0.05))
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        rounds.append((time.perf_counter() - start) / reps)
    return min(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    readings = replace(sample_readings(0), text_message="x1p1 bench " * 6)
    raw = build(readings).serialize()
    text = raw.decode("ascii")
    kb = raw[:1024].ljust(1024, b"0")
    reader = TelegramReader()
    dsmr = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)

    def frame() -> None:
        (event,) = reader.feed(raw)
        assert isinstance(event, ValidTelegram)

    t_frame = per_call(frame, args.seconds)
    t_parse = per_call(lambda: Telegram.parse(raw), args.seconds)
    t_dsmr = per_call(lambda: dsmr.parse(text), args.seconds)
    t_crc = per_call(lambda: crc16(kb), args.seconds)
    t_table = per_call(lambda: crc16_table(kb), args.seconds)

    print(f"telegram size                    {len(raw)} bytes")
    print(f"dsmr_parser parse (V5, CRC on)   {t_dsmr * 1e6:9.1f} µs")
    print(
        f"x1p1 framing + CRC check         {t_frame * 1e6:9.1f} µs   "
        f"{t_dsmr / t_frame:6.1f}x cheaper (target >= 50x)"
    )
    print(
        f"x1p1 full parse (CRC on)         {t_parse * 1e6:9.1f} µs   "
        f"{t_dsmr / t_parse:6.1f}x cheaper (target >= 3x)"
    )
    print(
        f"x1p1 CRC-16 of 1 KB              {t_crc * 1e6:9.2f} µs   (target < 10 µs; "
        f"{CRC_IMPLEMENTATION})"
    )
    print(
        f"pure-Python CRC-16 of 1 KB       {t_table * 1e6:9.2f} µs   (the fallback without "
        "crcmod; target < 1000 µs)"
    )


if __name__ == "__main__":
    main()
