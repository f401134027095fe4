"""The customer portal in a real browser: Debian's chromium, headless, Playwright.

Each test runs its own gateway (real TLS on loopback) and a browser that trusts that
gateway's root CA (``portal_browser``: nothing is ignored). Screenshots of every page go
to ``test-artifacts/portal/``. Covered: logging in with the meter's button, the live
chart moving, a CSV download whose rows are the API's, revoking a device (its token then
gets 401), blocking history (dialog, then no history and no session), the language
switch, a phone's screen, the keyboard, and an accessibility audit of every page.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from gateway_fixture import ALL_PROFILES, RunningGateway, running_gateway
from portal_browser import (
    audit,
    elevate,
    log_in,
    needs_browser,
    new_page,
    no_horizontal_scroll,
    open_browser,
    shoot,
    wait_for,
)

from x1p1.gateway.portal.i18n import local
from x1p1.x1.history import Resolution
from x1p1.x1.obis import Meter

pytestmark = [pytest.mark.browser, needs_browser]

PAGES = ("/", "/live", "/history", "/devices", "/comlog", "/privacy", "/api-docs")


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path / "gw") as gateway:
        yield gateway


@pytest.fixture
def browser(gw: RunningGateway) -> Iterator[Any]:
    with open_browser(gw.ca_path) as chromium:
        yield chromium


def ensure_history(gw: RunningGateway) -> Any:
    """The gateway's history store (the portal's), once the first start's backfill is in."""
    history = gw.call(lambda g: g.portal.history)
    assert history is not None, "the gateway has no history"
    wait_for(lambda: gw.call(lambda g: history.count(Meter.ELECTRICITY, Resolution.DAY)) > 0)
    return history


def clean(page: Any) -> None:
    """The page's scripts raised nothing and logged no error."""
    assert page.x1_errors == [], page.x1_errors


# --- login (§5.1.3) ----------------------------------------------------------------------------


def test_login_with_the_meters_button(gw: RunningGateway, browser: Any) -> None:
    page = new_page(browser)
    page.goto(gw.url + "/")
    page.wait_for_selector('[data-login="pending"]')
    shown = wait_for(lambda: [r for r in gw.control.requests() if r["kind"] == "login"])[0]
    assert "HeadlessChrome" in shown["user_agent"] and shown["name"].startswith("Headless Chrome")
    assert page.inner_text(".code") == shown["code"]  # the same code as on the display
    shoot(page, "login-waiting")
    assert audit(page)["problems"] == []
    gw.control.approve()  # the meter's button
    page.wait_for_url(gw.url + "/")
    assert page.inner_text("h1") == "Your metering installation"
    assert gw.electricity_id in page.content() and gw.gas_id in page.content()
    shoot(page, "overview")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "__Host-x1p1-session"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    days = (cookie["expires"] - time.time()) / 86400
    assert 89.9 < days <= 90.0
    clean(page)


def test_two_waiting_the_button_refuses_and_the_code_picks(
    gw: RunningGateway, browser: Any
) -> None:
    """Another host of the home network (127.0.0.2) queues first, with this browser's
    name; the meter's button alone refuses to guess, and the code on the waiting page
    picks this browser's request (§5.1.5)."""
    from click.testing import CliRunner

    from x1p1.cli import main

    gw.token_request(["P1", "E-HISTORIC"], name="Headless Chrome on Linux", source="127.0.0.2")
    page = new_page(browser)
    page.goto(gw.url + "/login")
    page.wait_for_selector('[data-login="pending"]')
    code = page.inner_text(".code")
    assert len(code) == 4 and code.isdigit()
    where = ["--state-dir", str(gw.state_dir)]
    refused = CliRunner().invoke(main, ["meter", "approve", *where])
    assert refused.exit_code == 2 and "--code" in refused.output and code in refused.output
    shoot(page, "login-two-waiting")
    assert page.locator('[data-login="pending"]').count() == 1  # nobody was let in
    approved = CliRunner().invoke(main, ["meter", "approve", "--code", code, *where])
    assert approved.exit_code == 0 and "portal login" in approved.output
    page.wait_for_url(gw.url + "/")
    assert [r["kind"] for r in gw.control.requests()] == ["device"]  # the other one waits
    clean(page)


