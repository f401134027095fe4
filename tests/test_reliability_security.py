"""Security: what would worry the careful operator of a device that holds
a household's energy data, checked on the real processes.

- TLS: the gateway refuses a TLS 1.2 client and serves TLS 1.3.
- The converter (``x1p1 run`` and ``x1p1 pair`` as processes) refuses a gateway whose
  certificate is from another CA or names another host: once, fatally; a relay in front
  of the gateway counts the TCP connections, so a converter that hammers would show.
- Secrets at rest: after pairings and a portal login, and a SIGKILL that leaves the
  write-ahead log as it was, no token, token's raw bytes, session or login secret is in
  any file of the gateway's state directory (only the tokens' SHA-256 are); the state
  directory is 0700 and every file holding a secret 0600. On the converter's side the
  token is only in ``token.json``, mode 0600.
- No secret in any log line: the gateway at ``-vv`` (its libraries' debug too) through
  pairing, API calls, wrong tokens, tokens in query strings and paths, a WebSocket, a
  portal login and logout; the converter at ``-vv`` through its certificate errors.
- Token guessing: tokens are 256 random bits (43 base64url characters, every bit
  balanced over many); thousands of wrong tokens all get 401, cost the gateway no
  lasting memory, descriptors or database writes, and leave it serving. There is no
  lockout on purpose: a lockout keyed on the client would let anyone on the network lock
  the customer's devices out, and at the measured rate guessing one of the tokens would
  take longer than the universe has existed by a factor beyond 10^50.
- The portal: every cookie it sets is Secure, HttpOnly, SameSite=Strict, Path=/ (the
  session and login cookies with the ``__Host-`` prefix); every form it renders carries
  a CSRF token; every state-changing route (enumerated from the OpenAPI document, so a
  new form cannot slip through) refuses a missing, wrong or foreign CSRF token and
  another site's Origin, and nothing changes.
- The control socket: the gateway process listens on no TCP port but its HTTPS port and
  on no UDP port (mDNS off); its one Unix socket is the control socket, mode 0600 in a
  0700 directory; another user can neither open it nor, were it opened to them, use it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import math
import os
import re
import secrets
import signal
import socket
import sqlite3
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from converter_support import save_test_pairing
from gateway_fixture import ALL_PROFILES, RunningGateway
from reliability_support import (
    CLI,
    WireReader,
    append_to,
    child_env,
    find_secrets,
    logged_gateway,
    open_fds,
    rss_kib,
    tcp_listeners,
    unix_sockets,
    wait_for,
    write_figures,
)

from x1p1.x1.grants import secret_digest as token_digest

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SESSION_COOKIE = "__Host-x1p1-session"
LOGIN_COOKIE = "__Host-x1p1-login"


@dataclass
class Browser:
    """Just enough of a browser: cookies, Origin on POSTs, every Set-Cookie kept."""

    gw: RunningGateway
    jar: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, Any] | None = None,
        origin: str | None = "self",
        cookies: bool = True,
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPSConnection(
            self.gw.host, self.gw.port, context=self.gw.ssl_context(), timeout=20
        )
        headers = {"User-Agent": UA, "Accept-Language": "en"}
        if cookies and self.jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        body = None
        if method == "POST":
            if origin is not None:
                headers["Origin"] = self.gw.url if origin == "self" else origin
            body = urlencode(form or {}, doseq=True).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            pairs = response.getheaders()
        finally:
            conn.close()
        for name, value in pairs:
            if name.lower() == "set-cookie":
                self.set_cookies.append(value)
                for key, morsel in SimpleCookie(value).items():
                    if morsel["max-age"] == "0":
                        self.jar.pop(key, None)
                    else:
                        self.jar[key] = morsel.value
        return response.status, {k.lower(): v for k, v in pairs}, text

    def csrf(self, page: str = "/devices") -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.request("GET", page)[2])
        assert match, f"no CSRF token on {page}"
        return match.group(1)

    def log_in(self) -> None:
        assert self.request("POST", "/login")[0] == 303
        logins = [r for r in self.gw.control.requests() if r["kind"] == "login"]
        self.gw.control.approve(logins[-1]["request_id"])
        assert self.request("GET", "/login/status")[0] == 200
        assert SESSION_COOKIE in self.jar

    def elevate(self) -> None:
        assert self.request("POST", "/admin/elevate", {"csrf": self.csrf()})[0] == 303
        [request] = [r for r in self.gw.control.requests() if r["kind"] == "elevation"]
        self.gw.control.approve(request["request_id"])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    root = tmp_path_factory.mktemp("security")
    with logged_gateway(root / "gw", root / "gateway.log") as handle:
        yield handle


def log_of(gw: RunningGateway) -> Path:
    return gw.state_dir.parent / "gateway.log"


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_1_2_is_refused_and_1_3_served(gw: RunningGateway) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(gw.ca_path)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((gw.host, gw.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname=gw.host).close()
    current = ssl.create_default_context(cafile=str(gw.ca_path))
    with socket.create_connection((gw.host, gw.port), timeout=10) as raw:
        with current.wrap_socket(raw, server_hostname=gw.host) as tls:
            assert tls.version() == "TLSv1.3"
    assert gw.request("GET", "/api/openapi.json").status == 200  # and it still serves


# --- the converter refuses the wrong gateway, once ------------------------------------------------


class CountingRelay:
    """A TCP relay in front of the gateway that counts the connections it gets."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.slow
