"""What ``x1p1 doctor`` shows of a certificate: names, validity, key, and the RFC 5280
details that ``ssl.VERIFY_X509_STRICT`` insists on.

The daemon's install carries no ``cryptography`` (architecture.md, Dependencies), and the
standard library's ``ssl`` describes a certificate without its key or its extensions'
criticality. So :class:`CertificateInfo` reads the few DER fields it needs itself
(RFC 5280 §4.1: tbsCertificate, validity, subject, subjectPublicKeyInfo, extensions).
Bytes in, a value out: no I/O. Anything it cannot read raises
:class:`~x1p1.exceptions.GatewayError` with one sentence.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from x1p1.exceptions import GatewayError

__all__ = ["CertificateInfo", "pem_certificates"]

_SEQUENCE, _SET, _BOOLEAN, _INTEGER, _BIT_STRING, _OCTET_STRING, _OID = (
    0x30,
    0x31,
    0x01,
    0x02,
    0x03,
    0x04,
    0x06,
)
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
_STRING_TAGS = {0x0C, 0x13, 0x14, 0x16, 0x1A, 0x1E}  # UTF8, Printable, T61, IA5, Visible, BMP

_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "emailAddress",
}
_CURVES = {
    "1.2.840.10045.3.1.7": "P-256",
    "1.3.132.0.34": "P-384",
    "1.3.132.0.35": "P-521",
}
_EC, _RSA, _ED25519, _ED448 = (
    "1.2.840.10045.2.1",
    "1.2.840.113549.1.1.1",
    "1.3.101.112",
    "1.3.101.113",
)
_BASIC_CONSTRAINTS, _KEY_USAGE, _SAN, _SKI, _AKI = (
    "2.5.29.19",
    "2.5.29.15",
    "2.5.29.17",
    "2.5.29.14",
    "2.5.29.35",
)
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL)


class _Bad(Exception):
    pass


def _tlv(data: bytes, at: int) -> tuple[int, bytes, int]:
    """The tag, the contents and the offset after one DER element at ``at``."""
    if at + 2 > len(data):
        raise _Bad("truncated")
    tag, first = data[at], data[at + 1]
    if tag & 0x1F == 0x1F:
        raise _Bad("a high tag number")
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or at + count > len(data):
            raise _Bad("a bad length")
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    end = at + length
    if end > len(data):
        raise _Bad("truncated")
    return tag, data[at:end], end


def _children(data: bytes) -> list[tuple[int, bytes]]:
    items, at = [], 0
    while at < len(data):
        tag, value, at = _tlv(data, at)
        items.append((tag, value))
    return items


def _oid(value: bytes) -> str:
    if not value:
        raise _Bad("an empty OID")
    arcs = [min(value[0] // 40, 2), value[0] - 40 * min(value[0] // 40, 2)]
    number = 0
    for byte in value[1:]:
        number = (number << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(number)
            number = 0
    return ".".join(str(arc) for arc in arcs)


def _text(tag: int, value: bytes) -> str:
    codec = "utf-16-be" if tag == 0x1E else "utf-8" if tag == 0x0C else "latin-1"
    return value.decode(codec, errors="replace")


def _name(value: bytes) -> str:
    """``CN=…, O=…`` from a Name (RFC 5280 §4.1.2.4), in the certificate's order."""
    parts = []
    for _, rdn in _children(value):
        for _, attribute in _children(rdn):
            fields = _children(attribute)
            if len(fields) != 2 or fields[0][0] != _OID:
                raise _Bad("a bad name")
            key = _oid(fields[0][1])
            tag, text = fields[1]
            shown = _text(tag, text) if tag in _STRING_TAGS else text.hex()
            parts.append(f"{_NAMES.get(key, key)}={shown}")
    return ", ".join(parts)


def _time(tag: int, value: bytes) -> datetime:
    text = value.decode("ascii", errors="replace")
    try:
        if tag == _UTC_TIME:
            moment = datetime.strptime(text, "%y%m%d%H%M%SZ")
        elif tag == _GENERALIZED_TIME:
            moment = datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise _Bad("a time of an unknown type")
    except ValueError:
        raise _Bad(f"a bad time {text!r}") from None
    return moment.replace(tzinfo=UTC)


def _key_type(value: bytes) -> str:
    fields = _children(value)
    if len(fields) != 2 or fields[0][0] != _SEQUENCE or fields[1][0] != _BIT_STRING:
        raise _Bad("a bad public key")
    algorithm = _children(fields[0][1])
    kind = _oid(algorithm[0][1])
    if kind == _EC:
        curve = _oid(algorithm[1][1]) if len(algorithm) > 1 and algorithm[1][0] == _OID else ""
        return f"EC {_CURVES.get(curve, curve or 'explicit curve')}"
    if kind == _RSA:
        rsa = _children(fields[1][1][1:])  # skip the unused-bits byte
        modulus = _children(rsa[0][1])[0][1] if rsa and rsa[0][0] == _SEQUENCE else b""
        return f"RSA {int.from_bytes(modulus, 'big').bit_length()}"
    return {_ED25519: "Ed25519", _ED448: "Ed448"}.get(kind, kind)


