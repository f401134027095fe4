"""Gateways that bend docs/x1-api.md: one test per dialect class (docs/x1-api.md, "What the
converter tolerates").

Most rows run in memory (``tests/x1_harness.py``: the pairing client and the stream
policy against the tests' own gateway, no sockets, an injected clock). A thin layer at the
end runs a few dialects end to end on loopback: real TLS, ``x1p1 pair`` and ``x1p1
status`` through the CLI, the converter writing into a pty that dsmr_parser reads.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from converter_support import fast_options, running, save_test_pairing
from dsmr_parser import telegram_specifications
from dsmr_parser.parsers import TelegramParser
from p1_pty import PtyPeer, until
from x1_harness import REVOKED, PairingPair, SourcePair, StreamPair
from x1_test_gateway import SERIAL, Dialect, TestGateway, running_gateway

from x1p1.cli import main
from x1p1.converter import pairing
from x1p1.converter.pairing import Countdown, PairExit, exit_code_for
from x1p1.converter.state import load_pairing
from x1p1.exceptions import (
    GatewayError,
    PairingDenied,
    PairingError,
    PairingExpired,
    PairingThrottled,
    X1P1Error,
)
from x1p1.x1.connection import FIRST_MESSAGE_WAIT, STALL_PACES, Conn
from x1p1.x1.profiles import Profile
from x1p1.x1.readers import RETRY_AFTER_MAX
from x1p1.x1.source import GRANT_POLL, Source

PARSER = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)


def without(*keys: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda body: {k: v for k, v in body.items() if k not in keys}


def changed(**values: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(body: dict[str, Any]) -> dict[str, Any]:
        out = dict(body)
        for key, value in values.items():
            out[key] = value(out.get(key)) if callable(value) else value
        return out

    return change


class FirstAnswerOnly:
    """Drops ``keys`` from every answer but the first (the POST's)."""

    def __init__(self, *keys: str) -> None:
        self.keys = keys
        self.answers = 0

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.answers += 1
        return body if self.answers == 1 else without(*self.keys)(body)


def nulls(body: dict[str, Any]) -> dict[str, Any]:
    out = {"token": None, "profiles": None, "expires_at": None, **body}
    if out["status"] != "approved":
        out["token"] = out["profiles"] = None
    out["expires_at"] = None
    return out


def _unix(text: Any) -> Any:
    return int(datetime.fromisoformat(text).timestamp()) if isinstance(text, str) else text


# --- pairing answers (in memory) ------------------------------------------------------------

PAIRS_WITH: dict[str, Dialect] = {
    "the contract": Dialect(),
    "no request_id in polls": Dialect(answer=FirstAnswerOnly("request_id")),
    "no expires_at": Dialect(answer=without("expires_at")),
    "null for absent values": Dialect(answer=nulls),
    "extra fields": Dialect(answer=changed(vendor={"x": [1, 2]}, links=[], meter_time=3)),
    "expires_at without offset": Dialect(answer=changed(expires_at=lambda t: t.rstrip("Z"))),
    "expires_at with fraction and offset": Dialect(
        answer=changed(expires_at=lambda t: t.replace("Z", ".250+01:00"))
    ),
    "expires_at as Unix seconds": Dialect(answer=changed(expires_at=_unix)),
    "approved without profiles": Dialect(answer=without("profiles")),
    "unknown profiles granted": Dialect(
        answer=lambda b: {**b, "profiles": ["P1", "E-FORECAST"]} if "profiles" in b else b
    ),
    "upper-case statuses": Dialect(answer=changed(status=str.upper)),
    "capitalised statuses": Dialect(answer=changed(status=str.capitalize)),
    "a moved API, redirected": Dialect(api_base="/v2/api", redirect_from="/api"),
    "a path prefix": Dialect(api_base="/vendor/x1/api"),
}


@pytest.mark.parametrize("name", list(PAIRS_WITH))
def test_pairing_succeeds_with(name: str, tmp_path: Path) -> None:
    dialect = PAIRS_WITH[name]
    api_base = "/api" if dialect.redirect_from else None
    pair = PairingPair(tmp_path, dialect, api_base=api_base)
    saved = pair.pair()
    assert saved.token in pair.gateway.tokens
    assert saved.profiles == frozenset({Profile.P1})
    assert load_pairing(tmp_path / "converter") == saved
    moved = dialect.redirect_from is not None  # followed call by call; /api is kept
    assert saved.api_base == (None if moved or dialect.api_base == "/api" else dialect.api_base)
    assert pair.polls == pair.after_polls  # it polled until the button, then stopped
    if name == "unknown profiles granted":  # kept, though only P1 is used
        assert saved.granted_names == ("P1", "E-FORECAST")


def test_unknown_granted_profiles_are_kept_shown_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """X1 §5.1.6: a name the converter does not know is kept in token.json, shown by
    ``x1p1 status``, and logged the first time this process sees it only."""
    import json
    import logging
    import uuid

    from x1p1.converter.state import SavedPairing, render_status, status_report

    odd = f"E-FORECAST-{uuid.uuid4().hex[:6].upper()}"  # new to this test process
    pair = PairingPair(
        tmp_path,
        Dialect(answer=lambda b: {**b, "profiles": ["P1", odd]} if "profiles" in b else b),
    )
    caplog.set_level(logging.INFO, logger="x1p1.converter.pairing")
    saved = pair.pair()
    assert saved.granted_names == ("P1", odd)
    for _ in range(3):  # what each read of the grant does in `x1p1 run`
        assert pairing.granted_profiles(("P1", odd), frozenset()) == {Profile.P1}
    logged = [r.getMessage() for r in caplog.records if odd in r.getMessage()]
    assert len(logged) == 1, logged
    state_dir = tmp_path / "converter"
    body = json.loads((state_dir / "token.json").read_text())
    assert body["granted_names"] == ["P1", odd]
    report = status_report(state_dir, {})
    line = next(x for x in render_status(report).splitlines() if x.startswith("Token grants"))
    assert f"P1, {odd} ({odd} unknown to the converter, ignored)" in line
    # read tolerantly: an older file has none, a broken value is ignored, junk is dropped
    for value, kept in (
        (None, None),
        ("P1", None),
        (["P1", 7, "", "X\x1b[2J"], ("P1", "X\\x1b[2J")),
    ):
        changed_body = {**body, "granted_names": value}
        assert SavedPairing.parse(changed_body).granted_names == kept


@pytest.mark.parametrize("skew", [timedelta(hours=1), timedelta(hours=-1), timedelta(0)])
def test_clock_skew_changes_nothing(skew: timedelta, tmp_path: Path) -> None:
    approved = PairingPair(tmp_path / "a", clock_skew=skew, after_polls=200)
    approved.pair()
    assert approved.clock.now - 1000.0 >= 200 * pairing.POLL_INTERVAL - 1

    nobody = PairingPair(tmp_path / "n", clock_skew=skew, button=None)
    with pytest.raises(PairingExpired, match="within 10 minutes") as info:
        nobody.pair()
    waited = nobody.clock.now - 1000.0
    assert 600 <= waited <= 600 + pairing.EXPIRY_GRACE + 2  # the converter's own 10 minutes
    assert exit_code_for(info.value) is PairExit.EXPIRED
    assert nobody.ticks[0].remaining == pytest.approx(600, abs=pairing.POLL_INTERVAL)


def test_the_meter_code_is_shown_when_the_gateway_gives_one(tmp_path: Path) -> None:
    with_code = PairingPair(tmp_path / "c", Dialect(code="4821"))
    with_code.pair()
    out = io.StringIO()
    Countdown(out).request(with_code.shown[0])
    assert "code 4821" in out.getvalue() and "display" in out.getvalue()

    plain = PairingPair(tmp_path / "p")
    plain.pair()
    out = io.StringIO()
    Countdown(out).request(plain.shown[0])
    assert "code" not in out.getvalue()


def _throttled(answer: tuple[int, dict[str, str], bytes]) -> Dialect:
    return Dialect(throttle=answer)


FAILS_WITH: dict[str, tuple[Dialect, str | None, type[X1P1Error], PairExit, str]] = {
    # name: dialect, button, exception, exit code, words of the sentence
    "a plain-text 429": (
        _throttled((429, {"Content-Type": "text/plain"}, b"Too Many Requests")),
        None,
        PairingThrottled,
        PairExit.THROTTLED,
        "try again in",
    ),
    "a 429 with an HTTP-date": (
        _throttled((429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, b"")),
        None,
        PairingThrottled,
        PairExit.THROTTLED,
        "try again in 1 s",
    ),
    "a 429 with garbage in Retry-After": (
        _throttled((429, {"Retry-After": "soon-ish"}, b"<html>slow down</html>")),
        None,
        PairingThrottled,
        PairExit.THROTTLED,
        "try again in 60 s",
    ),
    "a denial in capitals": (
        Dialect(answer=changed(status=str.upper)),
        "deny",
        PairingDenied,
        PairExit.DENIED,
        "was denied",
    ),
    "approved without P1 or a realtime profile": (
        # E-REALTIME alone would pair: the converter builds telegrams (docs/realtime.md)
        Dialect(answer=lambda b: {**b, "profiles": ["E-HISTORIC"]} if "profiles" in b else b),
        "approve",
        PairingError,
        PairExit.ERROR,
        "without the P1 profile (granted: E-HISTORIC)",
    ),
    "an answer without a status": (
        Dialect(answer=without("status")),
        "approve",
        GatewayError,
        PairExit.ERROR,
        "has no status (keys expires_at, request_id)",
    ),
    "no request id anywhere": (
        Dialect(answer=without("request_id")),
        "approve",
        GatewayError,
        PairExit.ERROR,
        "names no request_id",
    ),
    "approved without a token": (
        Dialect(answer=without("token")),
        "approve",
        PairingError,
        PairExit.ERROR,
        "sent no token",
    ),
}


@pytest.mark.parametrize("name", list(FAILS_WITH))
def test_pairing_fails_with_a_sentence_and_its_exit_code(name: str, tmp_path: Path) -> None:
    dialect, button, error, code, words = FAILS_WITH[name]
    pair = PairingPair(tmp_path, dialect, button=button)
    pair.gateway.throttled = dialect.throttle is not None
    with pytest.raises(error) as info:
        pair.pair()
    assert words in str(info.value)
    assert exit_code_for(info.value) is code
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ((500, {"Content-Type": "text/html"}, b"<h1>Internal\nError</h1>"), "HTTP 500"),
        ((500, {"Content-Type": "text/plain"}, b"busy\r\nsecond line"), "HTTP 500: busy"),
        ((502, {}, b""), "the gateway answered HTTP 502"),
        ((502, {}, b"{}"), "HTTP 502 without a message"),
        (
            (404, {"Content-Type": "text/html"}, b"<!doctype html>\n<html><p>Not here</p>"),
            "HTTP 404 at /api/tokens/requests: the gateway serves its API elsewhere; set "
            "--api-base (api_base in the config)",
        ),
        ((404, {}, b"x" * 300), "HTTP 404 at /api/tokens/requests"),
        ((418, {}, b'{"error": "teapot", "message": "I\'m a teapot"}'), "HTTP 418 (teapot)"),
        ((308, {"Location": "https://elsewhere.example/api"}, b""), "another host"),
        ((308, {}, b""), "redirected /api/tokens/requests to nowhere"),
    ],
)
def test_an_unexpected_answer_is_one_sentence_with_its_code(
    answer: tuple[int, dict[str, str], bytes], words: str, tmp_path: Path
) -> None:
    pair = PairingPair(tmp_path)
    pair.gateway.answer = lambda *args: answer  # type: ignore[method-assign]
    with pytest.raises(X1P1Error) as info:
        pair.pair()
    text = str(info.value)
    assert words in text and "\n" not in text, text
    assert "<" not in text and "second" not in text and "xxx" not in text, text
    assert exit_code_for(info.value) is PairExit.ERROR


