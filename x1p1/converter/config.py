"""The run configuration: ``/etc/x1p1/config.toml``, environment and command line.

Every option of ``x1p1 run`` (architecture.md, "The command line") can live in a TOML
file of flat keys (``docs/config.example.toml``)::

    gateway = "X1-interface.local"      # HOST[:PORT], wss://… or https://…
    ca = "gateway-ca.pem"               # relative paths: from the file's directory
    tls_name = "X1-interface.local"     # verify the certificate for this name
    serial = "/dev/x1p1-p1"             # a device, a pyserial URL, or "none" (TCP only)
    data_request = "ignore"             # ignore | cts | dsr   (P1 §5.7.1)
    tcp = "0.0.0.0:2001"                # serve raw telegrams over TCP too
    state_dir = "/var/lib/x1p1"
    log_level = "info"                  # debug | info | warning | error
    source = "auto"                     # auto | legacy-p1 | realtime

Several P1 outputs are ``[[output]]`` tables instead of ``serial`` and ``tcp`` (each one
output; ``interval`` in whole seconds, default 1, 10 for devices of the DSMR 4 era)::

    [[output]]
    serial = "/dev/x1p1-p1"
    data_request = "cts"
    [[output]]
    serial = "/dev/x1p1-p1-2"
    interval = 10
    [[output]]
    tcp = "0.0.0.0:2001"

``--serial`` and ``--tcp`` on the command line are shorthand for one output each; given,
they replace the file's outputs.

Where a value comes from, strongest first: the command line (``overrides``; None means
"not given"), the file, then the defaults. The file is ``--config FILE``, else
``$X1P1_CONFIG``, else ``/etc/x1p1/config.toml`` if it exists. The state directory
defaults to ``$X1P1_STATE_DIR``, else systemd's ``$STATE_DIRECTORY``, else
``$XDG_STATE_HOME/x1p1`` (``~/.local/state/x1p1``).

Each mistake is one :class:`~x1p1.exceptions.ConfigError` naming the file and the line of
the key (found by a small scan of the text, since :mod:`tomllib` keeps no positions) and
what is allowed, e.g. ``/etc/x1p1/config.toml line 3: data_request = 'rts' is not
allowed; choose ignore, cts or dsr``.

:class:`GatewayAddress` and :class:`ListenAddress` parse ``--gateway`` and ``--tcp``; the
converter reuses them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, cast
from urllib.parse import unquote, urlsplit

from x1p1.exceptions import ConfigError
from x1p1.x1.endpoints import check_path, split_endpoint

__all__ = [
    "DATA_REQUEST_CHOICES",
    "MAX_OUTPUTS",
    "SOURCE_CHOICES",
    "OutputConfig",
    "Source",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_GATEWAY_PORT",
    "DEFAULT_SERIAL",
    "LOG_LEVELS",
    "ca_file_problem",
    "DataRequest",
    "GatewayAddress",
    "ListenAddress",
    "RunConfig",
    "config_path",
    "default_state_dir",
    "load_run_config",
    "parse_gateway",
    "parse_listen",
    "parse_tls_name",
]

DEFAULT_CONFIG_PATH = Path("/etc/x1p1/config.toml")
DEFAULT_SERIAL = "/dev/x1p1-p1"  # the stable name of udev/99-x1p1.rules.template
DEFAULT_GATEWAY_PORT = 443  # HTTPS and WSS on one port (x1-api.md)
DataRequest = Literal["ignore", "cts", "dsr"]
DATA_REQUEST_CHOICES: tuple[DataRequest, ...] = ("ignore", "cts", "dsr")
LOG_LEVELS = ("debug", "info", "warning", "error")  # the names x1p1.logs.LEVELS knows
Source = Literal["auto", "legacy-p1", "realtime"]
SOURCE_CHOICES: tuple[Source, ...] = ("auto", "legacy-p1", "realtime")
MAX_OUTPUTS = 8
"""``[[output]]`` tables a config may hold (each serial output is a thread and a port)."""
MAX_INTERVAL = 3600
OUTPUT_KEYS = ("data_request", "interval", "serial", "tcp")


class _Invalid(Exception):
    """A value that does not fit; ``text`` follows the value in the message."""

    def __init__(self, text: str, *, complete: bool = False) -> None:
        self.text = text
        self.complete = complete  # says what is allowed already
        self.number: int | None = None  # which [[output]] table (1-based), if one
        super().__init__(text)

    def with_allowed(self, allowed: str) -> str:
        return self.text if self.complete else f"{self.text}; {allowed}"


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


# --- addresses ---------------------------------------------------------------------

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _check_host(host: str) -> str:
    """``host`` if it is an IP address or a DNS/mDNS host name, else :class:`_Invalid`."""
    if not host:
        raise _Invalid("has no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if len(host) > 253 or not _HOSTNAME.fullmatch(host):
            raise _Invalid("has no valid host name or address") from None
    return host


def _port(text: str, *, lowest: int) -> int:
    digits = text.isascii() and text.isdigit() and len(text) <= 5  # not "²", not 5000 digits
    if not digits or not lowest <= int(text) <= 65535:
        raise _Invalid(
            f"has port {text!r}; a port is a number from {lowest} to 65535", complete=True
        )
    return int(text)


def _split_host_port(text: str) -> tuple[str, str | None]:
    """``host``/``[v6]`` and an optional port; a bare IPv6 address is all host."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _Invalid("has an unclosed or misplaced '[' … ']'")
        return host, (rest[1:] if rest else None)
    if text.count(":") > 1:
        return text, None  # an IPv6 address without brackets and without a port
    host, colon, port = text.partition(":")
    return host, (port if colon else None)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class GatewayAddress:
    """Where an X1 gateway listens: ``--gateway HOST[:PORT]``, ``wss://…`` or ``https://…``.

    HTTPS and WSS share one port (x1-api.md), so either scheme names the same gateway;
    ``scheme`` records which one was written. Port 443 unless given.
    """

    host: str
    port: int = DEFAULT_GATEWAY_PORT
    scheme: Literal["https", "wss"] = "https"
    api_base: str | None = None
    """The URL's path as the API base (``https://gw/x1/api`` → ``/x1/api``; an endpoint at
    its end is dropped: ``wss://gw/x1/api/legacy-p1`` → ``/x1/api``); None without one."""

    ALLOWED = (
        "give a host name or address with an optional port (X1-interface.local, "
        "192.168.1.20:8443, [fe80::1%eth0]:443) or a wss:// or https:// URL, "
        "optionally with the API's path (https://gw/x1/api)"
    )

    @classmethod
    def parse(cls, text: str) -> GatewayAddress:
        """Parse ``--gateway``; :class:`~x1p1.exceptions.ConfigError` says what is wrong."""
        try:
            return cls._parse(text.strip())
        except _Invalid as invalid:
            raise ConfigError(f"gateway {text!r} {invalid.with_allowed(cls.ALLOWED)}") from None

    @classmethod
    def _parse(cls, text: str) -> GatewayAddress:
        if not text:
            raise _Invalid("is empty")
        if "://" not in text:
            if "/" in text or "?" in text or "#" in text:
                raise _Invalid("has a path but no scheme")
            host, port = _split_host_port(text)
            return cls(
                _check_host(host),
                DEFAULT_GATEWAY_PORT if port is None else _port(port, lowest=1),
            )
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # "https://[::1" : Invalid IPv6 URL
            raise _Invalid(f"is not a URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme in ("ws", "http"):
            raise _Invalid(
                f"uses {scheme}://; X1 needs TLS (X1 §4.1.4): use wss:// or https://",
                complete=True,
            )
        if scheme not in ("wss", "https"):
            raise _Invalid(f"uses the scheme {parts.scheme!r}")
        if parts.query or parts.fragment:
            raise _Invalid(
                "has a query or fragment; give scheme, host, port and the API's path",
                complete=True,
            )
        api_base: str | None = None
        if parts.path not in ("", "/"):
            try:
                api_base = split_endpoint(check_path(parts.path, "the path"))
            except ValueError as exc:
                raise _Invalid(f"has a bad path: {exc}", complete=True) from None
        if "@" in parts.netloc:
            raise _Invalid("has a user name or password in it")
        host, port = _split_host_port(parts.netloc)
        return cls(
            _check_host(unquote(host)),  # a zone written %25eth0 in a URL (RFC 6874)
            DEFAULT_GATEWAY_PORT if port is None else _port(port, lowest=1),
            cast(Literal["https", "wss"], scheme),
            api_base,
        )

    @property
    def netloc(self) -> str:
        """``host:port``, with an IPv6 address in brackets."""
        return _netloc(self.host, self.port)

    @property
    def https_url(self) -> str:
        """``https://host:port`` for the REST API (zone ids escaped as RFC 6874 asks)."""
        return f"https://{_netloc(self.host.replace('%', '%25'), self.port)}"

    def wss_url(self, path: str) -> str:
        """``wss://host:port`` + ``path`` (which starts with ``/``), e.g. /api/legacy-p1."""
        return f"wss://{_netloc(self.host.replace('%', '%25'), self.port)}{path}"

    def __str__(self) -> str:
        return self.netloc


@dataclass(frozen=True)
class ListenAddress:
    """Where to serve raw telegrams over TCP: ``--tcp HOST:PORT``.

    An empty host (``:2001``) means every interface; port 0 picks a free port (tests).
    """

    host: str
    port: int

    ALLOWED = (
        "give HOST:PORT, e.g. 127.0.0.1:2001, 0.0.0.0:2001, [::]:2001, or :2001 for every interface"
    )

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse ``--tcp``; :class:`~x1p1.exceptions.ConfigError` says what is wrong."""
        try:
            return cls._parse(text.strip())
        except _Invalid as invalid:
            raise ConfigError(f"tcp {text!r} {invalid.with_allowed(cls.ALLOWED)}") from None

    @classmethod
    def _parse(cls, text: str) -> ListenAddress:
        host, port = _split_host_port(text)
        if port is None:
            raise _Invalid("has no port")
        return cls(_check_host(host) if host else "", _port(port, lowest=0))

    @property
    def bind_host(self) -> str | None:
        """The host for ``asyncio.start_server``: None for every interface."""
        return self.host or None

    def __str__(self) -> str:
        return _netloc(self.host, self.port)


def parse_gateway(text: str) -> GatewayAddress:
    """``--gateway HOST[:PORT]|wss://…|https://…``; see :meth:`GatewayAddress.parse`."""
    return GatewayAddress.parse(text)


def parse_listen(text: str) -> ListenAddress:
    """``--tcp HOST:PORT``; see :meth:`ListenAddress.parse`."""
    return ListenAddress.parse(text)


TLS_NAME_ALLOWED = "give the host name (or address) the gateway's certificate carries"


def parse_tls_name(text: str) -> str:
    """``--tls-name NAME``: a host name or an address; ConfigError says what is wrong."""
    try:
        return _tls_name(text, None)
    except _Invalid as invalid:
        raise ConfigError(f"tls_name {text!r} {invalid.text}") from None


# --- defaults ----------------------------------------------------------------------


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$X1P1_STATE_DIR``, else systemd's ``$STATE_DIRECTORY``, else the XDG state dir."""
    environ = os.environ if env is None else env
    explicit = environ.get("X1P1_STATE_DIR", "")
    if explicit:
        return Path(explicit).expanduser()
    systemd = environ.get("STATE_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])  # several StateDirectory= are colon-separated
    xdg = environ.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # relative values are ignored (XDG spec)
        return Path(xdg) / "x1p1"
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "x1p1"


def config_path(path: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: ``path``, ``$X1P1_CONFIG``, or the default if it exists."""
    if path is not None:
        return path
    environ = os.environ if env is None else env
    named = environ.get("X1P1_CONFIG", "")
    if named:
        return Path(named).expanduser()
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


# --- the configuration --------------------------------------------------------------


@dataclass(frozen=True)
class OutputConfig:
    """One P1 output: a serial port (with its own Data Request) or a TCP server, and the
    seconds between the telegrams it gets (1: every one, P1 §6; 10: a DSMR 4 device)."""

    serial: str | None = None
    tcp: ListenAddress | None = None
    data_request: DataRequest = "ignore"
    interval: int = 1
    origin: str = field(default="", compare=False)
    """Where it was given, for messages: ``[[output]] number 2``, or the config file's
    line of a flat ``serial`` key; empty: the command line's ``--serial``."""

    def describe_serial(self) -> str:
        """How a message names the serial path: ``[[output]] number 1: serial = "/dev/…"``
        from the config file, ``--serial /dev/…`` from the command line."""
        if self.origin:
            return f'{self.origin}: serial = "{self.serial}"'
        return f"--serial {self.serial}"

    @property
    def name(self) -> str:
        """What status and logs call it: the port, or ``tcp HOST:PORT``."""
        return self.serial if self.serial else f"tcp {self.tcp}"


@dataclass(frozen=True)
class RunConfig:
    """Everything ``x1p1 run`` needs to know before it starts.

    ``source`` is the config file that was read, if any (for messages); ``data_source``
    is the key ``source`` (where telegrams come from); ``outputs`` the ``[[output]]``
    tables (key ``output``), empty when the flat ``serial``, ``data_request`` and ``tcp``
    keys describe them: :meth:`all_outputs` gives the outputs either way.
    """

    gateway: GatewayAddress | None = None  # None: find it (mDNS, or the paired one)
    ca: Path | None = None  # None: the CA saved when pairing
    tls_name: str | None = None  # None: the name saved when pairing (or --gateway's name)
    serial: str = DEFAULT_SERIAL
    data_request: DataRequest = "ignore"
    tcp: ListenAddress | None = None  # None: no TCP output
    state_dir: Path = field(default_factory=default_state_dir)
    log_level: str = "info"
    data_source: Source = "auto"
    outputs: tuple[OutputConfig, ...] = ()
    api_base: str | None = None  # None: TXT api=, a --gateway URL's path, or /api
    token_requests_path: str | None = None  # None: {api_base}/tokens/requests
    legacy_p1_path: str | None = None  # None: {api_base}/legacy-p1
    tcp_clients: int = 16  # --tcp clients served at once; more are refused at once
    source: Path | None = field(default=None, compare=False)
    serial_origin: str = field(default="", compare=False)
    """Where ``serial`` was set when it was the config file (``FILE line N``), for
    messages; empty: the command line or the default (named ``--serial``)."""

    def all_outputs(self) -> tuple[OutputConfig, ...]:
        """The outputs to run: the ``[[output]]`` tables, else ``serial`` and ``tcp``."""
        if self.outputs:
            return self.outputs
        out = []
        if self.serial:
            out.append(
                OutputConfig(
                    serial=self.serial, data_request=self.data_request, origin=self.serial_origin
                )
            )
        if self.tcp is not None:
            out.append(OutputConfig(tcp=self.tcp))
        return tuple(out)


_FIELDS = {"source": "data_source", "output": "outputs"}
"""Config keys whose field has another name (``source`` names the file that was read)."""
KNOWN_KEYS = tuple(
    sorted(
        {
            f.name
            for f in fields(RunConfig)
            if f.name not in ("source", "serial_origin", *_FIELDS.values())
        }
        | set(_FIELDS)
    )
)


def _show(value: object) -> str:
    """A value as the user wrote it, near enough (TOML spelling for booleans)."""
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _text(value: object, what: str) -> str:
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, str):
        raise _Invalid(f"is not allowed; {what} (a string in quotes)")
    if "\0" in value:
        raise _Invalid(f"is not allowed; {what} without NUL characters")
    return value


def _path(value: object, base: Path | None, what: str) -> Path:
    text = _text(value, what).strip()
    if not text:
        raise _Invalid(f"is not allowed; {what}")
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path


def _gateway(value: object, base: Path | None) -> GatewayAddress:
    if isinstance(value, GatewayAddress):
        return value
    text = _text(value, GatewayAddress.ALLOWED).strip()
    try:
        return GatewayAddress._parse(text)
    except _Invalid as invalid:
        raise _Invalid(invalid.with_allowed(GatewayAddress.ALLOWED), complete=True) from None


def _tcp(value: object, base: Path | None) -> ListenAddress:
    if isinstance(value, ListenAddress):
        return value
    text = _text(value, ListenAddress.ALLOWED).strip()
    try:
        return ListenAddress._parse(text)
    except _Invalid as invalid:
        raise _Invalid(invalid.with_allowed(ListenAddress.ALLOWED), complete=True) from None


_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_CA_MAX = 1024 * 1024


def ca_file_problem(path: Path) -> str | None:
    """What is wrong with ``path`` as the gateway's root CA (``--ca``), or None.

    Missing or unreadable, not PEM (DER, a key, anything else), or holding only
    certificates that are no CA (the gateway's own server certificate, say): each in a
    few words that follow the file's name. Read with the standard library's TLS code, as
    the converter will use it (x1-api.md, "Network and discovery").
    """
    import ssl

    try:
        with path.open("rb") as handle:
            data = handle.read(_CA_MAX + 1)
    except FileNotFoundError:
        return "it does not exist"
    except IsADirectoryError:
        return "it is a directory"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if len(data) > _CA_MAX:
        return "it is larger than 1 MiB, so no certificate file"
    if _PEM_CERTIFICATE not in data:
        der = data[:1] == b"\x30"
        return "it is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line" + (
            "; it looks like DER: openssl x509 -inform DER converts it)" if der else ")"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError):
        return "its PEM certificate is damaged (it does not decode)"
    if context.cert_store_stats().get("x509_ca", 0) == 0:
        return (
            "its certificate is not a CA (a server's own certificate?); give the gateway's "
            "root CA, which `x1p1 gateway ca` prints for the embedded gateway"
        )
    return None


def _ca(value: object, base: Path | None) -> Path:
    path = _path(value, base, "give the path of the gateway's CA certificate (PEM)")
    problem = ca_file_problem(path)
    if problem is not None:
        resolved = "" if str(path) == str(value).strip() else f" ({path})"
        raise _Invalid(f"is not a usable CA file{resolved}: {problem}", complete=True)
    return path


def _tls_name(value: object, base: Path | None) -> str:
    text = _text(value, TLS_NAME_ALLOWED).strip().rstrip(".")
    try:
        return _check_host(text)
    except _Invalid as invalid:
        raise _Invalid(invalid.with_allowed(TLS_NAME_ALLOWED), complete=True) from None


def _serial(value: object, base: Path | None) -> str:
    allowed = (
        "give a device path such as /dev/x1p1-p1 or /dev/ttyUSB0, a pyserial URL "
        "such as socket://host:port, or none (only the TCP output)"
    )
    text = _text(value, allowed).strip()
    if text == "none":
        return ""
    if not (text.startswith("/") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text)):
        raise _Invalid(f"is not allowed; {allowed}")
    return text


def _data_request(value: object, base: Path | None) -> DataRequest:
    allowed = f"choose {_choices(DATA_REQUEST_CHOICES)}"
    text = _text(value, allowed)
    if text not in DATA_REQUEST_CHOICES:
        raise _Invalid(f"is not allowed; {allowed}")
    return text


def _state_dir(value: object, base: Path | None) -> Path:
    return _path(value, base, "give the directory for the token and status files")


def _log_level(value: object, base: Path | None) -> str:
    allowed = f"choose {_choices(LOG_LEVELS)}"
    text = _text(value, allowed).lower()
    if text not in LOG_LEVELS:
        raise _Invalid(f"is not allowed; {allowed}")
    return text


def _source(value: object, base: Path | None) -> Source:
    allowed = f"choose {_choices(SOURCE_CHOICES)}"
    text = _text(value, allowed)
    if text not in SOURCE_CHOICES:
        raise _Invalid(f"is not allowed; {allowed}")
    return text


def _interval(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INTERVAL:
        raise _Invalid(f"is not allowed; give whole seconds from 1 to {MAX_INTERVAL}")
    return value


def _one_output(table: object, base: Path | None, number: int) -> OutputConfig:
    where = f"[[output]] number {number}"
    if not isinstance(table, dict):
        raise _Invalid(f"{where} must be a table")
    for key in table:
        if key not in OUTPUT_KEYS:
            import difflib  # only for this message (performance.md: the daemon stays lean)

            close = difflib.get_close_matches(key, OUTPUT_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Invalid(
                f"{where} has an unknown key {key!r}{hint}; known keys: {', '.join(OUTPUT_KEYS)}"
            )
    has_serial, has_tcp = "serial" in table, "tcp" in table
    if has_serial == has_tcp:
        raise _Invalid(f"{where} needs exactly one of serial or tcp")
    values: dict[str, object] = {}
    for key, convert in (
        ("serial", _serial),
        ("tcp", _tcp),
        ("data_request", _data_request),
    ):
        if key in table:
            try:
                values[key] = convert(table[key], base)
            except _Invalid as invalid:
                raise _Invalid(f"in {where}, {key} = {_show(table[key])} {invalid.text}") from None
    if values.get("serial") == "":
        raise _Invalid(f"in {where}, serial = 'none' is no output: leave it out")
    if has_tcp and "data_request" in table:
        raise _Invalid(f"in {where}, data_request is for a serial output")
    if "interval" in table:
        try:
            values["interval"] = _interval(table["interval"])
        except _Invalid as invalid:
            raise _Invalid(
                f"in {where}, interval = {_show(table['interval'])} {invalid.text}"
            ) from None
    return OutputConfig(**values, origin=where)  # type: ignore[arg-type]


def _outputs(value: object, base: Path | None) -> tuple[OutputConfig, ...]:
    if isinstance(value, tuple) and all(isinstance(v, OutputConfig) for v in value):
        return value
    if not isinstance(value, list) or not value:
        raise _Invalid("write each output as an [[output]] table")
    if len(value) > MAX_OUTPUTS:
        raise _Invalid(f"at most {MAX_OUTPUTS} [[output]] tables")
    tables: list[OutputConfig] = []
    for number, table in enumerate(value, 1):
        try:
            tables.append(_one_output(table, base, number))
        except _Invalid as invalid:
            invalid.number = number  # the error names this table's line
            raise
    out = tuple(tables)
    seen: set[str] = set()
    for number, output in enumerate(out, 1):
        key = output.serial or f"tcp:{output.tcp.bind_host if output.tcp else ''}:" + (
            str(output.tcp.port) if output.tcp else ""
        )
        if key in seen and not key.endswith(":0"):
            twice = _Invalid(f"{output.name} is named by two [[output]] tables")
            twice.number = number
            raise twice
        seen.add(key)
    return out


def _endpoint_path(key: str) -> Callable[[object, Path | None], str]:
    def convert(value: object, base: Path | None) -> str:
        allowed = "give an absolute path such as /api"
        text = _text(value, allowed)
        try:
            return check_path(text, key)
        except ValueError as exc:
            raise _Invalid(f"is not allowed; {allowed} ({exc})") from None

    return convert


def _tcp_clients(value: object, base: Path | None) -> int:
    allowed = "give a whole number of clients from 1 to 1024"
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise _Invalid(f"is not allowed; {allowed}")
    return value


_CONVERTERS: dict[str, Callable[[object, Path | None], object]] = {
    "api_base": _endpoint_path("api_base"),
    "token_requests_path": _endpoint_path("token_requests_path"),
    "legacy_p1_path": _endpoint_path("legacy_p1_path"),
    "tcp_clients": _tcp_clients,
    "source": _source,
    "output": _outputs,
    "gateway": _gateway,
    "ca": _ca,
    "tls_name": _tls_name,
    "serial": _serial,
    "data_request": _data_request,
    "tcp": _tcp,
    "state_dir": _state_dir,
    "log_level": _log_level,
}
assert tuple(sorted(_CONVERTERS)) == KNOWN_KEYS


# --- where each key is written ------------------------------------------------------

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_VALUE_LINE = re.compile(rf"\s*({_KEY})\s*(?:\.\s*{_KEY}\s*)*=")
_TABLE_LINE = re.compile(rf"\s*\[\[?\s*({_KEY})")


def _unquote(key: str) -> str:
    if key[:1] == '"':
        return cast(str, tomllib.loads(f"k = {key}")["k"])
    if key[:1] == "'":
        return key[1:-1]
    return key


def _scan(line: str, state: str | None, depth: int) -> tuple[str | None, int]:
    """Carry multi-line strings and open brackets from one line to the next."""
    i = 0
    while i < len(line):
        if state == '"""':
            if line[i] == "\\":
                i += 2
                continue
            if line.startswith('"""', i):
                state, i = None, i + 3
                continue
            i += 1
        elif state == "'''":
            end = line.find("'''", i)
            if end < 0:
                break
            state, i = None, end + 3
        else:
            char = line[i]
            if char == "#":
                break
            if line.startswith('"""', i) or line.startswith("'''", i):
                state, i = line[i : i + 3], i + 3
                continue
            if char == '"':
                i += 1
                while i < len(line) and line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
            elif char == "'":
                end = line.find("'", i + 1)
                i = len(line) if end < 0 else end
            elif char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            i += 1
    return state, depth


def key_lines(text: str) -> dict[str, int]:
    """The 1-based line where each top-level key (or table) of valid TOML is first set,
    and where each array-of-tables header stands, as ``name[n]`` (``output[2]``: the
    second ``[[output]]``), so that an error names the table it is about."""
    lines: dict[str, int] = {}
    in_table = False
    state: str | None = None
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        if state is None and depth == 0:
            table = _TABLE_LINE.match(line)
            if table:
                name = _unquote(table.group(1))
                lines.setdefault(name, number)
                if line.lstrip().startswith("[["):
                    count = sum(1 for k in lines if k.startswith(f"{name}[")) + 1
                    lines[f"{name}[{count}]"] = number
                in_table = True
                continue
            key = _KEY_VALUE_LINE.match(line)
            if key and not in_table:
                lines.setdefault(_unquote(key.group(1)), number)
        state, depth = _scan(line, state, depth)
    return lines


# --- loading ------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _read(path: Path) -> tuple[dict[str, object], dict[str, int]]:
    """The file's table and key lines, or a ConfigError that says what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read it: {error.strerror or error}", where=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError("is not UTF-8 text", where=f"{path} line {line}") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        position = _TOML_POSITION.search(message)
        if position:
            reason = message[: position.start()]
            raise ConfigError(
                f"not valid TOML: {reason} (column {position.group(2)})",
                where=f"{path} line {position.group(1)}",
            ) from None
        if message.endswith("(at end of document)"):
            reason = message.removesuffix("(at end of document)").rstrip()
            last = max(1, len(text.splitlines()))
            raise ConfigError(
                f"not valid TOML: {reason} (at the end of the file)", where=f"{path} line {last}"
            ) from None
        raise ConfigError(f"not valid TOML: {message}", where=str(path)) from None
    return table, key_lines(text)


def _unknown(key: str) -> str:
    import difflib  # only for this message: the daemon's memory stays lean (performance.md)

    close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; known keys: {', '.join(KNOWN_KEYS)}"


def load_run_config(
    path: Path | None = None,
    overrides: Mapping[str, object] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> RunConfig:
    """Build the :class:`RunConfig` from the config file, the environment and ``overrides``.

    ``path`` None reads ``$X1P1_CONFIG`` or ``/etc/x1p1/config.toml`` if that exists;
    a file named explicitly (``--config``, ``$X1P1_CONFIG``) must exist. ``overrides``
    holds command-line values by field name (``data_request``, not ``--data-request``):
    strings as typed, or parsed values; None means "not given". Raises
    :class:`~x1p1.exceptions.ConfigError` for the first mistake.
    """
    values: dict[str, object] = {}
    file_keys: set[str] = set()
    lines: dict[str, int] = {}
    source = config_path(path, env)
    given = {k for k, v in (overrides or {}).items() if v is not None}
    cli_outputs = bool(given & {"serial", "tcp"})
    if source is not None:
        table, lines = _read(source)
        file_keys = set(table)
        base = source.parent
        for key, value in table.items():
            line = lines.get(key)
            where = f"{source} line {line}" if line else str(source)
            if key not in _CONVERTERS:
                raise ConfigError(_unknown(key), where=where)
            try:
                values[key] = _CONVERTERS[key](value, base)
            except _Invalid as invalid:
                if key == "output":  # a list of tables: say which one, not the whole list
                    line = lines.get(f"output[{invalid.number}]", line)
                    where = f"{source} line {line}" if line else str(source)
                    raise ConfigError(invalid.text, where=where) from None
                raise ConfigError(f"{key} = {_show(value)} {invalid.text}", where=where) from None
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        option = "--" + key.replace("_", "-")
        if key not in _CONVERTERS:
            raise ConfigError(_unknown(key), where="command line")
        try:
            values[key] = _CONVERTERS[key](value, None)
        except _Invalid as invalid:
            raise ConfigError(f"{option} {_show(value)} {invalid.text}") from None
    if "state_dir" not in values:
        values["state_dir"] = default_state_dir(env)
    if "output" in file_keys and file_keys & {"serial", "tcp", "data_request"}:
        raise ConfigError(
            "give the outputs either as serial, data_request and tcp, or as [[output]] "
            "tables, not both",
            where=str(source),
        )
    if cli_outputs:
        values.pop("output", None)  # --serial and --tcp replace the file's outputs
    if values.get("serial") == "" and values.get("tcp") is None and "output" not in values:
        raise ConfigError("serial = none leaves nothing to write to: give tcp = HOST:PORT too")
    fields_ = {_FIELDS.get(key, key): value for key, value in values.items()}
    if source is not None and "serial" in file_keys and "serial" not in given:
        line = lines.get("serial")
        fields_["serial_origin"] = f"{source} line {line}" if line else str(source)
    return RunConfig(source=source, **fields_)  # type: ignore[arg-type]
