"""The embedded gateway's PKI: a root CA, the TLS server certificate, the billing signer.

X1 §10.1: the gateway's TLS certificate is issued by an internal PKI whose root
certificate is handed out so that clients can validate it; X1 §6.2.5–§6.2.6: billing
readings are signed so they can be shown to come from the meter. On first start
:meth:`GatewayPKI.load_or_create` makes, in ``<state dir>/pki/``:

``root-ca.pem`` / ``root-ca.key``
    The root: ECDSA P-256, about 20 years, critical basicConstraints ``CA:TRUE,
    pathlen:0``, critical keyUsage ``keyCertSign, cRLSign``, subject and authority key
    identifiers. Kept for good: clients trust it (``x1p1 gateway ca`` prints it).
``tls.pem`` / ``tls.key``
    The TLS leaf: P-256, at most 398 days (CA/Browser Forum), SANs for every host name the
    gateway may answer to (``X1-interface.local``, ``X1-interface-1.local`` …
    ``-9.local`` from the base name, the one it claimed, ``localhost``) and its addresses
    (always ``127.0.0.1`` and ``::1``); EKU serverAuth; critical keyUsage
    digitalSignature; critical basicConstraints ``CA:FALSE``; SKI and AKI. Issued again
    when it nears expiry or when its SANs no longer cover the names and addresses asked
    for (x1-api.md, "Network and discovery").
``billing.pem`` / ``billing.key``
    The billing signer: P-256, keyUsage digitalSignature and contentCommitment, EKU
    :data:`~x1p1.x1.billing.BILLING_EKU_OID`, issued by the root.

All of it verifies under ``ssl.VERIFY_X509_STRICT``. Keys are written mode 0600, every
file atomically (temp file, fsync, ``os.replace``), under an exclusive lock so that a
second process (``x1p1 gateway ca`` beside ``x1p1 gateway serve``) never sees half a PKI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from x1p1.exceptions import ConfigError, StateError
from x1p1.gateway.billing_signature import BillingSigner
from x1p1.x1.billing import BILLING_EKU_OID
from x1p1.x1.hostname import DEFAULT_HOST_NAME as DEFAULT_BASE_NAME
from x1p1.x1.hostname import MAX_INDEX as ALTERNATE_NAMES
from x1p1.x1.hostname import host_name

ROOT_LIFETIME = timedelta(days=20 * 365 + 5)
LEAF_LIFETIME = timedelta(days=397)
"""Under the CA/Browser Forum's 398 days, so browsers accept it for the portal."""
BILLING_LIFETIME = timedelta(days=5 * 365 + 1)
RENEW_BEFORE = timedelta(days=30)
"""A leaf or signer with less than this left is issued again on load."""
BACKDATE = timedelta(minutes=5)
"""``notBefore`` lies this far back, for peers whose clocks run a little late."""

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_LOOPBACK = ("127.0.0.1", "::1")

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def candidate_host_names(base_name: str = DEFAULT_BASE_NAME) -> list[str]:
    """The mDNS names the gateway may claim: ``X1-interface.local``, ``-1.local`` … ``-9``
    (:mod:`x1p1.x1.hostname`, §4.3.3)."""
    base = base_name.removesuffix(".").removesuffix(".local")
    return [host_name(base, i) for i in range(ALTERNATE_NAMES + 1)]


def local_addresses() -> list[str]:
    """This machine's IP addresses (IPv6 without zone), loopback first, for the leaf's SANs."""
    import ifaddr  # zeroconf's own dependency; imported here to keep module import light

    found: list[str] = list(_LOOPBACK)
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            text = text.split("%", 1)[0]
            if text not in found:
                found.append(text)
    return found


@dataclass(frozen=True, slots=True)
class _Names:
    """The SANs a leaf must carry, normalised for comparison."""

    dns: tuple[str, ...]
    ips: tuple[_IPAddress, ...]

    @classmethod
    def build(cls, host_names: Sequence[str], addresses: Sequence[str], base_name: str) -> _Names:
        dns: list[str] = []
        ips: list[_IPAddress] = []
        for name in [*host_names, *candidate_host_names(base_name), "localhost"]:
            ip = _as_ip(name)
            if ip is not None:
                if ip not in ips:
                    ips.append(ip)
                continue
            norm = _check_host_name(name)
            if norm.lower() not in (d.lower() for d in dns):
                dns.append(norm)
        for address in [*addresses, *_LOOPBACK]:
            ip = _as_ip(address)
            if ip is None:
                raise ConfigError(f"{address!r} is not an IP address")
            if ip not in ips:
                ips.append(ip)
        return cls(tuple(dns), tuple(ips))

    def covered_by(self, cert: x509.Certificate) -> bool:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        have_dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
        have_ips = set(san.get_values_for_type(x509.IPAddress))
        return {d.lower() for d in self.dns} <= have_dns and set(self.ips) <= have_ips

    def extension(self) -> x509.SubjectAlternativeName:
        general: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns]
        general += [x509.IPAddress(ip) for ip in self.ips]
        return x509.SubjectAlternativeName(general)


