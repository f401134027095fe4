"""Billing readings: canonical form, signing, verification and `x1p1 verify-billing`.

X1 §6.2.5–§6.2.6 and x1-api.md "Billing". Signing uses a real PKI made by
x1p1.gateway.pki in a temporary state directory.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from x1p1.cli import main
from x1p1.exceptions import BillingVerificationError
from x1p1.gateway.billing_signature import BillingSigner, decode_signature, verify_billing
from x1p1.gateway.pki import GatewayPKI
from x1p1.x1.billing import (
    BillingReading,
    BillingResponse,
    canonical_bytes,
    format_interval_end,
    format_register_value,
    parse_billing_response,
)

START = datetime(2026, 5, 9, tzinfo=UTC)
REGISTERS = [
    ("1-0:1.8.1.255", "kWh"),
    ("1-0:1.8.2.255", "kWh"),
    ("1-0:2.8.1.255", "kWh"),
    ("1-0:2.8.2.255", "kWh"),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> GatewayPKI:
    return GatewayPKI.load_or_create(tmp_path_factory.mktemp("billing-state"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> GatewayPKI:
    return GatewayPKI.load_or_create(tmp_path_factory.mktemp("billing-other"))


def make_response(signer: BillingSigner, intervals: int = 4) -> dict[str, Any]:
    readings = []
    for i in range(intervals):
        t = format_interval_end(START + timedelta(minutes=15 * (i + 1)))
        for n, (obis, unit) in enumerate(REGISTERS):
            value = format_register_value(1000 * n + 12.345 + 0.25 * i)
            readings.append(signer.sign_reading(t=t, obis=obis, value=value, unit=unit))
    gas_t = format_interval_end(START + timedelta(hours=1))
    readings.append(
        signer.sign_reading(t=gas_t, obis="0-1:24.2.1.255", value="004321.987", unit="m³")
    )
    response = signer.response(
        "E0012345678901234",
        readings,
        from_=format_interval_end(START),
        to=format_interval_end(START + timedelta(hours=1)),
    )
    return response.to_json()


@pytest.fixture
def response(pki: GatewayPKI) -> dict[str, Any]:
    return make_response(pki.signer())


# -- the canonical form --------------------------------------------------------------------


def test_canonical_bytes_exact() -> None:
    data = canonical_bytes(
        t="2026-05-09T00:15:00Z", obis="0-1:24.2.1.255", value="004321.987", unit="m³"
    )
    assert (
        data
        == (
            '{"obis":"0-1:24.2.1.255","t":"2026-05-09T00:15:00Z","unit":"m³","value":"004321.987"}'
        ).encode()
    )
    escaped = canonical_bytes(t='a"b\\c\n\x01', obis="o", value="1", unit="u")
    assert escaped == b'{"obis":"o","t":"a\\"b\\\\c\\n\\u0001","unit":"u","value":"1"}'


def test_reading_canonical_ignores_signature() -> None:
    a = BillingReading("2026-05-09T00:15:00Z", "1-0:1.8.1.255", "000001.000", "kWh", "AAAA")
    b = BillingReading("2026-05-09T00:15:00Z", "1-0:1.8.1.255", "000001.000", "kWh", "BBBB")
    assert a.canonical_bytes() == b.canonical_bytes()


def test_format_register_value() -> None:
    assert format_register_value(12345.6784) == "012345.678"
    assert format_register_value("0") == "000000.000"
    assert format_register_value(999999.9994) == "999999.999"
    assert format_register_value(42, int_digits=5, decimals=0) == "00042"
    for bad in (-1, 1_000_000, "abc", float("nan")):
        with pytest.raises(ValueError):
            format_register_value(bad)


def test_format_interval_end() -> None:
    from datetime import timezone

    cest = timezone(timedelta(hours=2))
    assert format_interval_end(datetime(2026, 5, 9, 2, 15, tzinfo=cest)) == "2026-05-09T00:15:00Z"
    with pytest.raises(ValueError):
        format_interval_end(datetime(2026, 5, 9))


# -- sign and verify -----------------------------------------------------------------------


def test_round_trip(pki: GatewayPKI, response: dict[str, Any]) -> None:
    text = json.dumps(response)
    report = verify_billing(json.loads(text), pki.root_pem)
    assert report.ok, report.summary()
    assert report.total == 17 and report.valid == 17
    assert report.equipment_id == "E0012345678901234"
    assert "billing reading signer" in report.certificate_subject
    # and from the raw bytes, the parsed value object, and the text
    assert verify_billing(text.encode(), pki.root_pem).ok
    assert verify_billing(parse_billing_response(text), pki.root_pem).ok
    assert parse_billing_response(text).to_json() == response


def test_signature_format(pki: GatewayPKI, response: dict[str, Any]) -> None:
    sig = response["readings"][0]["signature"]
    assert "=" not in sig and "+" not in sig and "/" not in sig
    der = decode_signature(sig)
    # an independent check of the same bytes with cryptography directly
    reading = response["readings"][0]
    data = json.dumps(
        {k: reading[k] for k in ("t", "obis", "value", "unit")},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    key = pki.billing_certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(der, data, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("field", "new"),
    [
        ("value", "012345.679"),
        ("value", "12345.678"),
        ("t", "2026-05-09T00:45:00Z"),
        ("t", "2026-05-09T02:30:00+02:00"),  # the same instant, other bytes
        ("obis", "1-0:2.8.2.255"),
        ("unit", "Wh"),
    ],
)
def test_any_change_fails_that_reading_only(
    pki: GatewayPKI, response: dict[str, Any], field: str, new: str
) -> None:
    assert response["readings"][5]["t"] == "2026-05-09T00:30:00Z"
    assert response["readings"][5][field] != new
    response["readings"][5][field] = new
    report = verify_billing(response, pki.root_pem)
    assert not report.ok
    assert report.certificate_error is None
    assert [(f.index, f.t, f.obis) for f in report.failures] == [
        (5, response["readings"][5]["t"], response["readings"][5]["obis"])
    ]
    assert "signature does not match" in report.failures[0].reason
    assert report.valid == report.total - 1


def test_swapped_signatures_fail_both(pki: GatewayPKI, response: dict[str, Any]) -> None:
    r = response["readings"]
    r[0]["signature"], r[1]["signature"] = r[1]["signature"], r[0]["signature"]
    report = verify_billing(response, pki.root_pem)
    assert [f.index for f in report.failures] == [0, 1]


@pytest.mark.parametrize(
    ("field", "new", "reason"),
    [
        ("value", "12,5", "not a decimal"),
        ("t", "yesterday", "RFC 3339"),
        ("t", "2026-02-30T00:00:00Z", "not a valid date"),
        ("obis", "energy", "OBIS"),
        ("unit", "", "unit"),
        ("signature", "not base64!", "base64url"),
        ("signature", "AAAA", "signature does not match"),
        ("signature", "A", "base64url"),
    ],
)
def test_bad_content_fails_that_reading_with_a_reason(
    pki: GatewayPKI, response: dict[str, Any], field: str, new: str, reason: str
) -> None:
    response["readings"][2][field] = new
    report = verify_billing(response, pki.root_pem)
    assert [f.index for f in report.failures] == [2]
    assert reason in report.failures[0].reason


def test_certificate_from_another_root_fails_all(
    pki: GatewayPKI, other_pki: GatewayPKI, response: dict[str, Any]
) -> None:
    report = verify_billing(response, other_pki.root_pem)
    assert not report.ok
    assert report.certificate_error is not None and "not issued" in report.certificate_error
    assert [f.index for f in report.failures] == list(range(report.total))
    # readings re-signed by the other gateway, presented with our certificate, fail too
    forged = make_response(other_pki.signer())
    forged["certificate"] = response["certificate"]
    report = verify_billing(forged, pki.root_pem)
    assert report.certificate_error is None
    assert len(report.failures) == report.total


def test_root_bundle_with_the_right_root_verifies(
    pki: GatewayPKI, other_pki: GatewayPKI, response: dict[str, Any]
) -> None:
    assert verify_billing(response, other_pki.root_pem + pki.root_pem).ok


def test_tls_leaf_is_not_a_billing_signer(pki: GatewayPKI, response: dict[str, Any]) -> None:
    """A certificate from the right root but without the billing EKU is refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    tls_signer = BillingSigner(key, pki.leaf_certificate)
    response["certificate"] = tls_signer.certificate_pem
    report = verify_billing(response, pki.root_pem)
    assert report.certificate_error is not None
    assert "extendedKeyUsage" in report.certificate_error


