"""The X1 data profiles of Table 3 (X1 §5.3), which a token grants.

A device asks for one or more profiles when it requests an API token (§5.1.2); the
customer may grant others (§5.1.6). Which OBIS objects each profile reads is in
:mod:`x1p1.x1.obis` (§6.1, Tables 4–6 and the power-quality table).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from x1p1.exceptions import BadRequest


class Profile(enum.StrEnum):
    """A data profile (X1 §5.3, Table 3)."""

    P1 = "P1"
    E_REALTIME = "E-REALTIME"
    E_HISTORIC = "E-HISTORIC"
    E_BILLING = "E-BILLING"
    PQ_REALTIME = "PQ-REALTIME"
    PQ_HISTORIC = "PQ-HISTORIC"
    G_REALTIME = "G-REALTIME"
    G_HISTORIC = "G-HISTORIC"
    G_BILLING = "G-BILLING"

    @property
    def description(self) -> str:
        """English explanation, after Table 3."""
        return DESCRIPTIONS[self][0]

    @property
    def description_nl(self) -> str:
        """The standard's own Dutch explanation (Table 3)."""
        return DESCRIPTIONS[self][1]


DESCRIPTIONS: dict[Profile, tuple[str, str]] = {
    Profile.P1: (
        "Legacy P1 telegram as in DSMR 5.0.2 P1",
        "Legacy P1 telegram conform DSMR 5.0.2 P1",
    ),
    Profile.E_REALTIME: (
        "Electricity meter readings at the moment of asking",
        "Meetgegevens van de elektriciteitsmeter op het moment van bevragen",
    ),
    Profile.E_HISTORIC: (
        "Historic readings of the electricity meter",
        "Historische meetgegevens van de elektriciteitsmeter",
    ),
    Profile.E_BILLING: (
        "Cryptographically signed 15-minute interval readings of the electricity meter",
        "Cryptografisch ondertekende intervalstanden (15 minuten) van de elektriciteitsmeter",
    ),
    Profile.PQ_REALTIME: (
        "Current information on the quality of the mains voltage",
        "Informatie over de kwaliteit van de netspanning",
    ),
    Profile.PQ_HISTORIC: (
        "Historic information on the quality of the mains voltage",
        "Historische informatie over de kwaliteit van de netspanning",
    ),
    Profile.G_REALTIME: (
        "Gas meter readings at the moment of asking (up to 5 minutes old)",
        "Meetgegevens van de gasmeter op het moment van bevragen (tot 5 minuten oud)",
    ),
    Profile.G_HISTORIC: (
        "Historic readings of the gas meter",
        "Historische meetgegevens van de gasmeter",
    ),
    Profile.G_BILLING: (
        "Cryptographically signed hourly interval readings of the gas meter",
        "Cryptografisch ondertekende intervalstanden (uur) van de gasmeter",
    ),
}

ELECTRICITY_PROFILES = frozenset(
    {
        Profile.P1,
        Profile.E_REALTIME,
        Profile.E_HISTORIC,
        Profile.E_BILLING,
        Profile.PQ_REALTIME,
        Profile.PQ_HISTORIC,
    }
)
"""Profiles that read the electricity meter (so show it in ``GET /api/meters``, §8.1)."""

GAS_PROFILES = frozenset({Profile.P1, Profile.G_REALTIME, Profile.G_HISTORIC, Profile.G_BILLING})
"""Profiles that read the gas meter. The P1 telegram carries the gas value too."""

REALTIME_PROFILES = frozenset({Profile.E_REALTIME, Profile.PQ_REALTIME, Profile.G_REALTIME})
"""The profiles that read ``/api/realtime`` (§5.3: "op het moment van bevragen")."""

BUILD_PROFILES = frozenset({Profile.E_REALTIME, Profile.PQ_REALTIME})
"""The converter builds a telegram on each electricity message (docs/realtime.md): one of
these must be granted."""


def parse_profiles(values: Iterable[object]) -> frozenset[Profile]:
    """Profiles from a request, each a Table 3 name; :class:`BadRequest` names a bad one."""
    out: set[Profile] = set()
    for value in values:
        if not isinstance(value, str) or value not in Profile.__members__.values():
            known = ", ".join(p.value for p in Profile)
            raise BadRequest(f"profiles: {value!r} is not a profile; known: {known}")
        out.add(Profile(value))
    if not out:
        raise BadRequest("profiles: ask for at least one profile")
    return frozenset(out)


def sorted_profiles(profiles: Iterable[Profile]) -> list[str]:
    """Profile names in Table 3 order, for JSON."""
    chosen = set(profiles)
    return [p.value for p in Profile if p in chosen]