def test_polls_ride_out_a_bad_spell(tmp_path: Path) -> None:
    """5xx, garbage and a 429 while polling are notes on the countdown, not the end."""
    pair = PairingPair(tmp_path, after_polls=6)
    real = pair.gateway.answer
    spells = iter(
        [
            (500, {}, b"busy"),
            (200, {}, b"not json"),
            (429, {"Retry-After": "3"}, b""),
            (200, {}, b'{"status": "Waiting-For-Button"}'),
        ]
    )

    def flaky(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if method == "GET":
            spell = next(spells, None)
            if spell is not None:
                return spell
        return real(method, path, headers, body)

    pair.gateway.answer = flaky  # type: ignore[method-assign]
    assert pair.pair().token in pair.gateway.tokens
    notes = {tick.note for tick in pair.ticks if tick.note}
    assert any("HTTP 500" in n for n in notes) and any("waiting-for-button" in n for n in notes)


# --- paths (in memory) ------------------------------------------------------------------------


async def test_the_txt_api_record_is_the_api_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from x1p1.converter import discovery

    async def found(serial: object, wait: float) -> discovery.DiscoveredGateway:
        return discovery.DiscoveredGateway(
            "X1-interface.local", ("192.0.2.10",), 443, serial=SERIAL, api="/vendor/x1/api"
        )

    monkeypatch.setattr(discovery, "find_gateway", found)
    endpoint = await pairing.resolve_endpoint(None)
    assert endpoint.paths.api_base == "/vendor/x1/api"
    pair = PairingPair(tmp_path, Dialect(api_base="/vendor/x1/api"))
    saved = pairing.pair(
        tmp_path / "converter",
        endpoint,
        ca_file=None,
        name="t",
        clock=pair.clock,
        sleep=pair.clock.sleep,
        transport=pair.transport,
    )
    assert saved.api_base == "/vendor/x1/api"
    override = await pairing.resolve_endpoint(None, api_base="/mine")
    assert override.paths.api_base == "/mine"


def test_the_token_request_path_can_be_overridden(tmp_path: Path) -> None:
    from x1p1.x1.endpoints import ApiPaths

    paths = ApiPaths("/api", token_requests_path="/pairing/requests")
    assert paths.token_requests == "/pairing/requests"
    assert paths.token_request("a/b") == "/pairing/requests/a%2Fb"
    assert paths.legacy_p1 == "/api/legacy-p1"
    assert ApiPaths("", legacy_p1_path="/p1").legacy_p1 == "/p1"
    assert ApiPaths("/x").token == "/x/token"


def test_one_resolution_of_the_api_base() -> None:
    """pair, run and doctor take the base in one order (x1p1/x1/endpoints.py)."""
    from x1p1.x1.endpoints import ApiPaths

    every = {"api_base": "/a", "url_base": "/u", "saved_base": "/s", "advertised": "/t"}
    order = ["api_base", "url_base", "saved_base", "advertised"]
    for i, strongest in enumerate(order):
        given = {k: every[k] for k in order[i:]}
        assert ApiPaths.resolve(**given).api_base == every[strongest]  # type: ignore[arg-type]
    assert ApiPaths.resolve().api_base == "/api"
    assert ApiPaths.resolve(advertised="no path").api_base == "/api"  # TXT junk is ignored
    assert ApiPaths.resolve(url_base="").api_base == ""  # https://gw/ means the root
    moved = ApiPaths.resolve(token_requests_path="/r", legacy_p1_path="/p")
    assert (moved.token_requests, moved.legacy_p1) == ("/r", "/p")


def test_tls_name_keeps_the_endpoints() -> None:
    """``x1p1 pair --tls-name`` with a prefix still calls the prefix."""
    from x1p1.x1.endpoints import ApiPaths

    endpoint = pairing.GatewayEndpoint(
        "127.0.0.1", 443, ("127.0.0.1",), SERIAL, paths=ApiPaths("/vendor/x1/api")
    )
    named = endpoint.with_tls_name("meter-7.vendor.example")
    assert named.host_name == "meter-7.vendor.example"
    assert named.paths == endpoint.paths and named.connect_hosts == ("127.0.0.1",)
    assert named.serial == SERIAL


# --- framing (in memory) ---------------------------------------------------------------------


def _bang(raw: bytes) -> int:
    return raw.rindex(b"!")


def no_crlf(raw: bytes) -> list[bytes]:
    return [raw[:-2]]


def lower_crc(raw: bytes) -> list[bytes]:
    return [raw[: _bang(raw) + 1] + raw[_bang(raw) + 1 :].lower()]


def short_crc(raw: bytes) -> list[bytes]:
    bang = _bang(raw)
    return [raw[: bang + 1] + (raw[bang + 1 : -2].lstrip(b"0") or b"0") + b"\r\n"]


def split3(raw: bytes) -> list[bytes]:
    third = len(raw) // 3
    return [raw[:third], raw[third : 2 * third], raw[2 * third :]]


class Merged:
    """Two telegrams per message, the first without CR LF after its CRC."""

    def __init__(self) -> None:
        self.held: bytes | None = None

    def __call__(self, raw: bytes) -> list[bytes]:
        if self.held is None:
            self.held = raw[:-2]
            return []
        message, self.held = self.held + raw, None
        return [message]


FRAMINGS: dict[str, Callable[[], Dialect]] = {
    "binary": lambda: Dialect(binary=True),
    "no CR LF after the CRC": lambda: Dialect(frame=no_crlf),
    "a lower-case CRC": lambda: Dialect(frame=lower_crc),
    "a 3-digit CRC": lambda: Dialect(frame=short_crc),
    "split over three messages": lambda: Dialect(frame=split3),
    "two merged into one": lambda: Dialect(frame=Merged()),
    "lower case, no CR LF, split": lambda: Dialect(
        frame=lambda raw: split3(lower_crc(raw)[0][:-2])
    ),
}


@pytest.mark.parametrize("name", list(FRAMINGS))
def test_framing_is_relayed_byte_exact(name: str) -> None:
    pair = StreamPair(FRAMINGS[name]())
    pair.send(40)
    assert pair.relayed == pair.sent[: len(pair.relayed)]
    assert len(pair.relayed) >= 39  # merged: the last one waits for its partner
    assert not pair.invalid and not pair.machine.dropping
    for raw in pair.relayed:
        PARSER.parse(raw.decode("latin-1"))


def test_every_telegram_dropped_is_reported() -> None:
    def bad_crc(raw: bytes) -> list[bytes]:
        return [raw[: _bang(raw) + 1] + b"0000\r\n"]

    pair = StreamPair(Dialect(frame=bad_crc))
    pair.send(2)
    assert not pair.machine.dropping
    pair.send(3)
    assert pair.machine.dropping and dict(pair.machine.dropped) == {"crc-mismatch": 5}
    assert pair.machine.state is Conn.CONNECTED and not pair.relayed


# --- pace (in memory) ---------------------------------------------------------------------------


@pytest.mark.parametrize("every", [1.0, 10.0, 20.0])
def test_a_slow_pace_is_not_a_stall(every: float) -> None:
    pair = StreamPair()
    pair.send(60, every=every)
    assert len(pair.relayed) == 60 and pair.machine.opened == 1
    assert pair.machine.state is Conn.CONNECTED
    silence = max(15.0, STALL_PACES * every)
    pair.clock.advance(silence - 0.5)
    assert not pair.machine.due(pair.clock())
    pair.clock.advance(0.5)
    assert pair.machine.expire(pair.clock()) is not None and pair.machine.stalled


def test_the_first_telegram_may_take_its_time() -> None:
    pair = StreamPair()
    pair.send(1, every=15.0 * FIRST_MESSAGE_WAIT - 1)
    assert pair.relayed and pair.machine.state is Conn.CONNECTED


# --- errors (in memory) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"Retry-After": "86400"}, RETRY_AFTER_MAX),
        ({"Retry-After": "²"}, 1.0),  # garbage: the backoff
        ({}, 1.0),
    ],
)
def test_a_429_handshake_waits_as_asked(headers: dict[str, str], wait: float) -> None:
    pair = StreamPair()
    pair.connecting()
    pair.refuse(429, **headers)
    assert pair.machine.state is Conn.BACKOFF
    assert pair.machine.wake_at == pytest.approx(pair.clock() + wait, abs=1.0)


