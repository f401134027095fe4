"""The customer portal over real HTTPS, without a browser: login on the meter, cookie
flags, CSRF and Origin checks on every form, admin access, the API through the session
cookie, the meter's one queue, X1 switched off, and the pure helpers (periods, CSV,
languages, the API page)."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from gateway_fixture import ALL_PROFILES, RunningGateway, running_gateway

from x1p1.gateway.portal.i18n import MESSAGES, Texts, format_number, negotiate
from x1p1.gateway.portal.periods import (
    measurements_csv,
    parse_anchor,
    period,
    shifted,
    use_per_interval,
)
from x1p1.x1.grants import csrf_token
from x1p1.x1.history import Resolution

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Client:
    """A browser-like HTTPS client: keeps cookies, sends Origin on POSTs."""

    gw: RunningGateway
    user_agent: str = UA
    jar: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    """The client's own address: another host of the home network binds 127.0.0.2."""

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        origin: str | None = "self",
    ) -> Answer:
        gw = self.gw
        conn = http.client.HTTPSConnection(
            gw.host,
            gw.port,
            context=gw.ssl_context(),
            timeout=20,
            source_address=(self.source, 0) if self.source else None,
        )
        all_headers = {"User-Agent": self.user_agent, "Accept-Language": "en"}
        if self.jar:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        body = None
        if method == "POST":
            if origin is not None:
                all_headers["Origin"] = gw.url if origin == "self" else origin
            body = urlencode(form or {}, doseq=True).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        all_headers.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            pairs = response.getheaders()
        finally:
            conn.close()
        cookies = [v for k, v in pairs if k.lower() == "set-cookie"]
        for raw in cookies:
            for name, morsel in SimpleCookie(raw).items():
                if morsel["max-age"] == "0":
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = morsel.value
        return Answer(response.status, {k.lower(): v for k, v in pairs}, cookies, data)

    def get(self, path: str, **kwargs: Any) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, Any] | None = None, **kwargs: Any) -> Answer:
        return self.request("POST", path, form, **kwargs)

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.get("/devices").text)
        assert match, "no CSRF token on the page"
        return match.group(1)

    def log_in(self) -> None:
        assert self.post("/login").status == 303
        logins = [r for r in self.gw.control.requests() if r["kind"] == "login"]
        self.gw.control.approve(logins[-1]["request_id"])
        assert self.get("/login/status").status == 200
        assert "__Host-x1p1-session" in self.jar

    def elevate(self) -> None:
        assert self.post("/admin/elevate", {"csrf": self.csrf()}).status == 303
        [request] = [r for r in self.gw.control.requests() if r["kind"] == "elevation"]
        answer = self.gw.control.approve(request["request_id"])
        assert answer["kind"] == "elevation"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path / "gw") as gateway:
        yield gateway


# --- login (§5.1.3) ----------------------------------------------------------------------------


def test_login_request_shows_on_the_meter_and_the_cookie_is_strict(gw: RunningGateway) -> None:
    client = Client(gw)
    assert client.get("/").headers["location"] == "/login"
    started = client.post("/login")
    assert started.status == 303 and started.headers["location"] == "/login"
    login_cookie = SimpleCookie(started.cookies[0])["__Host-x1p1-login"]
    assert login_cookie["httponly"] and login_cookie["secure"]
    assert login_cookie["samesite"] == "Strict" and login_cookie["max-age"] == "600"
    page = client.get("/login")
    [shown] = gw.control.requests()
    assert shown["kind"] == "login" and shown["user_agent"] == UA
    assert shown["name"] == "Chrome 126 on Linux"
    assert shown["code"] in page.text and "Chrome 126 on Linux" in page.text
    assert b'"status":"pending"' in client.get("/login/status").body
    gw.control.approve(shown["request_id"])
    approved = client.get("/login/status")
    assert approved.status == 200 and b'"approved"' in approved.body
    session = next(c for c in approved.cookies if c.startswith("__Host-x1p1-session="))
    morsel = SimpleCookie(session)["__Host-x1p1-session"]
    assert morsel["httponly"] and morsel["secure"] and morsel["path"] == "/"
    assert morsel["samesite"] == "Strict" and morsel["max-age"] == str(90 * 24 * 3600)
    assert "__Host-x1p1-login" not in client.jar
    assert client.get("/").status == 200
    # only the SHA-256 of the secret is kept
    secret = client.jar["__Host-x1p1-session"]
    db = (gw.state_dir / "gateway.db").read_bytes()
    assert secret.encode() not in db


