"""TLS dialects of gateways this project did not write, for the converter's tests.

A vendor's internal PKI (X1 §10.1) need not look like the embedded gateway's: a chain
with an intermediate, a root or leaf without key identifiers, a basicConstraints that is
not critical, a certificate naming only an address or only a host name, a server stuck
at TLS 1.2. :class:`TLSDialect` describes one; :class:`DialectPKI` builds its
certificates with ``cryptography`` and serves them; :class:`DialectGateway` is the
tests' own X1 gateway (``x1_test_gateway.TestGateway``) behind that PKI.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from x1_test_gateway import TestGateway

__all__ = ["DialectGateway", "DialectPKI", "TLSDialect"]


@dataclass(frozen=True)
class TLSDialect:
    """How a gateway's TLS differs from the embedded gateway's."""

    name: str
    intermediate: bool = False
    """Root → intermediate → leaf; the server sends leaf and intermediate."""
    key_identifiers: bool = True
    """False: no authority or subject key identifier anywhere."""
    ca_constraints_critical: bool = True
    dns_names: tuple[str, ...] = ("X1-interface.local",)
    ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    leaf_key: str = "ec-p256"
    """``ec-p256``, ``ec-p384`` or ``rsa-2048``."""
    tls12_only: bool = False
    expired: bool = False
    subject_cn: str = "X1 gateway E0044007312345617"
    """A vendor may put the meter's serial in the subject; ``x1p1 doctor`` must not show it."""


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Other Meter Vendor"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if kind == "ec-p384" else ec.SECP256R1())


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class DialectPKI:
    """The dialect's root (``root_cert_path``, for ``--ca``), its chain and key on disk."""

    directory: Path
    dialect: TLSDialect
    root: x509.Certificate = field(init=False)
    chain: list[x509.Certificate] = field(init=False)
    """What the server sends: the leaf first."""

    def __post_init__(self) -> None:
        d = self.dialect
        self.directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC) - timedelta(minutes=5)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = self._build(
            _name("Vendor Root CA"),
            _name("Vendor Root CA"),
            root_key,
            root_key,
            ca=True,
            start=now,
            end=now + timedelta(days=3650),
        )
        issuer_name, issuer_key, chain_extra = _name("Vendor Root CA"), root_key, []
        if d.intermediate:
            mid_key = ec.generate_private_key(ec.SECP256R1())
            mid = self._build(
                _name("Vendor Issuing CA"),
                issuer_name,
                mid_key,
                root_key,
                ca=True,
                start=now,
                end=now + timedelta(days=1825),
            )
            issuer_name, issuer_key, chain_extra = _name("Vendor Issuing CA"), mid_key, [mid]
        leaf_key = _key(d.leaf_key)
        start, end = now, now + timedelta(days=365)
        if d.expired:
            start, end = now - timedelta(days=400), now - timedelta(days=35)
        leaf = self._build(
            _name(d.subject_cn),
            issuer_name,
            leaf_key,
            issuer_key,
            ca=False,
            start=start,
            end=end,
        )
        self.root, self.chain = root, [leaf, *chain_extra]
        self.root_cert_path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)
        self._chain_path.write_bytes(pem)
        self._key_path.write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def _build(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
        start: datetime,
        end: datetime,
    ) -> x509.Certificate:
        d = self.dialect
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.BasicConstraints(ca=ca, path_length=None),
                critical=d.ca_constraints_critical or not ca,
            )
            .add_extension(_usage(ca), critical=True)
        )
        if d.key_identifiers:
            builder = builder.add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        if not ca:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in d.dns_names]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in d.ip_addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    @property
    def root_cert_path(self) -> Path:
        return self.directory / "root.pem"

    @property
    def _chain_path(self) -> Path:
        return self.directory / "chain.pem"

    @property
    def _key_path(self) -> Path:
        return self.directory / "key.pem"

    def server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._chain_path, self._key_path)
        if self.dialect.tls12_only:
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        else:
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context


@dataclass
class DialectGateway(TestGateway):
    """The tests' own X1 gateway behind a :class:`TLSDialect`'s certificates."""

    __test__ = False

    tls: TLSDialect = TLSDialect("plain")
    """How its certificates and TLS bend the contract (``dialect`` is the answers')."""

    def __post_init__(self) -> None:
        self._pki = DialectPKI(self.state_dir / "dialect-pki", self.tls)