def test_a_429_with_an_http_date() -> None:
    pair = StreamPair()
    pair.connecting()
    later = datetime.now(UTC) + timedelta(seconds=300)
    pair.refuse(429, **{"Retry-After": later.strftime("%a, %d %b %Y %H:%M:%S GMT")})
    assert pair.machine.wake_at == pytest.approx(pair.clock() + 300, abs=2.0)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (500, Conn.BACKOFF),
        (502, Conn.BACKOFF),
        (404, Conn.BACKOFF),
        (401, Conn.NEEDS_PAIRING),
        (403, Conn.REGRANT),
        (503, Conn.X1_DISABLED),
    ],
)
def test_each_handshake_status_is_classified(status: int, state: Conn) -> None:
    pair = StreamPair()
    pair.connecting()
    pair.refuse(status)
    assert pair.machine.state is state


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (1000, Conn.BACKOFF),
        (1001, Conn.BACKOFF),
        (1011, Conn.BACKOFF),
        (None, Conn.BACKOFF),
        (4401, Conn.NEEDS_PAIRING),
        (4403, Conn.REGRANT),
        (4503, Conn.X1_DISABLED),
    ],
)
def test_each_close_code_is_classified(code: int | None, state: Conn) -> None:
    pair = StreamPair()
    pair.send(3)
    pair.close(code, "bye\r\nforged line\x1b[2J")
    assert pair.machine.state is state
    assert all("\n" not in message and "\x1b" not in message for _, message in pair.states)


