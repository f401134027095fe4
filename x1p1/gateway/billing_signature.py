"""Signing billing readings and verifying a saved billing response (X1 §6.2.5–§6.2.6).

The format (which fields, which bytes are signed, how the signature is written) is in
:mod:`x1p1.x1.billing`; this module adds the cryptography: :class:`BillingSigner` signs
with the gateway's billing key (made by :mod:`x1p1.gateway.pki`), and
:func:`verify_billing` checks a response against a root CA the way a customer or a
supplier would: the signing certificate must be issued by that root, be valid, be meant
for billing signatures; then every reading's signature must hold. It reports which
readings fail and why rather than stopping at the first.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from x1p1.exceptions import BillingVerificationError
from x1p1.x1.billing import (
    BILLING_EKU_OID,
    SIGNED_FIELDS,
    BillingReading,
    BillingResponse,
    ReadingFailure,
    VerificationReport,
    canonical_bytes,
    parse_billing_response,
)

_ALGORITHM = ec.ECDSA(hashes.SHA256())


def encode_signature(der: bytes) -> str:
    """base64url without padding (RFC 4648 §5), as the format writes signatures."""
    return base64.urlsafe_b64encode(der).rstrip(b"=").decode("ascii")


def decode_signature(text: str) -> bytes:
    """The DER bytes of a base64url signature, padded or not; ValueError if it is not one."""
    stripped = text.rstrip("=")
    if len(text) - len(stripped) > 2 or len(stripped) % 4 == 1:
        raise ValueError("signature is not base64url")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except ValueError:
        raise ValueError("signature is not base64url") from None


class BillingSigner:
    """Signs billing readings with the gateway's billing key (ECDSA P-256, SHA-256)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the billing key must be an ECDSA P-256 key")
        self._key = key
        self.certificate = certificate

    @property
    def certificate_pem(self) -> str:
        """The signing certificate in PEM, as the response carries it."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def sign(self, reading_fields: Mapping[str, object]) -> str:
        """The signature of a reading's ``t``, ``obis``, ``value`` and ``unit``.

        Other keys (a ``signature`` already there, say) are ignored. Every signed field
        must be a string: write ``value`` with
        :func:`~x1p1.x1.billing.format_register_value`.
        """
        values: dict[str, str] = {}
        for name in SIGNED_FIELDS:
            if name not in reading_fields:
                raise ValueError(f"a billing reading needs {name!r}")
            value = reading_fields[name]
            if not isinstance(value, str):
                raise TypeError(f"billing field {name!r} must be a string, not {type(value)}")
            values[name] = value
        data = canonical_bytes(
            t=values["t"], obis=values["obis"], value=values["value"], unit=values["unit"]
        )
        return encode_signature(self._key.sign(data, _ALGORITHM))

    def sign_reading(self, *, t: str, obis: str, value: str, unit: str) -> BillingReading:
        """A signed :class:`~x1p1.x1.billing.BillingReading`."""
        fields = {"t": t, "obis": obis, "value": value, "unit": unit}
        return BillingReading(t=t, obis=obis, value=value, unit=unit, signature=self.sign(fields))

    def response(
        self,
        equipment_id: str,
        readings: Iterable[BillingReading],
        *,
        from_: str | None = None,
        to: str | None = None,
    ) -> BillingResponse:
        """The billing response for ``equipment_id``, carrying this signer's certificate."""
        return BillingResponse(
            equipment_id=equipment_id,
            certificate=self.certificate_pem,
            readings=tuple(readings),
            from_=from_,
            to=to,
        )


def verify_billing(
    response_obj: object, root_pem: bytes, *, now: datetime | None = None
) -> VerificationReport:
    """Check a billing response against the root CA(s) in ``root_pem``.

    ``response_obj`` is the decoded JSON (or its text, or a
    :class:`~x1p1.x1.billing.BillingResponse`). ``now`` is when validity is judged
    (default: the clock). A signing certificate that the root did not issue, that is not
    valid at ``now`` or not meant for billing signatures fails every reading; otherwise
    each reading passes or fails on its own.

    Raises :class:`~x1p1.exceptions.BillingVerificationError` when the response is
    malformed or ``root_pem`` holds no certificate: a bad signature is a result in the
    report, not an exception.
    """
    response = (
        response_obj
        if isinstance(response_obj, BillingResponse)
        else parse_billing_response(response_obj)
    )
    when = (now or datetime.now(UTC)).astimezone(UTC)
    try:
        roots = x509.load_pem_x509_certificates(root_pem)
    except ValueError:
        raise BillingVerificationError("the root CA file holds no PEM certificate") from None
    try:
        cert = x509.load_pem_x509_certificate(response.certificate.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise BillingVerificationError(
            "the response's certificate is not a readable PEM certificate"
        ) from None

    subject = cert.subject.rfc4514_string()
    problem = _certificate_problem(cert, roots, when)
    if problem is not None:
        failures = tuple(
            ReadingFailure(i, r.t, r.obis, f"certificate not trusted: {problem}")
            for i, r in enumerate(response.readings)
        )
        return VerificationReport(
            response.equipment_id, len(response.readings), subject, problem, failures
        )

    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)  # _certificate_problem checked
    failures_list: list[ReadingFailure] = []
    for index, reading in enumerate(response.readings):
        reason = _reading_problem(reading, public_key)
        if reason is not None:
            failures_list.append(ReadingFailure(index, reading.t, reading.obis, reason))
    return VerificationReport(
        response.equipment_id, len(response.readings), subject, None, tuple(failures_list)
    )


def _reading_problem(reading: BillingReading, key: ec.EllipticCurvePublicKey) -> str | None:
    problems = reading.content_problems()
    if problems:
        return "; ".join(problems)
    try:
        der = decode_signature(reading.signature)
        data = reading.canonical_bytes()
    except (ValueError, BillingVerificationError) as exc:
        return str(exc)
    try:
        key.verify(der, data, _ALGORITHM)
    except InvalidSignature:
        return "signature does not match the reading (t, obis, value or unit changed?)"
    except ValueError:  # pragma: no cover - cryptography reports bad DER as InvalidSignature
        return "signature is not a DER ECDSA signature"
    return None


def _certificate_problem(
    cert: x509.Certificate, roots: list[x509.Certificate], now: datetime
) -> str | None:
    """Why ``cert`` is not a trusted billing signer under ``roots``, or ``None``."""
    issuer = next((root for root in roots if _directly_issued(cert, root)), None)
    if issuer is None:
        return "it was not issued by the given root CA"
    if not _is_ca(issuer):
        return "the given root certificate is not a CA (basicConstraints, keyCertSign)"
    for which, c in (("root CA", issuer), ("signing certificate", cert)):
        if now < c.not_valid_before_utc:
            return f"the {which} is not valid before {c.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
        if now > c.not_valid_after_utc:
            return f"the {which} expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if basic.ca:
            return "the signing certificate is a CA certificate"
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "the signing certificate has no keyUsage"
    if not usage.digital_signature:
        return "the signing certificate's keyUsage lacks digitalSignature"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "the signing certificate has no extendedKeyUsage for billing readings"
    if x509.ObjectIdentifier(BILLING_EKU_OID) not in eku:
        return "the signing certificate is not meant for billing readings (extendedKeyUsage)"
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return "the signing certificate's key is not ECDSA P-256"
    return None


def _directly_issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not basic.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign
