"""Build a DSMR 5.0.2 telegram from readings: every object of the standard list (P1 §7).

:class:`Readings` holds the values a meter has at one moment; :func:`build` writes them in
the formats of P1 §6.4 and §7 and in the order of the example telegram (P1 §6.13), and
appends the CRC. The embedded gateway's simulated meter, ``x1p1 monitor``'s sample stream
and the tests all build their telegrams here, so there is one place that knows the formats.

Shapes real meters send are covered: one or three phases, M-Bus devices on any channel
(gas on channel 2 behind an empty dummy on channel 1), a power-failure log of up to ten
entries, a text message of up to 1024 octets (2048 hex characters), empty values.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from x1p1.p1.telegram import CosemObject, Telegram
from x1p1.p1.values import fixed, hex_string, timestamp

DEFAULT_HEADER = "XPP5X1P1-GATEWAY"
"""``/XXX5Ident``: three letters of a manufacturer, ``5`` (115200 baud), identification."""
MAX_FAILURE_LOG = 10
"""Entries of the power-failure event log a telegram holds (P1 §7.1)."""


@dataclass(frozen=True, slots=True)
class MbusDevice:
    """An M-Bus device on ``channel`` 1–4 (P1 §7.3). ``value`` None writes ``()``."""

    channel: int
    device_type: int | None = 3  # 3 = gas
    equipment_id: str = ""
    captured: datetime | None = None
    value: float | None = None
    unit: str = "m3"


@dataclass(frozen=True, slots=True)
class PowerFailure:
    """One entry of the power-failure event log: when it ended and how long it lasted."""

    end: datetime
    duration_s: int


@dataclass(frozen=True, slots=True)
class Readings:
    """What a meter reports at one moment (P1 §7.1–§7.3). Per-phase tuples have 1 or 3."""

    timestamp: datetime
    equipment_id: str
    delivered: tuple[float, float]
    """kWh delivered to the client, tariff 1 and 2 (1-0:1.8.1, 1-0:1.8.2)."""
    returned: tuple[float, float]
    """kWh delivered by the client, tariff 1 and 2 (1-0:2.8.1, 1-0:2.8.2)."""
    tariff: int
    power_delivered: float
    """kW (1-0:1.7.0)."""
    power_returned: float
    voltages: tuple[float, ...]
    currents: tuple[float, ...]
    powers_delivered: tuple[float, ...]
    powers_returned: tuple[float, ...]
    power_failures: int = 0
    long_power_failures: int = 0
    failure_log: tuple[PowerFailure, ...] = ()
    sags: tuple[int, ...] = (0, 0, 0)
    swells: tuple[int, ...] = (0, 0, 0)
    text_message: str = ""
    mbus: tuple[MbusDevice, ...] = field(default_factory=tuple)
    version: str = "50"


_PHASE = ("32", "52", "72")  # value group C of L1, L2, L3 voltages (P1 §7.1)
_CURRENT = ("31", "51", "71")
_POWER_IN = ("21", "41", "61")
_POWER_OUT = ("22", "42", "62")


def objects(r: Readings) -> list[CosemObject]:
    """The data lines of a telegram with these readings, in the order of P1 §6.13."""
    out = [
        CosemObject("1-3:0.2.8", (r.version,)),
        CosemObject("0-0:1.0.0", (timestamp(r.timestamp),)),
        CosemObject("0-0:96.1.1", (hex_string(r.equipment_id),)),
        CosemObject("1-0:1.8.1", (fixed(r.delivered[0], 6, 3, "kWh"),)),
        CosemObject("1-0:1.8.2", (fixed(r.delivered[1], 6, 3, "kWh"),)),
        CosemObject("1-0:2.8.1", (fixed(r.returned[0], 6, 3, "kWh"),)),
        CosemObject("1-0:2.8.2", (fixed(r.returned[1], 6, 3, "kWh"),)),
        CosemObject("0-0:96.14.0", (fixed(r.tariff, 4, 0),)),
        CosemObject("1-0:1.7.0", (fixed(r.power_delivered, 2, 3, "kW"),)),
        CosemObject("1-0:2.7.0", (fixed(r.power_returned, 2, 3, "kW"),)),
        CosemObject("0-0:96.7.21", (fixed(r.power_failures, 5, 0),)),
        CosemObject("0-0:96.7.9", (fixed(r.long_power_failures, 5, 0),)),
        CosemObject("1-0:99.97.0", failure_log_values(r.failure_log)),
        *_phased(_PHASE, "32.0", r.sags, 5, 0),
        *_phased(_PHASE, "36.0", r.swells, 5, 0),
        CosemObject("0-0:96.13.0", (hex_string(r.text_message),)),
        *_phased(_PHASE, "7.0", r.voltages, 3, 1, "V"),
        *_phased(_CURRENT, "7.0", r.currents, 3, 0, "A"),
        *_phased(_POWER_IN, "7.0", r.powers_delivered, 2, 3, "kW"),
        *_phased(_POWER_OUT, "7.0", r.powers_returned, 2, 3, "kW"),
    ]
    for dev in r.mbus:
        out += mbus_objects(dev)
    return out


def _phased(
    groups: tuple[str, ...],
    rest: str,
    values: tuple[float, ...],
    int_digits: int,
    decimals: int,
    unit: str | None = None,
) -> list[CosemObject]:
    """One line per phase: value group C from ``groups``, then ``rest`` (e.g. ``7.0``)."""
    return [
        CosemObject(f"1-0:{group}.{rest}", (fixed(value, int_digits, decimals, unit),))
        for group, value in zip(groups, values, strict=False)
    ]


def failure_log_values(log: tuple[PowerFailure, ...]) -> tuple[str, ...]:
    """``(n)(0-0:96.7.19)(TST)(duration*s)…``: the power-failure event log (P1 §7.1),
    at most :data:`MAX_FAILURE_LOG` entries; ``n`` counts the entries written."""
    kept = log[:MAX_FAILURE_LOG]
    values = [str(len(kept)), "0-0:96.7.19"]
    for entry in kept:
        values += [timestamp(entry.end), fixed(entry.duration_s, 10, 0, "s")]
    return tuple(values)


def mbus_objects(dev: MbusDevice) -> list[CosemObject]:
    """Device type, equipment id and the 5-minute value with its capture time (P1 §7.3)."""
    n = dev.channel
    kind = "" if dev.device_type is None else fixed(dev.device_type, 3, 0)
    captured = "" if dev.captured is None else timestamp(dev.captured)
    value = "" if dev.value is None else fixed(dev.value, 5, 3, dev.unit)
    return [
        CosemObject(f"0-{n}:24.1.0", (kind,)),
        CosemObject(f"0-{n}:96.1.0", (hex_string(dev.equipment_id),)),
        CosemObject(f"0-{n}:24.2.1", (captured, value) if dev.value is not None else ("",)),
    ]


def build(readings: Readings, header: str = DEFAULT_HEADER) -> Telegram:
    """The whole telegram for these readings, with its CRC."""
    return Telegram.build(header, objects(readings))


def sample_readings(
    seq: int = 0,
    *,
    start: datetime | None = None,
    phases: int = 3,
    seed: int = 1,
) -> Readings:
    """Plausible readings for second ``seq`` of a sample stream (tests, demos, benches)."""
    rng = random.Random(seed * 1_000_003 + seq)
    now = (start or datetime(2026, 1, 15, 12, 0, tzinfo=UTC)) + timedelta(seconds=seq)
    per_phase = tuple(round(0.2 + rng.random() * 1.5, 3) for _ in range(phases))
    volts = tuple(round(229.0 + rng.gauss(0, 1.5), 1) for _ in range(phases))
    gas_time = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5)
    return Readings(
        timestamp=now,
        equipment_id="E0044007312345617",
        delivered=(4321.123 + seq * 0.0004, 3210.456 + seq * 0.0003),
        returned=(123.789, 234.567),
        tariff=2,
        power_delivered=round(sum(per_phase), 3),
        power_returned=0.0,
        voltages=volts,
        currents=tuple(round(p * 1000 / v) for p, v in zip(per_phase, volts, strict=True)),
        powers_delivered=per_phase,
        powers_returned=(0.0,) * phases,
        power_failures=4,
        long_power_failures=2,
        failure_log=(PowerFailure(now - timedelta(days=3), 240),),
        sags=(2, 1, 0)[:phases],
        swells=(0, 3, 0)[:phases],
        mbus=(MbusDevice(1, 3, "G0012345678901234", gas_time, 1234.567 + seq * 0.0001),),
    )


def sample_stream(count: int | None = None, *, phases: int = 3, seed: int = 1) -> Iterator[bytes]:
    """Raw telegrams of a sample stream, one per simulated second."""
    seq = 0
    while count is None or seq < count:
        yield build(sample_readings(seq, phases=phases, seed=seed)).serialize()
        seq += 1
