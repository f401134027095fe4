"""The X1 API as an OpenAPI 3.1 document, served at ``/api/openapi.json``.

x1-api.md: "Where this file is silent, choose what a careful implementer would and write
it into the project's OpenAPI document." So the choices the standard leaves open are
written here, next to the routes they describe: error bodies and codes, the WebSocket
messages and close codes (under ``x-websocket``, since OpenAPI has no WebSocket
operations), the throttles of pairing, the order of checks.

:func:`document` builds the document from the server's route table: every route must
have an operation in :data:`OPERATIONS` (the tests check), keyed by the route's name.
Other parts add theirs with :func:`register` and their schemas to :data:`SCHEMAS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from x1p1.x1.api import MAX_BODY, X1_VERSION
from x1p1.x1.profiles import Profile


class RouteLike(Protocol):
    """What the document needs of a route (:class:`x1p1.gateway.server.Route`)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def auth(self) -> bool: ...
    @property
    def websocket(self) -> bool: ...
    @property
    def summary(self) -> str: ...
    @property
    def tags(self) -> tuple[str, ...]: ...


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_TIME = {
    "type": "string",
    "format": "date-time",
    "description": "RFC 3339 in UTC with whole seconds, e.g. 2026-01-15T12:00:00Z",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {
                "type": "string",
                "enum": [
                    "bad-request",
                    "unauthorized",
                    "forbidden-profile",
                    "not-found",
                    "request-not-pending",
                    "rate-limited",
                    "x1-disabled",
                    "method-not-allowed",
                    "internal-error",
                ],
            },
            "message": {
                "type": "string",
                "description": "A sentence for people; for bad-request it names the parameter.",
            },
            "missing": {
                "type": "array",
                "items": _ref("Profile"),
                "description": "forbidden-profile: profiles any of which would do",
            },
        },
    },
    "Profile": {
        "type": "string",
        "enum": [p.value for p in Profile],
        "description": "A data profile of X1 §5.3, Table 3.",
    },
    "TokenRequestBody": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "uuid", "profiles"],
        "properties": {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "A name the customer recognises (printable characters)",
            },
            "uuid": {
                "type": "string",
                "format": "uuid",
                "description": "The device's own id, the same on every request",
            },
            "profiles": {"type": "array", "items": _ref("Profile"), "minItems": 1},
        },
    },
    "TokenRequestState": {
        "type": "object",
        "required": ["request_id", "status", "expires_at"],
        "properties": {
            "request_id": {
                "type": "string",
                "pattern": "^[0-9a-f]{32}$",
                "description": "Opaque, 128 random bits in hex",
            },
            "code": {
                "type": "string",
                "pattern": "^[0-9]{4}$",
                "description": "The four digits the meter's display shows next to this "
                "request (§5.1.5): tell the customer to approve the request with this code",
            },
            "status": {"type": "string", "enum": ["pending", "approved", "denied", "expired"]},
            "expires_at": {
                **_TIME,
                "description": "The request's end: 10 minutes after it "
                "was made (§5.1.4); its id answers until then, an approved one a minute "
                "longer",
            },
            "token": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{43}$",
                "description": "Only when approved: the API token (256 bits, base64url)",
            },
            "profiles": {
                "type": "array",
                "items": _ref("Profile"),
                "description": "Only when approved: the profiles granted (§5.1.6)",
            },
        },
    },
    "TokenInfo": {
        "type": "object",
        "required": ["name", "uuid", "profiles", "expires_at"],
        "properties": {
            "name": {"type": "string"},
            "uuid": {"type": "string", "format": "uuid"},
            "profiles": {"type": "array", "items": _ref("Profile")},
            "expires_at": {**_TIME, "description": "90 days after the last use (§5.2)"},
        },
    },
    "Meter": {
        "type": "object",
        "required": ["equipment_id", "type", "channel"],
        "properties": {
            "equipment_id": {"type": "string"},
            "type": {"type": "string", "enum": ["electricity", "gas"]},
            "channel": {
                "type": "integer",
                "minimum": 0,
                "maximum": 4,
                "description": "0 for the electricity meter; the M-Bus channel of "
                "a gas meter (value group B of its OBIS codes)",
            },
        },
    },
    "MeterList": {
        "type": "object",
        "required": ["meters"],
        "properties": {"meters": {"type": "array", "items": _ref("Meter")}},
    },
    "ObisObjectInfo": {
        "type": "object",
        "required": ["obis", "description", "unit", "format", "profiles"],
        "properties": {
            "obis": {"type": "string", "description": "Six value groups: 1-0:1.8.1.255"},
            "description": {"type": "string"},
            "description_nl": {"type": "string", "description": "The standard's Dutch"},
            "unit": {"type": ["string", "null"]},
            "format": {"type": "string", "description": "Numeric(9,3), String or List"},
            "profiles": {
                "type": "array",
                "items": _ref("Profile"),
                "description": "The caller's profiles that read this object",
            },
        },
    },
    "Retention": {
        "type": "object",
        "required": ["resolution", "retention", "max_values"],
        "properties": {
            "resolution": {"type": "string", "enum": ["5m", "15m", "1h", "1d", "1M"]},
            "retention": {"type": "string", "description": "As Table 8 words it: 7 days"},
            "max_values": {"type": "integer"},
        },
    },
    "MeterInfo": {
        "allOf": [_ref("Meter")],
        "type": "object",
        "required": ["equipment_id", "type", "channel", "objects", "resolutions"],
        "properties": {
            "objects": {"type": "array", "items": _ref("ObisObjectInfo")},
            "resolutions": {"type": "array", "items": _ref("Retention")},
        },
    },
    "PowerFailure": {
        "type": "object",
        "description": "One entry of the power-failure event log (§6.2.4, P1 §7.1)",
        "required": ["t", "duration_s"],
        "additionalProperties": False,
        "properties": {
            "t": {**_TIME, "description": "When the failure ended"},
            "duration_s": {"type": "integer", "minimum": 0, "description": "Its length, s"},
        },
    },
    "RealtimeMessage": {
        "type": "object",
        "required": ["equipment_id", "t", "values"],
        "properties": {
            "equipment_id": {"type": "string"},
            "t": {
                **_TIME,
                "description": "The moment of the values; for gas the capture "
                "time of its 5-minute reading",
            },
            "values": {
                "type": "object",
                "description": "By six-group OBIS code: numbers with the decimals of their "
                "format; the equipment id as a string; the power-failure log "
                "1-0:99.97.0.255 as a list of PowerFailure, newest first (§6.2.4)",
                "properties": {
                    "1-0:99.97.0.255": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/PowerFailure"},
                    }
                },
                "additionalProperties": {"type": ["number", "string"]},
            },
        },
    },
}
"""Schemas of the document's ``components``."""