# --- a changed grant (X1 §5.1.6, in memory) ---------------------------------------------------


def test_a_4403_whose_grant_still_allows_p1_connects_again_at_once() -> None:
    """The customer took P1 away and granted it back at once: the 4403 re-reads the grant,
    which still allows legacy P1, and the converter connects again at once, never waiting
    for `x1p1 pair`."""
    pair = SourcePair(frozenset({Profile.P1}))
    pair.send(3)
    pair.close(4403, "forbidden-profile")
    assert pair.machine.state is Conn.REGRANT
    assert pair.reads_asked == 1 and pair.sources.due(pair.clock())
    state, message = pair.states[-1]
    assert state is Conn.REGRANT and "the customer changed this device's profiles" in message
    assert all("revoked" not in m and "x1p1 pair" not in m for _, m in pair.states[-1:])
    pair.read_grant()
    assert pair.machine.state is Conn.CONNECTING
    assert pair.sources.active is Source.LEGACY_P1
    pair.open()
    pair.send(2)
    assert len(pair.relayed) == 5


def test_a_4403_whose_grant_allows_nothing_waits_and_follows_a_new_grant() -> None:
    pair = SourcePair(frozenset({Profile.P1}))
    pair.send(2)
    pair.grant = frozenset({Profile("E-HISTORIC")})
    pair.close(4403)
    pair.read_grant()
    assert pair.machine.state is Conn.CONNECTING and pair.sources.active is None
    pair.connect()
    assert pair.machine.state is Conn.NO_GRANT
    state, message = pair.states[-1]
    assert message == (
        "the token has neither P1 nor E-REALTIME or PQ-REALTIME; waiting until the customer "
        "grants a profile in the portal (read again every minute) or `x1p1 pair` saves a "
        "new token"
    )
    pair.clock.advance(GRANT_POLL - 1.0)
    pair.read_grant()
    assert pair.machine.state is Conn.NO_GRANT  # not due yet: no read, no reconnect
    pair.clock.advance(1.0)
    pair.read_grant()  # the same grant: still waiting, no reconnect
    assert pair.machine.state is Conn.NO_GRANT
    pair.grant = frozenset({Profile.P1})
    pair.clock.advance(GRANT_POLL)
    pair.read_grant()
    assert pair.machine.state is Conn.CONNECTING
    assert pair.sources.active is Source.LEGACY_P1