def test_validity_is_checked(pki: GatewayPKI, response: dict[str, Any]) -> None:
    cert = pki.billing_certificate
    late = verify_billing(response, pki.root_pem, now=cert.not_valid_after_utc + timedelta(1))
    assert late.certificate_error is not None and "expired" in late.certificate_error
    early = verify_billing(response, pki.root_pem, now=cert.not_valid_before_utc - timedelta(1))
    assert early.certificate_error is not None and "not valid before" in early.certificate_error


def test_root_must_be_a_ca(pki: GatewayPKI, response: dict[str, Any]) -> None:
    """Handing the signing certificate itself as "root" does not make it trusted."""
    leaf_as_root = pki.billing_certificate.public_bytes(serialization.Encoding.PEM)
    report = verify_billing(response, leaf_as_root)
    assert report.certificate_error is not None


def test_report_json_and_summary(pki: GatewayPKI, response: dict[str, Any]) -> None:
    response["readings"][3]["value"] = "000000.001"
    report = verify_billing(response, pki.root_pem)
    out = report.to_json()
    assert out["ok"] is False and out["readings"] == 17 and out["valid"] == 16
    assert out["failed"][0]["index"] == 3 and out["failed"][0]["obis"] == "1-0:2.8.2.255"
    assert out["certificate"]["trusted"] is True
    assert "FAILED: 16 of 17" in report.summary()
    assert "reading 3 " in report.summary()


