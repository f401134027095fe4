"""The customer portal's HTTP side (aiohttp): pages, forms, cookies, assets (X1 §3.1.5, §9).

:class:`Portal` is an adapter like :mod:`x1p1.gateway.server`: it reads requests, calls
the gateway's state, its ledger (:mod:`x1p1.gateway.grants`) and the page
renderers (:mod:`x1p1.gateway.portal.pages`), and writes answers. It mounts on the API's
application, so the portal lives at ``/`` on the same HTTPS port (§9.1).

Cookies (all ``Secure``, ``HttpOnly``, ``SameSite=Strict``, ``Path=/``):

- ``__Host-x1p1-session``: the session secret, 90 days, set again when the session's
  renewal is persisted (at most hourly, §5.2). The gateway keeps only its SHA-256.
- ``__Host-x1p1-login``: the login secret of a browser waiting for approval (10 minutes).
- ``x1p1-lang``: ``nl`` or ``en``, set by the language switch (a year; not HttpOnly-relevant).

Protection of what changes something (every ``POST``):

- the form's ``csrf`` field (or an ``X-CSRF-Token`` header) must be the session's CSRF
  token, an HMAC of the session secret (:func:`x1p1.x1.grants.csrf_token`);
- an ``Origin`` header, when sent (browsers do on every POST), must be this gateway's own
  origin, and ``Sec-Fetch-Site``, when sent, ``same-origin`` or ``none``;
- the session cookie is ``SameSite=Strict``;
- admin functions also need admin access confirmed on the meter (§9.2.2), and each one
  is told to the comlog (event ``admin-action``), next to the pairing change it made.

Every portal answer carries a strict Content-Security-Policy (only the gateway's own
scripts; inline styles allowed because the charting library sets them), ``nosniff``, no
framing, and a referrer only within the site (``same-origin``: with ``no-referrer`` a
browser sends ``Origin: null`` on form posts, which the Origin check would refuse).
While the grid operator has X1 off (§12.3) every page says so and shows no data.

The session cookie also opens ``GET`` routes of the API (``COOKIE_AUTH`` of the server):
the portal reads ``/api/realtime`` with it, as the customer's full view (every profile).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from x1p1.exceptions import (
    BadRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    X1Error,
)
from x1p1.gateway import handlers
from x1p1.gateway.comlog import ComlogEntry
from x1p1.gateway.grants import grant_json
from x1p1.gateway.portal import apidocs, pages
from x1p1.gateway.portal.html import VENDOR_PREFIX, Assets, Plotly
from x1p1.gateway.portal.i18n import COOKIE as LANG_COOKIE
from x1p1.gateway.portal.i18n import LANGUAGES, Texts, negotiate
from x1p1.gateway.portal.pages import HistoryView, MeterInfo, Page, View
from x1p1.gateway.portal.periods import (
    default_objects,
    has_next,
    has_previous,
    historic_objects,
    measurements_csv,
    parse_anchor,
    period,
    resolution_of,
    shifted,
    use_per_interval,
)
from x1p1.gateway.server import COOKIE_AUTH, ROUTES_KEY, client_address, json_response
from x1p1.gateway.state import GatewayState
from x1p1.gateway.streams import Tick
from x1p1.x1.api import API_PREFIX, X1_VERSION, format_time
from x1p1.x1.grants import (
    LIFETIME,
    Grant,
    GrantKind,
    Request,
    RequestKind,
    RequestState,
    csrf_ok,
    csrf_token,
)
from x1p1.x1.history import (
    MeasurementsQuery,
    measurements_response,
    parse_measurements_query,
    resolutions,
)
from x1p1.x1.obis import Meter
from x1p1.x1.profiles import Profile, parse_profiles

log = logging.getLogger("x1p1.gateway.portal")

SESSION_COOKIE = "__Host-x1p1-session"
LOGIN_COOKIE = "__Host-x1p1-login"
LANG_MAX_AGE = 365 * 24 * 3600
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
FLASHES = frozenset(
    {"approved", "denied", "profiles", "revoked", "session", "elevation", "unelevated"}
)
LOGIN_MESSAGES = frozenset({"bye", "ended", "blocked"})

PORTAL_KEY: web.AppKey[Portal] = web.AppKey("x1p1.portal")

PageRenderer = Callable[[web.Request, View], Awaitable[Page]]
AdminAction = Callable[[web.Request, View, Grant, MultiDictProxy[Any]], Awaitable[str]]


class HistorySource(Protocol):
    """What the portal needs of the gateway's history (:class:`HistoryStore`)."""

    def query(self, q: MeasurementsQuery) -> Sequence[tuple[datetime, Mapping[str, float]]]: ...

    def blocked_at(self) -> datetime | None: ...

    def block(self, now: datetime) -> datetime: ...