def test_a_token_revoked_while_waiting_for_a_grant_waits_for_pairing() -> None:
    pair = SourcePair(frozenset({Profile.P1}))
    pair.send(2)
    pair.grant = frozenset({Profile.G_REALTIME})  # gas alone builds no telegram
    pair.close(4403)
    pair.read_grant()
    pair.connect()
    assert pair.machine.state is Conn.NO_GRANT
    pair.grant = REVOKED  # GET /api/token answers 401 now
    pair.clock.advance(GRANT_POLL)
    pair.read_grant()
    assert pair.machine.state is Conn.NEEDS_PAIRING
    assert "run `x1p1 pair`" in pair.states[-1][1]


def test_a_4403_whose_grant_cannot_be_read_connects_again() -> None:
    pair = SourcePair(frozenset({Profile.P1}))
    pair.send(2)
    pair.grant = None
    pair.refuse(403)
    assert pair.machine.state is Conn.REGRANT
    pair.read_grant()
    assert pair.machine.state is Conn.CONNECTING


# --- abuse (in memory) --------------------------------------------------------------------------


def test_an_endless_telegram_costs_bounded_memory() -> None:
    pair = StreamPair()
    pair.send(2)
    endless = b"/XXX5 endless\r\n\r\n" + b"1-0:1.8.1(000001.000*kWh)\r\n" * 2000
    for _ in range(0, 1 << 20, len(endless)):
        pair.stream.feed(endless, pair.clock())
        assert pair.stream._reader.buffered <= 8192
    assert {e.reason.value for e in pair.invalid} == {"oversize"}
    pair.send(3)
    assert len(pair.relayed) == 5


