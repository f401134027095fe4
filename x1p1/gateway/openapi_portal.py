"""The customer portal's routes in the OpenAPI document (X1 §3.1.5, §5.1.3, §9, §12.1).

The portal (:mod:`x1p1.gateway.portal.routes`) shares the API's HTTPS port (§9.1). Its
routes are not in the server's route table, so this module documents them with
:func:`x1p1.gateway.openapi.register_path`: the document at ``/api/openapi.json`` then
holds every route the server has. Pages answer HTML (``text/html``), a browser without a
session is sent to ``/login`` (303), forms are ``application/x-www-form-urlencoded`` and
answer with a redirect (303, the Post/Redirect/Get pattern) or an HTML error page; two
small JSON answers feed the pages' scripts (:data:`LOGIN_STATUS`, :data:`PORTAL_STATUS`).

:func:`document_portal` registers them (the gateway calls it when it mounts the portal).
"""

from __future__ import annotations

from typing import Any

from x1p1.gateway import openapi

SESSION: list[dict[str, list[str]]] = [{"portalSession": []}]
"""The portal's routes that need a logged-in browser."""

_HTML = {"text/html": {"schema": {"type": "string"}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": _HTML}


_REDIRECT = {
    "description": "See Other: to the page named in `Location`",
    "headers": {"Location": {"schema": {"type": "string"}}},
}
_TO_LOGIN = {
    "description": "See Other: not logged in (or the session ended): to /login",
    "headers": {"Location": {"schema": {"type": "string"}}},
}
_DISABLED = _html("X1 is switched off by the grid operator (§12.3): a page that says so")
_PAGE_RESPONSES = {"200": _html("The page"), "303": _TO_LOGIN, "503": _DISABLED}
_FORM_BODY = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["csrf"],
                "properties": {
                    "csrf": {
                        "type": "string",
                        "description": "The session's CSRF token "
                        "(the page's hidden field; or the X-CSRF-Token header)",
                    }
                },
            }
        }
    },
}
_ADMIN = (
    " A form of the admin functions (§9.2): needs the session, this site's `Origin` (and "
    "`Sec-Fetch-Site` same-origin when sent), the CSRF token, and admin access confirmed "
    "on the meter within the last 60 minutes (§9.2.2); the comlog records it (§2.2)."
)
_FORM = (
    " Needs the session, this site's `Origin` (and `Sec-Fetch-Site` same-origin when sent) "
    "and the CSRF token."
)
_FORM_ERRORS = {
    "303": _REDIRECT,
    "400": _html("A bad form field"),
    "401": _html("Not logged in"),
    "403": _html("Wrong origin or CSRF token, or no admin access"),
    "503": _DISABLED,
}

LOGIN_STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {
            "type": "string",
            "enum": ["none", "pending", "approved", "denied", "expired", "cancelled", "claimed"],
        },
        "code": {
            "type": "string",
            "pattern": "^[0-9]{4}$",
            "description": "The four digits the meter's display shows next to this login "
            "request (§5.1.5)",
        },
        "expires_in": {
            "type": "integer",
            "minimum": 0,
            "description": "Seconds the login request still waits",
        },
        "next": {
            "type": "string",
            "description": "Approved: where to go (the answer sets the session cookie)",
        },
    },
}
PORTAL_STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["session", "elevated", "elevation", "fingerprint"],
    "properties": {
        "session": {
            "type": "object",
            "required": ["session_id", "browser", "status", "created_at", "expires_at"],
            "properties": {
                "session_id": {"type": "string"},
                "browser": {"type": "string"},
                "user_agent": {"type": ["string", "null"]},
                "status": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "expires_at": {"type": "string", "format": "date-time"},
                "last_used": {"type": ["string", "null"], "format": "date-time"},
                "elevated_until": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "elevated": {"type": "boolean", "description": "Admin access is confirmed (§9.2.2)"},
        "elevation": {"type": ["string", "null"], "enum": ["pending", None]},
        "fingerprint": {
            "type": "string",
            "description": "Changes when what waits on the "
            "meter, the devices or the sessions change",
        },
    },
}


def _path_param(name: str, description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _page(op_id: str, summary: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": summary,
        "tags": ["portal"],
        "security": SESSION,
        "description": description,
        "responses": dict(_PAGE_RESPONSES),
        **extra,
    }


def _admin(
    op_id: str,
    summary: str,
    description: str,
    *params: dict[str, Any],
    body: dict[str, Any] | None = None,
    elevated: bool = True,
    responses: dict[str, Any] | None = None,
) -> dict[str, Any]:
    checks = _ADMIN if elevated else _FORM
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": ["portal"],
        "security": SESSION,
        "description": description + checks,
        "requestBody": body or _FORM_BODY,
        "responses": {**_FORM_ERRORS, **(responses or {})},
    }
    if params:
        op["parameters"] = list(params)
    return op


def _form_with(fields: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["csrf", *required],
                    "properties": {"csrf": {"type": "string"}, **fields},
                }
            }
        },
    }