def test_login_denied_on_the_meter(gw: RunningGateway) -> None:
    client = Client(gw)
    client.post("/login")
    gw.control.deny()
    assert b'"denied"' in client.get("/login/status").body
    page = client.get("/login")
    assert "denied" in page.text and client.get("/").status == 303


def test_login_approved_by_another_browser_needs_admin_access(gw: RunningGateway) -> None:
    first = Client(gw)
    first.log_in()
    second = Client(gw, user_agent="Mozilla/5.0 (Android 14) Firefox/130.0")
    second.post("/login")
    [request] = gw.control.requests()
    action = f"/admin/requests/{request['request_id']}/approve"
    refused = first.post(action, {"csrf": first.csrf()})
    assert refused.status == 403 and "admin" in refused.text.lower()
    first.elevate()
    assert first.post(action, {"csrf": first.csrf()}).status == 303
    assert b'"approved"' in second.get("/login/status").body
    assert second.get("/").status == 200


def test_a_session_survives_a_restart(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "gw") as gw:
        client = Client(gw)
        client.log_in()
        jar = dict(client.jar)
    with running_gateway(tmp_path / "gw") as gw:
        again = Client(gw, jar=jar)
        assert again.get("/").status == 200


def test_use_renews_the_session_and_its_cookie_hourly(gw: RunningGateway) -> None:
    assert gw.clock is not None
    client = Client(gw)
    client.log_in()
    assert client.get("/").cookies == []  # within the hour: nothing to renew on disk
    gw.clock.advance(timedelta(minutes=61))
    renewed = client.get("/")
    [cookie] = [c for c in renewed.cookies if c.startswith("__Host-x1p1-session=")]
    morsel = SimpleCookie(cookie)["__Host-x1p1-session"]
    assert morsel["max-age"] == str(90 * 24 * 3600) and morsel["samesite"] == "Strict"
    [session] = gw.control.sessions()
    expires = datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00"))
    assert expires - gw.clock.now() > timedelta(days=89, hours=23)
    gw.clock.advance(timedelta(days=91))  # 90 days unused: gone
    assert client.get("/").headers["location"] == "/login?m=ended"


def test_at_most_sixteen_requests_wait_on_the_meter(gw: RunningGateway) -> None:
    # sixteen hosts, one each: a newcomer has no host holding two to take the place of
    # (eight with two each would give way to it: tests/test_gateway_button.py)
    for host in range(1, 17):
        assert Client(gw, source=f"127.0.1.{host}").post("/login").status == 303
    full = Client(gw, source="127.0.1.17").post("/login")
    assert full.status == 429 and int(full.headers["retry-after"]) > 500
    assert "Too many requests are waiting" in full.text
    assert len(gw.control.requests()) == 16


def test_logout_ends_the_session(gw: RunningGateway) -> None:
    client = Client(gw)
    client.log_in()
    secret = client.jar["__Host-x1p1-session"]
    assert client.post("/logout", {"csrf": client.csrf()}).headers["location"] == "/login?m=bye"
    assert "__Host-x1p1-session" not in client.jar
    stale = Client(gw, jar={"__Host-x1p1-session": secret})
    assert stale.get("/").headers["location"] == "/login?m=ended"
    assert gw.control.call("sessions")["sessions"] == []


# --- forms: CSRF, Origin, admin access -----------------------------------------------------------


