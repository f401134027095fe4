"""History of the meters, sans-I/O: resolutions, retention and the measurements query.

X1 §7.3 and Table 8 fix, per meter, the resolutions a device may ask for, how long the
gateway keeps each and how many values that is at most:

========== ========== ============ ===========
meter      resolution retention    max. values
========== ========== ============ ===========
electricity ``15m``   7 days       672
electricity ``1h``    30 days      720
electricity ``1d``    24 months    730
electricity ``1M``    60 months    60
gas        ``5m``     1 hour       12
gas        ``1h``     30 days      720
gas        ``1d``     24 months    730
gas        ``1M``     60 months    60
========== ========== ============ ===========

The count is what the gateway keeps: the latest ``count`` interval ends at or before now
(730 days for ``1d``, which is "24 months" give or take a day).

Intervals and their ends
------------------------
A reading belongs to the *end* of its interval and holds the registers' values at that
moment (the meter's "standen", §7.3). ``5m``, ``15m`` and ``1h`` are aligned on UTC (and
so on Dutch local time too, whose offsets are whole hours). ``1d`` and ``1M`` follow the
Dutch calendar (Europe/Amsterdam): a day ends at local midnight and lasts 23 or 25 hours
on the days daylight saving time starts or ends; a month ends at local midnight on the
first of the next month.

The measurements query (§8.1)
-----------------------------
``GET /api/meters/{equipment_id}/measurements?obis=&resolution=&from=&to=`` asks for one
resolution (§8.1: "slechts één resolutie tegelijk"), some OBIS objects and a period. The
period is inclusive at both ends: every reading whose interval end ``t`` has
``from <= t <= to``. A whole day of hourly readings is ``from=00:00`` to ``to=24:00``:
25 readings, the 24 consumptions between them included.

A period that reaches further back than the retention is *not* an error: §7.3 says the
gateway returns the data "voor zover deze beschikbaar zijn", and a client cannot know
exactly where retention, a restart (§12.2) or a history block (§12.1) cut the data off, so
a 400 would only make it guess and retry. :meth:`MeasurementsQuery.clamped` moves ``from``
forward to the oldest interval end the gateway keeps, the response reports that ``from``,
and no answer ever holds more than the Table 8 count of readings.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from x1p1.exceptions import BadRequest, ForbiddenProfile
from x1p1.x1.api import format_time, parse_time
from x1p1.x1.obis import Meter, ObisObject, lookup
from x1p1.x1.profiles import Profile

LOCAL_ZONE = ZoneInfo("Europe/Amsterdam")
"""Dutch local time: days and months of history follow its calendar (Table 8)."""

HISTORIC_PROFILES = frozenset({Profile.E_HISTORIC, Profile.G_HISTORIC, Profile.PQ_HISTORIC})
"""The profiles that read history (§5.3, §6.1); realtime or P1 profiles do not."""

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Times outside these are refused: no meter has readings there, and the calendar
arithmetic stays far from ``datetime``'s limits."""

MEASUREMENTS_PARAMETERS = frozenset({"obis", "resolution", "from", "to"})


class Resolution(enum.StrEnum):
    """A resolution of history as the API writes it (Table 8)."""

    MIN5 = "5m"
    MIN15 = "15m"
    HOUR = "1h"
    DAY = "1d"
    MONTH = "1M"

    @property
    def step(self) -> timedelta | None:
        """The fixed length of a UTC-aligned interval; None for days and months."""
        return _STEPS.get(self)


_STEPS: dict[Resolution, timedelta] = {
    Resolution.MIN5: timedelta(minutes=5),
    Resolution.MIN15: timedelta(minutes=15),
    Resolution.HOUR: timedelta(hours=1),
}


@dataclass(frozen=True, slots=True)
class Retention:
    """One row of Table 8: a resolution of a meter, how long it is kept, how many values."""

    meter: Meter
    resolution: Resolution
    period: str
    """The retention as Table 8 words it, in English: ``7 days``, ``24 months``."""
    count: int
    """The Table 8 maximum number of values: what the gateway keeps and returns at most."""

    def to_json(self) -> dict[str, Any]:
        """As ``GET /api/meters/{equipment_id}`` lists it (x1-api.md, REST)."""
        return {
            "resolution": self.resolution.value,
            "retention": self.period,
            "max_values": self.count,
        }