_PROFILES = {
    "type": "array",
    "items": {"$ref": "#/components/schemas/Profile"},
    "description": "Repeated field: the profiles to grant (§5.1.6)",
}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/"): _page(
        "portal-overview",
        "Portal: the installation",
        "The meters, their registers now, devices and what waits on the meter.",
    ),
    ("GET", "/live"): _page(
        "portal-live",
        "Portal: live values",
        "A chart of the power now, fed by /api/realtime over the session.",
    ),
    ("GET", "/history"): _page(
        "portal-history",
        "Portal: history",
        "History of a meter by period (§9.1), from the same store as the measurements API; "
        "nothing from before a history block.",
        parameters=[
            {
                "name": "meter",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["electricity", "gas"]},
            },
            {
                "name": "resolution",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["5m", "15m", "1h", "1d", "1M"]},
            },
            {
                "name": "obis",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "Repeated: the objects shown",
            },
            {
                "name": "start",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "The period's anchor (ISO date or date-time)",
            },
        ],
        responses={**_PAGE_RESPONSES, "400": _html("A bad parameter")},
    ),
    ("GET", "/history.csv"): {
        "operationId": "portal-history-csv",
        "summary": "Portal: history as CSV",
        "tags": ["portal"],
        "security": SESSION,
        "description": "The history page's selection as CSV (the measurements API's rows); "
        "takes the history page's parameters, and `from`/`to` (RFC 3339) for another period.",
        "responses": {
            "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
            "401": _html("Not logged in"),
            "400": _html("A bad parameter"),
            "404": _html("No history"),
            "503": _DISABLED,
        },
    },
    ("GET", "/devices"): _page(
        "portal-devices", "Portal: devices", "Tokens, sessions and what waits on the meter (§9.1)."
    ),
    ("GET", "/comlog"): _page(
        "portal-comlog", "Portal: comlog", "The comlog (§2.2): every access to the meter's data."
    ),
    ("GET", "/privacy"): _page(
        "portal-privacy", "Portal: privacy", "The history block (§11, §12.1) and what it does."
    ),
    ("GET", "/api-docs"): _page(
        "portal-api-docs", "Portal: API documentation", "This document as a page (§9.1)."
    ),
    ("GET", "/login"): {
        "operationId": "portal-login-page",
        "summary": "Portal: log in",
        "tags": ["portal"],
        "security": [],
        "description": "The login page; while a login request waits, its "
        "code, to compare with the meter's display (§5.1.3).",
        "responses": {"200": _html("The page"), "303": _REDIRECT, "503": _DISABLED},
    },
    ("POST", "/login"): {
        "operationId": "portal-login",
        "summary": "Portal: ask to log in",
        "tags": ["portal"],
        "security": [],
        "description": "Puts a login request on the meter's display "
        "(§5.1.3); approve it with the meter's button (`x1p1 meter approve`). Sets the "
        "`__Host-x1p1-login` cookie for 10 minutes. Too many waiting: 429 with Retry-After.",
        "responses": {
            "303": _REDIRECT,
            "403": _html("Not from this site"),
            "429": {
                **_html("Too many login requests wait"),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
            "503": _DISABLED,
        },
    },
    ("GET", "/login/status"): {
        "operationId": "portal-login-status",
        "summary": "Portal: the login request's state",
        "tags": ["portal"],
        "security": [],
        "description": "For the waiting page's script, by the login cookie. Approved: sets "
        "the session cookie.",
        "responses": {
            "200": {
                "description": "The state",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/LoginStatus"}}
                },
            },
            "503": _DISABLED,
        },
    },
    ("POST", "/logout"): {
        "operationId": "portal-logout",
        "summary": "Portal: log out",
        "tags": ["portal"],
        "security": SESSION,
        "description": "Ends this browser's session (CSRF token needed).",
        "requestBody": _FORM_BODY,
        "responses": {
            "303": _REDIRECT,
            "403": _html("Wrong origin or CSRF token"),
            "503": _DISABLED,
        },
    },
    ("GET", "/lang/{lang}"): {
        "operationId": "portal-language",
        "summary": "Portal: choose the language",
        "tags": ["portal"],
        "security": [],
        "description": "Sets the `x1p1-lang` cookie and goes back to `next` (a path here).",
        "parameters": [
            _path_param("lang", "nl or en"),
            {"name": "next", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {"303": _REDIRECT, "404": _html("No such language"), "503": _DISABLED},
    },
    ("GET", "/portal/status"): {
        "operationId": "portal-status",
        "summary": "Portal: session and admin access",
        "tags": ["portal"],
        "security": SESSION,
        "description": "For the devices and privacy pages' scripts: the session, whether "
        "admin access is confirmed, and a fingerprint of what may need a reload.",
        "responses": {
            "200": {
                "description": "The state",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PortalStatus"}}
                },
            },
            "401": _html("Not logged in"),
            "503": _DISABLED,
        },
    },
    ("GET", "/root-ca.pem"): {
        "operationId": "portal-root-ca",
        "summary": "The gateway's root CA (§10.2)",
        "tags": ["portal"],
        "security": [],
        "description": "The root certificate that issued the TLS and billing certificates, "
        "PEM, to install in a browser or pass as `--ca`.",
        "responses": {
            "200": {
                "description": "PEM",
                "content": {"application/x-pem-file": {"schema": {"type": "string"}}},
            },
            "404": _html("Not available"),
        },
    },
    ("GET", "/portal/static/{version}/{name}"): {
        "operationId": "portal-static",
        "summary": "Portal: scripts and styles",
        "tags": ["portal"],
        "security": [],
        "description": "The portal's own assets; cached for a year under the current version.",
        "parameters": [_path_param("version"), _path_param("name")],
        "responses": {"200": {"description": "The file"}, "404": _html("No such file")},
    },
    ("GET", "/portal/vendor/plotly-{version}.min.js"): {
        "operationId": "portal-plotly",
        "summary": "Portal: the charting library",
        "tags": ["portal"],
        "security": [],
        "description": "plotly.js from its installed package (gzip when accepted).",
        "parameters": [_path_param("version")],
        "responses": {
            "200": {
                "description": "JavaScript",
                "content": {"text/javascript": {"schema": {"type": "string"}}},
            },
            "404": _html("Another version"),
        },
    },
    ("POST", "/admin/elevate"): _admin(
        "portal-elevate",
        "Portal: ask for admin access",
        "Puts an admin-access request on the meter's display (§9.2.2); confirmed there, "
        "admin access lasts 60 minutes.",
        elevated=False,
    ),
    ("POST", "/admin/unelevate"): _admin(
        "portal-unelevate", "Portal: end admin access", "Ends admin access now.", elevated=False
    ),
    ("POST", "/admin/requests/{request_id}/approve"): _admin(
        "portal-approve",
        "Portal: approve a request",
        "Approves a token request (optionally other profiles, §5.1.6) or a login.",
        _path_param("request_id"),
        body=_form_with({"profiles": _PROFILES}, []),
        responses={"404": _html("No such request"), "409": _html("No longer pending")},
    ),
    ("POST", "/admin/requests/{request_id}/deny"): _admin(
        "portal-deny",
        "Portal: deny a request",
        "Denies a token or login request.",
        _path_param("request_id"),
        responses={"404": _html("No such request"), "409": _html("No longer pending")},
    ),
    ("POST", "/admin/devices/{token_id}/profiles"): _admin(
        "portal-set-profiles",
        "Portal: change a device's profiles",
        "Grants a device other profiles (§5.1.6); its streams it may no longer read close "
        "with 4403.",
        _path_param("token_id"),
        body=_form_with({"profiles": _PROFILES}, ["profiles"]),
        responses={"404": _html("No such device")},
    ),
    ("POST", "/admin/devices/{token_id}/revoke"): _admin(
        "portal-revoke",
        "Portal: remove a device",
        "Revokes a device's token; its sockets close with 4401.",
        _path_param("token_id"),
        responses={"404": _html("No such device")},
    ),
    ("POST", "/admin/sessions/{session_id}/revoke"): _admin(
        "portal-revoke-session",
        "Portal: end a browser's session",
        "Ends a portal session (this one too).",
        _path_param("session_id"),
        responses={"404": _html("No such session")},
    ),
    ("POST", "/admin/block-history"): _admin(
        "portal-block-history",
        "Portal: block history (§11, §12.1)",
        "Blocks history irreversibly, as the meter's button combination does (`x1p1 meter "
        "block-history`): nothing from before now is shown again by the API, the portal or "
        "a download; every token and every portal session is revoked (open sockets close "
        "with 4401); the comlog records it; new history accrues from now. The form's "
        "`confirm` must be `yes`.",
        body=_form_with({"confirm": {"type": "string", "enum": ["yes"]}}, ["confirm"]),
    ),
}
"""The portal's routes by (method, path), as aiohttp's router names them."""


def document_portal() -> None:
    """Put the portal's routes and schemas into the OpenAPI document (idempotent)."""
    openapi.SCHEMAS.setdefault("LoginStatus", LOGIN_STATUS)
    openapi.SCHEMAS.setdefault("PortalStatus", PORTAL_STATUS)
    for (method, path), operation in OPERATIONS.items():
        openapi.register_path(method, path, operation)
