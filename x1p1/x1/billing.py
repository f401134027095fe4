"""Signed billing readings: their canonical form, the response that carries them, reports.

X1 §6.2.5–§6.2.6 say that the interval readings of the electricity meter (15 minutes,
profile ``E-BILLING``) and of the gas meter (hourly, ``G-BILLING``) are signed, and leave
the format "for a later version". This module is the project's format (x1-api.md,
"Billing"); it is sans-I/O and needs no cryptography, so a client can parse a response
and rebuild the exact bytes that were signed with the standard library alone. Signing
and verifying live in :mod:`x1p1.gateway.billing_signature`.

A response of ``GET /api/meters/{equipment_id}/billing``::

    {"equipment_id": "E0012345678901234",
     "from": "2026-05-09T00:00:00Z", "to": "2026-05-09T01:00:00Z",
     "certificate": "-----BEGIN CERTIFICATE-----\\n...",
     "readings": [{"t": "2026-05-09T00:15:00Z", "obis": "1-0:1.8.1.255",
                   "value": "012345.678", "unit": "kWh", "signature": "MEUCIQ..."}]}

The canonical form (what is signed)
-----------------------------------
Every field of a reading is a JSON **string**; ``value`` too. A reading's signed bytes are
the JSON object of its four other fields, ``t``, ``obis``, ``unit`` and ``value``, written:

* with the keys in that (sorted) order, no whitespace at all (``,`` and ``:`` only);
* strings as JSON strings, UTF-8 encoded, with non-ASCII characters written as themselves
  (``"m³"``, not ``"m\\u00b3"``); only ``"``, ``\\`` and control characters are escaped,
  as ``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t`` and ``\\u00XX`` with lower-case hex.

This is exactly RFC 8785 (JCS) for such an object, and exactly Python's
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``. Because no
field is a JSON number, no float formatting question can arise: the signature covers the
very characters of the value. ``value`` is the register reading written as the meter's
register shows it on the P1 wire (P1 §6.4, Fn(x,y)): its integer part zero-padded to the
register's width and its fixed number of decimals, ``"012345.678"`` for a Numeric(9,3)
kWh or m³ register (X1 Tables 5 and 6). :func:`format_register_value` writes it.

``t`` is the end of the interval in RFC 3339, by preference UTC with ``Z``
(:func:`format_interval_end`); ``obis`` has the standard's six value groups
(``1-0:1.8.1.255``, gas ``0-1:24.2.1.255``); ``unit`` is the register's unit.

The signature is ECDSA over NIST P-256 with SHA-256 of those bytes, its DER encoding
(RFC 3279 ``Ecdsa-Sig-Value``) written in base64url without padding (RFC 4648 §5). The
certificate in the response is the signer's, PEM, issued by the gateway's root CA with
the extended key usage :data:`BILLING_EKU_OID`.

Strictness: a reading with a missing field, a field that is not a string, or a field that
is not part of the format, makes the whole response malformed
(:class:`~x1p1.exceptions.BillingVerificationError`): no unsigned data rides along
looking signed. A reading whose strings are well-typed but whose content is wrong (a
value that is not a decimal, a time that is not RFC 3339, a signature that is not
base64url) is reported as a failing reading, like a bad signature.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from x1p1.exceptions import BillingVerificationError

BILLING_EKU_OID = "2.25.117999916522225088799586670660867091049"
"""Extended key usage of the billing signing certificate: "x1p1 billing readings".