def test_a_megabyte_message_of_noise_is_counted_not_kept() -> None:
    pair = StreamPair()
    pair.stream.feed(b"\x00" * (1 << 20), pair.clock())
    pair.send(1)
    assert pair.stream._reader.buffered == 0 and pair.stream.garbage_bytes == 1 << 20
    pair.send(1)
    assert len(pair.relayed) == 2


# --- loopback: real TLS, the CLI, a pty read by dsmr_parser ---------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _pair_cli(gw: TestGateway, state_dir: Path, *extra: str) -> Any:
    url = f"https://127.0.0.1:{gw.port}{extra[0] if extra else ''}"
    return _cli("pair", "--gateway", url, "--ca", str(gw.ca_file), "--state-dir", str(state_dir))


LOOPBACK: dict[str, Dialect] = {
    "binary, lower-case CRC, no CR LF, split": Dialect(
        binary=True,
        answer=changed(status=str.upper, expires_at=_unix),
        frame=lambda raw: split3(lower_crc(raw)[0][:-2]),
    ),
    "a path prefix and odd answers": Dialect(
        api_base="/vendor/x1/api", answer=without("expires_at", "profiles"), code="0042"
    ),
}


@pytest.mark.parametrize("name", list(LOOPBACK))
async def test_pair_and_relay_on_loopback(name: str, tmp_path: Path, pty: PtyPeer) -> None:
    dialect = LOOPBACK[name]
    state_dir = tmp_path / "state"
    async with running_gateway(tmp_path / "gw", auto="approve", dialect=dialect) as gw:
        prefix = dialect.api_base if dialect.api_base != "/api" else ""
        result = await asyncio.to_thread(_pair_cli, gw, state_dir, prefix)
        assert result.exit_code == 0, result.output
        if dialect.code:
            assert f"code {dialect.code}" in result.output
        else:
            assert "code" not in result.output
        async with running(fast_options(state_dir, pty.path)) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 5, what="telegrams on the pty")
            status = await asyncio.to_thread(_cli, "status", "--state-dir", str(state_dir))
            assert status.exit_code == 0, status.output
            assert "Connection:" in status.output and "connected" in status.output
            assert converter.dropped_invalid == 0
    received = pty.raw_telegrams()
    assert all(raw in gw.sent for raw in received)
    assert len(pty.parsed()) == len(received)