@dataclass(frozen=True)
class CertificateInfo:
    """The parts of one X.509 certificate a user needs to judge a gateway's chain."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    key_type: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool
    basic_constraints_critical: bool | None
    """None: no basicConstraints extension at all."""
    has_key_usage: bool
    has_subject_key_id: bool
    has_authority_key_id: bool
    san_critical: bool
    self_issued: bool

    @classmethod
    def parse(cls, der: bytes) -> CertificateInfo:
        """Read a DER certificate (RFC 5280 §4.1)."""
        try:
            return cls._parse(der)
        except (_Bad, IndexError, ValueError) as exc:
            raise GatewayError(f"a certificate that cannot be read ({exc})") from None

    @classmethod
    def _parse(cls, der: bytes) -> CertificateInfo:
        tag, certificate, _ = _tlv(der, 0)
        if tag != _SEQUENCE:
            raise _Bad("not a certificate")
        tbs_tag, tbs, _ = _tlv(certificate, 0)
        if tbs_tag != _SEQUENCE:
            raise _Bad("not a certificate")
        fields = _children(tbs)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        _serial, _algorithm, issuer, validity, subject, key = fields[:6]
        times = _children(validity[1])
        extensions: dict[str, tuple[bool, bytes]] = {}
        for tag, value in fields[6:]:
            if tag != 0xA3:  # [3] extensions; [1]/[2] unique ids are skipped
                continue
            for _, extension in _children(_children(value)[0][1]):
                parts = _children(extension)
                critical = len(parts) == 3 and parts[1] == (_BOOLEAN, b"\xff")
                extensions[_oid(parts[0][1])] = (critical, parts[-1][1])
        is_ca, bc_critical = False, None
        if _BASIC_CONSTRAINTS in extensions:
            bc_critical, body = extensions[_BASIC_CONSTRAINTS]
            inner = _children(_children(body)[0][1]) if body else []
            is_ca = bool(inner) and inner[0] == (_BOOLEAN, b"\xff")
        dns: list[str] = []
        ips: list[str] = []
        san_critical = False
        if _SAN in extensions:
            san_critical, body = extensions[_SAN]
            for tag, value in _children(_children(body)[0][1]):
                if tag == 0x82:
                    dns.append(value.decode("ascii", errors="replace"))
                elif tag == 0x87 and len(value) in (4, 16):
                    ips.append(str(ipaddress.ip_address(value)))
        return cls(
            subject=_name(subject[1]),
            issuer=_name(issuer[1]),
            not_before=_time(*times[0]),
            not_after=_time(*times[1]),
            key_type=_key_type(key[1]),
            dns_names=tuple(dns),
            ip_addresses=tuple(ips),
            is_ca=is_ca,
            basic_constraints_critical=bc_critical,
            has_key_usage=_KEY_USAGE in extensions,
            has_subject_key_id=_SKI in extensions,
            has_authority_key_id=_AKI in extensions,
            san_critical=san_critical,
            self_issued=subject[1] == issuer[1],
        )

    def strict_failures(self) -> tuple[str, ...]:
        """What ``ssl.VERIFY_X509_STRICT`` (OpenSSL's X.509-strict mode) objects to."""
        found = []
        if self.is_ca and not self.basic_constraints_critical:
            found.append("basicConstraints not critical")
        if self.is_ca and not self.has_key_usage:
            found.append("CA without keyUsage")
        if self.is_ca and not self.has_subject_key_id:
            found.append("CA without subjectKeyIdentifier")
        if not self.self_issued and not self.has_authority_key_id:
            found.append("no authorityKeyIdentifier")
        if not self.subject and not self.san_critical:
            found.append("empty subject with a non-critical subjectAltName")
        return tuple(found)

    def validity_problem(self, now: datetime) -> str | None:
        """``expired`` or ``not yet valid`` at ``now``, else None."""
        if now > self.not_after:
            return "expired"
        if now < self.not_before:
            return "not yet valid"
        return None

    def names(self, limit: int = 4) -> str:
        """The subjectAltName entries, as ``DNS:… IP:…`` (the first ``limit`` of them)."""
        entries = [f"DNS:{n}" for n in self.dns_names] + [f"IP:{a}" for a in self.ip_addresses]
        more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
        return " ".join(entries[:limit]) + more if entries else "none"


def pem_certificates(text: bytes | str) -> list[bytes]:
    """The DER bytes of every certificate in PEM text (a CA file may hold several)."""
    data = text.encode("ascii", errors="replace") if isinstance(text, str) else text
    found = []
    for match in _PEM.finditer(data):
        try:
            found.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except (binascii.Error, ValueError):
            continue
    return found
