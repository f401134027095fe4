"""The OBIS registry: every data object of X1 §6.2 and of the DSMR 5.0.2 P1 telegram.

One source of truth for the gateway and the converter: code, description, format and unit
from the X1 standard's Tables 4, 5 and 6 and its power-quality table (§6.2.1–§6.2.4), the
profiles that read each object (§6.1), and how each is written in a P1 telegram (P1 §7,
Table 5-1).

Codes: the X1 API writes the standard's six value groups, ``1-0:1.8.1.255``; the P1
telegram writes five, ``1-0:1.8.1`` (P1 §6.4: "Value group F is not used"). Gas objects
carry the M-Bus channel ``n`` in group B (``0-1:24.2.1.255`` on channel 1); the registry
holds them once, as ``0-n:…``. :func:`lookup` accepts either form.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from x1p1.exceptions import BadRequest
from x1p1.x1.profiles import Profile

P = Profile
_CODE = re.compile(r"(\d{1,3})-(\d{1,3}|n):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\.(\d{1,3}))?\Z")


class Meter(enum.StrEnum):
    """Which meter an object belongs to (``type`` in ``GET /api/meters``)."""

    ELECTRICITY = "electricity"
    GAS = "gas"


class P1Kind(enum.Enum):
    """How an object's value is written in a P1 telegram (P1 Table 5-1)."""

    FIXED = "fixed"  # Fn(x,y) or In: zero-padded decimal
    HEX = "hex"  # Sn octet string
    TIMESTAMP = "tst"  # TST
    MBUS = "mbus"  # (TST)(Fn(x,y)*unit)
    LOG = "log"  # power-failure event log


@dataclass(frozen=True, slots=True)
class P1Format:
    """The P1 writing of a value: kind, digits before and after the point, unit."""

    kind: P1Kind
    int_digits: int = 0
    decimals: int = 0
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class ObisObject:
    """One data object: its code and what the standard says of it."""

    code: str
    """Six value groups, gas with ``n`` for the channel: ``0-n:24.2.1.255``."""
    description: str
    description_nl: str
    format: str
    """The X1 table's format: ``Numeric(9,3)``, ``String``, ``List``."""
    unit: str | None
    meter: Meter
    profiles: frozenset[Profile]
    source: str
    """Where the standard lists it: ``X1 Table 4``, ``X1 §6.2.4``, ``P1 §7.1``."""
    p1: P1Format | None = None
    historic: bool = False
    """Recorded in history (§7.3, Table 8): a numeric object of a ``*-HISTORIC`` profile."""
    decimals: int = field(default=0)
    """Decimals of the numeric value (from ``Numeric(n,d)``)."""

    @property
    def p1_code(self) -> str:
        """The five-group code a P1 telegram writes, e.g. ``1-0:1.8.1``."""
        return self.code.rsplit(".", 1)[0]

    @property
    def numeric(self) -> bool:
        return self.format.startswith("Numeric")

    def for_channel(self, channel: int) -> str:
        """The concrete code of a per-channel (gas) object, e.g. ``0-1:24.2.1.255``."""
        return self.code.replace("-n:", f"-{channel}:")


def _obj(
    code: str,
    description: str,
    description_nl: str,
    fmt: str,
    unit: str | None,
    profiles: set[Profile],
    source: str,
    p1: P1Format | None,
    *,
    recorded: bool = True,
) -> ObisObject:
    meter = Meter.GAS if code.startswith("0-n:") else Meter.ELECTRICITY
    historic = (
        recorded
        and fmt.startswith("Numeric")
        and bool(profiles & {P.E_HISTORIC, P.G_HISTORIC, P.PQ_HISTORIC})
    )
    decimals = int(fmt.rstrip(")").split(",")[1]) if fmt.startswith("Numeric") else 0
    return ObisObject(
        code,
        description,
        description_nl,
        fmt,
        unit,
        meter,
        frozenset(profiles | {P.P1}),
        source,
        p1,
        historic,
        decimals,
    )