def test_every_form_refuses_a_forgery(gw: RunningGateway) -> None:
    token = gw.pair(["P1"], name="dongle")
    gw.token_request(["E-REALTIME"], name="waiting app")
    client = Client(gw)
    client.log_in()
    other = Client(gw)
    other.log_in()
    good, foreign = client.csrf(), csrf_token(other.jar["__Host-x1p1-session"])
    client.elevate()
    token_id = gw.control.tokens()[0]["token_id"]
    request_id = gw.control.requests()[0]["request_id"]
    other_session = next(
        s["session_id"]
        for s in gw.control.call("sessions")["sessions"]
        if s["session_id"] != _session_id(gw, client)
    )
    forms = {
        "/logout": {},
        "/admin/elevate": {},
        "/admin/unelevate": {},
        f"/admin/requests/{request_id}/approve": {"profiles": ["E-REALTIME"]},
        f"/admin/requests/{request_id}/deny": {},
        f"/admin/devices/{token_id}/profiles": {"profiles": ["P1", "E-REALTIME"]},
        f"/admin/devices/{token_id}/revoke": {},
        f"/admin/sessions/{other_session}/revoke": {},
        "/admin/block-history": {"confirm": "yes"},
    }
    for path, fields in forms.items():
        attempts = [
            ({**fields}, {}, "self"),  # no token at all
            ({**fields, "csrf": "x" * 43}, {}, "self"),  # a made-up token
            ({**fields, "csrf": foreign}, {}, "self"),  # another session's token
            ({**fields, "csrf": good}, {}, "https://evil.example"),  # another site
            ({**fields, "csrf": good}, {}, "null"),  # an opaque origin
            ({**fields, "csrf": good}, {"Sec-Fetch-Site": "cross-site"}, None),
        ]
        for form, headers, origin in attempts:
            answer = client.post(path, form, headers=headers, origin=origin)
            assert answer.status == 403, (path, form, headers, origin, answer.status)
    # nothing happened
    assert gw.request("GET", "/api/token", token=token).status == 200
    assert [t["profiles"] for t in gw.control.tokens()] == [["P1"]]
    assert gw.control.requests()[0]["request_id"] == request_id
    assert len(gw.control.call("sessions")["sessions"]) == 2
    assert client.get("/").status == 200


def test_admin_forms_need_admin_access(gw: RunningGateway) -> None:
    gw.pair(["P1"])
    client = Client(gw)
    client.log_in()
    token_id = gw.control.tokens()[0]["token_id"]
    csrf = client.csrf()
    for path in (f"/admin/devices/{token_id}/revoke", "/admin/block-history"):
        answer = client.post(path, {"csrf": csrf, "confirm": "yes"})
        assert answer.status == 403 and "Admin access needed" in answer.text
    assert len(gw.control.tokens()) == 1


def test_admin_access_lasts_sixty_minutes(gw: RunningGateway) -> None:
    assert gw.clock is not None
    gw.pair(["P1"])
    client = Client(gw)
    client.log_in()
    client.elevate()
    devices = client.get("/devices").text
    assert "Admin access active until" in devices and "/revoke" in devices
    gw.clock.advance(timedelta(minutes=61))
    devices = client.get("/devices").text
    assert "Ask for admin access" in devices and "/revoke" not in devices
    token_id = gw.control.tokens()[0]["token_id"]
    answer = client.post(f"/admin/devices/{token_id}/revoke", {"csrf": client.csrf()})
    assert answer.status == 403


def test_admin_functions_work_and_go_to_the_comlog(gw: RunningGateway) -> None:
    token = gw.pair(["P1"], name="dongle")
    asked = gw.token_request(["E-REALTIME", "E-HISTORIC"], name="app").json
    client = Client(gw)
    client.log_in()
    client.elevate()
    csrf = client.csrf()
    approve = f"/admin/requests/{asked['request_id']}/approve"
    assert client.post(approve, {"csrf": csrf}).status == 400  # no profile granted
    answer = client.post(approve, {"csrf": csrf, "profiles": ["E-REALTIME"]})
    assert answer.headers["location"] == "/devices?done=approved"
    state = gw.request("GET", f"/api/tokens/requests/{asked['request_id']}").json
    assert state["profiles"] == ["E-REALTIME"]  # fewer than asked (§5.1.6)
    dongle = next(t for t in gw.control.tokens() if t["name"] == "dongle")
    client.post(
        f"/admin/devices/{dongle['token_id']}/profiles",
        {"csrf": csrf, "profiles": ["P1", "G-REALTIME"]},
    )
    assert gw.request("GET", "/api/token", token=token).json["profiles"] == ["P1", "G-REALTIME"]
    client.post(f"/admin/devices/{dongle['token_id']}/revoke", {"csrf": csrf})
    assert gw.request("GET", "/api/token", token=token).status == 401
    events = [e["event"] for e in gw.control.call("comlog")["entries"]]
    for kind in (
        "login-requested",
        "login-approved",
        "elevation-requested",
        "elevation-approved",
        "token-approved",
        "profiles-changed",
        "token-revoked",
        "admin-action",
    ):
        assert kind in events, kind
    assert events.count("admin-action") == 3
    browsers = {
        e["device"]
        for e in gw.control.call("comlog")["entries"]
        if (e["device"] or "").startswith("portal:")
    }
    assert len(browsers) == 1  # one browser, one name, before and after it logged in
    comlog = client.get("/comlog").text
    assert "Admin access confirmed" in comlog and "Access revoked" in comlog


