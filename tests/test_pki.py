"""The gateway PKI (x1p1.gateway.pki) and the client TLS settings (x1p1.converter.tls).

Real TLS 1.3 handshakes on loopback between the standard library's server and client,
with ``ssl.VERIFY_X509_STRICT`` on the client (x1-api.md, "Network and discovery").
"""

from __future__ import annotations

import shutil
import socket
import ssl
import stat
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from x1p1.converter.tls import client_ssl_context
from x1p1.exceptions import ConfigError, StateError
from x1p1.gateway.pki import (
    LEAF_LIFETIME,
    RENEW_BEFORE,
    GatewayPKI,
    candidate_host_names,
    local_addresses,
    root_ca_pem,
)
from x1p1.x1.billing import BILLING_EKU_OID


@pytest.fixture
def pki(tmp_path: Path) -> GatewayPKI:
    return GatewayPKI.load_or_create(tmp_path / "state", ["X1-interface-3.local"], [])


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str,
    family: socket.AddressFamily = socket.AF_INET,
) -> str | None:
    """One real handshake on loopback; the client's negotiated version, or it raises."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(1)
    listener.settimeout(10)
    port = listener.getsockname()[1]
    server_error: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:  # pragma: no cover - only if the client never came
            server_error.append(exc)
            return
        conn.settimeout(10)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            server_error.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                assert tls.recv(5) == b"hello"
                version = tls.version()
                tls.sendall(b"x")
                return version
    finally:
        thread.join(10)
        listener.close()
        assert not thread.is_alive()


# -- real handshakes -----------------------------------------------------------------------


def test_tls13_handshake_verifies_strictly(pki: GatewayPKI) -> None:
    client = client_ssl_context(pki.root_cert_path)
    assert client.verify_flags & ssl.VERIFY_X509_STRICT
    assert client.minimum_version == ssl.TLSVersion.TLSv1_3
    version = handshake(pki.server_ssl_context(), client, "X1-interface.local")
    assert version == "TLSv1.3"


@pytest.mark.parametrize(
    "name", ["X1-interface-1.local", "X1-interface-9.local", "x1-INTERFACE-3.local", "localhost"]
)
def test_every_candidate_name_verifies(pki: GatewayPKI, name: str) -> None:
    client = client_ssl_context(None, cadata=pki.root_pem.decode())
    assert handshake(pki.server_ssl_context(), client, name) == "TLSv1.3"


def test_ip_addresses_verify(pki: GatewayPKI) -> None:
    client = client_ssl_context(pki.root_cert_path)
    assert handshake(pki.server_ssl_context(), client, "127.0.0.1") == "TLSv1.3"
    if socket.has_ipv6:
        try:
            version = handshake(pki.server_ssl_context(), client, "::1", socket.AF_INET6)
        except OSError as exc:
            if isinstance(exc, ssl.SSLError):
                raise
            pytest.skip(f"no IPv6 loopback here: {exc}")
        assert version == "TLSv1.3"


def test_tls12_client_is_refused(pki: GatewayPKI) -> None:
    client = client_ssl_context(pki.root_cert_path)
    client.minimum_version = ssl.TLSVersion.TLSv1_2
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(pki.server_ssl_context(), client, "X1-interface.local")
    # and the very same client, allowed TLS 1.3 again, gets through: the refusal was the version
    client.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert handshake(pki.server_ssl_context(), client, "X1-interface.local") == "TLSv1.3"


def test_server_context_refuses_tls12(pki: GatewayPKI) -> None:
    assert pki.server_ssl_context().minimum_version == ssl.TLSVersion.TLSv1_3


def test_wrong_host_name_is_refused(pki: GatewayPKI) -> None:
    client = client_ssl_context(pki.root_cert_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch"):
        handshake(pki.server_ssl_context(), client, "X1-interface-10.local")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(pki.server_ssl_context(), client, "example.com")


def test_wrong_ca_is_refused(pki: GatewayPKI, tmp_path: Path) -> None:
    other = GatewayPKI.load_or_create(tmp_path / "other", [], [])
    assert other.root_pem != pki.root_pem
    client = client_ssl_context(other.root_cert_path)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(pki.server_ssl_context(), client, "X1-interface.local")


def test_openssl_strict_verify_agrees(pki: GatewayPKI) -> None:
    """An independent verifier: the openssl command with -x509_strict, if installed."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-x509_strict",
            "-CAfile",
            str(pki.root_cert_path),
            str(pki.leaf_cert_path),
            str(pki.billing_cert_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the certificates' contents ------------------------------------------------------------


def test_root_profile(pki: GatewayPKI) -> None:
    root = pki.root_certificate
    ext = root.extensions
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length in (0, 1)
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert timedelta(days=19 * 365) < lifetime < timedelta(days=21 * 365)


def test_leaf_profile(pki: GatewayPKI) -> None:
    leaf = pki.leaf_certificate
    ext = leaf.extensions
    basic = ext.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    root_ski = pki.root_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root_ski.value.digest
    ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=398)
    assert set(candidate_host_names()) | {"X1-interface-3.local", "localhost"} == set(
        pki.leaf_dns_names
    )
    assert {"127.0.0.1", "::1"} <= set(pki.leaf_ip_addresses)