_ERRORS: dict[str, tuple[str, str]] = {
    "400": (
        "BadRequest",
        "Malformed parameters or body (bad-request); the message names "
        "the parameter. Bodies over 16 KB, bad JSON and unknown parameters too.",
    ),
    "401": ("Unauthorized", "No token, or an unknown, expired or revoked one (unauthorized)"),
    "403": (
        "Forbidden",
        "The token lacks a profile (forbidden-profile); `missing` lists "
        "the profiles any of which would do",
    ),
    "404": ("NotFound", "Unknown meter, request or path (not-found)"),
    "409": ("Conflict", "The request is no longer pending (request-not-pending)"),
    "429": ("RateLimited", "Too many requests (rate-limited); see Retry-After"),
    "503": (
        "Disabled",
        "The grid operator switched X1 off (x1-disabled, §12.3); every "
        "/api path answers this while it is off",
    ),
}

RESPONSES: dict[str, Any] = {name: _json(_ref("Error"), text) for name, text in _ERRORS.values()}
RESPONSES["RateLimited"]["headers"] = {
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
}
RESPONSES["Unauthorized"]["headers"] = {
    "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="X1"'}
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/{_ERRORS[code][0]}"} for code in codes}


def _interval() -> dict[str, Any]:
    return {
        "name": "interval",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 3600, "default": 1},
        "description": "Whole seconds between messages (at most one a second, §7.2); "
        "messages fall on wall-clock seconds that are multiples of it",
    }