def test_block_history_needs_the_box_ticked_then_ends_everything(gw: RunningGateway) -> None:
    token = gw.pair(list(ALL_PROFILES))
    client = Client(gw)
    client.log_in()
    other = Client(gw)
    other.log_in()
    client.elevate()
    refused = client.post("/admin/block-history", {"csrf": client.csrf()})
    assert refused.status == 400 and "cannot be undone" in refused.text
    assert gw.request("GET", "/api/token", token=token).status == 200
    done = client.post("/admin/block-history", {"csrf": client.csrf(), "confirm": "yes"})
    assert done.headers["location"] == "/login?m=blocked"
    assert gw.request("GET", "/api/token", token=token).status == 401
    assert client.get("/").status == 303 and other.get("/").status == 303
    assert gw.control.call("sessions")["sessions"] == []
    assert "history-blocked" in [e["event"] for e in gw.control.call("comlog")["entries"]]


# --- the API through the session cookie ------------------------------------------------------


def test_the_session_reads_the_api_with_every_profile(gw: RunningGateway) -> None:
    client = Client(gw)
    client.log_in()
    meters = client.get("/api/meters")
    assert meters.status == 200 and b"gas" in meters.body
    assert b'"profiles":["P1","E-REALTIME"' in client.get("/api/token").body
    # never for other methods, nor from another site
    assert client.request("DELETE", "/api/token").status == 401
    assert client.get("/api/meters", headers={"Origin": "https://evil.example"}).status == 401
    assert client.get("/api/meters", headers={"Sec-Fetch-Site": "cross-site"}).status == 401
    assert Client(gw).get("/api/meters").status == 401


async def test_the_live_socket_opens_with_the_cookie_and_closes_at_logout(
    gw: RunningGateway,
) -> None:
    import asyncio
    import json

    client = Client(gw)
    await asyncio.to_thread(client.log_in)
    cookie = f"__Host-x1p1-session={client.jar['__Host-x1p1-session']}"
    query = urlencode({"equipment_id": gw.electricity_id, "obis": "1-0:1.7.0.255"})
    from websockets.asyncio.client import connect

    async with connect(
        f"{gw.ws_url}/api/realtime?{query}",
        ssl=gw.ssl_context(),
        origin=gw.url,
        additional_headers={"Cookie": cookie},
    ) as ws:  # type: ignore[arg-type]
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["equipment_id"] == gw.electricity_id
        csrf = await asyncio.to_thread(client.csrf)
        await asyncio.to_thread(client.post, "/logout", {"csrf": csrf})
        with pytest.raises(Exception) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert getattr(closed.value, "rcvd", None) is not None
        assert closed.value.rcvd.code == 4401  # type: ignore[attr-defined]


# --- the meter's one queue (§5.1.5) ----------------------------------------------------------


def test_the_meters_button_names_the_request_by_its_code(gw: RunningGateway) -> None:
    from click.testing import CliRunner

    from x1p1.cli import main

    asked = gw.token_request(["P1"], name="dongle").json
    client = Client(gw)
    client.post("/login")
    queue = gw.control.requests()
    assert [q["kind"] for q in queue] == ["device", "login"]
    assert gw.control.display() == queue[0]  # the display shows one, the oldest
    login_code = queue[1]["code"]
    assert json.loads(client.get("/login/status").body)["code"] == login_code
    runner = CliRunner()
    where = ["--state-dir", str(gw.state_dir)]
    listed = runner.invoke(main, ["meter", "list", *where])
    assert "portal login" in listed.output and f"code {login_code}" in listed.output
    refused = runner.invoke(main, ["meter", "approve", *where])
    assert refused.exit_code == 2 and "--code" in refused.output
    assert f"code {asked['code']}" in refused.output and f"code {login_code}" in refused.output
    first = runner.invoke(main, ["meter", "approve", "--code", asked["code"], *where])
    assert first.exit_code == 0 and "dongle" in first.output
    assert (
        gw.request("GET", f"/api/tokens/requests/{asked['request_id']}").json["status"]
        == "approved"
    )
    second = runner.invoke(main, ["meter", "approve", *where])  # the only one waiting now
    assert second.exit_code == 0 and "portal login" in second.output
    assert b'"approved"' in client.get("/login/status").body
    client.post("/admin/elevate", {"csrf": client.csrf()})
    third = runner.invoke(main, ["meter", "deny", *where])
    assert third.exit_code == 0 and "Denied" in third.output
    assert gw.control.requests() == []
    nothing = runner.invoke(main, ["meter", "approve", *where])
    assert nothing.exit_code == 1 and "no request is waiting" in nothing.output