_F = P1Kind.FIXED
_E_REG = {P.E_REALTIME, P.E_HISTORIC, P.E_BILLING}
_PQ = {P.PQ_REALTIME, P.PQ_HISTORIC}

OBJECTS: tuple[ObisObject, ...] = (
    # P1-only objects (P1 §7.1, §7.2): in the legacy telegram, not in the X1 tables.
    _obj(
        "1-3:0.2.8.255",
        "Version information for P1 output",
        "Versie-informatie P1",
        "String",
        None,
        set(),
        "P1 §7.1",
        P1Format(_F, 2),
    ),
    _obj(
        "0-0:1.0.0.255",
        "Date-time stamp of the P1 message",
        "Tijdstempel P1-bericht",
        "String",
        None,
        set(),
        "P1 §7.1",
        P1Format(P1Kind.TIMESTAMP),
    ),
    _obj(
        "0-0:96.13.0.255",
        "Text message (up to 1024 characters)",
        "Tekstbericht",
        "String",
        None,
        set(),
        "P1 §7.2",
        P1Format(P1Kind.HEX),
    ),
    # X1 Table 4 (§6.2.1) and Table 5 (§6.2.2): electricity.
    _obj(
        "0-0:96.1.1.255",
        "Equipment identifier",
        "Equipment identifier",
        "String",
        None,
        {P.E_REALTIME, P.E_HISTORIC, P.E_BILLING, P.PQ_REALTIME, P.PQ_HISTORIC},
        "X1 Table 4, 5; §6.2.4",
        P1Format(P1Kind.HEX),
    ),
    _obj(
        "1-0:1.8.1.255",
        "Electricity delivered to client (tariff 1)",
        "Elektriciteit geleverd aan klant (tarief 1)",
        "Numeric(9,3)",
        "kWh",
        _E_REG,
        "X1 Table 4, 5",
        P1Format(_F, 6, 3, "kWh"),
    ),
    _obj(
        "1-0:1.8.2.255",
        "Electricity delivered to client (tariff 2)",
        "Elektriciteit geleverd aan klant (tarief 2)",
        "Numeric(9,3)",
        "kWh",
        _E_REG,
        "X1 Table 4, 5",
        P1Format(_F, 6, 3, "kWh"),
    ),
    _obj(
        "1-0:2.8.1.255",
        "Electricity delivered by client (tariff 1)",
        "Elektriciteit geleverd door klant (tarief 1)",
        "Numeric(9,3)",
        "kWh",
        _E_REG,
        "X1 Table 4, 5",
        P1Format(_F, 6, 3, "kWh"),
    ),
    _obj(
        "1-0:2.8.2.255",
        "Electricity delivered by client (tariff 2)",
        "Elektriciteit geleverd door klant (tarief 2)",
        "Numeric(9,3)",
        "kWh",
        _E_REG,
        "X1 Table 4, 5",
        P1Format(_F, 6, 3, "kWh"),
    ),
    _obj(
        "0-0:96.14.0.255",
        "Tariff indicator (1 = tariff 1, 2 = tariff 2)",
        "Tariefindicator (actueel tarief)",
        "Numeric(1,0)",
        None,
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 4),
    ),
    _obj(
        "1-0:1.7.0.255",
        "Actual power delivered (+P)",
        "Actueel geleverd vermogen (+P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    _obj(
        "1-0:2.7.0.255",
        "Actual power received (-P)",
        "Actueel ontvangen vermogen (-P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    # Power quality (§6.2.4).
    _obj(
        "0-0:96.7.21.255",
        "Number of power failures",
        "Aantal spanningsonderbrekingen",
        "Numeric(3,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    _obj(
        "0-0:96.7.9.255",
        "Number of long power failures",
        "Aantal lange spanningsonderbrekingen",
        "Numeric(3,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    _obj(
        "1-0:99.97.0.255",
        "Power failure event log (date-time and duration)",
        "Logboek stroomstoringen",
        "List",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(P1Kind.LOG, 10, 0, "s"),
    ),
    _obj(
        "1-0:32.32.0.255",
        "Voltage sags phase L1",
        "Spanningdips fase L1",
        "Numeric(5,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    _obj(
        "1-0:52.32.0.255",
        "Voltage sags phase L2",
        "Spanningdips fase L2",
        "Numeric(5,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    _obj(
        "1-0:72.32.0.255",
        "Voltage sags phase L3",
        "Spanningdips fase L3",
        "Numeric(5,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    _obj(
        "1-0:32.36.0.255",
        "Voltage swells phase L1",
        "Spanningspieken fase L1",
        "Numeric(5,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    _obj(
        "1-0:52.36.0.255",
        "Voltage swells phase L2",
        "Spanningspieken fase L2",
        "Numeric(5,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    _obj(
        "1-0:72.36.0.255",
        "Voltage swells phase L3",
        "Spanningspieken fase L3",
        "Numeric(5,0)",
        None,
        _PQ,
        "X1 §6.2.4",
        P1Format(_F, 5),
    ),
    # Table 4 continued: per-phase values.
    _obj(
        "1-0:32.7.0.255",
        "Actual voltage L1",
        "Actuele spanning L1",
        "Numeric(6,1)",
        "V",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 3, 1, "V"),
    ),
    _obj(
        "1-0:52.7.0.255",
        "Actual voltage L2",
        "Actuele spanning L2",
        "Numeric(6,1)",
        "V",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 3, 1, "V"),
    ),
    _obj(
        "1-0:72.7.0.255",
        "Actual voltage L3",
        "Actuele spanning L3",
        "Numeric(6,1)",
        "V",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 3, 1, "V"),
    ),
    _obj(
        "1-0:31.7.0.255",
        "Actual current L1",
        "Actuele stroom L1",
        "Numeric(6,3)",
        "A",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 3, 0, "A"),
    ),
    _obj(
        "1-0:51.7.0.255",
        "Actual current L2",
        "Actuele stroom L2",
        "Numeric(6,3)",
        "A",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 3, 0, "A"),
    ),
    _obj(
        "1-0:71.7.0.255",
        "Actual current L3",
        "Actuele stroom L3",
        "Numeric(6,3)",
        "A",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 3, 0, "A"),
    ),
    _obj(
        "1-0:21.7.0.255",
        "Active power L1 (+P)",
        "Actief vermogen L1 (+P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    _obj(
        "1-0:41.7.0.255",
        "Active power L2 (+P)",
        "Actief vermogen L2 (+P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    _obj(
        "1-0:61.7.0.255",
        "Active power L3 (+P)",
        "Actief vermogen L3 (+P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    _obj(
        "1-0:22.7.0.255",
        "Active power L1 (-P)",
        "Actief vermogen L1 (-P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    _obj(
        "1-0:42.7.0.255",
        "Active power L2 (-P)",
        "Actief vermogen L2 (-P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    _obj(
        "1-0:62.7.0.255",
        "Active power L3 (-P)",
        "Actief vermogen L3 (-P)",
        "Numeric(6,3)",
        "kW",
        {P.E_REALTIME},
        "X1 Table 4",
        P1Format(_F, 2, 3, "kW"),
    ),
    # X1 Table 6 (§6.2.3): gas, per M-Bus channel n.
    _obj(
        "0-n:24.1.0.255",
        "Device type of meter n",
        "Device-Type van meternummer n",
        "Numeric(3,0)",
        None,
        {P.G_REALTIME, P.G_HISTORIC},
        "X1 Table 6",
        P1Format(_F, 3),
        recorded=False,
    ),  # a type code describes the meter; it has no history
    _obj(
        "0-n:96.1.0.255",
        "Equipment identifier of meter n",
        "Equipment identifier van meternummer n",
        "String",
        None,
        {P.G_REALTIME, P.G_HISTORIC, P.G_BILLING},
        "X1 Table 6",
        P1Format(P1Kind.HEX),
    ),
    _obj(
        "0-n:24.2.1.255",
        "Gas volume (5-minute value) with its timestamp",
        "Actuele (5-min) waarde gasvolume, inclusief timestamp",
        "Numeric(9,3)",
        "m3",
        {P.G_REALTIME, P.G_HISTORIC, P.G_BILLING},
        "X1 Table 6",
        P1Format(P1Kind.MBUS, 5, 3, "m3"),
    ),
)

