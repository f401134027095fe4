"""The portal's words in Dutch and English, the choice between them, and how numbers and
times are written in each.

The language comes from the ``x1p1-lang`` cookie that the portal's language switch sets,
else from the browser's ``Accept-Language`` (RFC 9110 §12.5.4, quality values honoured);
a browser that asks for neither Dutch nor English gets English, a client that sends no
preference at all gets Dutch (the standard's language). Times are shown in Dutch local
time (Europe/Amsterdam), the calendar of the meter's days and months (Table 8).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from x1p1.x1.history import LOCAL_ZONE

LANGUAGES: Final = ("nl", "en")
COOKIE: Final = "x1p1-lang"
NO_PREFERENCE: Final = "nl"
UNMATCHED: Final = "en"


def negotiate(accept_language: str | None, cookie: str | None = None) -> str:
    """``nl`` or ``en``: the cookie's choice, else the best match of ``Accept-Language``."""
    if cookie in LANGUAGES:
        return str(cookie)
    if not accept_language or not accept_language.strip():
        return NO_PREFERENCE
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept_language.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if quality > 0:
            ranked.append((-quality, index, primary))
    for _, _, primary in sorted(ranked):
        if primary in LANGUAGES:
            return primary
        if primary == "*":
            return NO_PREFERENCE
    return UNMATCHED