def test_the_meter_lists_devices_and_ends_a_session(gw: RunningGateway) -> None:
    from click.testing import CliRunner

    from x1p1.cli import main

    client = Client(gw)
    client.log_in()
    gw.pair(["P1"], name="dongle")
    [session] = gw.control.sessions()
    assert session["browser"] == "Chrome 126 on Linux"
    runner = CliRunner()
    where = ["--state-dir", str(gw.state_dir)]
    listed = runner.invoke(main, ["meter", "devices", *where])
    assert "'dongle'" in listed.output and "portal session" in listed.output
    ended = runner.invoke(main, ["meter", "revoke", session["session_id"], *where])
    assert ended.exit_code == 0 and session["session_id"] in ended.output
    assert client.get("/").status == 303
    again = runner.invoke(main, ["meter", "revoke", session["session_id"], *where])
    assert again.exit_code == 1 and "already" in again.output


# --- X1 off (§12.3), errors, assets --------------------------------------------------------


def test_x1_off_shows_no_data(gw: RunningGateway) -> None:
    client = Client(gw)
    client.log_in()
    gw.control.operator("disable")
    for path in ("/", "/live", "/history", "/login"):
        page = client.get(path)
        assert page.status == 503 and "switched the X1 interface off" in page.text
        assert "kW" not in page.text
    gw.control.operator("enable")
    assert client.get("/").status == 200


