"""History pages, sans-I/O: the period a chart shows, its navigation, use per interval, and
the CSV of a measurements response.

Each resolution of Table 8 (§7.3) is shown over a period that suits it, in Dutch local
time (the meter's calendar, :mod:`x1p1.x1.history`):

========== ==========================================================================
``5m``     the last hour (gas; all the meter keeps: 12 values)
``15m``    a day, midnight to midnight (96 intervals)
``1h``     a week, Monday to Monday (168 intervals; 167 or 169 in a DST week)
``1d``     a calendar month
``1M``     a calendar year
========== ==========================================================================

A period is asked from the API as ``from`` = its start and ``to`` = its end, both interval
ends and both included, so the reading at the start is there as the base of the first
interval's use. The CSV holds exactly the rows of that API answer: the same ``t`` and the
same values, in the order of the codes asked.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from x1p1.exceptions import BadRequest
from x1p1.gateway.portal.i18n import format_date, format_datetime, format_month, local
from x1p1.x1.history import (
    LOCAL_ZONE,
    Resolution,
    floor_end,
    interval_start,
    oldest_kept,
    resolutions,
)
from x1p1.x1.obis import OBJECTS, Meter, ObisObject

UNITS = {
    Resolution.MIN5: "hour",
    Resolution.MIN15: "day",
    Resolution.HOUR: "week",
    Resolution.DAY: "month",
    Resolution.MONTH: "year",
}
"""The period shown for each resolution."""

DEFAULT_RESOLUTION = {Meter.ELECTRICITY: Resolution.MIN15, Meter.GAS: Resolution.HOUR}


def historic_objects(meter: Meter) -> list[ObisObject]:
    """The objects of ``meter`` that have history (§6.1, Table 8), registry order."""
    return [obj for obj in OBJECTS if obj.historic and obj.meter is meter]


def default_objects(meter: Meter) -> list[ObisObject]:
    """What the history page shows unless told otherwise: the energy registers (kWh) of
    the electricity meter, the gas volume of the gas meter."""
    return [obj for obj in historic_objects(meter) if obj.unit in ("kWh", "m3")]


def _midnight(day: date) -> datetime:
    """Local midnight of ``day`` in UTC (aware datetimes in one zone subtract as wall
    clocks do: 24 hours across a DST change; UTC keeps the real length)."""
    return datetime(day.year, day.month, day.day, tzinfo=LOCAL_ZONE).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Period:
    """One period of one resolution: ``start`` and ``end`` are interval ends (aware UTC
    datetimes); both are asked for."""

    resolution: Resolution
    anchor: date
    """The local date the period starts on (Monday, the first of a month, 1 January)."""
    start: datetime
    end: datetime

    @property
    def unit(self) -> str:
        return UNITS[self.resolution]

    def label(self, lang: str) -> str:
        """``ma 24 nov 2026``, ``24 nov 2026 – 1 dec 2026``, ``november 2026``, ``2026``."""
        unit = self.unit
        if unit == "hour":
            return f"{format_datetime(self.start, lang)} – {format_datetime(self.end, lang)}"
        if unit == "day":
            return format_date(self.start, lang, weekday=True)
        if unit == "week":
            last = local(self.end) - timedelta(days=1)
            return f"{format_date(self.start, lang)} – {format_date(last, lang)}"
        if unit == "month":
            return format_month(self.anchor.year, self.anchor.month, lang)
        return str(self.anchor.year)


def parse_anchor(text: str | None) -> date | None:
    """``start=YYYY-MM-DD`` of the history page; None when absent; 400 when malformed."""
    if text is None or text == "":
        return None
    if not re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        raise BadRequest(f"start: {text!r} is not a date like 2026-11-24")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"start: {text!r} is not a valid date") from None
    if not 1970 <= day.year <= 8999:
        raise BadRequest(f"start: {text!r} is out of range")
    return day


def _align(resolution: Resolution, day: date) -> date:
    unit = UNITS[resolution]
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "year":
        return day.replace(month=1, day=1)
    return day


def _next_anchor(resolution: Resolution, anchor: date, steps: int) -> date:
    unit = UNITS[resolution]
    if unit == "day":
        return anchor + timedelta(days=steps)
    if unit == "week":
        return anchor + timedelta(weeks=steps)
    if unit == "month":
        months = anchor.year * 12 + anchor.month - 1 + steps
        return date(months // 12, months % 12 + 1, 1)
    return date(anchor.year + steps, 1, 1)


def period(resolution: Resolution, anchor: date | None, now: datetime) -> Period:
    """The period of ``resolution`` that starts on ``anchor``'s period (aligned to its
    week, month or year), or the one holding ``now`` when ``anchor`` is None. For ``5m``
    always the last hour up to ``now``."""
    if UNITS[resolution] == "hour":
        end = floor_end(resolution, now)
        return Period(resolution, local(end).date(), end - timedelta(hours=1), end)
    day = _align(resolution, anchor if anchor is not None else local(now).date())
    start = _midnight(day)
    end = _midnight(_next_anchor(resolution, day, 1))
    return Period(resolution, day, start, end)


def shifted(p: Period, steps: int, now: datetime) -> Period:
    return period(p.resolution, _next_anchor(p.resolution, p.anchor, steps), now)


def has_previous(meter: Meter, p: Period, now: datetime) -> bool:
    """Whether the period before ``p`` holds any interval end still kept."""
    if p.unit == "hour":
        return False
    return p.start > oldest_kept(meter, p.resolution, now)


def has_next(p: Period, now: datetime) -> bool:
    """Whether the period after ``p`` has begun."""
    return p.unit != "hour" and p.end <= now


def resolution_of(meter: Meter, text: str | None) -> Resolution:
    """``resolution=`` of the history page: one of the meter's (Table 8), else its
    default (a stale link after switching meters should not be an error page)."""
    own = [row.resolution for row in resolutions(meter)]
    for resolution in own:
        if resolution.value == text:
            return resolution
    return DEFAULT_RESOLUTION[meter]


# --- use per interval --------------------------------------------------------------------


Readings = Sequence[Mapping[str, Any]]
"""The ``readings`` of a measurements response: ``[{"t": …, "values": {code: n}}]``."""


def use_per_interval(
    resolution: Resolution, readings: Readings, codes: Sequence[str]
) -> list[tuple[datetime, dict[str, float | None]]]:
    """For each reading after the first, the use in its interval per code: the register
    at its end minus the one at its start, when the reading at the start is there (a gap,
    §12.2, leaves the use unknown rather than lumping it together)."""
    out: list[tuple[datetime, dict[str, float | None]]] = []
    previous: tuple[datetime, Mapping[str, Any]] | None = None
    for reading in readings:
        t = datetime.fromisoformat(str(reading["t"]))
        values = reading["values"]
        if previous is not None:
            joined = previous[0] == interval_start(resolution, t)
            uses: dict[str, float | None] = {}
            for code in codes:
                now_value, before = values.get(code), previous[1].get(code)
                if (
                    joined
                    and isinstance(now_value, int | float)
                    and isinstance(before, int | float)
                ):
                    uses[code] = round(float(now_value) - float(before), 6)
                else:
                    uses[code] = None
            out.append((t, uses))
        previous = (t, values)
    return out


def measurements_csv(body: Mapping[str, Any]) -> str:
    """The CSV of a measurements response: a header ``t,<code>,…`` in the order of
    ``units``, then one row per reading with the API's ``t`` and its numbers written as
    the API writes them (RFC 4180, CR LF line ends)."""
    codes = list(body.get("units", {}))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["t", *codes])
    for reading in body.get("readings", []):
        values = reading.get("values", {})
        writer.writerow([reading["t"], *(_number(values.get(code)) for code in codes)])
    return out.getvalue()


def _number(value: object) -> str:
    if value is None:
        return ""
    return json.dumps(value)
