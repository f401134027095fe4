"""The profile matrix (X1 §5.3, §6.1, §7.1): every endpoint and socket with a token of
each single profile, and with no, unknown, expired and revoked tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from gateway_fixture import ALL_PROFILES, RunningGateway, running_gateway
from websockets.exceptions import InvalidStatus

from x1p1.x1.grants import new_secret as new_token


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("profiles") / "gw") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def tokens(gw: RunningGateway) -> dict[str, str]:
    return {profile: gw.pair([profile], name=f"only {profile}") for profile in ALL_PROFILES}


E_METER = {"P1", "E-REALTIME", "E-HISTORIC", "E-BILLING", "PQ-REALTIME", "PQ-HISTORIC"}
G_METER = {"P1", "G-REALTIME", "G-HISTORIC", "G-BILLING"}

# socket: (path template, profiles that may open it)
SOCKETS: dict[str, tuple[str, set[str]]] = {
    "legacy-p1": ("/api/legacy-p1", {"P1"}),
    "realtime power": ("/api/realtime?equipment_id={e}&obis=1-0:1.7.0.255", {"E-REALTIME"}),
    "realtime power quality": (
        "/api/realtime?equipment_id={e}&obis=0-0:96.7.21.255",
        {"PQ-REALTIME"},
    ),
    "realtime equipment id": (
        "/api/realtime?equipment_id={e}&obis=0-0:96.1.1.255",
        {"E-REALTIME", "PQ-REALTIME"},
    ),
    "realtime gas": ("/api/realtime?equipment_id={g}&obis=0-1:24.2.1.255", {"G-REALTIME"}),
    "realtime both": (
        "/api/realtime?equipment_id={e},{g}&obis=1-0:1.8.1.255,0-1:24.2.1.255",
        set(),  # needs two profiles: no single one will do
    ),
}


async def handshake(
    gw: RunningGateway, path: str, token: str | None
) -> tuple[int, dict[str, object]]:
    """The HTTP status of a WebSocket handshake (101 when it opened) and the error body."""
    try:
        async with gw.ws(path, token=token) as ws:
            await ws.recv()
            return 101, {}
    except InvalidStatus as exc:
        return exc.response.status_code, json.loads(exc.response.body or b"{}")


@pytest.mark.parametrize("profile", ALL_PROFILES)
def test_rest_endpoints_per_profile(
    gw: RunningGateway, tokens: dict[str, str], profile: str
) -> None:
    token = tokens[profile]
    info = gw.request("GET", "/api/token", token=token)
    assert info.status == 200 and info.json["profiles"] == [profile]
    meters = gw.request("GET", "/api/meters", token=token).json["meters"]
    expected = [
        t for t, allowed in (("electricity", E_METER), ("gas", G_METER)) if profile in allowed
    ]
    assert [m["type"] for m in meters] == expected
    for equipment_id, allowed in ((gw.electricity_id, E_METER), (gw.gas_id, G_METER)):
        reply = gw.request("GET", f"/api/meters/{equipment_id}", token=token)
        if profile in allowed:
            assert reply.status == 200
            for obj in reply.json["objects"]:
                assert obj["profiles"] == [profile]
        else:
            assert reply.status == 403 and reply.json["error"] == "forbidden-profile"
            assert profile not in reply.json["missing"]


@pytest.mark.parametrize("socket", SOCKETS)
@pytest.mark.parametrize("profile", ALL_PROFILES)
async def test_sockets_per_profile(
    gw: RunningGateway, tokens: dict[str, str], profile: str, socket: str
) -> None:
    template, allowed = SOCKETS[socket]
    path = template.format(e=gw.electricity_id, g=gw.gas_id)
    status, body = await handshake(gw, path, tokens[profile])
    if profile in allowed:
        assert status == 101
    else:
        assert status == 403 and body["error"] == "forbidden-profile", body
        missing = body["missing"]
        assert isinstance(missing, list) and missing and profile not in missing


async def test_a_token_with_both_profiles_opens_the_combined_socket(gw: RunningGateway) -> None:
    token = gw.pair(["E-REALTIME", "G-REALTIME"])
    path = SOCKETS["realtime both"][0].format(e=gw.electricity_id, g=gw.gas_id)
    assert (await handshake(gw, path, token))[0] == 101


# --- tokens that do not work ---------------------------------------------------------------

AUTH_REST = [
    ("GET", "/api/token"),
    ("DELETE", "/api/token"),
    ("GET", "/api/meters"),
    ("GET", "/api/meters/{e}"),
]


async def _all_refused(gw: RunningGateway, token: str | None, word: str) -> None:
    for method, template in AUTH_REST:
        reply = gw.request(method, template.format(e=gw.electricity_id), token=token)
        assert reply.status == 401, (method, template, reply.body)
        assert reply.json["error"] == "unauthorized" and word in reply.json["message"]
    for template, _ in SOCKETS.values():
        status, body = await handshake(gw, template.format(e=gw.electricity_id, g=gw.gas_id), token)
        assert status == 401 and body["error"] == "unauthorized", (template, body)


async def test_no_token(gw: RunningGateway) -> None:
    await _all_refused(gw, None, "token")


async def test_unknown_token(gw: RunningGateway) -> None:
    await _all_refused(gw, new_token(), "unknown")


async def test_revoked_token(gw: RunningGateway) -> None:
    token = gw.pair(list(ALL_PROFILES))
    token_id = next(
        t["token_id"] for t in gw.control.tokens() if t["profiles"] == list(ALL_PROFILES)
    )
    gw.control.revoke(token_id)
    await _all_refused(gw, token, "revoked")


async def test_expired_token(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw") as gw:
        assert gw.clock is not None
        token = gw.pair(list(ALL_PROFILES))
        gw.clock.advance(timedelta(days=90))
        await _all_refused(gw, token, "expired")


def test_public_endpoints_need_no_token(gw: RunningGateway) -> None:
    assert gw.request("GET", "/api/openapi.json").status == 200
    assert gw.token_request().status == 202
