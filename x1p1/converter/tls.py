"""The converter's TLS client settings: TLS 1.3, the gateway's root, the gateway's name.

X1 §4.1.4 asks for TLS 1.3; §10.1 says the gateway's certificate comes from an internal
PKI whose root certificate is handed out to validate it. x1-api.md ("Network and
discovery"): clients connect by address but verify the certificate against the
advertised host name (or the name given with ``--tls-name``), and a mismatch is fatal.
This module builds that :class:`ssl.SSLContext` with the standard library only, so the
converter needs no ``cryptography``. It opens no socket; it lives in the converter, not
in the sans-I/O ``x1p1.x1``.

How strict (``docs/x1-api.md``, "What the converter tolerates", TLS): with the system's
trust store, ``ssl.VERIFY_X509_STRICT`` holds. A CA the user pins (``--ca``, or the one
saved by ``x1p1 pair``) is trusted as given: a vendor's internal root without an
authorityKeyIdentifier or with a non-critical basicConstraints is accepted (as curl
accepts it), and a pinned intermediate is a trust anchor too (OpenSSL's partial-chain
flag, also curl's default). The chain up to the pinned certificate, each certificate's
validity and the host name are verified all the same.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path

from x1p1.exceptions import ConfigError
from x1p1.x1.connection import TLS_VERSION_SENTENCE

__all__ = [
    "TLS_VERSION_SENTENCE",
    "AddressedHTTPS",
    "client_ssl_context",
    "converter_context",
    "is_version_refusal",
    "legacy_version",
    "speaks_only_legacy_tls",
]

_VERSION_REASONS = frozenset(
    {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"}
)


def is_version_refusal(error: BaseException) -> bool:
    """Whether a failed handshake says outright that the peer offers no TLS 1.3 (an alert)."""
    return isinstance(error, ssl.SSLError) and (error.reason or "") in _VERSION_REASONS


def legacy_version(
    address: str, port: int, server_hostname: str, timeout: float = 5.0
) -> str | None:
    """The version a peer settles on when offered TLS 1.2 at most (``TLSv1.2``), or None.

    Only for a diagnosis: the certificate is not looked at and nothing is sent after the
    handshake. Some servers refuse TLS 1.3 without an alert (they just close), so this
    second handshake is how a TLS-1.2-only gateway is told from a broken one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with socket.create_connection((address, port), timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
                return tls.version()
    except (OSError, ValueError):
        return None


def speaks_only_legacy_tls(
    error: BaseException, address: str, port: int, server_hostname: str, timeout: float = 5.0
) -> bool:
    """Whether ``error`` (a failed TLS 1.3 handshake) came from a TLS-1.2-only gateway.

    A server may answer a TLS-1.3-only hello with an alert (``ssl.SSLError``) or by
    resetting the connection; either is confirmed with :func:`legacy_version`.
    """
    if isinstance(error, ssl.SSLCertVerificationError) or not isinstance(
        error, ssl.SSLError | ConnectionResetError | ConnectionAbortedError
    ):
        return False
    if is_version_refusal(error):
        return True
    return legacy_version(address, port, server_hostname, timeout) is not None


def client_ssl_context(
    cafile: Path | None, cadata: str | None = None, *, strict: bool = True
) -> ssl.SSLContext:
    """A client context: TLS 1.3 minimum, certificate and host name required.

    ``cafile`` (a PEM file) and/or ``cadata`` (PEM text) hold the root(s) to trust; with
    neither, the system's trust store is used (a root the user installed there). With
    ``strict``, ``ssl.VERIFY_X509_STRICT`` is set, so a certificate that bends RFC 5280
    (a CA without critical basicConstraints, no key identifiers, ...) is refused; without
    it, the given certificates are trust anchors even when they are not self-signed roots
    (``ssl.VERIFY_X509_PARTIAL_CHAIN``).

    Raises :class:`~x1p1.exceptions.ConfigError` when the CA file is missing or holds no
    usable certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    else:
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if cafile is None and cadata is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return context
    if cafile is not None:
        try:
            context.load_verify_locations(cafile=str(cafile))
        except FileNotFoundError:
            raise ConfigError(f"CA file {cafile} does not exist") from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"CA file {cafile} holds no usable PEM certificate: {exc}") from None
    if cadata is not None:
        try:
            context.load_verify_locations(cadata=cadata)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"the CA data holds no usable PEM certificate: {exc}") from None
    return context


def converter_context(ca_file: Path | None, ca_pem: str | None = None) -> ssl.SSLContext:
    """The context the converter uses: ``ca_file`` if given, else the saved ``ca_pem``,
    else the system's trust store. A pinned CA is trusted without the X.509-strict checks
    (module docstring); the system's store keeps them."""
    if ca_file is not None:
        return client_ssl_context(ca_file, strict=False)
    if ca_pem:
        return client_ssl_context(None, ca_pem, strict=False)
    return client_ssl_context(None)


class AddressedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``address`` while the TLS server name and ``Host`` are ``tls_name``: the
    gateway's host name, or ``--tls-name`` (docs/x1-api.md, "What the converter
    tolerates", TLS), so a gateway found by address is still verified for its name."""

    def __init__(
        self, tls_name: str, port: int, address: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(tls_name, port, context=context, timeout=timeout)
        self._address, self._tls_name, self._ctx = address, tls_name, context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        try:
            self.sock = self._ctx.wrap_socket(sock, server_hostname=self._tls_name)
        except BaseException:
            sock.close()
            raise
