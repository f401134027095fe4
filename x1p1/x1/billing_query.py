"""The billing request, sans-I/O: which readings ``GET /api/meters/{id}/billing`` returns.

X1 §6.2.5 and §6.2.6: the electricity meter's quarter-hour interval readings (profile
``E-BILLING``) and the gas meter's hourly ones (``G-BILLING``) are signed; the standard
leaves the request "for a later version", so x1-api.md ("Billing") and this module fix it:

- parameters ``from`` and ``to`` (RFC 3339 with an offset), both required, ``from``
  before ``to``; nothing else (a 400 names the parameter);
- the period is inclusive at both ends, as for measurements (:mod:`x1p1.x1.history`):
  every interval end ``t`` with ``from <= t <= to``;
- the interval is the history resolution the standard names: ``15m`` for electricity,
  ``1h`` for gas (Table 8), and so is the retention: 7 days (672 quarter hours) and
  30 days (720 hours). A period reaching further back is clamped to what is kept, not
  refused (§7.3: "voor zover deze beschikbaar zijn"); one answer holds at most that many
  intervals (the newest), with every billing register of each: at most 4 × 672 = 2688
  readings for electricity (Table 5's four registers) and 720 for gas (Table 6);
- the token needs the meter's billing profile (§5.3, §6.1); 403 lists it in ``missing``.

The readings themselves are the ones history recorded (§12.1, §12.2 apply: a block or a
restart leaves intervals absent); their format and signature are :mod:`x1p1.x1.billing`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from x1p1.exceptions import BadRequest, ForbiddenProfile
from x1p1.x1.api import format_time
from x1p1.x1.history import (
    Resolution,
    Retention,
    first_after,
    oldest_kept,
    retention,
    round_up_second,
    time_parameter,
)
from x1p1.x1.obis import OBJECTS, Meter, ObisObject
from x1p1.x1.profiles import Profile

BILLING_PARAMETERS = frozenset({"from", "to"})

BILLING_RESOLUTION: dict[Meter, Resolution] = {
    Meter.ELECTRICITY: Resolution.MIN15,  # §6.2.5: "kwartierwaarden"
    Meter.GAS: Resolution.HOUR,  # §6.2.6: "uurwaarden"
}
BILLING_PROFILE: dict[Meter, Profile] = {
    Meter.ELECTRICITY: Profile.E_BILLING,
    Meter.GAS: Profile.G_BILLING,
}
BILLING_OBJECTS: dict[Meter, tuple[ObisObject, ...]] = {
    meter: tuple(
        obj
        for obj in OBJECTS
        if obj.meter is meter and obj.historic and BILLING_PROFILE[meter] in obj.profiles
    )
    for meter in Meter
}
"""The signed registers per meter, in registry order: the four kWh registers of Table 5,
the gas volume of Table 6 (the equipment ids of those profiles are not readings)."""


def register_digits(obj: ObisObject) -> tuple[int, int]:
    """(integer digits, decimals) of a register's X1 format: ``Numeric(9,3)`` is (6, 3),
    as :func:`~x1p1.x1.billing.format_register_value` writes it."""
    inner = obj.format.removeprefix("Numeric(").removesuffix(")")
    width, _, decimals = inner.partition(",")
    return int(width) - int(decimals or 0), int(decimals or 0)


@dataclass(frozen=True, slots=True)
class BillingQuery:
    """A checked billing request: the meter, and the inclusive period in UTC."""

    meter: Meter
    start: datetime
    """``from``: the earliest interval end wanted (inclusive)."""
    end: datetime
    """``to``: the latest interval end wanted (inclusive)."""

    @property
    def resolution(self) -> Resolution:
        return BILLING_RESOLUTION[self.meter]

    @property
    def retention(self) -> Retention:
        return retention(self.meter, self.resolution)

    def clamped(self, now: datetime) -> BillingQuery:
        """``from`` moved forward to the oldest interval end kept at ``now``."""
        oldest = oldest_kept(self.meter, self.resolution, now)
        if self.start >= oldest or self.end < oldest:
            return self
        return BillingQuery(self.meter, oldest, self.end)

    def after(self, blocked: datetime | None) -> BillingQuery:
        """``from`` moved forward past a history block at ``blocked`` (§12.1) to the
        oldest reading kept."""
        if blocked is None:
            return self
        first = first_after(self.resolution, blocked)
        if self.start >= first or self.end < first:
            return self
        return BillingQuery(self.meter, first, self.end)

    def response_head(self, equipment_id: str, certificate: str) -> dict[str, Any]:
        """Every field of the response but ``readings``, in wire order."""
        return {
            "equipment_id": equipment_id,
            "from": format_time(self.start),
            "to": format_time(self.end),
            "certificate": certificate,
        }


def parse_billing_query(
    params: Mapping[str, str],
    meter: Meter,
    profiles: Iterable[Profile],
    *,
    now: datetime | None = None,
) -> BillingQuery:
    """Check the parameters of ``GET /api/meters/{equipment_id}/billing``.

    :class:`BadRequest` naming the parameter for an unknown, repeated, missing or
    malformed one, or ``from`` not before ``to``; then :class:`ForbiddenProfile` when
    the token lacks the meter's billing profile. With ``now`` the query comes back
    :meth:`~BillingQuery.clamped`."""
    unknown = sorted(set(params) - BILLING_PARAMETERS)
    if unknown:
        raise BadRequest(f"{unknown[0]}: unknown parameter; billing takes from and to")
    getall = getattr(params, "getall", None)  # a multidict lists repeats
    if getall is not None:
        for name in sorted(BILLING_PARAMETERS):
            if len(getall(name, ())) > 1:
                raise BadRequest(f"{name}: given more than once")
    start = time_parameter(params, "from")
    end = time_parameter(params, "to")
    if start >= end:
        raise BadRequest("from: must be before to")
    start = round_up_second(start)
    needed = BILLING_PROFILE[meter]
    if needed not in frozenset(profiles):
        raise ForbiddenProfile(
            f"the billing readings of the {meter.value} meter need the profile {needed.value}",
            missing=[needed.value],
        )
    query = BillingQuery(meter, start, end)
    return query.clamped(now) if now is not None else query
