"""The converter's side of ``/api/realtime`` (X1 §7.2, §8.2; docs/x1-api.md, WebSocket).

Tolerant where we read (architecture.md, habit 10): a gateway of another vendor may add
keys, write five-group codes, send numbers as strings or times without an offset. This
module takes what the telegram builder (:mod:`x1p1.x1.realtime_telegram`) needs and ignores the
rest; it never reuses the gateway's strict parsers.

- :func:`parse_meters` reads ``GET /api/meters``: which meters the token may read (§8.1).
- :func:`subscription` says what to ask for every second: every realtime object of the
  electricity meter's granted profiles, E-REALTIME and PQ-REALTIME (§6.1, Tables 4 and 5
  and the power-quality table); :func:`gas_subscription` what to ask of each gas meter
  (G-REALTIME, Table 6) on a subscription of its own, paced by
  :class:`~x1p1.x1.gas_feed.GasFeed`.
- :meth:`RealtimeMessage.parse` reads one message ``{"equipment_id", "t", "values"}``.
  The power-failure log ``1-0:99.97.0.255`` is taken in either form a gateway writes: the
  P1 notation ``(n)(0-0:96.7.19)(TST)(v*s)…`` or a list ``[{"t", "duration_s"}, …]``.
- :class:`RealtimeAssembler` joins the messages of one second: each electricity message
  gives one :class:`~x1p1.x1.realtime_telegram.RealtimeReadings`, with the latest reading of every
  gas meter (a gas value carries its own 5-minute time, docs/x1-api.md).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from x1p1.exceptions import BadRequest, GatewayError, TelegramParseError
from x1p1.p1.dsmr5 import MAX_FAILURE_LOG, PowerFailure
from x1p1.p1.values import parse_timestamp, split_unit
from x1p1.x1.obis import BY_CODE, OBJECTS, Meter, ObisObject, P1Kind, lookup
from x1p1.x1.profiles import BUILD_PROFILES, REALTIME_PROFILES, Profile
from x1p1.x1.readers import read_time
from x1p1.x1.realtime_telegram import GasReadings, RealtimeReadings, Value

__all__ = [
    "BUILD_PROFILES",
    "FAILURE_LOG",
    "MAX_MESSAGE",
    "MAX_STRING",
    "REALTIME_PROFILES",
    "MeterInfo",
    "RealtimeAssembler",
    "RealtimeMessage",
    "Subscription",
    "gas_subscription",
    "parse_failure_log",
    "parse_meters",
    "parse_time",
    "read_json",
    "realtime_codes",
    "subscription",
    "utc_second",
]
MAX_MESSAGE = 64 * 1024
"""Bytes of one realtime message the converter reads; a longer one is refused whole."""
MAX_STRING = 256
"""Characters of a string value kept; a longer one is left out."""
FAILURE_LOG = "1-0:99.97.0.255"


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """One meter of ``GET /api/meters`` (§8.1): ``channel`` 0 for electricity."""

    equipment_id: str
    meter: Meter
    channel: int


def parse_meters(body: object) -> tuple[MeterInfo, ...]:
    """The meters of a ``GET /api/meters`` answer; entries that cannot be read are skipped.

    A gas meter without a channel is taken to be on channel 1 (P1 §7.3's usual place)."""
    entries = body.get("meters") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise GatewayError("the gateway's list of meters is malformed: meters: missing")
    out: list[MeterInfo] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        equipment_id = entry.get("equipment_id")
        kind = str(entry.get("type", "")).lower()
        channel = entry.get("channel")
        if not isinstance(equipment_id, str) or not equipment_id or len(equipment_id) > 96:
            continue
        if kind == Meter.ELECTRICITY.value:
            out.append(MeterInfo(equipment_id, Meter.ELECTRICITY, 0))
        elif kind == Meter.GAS.value:
            number = channel if isinstance(channel, int) and not isinstance(channel, bool) else 1
            if 1 <= number <= 4:
                out.append(MeterInfo(equipment_id, Meter.GAS, number))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Subscription:
    """What to ask ``/api/realtime`` for: meters (gas first) and six-group codes."""

    equipment_ids: tuple[str, ...]
    codes: tuple[str, ...]

    def query(self, interval: int = 1) -> str:
        """The query string (docs/x1-api.md, WebSocket), commas left readable."""
        return (
            f"equipment_id={','.join(self.equipment_ids)}"
            f"&obis={','.join(self.codes)}&interval={interval}"
        )


def realtime_codes(obj: ObisObject, granted: frozenset[Profile]) -> bool:
    """Whether a granted realtime profile reads this object (§6.1)."""
    return bool(obj.profiles & granted & REALTIME_PROFILES)


def subscription(granted: Iterable[Profile], meters: Iterable[MeterInfo]) -> Subscription | None:
    """Every realtime object of the electricity meter the grant reads; None when no
    telegram can be built (neither E-REALTIME nor PQ-REALTIME, or no electricity meter).

    The gas meters have a subscription of their own (:func:`gas_subscription`): their
    readings change every 5 minutes (P1 §7.3), so asking for them every second would
    cost a message a second that says nothing new (docs/performance.md)."""
    profiles = frozenset(granted)
    electricity = next((m for m in meters if m.meter is Meter.ELECTRICITY), None)
    if electricity is None or not profiles & BUILD_PROFILES:
        return None
    codes = tuple(
        obj.code
        for obj in OBJECTS
        if obj.meter is Meter.ELECTRICITY and realtime_codes(obj, profiles)
    )
    return Subscription((electricity.equipment_id,), codes)


def gas_subscription(
    granted: Iterable[Profile], meters: Iterable[MeterInfo]
) -> Subscription | None:
    """Every G-REALTIME object of each gas meter the grant reads, one meter per M-Bus
    channel (P1 §7.3: the first listed); None without G-REALTIME, without a gas meter, or
    when no telegram is built at all (:func:`subscription` is None)."""
    profiles = frozenset(granted)
    listed = list(meters)
    if Profile.G_REALTIME not in profiles or subscription(profiles, listed) is None:
        return None
    by_channel: dict[int, MeterInfo] = {}
    for meter in listed:
        if meter.meter is Meter.GAS:
            by_channel.setdefault(meter.channel, meter)
    ids: list[str] = []
    codes: list[str] = []
    for gas in sorted(by_channel.values(), key=lambda m: m.channel):
        wanted = [
            obj.for_channel(gas.channel)
            for obj in OBJECTS
            if obj.meter is Meter.GAS and realtime_codes(obj, profiles)
        ]
        if wanted and gas.equipment_id not in ids:
            ids.append(gas.equipment_id)
            codes += wanted
    return Subscription(tuple(ids), tuple(codes)) if ids else None


def parse_time(value: object) -> datetime | None:
    """An X1 time in whole seconds, read tolerantly by :func:`x1p1.x1.readers.read_time`
    (RFC 3339 with or without fraction or offset, or Unix seconds); None if unreadable."""
    moment = read_time(value)
    return None if moment is None else moment.replace(microsecond=0)


def read_json(data: str | bytes) -> object:
    """One realtime message's JSON, or :class:`GatewayError` in one sentence."""
    if len(data) > MAX_MESSAGE:
        raise GatewayError(f"a realtime message is longer than {MAX_MESSAGE} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise GatewayError("a realtime message is not JSON") from None


_LOG_MEMO: list[object] = [None, None]
"""The last power-failure log read in list form, and what it gave: the log changes only
at a long power failure (P1 §7.1), yet comes in every electricity message; reading its
ten times anew each second was a third of reading the whole message."""


def parse_failure_log(value: object) -> tuple[PowerFailure, ...] | None:
    """The power-failure event log (P1 §7.1, X1 §6.2.4) in either form, newest first as
    given, at most ten entries; None when it cannot be read (then it is left out)."""
    if isinstance(value, list):
        memo = _LOG_MEMO
        if memo[0] is not None and value == memo[0]:
            return memo[1]  # type: ignore[return-value]
        parsed = _failure_log_list(value)
        # a log with a duration of 0 or 1 is not remembered: JSON's false and true equal
        # them, yet are no durations
        if not any(isinstance(e, dict) and e.get("duration_s") in (0, 1) for e in value):
            memo[0], memo[1] = value, parsed
        return parsed
    if isinstance(value, str):
        return _failure_log_text(value)
    return None


def _failure_log_list(value: list[object]) -> tuple[PowerFailure, ...] | None:
    """``[{"t", "duration_s"}, …]``."""
    entries = []
    for item in value:
        if not isinstance(item, dict):
            return None
        end = parse_time(item.get("t"))
        duration = item.get("duration_s")
        if isinstance(duration, str) and duration.strip().isdigit():
            duration = int(duration.strip())
        if end is None or isinstance(duration, bool) or not isinstance(duration, int | float):
            return None
        if not math.isfinite(duration) or duration < 0:
            return None
        entries.append(PowerFailure(end, int(duration)))
    return tuple(entries[:MAX_FAILURE_LOG])


@functools.lru_cache(maxsize=16)
def _failure_log_text(text: str) -> tuple[PowerFailure, ...] | None:
    """``(n)(0-0:96.7.19)(TST)(v*s)…``, with or without the code ``1-0:99.97.0`` before it."""
    text = text.strip()
    if text.startswith("1-0:99.97.0"):
        text = text[text.find("(") :]
    if not (text.startswith("(") and text.endswith(")")) or len(text) > 1024:
        return None
    groups = text[1:-1].split(")(")
    if len(groups) < 2 or not groups[0].isdigit() or len(groups) % 2:
        return None
    entries = []
    for at, duration in zip(groups[2::2], groups[3::2], strict=True):
        number, unit = split_unit(duration)
        if unit not in (None, "s") or not number.isdigit():
            return None
        try:
            end = parse_timestamp(at)
        except TelegramParseError:
            return None
        entries.append(PowerFailure(end, int(number)))
    return tuple(entries[:MAX_FAILURE_LOG])


LOG, NUMBER, STRING = 0, 1, 2
"""How a value is read (:func:`read_value`): the power-failure log, a number, a string."""


def read_value(kind: int, raw: object) -> Value | None:
    """One value as the builder needs it (``kind`` from :func:`resolve`), or None to leave
    the object out."""
    cls = type(raw)
    if kind == NUMBER:
        if cls is int or (cls is float and math.isfinite(raw)):  # type: ignore[arg-type]
            return raw  # type: ignore[return-value]
        if isinstance(raw, str):
            try:
                number = float(raw.strip())
            except ValueError:
                return None
            return number if math.isfinite(number) else None
        return None
    if kind == LOG:
        return parse_failure_log(raw)
    if cls is int or (cls is float and math.isfinite(raw)):  # type: ignore[arg-type]
        raw = str(raw)
    if not isinstance(raw, str) or len(raw) > MAX_STRING:
        return None
    return raw


@dataclass(frozen=True, slots=True)
class RealtimeMessage:
    """One realtime message: the meter, its time, and the values the converter can use,
    by six-group code (gas codes with their channel)."""

    equipment_id: str
    t: datetime
    values: Mapping[str, Value]

    @classmethod
    def parse(cls, data: str | bytes) -> RealtimeMessage:
        """Read one message tolerantly; :class:`GatewayError` in one sentence when it holds
        no meter, no time or no values. Unknown keys, codes and unusable values are
        ignored (the object is then absent from the telegram)."""
        return cls.read(read_json(data))

    @classmethod
    def read(cls, body: object) -> RealtimeMessage:
        """:meth:`parse` of a message already read as JSON by :func:`read_json`."""
        if not isinstance(body, dict):
            raise GatewayError("a realtime message is not a JSON object")
        equipment_id = body.get("equipment_id")
        if isinstance(equipment_id, int | float) and not isinstance(equipment_id, bool):
            equipment_id = str(equipment_id)
        if not isinstance(equipment_id, str) or not equipment_id:
            raise GatewayError("a realtime message names no equipment_id")
        t = parse_time(body.get("t"))
        if t is None:
            raise GatewayError("a realtime message has no usable time t")
        raw_values = body.get("values")
        if not isinstance(raw_values, dict):
            raise GatewayError("a realtime message has no values object")
        values: dict[str, Value] = {}
        for code, raw in raw_values.items():
            resolved = resolve(code)
            if resolved is None:
                continue
            six, kind = resolved
            if kind == NUMBER and type(raw) is float and math.isfinite(raw):
                value: Value | None = raw  # the common case, without a call
            else:
                value = read_value(kind, raw)
            if value is not None and six not in values:
                values[six] = value
        return cls(equipment_id, t, values)


@functools.lru_cache(maxsize=256)
def resolve(code: str) -> tuple[str, int] | None:
    """A code of a message in the registry (its six-group code, how its value is read),
    or None; remembered, since a gateway sends the same few dozen codes every second (and
    the cache is bounded against one that does not)."""
    try:
        ref = lookup(code)
    except BadRequest:
        return None
    obj = ref.obj
    if obj.p1 is not None and obj.p1.kind is P1Kind.LOG:
        return ref.code, LOG
    return ref.code, NUMBER if obj.numeric else STRING


class RealtimeAssembler:
    """Joins realtime messages into readings: one per electricity message (sans-I/O).

    ``meters`` are those of the subscription. A message of a meter not among them is
    ignored; so is a message older than the last one of the same meter (latest wins)."""

    def __init__(self, meters: Iterable[MeterInfo]) -> None:
        self._meters = {m.equipment_id: m for m in meters}
        self._gas: dict[str, GasReadings] = {}
        self.gas: tuple[GasReadings, ...] = ()
        """The latest reading of each gas meter, by channel; a new tuple when one changes."""
        self._last: dict[str, str] = {}
        self.ignored = 0

    @property
    def has_gas(self) -> bool:
        """Whether a gas reading is held."""
        return bool(self._gas)

    def fresh(self, equipment_id: str, second: str) -> bool:
        """Whether a message of this meter at ``second`` (``YYYY-MM-DDTHH:MM:SS`` in UTC,
        see :func:`utc_second`) is to be used: not older than the last one used."""
        last = self._last.get(equipment_id)
        if last is not None and second < last:
            self.ignored += 1
            return False
        self._last[equipment_id] = second
        return True

    def receive(self, message: RealtimeMessage) -> RealtimeReadings | None:
        """Take one message; the readings to build a telegram from, or None."""
        meter = self._meters.get(message.equipment_id)
        if meter is None:
            self.ignored += 1
            return None
        if not self.fresh(message.equipment_id, utc_second(message.t)):
            return None
        if meter.meter is Meter.GAS:
            values = {c: v for c, v in message.values.items() if _channel_of(c) == meter.channel}
            self._gas[meter.equipment_id] = GasReadings(meter.channel, message.t, values)
            self.gas = tuple(sorted(self._gas.values(), key=lambda g: g.channel))
            return None
        values = {c: v for c, v in message.values.items() if c in BY_CODE}
        return RealtimeReadings(message.t, values, self.gas)


def utc_second(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of an aware time in UTC: such texts sort as their times do."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")[:19]


def _channel_of(code: str) -> int | None:
    """The M-Bus channel of a gas code (``0-2:24.2.1.255`` → 2), else None."""
    head = code.split(":", 1)[0]
    return int(head[2:]) if head.startswith("0-") and head[2:].isdigit() else None
