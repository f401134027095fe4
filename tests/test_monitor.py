"""``x1p1 monitor``: reports per telegram, JSON fields, summary, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import serial
from click.testing import CliRunner

from tests.p1_corpus import corpus
from x1p1.cli import main

CORPUS = corpus()


def _mixed() -> tuple[bytes, list[tuple[bool, int]]]:
    stream, expected = b"", []
    for i, name in enumerate(sorted(CORPUS)):
        raw = CORPUS[name]
        if i % 3 == 1:
            bad = bytearray(raw)
            bad[len(bad) // 2] ^= 0x04
            raw = bytes(bad)
        stream += b"\x00noise" + raw
        expected.append((i % 3 != 1, len(raw)))
    return stream, expected


def test_json_reports_each_telegram_valid_or_not() -> None:
    stream, expected = _mixed()
    result = CliRunner().invoke(main, ["monitor", "-", "--json"], input=stream)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["valid"], r["size"]) for r in lines] == expected
    for report in lines:
        assert set(report) >= {"valid", "size", "crc", "header", "objects"}
        if not report["valid"]:
            assert report["reason"] == "crc-mismatch" and "CRC mismatch" in report["error"]
    first = lines[0]
    assert first["objects"]["1-3:0.2.8"] == "50"
    invalid = sum(1 for ok, _ in expected if not ok)
    assert f"{len(expected)} telegrams, {len(expected) - invalid} valid" in result.stderr


def test_text_output_prints_the_telegram() -> None:
    raw = CORPUS["spec-example"]
    result = CliRunner().invoke(main, ["monitor", "-"], input=raw + raw[:100])
    assert result.exit_code == 0
    assert "telegram 1: valid, " in result.stdout
    assert "1-0:1.8.1(123456.789*kWh)" in result.stdout
    assert "telegram 2: INVALID" in result.stdout
    assert "1 truncated" in result.stderr


def test_monitor_reads_a_pty(tmp_path: Path) -> None:
    controller, device = os.openpty()
    name = os.ttyname(device)
    raw = CORPUS["three-phase"]
    port = serial.Serial(name, 115200, timeout=0.2)
    out: list[str] = []

    def feed() -> None:
        os.write(controller, raw * 2)

    writer = threading.Thread(target=feed)
    writer.start()
    writer.join()
    from x1p1.converter.monitor import monitor

    chunks = iter([port.read(len(raw) * 2), b""])

    class Sink:
        def write(self, text: str) -> None:
            out.append(text)

        def flush(self) -> None:
            pass

    summary = monitor(lambda n: next(chunks), Sink(), as_json=True)  # type: ignore[arg-type]
    port.close()
    os.close(controller)
    os.close(device)
    assert summary.valid == 2 and summary.invalid == 0


def test_bad_port_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["monitor", "/dev/does-not-exist-x1p1"])
    assert result.exit_code == 1
    assert "cannot open /dev/does-not-exist-x1p1" in result.output


def test_100_mb_of_random_bytes_in_bounded_memory(tmp_path: Path) -> None:
    """Noise never grows the monitor: peak RSS stays flat while 100 MB stream through."""
    errors = (tmp_path / "stderr").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "x1p1.cli", "monitor", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    assert proc.stdin is not None
    block = os.urandom(1 << 20)
    peaks = []
    for i in range(100):
        proc.stdin.write(block[i:] + block[:i])
        if i in (10, 99):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peaks.append(
                int(
                    next(
                        line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")
                    )
                )
            )
    proc.stdin.close()
    assert proc.wait(timeout=300) == 0
    errors.close()
    assert b"telegrams" in (tmp_path / "stderr").read_bytes()
    assert peaks[1] - peaks[0] < 8 * 1024, peaks  # kB: no growth with input size
    assert peaks[1] < 120 * 1024, peaks
