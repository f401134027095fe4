"""The X1 API's wire models, shared by the embedded gateway and the converter.

Value objects that parse, check and serialize themselves (x1-api.md; X1 §5.1–§5.3,
§7–§8): the token request a device sends (§5.1.2), the request's state it polls, the
token's own description, and the query parameters both WebSocket endpoints take (§7.2,
§8.2). Parsing raises :class:`~x1p1.exceptions.BadRequest` naming the bad field, so the
gateway answers 400 with that message and a client learns the same sentence.
"""

from __future__ import annotations

import enum
import re
import uuid as uuid_module
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from x1p1.exceptions import BadRequest
from x1p1.x1.profiles import Profile, parse_profiles, sorted_profiles

API_PREFIX = "/api"
TOKEN_REQUESTS = "/api/tokens/requests"
TOKEN = "/api/token"
METERS = "/api/meters"
LEGACY_P1 = "/api/legacy-p1"
REALTIME = "/api/realtime"
OPENAPI = "/api/openapi.json"

REQUEST_LIFETIME = timedelta(minutes=10)
"""A token request is valid for 10 minutes, then denied automatically (§5.1.4)."""
TOKEN_LIFETIME = timedelta(days=90)
"""Tokens and login sessions are valid 90 days and renewed on use (§5.2)."""
MAX_BODY = 16 * 1024
"""Request bodies over this are refused with 400."""

SERVICE_TYPE = "_dsmr-x1-interface._tcp.local."
"""The DNS-SD service type of §4.3.3 (17 characters: register with strict=False)."""
DEFAULT_HOST_NAME = "X1-interface"
"""The gateway's mDNS host name (§4.3.3): ``X1-interface.local``, then ``-1``, ``-2`` …"""
DEFAULT_PORT = 8443
"""The simulator's default port (a real gateway uses 443)."""
X1_VERSION = "6.0.0"