def test_login_denied_on_the_meter(gw: RunningGateway, browser: Any) -> None:
    page = new_page(browser)
    page.goto(gw.url + "/login")
    page.wait_for_selector('[data-login="pending"]')
    wait_for(lambda: gw.control.requests())
    gw.control.deny()
    page.wait_for_selector('[data-login="denied"]')
    shoot(page, "login-denied")
    page.click("#login-form button")  # ask again
    page.wait_for_selector('[data-login="pending"]')
    clean(page)


# --- live data ---------------------------------------------------------------------------------


def test_the_live_chart_moves(gw: RunningGateway, browser: Any) -> None:
    page = new_page(browser)
    log_in(page, gw)
    page.goto(gw.url + "/live")
    page.wait_for_selector('#live-status[data-state="live"]')
    page.wait_for_function(
        "() => Number(document.getElementById('live-chart').dataset.points) >= 2"
    )

    def sample() -> tuple[int, str, str]:
        points = int(page.get_attribute("#live-chart", "data-points") or 0)
        last = page.evaluate("() => String(document.getElementById('live-chart').data[0].x.at(-1))")
        numbers = " ".join(page.locator("[data-obis]").all_inner_texts())
        return points, last, numbers

    first = sample()
    page.wait_for_function(
        f"() => Number(document.getElementById('live-chart').dataset.points) >= {first[0] + 3}"
    )
    second = sample()
    assert second[0] >= first[0] + 3  # a point a second
    assert second[1] != first[1]  # the newest moment moved on
    assert second[2] != first[2]  # the numbers changed
    shoot(page, "live")
    assert audit(page)["problems"] == []
    # pausing stops the updates (WCAG 2.2.2), resuming starts them again
    page.click("#live-pause")
    assert page.get_attribute("#live-pause", "aria-pressed") == "true"
    paused = sample()
    page.wait_for_timeout(2500)
    assert sample()[0] == paused[0]
    page.click("#live-pause")
    page.wait_for_function(
        f"() => Number(document.getElementById('live-chart').dataset.points) > {paused[0]}"
    )
    clean(page)


# --- history and CSV ---------------------------------------------------------------------------


def test_csv_download_matches_the_api(gw: RunningGateway, browser: Any) -> None:
    ensure_history(gw)
    token = gw.pair(["E-HISTORIC", "G-HISTORIC"])
    page = new_page(browser, accept_downloads=True)
    log_in(page, gw)
    checked = 0
    # yesterday's periods: today's (or this month's) may still be empty just after midnight
    yesterday = (local(datetime.now(UTC)) - timedelta(days=1)).date().isoformat()
    for query in (
        "meter=electricity&resolution=15m",
        "meter=electricity&resolution=1d",
        "meter=gas&resolution=1h",
    ):
        page.goto(f"{gw.url}/history?{query}&start={yesterday}")
        page.wait_for_selector("#history-chart .main-svg")
        assert int(page.get_attribute("#history-chart", "data-bars") or 0) > 0
        shoot(page, "history-" + query.split("=")[-1] + "-" + query.split("&")[0][6:])
        if query.endswith("1d"):
            page.click("a[rel=prev]")  # period navigation: the month before
            page.wait_for_selector("#history-chart .main-svg")
        link = page.get_attribute("a[download]", "href") or ""
        selection = parse_qs(urlparse(link).query)
        with page.expect_download() as info:
            page.click("a[download]")
        download = info.value
        rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
        header, body = rows[0], rows[1:]
        codes = selection["obis"]
        assert header == ["t", *codes]
        # the same query of the API, with a device's token
        meter = gw.electricity_id if selection["meter"] == ["electricity"] else gw.gas_id
        api_query = urlencode(
            {
                "obis": ",".join(codes),
                "resolution": selection["resolution"][0],
                "from": body[0][0],
                "to": body[-1][0],
            }
        )
        reply = gw.request("GET", f"/api/meters/{meter}/measurements?{api_query}", token=token)
        assert reply.status == 200, reply.body
        api = reply.json
        expected = [[r["t"], *(_num(r["values"].get(c)) for c in codes)] for r in api["readings"]]
        assert [[row[0], *map(_num_text, row[1:])] for row in body] == expected
        checked += 1
    assert checked == 3
    clean(page)