BY_CODE: dict[str, ObisObject] = {obj.code: obj for obj in OBJECTS}

P1_ORDER: tuple[str, ...] = (
    "1-3:0.2.8.255",
    "0-0:1.0.0.255",
    "0-0:96.1.1.255",
    "1-0:1.8.1.255",
    "1-0:1.8.2.255",
    "1-0:2.8.1.255",
    "1-0:2.8.2.255",
    "0-0:96.14.0.255",
    "1-0:1.7.0.255",
    "1-0:2.7.0.255",
    "0-0:96.7.21.255",
    "0-0:96.7.9.255",
    "1-0:99.97.0.255",
    "1-0:32.32.0.255",
    "1-0:52.32.0.255",
    "1-0:72.32.0.255",
    "1-0:32.36.0.255",
    "1-0:52.36.0.255",
    "1-0:72.36.0.255",
    "0-0:96.13.0.255",
    "1-0:32.7.0.255",
    "1-0:52.7.0.255",
    "1-0:72.7.0.255",
    "1-0:31.7.0.255",
    "1-0:51.7.0.255",
    "1-0:71.7.0.255",
    "1-0:21.7.0.255",
    "1-0:41.7.0.255",
    "1-0:61.7.0.255",
    "1-0:22.7.0.255",
    "1-0:42.7.0.255",
    "1-0:62.7.0.255",
    "0-n:24.1.0.255",
    "0-n:96.1.0.255",
    "0-n:24.2.1.255",
)
"""The order of the example telegram (P1 §6.13); the standard does not fix one."""