async def test_a_gateway_that_never_answers_pings(tmp_path: Path, pty: PtyPeer) -> None:
    state_dir = tmp_path / "state"
    async with running_gateway(
        tmp_path / "gw", period=0.02, dialect=Dialect(answers_pings=False)
    ) as gw:
        save_test_pairing(
            state_dir, token=gw.issue_token(), port=gw.port, ca_pem=gw.ca_file.read_text()
        )
        options = fast_options(state_dir, pty.path)
        options.stream.ping_interval = 0.05
        async with running(options) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 40, what="0.8 s of telegrams")
            assert converter.stream.machine.reconnects == 0
            assert converter.stream.state is Conn.CONNECTED


async def test_invalid_telegrams_make_status_fail(tmp_path: Path, pty: PtyPeer) -> None:
    def bad_crc(raw: bytes) -> list[bytes]:
        return [raw[: _bang(raw) + 1] + b"0000\r\n"]

    state_dir = tmp_path / "state"
    async with running_gateway(tmp_path / "gw", dialect=Dialect(frame=bad_crc)) as gw:
        save_test_pairing(
            state_dir, token=gw.issue_token(), port=gw.port, ca_pem=gw.ca_file.read_text()
        )
        async with running(fast_options(state_dir, pty.path)) as converter:
            await until(lambda: converter.dropped_invalid >= 5, what="invalid telegrams")
            status = await asyncio.to_thread(_cli, "status", "--state-dir", str(state_dir))
            assert status.exit_code == 3, status.output
            assert "dropping-invalid" in status.output and "crc-mismatch" in status.output
            report = await asyncio.to_thread(
                _cli, "status", "--json", "--state-dir", str(state_dir)
            )
            assert '"invalid_crc_mismatch"' in report.output
    assert pty.raw_telegrams() == []


