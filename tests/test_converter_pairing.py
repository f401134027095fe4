"""``x1p1 pair`` and ``x1p1 unpair``: every outcome, its sentence and its exit code.

Against the embedded gateway (``tests/gateway_fixture.py``: real TLS on loopback, the
meter's buttons on its control socket, an offset clock to expire requests without
waiting), and against the small test gateway for what the embedded one answers only on
the grid operator's command.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from gateway_fixture import RunningGateway, gateway
from x1_test_gateway import Dialect
from x1_test_gateway import running_gateway as running_test_gateway

from x1p1.cli import main
from x1p1.converter import pairing
from x1p1.converter.pairing import (
    Countdown,
    GatewayEndpoint,
    PairExit,
    Progress,
    X1Client,
    wait_for_approval,
)
from x1p1.converter.state import install_uuid, load_pairing
from x1p1.converter.tls import client_ssl_context
from x1p1.exceptions import CertificateError, PairingExpired
from x1p1.x1.api import TokenRequestBody
from x1p1.x1.profiles import Profile
from x1p1.x1.readers import RequestAnswer

__all__ = ["gateway"]  # the fixture


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairing, "POLL_INTERVAL", 0.05)


def pair_args(gw: RunningGateway, state_dir: Path, *extra: str) -> list[str]:
    return [
        "pair",
        "--gateway",
        f"127.0.0.1:{gw.port}",
        "--ca",
        str(gw.ca_path),
        "--state-dir",
        str(state_dir),
        *extra,
    ]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args)


class Meter:
    """Presses the meter's button once a request shows on its display."""

    def __init__(self, gw: RunningGateway, action: str, *, advance: timedelta | None = None):
        self.gw, self.action, self.advance = gw, action, advance
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="meter-button")

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.gw.control.requests():
            time.sleep(0.02)
        if not self.gw.control.requests():
            return  # the request never came: the test's own assertions say why
        if self.action == "approve":
            self.gw.control.approve()
        elif self.action == "deny":
            self.gw.control.deny()
        elif self.action == "advance":
            assert self.gw.clock is not None and self.advance is not None
            self.gw.clock.advance(self.advance)
        self.done.set()

    def __enter__(self) -> Meter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(30)


