"""From a realtime message's bytes to a DSMR 5.0.2 telegram's bytes, the converter's
path for every second (X1 §8.2, P1 §6.2; docs/realtime.md, docs/performance.md).

:meth:`RealtimeBuilder.receive` gives exactly the bytes that reading the message with
:meth:`~x1p1.x1.realtime.RealtimeMessage.parse`, joining it in
:class:`~x1p1.x1.realtime.RealtimeAssembler` and writing it with
:func:`~x1p1.x1.realtime_telegram.realtime_telegram` give (tests hold it to that, message
by message, for every dialect they know). It does less for the message a gateway sends
every second, because at one message a second each step runs on a cold processor cache
and costs several times what it costs in a loop:

- each spelling of a code the gateway uses is resolved once and remembered as the line
  of the telegram it fills (a bounded map), so a value goes straight from the message
  into its line, in P1 order, without an intermediate mapping;
- the Dutch hour and its S/W flag (P1 §6.4) are worked out once an hour: the Netherlands
  is a whole number of hours from UTC, so the minutes and seconds of the gateway's UTC
  time are the telegram's;
- a line whose value is the same number or string as the second before (a counter, a
  register, the equipment identifier) is the same line, and is not written anew;
- the gas lines are written once per gas reading, which changes every 5 minutes.

A message of any other shape (a time with an offset or a fraction, a meter that is not
the electricity meter, two spellings of one code) takes the general path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from x1p1.p1.values import timestamp
from x1p1.x1.obis import Meter
from x1p1.x1.realtime import (
    NUMBER,
    MeterInfo,
    RealtimeAssembler,
    RealtimeMessage,
    parse_time,
    read_json,
    read_value,
    resolve,
)
from x1p1.x1.realtime_telegram import (
    ELECTRICITY_ROWS,
    INFINITY,
    REALTIME_HEADER,
    GasReadings,
    Line,
    frame,
    gas_lines,
    head,
    line_text,
    realtime_telegram,
)

__all__ = ["MAX_SPELLINGS", "RealtimeBuilder"]

MAX_SPELLINGS = 256
"""Spellings of codes remembered; a gateway that sends ever new ones is read in full."""

_UTC_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:[0-5]\d:[0-5]\dZ")
"""The time every gateway we know writes: RFC 3339 in UTC, whole seconds."""

_Slot = tuple[int, int, bool, int, int, str, Line]
"""Where a spelling's value goes: its line's place in the telegram, how the value is read
(:func:`~x1p1.x1.realtime.resolve`), then the row of
:data:`~x1p1.x1.realtime_telegram.ELECTRICITY_ROWS`."""

_NOTHING = object()
"""Equal to no value: a line not written yet."""

_SLOT_OF: dict[str, int] = {row[0]: place for place, row in enumerate(ELECTRICITY_ROWS)}


class RealtimeBuilder:
    """The telegrams of one subscription's messages (sans-I/O; see the module).

    ``meters`` are those of the subscription; :attr:`assembler` holds the latest wins
    and the gas readings for both paths."""

    def __init__(self, meters: Iterable[MeterInfo], header: str = REALTIME_HEADER) -> None:
        listed = tuple(meters)
        self.assembler = RealtimeAssembler(listed)
        self._header = header
        self._head = head(header)
        electricity = next((m for m in listed if m.meter is Meter.ELECTRICITY), None)
        self._electricity = None if electricity is None else electricity.equipment_id
        self._slots: dict[str, _Slot | None] = {}
        self._seen: list[object] = [_NOTHING] * len(ELECTRICITY_ROWS)
        """The last number or string each line was written from, and the line:
        :attr:`_said`. Counters, registers and identifiers stay the same for seconds."""
        self._said = [""] * len(ELECTRICITY_ROWS)
        self._hour = ""
        self._hour_text = ""
        self._flag = ""
        self._gas: tuple[GasReadings, ...] = ()
        self._gas_text = ""

    def receive(self, data: str | bytes) -> bytes | None:
        """One message: the telegram it makes, or None (a gas reading, now held; or a
        message that is older or of a meter not subscribed to). :class:`GatewayError`
        in one sentence when the message cannot be read."""
        body = read_json(data)
        if type(body) is dict:
            values = body.get("values")
            t = body.get("t")
            if (
                type(values) is dict
                and type(t) is str
                and self._electricity is not None
                and body.get("equipment_id") == self._electricity
                and _UTC_SECOND.fullmatch(t)
                and self._to_hour(t[:13])
            ):
                if not self.assembler.fresh(self._electricity, t[:19]):
                    return None
                built = self._electricity_telegram(values, t)
                if built is not None:
                    return built
                # two spellings of one code: the general path decides which one counts
        readings = self.assembler.receive(RealtimeMessage.read(body))
        return None if readings is None else realtime_telegram(readings, self._header)

    def _to_hour(self, hour: str) -> bool:
        """Make ``hour`` (``YYYY-MM-DDTHH`` in UTC) the one whose Dutch time is known;
        False when it is not a real hour, or the Netherlands was not a whole number of
        hours from UTC then (before 1940)."""
        if hour == self._hour:
            return True
        moment = parse_time(f"{hour}:00:00Z")
        if moment is None:
            return False
        text = timestamp(moment)  # YYMMDDhhmmssX
        if text[8:12] != "0000":
            return False
        self._hour, self._hour_text, self._flag = hour, text[:8], text[12]
        return True

    def _electricity_telegram(self, values: dict[str, object], t: str) -> bytes | None:
        """The telegram of an electricity message in the common form; None when a code
        comes in two spellings (the general path then reads it)."""
        lines = [""] * len(ELECTRICITY_ROWS)
        taken = 0
        slots, seen, said = self._slots, self._seen, self._said
        for key, raw in values.items():
            try:
                slot = slots[key]
            except KeyError:
                slot = self._learn(key)
            if slot is None:
                continue
            place, kind, fixed, scale, modulus, template, line = slot
            bit = 1 << place
            if taken & bit:
                return None
            cls = type(raw)
            if raw == seen[place] and cls is type(seen[place]):
                taken |= bit  # the same value as the line's last one: the same line
                lines[place] = said[place]
                continue
            if fixed and (cls is float or cls is int) and kind == NUMBER:
                value: object = raw
            else:
                value = read_value(kind, raw)
                if value is None:
                    continue  # left out; another spelling may still say it
                if not (fixed and (type(value) is float or type(value) is int)):
                    text = line_text(line, value) or ""
                    value = None
            if value is not None:  # Line.number with its line around it, inlined: per second
                scaled = abs(value) * scale  # type: ignore[arg-type]
                if scaled < INFINITY:  # not NaN, nor beyond a float
                    units = round(scaled) % modulus
                    text = template % (units if scale == 1 else divmod(units, scale))
                else:
                    text = ""
            taken |= bit
            lines[place] = text
            if cls is float or cls is int or cls is str:
                seen[place], said[place] = raw, text
        gas = self.assembler.gas
        if gas is not self._gas:
            self._gas, self._gas_text = gas, gas_lines(gas)
        return frame(
            [
                self._head,
                self._hour_text,
                t[14:16],
                t[17:19],
                self._flag,
                ")\r\n",
                *lines,
                self._gas_text,
            ]
        )

    def _learn(self, key: str) -> _Slot | None:
        """Where this spelling's value goes (None: nowhere, the code is not one the
        telegram has); remembered, up to :data:`MAX_SPELLINGS` spellings."""
        resolved = resolve(key)
        slot: _Slot | None = None
        if resolved is not None:
            code, kind = resolved
            place = _SLOT_OF.get(code)
            if place is not None:
                _, fixed, scale, modulus, template, line = ELECTRICITY_ROWS[place]
                slot = (place, kind, fixed, scale, modulus, template, line)
        if len(self._slots) >= MAX_SPELLINGS:
            self._slots.clear()
        self._slots[key] = slot
        return slot
