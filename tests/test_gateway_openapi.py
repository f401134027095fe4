"""The OpenAPI 3.1 document at ``/api/openapi.json`` against the running gateway:
it is valid OpenAPI 3.1, every route the server's router has is in it (the API's
and the portal's), and real answers of a live gateway — successes, every error, WebSocket
messages, portal pages and forms — have a status the document lists for that operation
and a body that validates against its schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from gateway_fixture import ALL_PROFILES, Reply, RunningGateway
from history_support import EVER, MeterClock, history_gateway, portal_cookie, q
from openapi_spec_validator import validate
from test_portal_http import Client

from x1p1.gateway.openapi import OPERATIONS
from x1p1.gateway.server import ROUTES_KEY


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Any]]:
    clock = MeterClock(ticking=True)
    with history_gateway(tmp_path_factory.mktemp("openapi") / "gw", clock) as pair:
        yield pair


@pytest.fixture(scope="module")
def document(live: tuple[RunningGateway, Any]) -> dict[str, Any]:
    gw, _ = live
    reply = gw.request("GET", "/api/openapi.json")
    assert reply.status == 200
    body: dict[str, Any] = reply.json
    return body


def router_routes(gw: RunningGateway) -> set[tuple[str, str]]:
    """(method, path) of every route aiohttp's router of the running gateway has."""
    assert gw.gateway is not None and gw.gateway._runner is not None
    app = gw.gateway._runner.app
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # added by aiohttp beside each GET
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str), info
        found.add((route.method, path))
    return found


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # type: ignore[arg-type]
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_every_route_of_the_server_is_documented(
    live: tuple[RunningGateway, Any], document: dict[str, Any]
) -> None:
    gw, _ = live
    routes = router_routes(gw)
    assert ("GET", "/api/meters/{equipment_id}/measurements") in routes
    assert ("POST", "/admin/block-history") in routes
    for method, path in routes:
        assert path in document["paths"], (method, path)
        operation = document["paths"][path].get(method.lower())
        assert operation is not None, (method, path)
        assert operation["description"] != "Not documented yet.", (method, path)
        assert operation["responses"], (method, path)
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert documented == routes  # nothing documented that the server lacks
    assert gw.gateway is not None and gw.gateway._runner is not None
    for route in gw.gateway._runner.app[ROUTES_KEY]:
        assert route.name in OPERATIONS, route.name


def test_websockets_document_their_parameters_and_close_codes(document: dict[str, Any]) -> None:
    for path, names in (
        ("/api/realtime", {"equipment_id", "obis", "interval"}),
        ("/api/legacy-p1", {"interval"}),
    ):
        operation = document["paths"][path]["get"]
        assert {p["name"] for p in operation["parameters"]} == names
        closes = operation["x-websocket"]["close-codes"]
        assert {"1000", "1001", "4400", "4401", "4403", "4503"} <= set(closes)
    for name in ("measurements", "billing"):
        [operation] = [
            op
            for item in document["paths"].values()
            for op in item.values()
            if op["operationId"] == name
        ]
        assert set(operation["responses"]) == {"200", "400", "401", "403", "404", "429", "503"}
        assert "Retry-After" in document["components"]["responses"]["RateLimited"]["headers"]


