"""PEM files for ``--ca`` tests: a root CA, and a certificate that is no CA.

Made with ``cryptography`` (a test dependency) once per process: EC P-256, valid for a
year from now, RFC 5280 extensions as the converter's strict TLS settings want them.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _certificate(name: str, *, ca: bool) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    certificate = builder.sign(key, hashes.SHA256())
    return certificate.public_bytes(serialization.Encoding.PEM)


@functools.cache
def ca_pem() -> bytes:
    """A self-signed root CA (basicConstraints CA:TRUE), PEM."""
    return _certificate("x1p1 test root", ca=True)


@functools.cache
def leaf_pem() -> bytes:
    """A self-signed certificate that is no CA (CA:FALSE), as a server's own one, PEM."""
    return _certificate("X1-interface.local", ca=False)
