"""The TLS client settings every X1 client uses: TLS 1.3, the gateway's root, strict checks.

X1 §4.1.4 asks for TLS 1.3; §10.1 says the gateway's certificate comes from an internal
PKI whose root certificate is handed out to validate it. x1-api.md ("Network and
discovery"): clients connect by address but verify the certificate against the
advertised host name, and a mismatch is fatal. This module builds that
:class:`ssl.SSLContext` with the standard library only, so the converter can use it
without the gateway's ``cryptography`` dependency. It opens no socket.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from x1p1.exceptions import ConfigError


def client_ssl_context(cafile: Path | None, cadata: str | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.3 minimum, certificate and host name required, X.509 strict.

    ``cafile`` (a PEM file) and/or ``cadata`` (PEM text) hold the root(s) to trust; with
    neither, the system's trust store is used (a root the user installed there).
    ``ssl.VERIFY_X509_STRICT`` is set, so a certificate that bends RFC 5280 (a CA without
    critical basicConstraints, no key identifiers, ...) is refused.

    Raises :class:`~x1p1.exceptions.ConfigError` when the CA file is missing or holds no
    usable certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.verify_flags |= ssl.VERIFY_X509_STRICT
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