async def test_a_megabyte_message_is_a_reconnect(tmp_path: Path, pty: PtyPeer) -> None:
    state_dir = tmp_path / "state"
    async with running_gateway(tmp_path / "gw", period=0.02) as gw:
        save_test_pairing(
            state_dir, token=gw.issue_token(), port=gw.port, ca_pem=gw.ca_file.read_text()
        )
        async with running(fast_options(state_dir, pty.path)) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 3, what="first telegrams")
            gw.inject(b"/" + b"9" * (1 << 20))
            await until(lambda: converter.stream.machine.reconnects >= 1, what="a reconnect")
            assert "a message over 64 KiB" in converter.stream._last_failure
            before = len(pty.raw_telegrams())
            await until(lambda: len(pty.raw_telegrams()) >= before + 3, what="telegrams again")
    assert len(pty.parsed()) == len(pty.raw_telegrams())


async def test_pair_throttled_by_a_plain_429_through_the_cli(tmp_path: Path) -> None:
    dialect = Dialect(throttle=(429, {"Content-Type": "text/plain"}, b"Too Many Requests\n"))
    async with running_gateway(tmp_path / "gw", dialect=dialect) as gw:
        gw.throttled = True
        result = await asyncio.to_thread(_pair_cli, gw, tmp_path / "state")
    assert result.exit_code == PairExit.THROTTLED == 5, result.output
    assert "try again in 60 s" in result.output and "Traceback" not in result.output


def test_a_bad_api_base_is_a_usage_error(tmp_path: Path) -> None:
    for command in ("pair", "run"):
        result = _cli(command, "--api-base", "x1/api", "--state-dir", str(tmp_path))
        assert result.exit_code == 2, result.output
        assert "--api-base 'x1/api' is not allowed; give an absolute path" in result.output


async def test_rediscovery_learns_a_new_txt_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from x1p1.converter import discovery
    from x1p1.converter.supervisor import Converter

    api = ["/vendor/api"]

    async def found(serial: object, wait: float) -> discovery.DiscoveredGateway:
        return discovery.DiscoveredGateway(
            "X1-interface.local", ("192.0.2.11",), 443, serial=SERIAL, api=api[0]
        )

    monkeypatch.setattr(discovery, "find_gateway", found)
    pairing_saved = save_test_pairing(
        tmp_path, token="t" * 43, port=443, ca_pem=None, serial=SERIAL
    )
    converter = Converter(fast_options(tmp_path, None))
    moved = await converter._mdns_lookup(pairing_saved)
    assert moved is not None and moved.api_base == "/vendor/api"
    assert moved.address == "192.0.2.11"
    api[0] = "/api"
    assert (await converter._mdns_lookup(pairing_saved)).api_base is None  # type: ignore[union-attr]
    api[0] = "not a path"
    assert (await converter._mdns_lookup(pairing_saved)).api_base is None  # type: ignore[union-attr]
    converter.pairing = replace_base(pairing_saved, "/vendor/api")
    assert converter.paths().legacy_p1 == "/vendor/api/legacy-p1"


def replace_base(saved: Any, base: str) -> Any:
    from dataclasses import replace

    return replace(saved, api_base=base)


async def test_a_slow_gateway_on_loopback_is_not_dropped(tmp_path: Path, pty: PtyPeer) -> None:
    """A gateway sending slower than the least stall silence (20 s against 15 s, scaled
    down to 0.4 against 0.3 s) keeps its one connection."""
    state_dir = tmp_path / "state"
    async with running_gateway(tmp_path / "gw", period=0.4) as gw:
        save_test_pairing(
            state_dir, token=gw.issue_token(), port=gw.port, ca_pem=gw.ca_file.read_text()
        )
        options = fast_options(state_dir, pty.path)
        options.stream.stall_timeout = 0.3
        async with running(options) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 6, what="six slow telegrams")
            assert converter.stream.machine.reconnects == 0
            assert converter.stream.machine.stall_limit() >= 3 * 0.35
    assert len(pty.parsed()) == len(pty.raw_telegrams())
