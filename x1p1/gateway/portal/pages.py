"""The portal's pages as HTML, free of HTTP: data in, a :class:`Page` out (X1 §9.1).

Each function renders one page's ``<main>`` from plain data; :func:`layout` wraps it in
the header (menu, language switch, log-out), footer and scripts. Every piece of text
from outside (device names, User-Agents, comlog details) goes through
:func:`~x1p1.gateway.portal.html.esc`. Forms that change something carry the session's
CSRF token in a hidden field; admin forms (§9.2) are shown only while the session holds
admin access, with a request for it in their place otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from x1p1.gateway.portal.html import Assets, attrs, esc, json_script, template
from x1p1.gateway.portal.i18n import (
    LANGUAGES,
    Texts,
    event_name,
    format_datetime,
    format_duration,
    format_number,
    short_name,
)
from x1p1.gateway.portal.periods import Period
from x1p1.x1.grants import Grant, Request, RequestKind, RequestState
from x1p1.x1.obis import Meter, ObisObject, lookup
from x1p1.x1.profiles import Profile, sorted_profiles

NAV = (
    ("/", "nav.overview"),
    ("/live", "nav.live"),
    ("/history", "nav.history"),
    ("/devices", "nav.devices"),
    ("/comlog", "nav.comlog"),
    ("/privacy", "nav.privacy"),
    ("/api-docs", "nav.api"),
)

LIVE_ELECTRICITY = (
    "1-0:1.7.0.255",
    "1-0:2.7.0.255",
    "0-0:96.14.0.255",
    "1-0:32.7.0.255",
    "1-0:52.7.0.255",
    "1-0:72.7.0.255",
    "1-0:31.7.0.255",
    "1-0:51.7.0.255",
    "1-0:71.7.0.255",
    "1-0:21.7.0.255",
    "1-0:41.7.0.255",
    "1-0:61.7.0.255",
    "1-0:22.7.0.255",
    "1-0:42.7.0.255",
    "1-0:62.7.0.255",
)
"""What the live page reads of the electricity meter (X1 Table 4, E-REALTIME)."""
PHASES = (
    ("L1", "1-0:32.7.0.255", "1-0:31.7.0.255", "1-0:21.7.0.255", "1-0:22.7.0.255"),
    ("L2", "1-0:52.7.0.255", "1-0:51.7.0.255", "1-0:41.7.0.255", "1-0:42.7.0.255"),
    ("L3", "1-0:72.7.0.255", "1-0:71.7.0.255", "1-0:61.7.0.255", "1-0:62.7.0.255"),
)
REGISTERS = ("1-0:1.8.1.255", "1-0:1.8.2.255", "1-0:2.8.1.255", "1-0:2.8.2.255")
TICKS = {"5m": "%H:%M", "15m": "%H:%M", "1h": "%d-%m %H:%M", "1d": "%d-%m", "1M": "%m-%Y"}
"""Time axis labels of the history chart: numbers only, right in both languages."""


@dataclass(frozen=True, slots=True)
class View:
    """What every page knows of the request it answers."""

    lang: str
    path: str
    now: datetime
    session: Grant | None = None
    csrf: str | None = None
    flash: str | None = None
    """A message key from a redirect after a form (``done.*``), or None."""

    @property
    def t(self) -> Texts:
        return Texts(self.lang)

    @property
    def elevated(self) -> bool:
        return self.session is not None and self.session.elevated(self.now)

    def time(self, moment: datetime | None, *, seconds: bool = False) -> str:
        return format_datetime(moment, self.lang, seconds=seconds)

    def number(self, value: object, decimals: int) -> str:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "—"
        return format_number(value, decimals, self.lang)


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    main: str
    scripts: tuple[str, ...] = ()
    status: int = 200
    head: str = ""
    nav: bool = True
    data: Mapping[str, str] = field(default_factory=dict)


# --- pieces --------------------------------------------------------------------------------


def csrf_field(view: View) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(view.csrf or "")}">'


def post_form(
    view: View,
    action: str,
    label: str,
    *,
    cls: str = "",
    extra: str = "",
    confirm: str | None = None,
    name: str | None = None,
) -> str:
    """A one-button form that POSTs ``action`` with the CSRF token."""
    button = f'<button type="submit"{attrs(class_=cls or None, data_confirm=confirm)}>'
    return (
        f'<form method="post" action="{esc(action)}"{attrs(class_="inline", name=name)}>'
        f"{csrf_field(view)}{extra}{button}{esc(label)}</button></form>"
    )


def flash(view: View) -> str:
    if not view.flash:
        return ""
    return f'<p class="flash" role="status">{esc(view.t(view.flash))}</p>'


def obis_label(obj: ObisObject, lang: str) -> str:
    """An object's name with its unit: its short name where it has one (``Import tariff 1
    (kWh)``), else the standard's description."""
    text = short_name(obj.code, lang) or (obj.description_nl if lang == "nl" else obj.description)
    return f"{text} ({unit(obj.unit)})" if obj.unit else text


