"""The X1 API's request handlers, free of HTTP: parsed input in, a JSON-able result or an
:class:`~x1p1.exceptions.X1Error` out.

The aiohttp adapter (:mod:`x1p1.gateway.server`) parses the request, calls one of these
and turns the result or the error into a response in one place. Each handler checks the
profiles it needs (X1 §5.3, §6.1, §7.1) and every parameter (x1-api.md: bad input is a
400 naming the parameter).

- token requests and the caller's own token (§5.1.2, §5.2);
- ``GET /api/meters`` and ``GET /api/meters/{equipment_id}`` (§8.1);
- the parameters of both WebSockets (§7.2, §8.2), resolved against the registry into
  what :mod:`x1p1.gateway.streams` sends;
- the grid operator's remote read (§2.2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from x1p1.exceptions import BadRequest, ForbiddenProfile, NotFound
from x1p1.gateway.state import GatewayState
from x1p1.gateway.streams import MeterSelection, MeterSource, Tick
from x1p1.x1.api import TokenRequestBody, parse_interval, parse_list
from x1p1.x1.grants import Grant
from x1p1.x1.history import resolutions
from x1p1.x1.obis import OBJECTS, Meter, ObisRef, lookup
from x1p1.x1.profiles import (
    ELECTRICITY_PROFILES,
    GAS_PROFILES,
    REALTIME_PROFILES,
    Profile,
    sorted_profiles,
)

METER_PROFILES: dict[Meter, frozenset[Profile]] = {
    Meter.ELECTRICITY: ELECTRICITY_PROFILES,
    Meter.GAS: GAS_PROFILES,
}

LEGACY_P1_PARAMETERS = frozenset({"interval"})
REALTIME_PARAMETERS = frozenset({"equipment_id", "obis", "interval"})
REGISTERS = ("1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:2.8.1.255", "1-0:2.8.2.255")
"""What the grid operator's remote read returns of the electricity meter."""


@dataclass(frozen=True, slots=True)
class MeterRef:
    """A meter behind the gateway: ``channel`` 0 for the electricity meter itself, the
    M-Bus channel (1–4) for gas (the value group B of its OBIS codes)."""

    equipment_id: str
    meter: Meter
    channel: int

    def to_json(self) -> dict[str, Any]:
        return {
            "equipment_id": self.equipment_id,
            "type": self.meter.value,
            "channel": self.channel,
        }


def meter_refs(meters: MeterSource) -> list[MeterRef]:
    """Both meters of the simulated installation, electricity first."""
    return [
        MeterRef(meters.electricity_id, Meter.ELECTRICITY, 0),
        MeterRef(meters.gas_id, Meter.GAS, meters.gas_channel),
    ]


def check_parameters(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """400 for a parameter the endpoint does not know, or one given twice."""
    names = [name for name, _ in params.items()]  # a multidict lists repeats here
    for name in names:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"{name}: unknown parameter (this endpoint takes: {known})")
        if names.count(name) > 1:
            raise BadRequest(f"{name}: given more than once")


def require_any(token: Grant, profiles: frozenset[Profile], what: str) -> None:
    """403 unless ``token`` holds one of ``profiles``; ``missing`` lists them all."""
    if not token.profiles & profiles:
        missing = sorted_profiles(profiles)
        raise ForbiddenProfile(f"{what} needs the profile {' or '.join(missing)}", missing=missing)


# --- pairing (§5.1.2, §5.2) ---------------------------------------------------------------


def post_token_request(state: GatewayState, body: object, address: str) -> dict[str, Any]:
    """``POST /api/tokens/requests`` from ``address`` → 202 with the pending request and
    the code the meter's display shows next to it (§5.1.5)."""
    state.check_enabled()
    return state.grants.create_request(TokenRequestBody.parse(body), address).to_json()


def get_token_request(state: GatewayState, request_id: str) -> dict[str, Any]:
    """``GET /api/tokens/requests/{request_id}``."""
    if not request_id or len(request_id) > 64:
        raise NotFound("no such token request")
    return state.grants.request_state(request_id).to_json()


def get_token(token: Grant) -> dict[str, Any]:
    """``GET /api/token``: the caller's own token."""
    return token.info().to_json()


def delete_token(state: GatewayState, token: Grant) -> None:
    """``DELETE /api/token``: the device unpairs itself; its sockets close with 4401."""
    state.grants.revoke(token.grant_id, "the device unpaired itself")


# --- meters (§8.1) -------------------------------------------------------------------------


def list_meters(meters: MeterSource, token: Grant) -> dict[str, Any]:
    """``GET /api/meters``: only meters the token has some profile for (§8.1)."""
    visible = [m for m in meter_refs(meters) if token.profiles & METER_PROFILES[m.meter]]
    return {"meters": [m.to_json() for m in visible]}


def find_meter(meters: MeterSource, equipment_id: str) -> MeterRef:
    for ref in meter_refs(meters):
        if ref.equipment_id == equipment_id:
            return ref
    raise NotFound(f"no meter with equipment id {equipment_id!r}")