async def test_the_converter_refuses_a_wrong_ca_and_a_wrong_host_name_once(
    gw: RunningGateway, tmp_path: Path
) -> None:
    from x1p1.gateway.pki import GatewayPKI

    other_root = GatewayPKI.load_or_create(tmp_path / "other-pki").root_pem.decode()
    token = await asyncio.to_thread(gw.pair, ["P1"], name="wrong gateway")
    relay = CountingRelay(gw.port)
    port = await relay.start()
    wire = WireReader().attach()
    logs: list[Path] = []
    try:
        cases = {
            "wrong-ca": dict(ca_pem=other_root, host_name="127.0.0.1"),
            "wrong-name": dict(ca_pem=gw.ca_path.read_text(), host_name="meter.example.org"),
        }
        for case, pairing in cases.items():
            state_dir = tmp_path / case
            save_test_pairing(state_dir, token=token, port=port, address="127.0.0.1", **pairing)  # type: ignore[arg-type]
            before = relay.connections
            log_path = tmp_path / f"converter-{case}.log"
            logs.append(log_path)
            with append_to(log_path) as log:
                process = await asyncio.create_subprocess_exec(
                    *CLI,
                    "-vv",
                    "run",
                    "--serial",
                    wire.path,
                    "--state-dir",
                    str(state_dir),
                    stdout=log,
                    stderr=log,
                    env=child_env(),
                )
            try:
                status_file = state_dir / "status.json"

                def refused(path: Path = status_file) -> bool:
                    return path.exists() and "certificate-error" in path.read_text()

                await wait_for(refused, 30, f"{case}: certificate-error")
                await asyncio.sleep(6.0)  # a converter that retried would try 6 to 12 times
                assert process.returncode is None, "it should wait for a new pairing, alive"
                assert relay.connections - before == 1, f"{case}: tried more than once"
            finally:
                process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(process.wait(), 30) == 0
            text = log_path.read_text()
            assert "not retrying" in text, text[-2000:]
            assert token not in text
            assert not wire.data  # nothing reached the P1 line
        # x1p1 pair against a gateway whose certificate does not verify: exit code 7, once
        other_ca = tmp_path / "other-root.pem"
        other_ca.write_text(other_root)
        before = relay.connections
        pair = await asyncio.create_subprocess_exec(
            *CLI,
            "-vv",
            "pair",
            "--gateway",
            f"127.0.0.1:{port}",
            "--ca",
            str(other_ca),
            "--state-dir",
            str(tmp_path / "pair"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_env(),
        )
        out, _ = await asyncio.wait_for(pair.communicate(), 60)
        assert pair.returncode == 7, out.decode()
        assert relay.connections - before == 1
    finally:
        wire.close()
        await relay.close()


# --- secrets at rest ------------------------------------------------------------------------------


@pytest.mark.slow
def test_only_digests_of_secrets_are_stored(tmp_path: Path) -> None:
    state_dir = tmp_path / "gw"
    with logged_gateway(state_dir, tmp_path / "gateway.log") as gw:
        tokens = [gw.pair(["P1"], name=f"dongle {i}") for i in range(3)]
        tokens.append(gw.pair(ALL_PROFILES, name="app"))
        for token in tokens:
            assert gw.request("GET", "/api/meters", token=token).status == 200
        browser = Browser(gw)
        browser.log_in()
        browser.request("GET", "/devices")
        login_pending = Browser(gw)
        login_pending.request("POST", "/login")  # a login secret waiting for the meter
        secrets_in_play = [*tokens, browser.jar[SESSION_COOKIE], login_pending.jar[LOGIN_COOKIE]]
        assert gw.process is not None
        gw.process.kill()  # SIGKILL: the write-ahead log stays as it was
        gw.process.wait(10)
        wal = state_dir / "gateway.db-wal"
        assert wal.exists() and wal.stat().st_size > 0, "nothing left in the WAL to scan"
        assert not find_secrets(state_dir, secrets_in_play)
        raw_tokens = [base64.urlsafe_b64decode(t + "=") for t in tokens]
        for path in state_dir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(raw in data for raw in raw_tokens), path
        # what is stored instead: each token's SHA-256
        with sqlite3.connect(state_dir / "gateway.db") as db:
            dump = "\n".join(db.iterdump())
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for token in tokens:
            assert token_digest(token) in dump
        # modes
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((state_dir / "pki").stat().st_mode) == 0o700
        for path in sorted(state_dir.rglob("*")):
            secret = path.suffix == ".key" or path.name.startswith("gateway.db")
            if secret:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.slow
async def test_the_converter_keeps_its_token_in_one_file_0600(
    gw: RunningGateway, tmp_path: Path
) -> None:
    from reliability_support import GatewayProcess, pair_converter

    state_dir = tmp_path / "converter"
    # pair_converter wants a GatewayProcess: this one is already running
    process = GatewayProcess(gw.state_dir, log_of(gw))
    process.port = gw.port
    await pair_converter(process, state_dir, tmp_path / "pair.log", name="file modes")
    token = json.loads((state_dir / "token.json").read_text())["token"]
    wire = WireReader().attach()
    try:
        with append_to(tmp_path / "converter.log") as log:
            run = await asyncio.create_subprocess_exec(
                *CLI,
                "-vv",
                "run",
                "--serial",
                wire.path,
                "--state-dir",
                str(state_dir),
                stdout=log,
                stderr=log,
                env=child_env(),
            )
        try:
            await wait_for(lambda: wire.count >= 2, 30, "two telegrams")
        finally:
            run.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(run.wait(), 30) == 0
    finally:
        wire.close()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for path in state_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert set(find_secrets(state_dir, [token])) == {str(state_dir / "token.json")}
    for log_path in (tmp_path / "converter.log", tmp_path / "pair.log"):
        assert token not in log_path.read_text()


# --- logs ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_no_secret_reaches_the_gateways_log(gw: RunningGateway) -> None:
    token = await asyncio.to_thread(gw.pair, ALL_PROFILES, name="log scan")
    other = secrets.token_urlsafe(32)  # a guess: not a token, but a secret all the same
    calls = [
        ("GET", "/api/meters", token),
        ("GET", "/api/token", token),
        ("GET", f"/api/meters?token={token}", token),
        ("GET", f"/api/meters/{token}", token),
        ("GET", f"/api/tokens/requests/{token}", None),
        ("GET", "/api/meters", other),
        ("GET", f"/api/legacy-p1?interval={token}", token),
        ("DELETE", "/api/token", other),
    ]
    for method, path, bearer in calls:
        answer = await asyncio.to_thread(gw.request, method, path, token=bearer)
        assert answer.status < 500, (path, answer.status)
    async with gw.ws("/api/legacy-p1?interval=1", token=token) as ws:
        await asyncio.wait_for(ws.recv(), 10)
    browser = Browser(gw)
    await asyncio.to_thread(browser.log_in)
    session = browser.jar[SESSION_COOKIE]
    await asyncio.to_thread(browser.request, "GET", "/devices")
    csrf = await asyncio.to_thread(browser.csrf)
    await asyncio.to_thread(browser.request, "POST", "/logout", {"csrf": csrf})
    await asyncio.sleep(0.5)
    text = log_of(gw).read_text()
    assert "DEBUG" in text, "the gateway did not log at debug level: the scan proves nothing"
    for secret in (token, other, session, csrf):
        assert secret not in text


# --- token guessing ------------------------------------------------------------------------


@pytest.mark.slow
def test_tokens_are_256_random_bits_and_guessing_costs_nothing_lasting(
    gw: RunningGateway,
) -> None:
    tokens = [gw.pair(["P1"], name=f"entropy {i}") for i in range(48)]
    raw = [base64.urlsafe_b64decode(t + "=") for t in tokens]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)
    assert all(len(r) == 32 for r in raw) and len(set(raw)) == len(raw)
    ones = sum(bin(int.from_bytes(r, "big")).count("1") for r in raw)
    assert abs(ones / (256 * len(raw)) - 0.5) < 0.03  # 6σ: a biased source would show

    assert gw.process is not None
    pid = gw.process.pid
    db = gw.state_dir / "gateway.db"
    comlog = gw.control.comlog(limit=100000)
    # warm up the server's buffers before taking the baseline
    warm, _ = _guess(gw, 200)
    fds, rss = open_fds(pid), rss_kib(pid)
    sizes = (db.stat().st_size, (gw.state_dir / "gateway.db-wal").stat().st_size)
    started = time.monotonic()
    count, statuses = _guess(gw, 3000)
    seconds = time.monotonic() - started
    assert statuses == {401}
    rate = count / seconds
    time.sleep(0.5)
    assert open_fds(pid) <= fds + 2
    assert rss_kib(pid) <= rss + 8 * 1024  # no memory kept per guess
    grown = db.stat().st_size + (gw.state_dir / "gateway.db-wal").stat().st_size - sum(sizes)
    assert grown <= 64 * 1024  # at most a comlog row a minute, counted in memory meanwhile
    # docs/reliability.md: guesses are one comlog row per address and minute, with a count
    after = gw.control.comlog(limit=100000)
    known = {e["id"] for e in comlog}
    new = [e for e in after if e["id"] not in known]  # a folded row sorts at its minute
    assert {e["event"] for e in new} <= {"unauthorized"}
    assert len(new) <= 2 + math.ceil(seconds / 60)

    def refused(entries: list[dict[str, Any]]) -> int:
        return sum(e["count"] for e in entries if e["event"] == "unauthorized")

    assert refused(after) - refused(comlog) == warm + count
    assert gw.request("GET", "/api/token", token=tokens[0]).status == 200
    # At this rate, finding one of the active tokens by guessing:
    years = 2.0**256 / (rate * len(tokens)) / (365.25 * 24 * 3600)
    write_figures(
        {
            "guesses": count,
            "guesses_per_s": round(rate),
            "rss_kib_before": rss,
            "rss_kib_after": rss_kib(pid),
            "fds_before": fds,
            "fds_after": open_fds(pid),
            "years_to_guess_one_of_48": f"{years:.1e}",
        },
        "guessing",
    )
    assert years > 1e50