TABLE_8: tuple[Retention, ...] = (
    Retention(Meter.ELECTRICITY, Resolution.MIN15, "7 days", 672),
    Retention(Meter.ELECTRICITY, Resolution.HOUR, "30 days", 720),
    Retention(Meter.ELECTRICITY, Resolution.DAY, "24 months", 730),
    Retention(Meter.ELECTRICITY, Resolution.MONTH, "60 months", 60),
    Retention(Meter.GAS, Resolution.MIN5, "1 hour", 12),
    Retention(Meter.GAS, Resolution.HOUR, "30 days", 720),
    Retention(Meter.GAS, Resolution.DAY, "24 months", 730),
    Retention(Meter.GAS, Resolution.MONTH, "60 months", 60),
)
"""X1 Table 8 (§7.3), in the standard's order."""

RETENTION: dict[tuple[Meter, Resolution], Retention] = {
    (row.meter, row.resolution): row for row in TABLE_8
}


def resolutions(meter: Meter) -> list[Retention]:
    """The Table 8 rows of one meter, finest first."""
    return [row for row in TABLE_8 if row.meter is meter]


def retention(meter: Meter, resolution: Resolution) -> Retention:
    """The Table 8 row; ValueError if the meter has no such resolution (a 400 is
    :func:`parse_measurements_query`'s business)."""
    row = RETENTION.get((meter, resolution))
    if row is None:
        raise ValueError(f"the {meter.value} meter has no {resolution.value} history")
    return row


# --- interval arithmetic ----------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("history times must be aware datetimes")
    return moment.astimezone(UTC)


def _local_midnight(day: date) -> datetime:
    # Amsterdam changes its clocks at 02:00/03:00, so local midnight always exists once.
    return datetime.combine(day, time(), LOCAL_ZONE).astimezone(UTC)


def _month_start(year: int, month: int) -> datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return _local_midnight(date(year, month, 1))


def floor_end(resolution: Resolution, moment: datetime) -> datetime:
    """The latest interval end at or before ``moment`` (in UTC)."""
    moment = _aware(moment)
    step = resolution.step
    if step is not None:
        seconds = int(step.total_seconds())
        stamp = int(moment.timestamp()) // seconds * seconds
        return datetime.fromtimestamp(stamp, UTC)
    local = moment.astimezone(LOCAL_ZONE)
    if resolution is Resolution.DAY:
        return _local_midnight(local.date())
    return _month_start(local.year, local.month)


def is_end(resolution: Resolution, moment: datetime) -> bool:
    """Whether ``moment`` is an interval end of ``resolution``."""
    return floor_end(resolution, moment) == _aware(moment)


def shift(resolution: Resolution, end: datetime, intervals: int) -> datetime:
    """The interval end ``intervals`` steps after (or, negative, before) the end ``end``."""
    end = _aware(end)
    if not is_end(resolution, end):
        raise ValueError(f"{format_time(end)} is not a {resolution.value} interval end")
    step = resolution.step
    if step is not None:
        return end + intervals * step
    local = end.astimezone(LOCAL_ZONE)
    if resolution is Resolution.DAY:
        return _local_midnight(local.date() + timedelta(days=intervals))
    return _month_start(local.year, local.month + intervals)


def next_end(resolution: Resolution, moment: datetime) -> datetime:
    """The first interval end strictly after ``moment``."""
    return shift(resolution, floor_end(resolution, moment), 1)


def ceil_end(resolution: Resolution, moment: datetime) -> datetime:
    """The first interval end at or after ``moment``."""
    floor = floor_end(resolution, moment)
    return floor if floor == _aware(moment) else shift(resolution, floor, 1)


def interval_start(resolution: Resolution, end: datetime) -> datetime:
    """Where the interval that ends at ``end`` began (23 or 25 hours earlier on DST days)."""
    return shift(resolution, end, -1)


def interval_ends(resolution: Resolution, start: datetime, end: datetime) -> Iterator[datetime]:
    """Every interval end ``t`` with ``start <= t <= end``, oldest first, in UTC."""
    t = ceil_end(resolution, start)
    stop = _aware(end)
    if t > stop:
        return
    step = resolution.step
    if step is not None:
        while t <= stop:
            yield t
            t += step
        return
    first = t.astimezone(LOCAL_ZONE)
    n = 0
    while t <= stop:
        yield t
        n += 1
        if resolution is Resolution.DAY:
            t = _local_midnight(first.date() + timedelta(days=n))
        else:
            t = _month_start(first.year, first.month + n)