def test_approved_on_the_meter(gateway: RunningGateway, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with Meter(gateway, "approve"):
        result = invoke(pair_args(gateway, state_dir, "--name", "x1p1 on testpi"))
    assert result.exit_code == PairExit.APPROVED, result.output
    # the embedded gateway shows a code with each request (X1 §5.1.5; docs/x1-api.md)
    assert re.search(r"on the meter's display with the code \d{4}: check", result.output)
    assert "press the meter's button" in result.output
    assert "Waiting for approval: " in result.output
    assert "Paired with 127.0.0.1" in result.output
    saved = load_pairing(state_dir)
    assert saved.profiles == frozenset({Profile.P1})
    assert saved.name == "x1p1 on testpi" and saved.uuid == install_uuid(state_dir)
    assert saved.expires_at is not None and saved.expires_at > datetime.now(UTC)
    assert saved.ca_pem == gateway.ca_path.read_text()
    assert (state_dir / "token.json").stat().st_mode & 0o777 == 0o600
    assert saved.token not in result.output
    reply = gateway.request("GET", "/api/token", token=saved.token)
    assert reply.status == 200 and reply.json["name"] == "x1p1 on testpi"


def test_the_uuid_stays_the_same_for_the_installation(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    uuids = []
    for _ in range(2):
        with Meter(gateway, "approve"):
            assert invoke(pair_args(gateway, state_dir)).exit_code == 0
        uuids.append(load_pairing(state_dir).uuid)
    assert uuids[0] == uuids[1] == (state_dir / "uuid").read_text().strip()


def test_denied(gateway: RunningGateway, tmp_path: Path) -> None:
    with Meter(gateway, "deny"):
        result = invoke(pair_args(gateway, tmp_path / "state"))
    assert result.exit_code == PairExit.DENIED == 3
    assert "was denied on the meter" in result.output
    assert not (tmp_path / "state" / "token.json").exists()


def test_expired_after_ten_minutes(gateway: RunningGateway, tmp_path: Path) -> None:
    with Meter(gateway, "advance", advance=timedelta(minutes=11)):
        result = invoke(pair_args(gateway, tmp_path / "state"))
    assert result.exit_code == PairExit.EXPIRED == 4, result.output
    assert "within 10 minutes" in result.output


def test_throttled_after_three_denials(gateway: RunningGateway, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    for _ in range(3):
        with Meter(gateway, "deny"):
            assert invoke(pair_args(gateway, state_dir)).exit_code == PairExit.DENIED
    result = invoke(pair_args(gateway, state_dir))
    assert result.exit_code == PairExit.THROTTLED == 5, result.output
    assert "denied three times within an hour" in result.output
    assert "it said: this device was denied" in result.output


def test_throttled_by_a_full_queue_says_so(gateway: RunningGateway, tmp_path: Path) -> None:
    """16 hosts wait with one request each: the gateway has no room (docs/reliability.md).
    `x1p1 pair` says what the gateway said, not that it was denied."""
    for host in range(1, 17):
        assert gateway.token_request(source=f"127.0.1.{host}").status == 202
    result = invoke(pair_args(gateway, tmp_path / "state"))
    assert result.exit_code == PairExit.THROTTLED == 5, result.output
    assert "16 requests are already waiting on the meter" in result.output
    assert "denied" not in result.output and "§5.1.7" not in result.output


THROTTLES: dict[str, tuple[tuple[int, dict[str, str], bytes], str, str | None]] = {
    # name: the gateway's 429, words of the sentence, words the sentence must not have
    "a denial": (
        (429, {"Retry-After": "3600"}, b'{"error": "rate-limited", "message": "denied twice"}'),
        "denied three times within an hour (X1 §5.1.7) (it said: denied twice); try again in 60",
        None,
    ),
    "a full queue": (
        (429, {}, b'{"error": "rate-limited", "message": "queue full\\u001b[2J"}'),
        "refuses new token requests for now (it said: queue full\\x1b[2J); try again in 60 s",
        "denied",
    ),
    "no message": (
        (429, {"Retry-After": "90"}, b""),
        "the gateway refuses new token requests for now; try again in 90 s",
        "denied",
    ),
}


@pytest.mark.parametrize("name", THROTTLES)
async def test_a_429_is_told_as_the_gateway_told_it(name: str, tmp_path: Path) -> None:
    answer, words, never = THROTTLES[name]
    async with running_test_gateway(tmp_path / "gw", dialect=Dialect(throttle=answer)) as gw:
        gw.throttled = True
        args = ["pair", "--gateway", f"127.0.0.1:{gw.port}", "--ca", str(gw.ca_file)]
        result = await asyncio.to_thread(invoke, [*args, "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == PairExit.THROTTLED, result.output
    assert words in " ".join(result.output.split()), result.output
    assert never is None or never not in result.output


def test_a_wrong_api_base_is_one_sentence_not_a_page(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """The embedded gateway answers an unknown path with an HTML 404 page: ``x1p1 pair``
    says where it asked and what fixes it (as ``x1p1 doctor`` does), never the page."""
    args = pair_args(gateway, tmp_path / "state")
    args[2] = f"https://127.0.0.1:{gateway.port}/vendor/api"
    result = invoke(args)
    assert result.exit_code == 1, result.output
    assert result.output.endswith(
        "x1p1: HTTP 404 at /vendor/api/tokens/requests: the gateway serves its API "
        "elsewhere; set --api-base (api_base in the config)\n"
    ), result.output
    assert "<" not in result.output


def test_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once it is closed
    ca = tmp_path / "ca.pem"
    from x1p1.gateway.pki import GatewayPKI

    ca.write_bytes(GatewayPKI.load_or_create(tmp_path / "pki").root_pem)
    result = invoke(
        ["pair", "--gateway", f"127.0.0.1:{port}", "--ca", str(ca), "--state-dir", str(tmp_path)]
    )
    assert result.exit_code == PairExit.UNREACHABLE == 6, result.output
    assert "did not answer" in result.output


def test_unresolvable_name_is_unreachable(tmp_path: Path) -> None:
    result = invoke(["pair", "--gateway", "no-such-gateway.invalid", "--state-dir", str(tmp_path)])
    assert result.exit_code == PairExit.UNREACHABLE, result.output
    assert "cannot resolve" in result.output


def test_bad_certificate(gateway: RunningGateway, tmp_path: Path) -> None:
    from x1p1.gateway.pki import GatewayPKI

    other = tmp_path / "other-ca.pem"
    other.write_bytes(GatewayPKI.load_or_create(tmp_path / "other").root_pem)
    args = pair_args(gateway, tmp_path / "state")
    args[args.index("--ca") + 1] = str(other)
    result = invoke(args)
    assert result.exit_code == PairExit.CERTIFICATE == 7, result.output
    assert "did not verify against the CA" in result.output
    assert gateway.control.requests() == []  # nothing was sent


def test_host_name_mismatch_is_a_bad_certificate(gateway: RunningGateway) -> None:
    endpoint = GatewayEndpoint("not-the-gateway.example", gateway.port, ("127.0.0.1",))
    client = X1Client(endpoint, client_ssl_context(gateway.ca_path))
    body = TokenRequestBody("t", "0b5c2f0e-1111-4222-8333-444455556666", frozenset({Profile.P1}))
    with pytest.raises(CertificateError, match="not valid for not-the-gateway.example"):
        client.request_token(body)


def test_x1_disabled(gateway: RunningGateway, tmp_path: Path) -> None:
    gateway.control.operator("disable")
    result = invoke(pair_args(gateway, tmp_path / "state"))
    assert result.exit_code == PairExit.X1_DISABLED == 8, result.output


def test_usage_errors(tmp_path: Path) -> None:
    bad_gateway = invoke(["pair", "--gateway", "ws://x:1", "--state-dir", str(tmp_path)])
    assert bad_gateway.exit_code == 2 and "wss://" in bad_gateway.output
    long_name = invoke(["pair", "--name", "x" * 65, "--state-dir", str(tmp_path)])
    assert long_name.exit_code == 2 and "--name" in long_name.output


def test_help_lists_every_exit_code() -> None:
    text = invoke(["pair", "--help"]).output
    import re

    listed = {int(n) for n in re.findall(r"^\s+(\d+)\s+\S", text, re.MULTILINE)}
    assert listed >= {code.value for code in PairExit}


async def test_test_gateway_approves_too(tmp_path: Path) -> None:
    """The client against the other gateway implementation (the contract, not one server)."""
    async with running_test_gateway(tmp_path / "gw", auto="approve") as gw:
        args = ["pair", "--gateway", f"127.0.0.1:{gw.port}", "--ca", str(gw.ca_file)]
        result = await asyncio.to_thread(invoke, [*args, "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output


# --- the countdown, with an injected clock ------------------------------------------------


class _Clock:
    """Monotonic seconds that move only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_countdown_runs_ten_minutes_then_gives_up(gateway: RunningGateway) -> None:
    """The client counts the 10 minutes on its own clock, from the moment it asked."""
    clock = _Clock()
    ticks: list[Progress] = []
    endpoint = GatewayEndpoint("127.0.0.1", gateway.port, ("127.0.0.1",))
    client = X1Client(endpoint, client_ssl_context(gateway.ca_path))
    body = TokenRequestBody("t", "0b5c2f0e-1111-4222-8333-444455556666", frozenset({Profile.P1}))

    def half_a_second_later(answer: RequestAnswer) -> None:
        clock.now += 0.5

    with pytest.raises(PairingExpired):
        wait_for_approval(
            client,
            body,
            clock=clock,
            sleep=clock.sleep,
            on_request=half_a_second_later,
            on_tick=ticks.append,
            poll_interval=30,
        )
    assert ticks[0].remaining == 599.5
    remaining = [round(t.remaining) for t in ticks]
    assert remaining[-1] == 0
    assert remaining == sorted(remaining, reverse=True)
    out = io.StringIO()
    countdown = Countdown(out)
    for tick in ticks:
        countdown.tick(tick)
    lines = out.getvalue().splitlines()
    # Not a terminal: one line a minute, 9:59 left … 0:59 left.
    minutes = [line.split(": ")[1].split(":")[0] for line in lines]
    assert minutes == [str(m) for m in range(9, -1, -1)]


# --- unpair ---------------------------------------------------------------------------------


@pytest.fixture
def paired_state(gateway: RunningGateway, tmp_path: Path) -> Iterator[Path]:
    state_dir = tmp_path / "state"
    with Meter(gateway, "approve"):
        assert invoke(pair_args(gateway, state_dir)).exit_code == 0
    yield state_dir


def test_unpair_revokes_and_forgets(gateway: RunningGateway, paired_state: Path) -> None:
    token = load_pairing(paired_state).token
    result = invoke(["unpair", "--state-dir", str(paired_state)])
    assert result.exit_code == 0, result.output
    assert "revoked the token" in result.output
    assert not (paired_state / "token.json").exists()
    assert gateway.request("GET", "/api/token", token=token).status == 401


def test_unpair_when_the_gateway_is_gone(tmp_path: Path) -> None:
    from converter_support import save_test_pairing

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    save_test_pairing(tmp_path, token="t" * 43, port=port, ca_pem=None)
    result = invoke(["unpair", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "could not be told" in result.output
    assert not (tmp_path / "token.json").exists()


def test_unpair_when_not_paired(tmp_path: Path) -> None:
    result = invoke(["unpair", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_pair_for_realtime_profiles(gateway: RunningGateway, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    profiles = "e-realtime, G-REALTIME,PQ-REALTIME"
    with Meter(gateway, "approve"):
        result = invoke(pair_args(gateway, state_dir, "--profiles", profiles))
    assert result.exit_code == PairExit.APPROVED, result.output
    assert "a token (E-REALTIME, PQ-REALTIME, G-REALTIME)" in result.output
    saved = load_pairing(state_dir)
    assert saved.profiles == frozenset(
        {Profile.E_REALTIME, Profile.G_REALTIME, Profile.PQ_REALTIME}
    )


def test_pair_refuses_an_unknown_profile_in_one_sentence(tmp_path: Path) -> None:
    result = invoke(["pair", "--profiles", "P1,E-FORECAST", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--profiles 'P1,E-FORECAST': 'E-FORECAST' is not a profile; known: P1" in (result.output)
    assert "Traceback" not in result.output