def describe_meter(meters: MeterSource, token: Grant, equipment_id: str) -> dict[str, Any]:
    """``GET /api/meters/{equipment_id}``: the meter, the objects the token may read
    (code, description, unit, format, and which of its profiles read it) and each
    resolution of history with its retention (Table 8)."""
    ref = find_meter(meters, equipment_id)
    require_any(token, METER_PROFILES[ref.meter], f"the {ref.meter.value} meter")
    readable = token.profiles - {Profile.P1}
    objects = []
    for obj in OBJECTS:
        granting = obj.profiles & readable
        if obj.meter is not ref.meter or not granting:
            continue
        code = obj.for_channel(ref.channel) if ref.meter is Meter.GAS else obj.code
        objects.append(
            {
                "obis": code,
                "description": obj.description,
                "description_nl": obj.description_nl,
                "unit": obj.unit,
                "format": obj.format,
                "profiles": sorted_profiles(granting),
            }
        )
    return {
        **ref.to_json(),
        "objects": objects,
        "resolutions": [row.to_json() for row in resolutions(ref.meter)],
    }


# --- WebSockets (§7.2, §8.2) --------------------------------------------------------------


def legacy_p1_interval(token: Grant, params: Mapping[str, str]) -> int:
    """``/api/legacy-p1``: needs the P1 profile; returns the interval in seconds."""
    require_any(token, frozenset({Profile.P1}), "/api/legacy-p1")
    check_parameters(params, LEGACY_P1_PARAMETERS)
    return parse_interval(params)


def _resolve(code: str, ref: ObisRef, gas_channel: int) -> ObisRef:
    """A registry reference with the gas meter's channel filled in and checked."""
    if ref.obj.meter is not Meter.GAS:
        return ref
    if ref.channel is None:
        return ObisRef(ref.obj, gas_channel)
    if ref.channel != gas_channel:
        raise BadRequest(f"obis: {code!r}: there is no meter on M-Bus channel {ref.channel}")
    return ref


def realtime_selection(
    meters: MeterSource, token: Grant, params: Mapping[str, str]
) -> tuple[list[MeterSelection], int]:
    """``/api/realtime``: what to send of which meter, and the interval.

    Each OBIS code must be a realtime object (§6.2.1, §6.2.3, §6.2.4) of one of the
    meters named by ``equipment_id``, and every meter named must get at least one; the
    token needs a realtime profile of each object (403 lists the ones that would do)."""
    check_parameters(params, REALTIME_PARAMETERS)
    interval = parse_interval(params)
    ids = list(dict.fromkeys(parse_list(params, "equipment_id")))
    known = {ref.equipment_id: ref for ref in meter_refs(meters)}
    chosen: list[MeterRef] = []
    for equipment_id in ids:
        if equipment_id not in known:
            raise BadRequest(f"equipment_id: {equipment_id!r} is not a meter of this gateway")
        chosen.append(known[equipment_id])
    by_meter: dict[Meter, list[ObisRef]] = {ref.meter: [] for ref in chosen}
    for code in parse_list(params, "obis"):
        ref = _resolve(code, lookup(code), meters.gas_channel)
        realtime = ref.obj.profiles & REALTIME_PROFILES
        if not realtime:
            raise BadRequest(f"obis: {code!r} is not a realtime object (it is only in P1)")
        if ref.obj.meter not in by_meter:
            raise BadRequest(
                f"obis: {code!r} is an object of the {ref.obj.meter.value} meter, "
                "which equipment_id does not name"
            )
        require_any(token, realtime, f"obis {ref.code}")
        if all(r.code != ref.code for r in by_meter[ref.obj.meter]):
            by_meter[ref.obj.meter].append(ref)
    selections = []
    for meter_ref in chosen:
        refs = by_meter[meter_ref.meter]
        if not refs:
            raise BadRequest(
                f"obis: none of the codes is an object of the {meter_ref.meter.value} meter "
                f"{meter_ref.equipment_id}"
            )
        selections.append(MeterSelection(meter_ref.equipment_id, meter_ref.meter, tuple(refs)))
    return selections, interval


def stream_permission(
    selections: list[MeterSelection] | None,
) -> Callable[[frozenset[Profile]], bool]:
    """Whether a token with some profiles may read a stream: the P1 profile for
    ``/api/legacy-p1`` (``selections`` None), else a realtime profile of every object."""
    if selections is None:
        return lambda profiles: Profile.P1 in profiles
    needs = [ref.obj.profiles & REALTIME_PROFILES for sel in selections for ref in sel.refs]
    return lambda profiles: all(need & profiles for need in needs)


# --- the grid operator (§2.2) -------------------------------------------------------------


def operator_read(meters: MeterSource, at: datetime) -> dict[str, Any]:
    """The grid operator's remote read (X4): the registers of both meters at ``at``."""
    tick = Tick(0, at, meters)
    electricity = MeterSelection(
        meters.electricity_id, Meter.ELECTRICITY, tuple(lookup(code) for code in REGISTERS)
    )
    gas = MeterSelection(
        meters.gas_id, Meter.GAS, (ObisRef(lookup("0-n:24.2.1.255").obj, meters.gas_channel),)
    )
    return {"meters": [json.loads(tick.realtime(electricity)), json.loads(tick.realtime(gas))]}