A UUID-based OID (ITU-T X.667, arc ``2.25``), so it needs no registration and clashes
with nothing; a verifier accepts a signing certificate only if it carries this usage.
"""

SIGNED_FIELDS: tuple[str, ...] = ("obis", "t", "unit", "value")
"""The fields of a reading that its signature covers, in canonical (sorted) order."""

READING_FIELDS: frozenset[str] = frozenset((*SIGNED_FIELDS, "signature"))

_DECIMAL = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,9})?\Z")
_OBIS = re.compile(r"[0-9]{1,3}-[0-9]{1,3}:[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:\.[0-9]{1,3})?\Z")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}\Z")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)


def canonical_bytes(*, t: str, obis: str, value: str, unit: str) -> bytes:
    """The bytes a reading's signature covers (see the module docstring).

    Raises :class:`BillingVerificationError` if a field cannot be written as UTF-8 (a
    lone surrogate, which JSON's ``\\ud800`` escape can smuggle in).
    """
    obj = {"obis": obis, "t": t, "unit": unit, "value": value}
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BillingVerificationError(f"a reading field is not valid Unicode: {exc}") from None


def format_register_value(
    value: Decimal | int | float | str, int_digits: int = 6, decimals: int = 3
) -> str:
    """Write a register reading as it is signed: ``12345.6784`` -> ``"012345.678"``.

    ``int_digits`` and ``decimals`` are the register's P1 format (P1 §6.4, F9(3) is 6 and
    3). The value is rounded half-even to ``decimals`` places. Raises :class:`ValueError`
    for a negative value, a value too wide for the register, or one that is not a number:
    a meter's cumulative register never shows those.
    """
    try:
        number = Decimal(str(value)) if not isinstance(value, Decimal) else value
        quantum = Decimal(1).scaleb(-decimals)
        number = number.quantize(quantum, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        raise ValueError(f"not a register value: {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"not a register value: {value!r}")
    width = int_digits + (decimals + 1 if decimals else 0)
    text = f"{number:0{width}.{decimals}f}"
    if len(text) > width:
        raise ValueError(f"{value!r} does not fit a register of {int_digits} integer digits")
    return text


def format_interval_end(when: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, whole seconds: the preferred writing of ``t``."""
    if when.tzinfo is None:
        raise ValueError("format_interval_end needs an aware datetime")
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class BillingReading:
    """One signed interval reading: ``{"t", "obis", "value", "unit", "signature"}``."""

    t: str
    """End of the interval, RFC 3339."""
    obis: str
    """OBIS code with six value groups, ``1-0:1.8.1.255``."""
    value: str
    """The register reading as a decimal string with the register's fixed decimals."""
    unit: str
    """The register's unit, ``kWh`` or ``m3``."""
    signature: str
    """base64url (no padding) of the DER ECDSA P-256 SHA-256 signature."""

    def canonical_bytes(self) -> bytes:
        """The bytes the signature covers (module docstring, "The canonical form")."""
        return canonical_bytes(t=self.t, obis=self.obis, value=self.value, unit=self.unit)

    def content_problems(self) -> tuple[str, ...]:
        """What is wrong with the fields' content, apart from the signature's validity."""
        problems: list[str] = []
        if not _RFC3339.match(self.t):
            problems.append(f"t {self.t!r} is not an RFC 3339 time with an offset")
        else:
            try:
                datetime.fromisoformat(self.t.replace("z", "Z"))
            except ValueError:
                problems.append(f"t {self.t!r} is not a valid date and time")
        if not _OBIS.match(self.obis):
            problems.append(f"obis {self.obis!r} is not an OBIS code like 1-0:1.8.1.255")
        if not _DECIMAL.match(self.value):
            problems.append(f"value {self.value!r} is not a decimal like 012345.678")
        if not self.unit or len(self.unit) > 16 or not self.unit.isprintable():
            problems.append(f"unit {self.unit!r} is not a unit like kWh")
        if not _BASE64URL.match(self.signature):
            problems.append("signature is not base64url")
        return tuple(problems)

    @classmethod
    def parse(cls, obj: object, *, where: str = "reading") -> BillingReading:
        """Read one reading from decoded JSON; :class:`BillingVerificationError` if malformed."""
        if not isinstance(obj, Mapping):
            raise BillingVerificationError(f"{where} is not a JSON object")
        missing = sorted(READING_FIELDS - obj.keys())
        if missing:
            raise BillingVerificationError(f"{where} lacks {', '.join(missing)}")
        extra = sorted(str(k) for k in obj.keys() - READING_FIELDS)
        if extra:
            raise BillingVerificationError(
                f"{where} has fields that are not signed: {', '.join(extra)}"
            )
        for name in sorted(READING_FIELDS):
            if not isinstance(obj[name], str):
                hint = ' (write it as a string, e.g. "012345.678")' if name == "value" else ""
                raise BillingVerificationError(
                    f"{where}.{name} must be a string, got {_json_type(obj[name])}{hint}"
                )
        return cls(
            t=obj["t"],
            obis=obj["obis"],
            value=obj["value"],
            unit=obj["unit"],
            signature=obj["signature"],
        )

    def to_json(self) -> dict[str, str]:
        """The reading as it goes on the wire."""
        return {
            "t": self.t,
            "obis": self.obis,
            "value": self.value,
            "unit": self.unit,
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class BillingResponse:
    """The body of ``GET /api/meters/{equipment_id}/billing``.

    Top-level fields other than these are ignored when parsing (they are not signed and
    carry nothing a verifier uses); ``from`` and ``to`` are kept when present.
    """

    equipment_id: str
    certificate: str
    """The signing certificate, PEM."""
    readings: tuple[BillingReading, ...]
    from_: str | None = None
    to: str | None = None

    @classmethod
    def parse(cls, obj: object) -> BillingResponse:
        """Read a response from decoded JSON; :class:`BillingVerificationError` if malformed."""
        if not isinstance(obj, Mapping):
            raise BillingVerificationError(
                f"a billing response is a JSON object, got {_json_type(obj)}"
            )
        for name in ("equipment_id", "certificate", "readings"):
            if name not in obj:
                raise BillingVerificationError(f"the billing response lacks {name!r}")
        equipment_id = obj["equipment_id"]
        if not isinstance(equipment_id, str) or not equipment_id:
            raise BillingVerificationError("equipment_id must be a non-empty string")
        certificate = obj["certificate"]
        if not isinstance(certificate, str) or "-----BEGIN CERTIFICATE-----" not in certificate:
            raise BillingVerificationError("certificate must be a PEM certificate string")
        readings = obj["readings"]
        if not isinstance(readings, list):
            raise BillingVerificationError(
                f"readings must be a JSON array, got {_json_type(readings)}"
            )
        bounds: dict[str, str | None] = {}
        for name in ("from", "to"):
            bound = obj.get(name)
            if bound is not None and not isinstance(bound, str):
                raise BillingVerificationError(f"{name} must be a string")
            bounds[name] = bound
        return cls(
            equipment_id=equipment_id,
            certificate=certificate,
            readings=tuple(
                BillingReading.parse(r, where=f"readings[{i}]") for i, r in enumerate(readings)
            ),
            from_=bounds["from"],
            to=bounds["to"],
        )

    def to_json(self) -> dict[str, Any]:
        """The response as it goes on the wire."""
        out: dict[str, Any] = {"equipment_id": self.equipment_id}
        if self.from_ is not None:
            out["from"] = self.from_
        if self.to is not None:
            out["to"] = self.to
        out["certificate"] = self.certificate
        out["readings"] = [r.to_json() for r in self.readings]
        return out


def parse_billing_response(obj: object) -> BillingResponse:
    """Parse decoded JSON (or its text or bytes) as a billing response.

    Raises :class:`BillingVerificationError` with a message naming the problem when the
    input is not JSON or does not have the shape of the module docstring.
    """
    if isinstance(obj, bytes | bytearray | str):
        try:
            obj = json.loads(obj)
        except (ValueError, RecursionError) as exc:
            raise BillingVerificationError(f"not JSON: {exc}") from None
    return BillingResponse.parse(obj)


@dataclass(frozen=True, slots=True)
class ReadingFailure:
    """A reading that did not verify: where it is and why."""

    index: int
    t: str
    obis: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "t": self.t, "obis": self.obis, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """The outcome of verifying a billing response against a root CA."""

    equipment_id: str
    total: int
    """How many readings the response holds."""
    certificate_subject: str
    certificate_error: str | None
    """Why the signing certificate is not trusted; ``None`` when it is."""
    failures: tuple[ReadingFailure, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """The certificate is trusted and every reading's signature holds."""
        return self.certificate_error is None and not self.failures

    @property
    def valid(self) -> int:
        """How many readings verified."""
        return self.total - len(self.failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "equipment_id": self.equipment_id,
            "certificate": {
                "subject": self.certificate_subject,
                "trusted": self.certificate_error is None,
                "error": self.certificate_error,
            },
            "readings": self.total,
            "valid": self.valid,
            "failed": [f.to_json() for f in self.failures],
        }

    def summary(self) -> str:
        """A few human lines: the verdict, then one line per failing reading."""
        lines = []
        if self.certificate_error is not None:
            lines.append(f"certificate NOT trusted: {self.certificate_error}")
        else:
            lines.append(f"certificate trusted: {self.certificate_subject}")
        verdict = "OK" if self.ok else "FAILED"
        lines.append(
            f"{verdict}: {self.valid} of {self.total} readings of {self.equipment_id} verified"
        )
        for f in self.failures:
            lines.append(f"  reading {f.index} t={f.t} obis={f.obis}: {f.reason}")
        return "\n".join(lines)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