def test_billing_certificate_profile(pki: GatewayPKI) -> None:
    cert = pki.billing_certificate
    cert.verify_directly_issued_by(pki.root_certificate)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.ObjectIdentifier(BILLING_EKU_OID)]
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca


def test_base_name_and_addresses(tmp_path: Path) -> None:
    pki = GatewayPKI.load_or_create(
        tmp_path, ["192.0.2.7"], ["fe80::1%eth0", "10.1.2.3"], base_name="meterkast"
    )
    assert "meterkast.local" in pki.leaf_dns_names
    assert "meterkast-9.local" in pki.leaf_dns_names
    assert "X1-interface.local" not in pki.leaf_dns_names
    assert {"192.0.2.7", "fe80::1", "10.1.2.3", "127.0.0.1", "::1"} == set(pki.leaf_ip_addresses)
    client = client_ssl_context(pki.root_cert_path)
    assert handshake(pki.server_ssl_context(), client, "meterkast-4.local") == "TLSv1.3"


def test_local_addresses_include_loopback() -> None:
    found = local_addresses()
    assert found[:2] == ["127.0.0.1", "::1"]
    assert all("%" not in a for a in found)


@pytest.mark.parametrize("bad", ["bad name.local", "x1-ïnterface.local", "-x.local", ""])
def test_bad_host_names_are_config_errors(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="host name"):
        GatewayPKI.load_or_create(tmp_path, [bad], [])


def test_bad_address_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an IP address"):
        GatewayPKI.load_or_create(tmp_path, [], ["300.1.1.1"])


# -- persistence and renewal ---------------------------------------------------------------


def test_second_load_reuses_everything(pki: GatewayPKI, tmp_path: Path) -> None:
    assert pki.renewed == ("root", "leaf", "billing")
    again = GatewayPKI.load_or_create(tmp_path / "state", ["X1-interface-3.local"], [])
    assert again.renewed == ()
    assert again.root_pem == pki.root_pem
    assert again.leaf_certificate == pki.leaf_certificate
    assert again.billing_certificate == pki.billing_certificate
    assert root_ca_pem(tmp_path / "state") == pki.root_pem


def test_root_ca_pem_creates_a_missing_pki(tmp_path: Path) -> None:
    pem = root_ca_pem(tmp_path / "fresh")
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert GatewayPKI.load_or_create(tmp_path / "fresh").root_pem == pem


