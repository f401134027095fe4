"""The X1 API's history and billing routes (X1 §6.2.5–§6.2.6, §7.3, §8.1; x1-api.md, REST).

- ``GET /api/meters/{equipment_id}/measurements?obis=&resolution=&from=&to=``: one
  resolution per call (§8.1), at most the Table 8 count of readings, only the objects
  the token's ``*-HISTORIC`` profiles read; parsed by
  :func:`~x1p1.x1.history.parse_measurements_query`.
- ``GET /api/meters/{equipment_id}/billing?from=&to=``: the signed interval readings,
  electricity every 15 minutes (``E-BILLING``), gas hourly (``G-BILLING``); parsed by
  :func:`~x1p1.x1.billing_query.parse_billing_query`.

Both answer from what the gateway recorded (:class:`~x1p1.gateway.history_service.
HistoryService`): intervals it did not record are absent (§12.2), nothing from before a
history block is ever returned (§12.1). Their JSON is written by SQLite and sent as it
comes: a request only reads. A portal session's cookie opens them too (the server's
``COOKIE_AUTH``), with the customer's full view.

Checks, in order: X1 switched off (503), the token (401), the meter (404), the rate limit
(429 with ``Retry-After``: both routes share one bucket per token), the parameters (400
naming the one at fault), the token's profiles (403 with ``missing``).

The routes' OpenAPI operations and schemas are registered here with
:func:`x1p1.gateway.openapi.register`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from x1p1.gateway import handlers, openapi
from x1p1.gateway.history_service import HISTORY_KEY, HistoryService
from x1p1.gateway.server import Route, token_of
from x1p1.x1.api import METERS
from x1p1.x1.billing_query import BILLING_OBJECTS, parse_billing_query
from x1p1.x1.history import TABLE_8, parse_measurements_query
from x1p1.x1.obis import Meter
from x1p1.x1.ratelimit import CAPACITY, REFILL_SECONDS

MEASUREMENTS = METERS + "/{equipment_id}/measurements"
BILLING = METERS + "/{equipment_id}/billing"


def _json_text(text: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _service(request: web.Request) -> HistoryService:
    return request.app[HISTORY_KEY]


async def get_measurements(request: web.Request) -> web.StreamResponse:
    """``GET /api/meters/{equipment_id}/measurements`` (§7.3, §8.1)."""
    service = _service(request)
    token = token_of(request)
    ref = handlers.find_meter(service.state.meters, request.match_info["equipment_id"])
    service.take(token)
    channel = ref.channel if ref.meter is Meter.GAS else 1
    q = parse_measurements_query(
        request.query, ref.meter, token.profiles, channel=channel, now=service.meter_now()
    )
    await service.ready()
    q = q.after(service.blocked_at())
    return _json_text(service.history.response_text(ref.equipment_id, q))


async def get_billing(request: web.Request) -> web.StreamResponse:
    """``GET /api/meters/{equipment_id}/billing`` (§6.2.5, §6.2.6)."""
    service = _service(request)
    token = token_of(request)
    ref = handlers.find_meter(service.state.meters, request.match_info["equipment_id"])
    service.take(token)
    q = parse_billing_query(request.query, ref.meter, token.profiles, now=service.meter_now())
    await service.ready()
    q = q.after(service.blocked_at())
    text = service.billing.response_text(ref.equipment_id, q, service.certificate_pem)
    return _json_text(text)


HISTORY_ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        MEASUREMENTS,
        get_measurements,
        "measurements",
        summary="History of one meter at one resolution (§7.3, §8.1)",
        tags=("history",),
    ),
    Route(
        "GET",
        BILLING,
        get_billing,
        "billing",
        summary="Signed billing interval readings (§6.2.5, §6.2.6)",
        tags=("billing",),
    ),
)
"""The history and billing routes, added to the server's table by the gateway."""


# --- the OpenAPI document ----------------------------------------------------------------------

_TIME = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 in UTC with whole seconds, e.g. 2026-01-15T12:00:00Z",
}
_RATE = (
    f"Rate-limited per token (§7.3): a bucket of {CAPACITY} calls, one more every "
    f"{REFILL_SECONDS:g} s; measurements and billing share it, and every authenticated "
    "call for a known meter takes one, whatever its answer. Past it: 429 `rate-limited` "
    "with `Retry-After` (whole seconds until the next call would pass)."
)
_ORDER = (
    "Checks in this order: X1 off (503), token (401), meter (404), rate limit (429), "
    "parameters (400, naming the parameter), profiles (403, with `missing`)."
)
_RETENTION = "; ".join(
    f"{row.meter.value} `{row.resolution.value}` {row.period} ({row.count})" for row in TABLE_8
)

