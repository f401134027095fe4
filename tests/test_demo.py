"""``x1p1 demo``: the whole chain starts, telegrams arrive valid, and it all stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "x1p1.cli", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _port(output: str) -> int:
    match = re.search(r"gateway on https://127\.0\.0\.1:(\d+)", output)
    assert match, output
    return int(match.group(1))


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_demo_relays_valid_telegrams_and_stops(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--telegrams", "3")
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert len(re.findall(r"CRC [0-9A-F]{4} ok", out)) == 3, out
    assert "x1p1 demo: 3 valid telegrams, 0 invalid; everything stopped" in out
    assert _closed(_port(out))
    assert list(tmp_path.iterdir()) == []  # the temporary state is gone


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    proc = _demo(tmp_path)
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while sum("ok  import" in line for line in seen) < 2:
        assert time.monotonic() < deadline, "".join(seen)
        line = proc.stdout.readline()
        assert line, "".join(seen)
        seen.append(line)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert "everything stopped" in out and "Traceback" not in out
    assert _closed(_port(out))
    assert list(tmp_path.iterdir()) == []