def _guess(gw: RunningGateway, count: int) -> tuple[int, set[int]]:
    """``count`` wrong tokens (well-formed and not) over a few kept-alive connections."""
    statuses: set[int] = set()
    done = 0
    conn = None
    for i in range(count):
        if i % 500 == 0:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPSConnection(
                gw.host, gw.port, context=gw.ssl_context(), timeout=20
            )
        guess = secrets.token_urlsafe(32) if i % 3 else secrets.token_urlsafe(i % 50 + 1)
        assert conn is not None
        conn.request("GET", "/api/token", headers={"Authorization": f"Bearer {guess}"})
        response = conn.getresponse()
        response.read()
        statuses.add(response.status)
        done += 1
    if conn is not None:
        conn.close()
    return done, statuses


# --- the portal: cookies and CSRF -------------------------------------------------------------


def _without_renewal(sessions: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in s.items() if k not in ("last_used", "expires_at")} for s in sessions]


@pytest.mark.slow
def test_every_cookie_is_strict_and_every_form_refuses_a_forgery(gw: RunningGateway) -> None:
    device = gw.pair(["P1"], name="csrf dongle")
    gw.token_request(["E-REALTIME"], name="csrf waiting")
    browser, other = Browser(gw), Browser(gw)
    browser.log_in()
    other.log_in()
    browser.elevate()
    # every form on every page carries a CSRF token
    pages = ["/", "/live", "/history", "/devices", "/comlog", "/privacy", "/api-docs"]
    forms = 0
    for page in pages:
        status, _, html = browser.request("GET", page)
        assert status == 200, page
        for form in re.findall(r"<form\b[^>]*>.*?</form>", html, flags=re.S | re.I):
            if re.search(r'method="post"', form, flags=re.I):
                forms += 1
                assert 'name="csrf"' in form, (page, form[:200])
    assert forms >= 5, "fewer forms than the portal has: the page scan proves little"
    browser.request("GET", "/lang/nl?next=/devices")
    browser.request("GET", "/lang/en?next=/devices")

    # every state-changing route of the document, forged every way
    document = gw.request("GET", "/api/openapi.json").json
    posts = [
        path
        for path, item in document["paths"].items()
        if "post" in item and not path.startswith("/api")
    ]
    assert "/logout" in posts and "/admin/block-history" in posts
    good, foreign = browser.csrf(), other.csrf()
    tokens_before = gw.control.tokens()
    sessions_before = _without_renewal(gw.control.sessions())
    requests_before = gw.control.requests()
    for template in posts:
        path = re.sub(r"\{[^}]+\}", "0123456789abcdef", template)
        fields = {"confirm": "yes", "profiles": ["P1", "E-REALTIME"]}
        if template == "/login":  # no session yet: the Origin check is what guards it
            for origin in ("https://evil.example", "null"):
                status = Browser(gw).request("POST", path, fields, origin=origin)[0]
                assert status == 403, (path, origin, status)
            continue
        attempts = [
            ({**fields}, "self"),
            ({**fields, "csrf": "x" * 43}, "self"),
            ({**fields, "csrf": foreign}, "self"),
            ({**fields, "csrf": good}, "https://evil.example"),
            ({**fields, "csrf": good}, "null"),
        ]
        for form, origin in attempts:
            status = browser.request("POST", path, form, origin=origin)[0]
            assert status == 403, (path, form.get("csrf"), origin, status)
    assert gw.control.tokens() == tokens_before
    # a forged request still carries the cookie: renewal on use may move last_used and
    # expires_at (§5.2); nothing else of any session may change
    assert _without_renewal(gw.control.sessions()) == sessions_before
    assert [r["request_id"] for r in gw.control.requests()] == [
        r["request_id"] for r in requests_before
    ]
    assert gw.request("GET", "/api/token", token=device).status == 200
    # every cookie the portal set along the way
    assert len(browser.set_cookies) >= 4
    for raw in browser.set_cookies + other.set_cookies:
        attributes = {part.strip().split("=")[0].lower() for part in raw.split(";")[1:]}
        assert {"secure", "httponly", "samesite", "path"} <= attributes, raw
        assert re.search(r";\s*SameSite=Strict", raw, flags=re.I), raw
        assert re.search(r";\s*Path=/(;|$)", raw), raw
        assert "domain" not in attributes, raw
        name = raw.split("=", 1)[0]
        if name in (SESSION_COOKIE.lower(), SESSION_COOKIE, LOGIN_COOKIE):
            assert name.startswith("__Host-")