class ComlogSource(Protocol):
    """What the portal needs of the comlog (:class:`~x1p1.gateway.comlog.Comlog`)."""

    def view(self, limit: int = 500) -> list[ComlogEntry]: ...


def _local_path(text: str | None, default: str = "/") -> str:
    """A redirect target from a form or query: a path on this site only."""
    if not text or not text.startswith("/") or text.startswith("//") or "\\" in text:
        return default
    if any(ord(ch) < 32 for ch in text):
        return default
    return text


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


class Portal:
    """The customer portal of one gateway: :meth:`mount` on the API's application.

    ``info`` gives the gateway's host name, URL and root CA path (``Gateway.info``).
    ``history``, ``comlog`` and ``block`` are the gateway's history store, comlog, and
    its history block (§12.1) when it has them; without ``block`` the portal blocks
    through ``history`` itself, revokes every token and tells the listeners."""

    def __init__(
        self,
        state: GatewayState,
        info: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.state = state
        self.info = info or dict
        self.grants = state.grants
        self.assets = Assets.load()
        self.plotly = Plotly()
        self.history: HistorySource | None = None
        self.comlog: ComlogSource | None = None
        self.block: Callable[[str], object] | None = None
        """The gateway's history block (§12.1), called with who blocked (for the comlog)."""
        self._routes: Callable[[], Sequence[Any]] = list

    # --- wiring --------------------------------------------------------------------------

    def mount(self, app: web.Application) -> None:
        """Add the portal's routes, middleware and housekeeping to the API's ``app``
        (before it starts)."""
        app[PORTAL_KEY] = self
        app[COOKIE_AUTH] = self.cookie_token

        def routes() -> Sequence[Any]:
            found: list[Any] = app[ROUTES_KEY]
            return found

        self._routes = routes
        app.middlewares.append(self._middleware)
        get, post = app.router.add_get, app.router.add_post
        get("/", self._page(self._overview))
        get("/live", self._page(self._live))
        get("/history", self._page(self._history))
        get("/history.csv", self._csv)
        get("/devices", self._page(self._devices))
        get("/comlog", self._page(self._comlog))
        get("/privacy", self._page(self._privacy))
        get("/api-docs", self._page(self._api_docs))
        get("/login", self._login_page)
        post("/login", self._login_start)
        get("/login/status", self._login_status)
        post("/logout", self._logout)
        get("/lang/{lang}", self._language)
        get("/portal/status", self._status)
        get("/root-ca.pem", self._root_ca)
        get("/portal/static/{version}/{name}", self._static)
        get(VENDOR_PREFIX + "/plotly-{version}.min.js", self._plotly)
        post("/admin/elevate", self._admin(self._elevate, elevated=False))
        post("/admin/unelevate", self._admin(self._unelevate, elevated=False))
        post("/admin/requests/{request_id}/approve", self._admin(self._approve))
        post("/admin/requests/{request_id}/deny", self._admin(self._deny))
        post("/admin/devices/{token_id}/profiles", self._admin(self._set_profiles))
        post("/admin/devices/{token_id}/revoke", self._admin(self._revoke))
        post("/admin/sessions/{session_id}/revoke", self._admin(self._revoke_session))
        post("/admin/block-history", self._admin(self._block_history))

    # --- helpers ---------------------------------------------------------------------------

    def meter_now(self) -> datetime:
        """The meters' clock (history and live values are in the meters' time)."""
        return self.state.hub.sim_time(time.time())

    def _lang(self, request: web.Request) -> str:
        return negotiate(request.headers.get("Accept-Language"), request.cookies.get(LANG_COOKIE))

    def _session(self, request: web.Request) -> tuple[Grant | None, str | None]:
        """The request's valid session and its secret; (None, secret) for a stale cookie
        (or a device's token put in the cookie: the one path knows both)."""
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            return None, None
        try:
            grant = self.grants.authenticate(secret)
        except Unauthorized:
            return None, secret
        return (grant, secret) if grant.kind is GrantKind.SESSION else (None, secret)

    def _view(
        self, request: web.Request, session: Grant | None = None, secret: str | None = None
    ) -> View:
        done = request.query.get("done")
        return View(
            lang=self._lang(request),
            path=request.path,
            now=self.state.now(),
            session=session,
            csrf=csrf_token(secret) if secret and session else None,
            flash=f"done.{done}" if done in FLASHES else None,
        )

    def _html(self, view: View, page: Page) -> web.Response:
        info = self.info()
        host = str(info.get("host_name") or info.get("url") or "")
        scripts = {
            name: self.assets.url(f"{name}.js")
            for name in ("portal", "login", "live", "history", "privacy")
        }
        scripts["plotly"] = self.plotly.url
        text = pages.layout(view, page, self.assets, host=host, version=X1_VERSION, scripts=scripts)
        return web.Response(
            text=text,
            status=page.status,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "Content-Language": view.lang},
        )

    def _error(
        self, request: web.Request, status: int, message: str, title: str | None = None
    ) -> web.Response:
        view = self._view(request)
        return self._html(view, pages.error_page(view, status, message, title))

    @staticmethod
    def _set_session_cookie(response: web.StreamResponse, secret: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            secret,
            max_age=int(LIFETIME[GrantKind.SESSION].total_seconds()),
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )

    @staticmethod
    def _clear_cookie(response: web.StreamResponse, name: str) -> None:
        response.set_cookie(
            name, "", max_age=0, path="/", secure=True, httponly=True, samesite="Strict"
        )

    def _origin_ok(self, request: web.Request) -> bool:
        """A browser's request from this site: ``Origin`` (when sent) is ours and
        ``Sec-Fetch-Site`` (when sent) is same-origin or none."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"https://{request.host}":
            return False
        site = request.headers.get("Sec-Fetch-Site")
        return site is None or site in ("same-origin", "none")

    def cookie_token(self, request: web.Request) -> Any:
        """``COOKIE_AUTH``: the API token of the request's portal session, or None."""
        if not request.cookies.get(SESSION_COOKIE) or not self._origin_ok(request):
            return None
        session, _ = self._session(request)
        return session

    # --- middleware ------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            return await handler(request)
        asset = path.startswith("/portal/static/") or path.startswith(VENDOR_PREFIX + "/")
        response: web.StreamResponse
        try:
            if not asset and not self.state.x1_enabled:
                view = self._view(request)
                response = self._html(view, pages.disabled_page(view))
            else:
                response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            t = Texts(self._lang(request))
            message = t("error.404") if exc.status == 404 else (exc.reason or t("error.title"))
            response = self._error(request, exc.status, message)
            if exc.status == 405:
                response.headers["Allow"] = exc.headers.get("Allow", "")
        except X1Error as exc:
            response = self._error(request, exc.status, str(exc))
            response.headers.update(exc.headers())
        if not asset:
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    # --- pages -----------------------------------------------------------------------------

    def _page(self, render: PageRenderer) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A page for logged-in browsers: others go to the login page."""

        async def handle(request: web.Request) -> web.StreamResponse:
            session, secret = self._session(request)
            if session is None or secret is None:
                response = _redirect("/login" + ("?m=ended" if secret else ""))
                if secret:
                    self._clear_cookie(response, SESSION_COOKIE)
                return response
            view = self._view(request, session, secret)
            response = self._html(view, await render(request, view))
            if session.renewed_at is not None and session.renewed_at == session.last_used:
                self._set_session_cookie(response, secret)  # renewal persisted: renew the cookie
            return response

        return handle

    def _meters(self) -> list[MeterInfo]:
        return [
            MeterInfo(ref.equipment_id, ref.meter, ref.channel)
            for ref in handlers.meter_refs(self.state.meters)
        ]

    async def _snapshot(self) -> tuple[Mapping[str, object], tuple[datetime, float] | None]:
        """The meters' values now (computed off the event loop, as the streams do)."""
        at = self.meter_now().replace(microsecond=0)
        tick = Tick(0, at, self.state.meters)
        await asyncio.to_thread(tick.prepare, False, True)
        return tick.values, tick.gas

    async def _overview(self, request: web.Request, view: View) -> Page:
        values, gas = await self._snapshot()
        return pages.overview_page(
            view,
            self._meters(),
            self.info(),
            values,
            gas,
            devices=len(self.grants.tokens()),
            pending=len(self.grants.pending()),
        )

    async def _live(self, request: web.Request, view: View) -> Page:
        values, gas = await self._snapshot()
        meters = self.state.meters
        gas_code = f"0-{meters.gas_channel}:24.2.1.255"
        return pages.live_page(view, meters.electricity_id, meters.gas_id, gas_code, values, gas)

    def _selection(self, request: web.Request) -> tuple[MeterInfo, str, list[str], Any]:
        """meter, resolution, codes and period of the history page's query."""
        query = request.query
        meters = self._meters()
        chosen = next((m for m in meters if m.meter.value == query.get("meter")), meters[0])
        resolution = resolution_of(chosen.meter, query.get("resolution"))
        objects = [
            (obj, obj.for_channel(chosen.channel) if chosen.meter is Meter.GAS else obj.code)
            for obj in historic_objects(chosen.meter)
        ]
        known = [code for _, code in objects]
        asked = [code for code in query.getall("obis", []) if code in known]
        if not asked:
            defaults = {obj.code for obj in default_objects(chosen.meter)}
            asked = [code for obj, code in objects if obj.code in defaults]
        anchor = parse_anchor(query.get("start"))
        return chosen, resolution.value, asked, period(resolution, anchor, self.meter_now())

    def _measurements(
        self,
        meter: MeterInfo,
        resolution: str,
        codes: Sequence[str],
        start: datetime,
        end: datetime,
    ) -> dict[str, Any] | None:
        """The measurements response for this selection, exactly as the API builds it
        for the customer's full view; None when the gateway keeps no history."""
        if self.history is None:
            return None
        params = {
            "obis": ",".join(codes),
            "resolution": resolution,
            "from": format_time(start),
            "to": format_time(end),
        }
        q = parse_measurements_query(
            params,
            meter.meter,
            frozenset(Profile),
            channel=meter.channel or 1,
            now=self.meter_now(),
        )
        return measurements_response(meter.equipment_id, q, self.history.query(q))

    async def _history(self, request: web.Request, view: View) -> Page:
        meter, resolution, codes, p = self._selection(request)
        now = self.meter_now()
        base = {"meter": meter.meter.value, "resolution": resolution}

        def query(anchor: Any) -> str:
            return urlencode(
                [*base.items(), *(("obis", c) for c in codes), ("start", anchor.isoformat())]
            )

        objects = [
            (obj, obj.for_channel(meter.channel) if meter.meter is Meter.GAS else obj.code)
            for obj in historic_objects(meter.meter)
        ]
        body = self._measurements(meter, resolution, codes, p.start, p.end)
        latest = period(p.resolution, None, now)
        h = HistoryView(
            meters=self._meters(),
            meter=meter,
            resolution=resolution,
            resolutions=[
                (row.resolution.value, row.period, row.count) for row in resolutions(meter.meter)
            ],
            objects=objects,
            codes=codes,
            period=p,
            previous=query(shifted(p, -1, now).anchor)
            if has_previous(meter.meter, p, now)
            else None,
            following=query(shifted(p, 1, now).anchor) if has_next(p, now) else None,
            latest=query(latest.anchor),
            csv=query(p.anchor),
            body=body,
            uses=use_per_interval(p.resolution, body["readings"], codes) if body else (),
        )
        return pages.history_page(view, h)

    async def _csv(self, request: web.Request) -> web.StreamResponse:
        """``/history.csv``: the selection's measurements as CSV (rows = the API's)."""
        session, secret = self._session(request)
        if session is None:
            raise Unauthorized("log in to the portal first")
        meter, resolution, codes, p = self._selection(request)
        start, end = p.start, p.end
        if "from" in request.query or "to" in request.query:
            from x1p1.x1.api import parse_time

            start = parse_time(request.query.get("from"), "from")
            end = parse_time(request.query.get("to"), "to")
        body = self._measurements(meter, resolution, codes, start, end)
        if body is None:
            raise NotFound("this gateway keeps no history")
        name = f"x1-{meter.equipment_id}-{resolution}-{p.anchor.isoformat()}.csv"
        return web.Response(
            text=measurements_csv(body),
            content_type="text/csv",
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
            },
        )

    def _elevation(self, session: Grant) -> Request | None:
        for request in self.grants.pending(RequestKind.ELEVATION):
            if request.grant_id == session.grant_id:
                return request
        return None

    async def _devices(self, request: web.Request, view: View) -> Page:
        assert view.session is not None
        grants = self.grants
        return pages.devices_page(
            view,
            grants.visible(RequestKind.DEVICE),
            grants.visible(RequestKind.LOGIN),
            grants.tokens(),
            grants.sessions(),
            self._elevation(view.session),
        )

    async def _comlog(self, request: web.Request, view: View) -> Page:
        if self.comlog is None:
            return pages.comlog_page(view, None)
        entries = self.comlog.view(500)  # a flood never hides the meter or the customer
        lines = [
            pages.ComlogLine(e.t, e.event.value, e.device, e.detail, e.count, e.last, e.summarised)
            for e in reversed(entries)
        ]
        return pages.comlog_page(view, lines)

    async def _privacy(self, request: web.Request, view: View) -> Page:
        assert view.session is not None
        blocked = self.history.blocked_at() if self.history is not None else None
        return pages.privacy_page(view, self._elevation(view.session), blocked)

    async def _api_docs(self, request: web.Request, view: View) -> Page:
        from x1p1.gateway.openapi import document

        main = apidocs.render(document(self._routes()), view.t)
        return Page(view.t("api.title"), main)

    # --- login (§5.1.3) ------------------------------------------------------------------------

    async def _login_page(self, request: web.Request) -> web.StreamResponse:
        session, secret = self._session(request)
        if session is not None:
            return _redirect("/")
        found: Request | None = None
        login_secret = request.cookies.get(LOGIN_COOKIE)
        if login_secret:
            try:
                poll = self.grants.poll_login(login_secret)
            except NotFound:
                poll = None
            if poll is not None and poll.secret is not None:
                response = _redirect("/")
                self._set_session_cookie(response, poll.secret)
                self._clear_cookie(response, LOGIN_COOKIE)
                return response
            if poll is not None and poll.request.state is not RequestState.CLAIMED:
                found = poll.request
        view = self._view(request)
        m = request.query.get("m")
        page = pages.login_page(view, found, message=f"login.{m}" if m in LOGIN_MESSAGES else None)
        response = self._html(view, page)
        if secret:
            self._clear_cookie(response, SESSION_COOKIE)
        return response

    async def _login_start(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_ok(request):
            return self._error(request, 403, Texts(self._lang(request))("error.csrf"))
        await request.read()
        try:
            created, secret = self.grants.start_login(
                request.headers.get("User-Agent"),
                client_address(request),
                request.cookies.get(LOGIN_COOKIE),
            )
        except RateLimited as exc:
            view = self._view(request)
            page = pages.login_page(view, None, retry_after=exc.retry_after)
            response = self._html(view, Page(page.title, page.main, page.scripts, 429, nav=False))
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        log.info(
            "portal: login request %s from %s (code %s)",
            created.request_id,
            created.browser,
            created.code,
        )
        response = _redirect("/login")
        response.set_cookie(
            LOGIN_COOKIE,
            secret,
            max_age=int(LIFETIME[RequestKind.LOGIN].total_seconds()),
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        return response

    async def _login_status(self, request: web.Request) -> web.StreamResponse:
        """JSON for the waiting page: ``{"status", "expires_in"}``; once approved, the
        answer sets the session cookie and says where to go."""
        login_secret = request.cookies.get(LOGIN_COOKIE)
        try:
            poll = self.grants.poll_login(login_secret) if login_secret else None
        except NotFound:
            poll = None
        if poll is None:
            return json_response({"status": "none"})
        if poll.secret is not None:
            response = json_response({"status": "approved", "next": "/"})
            self._set_session_cookie(response, poll.secret)
            self._clear_cookie(response, LOGIN_COOKIE)
            return response
        left = (poll.request.expires_at - self.state.now()).total_seconds()
        return json_response(
            {
                "status": poll.request.state.value,
                "code": poll.request.code,
                "expires_in": max(0, int(left)),
            }
        )

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session, secret = self._session(request)
        form = await request.post()
        if session is None or secret is None:
            response = _redirect("/login")
            self._clear_cookie(response, SESSION_COOKIE)
            return response
        if not self._origin_ok(request) or not csrf_ok(secret, _field(form, "csrf")):
            return self._error(request, 403, Texts(self._lang(request))("error.csrf"))
        self.grants.logout(session.grant_id)
        response = _redirect("/login?m=bye")
        self._clear_cookie(response, SESSION_COOKIE)
        return response

    async def _language(self, request: web.Request) -> web.StreamResponse:
        lang = request.match_info["lang"]
        if lang not in LANGUAGES:
            raise web.HTTPNotFound()
        response = _redirect(_local_path(request.query.get("next")))
        response.set_cookie(
            LANG_COOKIE,
            lang,
            max_age=LANG_MAX_AGE,
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        return response

    async def _status(self, request: web.Request) -> web.StreamResponse:
        """JSON for the devices and privacy pages: admin access, and a fingerprint of what
        is waiting and connected (the page offers to reload when it changes)."""
        session, _ = self._session(request)
        if session is None:
            raise Unauthorized("not logged in to the portal")
        now = self.state.now()
        elevation = self._elevation(session)
        ids = [f"{r.request_id}:{r.state.value}" for r in self.grants.visible()]
        ids += [g.grant_id + ",".join(sorted(map(str, g.profiles))) for g in self.grants.grants()]
        return json_response(
            {
                "session": grant_json(session, now),
                "elevated": session.elevated(now),
                "elevation": "pending" if elevation is not None else None,
                "fingerprint": hashlib.sha256("|".join(ids).encode()).hexdigest()[:16],
            }
        )

    async def _root_ca(self, request: web.Request) -> web.StreamResponse:
        path = self.info().get("ca")
        if not path:
            raise web.HTTPNotFound()
        try:
            body = await asyncio.to_thread(Path(str(path)).read_bytes)
        except OSError:
            raise web.HTTPNotFound() from None
        return web.Response(
            body=body,
            content_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="x1-root-ca.pem"'},
        )

    # --- assets ------------------------------------------------------------------------------

    async def _static(self, request: web.Request) -> web.StreamResponse:
        asset = self.assets.files.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        current = request.match_info["version"] == self.assets.version
        cache = "public, max-age=31536000, immutable" if current else "no-cache"
        return web.Response(
            body=asset.body,
            headers={
                "Content-Type": asset.content_type,
                "Cache-Control": cache,
                "ETag": asset.etag,
            },
        )

    async def _plotly(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["version"] != self.plotly.version:
            raise web.HTTPNotFound()
        plain, gzipped = await asyncio.to_thread(self.plotly.bodies)
        headers = {
            "Content-Type": "text/javascript; charset=utf-8",
            "Vary": "Accept-Encoding",
            "Cache-Control": "public, max-age=31536000, immutable",
        }
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=gzipped, headers=headers)
        return web.Response(body=plain, headers=headers)

    # --- admin functions (§9.2) ----------------------------------------------------------------

    def _admin(
        self, action: AdminAction, *, elevated: bool = True
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A state-changing form: session, Origin, CSRF token, and (unless ``elevated`` is
        False) admin access confirmed on the meter; then the action, told to the comlog,
        and a redirect to where it says."""

        async def handle(request: web.Request) -> web.StreamResponse:
            t = Texts(self._lang(request))
            session, secret = self._session(request)
            form = await request.post()
            if session is None or secret is None:
                return self._error(request, 401, t("login.ended"))
            if not self._origin_ok(request):
                return self._error(request, 403, t("error.csrf"))
            given = _field(form, "csrf") or request.headers.get("X-CSRF-Token")
            if not csrf_ok(secret, given):
                return self._error(request, 403, t("error.csrf"))
            if elevated and not session.elevated(self.state.now()):
                return self._error(request, 403, t("admin.needed"), t("admin.needed.title"))
            view = self._view(request, session, secret)
            target = await action(request, view, session, form)
            if elevated:
                self.state.emit(
                    "admin-action",
                    name=f"portal: {session.browser}",
                    uuid=session.uuid,
                    action=request.path.rsplit("/", 1)[-1],
                    path=request.path,
                    session_id=session.session_id,
                    browser=session.browser,
                )
            response = _redirect(target)
            if target.startswith("/login"):
                self._clear_cookie(response, SESSION_COOKIE)
            return response

        return handle

    async def _elevate(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        self.grants.request_elevation(session.grant_id, client_address(request))
        return _with_done(_local_path(_field(form, "next"), "/devices"), "elevation")

    async def _unelevate(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        if session.elevated(self.state.now()):
            self.grants.unelevate(session.grant_id)
        return _with_done(_local_path(_field(form, "next"), "/devices"), "unelevated")

    async def _approve(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        request_id = request.match_info["request_id"]
        by = f"session:{session.grant_id}"
        profiles = None
        if self.grants.request(request_id).kind is RequestKind.DEVICE:
            profiles = parse_profiles(form.getall("profiles", []))  # §5.1.6
        self.grants.approve(request_id, by=by, profiles=profiles)
        return "/devices?done=approved"

    async def _deny(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        self.grants.deny(request.match_info["request_id"], by=f"session:{session.grant_id}")
        return "/devices?done=denied"

    async def _set_profiles(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        profiles = parse_profiles(form.getall("profiles", []))
        self.grants.set_profiles(request.match_info["token_id"], profiles)
        return "/devices?done=profiles"

    async def _revoke(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        token = self.grants.grant(request.match_info["token_id"])
        if token.kind is not GrantKind.TOKEN:
            raise NotFound("no such device")
        self.grants.revoke(token.grant_id, f"revoked in the portal ({session.browser})")
        return "/devices?done=revoked"

    async def _revoke_session(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        target = self.grants.grant(request.match_info["session_id"])
        if target.kind is not GrantKind.SESSION:
            raise NotFound("no such portal session")
        self.grants.revoke(target.grant_id, f"logged out from another browser ({session.browser})")
        if target.grant_id == session.grant_id:
            return "/login?m=ended"
        return "/devices?done=session"

    async def _block_history(
        self, request: web.Request, view: View, session: Grant, form: MultiDictProxy[Any]
    ) -> str:
        if _field(form, "confirm") != "yes":
            raise BadRequest(view.t("privacy.block.unconfirmed"))
        self.block_history(f"in the portal ({session.browser})")
        return "/login?m=blocked"

    def block_history(self, by: str) -> None:
        """Block history (§12.1): the gateway's own block when it has one; otherwise the
        history store's, with every grant ended in the same transaction, and
        ``history-blocked`` told."""
        if self.block is not None:
            self.block(by)
            return
        now = self.meter_now()
        history = self.history
        if history is not None:
            at, _ = self.grants.block_history(lambda: history.block(now), "history was blocked")
        else:
            at = now
            self.grants.revoke_all("history was blocked")
        self.state.emit("history-blocked", at=format_time(at), by=by)


def _field(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _with_done(path: str, done: str) -> str:
    separator = "&" if "?" in path else "?"
    return f"{path}{separator}done={done}"
