"""The gateway's REST API over real TLS on loopback: pairing, tokens, meters, bad input,
the operator's switch, TLS 1.3 only, and the OpenAPI document (x1-api.md)."""

from __future__ import annotations

import socket
import ssl
import uuid as uuid_module
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from gateway_fixture import ALL_PROFILES, RunningGateway, gateway, running_gateway

from x1p1.exceptions import NotFound, RequestNotPending
from x1p1.x1.obis import OBJECTS, Meter

__all__ = ["gateway"]  # the fixture


JSON = {"Content-Type": "application/json"}


def _error(reply: object, status: int, code: str) -> dict[str, object]:
    from gateway_fixture import Reply

    assert isinstance(reply, Reply)
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json
    assert isinstance(body, dict) and body["error"] == code and body["message"], body
    return body


# --- pairing paths -------------------------------------------------------------------------


def test_pair_by_approval_on_the_meter(gateway: RunningGateway) -> None:
    reply = gateway.token_request(["P1", "E-REALTIME"], name="x1p1 on raspberrypi")
    assert reply.status == 202
    body = reply.json
    assert (
        set(body) == {"request_id", "status", "expires_at", "code"} and body["status"] == "pending"
    )
    assert len(body["request_id"]) >= 22  # 128 random bits
    assert reply.headers["cache-control"] == "no-store"
    pending = gateway.control.requests()
    assert [r["request_id"] for r in pending] == [body["request_id"]]
    assert pending[0]["name"] == "x1p1 on raspberrypi"
    result = gateway.control.approve()  # the button: the oldest pending request
    assert result["request"]["status"] == "approved" and "secret" not in str(result)
    state = gateway.request("GET", f"/api/tokens/requests/{body['request_id']}").json
    assert state["status"] == "approved" and state["profiles"] == ["P1", "E-REALTIME"]
    token = state["token"]
    assert len(token) == 43
    info = gateway.request("GET", "/api/token", token=token).json
    assert info["name"] == "x1p1 on raspberrypi" and info["profiles"] == ["P1", "E-REALTIME"]
    assert gateway.control.requests() == []
    assert [t["token_id"] for t in gateway.control.tokens()] == [result["token"]["token_id"]]


def test_approve_with_other_profiles(gateway: RunningGateway) -> None:
    token = gateway.pair(["P1", "E-HISTORIC"], granted=["P1"])
    assert gateway.request("GET", "/api/token", token=token).json["profiles"] == ["P1"]


def test_deny(gateway: RunningGateway) -> None:
    request_id = gateway.token_request().json["request_id"]
    gateway.control.deny(request_id)
    state = gateway.request("GET", f"/api/tokens/requests/{request_id}").json
    assert state == {
        "request_id": request_id,
        "status": "denied",
        "expires_at": state["expires_at"],
        "code": state["code"],
    }
    with pytest.raises(RequestNotPending):
        gateway.control.approve(request_id)
    with pytest.raises(NotFound):
        gateway.control.deny()  # nothing pending


def test_expire_after_ten_minutes(gateway: RunningGateway) -> None:
    assert gateway.clock is not None
    request_id = gateway.token_request().json["request_id"]
    gateway.clock.advance(timedelta(minutes=9, seconds=50))
    state = gateway.request("GET", f"/api/tokens/requests/{request_id}").json
    assert state["status"] == "pending"
    gateway.clock.advance(timedelta(seconds=10))
    # expired: off the display, cannot be approved, and its id no longer answers
    assert gateway.control.requests() == []
    with pytest.raises(RequestNotPending):
        gateway.control.approve(request_id)
    _error(gateway.request("GET", f"/api/tokens/requests/{request_id}"), 404, "not-found")


def test_a_newer_request_of_the_same_device_expires_the_older(gateway: RunningGateway) -> None:
    device = str(uuid_module.uuid4())
    first = gateway.token_request(uuid=device).json["request_id"]
    second = gateway.token_request(uuid=device).json["request_id"]
    state = gateway.request("GET", f"/api/tokens/requests/{first}").json
    assert state["status"] == "expired"
    assert [r["request_id"] for r in gateway.control.requests()] == [second]