_WS_CLOSES = {
    "1000": "normal closure (the client closed)",
    "1001": "the gateway is shutting down",
    "4400": "bad-request: the client sent a message (these sockets only send)",
    "4401": "unauthorized: the token was revoked (DELETE /api/token, the meter, the "
    "portal, a newer token of the same device) or expired",
    "4403": "forbidden-profile: the token's profiles were changed (§5.1.6) and no longer "
    "cover this stream",
    "4429": "rate-limited: the token already holds 8 open streams (x1-api.md); closed at "
    "once after the upgrade",
    "4503": "x1-disabled: the grid operator switched X1 off (§12.3)",
}

OPERATIONS: dict[str, dict[str, Any]] = {
    "token-request-create": {
        "description": (
            "Ask for an API token (§5.1.2). The answer carries a four-digit `code` that the "
            "meter's display shows next to the request: the customer approves or denies the "
            "request with that code on the meter (`x1p1 meter approve|deny --code NNNN`), "
            "with the profiles as asked (§5.1.5), or in the portal, which may grant other "
            "profiles (§5.1.6). A request lives 10 minutes, then expires (§5.1.4). At most "
            "16 requests pend at once (429 until the oldest expires), and at most 2 per "
            "client address: a third replaces that address's oldest. A new request of a "
            "device (uuid) replaces its pending one. Three "
            "denials of one uuid within an hour: 429 for an hour after the third (§5.1.7); "
            "expiries do not count. Approving gives the device one token: an earlier token "
            "of the same uuid is revoked."
        ),
        "requestBody": {
            "required": True,
            "description": f"At most {MAX_BODY} bytes",
            "content": {"application/json": {"schema": _ref("TokenRequestBody")}},
        },
        "responses": {
            "202": _json(_ref("TokenRequestState"), "Pending; poll its id"),
            **_errors("400", "429", "503"),
        },
    },
    "token-request-get": {
        "description": (
            "Poll a token request. Approved: the answer carries the token and the granted "
            "profiles; the id is the only key to the token. The id answers until 10 minutes "
            "after the request was made (an approved one a minute longer), then 404. Poll "
            "every few seconds."
        ),
        "parameters": [
            {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": _json(_ref("TokenRequestState"), "The request's state"),
            **_errors("400", "404", "503"),
        },
    },
    "token-get": {
        "description": "The caller's token: name, uuid, profiles and expiry. Every use of a "
        "token renews it to 90 days (§5.2).",
        "responses": {"200": _json(_ref("TokenInfo"), "The token"), **_errors("400", "401", "503")},
    },
    "token-delete": {
        "description": "The device unpairs itself: the token is revoked and its open "
        "WebSockets close with 4401.",
        "responses": {"204": {"description": "Revoked"}, **_errors("400", "401", "503")},
    },
    "meters-list": {
        "description": "The meters the token has some profile for (§8.1); others are not "
        "shown. The P1 profile reads both (the telegram carries both).",
        "responses": {
            "200": _json(_ref("MeterList"), "The meters"),
            **_errors("400", "401", "503"),
        },
    },
    "meter-get": {
        "description": "One meter: the OBIS objects the token may read and the resolutions "
        "of history with their retention (Table 8).",
        "parameters": [
            {"name": "equipment_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": _json(_ref("MeterInfo"), "The meter"),
            **_errors("400", "401", "403", "404", "503"),
        },
    },
    "legacy-p1": {
        "description": (
            "WebSocket (wss://). Needs the P1 profile. Each text message is one whole DSMR "
            "5.0.2 P1 telegram exactly as on the P1 wire: `/` header through `!` and four "
            "upper-case hex CRC digits, CR LF line ends (§6.2.7). A slow client gets the "
            "newest telegram, not a backlog. The handshake is refused with the HTTP status "
            "and JSON error below."
        ),
        "parameters": [_interval()],
        "responses": {
            "101": {"description": "Switching Protocols: the stream starts"},
            **_errors("400", "401", "403", "503"),
        },
        "x-websocket": {
            "messages": {"type": "string", "description": "A P1 telegram"},
            "close-codes": _WS_CLOSES,
        },
    },
    "realtime": {
        "description": (
            "WebSocket (wss://). Every interval, one text message per meter named: "
            "RealtimeMessage. Each OBIS code must be a realtime object (§6.2.1, §6.2.3, "
            "§6.2.4) of one of the meters named, and each meter named must get one; the "
            "token needs E-REALTIME, PQ-REALTIME or G-REALTIME for each object (403 lists "
            "the profiles that would do). Codes may have five or six value groups; gas codes "
            "may be written with `n` for the channel. Values are keyed by the six-group code."
        ),
        "parameters": [
            {
                "name": "equipment_id",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": "Comma-separated equipment ids",
            },
            {
                "name": "obis",
                "in": "query",
                "required": True,
                "schema": {"type": "string"},
                "description": "Comma-separated OBIS codes, e.g. 1-0:1.7.0.255,0-1:24.2.1.255",
            },
            _interval(),
        ],
        "responses": {
            "101": {"description": "Switching Protocols: the stream starts"},
            **_errors("400", "401", "403", "503"),
        },
        "x-websocket": {"messages": _ref("RealtimeMessage"), "close-codes": _WS_CLOSES},
    },
    "openapi": {
        "description": "This document.",
        "responses": {
            "200": {
                "description": "OpenAPI 3.1",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **_errors("503"),
        },
    },
}
"""Operation objects by route name."""


def register(name: str, operation: Mapping[str, Any]) -> None:
    """Document another route."""
    OPERATIONS[name] = dict(operation)


PATHS: dict[tuple[str, str], dict[str, Any]] = {}
"""Operations of routes that are not in the server's route table (the portal's pages and
forms, :mod:`x1p1.gateway.openapi_portal`), by (method, path): :func:`document` adds them
after the table's, so every route the server has is in the document."""


def register_path(method: str, path: str, operation: Mapping[str, Any]) -> None:
    """Document a route the server has outside :data:`ROUTES` (its ``operationId`` and
    ``security`` are the operation's own)."""
    PATHS[(method.upper(), path)] = dict(operation)


def document(routes: Iterable[RouteLike]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = dict(
            OPERATIONS.get(route.name)
            or {
                "description": "Not documented yet.",
                "responses": {"default": {"description": "See the source"}},
            }
        )
        operation["operationId"] = route.name
        if route.summary:
            operation["summary"] = route.summary
        if route.tags:
            operation["tags"] = list(route.tags)
        operation["security"] = [{"bearer": []}] if route.auth else []
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    for (method, path), extra in PATHS.items():
        paths.setdefault(path, {}).setdefault(method.lower(), dict(extra))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "X1 API of the x1p1 embedded DSMR6 gateway",
            "version": X1_VERSION,
            "description": (
                "The X1 customer interface of a DSMR6 gateway (X1 Companion Standard "
                f"{X1_VERSION}), as x1p1 reads it. HTTPS and WSS on one port, TLS 1.3 only, "
                "certificate from the gateway's own root CA (`x1p1 gateway ca`). Every error "
                'body is {"error": code, "message": sentence}. Checks run in this order: '
                "X1 switched off (503), then the token (401), then the call's own profile "
                "(403) and parameter (400) checks. Unknown query parameters are a 400."
            ),
        },
        "servers": [{"url": "https://X1-interface.local"}],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from POST /api/tokens/requests",
                },
                "portalSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "__Host-x1p1-session",
                    "description": "The customer portal's session (§5.1.3), "
                    "set once a login is approved on the meter. It also opens "
                    "the API's GET routes with every profile (from the "
                    "gateway's own origin)",
                },
            },
        },
    }