def test_pages_carry_security_headers_and_html_errors(gw: RunningGateway) -> None:
    client = Client(gw)
    page = client.get("/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    missing = client.get("/no/such/page")
    assert missing.status == 404 and missing.headers["content-type"].startswith("text/html")
    assert client.get("/api/nothing").headers["content-type"].startswith("application/json")
    assert client.get("/lang/de").status == 404
    assert client.get("/lang/en?next=//evil.example").headers["location"] == "/"


def test_assets_are_local_and_long_cached(gw: RunningGateway) -> None:
    import gzip

    client = Client(gw)
    page = client.get("/login").text
    urls = re.findall(r'(?:href|src)="(/portal/[^"]+)"', page)
    assert urls and all(u.startswith("/portal/static/") for u in urls)
    assert "http://" not in page and "https://" not in page.replace(gw.url, "")
    for url in urls:
        asset = client.get(url)
        assert asset.status == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    import importlib.metadata

    version = importlib.metadata.version("plotly")
    plotly = client.get(
        f"/portal/vendor/plotly-{version}.min.js", headers={"Accept-Encoding": "gzip"}
    )
    assert plotly.status == 200 and plotly.headers["content-encoding"] == "gzip"
    from x1p1.gateway.portal.html import Plotly

    assert gzip.decompress(plotly.body) == Plotly.path().read_bytes()
    assert client.get("/portal/vendor/plotly-0.0.1.min.js").status == 404


def test_language_from_the_browser_then_the_switch(gw: RunningGateway) -> None:
    client = Client(gw)
    dutch = client.get("/login", headers={"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.8"})
    assert '<html lang="nl">' in dutch.text and "Inloggen" in dutch.text
    english = client.get("/login", headers={"Accept-Language": "de-DE,en;q=0.5"})
    assert '<html lang="en">' in english.text
    switched = client.get("/lang/nl?next=/login")
    assert switched.headers["location"] == "/login"
    again = client.get("/login", headers={"Accept-Language": "en"})
    assert '<html lang="nl">' in again.text


# --- pure helpers -----------------------------------------------------------------------------


def _session_id(gw: RunningGateway, client: Client) -> str:
    from x1p1.x1.grants import secret_digest as token_digest

    digest = token_digest(client.jar["__Host-x1p1-session"])
    row = gw.call(
        lambda g: g.state.store.conn.execute(
            "SELECT grant_id FROM grants WHERE digest = ?", (digest,)
        ).fetchone()
    )
    return str(row[0])


@pytest.mark.parametrize(
    ("header", "cookie", "lang"),
    [
        (None, None, "nl"),
        ("", None, "nl"),
        ("en-US,en;q=0.9", None, "en"),
        ("nl-BE", None, "nl"),
        ("fr, nl;q=0.3, en;q=0.5", None, "en"),
        ("de", None, "en"),
        ("en;q=0, nl;q=0.1", None, "nl"),
        ("*", None, "nl"),
        ("en", "nl", "nl"),
        ("nl", "xx", "nl"),
        ("q=;;,,", None, "en"),
    ],
)
def test_negotiate(header: str | None, cookie: str | None, lang: str) -> None:
    assert negotiate(header, cookie) == lang


def test_every_text_exists_in_both_languages() -> None:
    for key, (nl, en) in MESSAGES.items():
        assert nl.strip() and en.strip(), key
        assert re.findall(r"{(\w+)}", nl) == re.findall(r"{(\w+)}", en) or sorted(
            re.findall(r"{(\w+)}", nl)
        ) == sorted(re.findall(r"{(\w+)}", en)), key
    assert Texts("nl")("login.waiting", browser="b", code="1234").count("1234") == 1
    assert format_number(1234.5, 3, "nl") == "1.234,500"
    assert format_number(1234.5, 3, "en") == "1,234.500"


def test_periods_follow_the_dutch_calendar() -> None:
    now = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # the day summer time starts
    day = period(Resolution.MIN15, None, now)
    assert (day.end - day.start) == timedelta(hours=23)
    assert day.start == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    week = period(Resolution.HOUR, date(2026, 3, 26), now)
    assert week.anchor == date(2026, 3, 23) and (week.end - week.start) == timedelta(hours=167)
    month = period(Resolution.DAY, date(2026, 2, 14), now)
    assert month.anchor == date(2026, 2, 1) and month.label("nl") == "februari 2026"
    assert shifted(month, -2, now).anchor == date(2025, 12, 1)
    year = period(Resolution.MONTH, date(2026, 7, 4), now)
    assert year.start == datetime(2025, 12, 31, 23, 0, tzinfo=UTC) and year.label("en") == "2026"
    hour = period(Resolution.MIN5, date(2000, 1, 1), now)
    assert hour.end == now and hour.start == now - timedelta(hours=1)
    assert parse_anchor(None) is None and parse_anchor("2026-02-03") == date(2026, 2, 3)
    for bad in ("2026-2-3", "2026-02-30", "x", "0001-01-01"):
        with pytest.raises(Exception, match="start"):
            parse_anchor(bad)


def test_history_page_in_dutch(gw: RunningGateway) -> None:
    client = Client(gw)
    client.log_in()
    page = client.get("/history?meter=gas&resolution=1d", headers={"Accept-Language": "nl"}).text
    assert "Bewaard: 24 maanden, maximaal 730 waarden." in page
    assert 'value="1d" selected' in page and "Gas (m³)" in page


def test_use_per_interval_leaves_gaps_unknown() -> None:
    readings = [
        {"t": "2026-03-02T10:00:00Z", "values": {"a": 1.0}},
        {"t": "2026-03-02T10:15:00Z", "values": {"a": 1.5}},
        {"t": "2026-03-02T10:45:00Z", "values": {"a": 2.5}},  # 10:30 is missing (§12.2)
        {"t": "2026-03-02T11:00:00Z", "values": {}},
    ]
    uses = use_per_interval(Resolution.MIN15, readings, ["a"])
    assert [u["a"] for _, u in uses] == [0.5, None, None]


def test_csv_has_the_rows_of_the_response() -> None:
    body = {
        "units": {"1-0:1.8.1.255": "kWh", "0-0:96.7.21.255": None},
        "readings": [
            {"t": "2026-03-02T10:00:00Z", "values": {"1-0:1.8.1.255": 12.5, "0-0:96.7.21.255": 3}},
            {"t": "2026-03-02T10:15:00Z", "values": {"1-0:1.8.1.255": 12.75}},
        ],
    }
    assert measurements_csv(body) == (
        "t,1-0:1.8.1.255,0-0:96.7.21.255\r\n"
        "2026-03-02T10:00:00Z,12.5,3\r\n"
        "2026-03-02T10:15:00Z,12.75,\r\n"
    )


def test_the_api_page_documents_every_route(gw: RunningGateway) -> None:
    client = Client(gw)
    client.log_in()
    page = client.get("/api-docs").text
    document = gw.request("GET", "/api/openapi.json").json
    for path, item in document["paths"].items():
        for operation in item.values():
            assert f'id="op-{operation["operationId"]}"' in page, operation["operationId"]
            assert f"<code>{path}</code>" in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "<script" not in page.split("<main")[1].split("</main>")[0]