def first_after(resolution: Resolution, moment: datetime) -> datetime:
    """The first interval end strictly after ``moment``: after a history block at
    ``moment`` (§12.1), the oldest reading the gateway can keep."""
    return shift(resolution, floor_end(resolution, moment), 1)


def round_up_second(moment: datetime) -> datetime:
    """``moment`` moved up to a whole second (readings fall on whole seconds, so a
    fractional ``from`` must not let in the reading of the second it falls in)."""
    if not moment.microsecond:
        return moment
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def oldest_kept(meter: Meter, resolution: Resolution, now: datetime) -> datetime:
    """The oldest interval end the gateway keeps at ``now``: the Table 8 count of ends
    up to the latest one at or before ``now``."""
    row = retention(meter, resolution)
    return shift(resolution, floor_end(resolution, now), -(row.count - 1))


# --- the measurements query (§8.1) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeasurementsQuery:
    """A checked ``…/measurements`` request: one meter, one resolution (§8.1), the
    concrete six-group codes in the order asked, and the inclusive period in UTC."""

    meter: Meter
    resolution: Resolution
    codes: tuple[str, ...]
    start: datetime
    """``from``: the earliest interval end wanted (inclusive)."""
    end: datetime
    """``to``: the latest interval end wanted (inclusive)."""

    @property
    def retention(self) -> Retention:
        return retention(self.meter, self.resolution)

    def clamped(self, now: datetime) -> MeasurementsQuery:
        """This query with ``from`` moved forward to the oldest interval end kept at
        ``now`` (module docstring: a period beyond retention is not an error)."""
        oldest = oldest_kept(self.meter, self.resolution, now)
        if self.start >= oldest or self.end < oldest:
            return self  # within retention, or wholly before it: nothing to move
        return MeasurementsQuery(self.meter, self.resolution, self.codes, oldest, self.end)

    def after(self, blocked: datetime | None) -> MeasurementsQuery:
        """This query with ``from`` moved forward past a history block at ``blocked``
        (§12.1) to the oldest reading kept, so the response says where the data begin."""
        if blocked is None:
            return self
        first = first_after(self.resolution, blocked)
        if self.start >= first or self.end < first:
            return self
        return MeasurementsQuery(self.meter, self.resolution, self.codes, first, self.end)

    def units(self) -> dict[str, str | None]:
        """The unit of each asked object (None for counters), as the response lists them."""
        return {code: lookup(code).obj.unit for code in self.codes}

    def response_head(self, equipment_id: str) -> dict[str, Any]:
        """Every field of the measurements response but ``readings`` (x1-api.md, REST):
        ``from`` is the clamped one, so a client sees where the data it may get begins."""
        return {
            "equipment_id": equipment_id,
            "resolution": self.resolution.value,
            "from": format_time(self.start),
            "to": format_time(self.end),
            "units": self.units(),
        }


def measurements_response(
    equipment_id: str,
    query: MeasurementsQuery,
    readings: Iterable[tuple[datetime, Mapping[str, float]]],
) -> dict[str, Any]:
    """The body of ``GET /api/meters/{equipment_id}/measurements`` (x1-api.md, REST):
    ``{"equipment_id", "resolution", "from", "to", "units", "readings": [{"t", "values"}]}``.
    Intervals without a reading are absent, not zero (§12.2)."""
    body = query.response_head(equipment_id)
    body["readings"] = [{"t": format_time(t), "values": dict(values)} for t, values in readings]
    return body


def historic_profiles(obj: ObisObject) -> list[str]:
    """The profiles that read ``obj``'s history, in Table 3 order (for ``missing``)."""
    return [p.value for p in Profile if p in obj.profiles and p in HISTORIC_PROFILES]


def time_parameter(params: Mapping[str, str], field: str) -> datetime:
    """The RFC 3339 time of query parameter ``field`` (``from``, ``to``), 1970 to 9000;
    :class:`BadRequest` names the parameter."""
    raw = params.get(field)
    if raw is None or not raw.strip():
        raise BadRequest(f"{field}: missing; an RFC 3339 time like 2026-01-15T12:00:00Z")
    if " " in raw and "+" not in raw:
        raise BadRequest(
            f"{field}: {raw!r} is not an RFC 3339 time; write a '+' offset as %2B in a URL"
        )
    try:
        moment = parse_time(raw, field)
    except OverflowError:
        raise BadRequest(f"{field}: {raw!r} is out of range") from None
    if not EARLIEST <= moment <= LATEST:
        raise BadRequest(f"{field}: {raw!r} is out of range (1970 to 9000)")
    return moment