class Checker:
    """Checks answers against the document and remembers which operations were seen."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: dict[tuple[str, str], set[str]] = {}

    def _resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def schema_check(self, value: Any, schema: dict[str, Any]) -> None:
        full = {**schema, "components": self.document["components"]}
        jsonschema.Draft202012Validator(full).validate(value)

    def check(self, method: str, path: str, reply: Reply) -> Reply:
        operation = self.document["paths"][path][method.lower()]
        status = str(reply.status)
        assert status in operation["responses"], (method, path, status, reply.body[:200])
        self.seen.setdefault((method, path), set()).add(status)
        response = self._resolve(operation["responses"][status])
        for header in response.get("headers", {}):
            assert header.lower() in reply.headers, (method, path, status, header)
        content = response.get("content")
        if not content:
            return reply
        kind = reply.headers.get("content-type", "").split(";")[0].strip()
        assert kind in content, (method, path, status, kind, list(content))
        schema = content[kind].get("schema")
        if kind == "application/json" and schema is not None:
            self.schema_check(reply.json, schema)
        return reply

    def error(self, reply: Reply) -> None:
        """An error for which no operation exists (an unknown path, a wrong method)."""
        self.schema_check(reply.json, {"$ref": "#/components/schemas/Error"})


def test_real_answers_validate_against_the_document(
    live: tuple[RunningGateway, Any], document: dict[str, Any]
) -> None:
    gw, mono = live
    c = Checker(document)
    e_id, g_id = gw.electricity_id, gw.gas_id

    # pairing
    requests = "/api/tokens/requests"
    body = {
        "name": "openapi test",
        "uuid": "3f1c1b8e-3f53-4c59-9b4a-2d1f8f0c2a11",
        "profiles": ["P1"],
    }
    created = c.check("POST", requests, gw.request("POST", requests, json=body)).json
    c.check("POST", requests, gw.request("POST", requests, json={"name": ""}))
    one = f"{requests}/{{request_id}}"
    c.check("GET", one, gw.request("GET", f"{requests}/{created['request_id']}"))
    c.check("GET", one, gw.request("GET", f"{requests}/nothing"))
    c.check("GET", one, gw.request("GET", f"{requests}/{created['request_id']}?x=1"))
    gw.control.approve(created["request_id"])
    c.check("GET", one, gw.request("GET", f"{requests}/{created['request_id']}"))
    token = gw.pair(list(ALL_PROFILES), name="openapi all")
    c.check("GET", "/api/token", gw.request("GET", "/api/token", token=token))
    c.check("GET", "/api/token", gw.request("GET", "/api/token"))
    browser = Client(gw)  # a portal session reads the API with its cookie: a real uuid
    browser.log_in()
    cookie = {"Cookie": f"__Host-x1p1-session={browser.jar['__Host-x1p1-session']}"}
    by_cookie = gw.request("GET", "/api/token", headers=cookie)
    assert by_cookie.status == 200 and by_cookie.json["name"].startswith("portal: ")
    c.check("GET", "/api/token", by_cookie)
    c.check("GET", "/api/token", gw.request("GET", "/api/token?x=1", token=token))
    leaving = gw.pair(["P1"], name="openapi leaving")
    c.check("DELETE", "/api/token", gw.request("DELETE", "/api/token", token=leaving))
    c.check("DELETE", "/api/token", gw.request("DELETE", "/api/token", token=leaving))
    c.check("DELETE", "/api/token", gw.request("DELETE", "/api/token?x=1", token=token))
    replies = [  # sixteen hosts, one each, then a seventeenth: at most 16 pending
        gw.token_request(name=f"many {i}", source=f"127.0.1.{1 + i}") for i in range(17)
    ]
    [throttled, *_] = [r for r in replies if r.status == 429]  # at most 16 pending
    c.check("POST", requests, throttled)
    for request in gw.control.requests():
        gw.control.deny(request["request_id"])

    # meters
    p1 = gw.pair(["P1"], name="openapi p1")
    c.check("GET", "/api/meters", gw.request("GET", "/api/meters", token=token))
    c.check("GET", "/api/meters", gw.request("GET", "/api/meters"))
    c.check("GET", "/api/meters", gw.request("GET", "/api/meters?x=1", token=token))
    meter = "/api/meters/{equipment_id}"
    for equipment in (e_id, g_id):
        c.check("GET", meter, gw.request("GET", f"/api/meters/{equipment}", token=token))
    c.check("GET", meter, gw.request("GET", "/api/meters/E000", token=token))
    c.check("GET", meter, gw.request("GET", f"/api/meters/{e_id}?x=1", token=token))
    e_hist = gw.pair(["E-HISTORIC"], name="openapi e")
    c.check("GET", meter, gw.request("GET", f"/api/meters/{g_id}", token=e_hist))
    c.check("GET", meter, gw.request("GET", f"/api/meters/{e_id}"))

    # history and billing
    measurements = "/api/meters/{equipment_id}/measurements"
    billing = "/api/meters/{equipment_id}/billing"
    for equipment, obis, resolution in (
        (e_id, "1-0:1.8.1.255,0-0:96.7.21.255", "1d"),
        (g_id, "0-1:24.2.1.255", "5m"),
    ):
        mono.advance(100)
        path = f"/api/meters/{equipment}/measurements" + q(obis=obis, resolution=resolution, **EVER)
        c.check("GET", measurements, gw.request("GET", path, token=token))
        mono.advance(100)
        c.check(
            "GET",
            billing,
            gw.request("GET", f"/api/meters/{equipment}/billing" + q(**EVER), token=token),
        )
    mono.advance(100)
    bad = f"/api/meters/{e_id}/measurements" + q(obis="1-0:1.8.1.255", resolution="2h", **EVER)
    c.check("GET", measurements, gw.request("GET", bad, token=token))
    c.check("GET", billing, gw.request("GET", f"/api/meters/{e_id}/billing?to=x", token=token))
    good = f"/api/meters/{e_id}/measurements" + q(obis="1-0:1.8.1.255", resolution="1h", **EVER)
    c.check("GET", measurements, gw.request("GET", good, token=p1))
    c.check(
        "GET", billing, gw.request("GET", f"/api/meters/{g_id}/billing" + q(**EVER), token=e_hist)
    )
    c.check("GET", measurements, gw.request("GET", good.replace(e_id, "E000"), token=token))
    c.check("GET", billing, gw.request("GET", "/api/meters/E000/billing" + q(**EVER), token=token))
    c.check("GET", measurements, gw.request("GET", good))
    c.check("GET", billing, gw.request("GET", f"/api/meters/{e_id}/billing" + q(**EVER)))
    for _ in range(12):
        reply = gw.request("GET", good, token=e_hist)
    c.check("GET", measurements, reply)
    c.check(
        "GET", billing, gw.request("GET", f"/api/meters/{e_id}/billing" + q(**EVER), token=e_hist)
    )

    # the WebSockets: handshake errors, then a real stream
    realtime, legacy = "/api/realtime", "/api/legacy-p1"
    stream = (
        f"{realtime}?equipment_id={e_id},{g_id}&obis=1-0:1.7.0.255,0-0:96.7.21.255,"
        "0-1:24.2.1.255&interval=1"
    )
    c.check("GET", realtime, gw.request("GET", stream, token=token))  # no Upgrade: 400
    c.check("GET", realtime, gw.request("GET", stream))
    c.check("GET", realtime, gw.request("GET", stream, token=p1))
    c.check("GET", legacy, gw.request("GET", legacy, token=token))
    c.check("GET", legacy, gw.request("GET", legacy))
    c.check("GET", legacy, gw.request("GET", legacy, token=e_hist))
    c.check("GET", legacy, gw.request("GET", f"{legacy}?interval=0", token=token))

    async def streams() -> tuple[list[Any], str]:
        async with gw.ws(stream, token=token) as ws:
            messages = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        async with gw.ws(legacy, token=token) as ws:
            telegram = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(telegram, str)
        return messages, telegram

    messages, telegram = asyncio.run(streams())
    for message in messages:
        c.schema_check(message, document["paths"][realtime]["get"]["x-websocket"]["messages"])
    assert telegram.startswith("/") and "!" in telegram
    for path in (realtime, legacy):
        c.seen[("GET", path)].add("101")

    # meta, and errors without an operation
    c.check("GET", "/api/openapi.json", gw.request("GET", "/api/openapi.json"))
    c.error(gw.request("GET", "/api/nothing"))
    wrong = gw.request("PUT", "/api/token", token=token)
    assert wrong.status == 405
    c.error(wrong)

    # the portal
    cookie = portal_cookie(gw)
    session = {"Cookie": cookie}
    for path in ("/", "/live", "/history", "/devices", "/comlog", "/privacy", "/api-docs"):
        c.check("GET", path, gw.request("GET", path, headers=session))
        c.check("GET", path, gw.request("GET", path))
    c.check("GET", "/history.csv", gw.request("GET", "/history.csv?meter=gas", headers=session))
    c.check("GET", "/history.csv", gw.request("GET", "/history.csv"))
    c.check("GET", "/login", gw.request("GET", "/login"))
    c.check("GET", "/login", gw.request("GET", "/login", headers=session))
    c.check(
        "POST",
        "/login",
        gw.request("POST", "/login", body=b"", headers={"Origin": "https://evil.example"}),
    )
    c.check("GET", "/login/status", gw.request("GET", "/login/status"))
    c.check("GET", "/lang/{lang}", gw.request("GET", "/lang/en?next=/live"))
    c.check("GET", "/lang/{lang}", gw.request("GET", "/lang/xx"))
    c.check("GET", "/portal/status", gw.request("GET", "/portal/status", headers=session))
    c.check("GET", "/portal/status", gw.request("GET", "/portal/status"))
    c.check("GET", "/root-ca.pem", gw.request("GET", "/root-ca.pem"))
    c.check(
        "GET", "/portal/static/{version}/{name}", gw.request("GET", "/portal/static/0/nothing.js")
    )
    c.check(
        "GET",
        "/portal/vendor/plotly-{version}.min.js",
        gw.request("GET", "/portal/vendor/plotly-0.min.js"),
    )
    forms = [
        "/logout",
        "/admin/elevate",
        "/admin/unelevate",
        "/admin/requests/x/approve",
        "/admin/requests/x/deny",
        "/admin/devices/x/profiles",
        "/admin/devices/x/revoke",
        "/admin/sessions/x/revoke",
        "/admin/block-history",
    ]
    templates = {
        "/admin/requests/x/approve": "/admin/requests/{request_id}/approve",
        "/admin/requests/x/deny": "/admin/requests/{request_id}/deny",
        "/admin/devices/x/profiles": "/admin/devices/{token_id}/profiles",
        "/admin/devices/x/revoke": "/admin/devices/{token_id}/revoke",
        "/admin/sessions/x/revoke": "/admin/sessions/{session_id}/revoke",
    }
    for form in forms:  # without a CSRF token: refused, never done
        reply = gw.request(
            "POST",
            form,
            body=b"csrf=no",
            headers={
                **session,
                "Origin": gw.url,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        c.check("POST", templates.get(form, form), reply)
        assert reply.status in (403, 303)
    c.check("POST", "/login", gw.request("POST", "/login", body=b"", headers={"Origin": gw.url}))

    # X1 switched off: 503 on every operation that lists it
    gw.control.operator("disable")
    try:
        c.check("GET", measurements, gw.request("GET", good, token=token))
        c.check(
            "GET",
            billing,
            gw.request("GET", f"/api/meters/{e_id}/billing" + q(**EVER), token=token),
        )
        c.check("GET", "/api/openapi.json", gw.request("GET", "/api/openapi.json"))
        c.check("GET", "/", gw.request("GET", "/", headers=session))
    finally:
        gw.control.operator("enable")

    api = {
        (m.upper(), p)
        for p, item in document["paths"].items()
        for m in item
        if p.startswith("/api")
    }
    assert api <= set(c.seen), api - set(c.seen)
    for name in ("measurements", "billing"):
        path = measurements if name == "measurements" else billing
        assert c.seen[("GET", path)] == {"200", "400", "401", "403", "404", "429", "503"}, name
    portal = {
        (m.upper(), p)
        for p, item in document["paths"].items()
        for m in item
        if not p.startswith("/api")
    }
    assert portal <= set(c.seen), portal - set(c.seen)