_MONTHS = {
    "nl": ("jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}
_MONTHS_LONG = {
    "nl": (
        "januari",
        "februari",
        "maart",
        "april",
        "mei",
        "juni",
        "juli",
        "augustus",
        "september",
        "oktober",
        "november",
        "december",
    ),
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
}
_WEEKDAYS = {
    "nl": ("ma", "di", "wo", "do", "vr", "za", "zo"),
    "en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
}


def local(moment: datetime) -> datetime:
    return moment.astimezone(LOCAL_ZONE)


def format_datetime(moment: datetime | None, lang: str, *, seconds: bool = False) -> str:
    """``24 nov 2026 21:40`` (nl) or ``24 Nov 2026 21:40`` (en), Dutch local time."""
    if moment is None:
        return "—"
    t = local(moment)
    clock = t.strftime("%H:%M:%S" if seconds else "%H:%M")
    return f"{t.day} {_MONTHS[lang][t.month - 1]} {t.year} {clock}"


def format_date(moment: datetime, lang: str, *, weekday: bool = False) -> str:
    t = local(moment)
    text = f"{t.day} {_MONTHS[lang][t.month - 1]} {t.year}"
    return f"{_WEEKDAYS[lang][t.weekday()]} {text}" if weekday else text


def format_month(year: int, month: int, lang: str) -> str:
    return f"{_MONTHS_LONG[lang][month - 1]} {year}"


def format_number(value: float | int | None, decimals: int, lang: str) -> str:
    """``1.234,567`` (nl) or ``1,234.567`` (en); ``—`` for a missing value."""
    if value is None:
        return "—"
    text = f"{value:,.{decimals}f}"
    if lang == "nl":
        text = text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return text


def format_duration(seconds: float, lang: str) -> str:
    """``9 min 5 s``, ``59 min``, ``2 h 5 min`` (``u`` in Dutch for hours)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    hour = "u" if lang == "nl" else "h"
    if hours:
        return f"{hours} {hour} {minutes} min" if minutes else f"{hours} {hour}"
    if minutes:
        return f"{minutes} min {secs} s" if secs and minutes < 10 else f"{minutes} min"
    return f"{secs} s"


class Texts:
    """The words of one language: ``t("key", name=value)`` formats the message."""

    def __init__(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}")
        self.lang = lang
        self._index = LANGUAGES.index(lang)

    def __call__(self, key: str, **values: object) -> str:
        try:
            text = MESSAGES[key][self._index]
        except KeyError:
            raise KeyError(f"no portal text {key!r}") from None
        return text.format(**values) if values else text


MESSAGES: dict[str, tuple[str, str]] = {
    # key: (Dutch, English)
    "site": ("X1 meterportaal", "X1 meter portal"),
    "skip": ("Naar de inhoud", "Skip to content"),
    "nav.label": ("Hoofdmenu", "Main menu"),
    "nav.overview": ("Overzicht", "Overview"),
    "nav.live": ("Live", "Live"),
    "nav.history": ("Historie", "History"),
    "nav.devices": ("Apparaten", "Devices"),
    "nav.comlog": ("Comlog", "Comlog"),
    "nav.privacy": ("Privacy", "Privacy"),
    "nav.api": ("API", "API"),
    "lang.switch": ("English", "Nederlands"),
    "lang.switch.label": ("Switch to English", "Schakel over naar Nederlands"),
    "logout": ("Uitloggen", "Log out"),
    "footer": (
        "X1-interface {host} · X1 Companion Standard {version}",
        "X1 interface {host} · X1 Companion Standard {version}",
    ),
    # admin access (§9.2.2)
    "admin.active": ("Beheertoegang actief tot {until}.", "Admin access active until {until}."),
    "admin.end": ("Beheertoegang beëindigen", "End admin access"),
    "admin.none": (
        "Voor beheerfuncties (verzoeken goedkeuren, rechten wijzigen, apparaten ontkoppelen, "
        "historie blokkeren) bevestigt u eerst op de meter. De toegang geldt 60 minuten.",
        "Admin functions (approving requests, changing rights, removing devices, blocking "
        "history) need a confirmation on the meter first. Access then lasts 60 minutes.",
    ),
    "admin.ask": ("Beheertoegang vragen", "Ask for admin access"),
    "admin.waiting": (
        "Bevestig op de meter: op het display staat een verzoek om beheertoegang met code "
        "{code}. Kijk of het display deze code toont en druk dan op de knop van de meter.",
        "Confirm on the meter: its display shows a request for admin access with code {code}. "
        "Check that the display shows this code, then press the meter's button.",
    ),
    "admin.needed.title": ("Beheertoegang nodig", "Admin access needed"),
    "admin.needed": (
        "Deze actie is een beheerfunctie. Vraag eerst beheertoegang en bevestig die op de meter.",
        "This is an admin function. Ask for admin access first and confirm it on the meter.",
    ),
    # login (§5.1.3)
    "login.title": ("Inloggen", "Log in"),
    "login.intro": (
        "U logt in zonder wachtwoord: de meter vraagt u om dit apparaat goed te keuren.",
        "You log in without a password: the meter asks you to approve this device.",
    ),
    "login.start": ("Inloggen met de meter", "Log in with the meter"),
    "login.waiting.title": ("Bevestig op de meter", "Confirm on the meter"),
    "login.waiting": (
        "Op het display van uw elektriciteitsmeter staat nu een inlogverzoek van {browser} "
        "met code {code}. Kijk of het display deze code toont en druk dan op de knop van de "
        "meter om het goed te keuren.",
        "Your electricity meter's display now shows a login request from {browser} with code "
        "{code}. Check that the display shows this code, then press the meter's button to "
        "approve it.",
    ),
    "login.waiting.other": (
        "Bent u op een ander apparaat al ingelogd? Dan kunt u het verzoek ook daar goedkeuren, "
        "onder Apparaten.",
        "Logged in on another device already? You can approve the request there too, under "
        "Devices.",
    ),
    "login.valid_until": ("Het verzoek geldt tot {until}.", "The request is valid until {until}."),
    "login.checking": ("Wacht op goedkeuring…", "Waiting for approval…"),
    "login.denied": ("Het inlogverzoek is geweigerd.", "The login request was denied."),
    "login.expired": (
        "Het inlogverzoek is verlopen: het is niet binnen 10 minuten goedgekeurd.",
        "The login request expired: nobody approved it within 10 minutes.",
    ),
    "login.cancelled": ("Het inlogverzoek is ingetrokken.", "The login request was withdrawn."),
    "login.again": ("Opnieuw vragen", "Ask again"),
    "login.bye": ("U bent uitgelogd.", "You have logged out."),
    "login.ended": (
        "Uw sessie is beëindigd. Log opnieuw in met de meter.",
        "Your session has ended. Log in again with the meter.",
    ),
    "login.blocked": (
        "De historie is geblokkeerd. Alle toegang is ingetrokken, ook die van deze browser.",
        "History has been blocked. All access has been revoked, this browser's too.",
    ),
    "login.full": (
        "Er wachten al te veel verzoeken op de meter. Probeer het over {seconds} seconden opnieuw.",
        "Too many requests are waiting on the meter. Try again in {seconds} seconds.",
    ),
    # overview
    "overview.title": ("Uw meetinstallatie", "Your metering installation"),
    "overview.meters": ("Meters", "Meters"),
    "overview.kind": ("Soort", "Kind"),
    "overview.equipment": ("Equipment-id", "Equipment id"),
    "overview.channel": ("M-Bus-kanaal", "M-Bus channel"),
    "meter.electricity": ("Elektriciteitsmeter", "Electricity meter"),
    "meter.gas": ("Gasmeter", "Gas meter"),
    "overview.gateway": ("Gateway", "Gateway"),
    "overview.hostname": ("Hostnaam", "Host name"),
    "overview.hostname.none": ("niet aangekondigd via mDNS", "not announced by mDNS"),
    "overview.address": ("Adres", "Address"),
    "overview.version": ("X1-versie", "X1 version"),
    "overview.x1": ("X1-interface", "X1 interface"),
    "overview.x1.on": ("aan", "on"),
    "overview.ca": ("Root-certificaat (CA)", "Root certificate (CA)"),
    "overview.ca.link": ("downloaden (PEM)", "download (PEM)"),
    "overview.ca.why": (
        "Installeer dit certificaat in uw browser om de waarschuwing over een niet-privéverbinding "
        "te laten verdwijnen (§10.2).",
        "Install this certificate in your browser to make the warning about a connection that "
        "is not private go away (§10.2).",
    ),
    "overview.now": ("Op dit moment", "Right now"),
    "overview.registers": ("Meterstanden", "Meter readings"),
    "overview.devices": ("{count} apparaten hebben toegang.", "{count} devices have access."),
    "overview.devices.one": ("1 apparaat heeft toegang.", "1 device has access."),
    "overview.pending": ("{count} verzoeken wachten.", "{count} requests are waiting."),
    # quantities
    "q.import": ("Afname nu", "Import now"),
    "q.export": ("Teruglevering nu", "Export now"),
    "q.phase": ("Fase", "Phase"),
    "q.voltage": ("Spanning", "Voltage"),
    "q.current": ("Stroom", "Current"),
    "q.power_in": ("Vermogen afname", "Power import"),
    "q.power_out": ("Vermogen teruglevering", "Power export"),
    "q.gas": ("Gasmeterstand", "Gas meter reading"),
    "q.gas_at": ("gemeten {at}", "measured {at}"),
    "q.tariff": ("Tarief", "Tariff"),
    # live
    "live.title": ("Live verbruik", "Live use"),
    "live.intro": (
        "Elke seconde bijgewerkt via de X1-WebSocket. De grafiek toont de laatste 5 minuten.",
        "Updated every second over the X1 WebSocket. The chart shows the last 5 minutes.",
    ),
    "live.chart": ("Vermogen, laatste 5 minuten", "Power, last 5 minutes"),
    "live.chart.label": (
        "Lijngrafiek van afgenomen en teruggeleverd vermogen in kW over de laatste 5 minuten",
        "Line chart of imported and exported power in kW over the last 5 minutes",
    ),
    "live.phases": ("Per fase", "Per phase"),
    "live.pause": ("Pauzeren", "Pause"),
    "live.resume": ("Hervatten", "Resume"),
    "live.status.connecting": ("Verbinden…", "Connecting…"),
    "live.status.live": ("Live", "Live"),
    "live.status.paused": ("Gepauzeerd", "Paused"),
    "live.status.closed": (
        "Verbinding verbroken; opnieuw verbinden…",
        "Connection lost; reconnecting…",
    ),
    "live.nojs": (
        "Zonder JavaScript ziet u de waarden van het moment dat de pagina geladen werd.",
        "Without JavaScript you see the values of the moment the page was loaded.",
    ),
    "live.updated": ("Bijgewerkt: {at}", "Updated: {at}"),
    # history
    "history.title": ("Historie", "History"),
    "history.meter": ("Meter", "Meter"),
    "history.resolution": ("Resolutie", "Resolution"),
    "history.objects": ("Gegevens", "Data"),
    "history.show": ("Tonen", "Show"),
    "history.prev": ("Vorige periode", "Previous period"),
    "history.next": ("Volgende periode", "Next period"),
    "history.latest": ("Nieuwste", "Latest"),
    "history.period": ("Periode: {period}", "Period: {period}"),
    "history.download": ("Download als CSV", "Download as CSV"),
    "history.chart.label": (
        "Staafgrafiek van het verbruik per interval in de gekozen periode; de tabel hieronder "
        "bevat dezelfde gegevens",
        "Bar chart of the use per interval in the chosen period; the table below holds the "
        "same data",
    ),
    "history.table": ("Standen per interval", "Readings per interval"),
    "history.table.show": ("Tabel met de standen ({count})", "Table of the readings ({count})"),
    "history.t": ("Einde interval", "Interval end"),
    "history.delta": ("verbruik", "use"),
    "history.none": (
        "Geen gegevens in deze periode. Intervallen waarin de gateway niet draaide of van vóór "
        "een blokkering ontbreken.",
        "No data in this period. Intervals when the gateway was not running, or from before a "
        "block, are absent.",
    ),
    "history.unavailable": (
        "De historie is (nog) niet beschikbaar op deze gateway.",
        "History is not available on this gateway (yet).",
    ),
    "history.retention": (
        "Bewaard: {retention}, maximaal {count} waarden.",
        "Kept: {retention}, at most {count} values.",
    ),
    "history.count": ("{count} standen.", "{count} readings."),
    "res.5m": ("5 minuten", "5 minutes"),
    "res.15m": ("15 minuten", "15 minutes"),
    "res.1h": ("uur", "hour"),
    "res.1d": ("dag", "day"),
    "res.1M": ("maand", "month"),
    # devices
    "devices.title": ("Apparaten en toegang", "Devices and access"),
    "devices.pending": ("Wachtende verzoeken", "Waiting requests"),
    "devices.pending.none": ("Er wachten geen verzoeken.", "No requests are waiting."),
    "devices.tokens": ("Gekoppelde apparaten", "Connected devices"),
    "devices.tokens.none": ("Er zijn geen apparaten gekoppeld.", "No devices are connected."),
    "devices.sessions": ("Ingelogde browsers", "Logged-in browsers"),
    "devices.name": ("Naam", "Name"),
    "devices.uuid": ("UUID", "UUID"),
    "devices.profiles": ("Dataprofielen", "Data profiles"),
    "devices.asked": ("Gevraagd", "Asked for"),
    "devices.since": ("Sinds", "Since"),
    "devices.expires": ("Geldig tot", "Valid until"),
    "devices.last_used": ("Laatst gebruikt", "Last used"),
    "devices.never": ("nooit", "never"),
    "devices.kind": ("Soort", "Kind"),
    "devices.kind.token": ("API-token", "API token"),
    "devices.kind.login": ("Inloggen", "Login"),
    "devices.kind.elevation": ("Beheertoegang", "Admin access"),
    "devices.code": ("code {code}", "code {code}"),
    "devices.expires_in": ("nog {left}", "{left} left"),
    "devices.denied": ("geweigerd", "denied"),
    "devices.approve": ("Goedkeuren", "Approve"),
    "devices.deny": ("Weigeren", "Deny"),
    "devices.save": ("Profielen opslaan", "Save profiles"),
    "devices.change": ("Profielen wijzigen", "Change profiles"),
    "devices.revoke": ("Ontkoppelen", "Remove access"),
    "devices.revoke.session": ("Uitloggen op die browser", "Log that browser out"),
    "devices.this": ("deze browser", "this browser"),
    "devices.grant": ("Toe te kennen profielen", "Profiles to grant"),
    "devices.changed": (
        "Er zijn nieuwe verzoeken of wijzigingen.",
        "There are new requests or changes.",
    ),
    "devices.reload": ("Vernieuwen", "Reload"),
    "done.approved": ("Het verzoek is goedgekeurd.", "The request was approved."),
    "done.denied": ("Het verzoek is geweigerd.", "The request was denied."),
    "done.profiles": ("De profielen zijn gewijzigd.", "The profiles were changed."),
    "done.revoked": ("De toegang is ingetrokken.", "Access was revoked."),
    "done.session": ("Die browser is uitgelogd.", "That browser was logged out."),
    "done.elevation": (
        "Bevestig het verzoek om beheertoegang op de meter.",
        "Confirm the request for admin access on the meter.",
    ),
    "done.unelevated": ("Beheertoegang is beëindigd.", "Admin access has ended."),
    # comlog
    "comlog.title": ("Comlog", "Comlog"),
    "comlog.intro": (
        "Elke toegang tot de gegevens van uw meter, met het tijdstip (§2.2). Gebruik van de API "
        "is per apparaat per uur samengevat, geweigerde verzoeken per adres per minuut.",
        "Every access to your meter's data, with its time (§2.2). Use of the API is summarised "
        "per device per hour, refused requests per address per minute.",
    ),
    "comlog.t": ("Tijd", "Time"),
    "comlog.event": ("Gebeurtenis", "Event"),
    "comlog.device": ("Apparaat", "Device"),
    "comlog.detail": ("Details", "Details"),
    "comlog.none": ("Het comlog is leeg.", "The comlog is empty."),
    "comlog.uses": ("{count}× gebruikt, laatst {last}", "used {count}×, last {last}"),
    "comlog.times": ("{count}×, laatst {last}", "{count}×, last {last}"),
    "comlog.unavailable": (
        "Het comlog is (nog) niet beschikbaar op deze gateway.",
        "The comlog is not available on this gateway (yet).",
    ),
    # privacy (§11, §12)
    "privacy.title": ("Privacy", "Privacy"),
    "privacy.data": (
        "Gegevens over uw energieverbruik zeggen iets over uw huishouden: het zijn "
        "persoonsgegevens. Alleen apparaten die u zelf goedkeurt krijgen toegang, en alleen tot "
        "de dataprofielen die u toekent. Onder Apparaten ziet en wijzigt u wie toegang heeft; "
        "het comlog toont elke toegang.",
        "Data about your energy use say something about your household: they are personal "
        "data. Only devices you approve get access, and only to the data profiles you grant. "
        "Under Devices you see and change who has access; the comlog shows every access.",
    ),
    "privacy.off": (
        "Is de meter bereikbaar voor anderen? Dan kunt u de netbeheerder vragen de "
        "X1-interface uit te schakelen (§12.3).",
        "Can others reach the meter? Then you can ask your grid operator to switch the X1 "
        "interface off (§12.3).",
    ),
    "privacy.block.title": ("Historie blokkeren", "Block history"),
    "privacy.block.what": (
        "Gaat u verhuizen, of wilt u om een andere reden dat niemand uw eerdere verbruik nog "
        "kan zien? Blokkeer dan de historie (§12.1).",
        "Moving house, or do you for any other reason want nobody to see your past use? Then "
        "block the history (§12.1).",
    ),
    "privacy.block.effects": (
        "Alle meetgegevens van vóór dit moment zijn daarna niet meer te zien via X1: niet in "
        "dit portaal, niet via de API en niet als download.|Alle gekoppelde apparaten en "
        "ingelogde browsers verliezen hun toegang, ook deze browser.|Vanaf dat moment bouwt de "
        "meter nieuwe historie op.|De meter kan gegevens langer bewaren voor de taken van de "
        "netbeheerder; blokkeren is iets anders dan wissen.",
        "All readings from before this moment can no longer be seen through X1: not in this "
        "portal, not through the API and not as a download.|Every connected device and "
        "logged-in browser loses its access, this browser too.|From that moment on the meter "
        "builds new history.|The meter may keep data longer for the grid operator's tasks; "
        "blocking is not the same as erasing.",
    ),
    "privacy.block.undo": ("Dit kan niet ongedaan worden gemaakt.", "This cannot be undone."),
    "privacy.block.confirm": (
        "Ik begrijp dat het blokkeren van de historie niet ongedaan kan worden gemaakt",
        "I understand that blocking history cannot be undone",
    ),
    "privacy.block.button": ("Historie blokkeren", "Block history"),
    "privacy.block.dialog": (
        "Weet u het zeker? Alle historie van vóór nu wordt onzichtbaar en alle toegang wordt "
        "ingetrokken. Dit kan niet ongedaan worden gemaakt.",
        "Are you sure? All history from before now becomes invisible and all access is "
        "revoked. This cannot be undone.",
    ),
    "privacy.block.yes": ("Ja, historie blokkeren", "Yes, block history"),
    "privacy.block.no": ("Annuleren", "Cancel"),
    "privacy.block.unconfirmed": (
        "Vink eerst aan dat u begrijpt dat dit niet ongedaan kan worden gemaakt.",
        "First tick the box to say you understand this cannot be undone.",
    ),
    "privacy.blocked_at": ("De historie is geblokkeerd op {at}.", "History was blocked at {at}."),
    # API documentation
    "api.title": ("API-documentatie", "API documentation"),
    "api.intro": (
        "De X1-API van deze gateway, gelezen uit {link}. Apparaten vragen een token aan met "
        "POST /api/tokens/requests; u keurt het goed op de meter of onder Apparaten.",
        "This gateway's X1 API, read from {link}. Devices ask for a token with "
        "POST /api/tokens/requests; you approve it on the meter or under Devices.",
    ),
    "api.contents": ("Inhoud", "Contents"),
    "api.parameters": ("Parameters", "Parameters"),
    "api.body": ("Inhoud van het verzoek", "Request body"),
    "api.responses": ("Antwoorden", "Responses"),
    "api.closes": ("Sluitcodes van de WebSocket", "WebSocket close codes"),
    "api.messages": ("Berichten", "Messages"),
    "api.auth": (
        "Vereist een token (Authorization: Bearer)",
        "Needs a token (Authorization: Bearer)",
    ),
    "api.noauth": ("Zonder token", "No token needed"),
    "api.session": (
        "Voor het portaal: een ingelogde browser (sessiecookie)",
        "For the portal: a logged-in browser (session cookie)",
    ),
    "api.name": ("Naam", "Name"),
    "api.in": ("In", "In"),
    "api.required": ("Verplicht", "Required"),
    "api.yes": ("ja", "yes"),
    "api.no": ("nee", "no"),
    "api.type": ("Type", "Type"),
    "api.description": ("Beschrijving", "Description"),
    "api.status": ("Status", "Status"),
    "api.schemas": ("Schema's", "Schemas"),
    "api.field": ("Veld", "Field"),
    "api.code": ("Code", "Code"),
    # errors and states
    "error.title": ("Er ging iets mis", "Something went wrong"),
    "error.404": ("Deze pagina bestaat niet.", "This page does not exist."),
    "error.csrf": (
        "Dit formulier is verlopen of kwam niet van deze pagina. Open de pagina opnieuw en "
        "probeer het nog eens.",
        "This form expired or did not come from this page. Open the page again and retry.",
    ),
    "error.back": ("Terug naar het overzicht", "Back to the overview"),
    "disabled.title": ("X1 is uitgeschakeld", "X1 is switched off"),
    "disabled.text": (
        "De netbeheerder heeft de X1-interface uitgeschakeld (§12.3). Er zijn geen meetgegevens "
        "beschikbaar. Neem contact op met uw netbeheerder om hem weer aan te zetten.",
        "The grid operator has switched the X1 interface off (§12.3). No readings are "
        "available. Contact your grid operator to switch it back on.",
    ),
}
"""Every text of the portal: key → (Dutch, English)."""

SHORT_NAMES: dict[str, tuple[str, str]] = {
    "1.8.1": ("Afname tarief 1", "Import tariff 1"),
    "1.8.2": ("Afname tarief 2", "Import tariff 2"),
    "2.8.1": ("Teruglevering tarief 1", "Export tariff 1"),
    "2.8.2": ("Teruglevering tarief 2", "Export tariff 2"),
    "24.2.1": ("Gas", "Gas"),
    "96.7.21": ("Stroomonderbrekingen", "Power failures"),
    "96.7.9": ("Lange stroomonderbrekingen", "Long power failures"),
    "32.32.0": ("Spanningsdips L1", "Voltage sags L1"),
    "52.32.0": ("Spanningsdips L2", "Voltage sags L2"),
    "72.32.0": ("Spanningsdips L3", "Voltage sags L3"),
    "32.36.0": ("Spanningspieken L1", "Voltage swells L1"),
    "52.36.0": ("Spanningspieken L2", "Voltage swells L2"),
    "72.36.0": ("Spanningspieken L3", "Voltage swells L3"),
}
"""Short names of the historic objects (by value groups C.D.E) for tables and charts."""


def short_name(code: str, lang: str) -> str | None:
    """``Import tariff 1`` for ``1-0:1.8.1.255``; None for an object without one."""
    groups = code.split(":", 1)[-1].rsplit(".", 1)[0]
    names = SHORT_NAMES.get(groups)
    return names[LANGUAGES.index(lang)] if names else None


EVENTS: dict[str, tuple[str, str]] = {
    "token-requested": ("Token aangevraagd", "Token requested"),
    "token-approved": ("Token goedgekeurd", "Token approved"),
    "token-denied": ("Token geweigerd", "Token denied"),
    "token-expired": ("Token verlopen", "Token expired"),
    "token-revoked": ("Toegang ingetrokken", "Access revoked"),
    "profiles-changed": ("Profielen gewijzigd", "Profiles changed"),
    "login-requested": ("Inlogverzoek", "Login requested"),
    "login-approved": ("Inloggen goedgekeurd", "Login approved"),
    "login-denied": ("Inloggen geweigerd", "Login denied"),
    "logout": ("Uitgelogd", "Logged out"),
    "history-blocked": ("Historie geblokkeerd", "History blocked"),
    "x1-disabled": ("X1 uitgeschakeld", "X1 switched off"),
    "x1-enabled": ("X1 ingeschakeld", "X1 switched on"),
    "operator-read": ("Uitgelezen door netbeheerder", "Read by the grid operator"),
    "api-use": ("API-gebruik", "API use"),
    "websocket-use": ("WebSocket-gebruik", "WebSocket use"),
    "elevation-requested": ("Beheertoegang gevraagd", "Admin access requested"),
    "elevation-approved": ("Beheertoegang bevestigd", "Admin access confirmed"),
    "elevation-denied": ("Beheertoegang geweigerd", "Admin access denied"),
    "session-revoked": ("Browser uitgelogd", "Browser logged out"),
    "admin-action": ("Beheeractie", "Admin action"),
    "unauthorized": ("Geweigerd: geen geldig token", "Refused: no valid token"),
    "request-refused": ("Verzoek geweigerd", "Request refused"),
}
"""Comlog event names in both languages (others are shown as they are)."""


def event_name(kind: str, lang: str) -> str:
    names = EVENTS.get(kind)
    return names[LANGUAGES.index(lang)] if names else kind
