"""The gateway's WebSockets with the converter's own client library (websockets): legacy
P1 telegrams read by dsmr_parser with CRC checks, realtime JSON, revocation (4401), the
operator's switch (4503), garbage (4400) and refused handshakes (x1-api.md, WebSocket)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dsmr_parser import obis_references, telegram_specifications
from dsmr_parser.parsers import TelegramParser
from gateway_fixture import ALL_PROFILES, RunningGateway, gateway, running_gateway
from websockets.exceptions import ConnectionClosed, InvalidStatus

from x1p1.gateway.simulation import MeterSimulation
from x1p1.p1.telegram import Telegram

__all__ = ["gateway"]  # the fixture

V5 = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)
SIM = MeterSimulation(1, gas_channel=1)


async def closed_with(ws: object, code: int) -> str:
    """Wait for the server to close ``ws``; assert the code; return the reason."""
    with pytest.raises(ConnectionClosed) as caught:
        async with asyncio.timeout(15):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    assert caught.value.rcvd is not None, "closed without a close frame"
    assert caught.value.rcvd.code == code, caught.value.rcvd
    return caught.value.rcvd.reason


def realtime_path(gw: RunningGateway, obis: str, ids: str | None = None, extra: str = "") -> str:
    return f"/api/realtime?equipment_id={ids or gw.electricity_id}&obis={obis}{extra}"


# --- legacy P1 -----------------------------------------------------------------------------


async def test_legacy_p1_sends_whole_telegrams_dsmr_parser_accepts(
    gateway: RunningGateway,
) -> None:
    token = gateway.pair(["P1"])
    async with gateway.ws("/api/legacy-p1", token=token) as ws:
        texts = [await ws.recv() for _ in range(3)]
    stamps = []
    for text in texts:
        assert isinstance(text, str)
        assert (
            text.startswith("/") and text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
        )
        parsed = V5.parse(text, throw_ex=True)  # CRC checked
        stamp = parsed[obis_references.P1_MESSAGE_TIMESTAMP].value.astimezone(UTC)
        stamps.append(stamp)
        # exactly the simulation's telegram of that second, byte for byte
        assert text.encode("ascii") == SIM.telegram(stamp)
        assert Telegram.parse(text.encode()).serialize() == text.encode()
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [timedelta(seconds=1)] * 2


async def test_legacy_p1_interval(gateway: RunningGateway) -> None:
    token = gateway.pair(["P1"])
    async with gateway.ws("/api/legacy-p1?interval=2", token=token) as ws:
        texts = [await ws.recv() for _ in range(2)]
    stamps = [V5.parse(t, throw_ex=True)[obis_references.P1_MESSAGE_TIMESTAMP].value for t in texts]
    assert stamps[1] - stamps[0] == timedelta(seconds=2)
    assert all(int(s.timestamp()) % 2 == 0 for s in stamps)


# --- realtime -----------------------------------------------------------------------------


async def test_realtime_json_shape_and_values(gateway: RunningGateway) -> None:
    token = gateway.pair(["E-REALTIME", "G-REALTIME"])
    e_id, g_id = gateway.electricity_id, gateway.gas_id
    obis = "1-0:1.7.0.255,1-0:32.7.0,0-0:96.1.1.255,0-n:24.2.1.255,0-1:96.1.0.255"
    path = realtime_path(gateway, obis, f"{e_id},{g_id}")
    async with gateway.ws(path, token=token) as ws:
        messages = [json.loads(await ws.recv()) for _ in range(4)]
    by_meter: dict[str, list[dict[str, object]]] = {}
    for message in messages:
        assert set(message) == {"equipment_id", "t", "values"}
        by_meter.setdefault(message["equipment_id"], []).append(message)
    assert set(by_meter) == {e_id, g_id}
    for message in by_meter[e_id]:
        t = datetime.fromisoformat(str(message["t"]))
        values = message["values"]
        assert isinstance(values, dict)
        assert set(values) == {"1-0:1.7.0.255", "1-0:32.7.0.255", "0-0:96.1.1.255"}
        expected = SIM.realtime_values(t)
        assert values["1-0:1.7.0.255"] == round(float(expected["1-0:1.7.0.255"]), 3)
        assert values["1-0:32.7.0.255"] == expected["1-0:32.7.0.255"]
        assert values["0-0:96.1.1.255"] == e_id
    for message in by_meter[g_id]:
        t = datetime.fromisoformat(str(message["t"]))
        assert t.minute % 5 == 0 and t.second == 0  # the gas reading's own capture time
        values = message["values"]
        assert isinstance(values, dict)
        assert values == {"0-1:24.2.1.255": SIM.gas_reading(t)[1], "0-1:96.1.0.255": g_id}


async def test_realtime_messages_one_second_apart_on_whole_seconds(
    gateway: RunningGateway,
) -> None:
    token = gateway.pair(["E-REALTIME"])
    async with gateway.ws(realtime_path(gateway, "1-0:1.7.0.255"), token=token) as ws:
        stamps = [datetime.fromisoformat(json.loads(await ws.recv())["t"]) for _ in range(3)]
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [timedelta(seconds=1)] * 2


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("equipment_id={e}&obis=1-0:9.9.9.255", "obis"),
        ("equipment_id={e}&obis=garbage", "obis"),
        ("equipment_id={e}&obis=1-0:1.7.0.255&interval=0", "interval"),
        ("equipment_id={e}&obis=1-0:1.7.0.255&interval=1.5", "interval"),
        ("equipment_id={e}&obis=1-0:1.7.0.255&interval=-1", "interval"),
        ("equipment_id={e}&obis=1-0:1.7.0.255&interval=999999", "interval"),
        ("equipment_id=E000&obis=1-0:1.7.0.255", "equipment_id"),
        ("obis=1-0:1.7.0.255", "equipment_id"),
        ("equipment_id={e}", "obis"),
        ("equipment_id={e}&obis=", "obis"),
        ("equipment_id={e}&obis=0-1:24.2.1.255", "obis"),  # a gas object, no gas meter named
        ("equipment_id={e},{g}&obis=1-0:1.7.0.255", "obis"),  # nothing for the gas meter
        ("equipment_id={g}&obis=0-2:24.2.1.255", "obis"),  # no meter on channel 2
        ("equipment_id={e}&obis=0-0:1.0.0.255", "obis"),  # a P1-only object
        ("equipment_id={e}&obis=1-0:1.7.0.255&foo=1", "foo"),
        ("equipment_id={e}&obis=1-0:1.7.0.255&interval=1&interval=2", "interval"),
    ],
)
async def test_realtime_bad_parameters_are_400(
    gateway: RunningGateway, query: str, word: str
) -> None:
    token = gateway.pair(list(ALL_PROFILES))
    path = "/api/realtime?" + query.format(e=gateway.electricity_id, g=gateway.gas_id)
    with pytest.raises(InvalidStatus) as caught:
        async with gateway.ws(path, token=token):
            pass
    response = caught.value.response
    assert response.status_code == 400
    body = json.loads(response.body or b"{}")
    assert body["error"] == "bad-request" and str(body["message"]).startswith(word), body
    # and the same as plain HTTPS
    reply = gateway.request("GET", path, token=token)
    assert reply.status == 400 and reply.json["error"] == "bad-request"


@pytest.mark.parametrize("query", ["interval=0", "interval=x", "obis=1-0:1.7.0.255"])
async def test_legacy_p1_bad_parameters_are_400(gateway: RunningGateway, query: str) -> None:
    token = gateway.pair(["P1"])
    with pytest.raises(InvalidStatus) as caught:
        async with gateway.ws(f"/api/legacy-p1?{query}", token=token):
            pass
    assert caught.value.response.status_code == 400


async def test_a_plain_get_on_a_websocket_is_400(gateway: RunningGateway) -> None:
    token = gateway.pair(["P1"])
    reply = gateway.request("GET", "/api/legacy-p1", token=token)
    assert reply.status == 400 and "WebSocket" in reply.json["message"]


# --- closing -------------------------------------------------------------------------------


async def test_revoke_while_streaming_closes_with_4401(gateway: RunningGateway) -> None:
    token = gateway.pair(["P1", "E-REALTIME"])
    other = gateway.pair(["P1"])
    async with (
        gateway.ws("/api/legacy-p1", token=token) as mine,
        gateway.ws(realtime_path(gateway, "1-0:1.7.0.255"), token=token) as mine_too,
        gateway.ws("/api/legacy-p1", token=other) as theirs,
    ):
        await mine.recv()
        await mine_too.recv()
        assert gateway.request("DELETE", "/api/token", token=token).status == 204
        assert "unauthorized" in await closed_with(mine, 4401)
        await closed_with(mine_too, 4401)
        await theirs.recv()  # another token's stream goes on
        token_id = gateway.control.tokens()[0]["token_id"]
        gateway.control.revoke(token_id)  # on the meter
        await closed_with(theirs, 4401)
    with pytest.raises(InvalidStatus) as caught:
        async with gateway.ws("/api/legacy-p1", token=token):
            pass
    assert caught.value.response.status_code == 401


async def test_operator_disable_closes_every_stream_with_4503(gateway: RunningGateway) -> None:
    token = gateway.pair(["P1", "E-REALTIME"])
    async with (
        gateway.ws("/api/legacy-p1", token=token) as legacy,
        gateway.ws(realtime_path(gateway, "1-0:1.7.0.255"), token=token) as realtime,
    ):
        await legacy.recv()
        await realtime.recv()
        gateway.control.operator("disable")
        assert "x1-disabled" in await closed_with(legacy, 4503)
        await closed_with(realtime, 4503)
    with pytest.raises(InvalidStatus) as caught:
        async with gateway.ws("/api/legacy-p1", token=token):
            pass
    assert caught.value.response.status_code == 503
    assert json.loads(caught.value.response.body or b"{}")["error"] == "x1-disabled"
    gateway.control.operator("enable")
    async with gateway.ws("/api/legacy-p1", token=token) as legacy:
        await legacy.recv()


@pytest.mark.parametrize("garbage", ["hello", b"\x00\xff\x10", "x" * 10000])
async def test_garbage_from_the_client_closes_with_4400(
    gateway: RunningGateway, garbage: str | bytes
) -> None:
    token = gateway.pair(["P1"])
    async with gateway.ws("/api/legacy-p1", token=token) as ws:
        await ws.send(garbage)
        with pytest.raises(ConnectionClosed) as caught:
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()
    code = caught.value.rcvd.code if caught.value.rcvd else None
    assert code in (4400, 1009)  # 1009: over the message size a stream accepts
    assert gateway.request("GET", "/api/token", token=token).status == 200  # still paired


async def test_a_streaming_token_is_renewed_and_never_expires_mid_stream(
    gateway: RunningGateway,
) -> None:
    assert gateway.clock is not None
    token = gateway.pair(["P1"])
    async with gateway.ws("/api/legacy-p1", token=token) as ws:
        for _ in range(3):
            gateway.clock.advance(timedelta(days=60))
            gateway.call(lambda g: g.state.grants.maintain() if g.state else None)
            await ws.recv()
    assert gateway.request("GET", "/api/token", token=token).status == 200


async def test_an_expired_token_closes_its_stream_with_4401(gateway: RunningGateway) -> None:
    assert gateway.clock is not None
    token = gateway.pair(["P1"])
    async with gateway.ws("/api/legacy-p1", token=token) as ws:
        await ws.recv()
        gateway.clock.advance(timedelta(days=91))
        gateway.call(lambda g: g.state.grants.maintain() if g.state else None)
        assert "expired" in await closed_with(ws, 4401)


async def test_speed_runs_the_meters_clock_faster(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw", speed=60.0) as gw:
        token = gw.pair(["P1"])
        async with gw.ws("/api/legacy-p1", token=token) as ws:
            texts = [await ws.recv() for _ in range(3)]
    stamps = [V5.parse(t, throw_ex=True)[obis_references.P1_MESSAGE_TIMESTAMP].value for t in texts]
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [timedelta(minutes=1)] * 2


async def test_a_changed_grant_closes_only_the_streams_it_no_longer_covers(
    gateway: RunningGateway,
) -> None:
    token = gateway.pair(["P1", "E-REALTIME"])
    token_id = gateway.control.tokens()[0]["token_id"]
    async with (
        gateway.ws("/api/legacy-p1", token=token) as legacy,
        gateway.ws(realtime_path(gateway, "1-0:1.7.0.255"), token=token) as realtime,
    ):
        await legacy.recv()
        await realtime.recv()
        gateway.control.set_profiles(token_id, ["E-REALTIME"])  # in the portal, later
        assert "forbidden-profile" in await closed_with(legacy, 4403)
        await realtime.recv()
        await realtime.recv()


async def test_below_speed_one_messages_fall_on_whole_simulated_seconds(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw", speed=0.5) as gw:
        token = gw.pair(["E-REALTIME"])
        async with gw.ws(realtime_path(gw, "1-0:1.7.0.255"), token=token) as ws:
            stamps = [datetime.fromisoformat(json.loads(await ws.recv())["t"]) for _ in range(3)]
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [timedelta(seconds=1)] * 2