# -- malformed input -----------------------------------------------------------------------


def _without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


MALFORMED: list[tuple[Any, str]] = [
    ("{not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    ([], "JSON object"),
    ({"certificate": "x", "readings": []}, "equipment_id"),
]


@pytest.mark.parametrize(("obj", "message"), MALFORMED)
def test_malformed_top_level(pki: GatewayPKI, obj: Any, message: str) -> None:
    with pytest.raises(BillingVerificationError, match=message):
        verify_billing(obj, pki.root_pem)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: _without(r, "readings"), "lacks 'readings'"),
        (lambda r: {**r, "readings": {}}, "readings must be a JSON array"),
        (lambda r: {**r, "equipment_id": 7}, "equipment_id"),
        (lambda r: {**r, "certificate": "hello"}, "PEM certificate"),
        (
            lambda r: {
                **r,
                "certificate": "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n",
            },
            "not a readable PEM",
        ),
        (lambda r: {**r, "readings": [1]}, r"readings\[0\] is not a JSON object"),
        (
            lambda r: {**r, "readings": [_without(r["readings"][0], "signature")]},
            r"readings\[0\] lacks signature",
        ),
        (
            lambda r: {**r, "readings": [{**r["readings"][0], "value": 12345.678}]},
            r"readings\[0\]\.value must be a string, got a number",
        ),
        (
            lambda r: {**r, "readings": [{**r["readings"][0], "quality": "estimated"}]},
            "not signed: quality",
        ),
        (lambda r: {**r, "from": 3}, "from must be a string"),
    ],
)
def test_malformed_response(
    pki: GatewayPKI, response: dict[str, Any], mutate: Any, message: str
) -> None:
    with pytest.raises(BillingVerificationError, match=message):
        verify_billing(mutate(response), pki.root_pem)


def test_lone_surrogate_is_malformed_not_a_crash(pki: GatewayPKI, response: dict[str, Any]) -> None:
    text = json.dumps(response).replace('"kWh"', '"\\ud800"', 1)
    report = verify_billing(text, pki.root_pem)
    assert len(report.failures) == 1
    assert "Unicode" in report.failures[0].reason or "unit" in report.failures[0].reason


