"""``x1p1 doctor``: examine a gateway and say, one line per item, whether relaying works.

A gateway from another vendor bends ``docs/x1-api.md`` somewhere (X1 §5.1.2 and §8 leave
the wire format "for a later version"). The doctor looks at everything the converter
depends on, in the order the converter meets it, and gives each item a verdict:

- ``ok``: as the contract says;
- ``tolerated``: not as the contract says, but the converter copes (and how);
- ``blocks relaying``: the converter cannot relay; the line names the setting that fixes
  it (``fix``: a config key of ``docs/config.example.toml`` or a command), if one does;
- ``info``: a fact for the bug report (the chain, the shape of an answer).

The items: the mDNS records seen (§4.3.3) and the addresses tried; the TLS version and
cipher (§4.1.4) and the chain, with the X.509-strict checks it fails (§10.1); the clock
skew from the ``Date`` header; each endpoint tried with its status and the shape of its
JSON answer (keys and types, never values); with a saved token, the legacy-P1 stream
(§6.2.7, §8.2) with a framing verdict on the telegrams (message type, line ends, CRC
form, size, interval) and the realtime stream (§8.2). A token request (§5.1.2) shows on
the customer's meter, so it is made only when asked (``--request``), with a uuid of its
own so that denying it costs this installation nothing (§5.1.7).

The endpoints are the ones ``x1p1 pair`` and ``x1p1 run`` call: the API base from
``--api-base`` (the config's ``api_base``), a ``--gateway`` URL's path, the saved
pairing's base, or the mDNS TXT ``api=``, and the ``token_requests_path`` and
``legacy_p1_path`` overrides (:meth:`x1p1.x1.endpoints.ApiPaths.resolve`, the one
resolution; docs/config.example.toml).

What the report never holds: a token, a request id, a reading, or a serial number (an
equipment id) beyond its last 4 characters. Every text from the gateway passes
:meth:`Redactor.clean`, that is the one sanitizer :func:`x1p1.x1.readers.printable`
(control characters escaped, the length capped), and the redaction of secrets.

:class:`DoctorReport` is the value object: it renders text and JSON and parses its JSON.
:func:`examine` does the I/O.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import http.client
import json
import re
import socket
import ssl
import time
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from x1p1.converter.certinfo import CertificateInfo, pem_certificates
from x1p1.converter.config import GatewayAddress
from x1p1.converter.state import SavedPairing, load_pairing
from x1p1.converter.tls import (
    TLS_VERSION_SENTENCE,
    AddressedHTTPS,
    converter_context,
    legacy_version,
)
from x1p1.exceptions import ConfigError, GatewayError, NotPaired, X1P1Error
from x1p1.p1.reader import InvalidTelegram, TelegramReader, ValidTelegram
from x1p1.x1 import obis
from x1p1.x1.endpoints import ApiPaths
from x1p1.x1.profiles import Profile
from x1p1.x1.readers import printable
from x1p1.x1.realtime import BUILD_PROFILES

__all__ = [
    "DoctorOptions",
    "DoctorReport",
    "Finding",
    "Redactor",
    "Verdict",
    "examine",
    "json_shape",
]

_MAX_BODY = 64 * 1024
_MAX_MESSAGE = 64 * 1024
"""The converter's own cap on a stream message (``StreamSettings.max_message``)."""
_TEXT_CAP = 300
_LINE_CAP = 2000
"""A finding's whole line (our words around cleaned gateway text) is capped here."""
_SKEW_OK = 60.0
_REALTIME_OBIS = obis.lookup("1-0:1.7.0").obj.code
"""Power delivered (X1 Table 4), from the registry: in ``E-REALTIME``; the realtime probe
subscribes to it."""