def test_key_files_are_private(pki: GatewayPKI) -> None:
    for path in (pki.root_key_path, pki.leaf_key_path, pki.billing_key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700
    leftovers = [p.name for p in pki.directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_leaf_renewed_for_a_new_name(pki: GatewayPKI, tmp_path: Path) -> None:
    assert not pki.covers(["X1-interface-12.local"])
    renewed = GatewayPKI.load_or_create(
        tmp_path / "state", ["X1-interface-12.local"], ["198.51.100.4"]
    )
    assert renewed.renewed == ("leaf",)
    assert renewed.root_pem == pki.root_pem
    assert "X1-interface-12.local" in renewed.leaf_dns_names
    assert "198.51.100.4" in renewed.leaf_ip_addresses
    assert renewed.billing_certificate == pki.billing_certificate
    client = client_ssl_context(renewed.root_cert_path)
    assert handshake(renewed.server_ssl_context(), client, "X1-interface-12.local") == "TLSv1.3"
    # a name already covered (case does not matter) does not renew again
    same = GatewayPKI.load_or_create(tmp_path / "state", ["x1-interface-12.LOCAL"], [])
    assert same.renewed == ()


def test_leaf_renewed_near_expiry(pki: GatewayPKI, tmp_path: Path) -> None:
    leaf = pki.leaf_certificate
    before = leaf.not_valid_after_utc - RENEW_BEFORE - timedelta(days=1)
    kept = GatewayPKI.load_or_create(tmp_path / "state", ["X1-interface-3.local"], [], before)
    assert kept.renewed == ()
    later = leaf.not_valid_after_utc - RENEW_BEFORE + timedelta(days=1)
    renewed = GatewayPKI.load_or_create(tmp_path / "state", ["X1-interface-3.local"], [], later)
    assert renewed.renewed == ("leaf",)
    assert renewed.leaf_certificate.not_valid_after_utc > later + LEAF_LIFETIME - timedelta(1)
    assert renewed.root_pem == pki.root_pem


def test_leaf_not_outliving_root(tmp_path: Path) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    pki = GatewayPKI.load_or_create(tmp_path, now=start)
    near_end = pki.root_certificate.not_valid_after_utc - timedelta(days=100)
    renewed = GatewayPKI.load_or_create(tmp_path, now=near_end)
    assert renewed.renewed == ("leaf", "billing")
    root_end = pki.root_certificate.not_valid_after_utc
    assert renewed.leaf_certificate.not_valid_after_utc == root_end
    assert renewed.billing_certificate.not_valid_after_utc == root_end


def test_damaged_leaf_is_reissued(pki: GatewayPKI, tmp_path: Path) -> None:
    pki.leaf_cert_path.write_bytes(b"garbage")
    again = GatewayPKI.load_or_create(tmp_path / "state", ["X1-interface-3.local"], [])
    assert again.renewed == ("leaf",)
    # a key that does not match its certificate (a crash between the two writes)
    other = GatewayPKI.load_or_create(tmp_path / "other")
    shutil.copy(other.leaf_key_path, again.leaf_key_path)
    third = GatewayPKI.load_or_create(tmp_path / "state", ["X1-interface-3.local"], [])
    assert third.renewed == ("leaf",)
    client = client_ssl_context(third.root_cert_path)
    assert handshake(third.server_ssl_context(), client, "X1-interface.local") == "TLSv1.3"


def test_damaged_root_is_a_state_error_not_a_silent_new_root(
    pki: GatewayPKI, tmp_path: Path
) -> None:
    pki.root_key_path.write_bytes(b"not a key")
    with pytest.raises(StateError, match="root CA cannot be used"):
        GatewayPKI.load_or_create(tmp_path / "state")
    assert pki.root_cert_path.read_bytes() == pki.root_pem


def test_expired_root_is_a_state_error(pki: GatewayPKI, tmp_path: Path) -> None:
    after = pki.root_certificate.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(StateError, match="expired"):
        GatewayPKI.load_or_create(tmp_path / "state", now=after)


def test_concurrent_first_loads_agree(tmp_path: Path) -> None:
    results: list[bytes] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            results.append(GatewayPKI.load_or_create(tmp_path).root_pem)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4


# -- the client helper ---------------------------------------------------------------------


def test_client_context_settings(tmp_path: Path) -> None:
    ctx = client_ssl_context(None)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_flags & ssl.VERIFY_X509_STRICT


def test_client_context_bad_ca_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        client_ssl_context(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="no usable PEM"):
        client_ssl_context(junk)
    with pytest.raises(ConfigError, match="no usable PEM"):
        client_ssl_context(None, cadata="-----BEGIN CERTIFICATE-----\nAAAA\n")


def test_strict_flag_is_what_refuses_a_lax_root(tmp_path: Path) -> None:
    """A root with non-critical basicConstraints passes a lax client, not ours.

    Shows the strict handshakes above would fail if the PKI bent RFC 5280.
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC) - timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lax root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lax")]))
        .issuer_name(root_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("X1-interface.local")]), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    chain = tmp_path / "lax.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain)
    cadata = root.public_bytes(serialization.Encoding.PEM).decode()
    lax = client_ssl_context(None, cadata=cadata)
    lax.verify_flags &= ~ssl.VERIFY_X509_STRICT
    assert handshake(server, lax, "X1-interface.local") == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client_ssl_context(None, cadata=cadata), "X1-interface.local")