def test_bad_root_is_an_error(response: dict[str, Any]) -> None:
    with pytest.raises(BillingVerificationError, match="root CA"):
        verify_billing(response, b"not pem")


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda kids: (
            st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_crashes(obj: Any) -> None:
    try:
        BillingResponse.parse(obj)
    except BillingVerificationError:
        pass


def test_signer_rejects_non_string_fields(pki: GatewayPKI) -> None:
    signer = pki.signer()
    with pytest.raises(TypeError):
        signer.sign(
            {"t": "2026-05-09T00:15:00Z", "obis": "1-0:1.8.1.255", "value": 1.0, "unit": "kWh"}
        )
    with pytest.raises(ValueError):
        signer.sign({"t": "2026-05-09T00:15:00Z", "obis": "1-0:1.8.1.255", "unit": "kWh"})


# -- the command ---------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path, pki: GatewayPKI, response: dict[str, Any]) -> tuple[Path, Path]:
    saved = tmp_path / "billing.json"
    saved.write_text(json.dumps(response, ensure_ascii=False), encoding="utf-8")
    root = tmp_path / "root.pem"
    root.write_bytes(pki.root_pem)
    return saved, root


def test_cli_all_valid(files: tuple[Path, Path]) -> None:
    saved, root = files
    result = CliRunner().invoke(main, ["verify-billing", str(saved), "--ca", str(root)])
    assert result.exit_code == 0, result.output
    assert "OK: 17 of 17 readings" in result.output


def test_cli_tampered(files: tuple[Path, Path]) -> None:
    saved, root = files
    data = json.loads(saved.read_text())
    data["readings"][7]["value"] = "999999.999"
    saved.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["verify-billing", str(saved), "--ca", str(root)])
    assert result.exit_code == 1
    assert "reading 7 " in result.output and "FAILED: 16 of 17" in result.output
    result = CliRunner().invoke(main, ["verify-billing", str(saved), "--ca", str(root), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False and [f["index"] for f in report["failed"]] == [7]


def test_cli_wrong_root(files: tuple[Path, Path], other_pki: GatewayPKI, tmp_path: Path) -> None:
    saved, _ = files
    other = tmp_path / "other.pem"
    other.write_bytes(other_pki.root_pem)
    result = CliRunner().invoke(main, ["verify-billing", str(saved), "--ca", str(other)])
    assert result.exit_code == 1
    assert "certificate NOT trusted" in result.output


def test_cli_stdin(files: tuple[Path, Path]) -> None:
    saved, root = files
    result = CliRunner().invoke(
        main, ["verify-billing", "-", "--ca", str(root)], input=saved.read_bytes()
    )
    assert result.exit_code == 0, result.output


def test_cli_malformed_and_usage(files: tuple[Path, Path], tmp_path: Path) -> None:
    saved, root = files
    runner = CliRunner()
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"readings": 3')
    result = runner.invoke(main, ["verify-billing", str(garbage), "--ca", str(root)])
    assert result.exit_code == 2 and "not JSON" in result.output
    result = runner.invoke(main, ["verify-billing", str(tmp_path / "nope"), "--ca", str(root)])
    assert result.exit_code == 2 and "cannot read" in result.output
    result = runner.invoke(main, ["verify-billing", str(saved)])
    assert result.exit_code == 2 and "--ca" in result.output
    result = runner.invoke(main, ["verify-billing", str(saved), "--ca", str(saved)])
    assert result.exit_code == 2 and "root CA" in result.output


def test_cli_without_cryptography(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    saved, root = files
    monkeypatch.setitem(sys.modules, "x1p1.gateway.billing_signature", None)
    result = CliRunner().invoke(main, ["verify-billing", str(saved), "--ca", str(root)])
    assert result.exit_code == 2
    assert "pip install 'x1p1[gateway]'" in result.output


def test_cli_help_documents_exit_codes() -> None:
    result = CliRunner().invoke(main, ["verify-billing", "--help"])
    assert result.exit_code == 0
    assert "0 every reading verified" in result.output