class Verdict(enum.StrEnum):
    OK = "ok"
    TOLERATED = "tolerated"
    BLOCKS = "blocks relaying"
    INFO = "info"


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``topic`` (what was looked at), a verdict, one sentence,
    and the setting that fixes it when it does not work."""

    topic: str
    verdict: Verdict
    text: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "verdict": self.verdict.value,
            "text": self.text,
            "fix": self.fix,
        }

    @classmethod
    def parse(cls, body: object) -> Finding:
        if not isinstance(body, dict):
            raise ValueError("a finding is a JSON object")
        fix = body.get("fix")
        return cls(
            str(body["topic"]),
            Verdict(body["verdict"]),
            str(body["text"]),
            None if fix is None else str(fix),
        )

    def line(self, width: int) -> str:
        fix = f" [fix: {self.fix}]" if self.fix else ""
        return f"{self.verdict.value:<16} {self.topic:<{width}}  {self.text}{fix}"


@dataclass(frozen=True)
class DoctorReport:
    """What ``x1p1 doctor`` found about one gateway."""

    gateway: str
    findings: tuple[Finding, ...]

    @property
    def relaying_works(self) -> bool:
        """Nothing blocks relaying (and the gateway was reached at all)."""
        return bool(self.findings) and all(f.verdict is not Verdict.BLOCKS for f in self.findings)

    @property
    def exit_code(self) -> int:
        """0 when relaying would work, else 1 (``x1p1 doctor --help``)."""
        return 0 if self.relaying_works else 1

    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.verdict is Verdict.BLOCKS)

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "relaying_works": self.relaying_works,
            "findings": [f.to_json() for f in self.findings],
        }

    @classmethod
    def parse(cls, body: object) -> DoctorReport:
        if not isinstance(body, dict) or not isinstance(body.get("findings"), list):
            raise ValueError("a doctor report is a JSON object with findings")
        return cls(str(body["gateway"]), tuple(Finding.parse(f) for f in body["findings"]))

    def render(self) -> str:
        """The text for a terminal or a bug report: a title, one line per finding, a verdict."""
        width = max((len(f.topic) for f in self.findings), default=8)
        lines = [f"x1p1 doctor: {self.gateway}", ""]
        lines += [f.line(width) for f in self.findings]
        lines.append("")
        blocking = self.blocking()
        if self.relaying_works:
            lines.append("Relaying would work.")
        elif blocking:
            count = (
                "1 item above blocks"
                if len(blocking) == 1
                else f"{len(blocking)} items above block"
            )
            lines.append(f"Relaying would not work: {count} it.")
        else:
            lines.append("Relaying would not work: nothing could be checked.")
        return "\n".join(lines)


# --- keeping secrets out ------------------------------------------------------------------

_SERIAL_LIKE = re.compile(r"(?<![\w…])(?=(?:[A-Z]*[0-9]){6})[0-9A-Z]{8,}(?!\w)")


@dataclass
class Redactor:
    """Masks what must never appear (tokens, request ids, serials) and cleans gateway text."""

    _secrets: dict[str, str] = field(default_factory=dict)

    def secret(self, value: str | None, label: str) -> None:
        """Never show ``value``; show ``label`` instead."""
        if value and len(value) >= 4:
            self._secrets[value] = label

    def serial(self, value: str | None) -> None:
        """An equipment id: shown as its last 4 characters (and its P1 hex form too)."""
        if not value or len(value) < 5:
            return
        masked = f"…{value[-4:]}"
        self._secrets[value] = masked
        self._secrets[value.encode("utf-8", "replace").hex()] = masked
        self._secrets[value.encode("utf-8", "replace").hex().upper()] = masked
        if re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", value):  # the telegram's hex form
            try:
                decoded = bytes.fromhex(value).decode("ascii")
            except ValueError:
                return
            if decoded.isprintable() and len(decoded) >= 5:
                self._secrets[decoded] = f"…{decoded[-4:]}"

    def clean(self, text: str) -> str:
        """One line of gateway text, through the one sanitizer
        (:func:`~x1p1.x1.readers.printable`): control characters escaped, at most 300
        characters (the last one ``…`` when cut)."""
        return printable(text, _TEXT_CAP - 1)

    def apply(self, text: str) -> str:
        """``text`` with every known secret masked, and anything that looks like an
        equipment id (8 or more capitals and digits, 6 or more of them digits: a vendor
        may put the serial in a certificate's subject) cut to its last 4 characters."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, self._secrets[secret])
        return _SERIAL_LIKE.sub(lambda m: f"…{m.group()[-4:]}", text)


def json_shape(value: object, depth: int = 0) -> str:
    """The keys and types of a JSON value, never its values: ``{status: string, …}``."""
    if depth > 4:
        return "…"
    if isinstance(value, dict):
        keys = sorted(value, key=str)
        parts = [f"{k}: {json_shape(value[k], depth + 1)}" for k in keys[:24]]
        if len(keys) > 24:
            parts.append(f"… {len(keys) - 24} more")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list):
        shapes = list(dict.fromkeys(json_shape(item, depth + 1) for item in value))
        return "[" + " | ".join(shapes[:3]) + (" | …" if len(shapes) > 3 else "") + "]"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


# --- what to examine ----------------------------------------------------------------------


@dataclass
class DoctorOptions:
    """``x1p1 doctor``'s options, and the knobs tests turn."""

    state_dir: Path
    gateway: GatewayAddress | None = None
    ca: Path | None = None
    tls_name: str | None = None
    request: bool = False
    telegrams: int = 4
    """Listen to the legacy-P1 stream for this many telegrams …"""
    listen: float = 10.0
    """… or this many seconds, whichever comes first."""
    timeout: float = 5.0
    mdns_timeout: float = 3.0
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    request_name: str = "x1p1 doctor test: deny it"
    api_base: str | None = None
    """``--api-base``, the config's ``api_base`` (None: as ``pair`` and ``run`` find it)."""
    token_requests_path: str | None = None
    legacy_p1_path: str | None = None
    source: str = "auto"
    """The config's ``source``: whether realtime values may stand in for legacy P1."""

    def paths(self, *, saved_base: str | None = None, advertised: str | None = None) -> ApiPaths:
        """The endpoints, resolved as ``x1p1 pair`` and ``x1p1 run`` resolve them."""
        return ApiPaths.resolve(
            api_base=self.api_base,
            url_base=self.gateway.api_base if self.gateway is not None else None,
            saved_base=saved_base,
            advertised=advertised,
            token_requests_path=self.token_requests_path,
            legacy_p1_path=self.legacy_p1_path,
        )


@dataclass
class _Where:
    tls_name: str
    port: int
    addresses: tuple[str, ...]
    label: str


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: Any
    raw_json: bool