def test_throttle_after_three_denials(gateway: RunningGateway) -> None:
    assert gateway.clock is not None
    device = str(uuid_module.uuid4())
    for _ in range(3):
        assert gateway.token_request(uuid=device).status == 202
        gateway.control.deny()
        gateway.clock.advance(timedelta(minutes=5))
    reply = gateway.token_request(uuid=device)
    _error(reply, 429, "rate-limited")
    retry = int(reply.headers["retry-after"])
    assert 3300 <= retry <= 3600
    assert gateway.token_request().status == 202  # another device still may
    gateway.clock.advance(timedelta(seconds=retry))
    assert gateway.token_request(uuid=device).status == 202


def test_at_most_sixteen_pending(gateway: RunningGateway) -> None:
    # sixteen hosts of the home network, one request each: no host holds two, so none
    # gives way to a newcomer (x1-api.md)
    for host in range(1, 17):
        assert gateway.token_request(source=f"127.0.1.{host}").status == 202
    reply = gateway.token_request(source="127.0.1.17")
    _error(reply, 429, "rate-limited")
    assert 0 < int(reply.headers["retry-after"]) <= 600


def test_unpair_with_delete(gateway: RunningGateway) -> None:
    token = gateway.pair()
    reply = gateway.request("DELETE", "/api/token", token=token)
    assert reply.status == 204
    body = _error(gateway.request("GET", "/api/token", token=token), 401, "unauthorized")
    assert "revoked" in str(body["message"])
    assert gateway.control.tokens() == []


def test_token_expires_after_90_days_and_use_renews_it(gateway: RunningGateway) -> None:
    assert gateway.clock is not None
    token = gateway.pair()
    gateway.clock.advance(timedelta(days=89))
    assert gateway.request("GET", "/api/token", token=token).status == 200
    gateway.clock.advance(timedelta(days=89))
    assert gateway.request("GET", "/api/token", token=token).status == 200
    gateway.clock.advance(timedelta(days=90))
    body = _error(gateway.request("GET", "/api/token", token=token), 401, "unauthorized")
    assert "expired" in str(body["message"])


