"""Telegrams shaped like real meters, for the P1 core's tests (p1.md, "Real meters differ").

Every one is built with the project's builder or written out literally, and each has the
CRC its content has, so a test can split, glue and corrupt them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from x1p1.p1 import crc16_hex
from x1p1.p1.dsmr5 import MbusDevice, PowerFailure, build, sample_readings

_T0 = datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC)  # two seconds before DST starts in NL

SPEC_EXAMPLE_BODY = (
    "/ISk5\\2MT382-1000\r\n\r\n"
    "1-3:0.2.8(50)\r\n0-0:1.0.0(101209113020W)\r\n"
    "0-0:96.1.1(4B384547303034303436333935353037)\r\n"
    "1-0:1.8.1(123456.789*kWh)\r\n1-0:1.8.2(123456.789*kWh)\r\n"
    "1-0:2.8.1(123456.789*kWh)\r\n1-0:2.8.2(123456.789*kWh)\r\n"
    "0-0:96.14.0(0002)\r\n1-0:1.7.0(01.193*kW)\r\n1-0:2.7.0(00.000*kW)\r\n"
    "0-0:96.7.21(00004)\r\n0-0:96.7.9(00002)\r\n"
    "1-0:99.97.0(2)(0-0:96.7.19)(101208152415W)(0000000240*s)(101208151004W)(0000000301*s)\r\n"
    "1-0:32.32.0(00002)\r\n1-0:52.32.0(00001)\r\n1-0:72.32.0(00000)\r\n"
    "1-0:32.36.0(00000)\r\n1-0:52.36.0(00003)\r\n1-0:72.36.0(00000)\r\n"
    "0-0:96.13.0(" + "303132333435363738393A3B3C3D3E3F" * 5 + ")\r\n"
    "1-0:32.7.0(220.1*V)\r\n1-0:52.7.0(220.2*V)\r\n1-0:72.7.0(220.3*V)\r\n"
    "1-0:31.7.0(001*A)\r\n1-0:51.7.0(002*A)\r\n1-0:71.7.0(003*A)\r\n"
    "1-0:21.7.0(01.111*kW)\r\n1-0:41.7.0(02.222*kW)\r\n1-0:61.7.0(03.333*kW)\r\n"
    "1-0:22.7.0(04.444*kW)\r\n1-0:42.7.0(05.555*kW)\r\n1-0:62.7.0(06.666*kW)\r\n"
    "0-1:24.1.0(003)\r\n0-1:96.1.0(3232323241424344313233343536373839)\r\n"
    "0-1:24.2.1(101209112500W)(12785.123*m3)\r\n!"
).encode("ascii")
SPEC_EXAMPLE = SPEC_EXAMPLE_BODY + crc16_hex(SPEC_EXAMPLE_BODY).encode() + b"\r\n"
"""The example of P1 §6.13 with the CRC its content has (the standard prints EF2F, which
does not match its own text; the content's CRC is E47C)."""

# An old meter's unpadded CRC: a value below 0x1000 written with fewer than four digits.
_UNPADDED_BODY = b"/KFM5KAIFA-METER\r\n\r\n1-0:1.8.1(000001.000*kWh)\r\n!"


def _unpadded() -> bytes:
    for n in range(10000):
        body = _UNPADDED_BODY.replace(b"000001.000", f"{n:06d}.000".encode())
        crc = crc16_hex(body)
        if crc.startswith("0"):
            return body + crc.lstrip("0").encode() + b"\r\n"
    raise AssertionError("no unpadded CRC found")


def corpus() -> dict[str, bytes]:
    """Name → raw telegram."""
    base = sample_readings(0, start=_T0)
    gas_time = _T0 - timedelta(minutes=4, seconds=58)
    shapes = {
        "three-phase": base,
        "one-phase": sample_readings(0, start=_T0, phases=1),
        "gas-channel-2-dummy-1": replace(
            base,
            mbus=(
                MbusDevice(1, None, "", None, None),
                MbusDevice(2, 3, "G0099887766554433", gas_time, 8765.432),
            ),
        ),
        "failure-log-10": replace(
            base,
            power_failures=55,
            long_power_failures=10,
            failure_log=tuple(
                PowerFailure(_T0 - timedelta(days=i + 1), 30 * (i + 1)) for i in range(10)
            ),
        ),
        "text-2048": replace(base, text_message="ABCDEFGHIJKLMNOP" * 64),
        "no-mbus": replace(base, mbus=()),
    }
    out = {name: build(r).serialize() for name, r in shapes.items()}
    out["dst-switch"] = build(sample_readings(3, start=_T0)).serialize()
    out["spec-example"] = SPEC_EXAMPLE
    out["empty-values"] = _with_crc(
        b"/XMX5LGF0000000000\r\n\r\n1-3:0.2.8(50)\r\n0-0:96.13.0()\r\n0-1:24.2.1()\r\n!"
    )
    out["unpadded-crc"] = _unpadded()
    return out


def _with_crc(body: bytes) -> bytes:
    return body + crc16_hex(body).encode() + b"\r\n"