def _as_ip(text: str) -> _IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _check_host_name(name: str) -> str:
    host = name.removesuffix(".")
    if not host or len(host) > 253 or not all(_LABEL.match(lab) for lab in host.split(".")):
        raise ConfigError(
            f"{name!r} is not a host name (letters, digits and '-' in dot-separated labels)"
        )
    return host


class GatewayPKI:
    """The gateway's root CA, TLS leaf and billing signer, as kept in its state directory.

    Build it with :meth:`load_or_create`; it then holds the certificates in memory and
    knows the paths of their files.
    """

    def __init__(
        self,
        directory: Path,
        root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
        leaf: x509.Certificate,
        billing: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
        renewed: tuple[str, ...],
    ) -> None:
        self.directory = directory
        self._root_key, self.root_certificate = root
        self.leaf_certificate = leaf
        self._billing_key, self.billing_certificate = billing
        self.renewed = renewed
        """What this load (re)created: some of ``"root"``, ``"leaf"``, ``"billing"``."""

    # -- files ---------------------------------------------------------------------------

    @staticmethod
    def directory_for(state_dir: Path) -> Path:
        """Where the PKI's files live inside a gateway state directory."""
        return Path(state_dir) / "pki"

    @property
    def root_cert_path(self) -> Path:
        return self.directory / "root-ca.pem"

    @property
    def root_key_path(self) -> Path:
        return self.directory / "root-ca.key"

    @property
    def leaf_cert_path(self) -> Path:
        return self.directory / "tls.pem"

    @property
    def leaf_key_path(self) -> Path:
        return self.directory / "tls.key"

    @property
    def billing_cert_path(self) -> Path:
        return self.directory / "billing.pem"

    @property
    def billing_key_path(self) -> Path:
        return self.directory / "billing.key"

    # -- what others use -----------------------------------------------------------------

    @property
    def root_pem(self) -> bytes:
        """The root certificate in PEM: what clients must trust (``x1p1 gateway ca``)."""
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def root_fingerprint(self) -> str:
        """SHA-256 of the root certificate, colon-separated upper-case hex."""
        digest = hashlib.sha256(self.root_certificate.public_bytes(serialization.Encoding.DER))
        return ":".join(f"{b:02X}" for b in digest.digest())

    @property
    def leaf_dns_names(self) -> list[str]:
        san = self.leaf_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return list(san.value.get_values_for_type(x509.DNSName))

    @property
    def leaf_ip_addresses(self) -> list[str]:
        san = self.leaf_certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]

    def covers(
        self,
        host_names: Sequence[str],
        addresses: Sequence[str] = (),
        *,
        base_name: str = DEFAULT_BASE_NAME,
    ) -> bool:
        """Whether the current leaf's SANs hold these names and addresses."""
        return _Names.build(host_names, addresses, base_name).covered_by(self.leaf_certificate)

    def server_ssl_context(self) -> ssl.SSLContext:
        """A server context with the leaf: TLS 1.3 minimum, so TLS 1.2 is refused (§4.1.4)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.leaf_cert_path, self.leaf_key_path)
        return context

    def signer(self) -> BillingSigner:
        """The billing signer, with its key and certificate (X1 §6.2.5–§6.2.6)."""
        return BillingSigner(self._billing_key, self.billing_certificate)

    # -- loading and creating ------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls,
        state_dir: Path,
        host_names: Sequence[str] = (),
        addresses: Sequence[str] = (),
        now: datetime | None = None,
        *,
        base_name: str = DEFAULT_BASE_NAME,
    ) -> GatewayPKI:
        """Load the PKI from ``state_dir``, creating or renewing what is missing or due.

        ``host_names`` are names the leaf must hold besides the candidates from
        ``base_name`` and ``localhost`` (the name claimed on mDNS, say); ``addresses`` IPs
        it must hold besides 127.0.0.1 and ::1 (see :func:`local_addresses`). ``now`` is
        the time to judge validity by (default: the clock).

        The root is created only when it does not exist; one that cannot be read, or has
        expired, raises :class:`~x1p1.exceptions.StateError` (replacing it silently would
        break every client that trusts it). Bad names raise
        :class:`~x1p1.exceptions.ConfigError`.
        """
        now = (now or datetime.now(UTC)).astimezone(UTC)
        names = _Names.build(host_names, addresses, base_name)
        directory = cls.directory_for(state_dir)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the PKI directory {directory}: {exc}") from None
        with _locked(directory / ".lock"):
            renewed: list[str] = []
            paths = _Paths(directory)
            root = _load_root(paths, now)
            if root is None:
                root = _create_root(paths, now)
                renewed.append("root")
            leaf = _load_leaf(paths, root[1], names, now)
            if leaf is None:
                leaf = _create_leaf(paths, root, names, now)
                renewed.append("leaf")
            billing = _load_billing(paths, root[1], now)
            if billing is None:
                billing = _create_billing(paths, root, now)
                renewed.append("billing")
        return cls(directory, root, leaf, billing, tuple(renewed))


def root_ca_pem(state_dir: Path) -> bytes:
    """The root certificate (PEM) of the gateway in ``state_dir``, creating the PKI if missing."""
    return GatewayPKI.load_or_create(state_dir).root_pem


# -- internals -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Paths:
    directory: Path

    @property
    def root(self) -> tuple[Path, Path]:
        return self.directory / "root-ca.key", self.directory / "root-ca.pem"

    @property
    def leaf(self) -> tuple[Path, Path]:
        return self.directory / "tls.key", self.directory / "tls.pem"

    @property
    def billing(self) -> tuple[Path, Path]:
        return self.directory / "billing.key", self.directory / "billing.pem"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open the PKI lock {path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot write {path}: {exc}") from None


def _save(
    paths: tuple[Path, Path], key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    key_path, cert_path = paths
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a crash in between leaves a key that does not match the old certificate,
    # which the next load notices and repairs (for the root: no certificate, so a new root).
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _read(
    paths: tuple[Path, Path],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    """The key and certificate at ``paths``; ``None`` if the certificate does not exist.

    Raises ValueError (with a reason) when they exist but are unusable.
    """
    key_path, cert_path = paths
    if not cert_path.exists():
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{cert_path} is not a readable PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ValueError(f"{key_path} is missing") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{key_path} is not a readable PEM key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{key_path} is not an ECDSA P-256 key")
    if _public(key) != _public_of_cert(cert):
        raise ValueError(f"{key_path} does not belong to {cert_path}")
    return key, cert


def _public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public_of_cert(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _fresh(cert: x509.Certificate, now: datetime) -> bool:
    """Valid now and for at least :data:`RENEW_BEFORE` more."""
    return cert.not_valid_before_utc <= now and now + RENEW_BEFORE < cert.not_valid_after_utc


def _load_root(
    paths: _Paths, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    try:
        found = _read(paths.root)
    except ValueError as exc:
        raise StateError(
            f"the gateway's root CA cannot be used: {exc}. Remove {paths.directory} to "
            "create a new root; every client must then be given the new one"
        ) from None
    if found is not None and found[1].not_valid_after_utc <= now:
        raise StateError(
            f"the gateway's root CA in {paths.directory} expired on "
            f"{found[1].not_valid_after_utc:%Y-%m-%d}; remove that directory to create a new one"
        )
    return found


def _load_leaf(
    paths: _Paths, root: x509.Certificate, names: _Names, now: datetime
) -> x509.Certificate | None:
    try:
        found = _read(paths.leaf)
    except ValueError:
        return None  # unusable: issue a new one
    if found is None:
        return None
    cert = found[1]
    if not (_issued_by(cert, root) and _fresh(cert, now) and names.covered_by(cert)):
        return None
    return cert


def _load_billing(
    paths: _Paths, root: x509.Certificate, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    try:
        found = _read(paths.billing)
    except ValueError:
        return None
    if found is None or not (_issued_by(found[1], root) and _fresh(found[1], now)):
        return None
    return found


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity(
    now: datetime, lifetime: timedelta, issuer: x509.Certificate | None
) -> tuple[datetime, datetime]:
    start = (now - BACKDATE).replace(microsecond=0)
    end = start + lifetime
    if issuer is not None:
        end = min(end, issuer.not_valid_after_utc)
    return start, end


def _create_root(
    paths: _Paths, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x1p1 embedded DSMR6 gateway"),
            # A short id in the name tells several gateways' roots apart in a trust store.
            x509.NameAttribute(NameOID.COMMON_NAME, f"x1p1 gateway root CA {ski.digest[:4].hex()}"),
        ]
    )
    start, end = _validity(now, ROOT_LIFETIME, None)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _save(paths.root, key, cert)
    return key, cert


def _issue(
    root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    validity: tuple[datetime, datetime],
    key_usage: x509.KeyUsage,
    eku: x509.ExtendedKeyUsage,
    san: x509.SubjectAlternativeName | None,
) -> x509.Certificate:
    root_key, root_cert = root
    root_ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(eku, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(root_key, hashes.SHA256())


def _key_usage(*, digital_signature: bool, content_commitment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _create_leaf(
    paths: _Paths,
    root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    names: _Names,
    now: datetime,
) -> x509.Certificate:
    key = _new_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x1p1 embedded DSMR6 gateway"),
            x509.NameAttribute(NameOID.COMMON_NAME, names.dns[0]),
        ]
    )
    cert = _issue(
        root,
        key,
        subject,
        _validity(now, LEAF_LIFETIME, root[1]),
        _key_usage(digital_signature=True, content_commitment=False),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        names.extension(),
    )
    _save(paths.leaf, key, cert)
    return cert


def _create_billing(
    paths: _Paths, root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x1p1 embedded DSMR6 gateway"),
            x509.NameAttribute(NameOID.COMMON_NAME, "x1p1 billing reading signer"),
        ]
    )
    cert = _issue(
        root,
        key,
        subject,
        _validity(now, BILLING_LIFETIME, root[1]),
        _key_usage(digital_signature=True, content_commitment=True),
        x509.ExtendedKeyUsage([x509.ObjectIdentifier(BILLING_EKU_OID)]),
        None,
    )
    _save(paths.billing, key, cert)
    return key, cert
