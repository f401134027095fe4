"""The comlog under a flood from one host, over simulated days (docs/reliability.md).

One host (127.0.0.2) asks for a token, has its older request replaced, asks to log in
and sends a wrong token, three times a minute each, for ``--hours`` simulated hours; the
gateway's hourly prune runs (:meth:`~x1p1.gateway.comlog.Comlog.prune`). Prints the rows
the comlog held after the first hour, at its peak (just before a prune), at the end, and
the file's size. Time is passed in: it runs in seconds whatever ``--hours`` is. Asserts
nothing.

    .venv/bin/python bench/bench_comlog_flood.py [--hours H]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from x1p1.gateway.comlog import Comlog, ComlogEvent

ATTACKER = "127.0.0.2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=720, help="simulated hours (720: 30 days)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # the figures are rows and bytes, not fsyncs
        log = Comlog(conn)
        log.init_schema()
        start = datetime(2026, 5, 9, 12, tzinfo=UTC)
        began = time.perf_counter()
        events = 0
        before_prune: list[int] = []
        for minute in range(args.hours * 60):
            now = start + timedelta(minutes=minute)
            for second in (1, 20, 40):
                at = now + timedelta(seconds=second)
                log.add(at, ComlogEvent.TOKEN_REQUESTED, "evil", address=ATTACKER)
                log.add(at, ComlogEvent.TOKEN_EXPIRED, "evil", address=ATTACKER)
                log.add(at, ComlogEvent.LOGIN_REQUESTED, "portal: evil", address=ATTACKER)
                log.note_failure(at, ATTACKER)
                events += 4
            if minute % 60 == 59:
                log.flush(now)
                before_prune.append(conn.execute("SELECT count(*) FROM comlog").fetchone()[0])
                log.prune(now + timedelta(seconds=59))
        log.flush()
        rows = conn.execute("SELECT count(*) FROM comlog").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = path.stat().st_size
        conn.close()
    print(
        f"{args.hours} simulated hours, {events} events from one host "
        f"({time.perf_counter() - began:.1f} s): {before_prune[0]} rows after the first "
        f"hour, at most {max(before_prune)} before a prune, {rows} at the end; "
        f"gateway.db {size // 1024} KiB"
    )


if __name__ == "__main__":
    main()
