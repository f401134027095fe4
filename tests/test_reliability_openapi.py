"""Schemathesis against a live gateway: no 5xx, nothing outside the document.

The gateway's own ``/api/openapi.json`` is loaded into schemathesis
(``schemathesis.openapi.from_dict``); every operation in it (the X1 API and the
portal's pages and forms) gets generated requests, valid ones and invalid ones, sent over
real TLS (a requests session trusting the gateway's root), authenticated with tokens that
hold every profile (several, so that history's rate limit of 10 a token is not all that
is tested). Each answer must pass schemathesis' checks: not a server error, a status
code the document lists, the documented content type, headers and body schema.
``DELETE /api/token`` gets a fresh token each time. Generation is derandomized, so a run
is repeatable; ``X1P1_FUZZ_EXAMPLES`` raises the number of cases (default: 15 of each
kind per operation).

A failure names every operation that failed, with the first problem of each.
"""

from __future__ import annotations

import http.client
import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from gateway_fixture import ALL_PROFILES, RunningGateway, running_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = max(15, int(os.environ.get("X1P1_FUZZ_EXAMPLES", "0")) // 10)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


SESSION_COOKIE = "__Host-x1p1-session"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, list[str]]]:
    with running_gateway(tmp_path_factory.mktemp("schemathesis") / "gw") as gw:
        tokens = [gw.pair(ALL_PROFILES, name=f"schemathesis {i}") for i in range(12)]
        yield gw, tokens


def portal_session(gw: RunningGateway) -> str:
    """Log a browser in on the meter's button; the session cookie's value."""

    def call(method: str, path: str, headers: dict[str, str]) -> list[str]:
        conn = http.client.HTTPSConnection(gw.host, gw.port, context=gw.ssl_context())
        try:
            conn.request(method, path, headers={"User-Agent": "schemathesis", **headers})
            response = conn.getresponse()
            response.read()
            return [v for k, v in response.getheaders() if k.lower() == "set-cookie"]
        finally:
            conn.close()

    [login] = call("POST", "/login", {"Origin": gw.url})
    [request] = [r for r in gw.control.requests() if r["kind"] == "login"]
    gw.control.approve(request["request_id"])
    cookies = call("GET", "/login/status", {"Cookie": login.split(";")[0]})
    [session] = [c for c in cookies if c.startswith(SESSION_COOKIE + "=")]
    return session.split(";")[0].split("=", 1)[1]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " | ".join(line for line in text[:6] if line.strip())[:600]


@pytest.mark.slow(seconds=35)  # about, in CI: the longest start first
@pytest.mark.timeout(600)
def test_every_operation_conforms_to_the_document(
    live: tuple[RunningGateway, list[str]],
) -> None:
    gw, tokens = live
    document = gw.request("GET", "/api/openapi.json").json
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    rotation = itertools.cycle(tokens)
    cookie = portal_session(gw)
    failures: dict[str, str] = {}
    calls: dict[str, int] = {}
    statuses: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11, "the document lists fewer operations than the X1 API has"

    # (what, operation, fixed parameters, cookies): every operation as a device
    # would call it; the meters' operations with real equipment ids; the portal's with a
    # logged-in browser's cookie (no CSRF token: its forms must refuse, as documented).
    # History gets sound objects and a resolution too, so that the times are what varies.
    channel = gw.control.status()["meters"][1]["channel"]
    history = {
        gw.electricity_id: {"obis": "1-0:1.8.1.255,1-0:2.8.2.255", "resolution": "1h"},
        gw.gas_id: {"obis": f"0-{channel}:24.2.1.255", "resolution": "1d"},
    }
    passes: list[tuple[str, Any, dict[str, Any], dict[str, str]]] = []
    for operation in operations:
        passes.append(("token", operation, {}, {}))
        if "{equipment_id}" in operation.path:
            for meter in (gw.electricity_id, gw.gas_id):
                fixed: dict[str, Any] = {"path_parameters": {"equipment_id": meter}}
                passes.append((meter, operation, fixed, {}))
                if operation.path.endswith("/measurements"):
                    passes.append((meter, operation, {**fixed, "query": history[meter]}, {}))
        if not operation.path.startswith("/api"):
            passes.append(("portal session", operation, {}, {SESSION_COOKIE: cookie}))

    def runner(label: str, strategy: Any, cookies: dict[str, str]) -> Any:
        revokes = label == "DELETE /api/token"

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            token = gw.pair(["P1"], name="unpairs itself") if revokes else next(rotation)
            response = case.call(
                base_url=gw.url,
                session=session,
                timeout=15,
                verify=str(gw.ca_path),
                cookies=cookies or None,
                headers={"Authorization": f"Bearer {token}"},
            )
            calls[label] = calls.get(label, 0) + 1
            statuses.setdefault(label, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        return run

    for what, operation, fixed, cookies in passes:
        label = f"{operation.method.upper()} {operation.path}"
        for mode in MODES:
            strategy = operation.as_strategy(generation_mode=mode, **fixed)
            try:
                runner(label, strategy, cookies)()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                continue
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect them all
                failures.setdefault(f"{label} ({what}, {mode.value})", _short(exc))

    print(f"\nschemathesis: {sum(calls.values())} calls over {len(calls)} operations")
    for label, codes in sorted(statuses.items()):
        print(f"  {label}: {calls[label]} calls, statuses {sorted(codes)}")
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
    # the gateway still serves after it all
    assert gw.request("GET", "/api/meters", token=tokens[0]).status == 200