openapi.SCHEMAS["Measurements"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["equipment_id", "resolution", "from", "to", "units", "readings"],
    "properties": {
        "equipment_id": {"type": "string"},
        "resolution": {"type": "string", "enum": ["5m", "15m", "1h", "1d", "1M"]},
        "from": {
            **_TIME,
            "description": "The period's start: `from` as asked, moved forward "
            "to the oldest interval end kept when it reached further back",
        },
        "to": {**_TIME, "description": "The period's end, as asked"},
        "units": {
            "type": "object",
            "additionalProperties": {"type": ["string", "null"]},
            "description": "The unit of each object asked (null: a count)",
        },
        "readings": {
            "type": "array",
            "maxItems": 730,
            "description": "Oldest first; at most the Table 8 count (the newest). Intervals "
            "the gateway did not record are absent (§12.2), never zero",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["t", "values"],
                "properties": {
                    "t": {**_TIME, "description": "The interval's end"},
                    "values": {
                        "type": "object",
                        "additionalProperties": {"type": "number"},
                        "description": "By six-group OBIS code: the registers' or "
                        "counters' values at `t`",
                    },
                },
            },
        },
    },
}
openapi.SCHEMAS["BillingReading"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["t", "obis", "value", "unit", "signature"],
    "properties": {
        "t": {**_TIME, "description": "The interval's end"},
        "obis": {
            "type": "string",
            "description": "Six value groups: 1-0:1.8.1.255, gas 0-1:24.2.1.255",
        },
        "value": {
            "type": "string",
            "pattern": "^[0-9]{6}\\.[0-9]{3}$",
            "description": "The register as signed: its X1 format, Numeric(9,3), "
            "zero-padded: 012345.678",
        },
        "unit": {"type": "string", "enum": ["kWh", "m3"]},
        "signature": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]+$",
            "description": "base64url (no padding) of the DER ECDSA P-256 SHA-256 "
            "signature over the canonical JSON of t, obis, unit and value: keys "
            "sorted, no whitespace, UTF-8 (RFC 8785)",
        },
    },
}
openapi.SCHEMAS["BillingResponse"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["equipment_id", "from", "to", "certificate", "readings"],
    "properties": {
        "equipment_id": {"type": "string"},
        "from": {
            **_TIME,
            "description": "The period's start, moved forward to the oldest "
            "interval end kept when it reached further back",
        },
        "to": _TIME,
        "certificate": {
            "type": "string",
            "description": "The signing certificate, PEM, "
            "issued by the gateway's root CA (`x1p1 gateway ca`) with the "
            "extended key usage 2.25.117999916522225088799586670660867091049",
        },
        "readings": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/BillingReading"},
            "maxItems": len(BILLING_OBJECTS[Meter.ELECTRICITY]) * 672,
            "description": "Oldest interval first, registers in code order",
        },
    },
}


_errors = openapi._errors


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": True,
        "schema": schema or {"type": "string"},
        "description": description,
    }


_EQUIPMENT_ID = {
    "name": "equipment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_PERIOD = [
    _query(
        "from",
        "RFC 3339 with an offset (`Z` or `%2B01:00`): the earliest interval end wanted, inclusive",
        {"type": "string", "format": "date-time"},
    ),
    _query(
        "to",
        "RFC 3339 with an offset: the latest interval end wanted, inclusive; after `from`",
        {"type": "string", "format": "date-time"},
    ),
]

openapi.register(
    "measurements",
    {
        "description": (
            "The history of one meter (§7.3, §8.1): the registers (E-HISTORIC, G-HISTORIC) and "
            "power-quality counters (PQ-HISTORIC) at the end of each interval of one resolution "
            "(§8.1: one per call). Resolutions, retention and the most values one answer holds "
            f"(Table 8): {_RETENTION}. Days and months follow Dutch local time (a day ends at "
            "local midnight, 23 or 25 hours on DST days); 5m, 15m and 1h are aligned on UTC. The "
            "period is inclusive at both ends; one reaching beyond retention is clamped, not "
            "refused. Intervals the gateway did not record (it was down, §12.2) are absent; "
            "nothing from before a history block (§12.1) is ever returned. Only objects the "
            f"token's profiles read: otherwise 403 with `missing`. {_RATE} {_ORDER}"
        ),
        "parameters": [
            _EQUIPMENT_ID,
            _query(
                "obis",
                "Comma-separated OBIS codes of historic objects of this meter (five or "
                "six value groups; gas with its channel, e.g. 0-1:24.2.1.255), at most 64",
            ),
            _query(
                "resolution",
                "One of the meter's resolutions: 15m, 1h, 1d, 1M (electricity); "
                "5m, 1h, 1d, 1M (gas)",
                {"type": "string", "enum": ["5m", "15m", "1h", "1d", "1M"]},
            ),
            *_PERIOD,
        ],
        "responses": {
            "200": {
                "description": "The readings",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Measurements"}}
                },
            },
            **_errors("400", "401", "403", "404", "429", "503"),
        },
    },
)

openapi.register(
    "billing",
    {
        "description": (
            "Signed interval readings for billing (§6.2.5–§6.2.6): the electricity meter's "
            "four registers every 15 minutes (E-BILLING), the gas meter's volume every hour "
            "(G-BILLING). The readings are those the gateway recorded in history, each signed "
            "once when its interval closed, with ECDSA P-256 by a signing certificate its root "
            "CA issued; the answer carries that certificate. `x1p1 verify-billing FILE --ca "
            "ROOT` checks a saved answer. Retention as the matching history resolution: 7 days "
            "(672 quarter hours) for electricity, 30 days (720 hours) for gas; one answer holds "
            "at most that many intervals (the newest), so at most 2688 readings for electricity "
            "and 720 for gas. The period is inclusive at both ends; one reaching beyond "
            "retention is clamped. Intervals not recorded (§12.2) and anything from before a "
            f"history block (§12.1) are absent. {_RATE} {_ORDER}"
        ),
        "parameters": [_EQUIPMENT_ID, *_PERIOD],
        "responses": {
            "200": {
                "description": "The signed readings",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/BillingResponse"}}
                },
            },
            **_errors("400", "401", "403", "404", "429", "503"),
        },
    },
)