# --- the control socket -----------------------------------------------------------------------


def test_the_control_socket_is_local_and_private(gw: RunningGateway) -> None:
    assert gw.process is not None
    pid = gw.process.pid
    assert tcp_listeners(pid) == [("0100007F", gw.port)]  # 127.0.0.1:port, nothing else
    for table in ("udp", "udp6"):
        inodes = {
            line.split()[9]
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        }
        mine = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
        assert not inodes & mine, f"the gateway has a {table} socket"
    path = gw.state_dir / "control.sock"
    assert unix_sockets(pid) == [str(path)]
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(gw.state_dir.stat().st_mode) == 0o700
    assert _as_nobody(path) == "denied"  # the file's mode keeps other users out
    # and were the file open to them, the gateway itself refuses them (SO_PEERCRED)
    os.chmod(path, 0o666)
    os.chmod(gw.state_dir, 0o711)
    try:
        assert _as_nobody(path) == "refused"
    finally:
        os.chmod(gw.state_dir, 0o700)
        os.chmod(path, 0o600)
    assert gw.control.status()["x1_enabled"] is True


def _as_nobody(path: Path) -> str:
    """Connect to ``path`` as user nobody (65534) from a child: ``denied`` (no permission),
    ``refused`` (the gateway answered with an error), or ``served``."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    read, write = os.pipe()
    # through a descriptor of the socket's directory: the directories above it (a test's
    # temporary directory, 0700) are not what this checks
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        result = b"served"
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(f"/proc/self/fd/{directory}/{path.name}")
                sock.sendall(b'{"command": "tokens"}\n')
                answer = sock.recv(65536)
                if b'"ok": true' not in answer and b'"ok":true' not in answer:
                    result = b"refused"
        except PermissionError:
            result = b"denied"
        except OSError:
            result = b"refused"
        finally:
            os.write(write, result)
            os._exit(0)
    os.close(write)
    os.close(directory)
    result = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(child, 0)
    return result