@dataclass(frozen=True, slots=True)
class ObisRef:
    """A concrete code resolved against the registry: the object and its channel."""

    obj: ObisObject
    channel: int | None

    @property
    def code(self) -> str:
        """The concrete six-group code, e.g. ``0-1:24.2.1.255``."""
        return self.obj.code if self.channel is None else self.obj.for_channel(self.channel)


def lookup(code: str) -> ObisRef:
    """Resolve a code in five- or six-group form; :class:`BadRequest` if unknown."""
    match = _CODE.match(code.strip())
    if not match:
        raise BadRequest(f"obis: {code!r} is not an OBIS code like 1-0:1.8.1.255")
    a, b, c, d, e, f = match.groups()
    if f not in (None, "255"):
        raise BadRequest(f"obis: {code!r} is not an object of the X1 interface")
    channel: int | None = None
    key = f"{a}-{b}:{c}.{d}.{e}.255"
    if key not in BY_CODE and b != "n" and a == "0" and 1 <= int(b) <= 4:
        generic = f"0-n:{c}.{d}.{e}.255"
        if generic in BY_CODE:
            key, channel = generic, int(b)
    obj = BY_CODE.get(key)
    if obj is None:
        raise BadRequest(f"obis: {code!r} is not an object of the X1 interface")
    return ObisRef(obj, channel)


def objects_for(profiles: frozenset[Profile] | set[Profile]) -> list[ObisObject]:
    """The objects any of ``profiles`` may read, in registry order."""
    return [obj for obj in OBJECTS if obj.profiles & profiles - {Profile.P1}]