def unit(text: str | None) -> str:
    return {"m3": "m³"}.get(text or "", text or "")


def profile_boxes(view: View, chosen: Iterable[Profile], legend: str) -> str:
    chosen = set(chosen)
    boxes = []
    for profile in Profile:
        description = profile.description_nl if view.lang == "nl" else profile.description
        boxes.append(
            f'<label class="check"><input type="checkbox" name="profiles" '
            f'value="{esc(profile.value)}"{" checked" if profile in chosen else ""}> '
            f"<span><strong>{esc(profile.value)}</strong> "
            f'<span class="hint">{esc(description)}</span></span></label>'
        )
    return f'<fieldset class="profiles"><legend>{esc(legend)}</legend>{"".join(boxes)}</fieldset>'


def admin_panel(view: View, pending: Request | None, back: str) -> str:
    """Admin access (§9.2.2): active until …, waiting for the meter, or ask for it."""
    t = view.t
    session = view.session
    if session is not None and view.elevated and session.elevated_until is not None:
        until = view.time(session.elevated_until)
        body = f"<p>{esc(t('admin.active', until=until))}</p>" + post_form(
            view, "/admin/unelevate", t("admin.end"), cls="secondary", extra=_next(back)
        )
        state = "active"
    elif pending is not None:
        body = f'<p class="waiting">{esc(t("admin.waiting", code=pending.code))}</p>'
        state = "pending"
    else:
        body = f"<p>{esc(t('admin.none'))}</p>" + post_form(
            view, "/admin/elevate", t("admin.ask"), extra=_next(back)
        )
        state = "none"
    return (
        f'<section class="admin" aria-labelledby="admin-h" data-admin="{state}">'
        f'<h2 id="admin-h">{esc(t("devices.kind.elevation"))}</h2>'
        f'<div role="status">{body}</div></section>'
    )


def _next(path: str) -> str:
    return f'<input type="hidden" name="next" value="{esc(path)}">'


def table(
    caption: str,
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    row_headers: bool = False,
    scroll_label: str | None = None,
    caption_hidden: bool = False,
) -> str:
    """A table; cells are HTML already. A wide table scrolls in a focusable region."""
    cap_class = ' class="visually-hidden"' if caption_hidden else ""
    parts = [f"<table><caption{cap_class}>{esc(caption)}</caption><thead><tr>"]
    parts += [f'<th scope="col">{h}</th>' for h in head]
    parts.append("</tr></thead><tbody>")
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            tag = "th" if row_headers and index == 0 else "td"
            scope = ' scope="row"' if tag == "th" else ""
            cells.append(f"<{tag}{scope}>{cell}</{tag}>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    html_table = "".join(parts)
    if scroll_label is None:
        return html_table
    return (
        f'<div class="table-scroll" role="region" tabindex="0" '
        f'aria-label="{esc(scroll_label)}">{html_table}</div>'
    )


# --- the layout --------------------------------------------------------------------------


def layout(
    view: View, page: Page, assets: Assets, *, host: str, version: str, scripts: Mapping[str, str]
) -> str:
    """The whole document: ``scripts`` maps a script name of ``page.scripts`` to its URL
    (the portal's own from ``assets``; ``plotly`` from the installed package)."""
    t = view.t
    other = LANGUAGES[1 - LANGUAGES.index(view.lang)]
    switch = (
        f'<a class="lang" href="/lang/{other}?{urlencode({"next": view.path})}" '
        f'lang="{other}" hreflang="{other}" '
        f'aria-label="{esc(t("lang.switch.label"))}">'
        f"{esc(t('lang.switch'))}</a>"
    )
    tools = [switch]
    header = [f'<p class="brand"><a href="/">{esc(t("site"))}</a></p>']
    if page.nav and view.session is not None:
        items = []
        for href, key in NAV:
            current = ' aria-current="page"' if view.path == href else ""
            items.append(f'<li><a href="{href}"{current}>{esc(t(key))}</a></li>')
        header.append(f'<nav aria-label="{esc(t("nav.label"))}"><ul>{"".join(items)}</ul></nav>')
        tools.append(post_form(view, "/logout", t("logout"), cls="link"))
    header.append(f'<div class="tools">{"".join(tools)}</div>')
    script_tags = "".join(
        f'<script src="{esc(scripts[name])}" defer></script>' for name in ("portal", *page.scripts)
    )
    footer = f"<p>{esc(t('footer', host=host, version=version))}</p>"
    return template("layout.html").substitute(
        lang=view.lang,
        title=esc(page.title),
        site=esc(t("site")),
        css=esc(assets.url("portal.css")),
        icon=esc(assets.url("favicon.svg")),
        head=page.head,
        page=esc(view.path),
        skip=esc(t("skip")),
        header="\n".join(header),
        main=page.main,
        footer=footer,
        scripts=script_tags,
    )


# --- login (§5.1.3) --------------------------------------------------------------------------


def login_page(
    view: View,
    request: Request | None,
    *,
    message: str | None = None,
    retry_after: int | None = None,
) -> Page:
    """The login page: a request waiting on the meter, its outcome, or a button to ask."""
    t = view.t
    parts = [f"<h1>{esc(t('login.title'))}</h1>"]
    if message:
        parts.append(f'<p class="flash" role="status">{esc(t(message))}</p>')
    head = ""
    state = "idle" if message else "none"  # "none": start a request at once (login.js)
    if retry_after is not None:
        full = t("login.full", seconds=retry_after)
        parts.append(f'<p class="error" role="alert">{esc(full)}</p>')
        state = "full"
    if request is not None and request.status is RequestState.PENDING:
        state = "pending"
        head = '<noscript><meta http-equiv="refresh" content="5"></noscript>\n'
        parts.append(
            f'<section class="waiting-box" aria-labelledby="wait-h">'
            f'<h2 id="wait-h">{esc(t("login.waiting.title"))}</h2>'
            f"<p>{esc(t('login.waiting', browser=request.browser, code=request.code))}</p>"
            f'<p class="code" aria-label="{esc(t("devices.code", code=request.code))}">'
            f"{esc(request.code)}</p>"
            f"<p>{esc(t('login.valid_until', until=view.time(request.expires_at)))}</p>"
            f'<p id="login-status" role="status">{esc(t("login.checking"))}</p>'
            f'<p class="hint">{esc(t("login.waiting.other"))}</p></section>'
        )
    else:
        if request is not None:
            key = {
                RequestState.DENIED: "login.denied",
                RequestState.EXPIRED: "login.expired",
            }.get(request.status, "login.cancelled")
            parts.append(f'<p class="error" role="alert">{esc(t(key))}</p>')
            state = request.status.value
        parts.append(f"<p>{esc(t('login.intro'))}</p>")
        label = t("login.again") if request is not None else t("login.start")
        parts.append(
            f'<form method="post" action="/login" id="login-form" data-state="{state}">'
            f'<button type="submit">{esc(label)}</button></form>'
        )
    main = f'<div class="login" data-login="{state}">{"".join(parts)}</div>'
    return Page(t("login.title"), main, ("login",), head=head, nav=False)


# --- overview ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterInfo:
    equipment_id: str
    meter: Meter
    channel: int


def overview_page(
    view: View,
    meters: Sequence[MeterInfo],
    info: Mapping[str, Any],
    values: Mapping[str, object],
    gas: tuple[datetime, float] | None,
    devices: int,
    pending: int,
) -> Page:
    t = view.t
    rows = [
        (
            esc(t(f"meter.{m.meter.value}")),
            f"<code>{esc(m.equipment_id)}</code>",
            esc(m.channel if m.meter is Meter.GAS else "—"),
        )
        for m in meters
    ]
    host = info.get("host_name")
    url = str(info.get("url") or "")
    gateway = [
        (t("overview.hostname"), esc(host) if host else esc(t("overview.hostname.none"))),
        (t("overview.address"), f"<code>{esc(url)}</code>"),
        (t("overview.version"), esc(info.get("version", ""))),
        (t("overview.x1"), esc(t("overview.x1.on"))),
        (
            t("overview.ca"),
            f'<a href="/root-ca.pem" download="x1-root-ca.pem">{esc(t("overview.ca.link"))}</a>',
        ),
    ]
    gateway_dl = "".join(f"<div><dt>{esc(k)}</dt><dd>{v}</dd></div>" for k, v in gateway)
    now_cards = [
        (t("q.import"), view.number(values.get("1-0:1.7.0.255"), 3), "kW"),
        (t("q.export"), view.number(values.get("1-0:2.7.0.255"), 3), "kW"),
    ]
    if gas is not None:
        now_cards.append((t("q.gas"), view.number(gas[1], 3), "m³"))
    cards = "".join(
        f'<div class="card"><dt>{esc(name)}</dt><dd><span class="value">{esc(value)}</span> '
        f'<span class="unit">{esc(u)}</span></dd></div>'
        for name, value, u in now_cards
    )
    registers = []
    for code in REGISTERS:
        obj = lookup(code).obj
        text = obj.description_nl if view.lang == "nl" else obj.description
        registers.append(
            (esc(text), f'<span class="num">{esc(view.number(values.get(code), 3))}</span>')
        )
    device_text = (
        t("overview.devices.one") if devices == 1 else t("overview.devices", count=devices)
    )
    summary = f'<a href="/devices">{esc(device_text)}</a>'
    if pending:
        summary += f' <a href="/devices">{esc(t("overview.pending", count=pending))}</a>'
    main = "".join(
        [
            f"<h1>{esc(t('overview.title'))}</h1>",
            flash(view),
            f'<section aria-labelledby="now-h"><h2 id="now-h">{esc(t("overview.now"))}</h2>'
            f'<dl class="cards">{cards}</dl><p><a href="/live">{esc(t("live.title"))} →</a></p>'
            f"</section>",
            '<section aria-labelledby="meters-h">'
            f'<h2 id="meters-h">{esc(t("overview.meters"))}</h2>',
            table(
                t("overview.meters"),
                [esc(t("overview.kind")), esc(t("overview.equipment")), esc(t("overview.channel"))],
                rows,
                row_headers=True,
                caption_hidden=True,
            ),
            f"<h3>{esc(t('overview.registers'))}</h3>",
            table(
                t("overview.registers"),
                [esc(t("history.objects")), "kWh"],
                registers,
                row_headers=True,
                caption_hidden=True,
            ),
            "</section>",
            f'<section aria-labelledby="gw-h"><h2 id="gw-h">{esc(t("overview.gateway"))}</h2>'
            f'<dl class="facts">{gateway_dl}</dl><p class="hint">{esc(t("overview.ca.why"))}</p>'
            f"</section>",
            f'<section aria-labelledby="dev-h"><h2 id="dev-h">{esc(t("nav.devices"))}</h2>'
            f"<p>{summary}</p></section>",
        ]
    )
    return Page(t("overview.title"), main)


# --- live --------------------------------------------------------------------------------------


def live_page(
    view: View,
    electricity_id: str,
    gas_id: str,
    gas_code: str,
    values: Mapping[str, object],
    gas: tuple[datetime, float] | None,
) -> Page:
    t = view.t

    def num(code: str, decimals: int) -> str:
        return (
            f'<span class="num" data-obis="{esc(code)}" data-decimals="{decimals}">'
            f"{esc(view.number(values.get(code), decimals))}</span>"
        )

    gas_value = (
        f'<span class="value" data-obis="{esc(gas_code)}" data-decimals="3">'
        f"{esc(view.number(gas[1] if gas else None, 3))}</span>"
    )
    gas_at = view.time(gas[0]) if gas else "—"
    cards = (
        f'<div class="card"><dt>{esc(t("q.import"))}</dt><dd>'
        f'<span class="value" data-obis="1-0:1.7.0.255" data-decimals="3">'
        f'{esc(view.number(values.get("1-0:1.7.0.255"), 3))}</span> <span class="unit">kW</span>'
        f"</dd></div>"
        f'<div class="card"><dt>{esc(t("q.export"))}</dt><dd>'
        f'<span class="value" data-obis="1-0:2.7.0.255" data-decimals="3">'
        f'{esc(view.number(values.get("1-0:2.7.0.255"), 3))}</span> <span class="unit">kW</span>'
        f"</dd></div>"
        f'<div class="card"><dt>{esc(t("q.gas"))}</dt><dd>{gas_value} '
        f'<span class="unit">m³</span><br><small class="hint" data-gas-time>'
        f"{esc(t('q.gas_at', at=gas_at))}</small></dd></div>"
    )
    head = [
        esc(t("q.phase")),
        esc(t("q.voltage")) + " (V)",
        esc(t("q.current")) + " (A)",
        esc(t("q.power_in")) + " (kW)",
        esc(t("q.power_out")) + " (kW)",
    ]
    rows = [
        (phase, num(v, 1), num(a, 3), num(pin, 3), num(pout, 3))
        for phase, v, a, pin, pout in PHASES
    ]
    config = {
        "electricity": electricity_id,
        "gas": gas_id,
        "gasCode": gas_code,
        "obis": [*LIVE_ELECTRICITY, gas_code],
        "lang": view.lang,
        "window": 300,
        "labels": {
            "import": t("q.import"),
            "export": t("q.export"),
            "kw": "kW",
            "pause": t("live.pause"),
            "resume": t("live.resume"),
            "connecting": t("live.status.connecting"),
            "live": t("live.status.live"),
            "paused": t("live.status.paused"),
            "closed": t("live.status.closed"),
            "gasAt": t("q.gas_at", at="{at}"),
            "updated": t("live.updated", at="{at}"),
        },
    }
    main = "".join(
        [
            f"<h1>{esc(t('live.title'))}</h1>",
            f'<p>{esc(t("live.intro"))}</p><noscript><p class="hint">{esc(t("live.nojs"))}</p>'
            f"</noscript>",
            '<div class="live-controls">'
            '<button type="button" id="live-pause" aria-pressed="false">'
            f'{esc(t("live.pause"))}</button> <span id="live-status" class="status">'
            f'{esc(t("live.status.connecting"))}</span> <span id="live-updated" class="hint">'
            f"</span></div>",
            f'<section aria-labelledby="live-now-h"><h2 id="live-now-h" class="visually-hidden">'
            f'{esc(t("overview.now"))}</h2><dl class="cards">{cards}</dl></section>',
            f'<section aria-labelledby="live-chart-h"><h2 id="live-chart-h">{esc(t("live.chart"))}'
            f'</h2><div id="live-chart" class="chart" role="img" '
            f'aria-label="{esc(t("live.chart.label"))}"></div></section>',
            f'<section aria-labelledby="phases-h"><h2 id="phases-h">{esc(t("live.phases"))}</h2>',
            table(
                t("live.phases"),
                head,
                rows,
                row_headers=True,
                scroll_label=t("live.phases"),
                caption_hidden=True,
            ),
            "</section>",
            json_script("live-config", config),
        ]
    )
    return Page(t("live.title"), main, ("plotly", "live"))


# --- history -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryView:
    """What the history page shows: the selection, its period, and the API's answer."""

    meters: Sequence[MeterInfo]
    meter: MeterInfo
    resolution: str
    resolutions: Sequence[tuple[str, str, int]]
    """(resolution, retention as Table 8 words it, max values) of the meter."""
    objects: Sequence[tuple[ObisObject, str]]
    """Every historic object of the meter with its concrete code."""
    codes: Sequence[str]
    """The codes chosen."""
    period: Period
    previous: str | None
    """Query string of the previous period, or None at the retention's edge."""
    following: str | None
    latest: str
    csv: str
    """Query string of the CSV download of this selection."""
    body: Mapping[str, Any] | None
    """The measurements response, or None when the gateway has no history."""
    uses: Sequence[tuple[datetime, Mapping[str, float | None]]] = ()


def history_page(view: View, h: HistoryView) -> Page:
    t = view.t
    meter_options = "".join(
        f'<option value="{m.meter.value}"{" selected" if m is h.meter else ""}>'
        f"{esc(t(f'meter.{m.meter.value}'))} ({esc(m.equipment_id)})</option>"
        for m in h.meters
    )
    res_options = "".join(
        f'<option value="{esc(r)}"{" selected" if r == h.resolution else ""}>'
        f"{esc(t('res.' + r))}</option>"
        for r, _, _ in h.resolutions
    )
    boxes = "".join(
        f'<label class="check"><input type="checkbox" name="obis" value="{esc(code)}"'
        f"{' checked' if code in h.codes else ''}> <span>{esc(obis_label(obj, view.lang))}"
        f"</span></label>"
        for obj, code in h.objects
    )
    retention = next(
        ((_period_words(p, view.lang), n) for r, p, n in h.resolutions if r == h.resolution),
        ("", 0),
    )
    form = (
        f'<form method="get" action="/history" class="history-form" id="history-form">'
        f'<div class="field"><label for="h-meter">{esc(t("history.meter"))}</label>'
        f'<select id="h-meter" name="meter">{meter_options}</select></div>'
        f'<div class="field"><label for="h-res">{esc(t("history.resolution"))}</label>'
        f'<select id="h-res" name="resolution">{res_options}</select></div>'
        f'<fieldset class="objects"><legend>{esc(t("history.objects"))}</legend>{boxes}'
        f"</fieldset>"
        f'<input type="hidden" name="start" value="{esc(h.period.anchor.isoformat())}">'
        f'<button type="submit">{esc(t("history.show"))}</button></form>'
        f'<p class="hint">{esc(t("history.retention", retention=retention[0], count=retention[1]))}'
        f"</p>"
    )
    links = []
    if h.previous is not None:
        links.append(
            f'<a href="/history?{esc(h.previous)}" rel="prev">← {esc(t("history.prev"))}</a>'
        )
    links.append(
        f'<span class="period" aria-live="polite">'
        f"{esc(t('history.period', period=h.period.label(view.lang)))}</span>"
    )
    if h.following is not None:
        links.append(
            f'<a href="/history?{esc(h.following)}" rel="next">{esc(t("history.next"))} →</a>'
        )
        links.append(f'<a href="/history?{esc(h.latest)}">{esc(t("history.latest"))}</a>')
    nav = (
        f'<nav class="period-nav" aria-label="{esc(t("history.period", period=""))}">'
        f"{' '.join(links)}</nav>"
    )
    parts = [f"<h1>{esc(t('history.title'))}</h1>", form, nav]
    if h.body is None:
        parts.append(f'<p class="error" role="alert">{esc(t("history.unavailable"))}</p>')
        return Page(t("history.title"), "".join(parts))
    readings = list(h.body.get("readings", []))
    units: Mapping[str, str | None] = h.body.get("units", {})
    parts.append(
        f'<p><a class="button" href="/history.csv?{esc(h.csv)}" download>'
        f'{esc(t("history.download"))}</a> <span class="hint">'
        f"{esc(t('history.count', count=len(readings)))}</span></p>"
    )
    names = {code: obis_label(obj, view.lang) for obj, code in h.objects}
    if not readings:
        parts.append(f'<p role="status">{esc(t("history.none"))}</p>')
    else:
        series = []
        for code in h.codes:
            series.append(
                {
                    "name": names.get(code, code),
                    "unit": unit(units.get(code)),
                    "y": [u.get(code) for _, u in h.uses],
                }
            )
        data = {
            "x": [_iso_local(t_) for t_, _ in h.uses],
            "series": series,
            "lang": view.lang,
            "resolution": h.resolution,
            "tickformat": TICKS.get(h.resolution, ""),
        }
        parts.append(
            f'<div id="history-chart" class="chart" role="img" '
            f'aria-label="{esc(t("history.chart.label"))}"></div>'
        )
        parts.append(json_script("history-data", data))
        head = [esc(t("history.t"))]
        for code in h.codes:
            u = unit(units.get(code))
            head.append(esc(names.get(code, code)))
            head.append(f"{esc(t('history.delta'))}" + (f" ({esc(u)})" if u else ""))
        uses = {t_: u for t_, u in h.uses}
        rows = []
        for reading in readings:
            moment = datetime.fromisoformat(str(reading["t"]))
            row = [f'<time datetime="{esc(reading["t"])}">{esc(view.time(moment))}</time>']
            for code in h.codes:
                decimals = lookup(code).obj.decimals
                row.append(esc(view.number(reading["values"].get(code), decimals)))
                use = uses.get(moment, {}).get(code)
                row.append(esc(view.number(use, decimals)))
            rows.append(row)
        parts.append(
            f'<details class="readings"><summary>'
            f"{esc(t('history.table.show', count=len(readings)))}</summary>"
            + table(
                t("history.table"),
                head,
                rows,
                row_headers=True,
                scroll_label=t("history.table"),
                caption_hidden=True,
            )
            + "</details>"
        )
    return Page(t("history.title"), "".join(parts), ("plotly", "history"))


def _period_words(text: str, lang: str) -> str:
    """Table 8's retention (``7 days``, ``24 months``, ``1 hour``) in the page's language."""
    if lang != "nl":
        return text
    number, _, word = text.partition(" ")
    dutch = {
        "day": "dag",
        "days": "dagen",
        "month": "maand",
        "months": "maanden",
        "hour": "uur",
        "hours": "uur",
    }.get(word, word)
    return f"{number} {dutch}"


def _iso_local(moment: datetime) -> str:
    from x1p1.gateway.portal.i18n import local

    return local(moment).strftime("%Y-%m-%d %H:%M:%S")


# --- devices (§5.1.6, §9.2.3) --------------------------------------------------------------


def devices_page(
    view: View,
    token_requests: Sequence[Request],
    portal_requests: Sequence[Request],
    tokens: Sequence[Grant],
    sessions: Sequence[Grant],
    elevation: Request | None,
) -> Page:
    t = view.t
    admin = view.elevated
    parts = [
        f"<h1>{esc(t('devices.title'))}</h1>",
        flash(view),
        admin_panel(view, elevation, "/devices"),
        f'<p id="changes" class="flash" role="status" hidden>{esc(t("devices.changed"))} '
        f'<a href="/devices">{esc(t("devices.reload"))}</a></p>',
    ]
    # waiting requests: token requests and other browsers' logins, each with the code
    # the meter's display shows; request ids (a device's key to its token) only for a
    # session with admin access
    items = []
    for request in token_requests:
        left = format_duration((request.expires_at - view.now).total_seconds(), view.lang)
        status = ""
        if request.state is RequestState.DENIED:
            status = f' · <span class="tag">{esc(t("devices.denied"))}</span>'
        elif request.state is RequestState.PENDING:
            status = f" · {esc(t('devices.expires_in', left=left))}"
        facts = (
            f"<p><strong>{esc(request.name)}</strong> · {esc(t('devices.kind.token'))} · "
            f"{esc(t('devices.code', code=request.code))}{status}</p>"
            f'<p class="hint">{esc(t("devices.uuid"))} <code>{esc(request.uuid)}</code> · '
            f"{esc(t('devices.asked'))}: {esc(', '.join(sorted_profiles(request.asked)))}"
            f"</p>"
        )
        key = f'data-code="{esc(request.code)}"'
        if admin:
            rid = esc(request.request_id)
            key = f'data-request="{rid}"'
        if admin and request.state is RequestState.PENDING:
            facts += (
                f'<form method="post" action="/admin/requests/{rid}/approve" class="stack">'
                f"{csrf_field(view)}{profile_boxes(view, request.asked, t('devices.grant'))}"
                f'<button type="submit">{esc(t("devices.approve"))}</button></form>'
                + post_form(
                    view,
                    f"/admin/requests/{request.request_id}/deny",
                    t("devices.deny"),
                    cls="danger",
                )
            )
        items.append(f'<li class="item" {key}>{facts}</li>')
    for portal in portal_requests:
        if portal.kind is not RequestKind.LOGIN:
            continue
        status = ""
        if portal.status is RequestState.DENIED:
            status = f' · <span class="tag">{esc(t("devices.denied"))}</span>'
        left = format_duration((portal.expires_at - view.now).total_seconds(), view.lang)
        facts = (
            f"<p><strong>{esc(portal.browser)}</strong> · {esc(t('devices.kind.login'))} · "
            f"{esc(t('devices.code', code=portal.code))}{status}</p>"
            f'<p class="hint ua">{esc(portal.user_agent)}</p>'
        )
        key = f'data-code="{esc(portal.code)}"'
        if admin:
            key = f'data-request="{esc(portal.request_id)}"'
        if portal.status is RequestState.PENDING:
            facts = facts.replace("</p>", f" · {esc(t('devices.expires_in', left=left))}</p>", 1)
            if admin:
                facts += post_form(
                    view, f"/admin/requests/{portal.request_id}/approve", t("devices.approve")
                ) + post_form(
                    view,
                    f"/admin/requests/{portal.request_id}/deny",
                    t("devices.deny"),
                    cls="danger",
                )
        items.append(f'<li class="item" {key}>{facts}</li>')
    waiting = (
        f'<ul class="items">{"".join(items)}</ul>'
        if items
        else f"<p>{esc(t('devices.pending.none'))}</p>"
    )
    parts.append(
        f'<section aria-labelledby="pending-h"><h2 id="pending-h">'
        f"{esc(t('devices.pending'))}</h2>{waiting}</section>"
    )
    # connected devices
    items = []
    for token in tokens:
        facts = (
            f'<p><strong>{esc(token.name)}</strong></p><dl class="facts small">'
            f"<div><dt>{esc(t('devices.profiles'))}</dt><dd>"
            f"{esc(', '.join(sorted_profiles(token.profiles)))}</dd></div>"
            f"<div><dt>{esc(t('devices.since'))}</dt><dd>{esc(view.time(token.created_at))}</dd></div>"
            f"<div><dt>{esc(t('devices.expires'))}</dt><dd>{esc(view.time(token.expires_at))}</dd>"
            f"</div><div><dt>{esc(t('devices.last_used'))}</dt><dd>"
            f"{esc(view.time(token.last_used) if token.last_used else t('devices.never'))}"
            f"</dd></div>"
            f"<div><dt>{esc(t('devices.uuid'))}</dt><dd><code>{esc(token.uuid)}</code></dd></div>"
            f"</dl>"
        )
        if admin:
            tid = esc(token.token_id)
            facts += (
                f"<details><summary>{esc(t('devices.change'))}</summary>"
                f'<form method="post" action="/admin/devices/{tid}/profiles" class="stack">'
                f"{csrf_field(view)}{profile_boxes(view, token.profiles, t('devices.profiles'))}"
                f'<button type="submit">{esc(t("devices.save"))}</button></form></details>'
                + post_form(
                    view,
                    f"/admin/devices/{token.token_id}/revoke",
                    t("devices.revoke"),
                    cls="danger",
                    confirm=t("devices.revoke") + f": {token.name}?",
                )
            )
        items.append(f'<li class="item" data-token="{esc(token.token_id)}">{facts}</li>')
    connected = (
        f'<ul class="items">{"".join(items)}</ul>'
        if items
        else f"<p>{esc(t('devices.tokens.none'))}</p>"
    )
    parts.append(
        f'<section aria-labelledby="tokens-h"><h2 id="tokens-h">'
        f"{esc(t('devices.tokens'))}</h2>{connected}</section>"
    )
    # logged-in browsers
    items = []
    for session in sessions:
        mine = view.session is not None and session.session_id == view.session.session_id
        marker = f' <span class="tag">{esc(t("devices.this"))}</span>' if mine else ""
        facts = (
            f"<p><strong>{esc(session.browser)}</strong>{marker}</p>"
            f'<p class="hint ua">{esc(session.user_agent)}</p><dl class="facts small">'
            f"<div><dt>{esc(t('devices.since'))}</dt><dd>{esc(view.time(session.created_at))}</dd>"
            f"</div><div><dt>{esc(t('devices.last_used'))}</dt><dd>"
            f"{esc(view.time(session.last_used))}</dd></div>"
            f"<div><dt>{esc(t('devices.expires'))}</dt><dd>{esc(view.time(session.expires_at))}"
            f"</dd></div></dl>"
        )
        if admin and not mine:
            facts += post_form(
                view,
                f"/admin/sessions/{session.session_id}/revoke",
                t("devices.revoke.session"),
                cls="danger",
            )
        items.append(f'<li class="item" data-session="{esc(session.session_id)}">{facts}</li>')
    parts.append(
        f'<section aria-labelledby="sessions-h"><h2 id="sessions-h">'
        f'{esc(t("devices.sessions"))}</h2><ul class="items">{"".join(items)}</ul>'
        f"</section>"
    )
    return Page(t("devices.title"), "".join(parts))


# --- comlog (§2.2) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComlogLine:
    t: datetime
    event: str
    device: str | None
    detail: Mapping[str, Any]
    count: int = 1
    last: datetime | None = None
    summarised: bool = False


_DETAIL_KEYS = ("profiles", "reason", "by", "code", "action", "t", "at")


def comlog_page(view: View, lines: Sequence[ComlogLine] | None) -> Page:
    t = view.t
    parts = [f"<h1>{esc(t('comlog.title'))}</h1>", f"<p>{esc(t('comlog.intro'))}</p>"]
    if lines is None:
        parts.append(f'<p class="error" role="alert">{esc(t("comlog.unavailable"))}</p>')
    elif not lines:
        parts.append(f"<p>{esc(t('comlog.none'))}</p>")
    else:
        rows = []
        for line in lines:
            detail = []
            if line.summarised:
                detail.append(
                    t(
                        "comlog.uses" if line.event.endswith("-use") else "comlog.times",
                        count=line.count,
                        last=view.time(line.last or line.t, seconds=True),
                    )
                )
            for key in _DETAIL_KEYS:
                value = line.detail.get(key)
                if value in (None, "", []):
                    continue
                text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                detail.append(f"{key}: {text}")
            rows.append(
                (
                    f'<time datetime="{esc(line.t.isoformat())}">'
                    f"{esc(view.time(line.t, seconds=True))}</time>",
                    esc(event_name(line.event, view.lang)),
                    esc(line.device or "—"),
                    f'<div class="wrap">{esc("; ".join(detail))}</div>',
                )
            )
        head = [esc(t(k)) for k in ("comlog.t", "comlog.event", "comlog.device", "comlog.detail")]
        parts.append(
            table(
                t("comlog.title"), head, rows, scroll_label=t("comlog.title"), caption_hidden=True
            )
        )
    return Page(t("comlog.title"), "".join(parts))


# --- privacy (§11, §12) ----------------------------------------------------------------------


def privacy_page(
    view: View,
    elevation: Request | None,
    blocked_at: datetime | None,
    error: str | None = None,
) -> Page:
    t = view.t
    effects = "".join(f"<li>{esc(item)}</li>" for item in t("privacy.block.effects").split("|"))
    parts = [
        f"<h1>{esc(t('privacy.title'))}</h1>",
        flash(view),
        f"<p>{esc(t('privacy.data'))}</p><p>{esc(t('privacy.off'))}</p>",
        admin_panel(view, elevation, "/privacy"),
        f'<section aria-labelledby="block-h" class="block"><h2 id="block-h">'
        f"{esc(t('privacy.block.title'))}</h2><p>{esc(t('privacy.block.what'))}</p>"
        f'<ul>{effects}</ul><p class="warning"><strong>{esc(t("privacy.block.undo"))}</strong></p>',
    ]
    if blocked_at is not None:
        parts.append(f"<p>{esc(t('privacy.blocked_at', at=view.time(blocked_at)))}</p>")
    if error:
        parts.append(f'<p class="error" role="alert" id="block-error">{esc(t(error))}</p>')
    if view.elevated:
        described = ' aria-describedby="block-error"' if error else ""
        parts.append(
            f'<form method="post" action="/admin/block-history" id="block-form" class="stack">'
            f'{csrf_field(view)}<label class="check"><input type="checkbox" name="confirm" '
            f'value="yes" required id="block-confirm"{described}> '
            f"<span>{esc(t('privacy.block.confirm'))}</span></label>"
            f'<button type="submit" class="danger">{esc(t("privacy.block.button"))}</button>'
            f"</form>"
            f'<dialog id="block-dialog" aria-labelledby="block-dialog-text">'
            f'<p id="block-dialog-text">{esc(t("privacy.block.dialog"))}</p>'
            f'<div class="buttons"><button type="button" value="cancel" id="block-no" '
            f'class="secondary">{esc(t("privacy.block.no"))}</button> '
            f'<button type="button" value="yes" id="block-yes" class="danger">'
            f"{esc(t('privacy.block.yes'))}</button></div></dialog>"
        )
    parts.append("</section>")
    return Page(t("privacy.title"), "".join(parts), ("privacy",))


# --- errors and states -------------------------------------------------------------------------


def error_page(view: View, status: int, message: str, title: str | None = None) -> Page:
    t = view.t
    main = (
        f'<h1>{esc(title or t("error.title"))}</h1><p role="alert">{esc(message)}</p>'
        f'<p><a href="/">{esc(t("error.back"))}</a></p>'
    )
    return Page(title or t("error.title"), main, status=status)


def disabled_page(view: View) -> Page:
    t = view.t
    main = f'<h1>{esc(t("disabled.title"))}</h1><p role="alert">{esc(t("disabled.text"))}</p>'
    return Page(t("disabled.title"), main, status=503, nav=False)