def _num(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _num_text(text: str) -> float | None:
    return None if text == "" else float(text)


# --- devices (§9.2.3) ----------------------------------------------------------------------------


def test_revoking_a_device(gw: RunningGateway, browser: Any) -> None:
    token = gw.pair(["P1", "E-REALTIME"], name="P1 dongle in the meter cupboard")
    gw.token_request(["E-HISTORIC"], name="Energy app")
    page = new_page(browser)
    log_in(page, gw)
    page.goto(gw.url + "/devices")
    assert page.locator("li[data-token]").count() == 1
    assert page.locator("form[action$='/revoke']").count() == 0  # not without admin access
    shoot(page, "devices")
    elevate(page, gw)
    shoot(page, "devices-admin")
    assert audit(page)["problems"] == []
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("li[data-token] form[action$='/revoke'] button")
    page.wait_for_selector(".flash")
    assert page.locator("li[data-token]").count() == 0
    assert gw.request("GET", "/api/token", token=token).status == 401
    shoot(page, "devices-revoked")
    clean(page)


def test_approving_a_request_with_other_profiles(gw: RunningGateway, browser: Any) -> None:
    asked = gw.token_request(["E-REALTIME", "E-HISTORIC"], name="Energy app").json
    page = new_page(browser)
    log_in(page, gw)
    elevate(page, gw)
    item = page.locator(f"li[data-request='{asked['request_id']}']")  # admin: ids shown
    item.get_by_label("E-HISTORIC").uncheck()
    item.get_by_label("G-REALTIME").check()
    item.locator("form.stack button").click()
    page.wait_for_selector(".flash")
    state = gw.request("GET", f"/api/tokens/requests/{asked['request_id']}").json
    assert state["profiles"] == ["E-REALTIME", "G-REALTIME"]
    clean(page)


# --- privacy: block history (§12.1) ----------------------------------------------------------


def test_blocking_history(gw: RunningGateway, browser: Any) -> None:
    history = ensure_history(gw)
    token = gw.pair(list(ALL_PROFILES))
    page = new_page(browser)
    log_in(page, gw)
    page.goto(gw.url + "/privacy")
    assert "cannot be undone" in page.inner_text(".block")
    shoot(page, "privacy")
    elevate(page, gw, "/privacy")
    page.check("#block-confirm")
    page.click("#block-form button[type=submit]")
    page.wait_for_selector("#block-dialog[open]")
    shoot(page, "privacy-block-dialog")
    page.click("#block-no")  # changed their mind: nothing happens
    assert not page.is_visible("#block-dialog")
    assert gw.request("GET", "/api/token", token=token).status == 200
    page.click("#block-form button[type=submit]")
    page.click("#block-yes")
    page.wait_for_url(gw.url + "/login?m=blocked")
    shoot(page, "privacy-blocked")
    assert "History has been blocked" in page.inner_text("main")
    # every authorisation ended, this session too
    assert gw.request("GET", "/api/token", token=token).status == 401
    assert gw.control.call("sessions")["sessions"] == []
    page.goto(gw.url + "/")
    assert page.url.startswith(gw.url + "/login")
    # nothing from before the block is there any more
    blocked = gw.call(lambda g: history.blocked_at())
    assert isinstance(blocked, datetime)
    from x1p1.x1.history import parse_measurements_query
    from x1p1.x1.profiles import Profile

    q = parse_measurements_query(
        {
            "obis": "1-0:1.8.1.255",
            "resolution": "1d",
            "from": "2000-01-01T00:00:00Z",
            "to": blocked.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        Meter.ELECTRICITY,
        frozenset(Profile),
    )
    assert gw.call(lambda g: history.query(q)) == []
    fresh = gw.pair(["E-HISTORIC"])  # a device paired after the block sees nothing before it
    api = gw.request(
        "GET",
        f"/api/meters/{gw.electricity_id}/measurements?"
        + urlencode(
            {
                "obis": "1-0:1.8.1.255",
                "resolution": "15m",
                "from": "2000-01-01T00:00:00Z",
                "to": blocked.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ),
        token=fresh,
    )
    assert api.status == 200 and api.json["readings"] == []
    events = [e["event"] for e in gw.control.call("comlog")["entries"]]
    assert "history-blocked" in events
    clean(page)


# --- language, phone, keyboard, accessibility ------------------------------------------------


def test_language_from_the_browser_and_the_switch(gw: RunningGateway, browser: Any) -> None:
    page = new_page(browser, locale="nl-NL")
    log_in(page, gw)
    assert page.get_attribute("html", "lang") == "nl"
    assert page.inner_text("h1") == "Uw meetinstallatie"
    shoot(page, "overview-nl")
    page.click("a.lang")
    page.wait_for_selector("html[lang=en]")
    assert page.inner_text("h1") == "Your metering installation"
    page.goto(gw.url + "/live")  # the choice stays
    assert page.get_attribute("html", "lang") == "en" and page.inner_text("h1") == "Live use"
    page.click("a.lang")
    page.wait_for_selector("html[lang=nl]")
    assert page.inner_text("h1") == "Live verbruik"
    clean(page)


def test_every_page_on_a_phone(gw: RunningGateway, browser: Any) -> None:
    ensure_history(gw)
    gw.pair(["P1"], name="P1 dongle")
    page = new_page(browser, locale="nl-NL", phone=True)
    log_in(page, gw)
    for path in PAGES:
        page.goto(gw.url + path)
        if path in ("/live", "/history"):
            page.wait_for_selector(".chart .main-svg")
        if path == "/live":
            page.wait_for_function(
                "() => Number(document.getElementById('live-chart').dataset.points) >= 3"
            )
        assert no_horizontal_scroll(page), path
        result = audit(page)
        assert result["problems"] == [], (path, result["problems"])
        shoot(page, "phone" + (path.replace("/", "-") if path != "/" else "-overview"))
    clean(page)


def test_every_page_passes_the_audit_and_the_keyboard_works(
    gw: RunningGateway, browser: Any
) -> None:
    ensure_history(gw)
    gw.pair(["P1"], name="P1 dongle")
    page = new_page(browser)
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    log_in(page, gw)
    for path in PAGES:
        page.goto(gw.url + path)
        if path in ("/live", "/history"):
            page.wait_for_selector(".chart .main-svg")
        result = audit(page)
        assert result["problems"] == [], (path, result["problems"])
        assert result["texts"] > 5
        shoot(page, "page" + (path.replace("/", "-") if path != "/" else "-overview"))
    # keyboard: the first Tab reaches the skip link, which leads into the content
    page.goto(gw.url + "/devices")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    shoot(page, "keyboard-skip-link", full_page=False)
    page.keyboard.press("Enter")
    assert page.evaluate("() => location.hash") == "#main"
    # and the admin request is a real button that Enter presses
    button = page.locator("form[action='/admin/elevate'] button")
    button.focus()
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # a visible focus indicator
    page.keyboard.press("Enter")
    page.wait_for_selector('section.admin[data-admin="pending"]')
    # offline: nothing came from outside the gateway (no CDN, no web fonts)
    outside = [u for u in fetched if not u.startswith((gw.url + "/", gw.ws_url + "/", "data:"))]
    assert fetched and outside == []
    assert any("/portal/vendor/plotly-" in u for u in fetched)
    clean(page)