_NAME_MAX = 64
_CODE = re.compile(r"[0-9]{4}\Z")
"""A request's display code: four digits (§5.1.5)."""


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with ``Z`` and whole seconds, as every X1 timestamp is written."""
    if moment.tzinfo is None:
        raise ValueError("format_time() needs an aware datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object, field: str) -> datetime:
    """Parse an RFC 3339 time with an offset (``Z`` or ``+01:00``); BadRequest names
    ``field`` when it is not one. RFC 3339 §5.6 lets ``T`` and ``Z`` be lower case."""
    if not isinstance(text, str) or not re.match(
        r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)\Z", text
    ):
        raise BadRequest(f"{field}: {text!r} is not an RFC 3339 time like 2026-01-15T12:00:00Z")
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except ValueError:
        raise BadRequest(f"{field}: {text!r} is not a valid time") from None
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past the year 9999 in UTC
        raise BadRequest(f"{field}: {text!r} is out of range") from None


POWER_FAILURE_LOG = "1-0:99.97.0.255"
"""The power-failure event log (Table 4, P1 §7.1): in X1 JSON a list of
:func:`power_failure_json` entries, newest first."""


def power_failure_json(end: datetime, duration_s: int) -> dict[str, Any]:
    """One entry of the power-failure log as X1 JSON (§6.2.4, x1-api.md):
    ``{"t": "<RFC 3339 end of the failure>", "duration_s": N}``."""
    return {"t": format_time(end), "duration_s": int(duration_s)}


def _require(body: Mapping[str, Any], field: str) -> Any:
    if field not in body:
        raise BadRequest(f"{field}: missing")
    return body[field]


class RequestStatus(enum.StrEnum):
    """The life of a token request (§5.1.4–§5.1.6); see :mod:`x1p1.x1.grants`."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class TokenRequestBody:
    """``POST /api/tokens/requests``: what a device asks for (§5.1.2)."""

    name: str
    uuid: str
    profiles: frozenset[Profile]

    @classmethod
    def parse(cls, body: object) -> TokenRequestBody:
        if not isinstance(body, Mapping):
            raise BadRequest("body: a JSON object with name, uuid and profiles expected")
        unknown = set(body) - {"name", "uuid", "profiles"}
        if unknown:
            raise BadRequest(f"body: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        name = _require(body, "name")
        if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX or not name.isprintable():
            raise BadRequest(f"name: 1 to {_NAME_MAX} printable characters expected")
        raw_uuid = _require(body, "uuid")
        try:
            parsed = uuid_module.UUID(raw_uuid) if isinstance(raw_uuid, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise BadRequest("uuid: a UUID like 0b5c2f0e-… expected")
        profiles = _require(body, "profiles")
        if not isinstance(profiles, list):
            raise BadRequest("profiles: a list of profile names expected")
        return cls(name, str(parsed), parse_profiles(profiles))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uuid": self.uuid, "profiles": sorted_profiles(self.profiles)}


@dataclass(frozen=True, slots=True)
class TokenRequestState:
    """A token request as the gateway reports it (``POST`` 202 and ``GET …/{id}``).

    ``token`` and the granted ``profiles`` are there only when approved (§5.1.6: they
    may differ from those asked).
    """

    request_id: str
    status: RequestStatus
    expires_at: datetime
    token: str | None = None
    profiles: frozenset[Profile] | None = None
    code: str | None = None
    """The four digits the meter's display shows next to the request (§5.1.5)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "status": self.status.value,
            "expires_at": format_time(self.expires_at),
        }
        if self.code is not None:
            out["code"] = self.code
        if self.status is RequestStatus.APPROVED:
            out["token"] = self.token
            out["profiles"] = sorted_profiles(self.profiles or ())
        return out

    @classmethod
    def parse(cls, body: object) -> TokenRequestState:
        if not isinstance(body, Mapping):
            raise BadRequest("token request: a JSON object expected")
        try:
            status = RequestStatus(_require(body, "status"))
        except ValueError:
            raise BadRequest(f"status: unknown value {body.get('status')!r}") from None
        request_id = _require(body, "request_id")
        if not isinstance(request_id, str) or not request_id:
            raise BadRequest("request_id: a string expected")
        expires_at = parse_time(_require(body, "expires_at"), "expires_at")
        token = body.get("token")
        profiles = body.get("profiles")
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, str) and _CODE.match(raw_code) else None
        if status is RequestStatus.APPROVED:
            if not isinstance(token, str) or not token:
                raise BadRequest("token: missing from an approved request")
            if not isinstance(profiles, list):
                raise BadRequest("profiles: missing from an approved request")
            return cls(request_id, status, expires_at, token, parse_profiles(profiles), code)
        return cls(request_id, status, expires_at, code=code)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """``GET /api/token``: what the gateway knows of the caller's token (§5.2)."""

    name: str
    uuid: str
    profiles: frozenset[Profile]
    expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "profiles": sorted_profiles(self.profiles),
            "expires_at": format_time(self.expires_at),
        }

    @classmethod
    def parse(cls, body: object) -> TokenInfo:
        if not isinstance(body, Mapping):
            raise BadRequest("token: a JSON object expected")
        name, uuid = _require(body, "name"), _require(body, "uuid")
        profiles = _require(body, "profiles")
        if not isinstance(name, str) or not isinstance(uuid, str):
            raise BadRequest("token: name and uuid must be strings")
        if not isinstance(profiles, list):
            raise BadRequest("profiles: a list expected")
        expires_at = parse_time(body.get("expires_at"), "expires_at")
        return cls(name, uuid, parse_profiles(profiles), expires_at)


def parse_interval(params: Mapping[str, str]) -> int:
    """``interval``: whole seconds ≥ 1 between messages, at most one a second (§7.2).

    Absent means 1. At most 3600."""
    raw = params.get("interval", "1")
    # isdigit() alone lets "²" and 5000-digit strings through to int(), which raises
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= 3600:
        raise BadRequest(f"interval: {raw!r} is not a whole number of seconds from 1 to 3600")
    return int(raw)


def parse_list(params: Mapping[str, str], field: str) -> list[str]:
    """A required comma-separated list parameter (``equipment_id``, ``obis``)."""
    raw = params.get(field)
    if raw is None or not raw.strip():
        raise BadRequest(f"{field}: missing")
    items = [item.strip() for item in raw.split(",")]
    if any(not item for item in items) or len(items) > 64:
        raise BadRequest(f"{field}: a comma-separated list of at most 64 items expected")
    return items


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
