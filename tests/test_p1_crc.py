"""The CRC-16 of P1 §6.2 in pure Python equals crcmod's C code, and the converter runs on
it when crcmod cannot be imported (x1p1/p1/crc.py; README, "Raspberry Pi")."""

from __future__ import annotations

import json
import subprocess
import sys

import crcmod.predefined
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.p1_corpus import corpus
from x1p1.p1 import crc as crc_module
from x1p1.p1.crc import crc16_table

CRCMOD = crcmod.predefined.mkPredefinedCrcFun("crc-16")

# Python with crcmod made unimportable, as on a machine where it was never installed.
WITHOUT_CRCMOD = "import sys; sys.modules['crcmod'] = None; "


def test_check_value() -> None:
    assert crc16_table(b"123456789") == 0xBB3D  # CRC-16/ARC's check value
    assert crc16_table(b"") == 0


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=2048))
def test_table_equals_crcmod(data: bytes) -> None:
    assert crc16_table(data) == CRCMOD(data)


def test_table_equals_crcmod_on_every_corpus_telegram() -> None:
    for raw in corpus().values():
        body = raw[: raw.rindex(b"!") + 1]
        assert crc16_table(body) == CRCMOD(body)


def test_crcmod_runs_where_it_is_installed() -> None:
    assert crc_module.CRC_IMPLEMENTATION == "crcmod (C)"
    assert crc_module.crc16 is not crc16_table


def _run(code: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_CRCMOD + code],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_without_crcmod_the_table_runs() -> None:
    result = _run(
        "from x1p1.p1 import crc; "
        "print(crc.CRC_IMPLEMENTATION, crc.crc16 is crc.crc16_table, hex(crc.crc16(b'123456789')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [
        "pure",
        "Python",
        "(crcmod",
        "not",
        "installed)",
        "True",
        "0xbb3d",
    ]


@pytest.mark.parametrize("with_crcmod", [True, False])
def test_monitor_says_which_crc_runs_and_checks_a_capture(with_crcmod: bool) -> None:
    telegrams = list(corpus().values())
    bad = bytearray(telegrams[0])
    bad[len(bad) // 2] ^= 0x01
    stream = b"".join(telegrams) + bytes(bad)
    code = "from x1p1.cli import main; main(['monitor', '-', '--json'])"
    if with_crcmod:
        result = subprocess.run(
            [sys.executable, "-c", code], input=stream, capture_output=True, timeout=60
        )
    else:
        result = _run(code, stream)
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["valid"] for r in reports] == [True] * len(telegrams) + [False]
    first = result.stderr.decode().splitlines()[0]
    expected = "crcmod (C)" if with_crcmod else "pure Python (crcmod not installed)"
    assert first == f"x1p1 monitor: checking CRC-16 with {expected}"