def test_auto_approve(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw", auto_approve=True) as gw:
        reply = gw.token_request(["P1"])
        assert reply.status == 202 and reply.json["status"] == "pending"
        state = gw.request("GET", f"/api/tokens/requests/{reply.json['request_id']}").json
        assert state["status"] == "approved" and state["token"]


def test_tokens_and_requests_survive_a_restart(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw") as gw:
        token = gw.pair(["P1", "G-REALTIME"])
        request_id = gw.token_request().json["request_id"]
        gw.control.approve(request_id)  # approved, but not fetched before the restart
    with running_gateway(tmp_path / "gw") as gw:
        assert gw.request("GET", "/api/token", token=token).json["profiles"] == [
            "P1",
            "G-REALTIME",
        ]
        state = gw.request("GET", f"/api/tokens/requests/{request_id}").json
        assert state["status"] == "approved"
        assert gw.request("GET", "/api/token", token=state["token"]).status == 200


# --- meters ----------------------------------------------------------------------------------


def test_meters_lists_only_meters_the_token_may_read(gateway: RunningGateway) -> None:
    cases = {
        ("E-REALTIME",): ["electricity"],
        ("PQ-HISTORIC",): ["electricity"],
        ("G-BILLING",): ["gas"],
        ("P1",): ["electricity", "gas"],
        ("E-BILLING", "G-HISTORIC"): ["electricity", "gas"],
    }
    for profiles, types in cases.items():
        token = gateway.pair(profiles)
        meters = gateway.request("GET", "/api/meters", token=token).json["meters"]
        assert [m["type"] for m in meters] == types, profiles
        for meter in meters:
            assert set(meter) == {"equipment_id", "type", "channel"}
            assert meter["channel"] == (0 if meter["type"] == "electricity" else 1)


def test_describe_meter(gateway: RunningGateway) -> None:
    token = gateway.pair(["E-REALTIME", "G-HISTORIC"])
    meters = gateway.request("GET", "/api/meters", token=token).json["meters"]
    gas_id = next(m["equipment_id"] for m in meters if m["type"] == "gas")
    e_id = next(m["equipment_id"] for m in meters if m["type"] == "electricity")
    info = gateway.request("GET", f"/api/meters/{e_id}", token=token).json
    assert info["type"] == "electricity" and info["equipment_id"] == e_id
    expected = [
        o.code for o in OBJECTS if o.meter is Meter.ELECTRICITY and "E-REALTIME" in o.profiles
    ]
    assert [o["obis"] for o in info["objects"]] == expected
    power = next(o for o in info["objects"] if o["obis"] == "1-0:1.7.0.255")
    assert power["unit"] == "kW" and power["format"] == "Numeric(6,3)"
    assert [(r["resolution"], r["max_values"]) for r in info["resolutions"]] == [
        ("15m", 672),
        ("1h", 720),
        ("1d", 730),
        ("1M", 60),
    ]
    gas = gateway.request("GET", f"/api/meters/{gas_id}", token=token).json
    assert {o["obis"] for o in gas["objects"]} == {
        "0-1:24.1.0.255",
        "0-1:96.1.0.255",
        "0-1:24.2.1.255",
    }
    assert gas["resolutions"][0] == {"resolution": "5m", "retention": "1 hour", "max_values": 12}
    _error(gateway.request("GET", "/api/meters/E999", token=token), 404, "not-found")


def test_describe_a_meter_without_its_profile_is_forbidden(gateway: RunningGateway) -> None:
    token = gateway.pair(["E-REALTIME"])
    body = _error(
        gateway.request("GET", f"/api/meters/{gateway.gas_id}", token=token),
        403,
        "forbidden-profile",
    )
    assert "G-REALTIME" in body["missing"]  # type: ignore[operator]


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{bad json",
        b"",
        b"\xff\xfe\x00",
        b"[" * 5000 + b"]" * 5000,
        b'"a string"',
        b"[]",
        b'{"name": "x", "uuid": "not-a-uuid", "profiles": ["P1"]}',
        b'{"name": "", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab", "profiles": ["P1"]}',
        b'{"name": "x", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab", "profiles": []}',
        b'{"name": "x", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab", "profiles": ["X"]}',
        b'{"name": "x", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab", "profiles": "P1"}',
        b'{"name": "\\u0000", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab", "profiles": []}',
        b'{"name": "x", "uuid": "0b5c2f0e-3c1d-4d6e-9f00-1234567890ab", "profiles": ["P1"],'
        b' "extra": 1}',
    ],
)
def test_bad_token_request_bodies_are_400(gateway: RunningGateway, body: bytes) -> None:
    reply = gateway.request("POST", "/api/tokens/requests", body=body, headers=JSON)
    _error(reply, 400, "bad-request")


def test_bodies_over_16_kb_are_400(gateway: RunningGateway) -> None:
    big = b'{"name": "' + b"x" * 17000 + b'"}'
    reply = gateway.request("POST", "/api/tokens/requests", body=big, headers=JSON)
    body = _error(reply, 400, "bad-request")
    assert "16 KB" in str(body["message"])


def test_chunked_body_over_16_kb_is_400(gateway: RunningGateway) -> None:
    conn = socket.create_connection(("127.0.0.1", gateway.port))
    with gateway.ssl_context().wrap_socket(conn, server_hostname="127.0.0.1") as tls:
        chunk = b"x" * 8192
        head = (
            b"POST /api/tokens/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        tls.sendall(head + b"".join(b"2000\r\n" + chunk + b"\r\n" for _ in range(3)))
        tls.sendall(b"0\r\n\r\n")
        answer = b""
        while data := tls.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"bad-request"' in answer


def test_unknown_paths_and_methods(gateway: RunningGateway) -> None:
    _error(gateway.request("GET", "/api/nothing"), 404, "not-found")
    _error(gateway.request("GET", "/api/"), 404, "not-found")  # "/" is the portal
    reply = gateway.request("PUT", "/api/token")
    _error(reply, 405, "method-not-allowed")
    assert "DELETE" in reply.headers["allow"]


def test_unknown_parameters_are_400(gateway: RunningGateway) -> None:
    token = gateway.pair(["E-REALTIME"])
    body = _error(gateway.request("GET", "/api/meters?x=1", token=token), 400, "bad-request")
    assert str(body["message"]).startswith("x:")


def test_unknown_request_id_is_404(gateway: RunningGateway) -> None:
    _error(gateway.request("GET", "/api/tokens/requests/nope"), 404, "not-found")
    _error(gateway.request("GET", "/api/tokens/requests/" + "a" * 200), 404, "not-found")


# --- tokens on the wire ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer ", "Basic abc", "Bearer short", "Bearer " + "A" * 43, "bearer x y"],
)
def test_no_or_bad_tokens_are_401(gateway: RunningGateway, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    reply = gateway.request("GET", "/api/token", headers=headers)
    _error(reply, 401, "unauthorized")
    assert reply.headers["www-authenticate"].startswith("Bearer")


# --- the grid operator (§12.3) -----------------------------------------------------------------


def test_operator_disable_answers_503_everywhere(gateway: RunningGateway) -> None:
    token = gateway.pair(list(ALL_PROFILES))
    assert gateway.control.operator("disable") == {"x1_enabled": False, "changed": True}
    for method, path, tok in [
        ("GET", "/api/token", token),
        ("GET", "/api/meters", token),
        ("GET", f"/api/meters/{gateway.electricity_id}", token),
        ("POST", "/api/tokens/requests", None),
        ("GET", "/api/tokens/requests/x", None),
        ("GET", "/api/openapi.json", None),
        ("GET", "/api/unknown", None),
        ("DELETE", "/api/token", token),
        ("GET", "/api/token", None),
    ]:
        _error(gateway.request(method, path, token=tok), 503, "x1-disabled")
    assert gateway.control.operator("disable")["changed"] is False
    assert gateway.control.operator("enable") == {"x1_enabled": True, "changed": True}
    assert gateway.request("GET", "/api/token", token=token).status == 200


def test_operator_switch_survives_a_restart(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw") as gw:
        gw.control.operator("disable")
    with running_gateway(tmp_path / "gw") as gw:
        _error(gw.request("GET", "/api/openapi.json"), 503, "x1-disabled")
        assert gw.control.status()["x1_enabled"] is False


def test_operator_read(gateway: RunningGateway) -> None:
    reading = gateway.control.operator("read")
    electricity, gas = reading["meters"]
    assert electricity["equipment_id"] == gateway.electricity_id
    assert set(electricity["values"]) == {
        "1-0:1.8.1.255",
        "1-0:1.8.2.255",
        "1-0:2.8.1.255",
        "1-0:2.8.2.255",
    }
    assert set(gas["values"]) == {"0-1:24.2.1.255"}


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_1_2_is_refused(gateway: RunningGateway) -> None:
    context = ssl.create_default_context(cafile=str(gateway.ca_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_tls_1_3_with_strict_verification(gateway: RunningGateway) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        with gateway.ssl_context().wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        with gateway.ssl_context().wrap_socket(raw, server_hostname="X1-interface.local"):
            pass
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            gateway.ssl_context().wrap_socket(raw, server_hostname="example.com")


# --- OpenAPI -----------------------------------------------------------------------------------


@pytest.fixture
def openapi(gateway: RunningGateway) -> Iterator[dict[str, object]]:
    reply = gateway.request("GET", "/api/openapi.json")
    assert reply.status == 200
    yield reply.json


def test_openapi_is_valid_and_documents_every_route(
    gateway: RunningGateway, openapi: dict[str, object]
) -> None:
    from openapi_spec_validator import validate

    from x1p1.gateway.openapi import OPERATIONS
    from x1p1.gateway.server import ROUTES

    validate(openapi)  # type: ignore[arg-type]
    paths = openapi["paths"]
    assert isinstance(paths, dict)
    for route in ROUTES:
        operation = paths[route.path][route.method.lower()]
        assert route.name in OPERATIONS, route.name
        assert operation["operationId"] == route.name
        assert operation["security"] == ([{"bearer": []}] if route.auth else [])


def test_real_answers_validate_against_the_document(
    gateway: RunningGateway, openapi: dict[str, object]
) -> None:
    import jsonschema

    components = openapi["components"]
    assert isinstance(components, dict)

    def check(reply_json: object, schema_name: str) -> None:
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components}
        jsonschema.validate(reply_json, schema)

    token = gateway.pair(list(ALL_PROFILES))
    check(gateway.token_request().json, "TokenRequestState")
    check(gateway.request("GET", "/api/token", token=token).json, "TokenInfo")
    check(gateway.request("GET", "/api/meters", token=token).json, "MeterList")
    meter = f"/api/meters/{gateway.electricity_id}"
    check(gateway.request("GET", meter, token=token).json, "MeterInfo")
    check(gateway.request("GET", "/api/nothing").json, "Error")