def parse_measurements_query(
    params: Mapping[str, str],
    meter: Meter,
    profiles: Iterable[Profile],
    *,
    channel: int = 1,
    now: datetime | None = None,
) -> MeasurementsQuery:
    """Check the parameters of ``GET /api/meters/{equipment_id}/measurements`` (§8.1).

    ``meter`` is the type of the meter the path names, ``profiles`` the token's (§5.3),
    ``channel`` the gas meter's M-Bus channel. Raises :class:`BadRequest` naming the
    parameter for an unknown parameter, a missing one, an unknown or non-historic OBIS
    object, one of the other meter, a resolution the meter lacks, a time that is not
    RFC 3339 with an offset, or ``from`` after ``to``; :class:`ForbiddenProfile` with the
    ``missing`` profiles when the token may not read an object's history. With ``now``
    the query comes back :meth:`~MeasurementsQuery.clamped`.
    """
    unknown = sorted(set(params) - MEASUREMENTS_PARAMETERS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown parameter; use obis, resolution, from and to")
    getall = getattr(params, "getall", None)  # a multidict: ?obis=a&obis=b
    if getall is not None:
        for name in sorted(MEASUREMENTS_PARAMETERS):
            if len(getall(name, ())) > 1:
                hint = "; list the codes comma-separated in one obis" if name == "obis" else ""
                raise BadRequest(f"{name}: given more than once{hint}")
    granted = frozenset(profiles) & HISTORIC_PROFILES
    raw_obis = params.get("obis")
    if raw_obis is None or not raw_obis.strip():
        raise BadRequest("obis: missing; a comma-separated list of OBIS codes")
    items = [item.strip() for item in raw_obis.split(",")]
    if any(not item for item in items) or len(items) > 64:
        raise BadRequest("obis: a comma-separated list of at most 64 OBIS codes expected")
    codes: list[str] = []
    missing: list[str] = []
    refused: list[str] = []
    for item in items:
        ref = lookup(item)
        obj = ref.obj
        if obj.meter is not meter:
            raise BadRequest(
                f"obis: {item} is an object of the {obj.meter.value} meter, "
                f"not of this {meter.value} meter"
            )
        if not obj.historic:
            raise BadRequest(f"obis: {item} ({obj.description}) has no history")
        if meter is Meter.GAS:
            if ref.channel is None:
                raise BadRequest(
                    f"obis: {item} names no channel; this gas meter is on "
                    f"channel {channel}: {obj.for_channel(channel)}"
                )
            if ref.channel != channel:
                raise BadRequest(
                    f"obis: {item} is on channel {ref.channel}; this gas meter "
                    f"is on channel {channel}"
                )
        if not obj.profiles & granted:
            refused.append(item)
            missing.extend(p for p in historic_profiles(obj) if p not in missing)
        elif ref.code not in codes:
            codes.append(ref.code)
    raw_resolution = params.get("resolution")
    own = resolutions(meter)
    names = ", ".join(row.resolution.value for row in own)
    if raw_resolution is None or not raw_resolution.strip():
        raise BadRequest(f"resolution: missing; one of {names}")
    chosen = next((row for row in own if row.resolution.value == raw_resolution), None)
    if chosen is None:
        raise BadRequest(
            f"resolution: {raw_resolution!r} is not a resolution of the "
            f"{meter.value} meter; one of {names}"
        )
    start = time_parameter(params, "from")
    end = time_parameter(params, "to")
    if start >= end:
        raise BadRequest("from: must be before to")
    start = round_up_second(start)
    if refused:  # every parameter is sound: now the token's rights (§7.1)
        raise ForbiddenProfile(
            f"obis: the token may not read the history of {', '.join(refused)}; "
            f"missing profile(s): {', '.join(missing)}",
            missing=missing,
        )
    query = MeasurementsQuery(meter, chosen.resolution, tuple(codes), start, end)
    return query.clamped(now) if now is not None else query