class _Examination:
    def __init__(self, options: DoctorOptions) -> None:
        self.options = options
        self.findings: list[Finding] = []
        self.redact = Redactor()
        self.pairing: SavedPairing | None = None
        self.context: ssl.SSLContext | None = None
        self.address: str | None = None
        self.where: _Where | None = None
        self.pinned = False
        self.skew_seen = False
        self.paths = ApiPaths()
        self.granted: frozenset[Profile] | None = None
        """The token's profiles, as ``GET /api/token`` (or else the saved pairing) says."""
        self.legacy_refused = False
        """Legacy P1 was refused (403, 404) where realtime values can stand in."""

    def add(self, topic: str, verdict: Verdict, text: str, fix: str | None = None) -> None:
        self.findings.append(Finding(topic, verdict, text, fix))

    def report(self) -> DoctorReport:
        r = self.redact
        gateway = self.options.gateway
        label = self.where.label if self.where else gateway.netloc if gateway else "no gateway"
        label = r.apply(r.clean(label))
        findings = tuple(
            # gateway text was cleaned where it came in; this pass keeps every line one line
            Finding(f.topic, f.verdict, printable(r.apply(f.text), _LINE_CAP), f.fix)
            for f in self.findings
        )
        return DoctorReport(label, findings)

    # -- the saved pairing ----------------------------------------------------------------

    def load_pairing(self) -> None:
        try:
            self.pairing = load_pairing(self.options.state_dir)
        except NotPaired:
            self.add(
                "pairing",
                Verdict.INFO,
                f"no saved token in {self.options.state_dir}: the streams are not opened "
                "(run `x1p1 pair`, or `x1p1 doctor --request` to try a token request)",
            )
            return
        except X1P1Error as exc:
            self.add(
                "pairing", Verdict.BLOCKS, f"the saved pairing cannot be read: {exc}", "x1p1 pair"
            )
            return
        p = self.pairing
        self.redact.secret(p.token, "<token>")
        self.redact.serial(p.serial)
        self.add(
            "pairing",
            Verdict.INFO,
            f"a saved token for {p.describe()}, profiles {', '.join(sorted(p.profiles)) or 'none'}",
        )

    # -- where the gateway is ---------------------------------------------------------------

    async def locate(self) -> bool:
        o, p = self.options, self.pairing
        if o.gateway is not None:
            self.add("mdns", Verdict.INFO, "not asked: --gateway names the gateway")
            host, port = o.gateway.host, o.gateway.port
            saved = p.api_base if p is not None else None
            if _is_address(host):
                name = o.tls_name or (p.host_name if p is not None else host)
                self.where = _Where(name, port, (host,), o.gateway.netloc)
                self._use(o.paths(saved_base=saved))
            else:
                from x1p1.converter.pairing import resolve_endpoint

                try:  # the system's resolver, then mDNS for a .local name, as `pair` does
                    endpoint = await resolve_endpoint(
                        o.gateway,
                        o.mdns_timeout,
                        api_base=o.api_base,
                        token_requests_path=o.token_requests_path,
                        saved_base=saved,
                        legacy_p1_path=o.legacy_p1_path,
                    )
                except X1P1Error as exc:
                    self.add("address", Verdict.BLOCKS, self.redact.clean(str(exc)), "gateway")
                    return False
                self.redact.serial(endpoint.serial)
                addresses = endpoint.connect_hosts
                self.where = _Where(o.tls_name or host, port, addresses, o.gateway.netloc)
                self._use(endpoint.paths)
            return True
        found = await self._browse()
        if p is not None:
            addresses = (p.address,) if p.address else ()
            advertised: str | None = None
            for g in found:
                if g.host_name.lower() == p.host_name.lower() or (
                    p.serial and g.serial == p.serial
                ):
                    addresses = tuple(dict.fromkeys((*addresses, *g.addresses)))
                    advertised = advertised or g.api
            if not addresses:
                addresses = (p.host_name,)
            self.where = _Where(o.tls_name or p.host_name, p.port, addresses, p.describe())
            self._use(o.paths(saved_base=p.api_base, advertised=advertised))
            return True
        if not found:
            self.add(
                "gateway",
                Verdict.BLOCKS,
                "no gateway found: none answered on mDNS and none is saved or given",
                "gateway",
            )
            return False
        g = found[0]
        label = f"{g.host_name}:{g.port}"
        self.where = _Where(o.tls_name or g.host_name, g.port, _ipv4_first(g.addresses), label)
        self._use(o.paths(advertised=g.api))
        return True

    def _use(self, paths: ApiPaths) -> None:
        """The endpoints to try, in one line of the report."""
        self.paths = paths
        text = f"API base {paths.api_base or '/'}"
        if paths.token_requests_path is not None:
            text += f"; token requests at {paths.token_requests_path}"
        if paths.legacy_p1_path is not None:
            text += f"; legacy P1 at {paths.legacy_p1_path}"
        self.add("endpoints", Verdict.INFO, self.redact.clean(text))

    async def _browse(self) -> list[Any]:
        from x1p1.converter import discovery

        try:
            found = await discovery.discover(self.options.mdns_timeout)
        except X1P1Error as exc:
            self.add("mdns", Verdict.INFO, f"mDNS could not be used: {exc}")
            return []
        if not found:
            self.add(
                "mdns",
                Verdict.INFO,
                f"no gateway answered on mDNS within {self.options.mdns_timeout:g} s",
            )
        for g in found:
            self.redact.serial(g.serial)
            txt = f"api={g.api} version={g.version or '?'} serial={g.serial or '?'}"
            how = "service" if g.service_name else "host name only (no service record)"
            addresses = ", ".join(g.addresses) or "no address"
            verdict = Verdict.OK if g.service_name and g.addresses else Verdict.TOLERATED
            if g.api is not None and ApiPaths.advertised_base(g.api) is None:
                verdict = Verdict.TOLERATED
                txt += " (api= is not a path: ignored)"
            self.add(
                "mdns",
                verdict,
                self.redact.clean(f"{g.host_name}:{g.port} at {addresses} ({how}); TXT {txt}"),
            )
        return found

    def connect(self) -> socket.socket | None:
        """The first address that accepts a TCP connection (each one tried is reported)."""
        assert self.where is not None
        w = self.where
        for address in w.addresses:
            try:
                sock = socket.create_connection((address, w.port), self.options.timeout)
            except OSError as exc:
                why = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
                self.add("address", Verdict.INFO, f"{address}:{w.port}: {why}")
                continue
            self.add("address", Verdict.OK, f"{address}:{w.port} accepts connections")
            self.address = address
            return sock
        self.add(
            "address",
            Verdict.BLOCKS,
            f"no address of the gateway accepts connections on port {w.port}",
            "gateway",
        )
        return None

    # -- TLS --------------------------------------------------------------------------------

    def tls(self, sock: socket.socket) -> bool:
        """The converter's own handshake, then a look at what the gateway offers."""
        assert self.where is not None and self.address is not None
        o, w = self.options, self.where
        ca_pem = self.pairing.ca_pem if self.pairing is not None else None
        self.pinned = o.ca is not None or bool(ca_pem)
        ca_label = (
            f"the CA in {o.ca}"
            if o.ca is not None
            else "the CA saved when pairing"
            if ca_pem
            else "the system's trust store"
        )
        try:
            self.context = converter_context(o.ca, ca_pem)
        except ConfigError as exc:
            sock.close()
            self.add("certificate", Verdict.BLOCKS, str(exc), "ca")
            return False
        error: OSError | None = None
        version = cipher = None
        chain: list[bytes] = []
        try:
            with self.context.wrap_socket(sock, server_hostname=w.tls_name) as tls:
                version, cipher, chain = tls.version(), tls.cipher(), _peer_chain(tls)
        except (OSError, ssl.SSLError) as exc:
            error = exc
        finally:
            sock.close()
        if error is not None:
            verifying = isinstance(error, ssl.SSLCertVerificationError)
            seen = (
                None if verifying else legacy_version(self.address, w.port, w.tls_name, o.timeout)
            )
            offered = self._look(w.tls_name)
            version, cipher, chain = offered or (None, None, [])
            if seen is not None:
                self.add("tls", Verdict.BLOCKS, f"{seen} only: {TLS_VERSION_SENTENCE}")
                self._chain(chain)
                return False
        if version is not None:
            self.add(
                "tls",
                Verdict.OK if version == "TLSv1.3" else Verdict.BLOCKS,
                f"{version}" + (f", cipher {cipher[0]} ({cipher[2]} bits)" if cipher else ""),
            )
        if isinstance(error, ssl.SSLCertVerificationError):
            self._certificate_error(error, ca_label, chain)
            return False
        if error is not None:
            reason = getattr(error, "reason", None) or error.strerror or str(error)
            self.add(
                "tls",
                Verdict.BLOCKS,
                self.redact.clean(f"the TLS handshake failed ({reason})"),
                "gateway",
            )
            return False
        infos = self._chain(chain)
        strict = sorted({fail for info in infos for fail in info.strict_failures()})
        if strict and self.pinned:
            self.add(
                "certificate",
                Verdict.TOLERATED,
                f"verifies for {w.tls_name} against {ca_label}, which the converter trusts as "
                f"pinned; it is not X.509-strict ({'; '.join(strict)})",
            )
        else:
            self.add("certificate", Verdict.OK, f"verifies for {w.tls_name} against {ca_label}")
        return True

    def _look(self, name: str) -> tuple[str | None, Any, list[bytes]] | None:
        """A handshake that checks nothing, to see the version, cipher and chain offered."""
        assert self.where is not None and self.address is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(
                (self.address, self.where.port), self.options.timeout
            ) as raw:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    return tls.version(), tls.cipher(), _peer_chain(tls)
        except (OSError, ValueError):
            return None

    def _certificate_error(
        self, error: ssl.SSLCertVerificationError, ca_label: str, chain: list[bytes]
    ) -> None:
        assert self.where is not None
        detail = self.redact.clean(error.verify_message or str(error)).rstrip(".")
        infos = self._chain(chain)
        name = self.where.tls_name
        lowered = detail.lower()
        if "hostname" in lowered or "ip address mismatch" in lowered:
            names = infos[0].names() if infos else "unknown names"
            self.add(
                "certificate",
                Verdict.BLOCKS,
                f"not valid for {name} ({detail}); it names {names}: connect by address and "
                "verify one of those names",
                "tls_name",
            )
        elif "expired" in lowered or "not yet valid" in lowered:
            self.add(
                "certificate",
                Verdict.BLOCKS,
                f"{detail}: check this machine's clock (timedatectl) and the gateway's",
            )
        else:
            strict = sorted({f for info in infos for f in info.strict_failures()})
            hint = f"; not X.509-strict ({'; '.join(strict)})" if strict and not self.pinned else ""
            self.add(
                "certificate",
                Verdict.BLOCKS,
                f"does not verify against {ca_label} ({detail}){hint}: give the gateway's root "
                "certificate with --ca",
                "ca",
            )

    def _chain(self, chain: list[bytes]) -> list[CertificateInfo]:
        """One line per certificate the gateway sent, and the pinned root it chains to."""
        infos: list[CertificateInfo] = []
        for der in chain:
            try:
                infos.append(CertificateInfo.parse(der))
            except GatewayError as exc:
                self.add("chain", Verdict.INFO, self.redact.clean(str(exc)))
        labels = [f"chain[{i}]" for i in range(len(infos))]
        if infos and not infos[-1].self_issued:
            for root in self._pinned_roots():
                if root.subject == infos[-1].issuer:
                    infos.append(root)
                    labels.append("pinned CA")
                    break
        now = self.options.now()
        for label, info in zip(labels, infos, strict=True):
            strict = info.strict_failures()
            problem = info.validity_problem(now)
            text = (
                f"{info.subject or '(empty subject)'}; issuer {info.issuer}; {info.key_type}; "
                f"valid {_day(info.not_before)} to {_day(info.not_after)}"
                f"{f' ({problem})' if problem else ''}; "
                + (f"not X.509-strict: {', '.join(strict)}" if strict else "X.509-strict")
                + f"; SAN {info.names()}"
            )
            self.add(label, Verdict.INFO, self.redact.clean(text))
        return infos

    def _pinned_roots(self) -> list[CertificateInfo]:
        pem: bytes | str | None = None
        if self.options.ca is not None:
            try:
                pem = self.options.ca.read_bytes()
            except OSError:
                pem = None
        elif self.pairing is not None:
            pem = self.pairing.ca_pem
        roots = []
        for der in pem_certificates(pem or b""):
            try:
                roots.append(CertificateInfo.parse(der))
            except GatewayError:
                continue
        return roots

    # -- HTTP ---------------------------------------------------------------------------------

    def http(self, method: str, path: str, token: str | None = None, body: object = None) -> _Reply:
        assert self.where is not None and self.address is not None and self.context is not None
        w = self.where
        conn = AddressedHTTPS(w.tls_name, w.port, self.address, self.context, self.options.timeout)
        headers = {"Accept": "application/json", "User-Agent": "x1p1-doctor"}
        payload = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read(_MAX_BODY + 1)
            received = self.options.now()
            reply_headers = {k.title(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        self._skew(reply_headers.get("Date"), received)
        try:
            parsed: Any = json.loads(data) if data and len(data) <= _MAX_BODY else None
            ok = parsed is not None or not data
        except ValueError:
            parsed, ok = None, False
        return _Reply(response.status, reply_headers, parsed, ok)

    def _skew(self, date: str | None, received: datetime) -> None:
        if self.skew_seen:
            return
        self.skew_seen = True
        if date is None:
            self.add("clock", Verdict.TOLERATED, "no Date header: the gateway's clock is unknown")
            return
        try:
            theirs = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            theirs = None
        if theirs is None or theirs.tzinfo is None:
            self.add(
                "clock",
                Verdict.TOLERATED,
                self.redact.clean(f"a Date header that is not an HTTP date: {date!r}"),
            )
            return
        skew = (theirs - received).total_seconds()
        ahead = "ahead of" if skew > 0 else "behind"
        text = f"the gateway's clock is {_duration(abs(skew))} {ahead} this machine's"
        if abs(skew) <= _SKEW_OK:
            self.add(
                "clock",
                Verdict.OK,
                f"the gateway's clock is within {_SKEW_OK:.0f} s of this machine's",
            )
        else:
            self.add(
                "clock",
                Verdict.TOLERATED,
                f"{text}: relaying does not depend on it; if this machine is the one that is "
                "off, check NTP (timedatectl)",
            )

    def endpoint(
        self,
        method: str,
        path: str,
        *,
        shown: str | None = None,
        token: str | None = None,
        body: object = None,
        expect: tuple[int, ...] = (200,),
        blocks: bool = False,
        fix: str | None = None,
    ) -> _Reply | None:
        """One request, reported with its status and the shape of its answer."""
        label = f"{method} {shown or path}"
        try:
            reply = self.http(method, path, token, body)
        except (OSError, http.client.HTTPException) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            verdict = Verdict.BLOCKS if blocks else Verdict.TOLERATED
            self.add(label, verdict, self.redact.clean(f"no answer ({why})"), fix)
            return None
        if not reply.raw_json:
            shape = "not JSON"
        elif reply.body is None:
            shape = "empty"
        else:
            shape = json_shape(reply.body)
        text = self.redact.clean(f"{reply.status}; answer {shape}")
        if reply.status in expect:
            verdict = Verdict.OK if reply.raw_json else Verdict.TOLERATED
        else:
            verdict = Verdict.BLOCKS if blocks else Verdict.TOLERATED
            message = reply.body.get("message") if isinstance(reply.body, dict) else None
            if isinstance(message, str):
                text += self.redact.clean(f"; says {message!r}")
        self.add(label, verdict, text, fix if verdict is Verdict.BLOCKS else None)
        return reply

    def rest(self) -> list[str]:
        """The REST endpoints; returns the electricity meters' equipment ids (for realtime)."""
        paths = self.paths
        probe = self.endpoint("GET", paths.token, shown=f"{paths.token} (no token)", expect=(401,))
        if probe is not None and probe.status == 404:
            self.add(
                "endpoints",
                Verdict.BLOCKS,
                f"nothing answers at {paths.token}: the gateway serves its API elsewhere",
                "api_base",
            )
        if self.options.request:
            self._token_request()
        p = self.pairing
        if p is None:
            return []
        reply = self.endpoint("GET", paths.token, token=p.token, blocks=True, fix="x1p1 pair")
        if reply is not None and reply.status == 200:
            self._grant(p, reply.body)
        meters = self.endpoint("GET", paths.meters, token=p.token)
        ids: list[str] = []
        if meters is not None and isinstance(meters.body, dict):
            for meter in meters.body.get("meters") or []:
                if isinstance(meter, dict) and isinstance(meter.get("equipment_id"), str):
                    self.redact.serial(meter["equipment_id"])
                    if meter.get("type") == "electricity":
                        ids.append(meter["equipment_id"])
        return ids

    def _grant(self, p: SavedPairing, body: object) -> None:
        """What the token's profiles (X1 §5.1.6) mean for relaying, with the config's
        ``source`` (docs/realtime.md): P1 is relayed; without it E-REALTIME or PQ-REALTIME
        lets ``source = "auto"`` (or ``"realtime"``) build the telegrams."""
        from x1p1.converter.pairing import granted_profiles
        from x1p1.x1.readers import read_token_info

        listed = read_token_info(body).profiles
        granted = granted_profiles(listed, p.profiles)
        self.granted = granted
        source = self.options.source
        builds = sorted(x.value for x in granted & BUILD_PROFILES)
        if Profile.P1 in granted:
            self.add("token", Verdict.OK, "the saved token is valid and carries P1")
        elif builds:
            self.add(
                "token",
                Verdict.INFO,
                f"the saved token is valid; it lacks the P1 profile but carries "
                f"{', '.join(builds)}",
            )
        else:
            self.add(
                "token",
                Verdict.BLOCKS,
                "the token lacks the P1 profile, and E-REALTIME or PQ-REALTIME, from which "
                "telegrams could be built",
                "x1p1 pair",
            )
            return
        if source == "legacy-p1" and Profile.P1 not in granted:
            self.add(
                "source",
                Verdict.BLOCKS,
                'source = "legacy-p1" relays only legacy P1, which the token lacks; '
                '"auto" would build telegrams from realtime values (docs/realtime.md)',
                "source",
            )
        elif self.realtime_source:
            self.add(
                "source",
                Verdict.INFO if builds else Verdict.BLOCKS,
                f'source = "{source}" builds telegrams from realtime values '
                f"({', '.join(builds) or 'none granted'}; docs/realtime.md)"
                + ("" if Profile.P1 in granted else ", as the token lacks P1"),
                None if builds else "x1p1 pair",
            )

    @property
    def realtime_source(self) -> bool:
        """Whether ``x1p1 run`` would build telegrams from realtime values, not relay P1."""
        granted = self.granted
        if self.options.source == "realtime" or self.legacy_refused:
            return True
        return self._realtime_stands_in() and granted is not None and Profile.P1 not in granted

    def _realtime_stands_in(self) -> bool:
        """``source = "auto"`` with E-REALTIME or PQ-REALTIME granted: without legacy P1
        (not granted, refused, or not served) the converter builds telegrams itself."""
        granted = self.granted if self.granted is not None else frozenset()
        if self.granted is None and self.pairing is not None:
            granted = self.pairing.profiles
        return self.options.source == "auto" and bool(granted & BUILD_PROFILES)

    def _token_request(self) -> None:
        body = {
            "name": self.options.request_name,
            "uuid": str(uuid_module.uuid4()),
            "profiles": ["P1"],
        }
        paths = self.paths
        reply = self.endpoint(
            "POST", paths.token_requests, body=body, expect=(200, 201, 202), blocks=True, fix=None
        )
        if reply is None or not isinstance(reply.body, dict):
            return
        request_id = reply.body.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            return
        self.redact.secret(request_id, "<request id>")
        token = reply.body.get("token")
        self.redact.secret(token if isinstance(token, str) else None, "<token>")
        self.endpoint(
            "GET",
            paths.token_request(request_id),
            shown=f"{paths.token_requests}/<request id>",
        )
        self.add(
            "request",
            Verdict.INFO,
            f"the test request '{self.options.request_name}' now shows on the meter: deny it "
            "there, or let it expire (10 minutes, X1 §5.1.4)",
        )

    # -- the streams --------------------------------------------------------------------------

    async def legacy_p1(self) -> None:
        assert self.pairing is not None
        if self.realtime_source:
            self.add(
                "legacy-P1",
                Verdict.INFO,
                "not opened: the converter builds telegrams from realtime values",
            )
            return
        ws = await self._open(f"{self.paths.legacy_p1}?interval=1", "legacy-P1", blocks=True)
        if ws is None:
            return
        framing = _Framing()
        o = self.options
        deadline = time.monotonic() + o.listen
        closed: str | None = None
        fatal = False
        from websockets.exceptions import ConnectionClosed

        try:
            while framing.complete < o.telegrams:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    message = await asyncio.wait_for(ws.recv(), left)
                except TimeoutError:
                    break
                framing.receive(message, time.monotonic())
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            closed = f"close code {code}" if code is not None else "no close frame"
            fatal = code is not None and code >= 4000  # x1-api.md: 4401, 4403, 4429, 4503
            if exc.sent is not None and exc.sent.code == 1009:
                closed = f"a message over {_MAX_MESSAGE // 1024} KiB, the converter's limit"
                fatal = True
        finally:
            await ws.close()
        for raw in framing.equipment_ids():
            self.redact.serial(raw)
        for topic, verdict, text in framing.findings(o.listen, closed, fatal):
            self.add(topic, verdict, text, None)

    async def realtime(self, ids: list[str]) -> None:
        needed = self.realtime_source
        missing = Verdict.BLOCKS if needed else Verdict.INFO
        if not ids:
            self.add("realtime", missing, "not opened: no electricity meter listed")
            return
        base = self.paths.realtime
        path = f"{base}?equipment_id={ids[0]}&obis={_REALTIME_OBIS}&interval=1"
        ws = await self._open(path, "realtime", blocks=needed, shown=f"{base}?equipment_id=…")
        if ws is None:
            return
        from websockets.exceptions import ConnectionClosed

        try:
            message = await asyncio.wait_for(ws.recv(), self.options.timeout)
            try:
                shape = json_shape(json.loads(message))
                verdict = Verdict.OK
            except ValueError:
                shape, verdict = "not JSON", Verdict.TOLERATED
            self.add("realtime", verdict, self.redact.clean(f"a message {shape}"))
        except (TimeoutError, ConnectionClosed) as exc:
            what = "no message" if isinstance(exc, TimeoutError) else "closed"
            self.add("realtime", missing, f"{what} within {self.options.timeout:g} s")
        finally:
            await ws.close()

    async def _open(self, path: str, topic: str, *, blocks: bool, shown: str | None = None) -> Any:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus

        from x1p1 import __version__

        assert self.where is not None and self.pairing is not None and self.context is not None
        w = self.where
        host = f"[{w.tls_name}]" if ":" in w.tls_name else w.tls_name
        try:
            ws = await connect(
                f"wss://{host}:{w.port}{path}",
                host=self.address,
                port=w.port,
                ssl=self.context,
                server_hostname=w.tls_name,
                additional_headers={"Authorization": f"Bearer {self.pairing.token}"},
                user_agent_header=f"x1p1-doctor/{__version__}",
                proxy=None,
                compression=None,
                open_timeout=self.options.timeout,
                ping_interval=None,
                max_size=_MAX_MESSAGE,
                max_queue=4,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            try:
                body = json.loads(exc.response.body or b"")
                shape = json_shape(body)
            except ValueError:
                shape = "not JSON"
            text = f"GET {shown or path}: refused ({status}; answer {shape})"
            if topic == "realtime" and status == 403 and not blocks:
                text += "; the token has no *-REALTIME profile, which legacy P1 does not need"
                self.add(topic, Verdict.INFO, text)
                return None
            if topic == "legacy-P1" and status in (403, 404) and self._realtime_stands_in():
                self.legacy_refused = True
                text += (
                    '; source = "auto" builds telegrams from realtime values instead '
                    "(docs/realtime.md)"
                )
                self.add(topic, Verdict.INFO, self.redact.clean(text))
                return None
            fix = "x1p1 pair" if status in (401, 403) else None
            self.add(
                topic, Verdict.BLOCKS if blocks else Verdict.INFO, self.redact.clean(text), fix
            )
            return None
        except (OSError, TimeoutError, InvalidHandshake, ValueError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            verdict = Verdict.BLOCKS if blocks else Verdict.INFO
            self.add(topic, verdict, self.redact.clean(f"GET {shown or path}: {why}"))
            return None
        self.add(topic, Verdict.OK, f"subscribed: GET {shown or path}")
        return ws


# --- the framing verdict ----------------------------------------------------------------------

_CRC_LINE = re.compile(rb"!([^\r\n/!]{0,8})(\r?\n)?")
_SEEN_CAP = 512 * 1024


class _Framing:
    """Watches the legacy-P1 messages through the P1 core's reader (DSMR 5.0.2 P1 §6.2).

    Whether a telegram would be relayed is the reader's verdict; line ends and the CRC's
    form are read from the bytes as they arrived (at most :data:`_SEEN_CAP` of them), not
    from what the reader makes of them.
    """

    def __init__(self) -> None:
        self.reader = TelegramReader()
        self.kinds: set[str] = set()
        self.per_message: list[int] = []
        self.valid: list[bytes] = []
        self.invalid: list[InvalidTelegram] = []
        self.times: list[float] = []
        self.seen = bytearray()

    @property
    def complete(self) -> int:
        return len(self.valid) + len(self.invalid)

    def receive(self, message: bytes | str, at: float) -> None:
        """One WebSocket message (text arrives as ``str``, binary as ``bytes``)."""
        self.kinds.add("text" if isinstance(message, str) else "binary")
        data = message.encode("utf-8", "replace") if isinstance(message, str) else message
        self.seen += data[: max(0, _SEEN_CAP - len(self.seen))]
        before = self.complete
        self.reader.receive_data(data)
        for event in self.reader.events_received():
            if isinstance(event, ValidTelegram):
                self.valid.append(event.raw)
                self.times.append(at)
            elif isinstance(event, InvalidTelegram):
                self.invalid.append(event)
                self.times.append(at)
        self.per_message.append(self.complete - before)

    def equipment_ids(self) -> list[str]:
        found = []
        for raw in self.valid + [e.raw for e in self.invalid]:
            for match in re.finditer(rb"0-\d+:96\.1\.[01]\(([0-9A-Za-z]*)\)", raw):
                found.append(match.group(1).decode("ascii"))
        return found

    def findings(
        self, listen: float, closed: str | None, fatal: bool
    ) -> list[tuple[str, Verdict, str]]:
        """The framing line (and a line for a close, if the stream was closed)."""
        out: list[tuple[str, Verdict, str]] = []
        if closed and (fatal or not self.valid):
            out.append(("legacy-P1", Verdict.BLOCKS, f"the gateway closed the stream ({closed})"))
        elif closed:
            text = (
                f"the gateway closed the stream ({closed}) after {len(self.valid)} telegrams; "
                "the converter reconnects"
            )
            out.append(("legacy-P1", Verdict.TOLERATED, text))
        if not self.complete:
            out.append(("framing", Verdict.BLOCKS, f"no complete telegram within {listen:g} s"))
            return out
        raws = self.valid + [e.raw for e in self.invalid]
        notes = []
        kinds = " and ".join(sorted(self.kinds))
        if self.kinds != {"text"}:
            notes.append(f"{kinds} messages")
        if any(n > 1 for n in self.per_message):
            notes.append("several telegrams in one message")
        if any(n == 0 for n in self.per_message):
            notes.append("telegrams split over several messages")
        seen = bytes(self.seen)
        bare = seen.count(b"\n") - seen.count(b"\r\n")
        ends = "CR LF" if bare == 0 else f"{bare} bare LF"
        if bare:
            notes.append("bare LF line ends")
        crcs = set()
        for match in _CRC_LINE.finditer(seen):
            digits = match.group(1)
            if re.fullmatch(rb"[0-9A-F]{4}", digits):
                crcs.add("4 upper-case hex digits")
            elif re.fullmatch(rb"[0-9A-Fa-f]{4}", digits):
                crcs.add("lower-case hex digits")
            elif re.fullmatch(rb"[0-9A-Fa-f]{1,3}", digits):
                crcs.add(f"{len(digits)} hex digits")
            else:
                crcs.add("no CRC")
            if match and not match.group(2):
                crcs.add("no CR LF after the CRC")
        if crcs != {"4 upper-case hex digits"}:
            notes.append("CRC " + ", ".join(sorted(crcs)))
        sizes = [len(raw) for raw in raws]
        interval = ""
        if len(self.times) >= 2:
            mean = (self.times[-1] - self.times[0]) / (len(self.times) - 1)
            interval = f", one every {mean:.2f} s" if mean < 1 else f", one every {mean:.1f} s"
        facts = (
            f"{self.complete} telegrams in {kinds} messages, line ends {ends}, CRC "
            f"{', '.join(sorted(crcs))}, {min(sizes)}–{max(sizes)} bytes{interval}"
        )
        if self.invalid:
            reasons = sorted({e.reason.value for e in self.invalid})
            out.append(
                (
                    "framing",
                    Verdict.BLOCKS,
                    f"{len(self.invalid)} of {self.complete} telegrams would be dropped "
                    f"({', '.join(reasons)}): {facts}",
                )
            )
        elif notes:
            out.append(
                (
                    "framing",
                    Verdict.TOLERATED,
                    f"the converter relays them ({'; '.join(notes)}): {facts}",
                )
            )
        else:
            out.append(("framing", Verdict.OK, facts))
        return out


# --- helpers ------------------------------------------------------------------------------


def _peer_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The certificates the peer sent, leaf first, as DER.

    ``SSLSocket.get_unverified_chain`` is public from Python 3.13; 3.10–3.12 have it on
    the socket's ``_sslobj``. Without either, only the leaf.
    """
    import _ssl

    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is not None:
        try:
            chain = getter() or []
            return [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in chain]
        except (ssl.SSLError, ValueError, AttributeError):
            pass
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _ipv4_first(addresses: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(dict.fromkeys(addresses), key=lambda a: ":" in a))


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


async def examine(options: DoctorOptions) -> DoctorReport:
    """Examine the gateway as ``options`` say; never raises for what a gateway does.

    Something this module did not foresee ends the examination with a finding that says
    so (and the report up to there), never with a traceback.
    """
    exam = _Examination(options)
    try:
        await _steps(exam)
    except Exception as exc:  # noqa: BLE001 - the report is what the user needs
        why = exam.redact.clean(f"{type(exc).__name__}: {exc}")
        exam.add("doctor", Verdict.BLOCKS, f"the examination stopped early ({why})")
    return exam.report()


async def _steps(exam: _Examination) -> None:
    exam.load_pairing()
    if not await exam.locate():
        return
    sock = await asyncio.to_thread(exam.connect)
    if sock is None or not await asyncio.to_thread(exam.tls, sock):
        return
    ids = await asyncio.to_thread(exam.rest)
    if exam.pairing is not None:
        await exam.legacy_p1()
        await exam.realtime(ids)
