"""The converter against gateways whose TLS differs from the embedded gateway's.

Each dialect (``tls_dialects.py``) runs the tests' own X1 gateway on loopback behind
certificates built here. For each, ``x1p1 pair`` (the real command, pinning the vendor's
root with ``--ca``) succeeds or fails with its sentence and exit code, and an accepted
pairing relays byte-exact telegrams (read through dsmr_parser) into a pty while the
converter's state says "connected". docs/x1-api.md, "What the converter tolerates", TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from converter_support import fast_options, running
from p1_pty import PtyPeer, until
from tls_dialects import DialectGateway, DialectPKI, TLSDialect

from x1p1.cli import main
from x1p1.converter.config import load_run_config
from x1p1.converter.state import load_pairing
from x1p1.converter.stream import Conn
from x1p1.converter.tls import TLS_VERSION_SENTENCE, client_ssl_context, converter_context
from x1p1.exceptions import ConfigError

CHAIN = TLSDialect("chain", intermediate=True, leaf_key="rsa-2048")
NO_AKI = TLSDialect("no-aki", key_identifiers=False)
LAX_CONSTRAINTS = TLSDialect("non-critical-basic-constraints", ca_constraints_critical=False)
IP_ONLY = TLSDialect("ip-only-san", dns_names=())
P384 = TLSDialect("p-384-leaf", leaf_key="ec-p384")
DNS_ONLY = TLSDialect("dns-only-san", dns_names=("meter-7.vendor.example",), ip_addresses=())
TLS12 = TLSDialect("tls-1.2-only", tls12_only=True)
EXPIRED = TLSDialect("expired", key_identifiers=False, expired=True)


@contextlib.asynccontextmanager
async def dialect_gateway(directory: Path, dialect: TLSDialect) -> AsyncIterator[DialectGateway]:
    gateway = DialectGateway(directory, period=0.02, auto="approve", tls=dialect)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


async def pair(gateway: DialectGateway, state_dir: Path, *extra: str) -> Result:
    """``x1p1 pair`` by address with the vendor's root pinned; it blocks, so in a thread."""
    args = [
        "pair",
        "--gateway",
        f"127.0.0.1:{gateway.port}",
        "--ca",
        str(gateway.ca_file),
        "--state-dir",
        str(state_dir),
        *extra,
    ]
    return await asyncio.to_thread(CliRunner().invoke, main, args)


async def relays(gateway: DialectGateway, state_dir: Path, pty: PtyPeer) -> None:
    """The saved pairing relays byte-exact telegrams that dsmr_parser accepts."""
    async with running(fast_options(state_dir, pty.path)) as converter:
        await until(lambda: len(pty.raw_telegrams()) >= 3, what="three telegrams")
        assert converter.stream.state is Conn.CONNECTED
    received = pty.raw_telegrams()
    assert b"".join(received) == bytes(pty.data)
    assert all(raw in gateway.sent for raw in received)
    assert len(pty.parsed()) == len(received)


# -- accepted dialects: pair, then relay ---------------------------------------------------


@pytest.mark.parametrize(
    "dialect", [CHAIN, NO_AKI, LAX_CONSTRAINTS, IP_ONLY, P384], ids=lambda d: d.name
)
async def test_dialect_pairs_and_relays(dialect: TLSDialect, tmp_path: Path, pty: PtyPeer) -> None:
    state_dir = tmp_path / "state"
    async with dialect_gateway(tmp_path / "gw", dialect) as gateway:
        result = await pair(gateway, state_dir)
        assert result.exit_code == 0, result.output
        saved = load_pairing(state_dir)
        assert (saved.host_name, saved.address) == ("127.0.0.1", "127.0.0.1")
        await relays(gateway, state_dir, pty)


async def test_dns_only_san_pairs_with_tls_name(tmp_path: Path, pty: PtyPeer) -> None:
    state_dir = tmp_path / "state"
    async with dialect_gateway(tmp_path / "gw", DNS_ONLY) as gateway:
        refused = await pair(gateway, state_dir)
        assert refused.exit_code == 7
        assert "not valid for 127.0.0.1" in refused.output
        result = await pair(gateway, state_dir, "--tls-name", "meter-7.vendor.example")
        assert result.exit_code == 0, result.output
        saved = load_pairing(state_dir)
        # connect by address, verify the name: both are kept for `x1p1 run`
        assert (saved.host_name, saved.address) == ("meter-7.vendor.example", "127.0.0.1")
        await relays(gateway, state_dir, pty)


async def test_run_tls_name_overrides_the_saved_name(tmp_path: Path, pty: PtyPeer) -> None:
    """A pairing saved under the address; ``x1p1 run --tls-name`` (config ``tls_name``)."""
    state_dir = tmp_path / "state"
    async with dialect_gateway(tmp_path / "gw", DNS_ONLY) as gateway:
        result = await pair(gateway, state_dir, "--tls-name", "meter-7.vendor.example")
        assert result.exit_code == 0, result.output
        saved = load_pairing(state_dir)
        from x1p1.converter.state import save_pairing

        save_pairing(state_dir, saved.with_gateway(host_name="127.0.0.1"))
        options = fast_options(state_dir, pty.path)
        async with running(options) as converter:
            await until(
                lambda: converter.stream.state is Conn.CERTIFICATE_ERROR, what="refused name"
            )
        options = fast_options(state_dir, pty.path, tls_name="meter-7.vendor.example")
        async with running(options) as converter:
            await until(lambda: len(pty.raw_telegrams()) >= 3, what="three telegrams")
            assert converter.stream.state is Conn.CONNECTED


# -- refused dialects ------------------------------------------------------------------------


async def test_tls12_only_gateway_is_refused_in_one_sentence(tmp_path: Path) -> None:
    async with dialect_gateway(tmp_path / "gw", TLS12) as gateway:
        result = await pair(gateway, tmp_path / "state")
        assert gateway.requests == {}
    assert result.exit_code == 7
    assert result.output.strip().splitlines()[-1] == f"x1p1: {TLS_VERSION_SENTENCE}"
    assert "Traceback" not in result.output


async def test_run_says_tls12_only_in_status_and_does_not_spin(tmp_path: Path) -> None:
    """``x1p1 run`` against a TLS-1.2-only gateway (X1 §4.1.4): one sentence as the last
    error in ``x1p1 status``, and the next try no sooner than the slowest backoff."""
    from converter_support import save_test_pairing

    from x1p1.converter.stream import StreamSettings
    from x1p1.x1.connection import BACKOFF_MAX, TLS_VERSION_RETRY

    state_dir = tmp_path / "state"
    async with dialect_gateway(tmp_path / "gw", TLS12) as gateway:
        save_test_pairing(
            state_dir,
            token="t" * 43,
            port=gateway.port,
            ca_pem=gateway.ca_file.read_text(),
        )
        options = fast_options(state_dir, None, env={})
        options.stream = StreamSettings(scale=1.0, open_timeout=5.0)  # the real schedule
        async with running(options) as converter:
            stream = converter.stream
            await until(lambda: stream.state is Conn.TLS_VERSION, what="the TLS verdict")
            now = asyncio.get_running_loop().time()
            wake = stream.machine.deadline()
            assert wake is not None and wake - now >= TLS_VERSION_RETRY - 1.0 >= BACKOFF_MAX
            await until(lambda: converter.status().last_error is not None, what="last error")
            result = await asyncio.to_thread(
                CliRunner().invoke, main, ["status", "--state-dir", str(state_dir)]
            )
            tries = [new for _, _, new in stream.machine.history if new is Conn.CONNECTING]
        assert gateway.requests == {}
    assert len(tries) == 1
    assert result.exit_code == 3, result.output
    last = next(line for line in result.output.splitlines() if line.startswith("Last error"))
    assert last.endswith(TLS_VERSION_SENTENCE), last
    assert "Traceback" not in result.output


async def test_expired_certificate_stays_refused_with_a_pinned_ca(tmp_path: Path) -> None:
    """The pinned CA drops the X.509-strict extras, never the validity check."""
    async with dialect_gateway(tmp_path / "gw", EXPIRED) as gateway:
        result = await pair(gateway, tmp_path / "state")
        assert gateway.requests == {}
    assert result.exit_code == 7
    assert "certificate has expired" in result.output


async def test_another_root_stays_refused(tmp_path: Path) -> None:
    """The chain is still verified: the vendor's chain against some other root fails."""
    other = DialectPKI(tmp_path / "other", NO_AKI)
    async with dialect_gateway(tmp_path / "gw", NO_AKI) as gateway:
        args = ["pair", "--gateway", f"127.0.0.1:{gateway.port}", "--ca", str(other.root_cert_path)]
        args += ["--state-dir", str(tmp_path / "state")]
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        assert gateway.requests == {}
    assert result.exit_code == 7
    assert "did not verify against the CA" in result.output


# -- the contexts themselves (one handshake each, no gateway) ----------------------------------


def handshake(pki: DialectPKI, client: ssl.SSLContext, name: str) -> str | None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = pki.server_ssl_context()

    def serve() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError), server.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client.wrap_socket(raw, server_hostname=name) as tls:
                version = tls.version()
                tls.sendall(b"x")
                return version
    finally:
        thread.join(10)
        listener.close()


@pytest.mark.parametrize(
    ("dialect", "strict_says"),
    [
        (NO_AKI, "Missing Authority Key Identifier"),
        (LAX_CONSTRAINTS, "Basic Constraints of CA cert not marked critical"),
    ],
    ids=["no-aki", "non-critical-basic-constraints"],
)
def test_strict_refuses_what_a_pinned_ca_accepts(
    dialect: TLSDialect, strict_says: str, tmp_path: Path
) -> None:
    """The system store's strict context refuses these chains, so the tests above could
    fail; the converter's context for a pinned CA accepts them."""
    pki = DialectPKI(tmp_path, dialect)
    with pytest.raises(ssl.SSLCertVerificationError, match=strict_says):
        handshake(pki, client_ssl_context(pki.root_cert_path), "X1-interface.local")
    lax = converter_context(pki.root_cert_path)
    assert not lax.verify_flags & ssl.VERIFY_X509_STRICT
    assert handshake(pki, lax, "X1-interface.local") == "TLSv1.3"
    saved = converter_context(None, pki.root_cert_path.read_text())
    assert handshake(pki, saved, "X1-interface.local") == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch"):
        handshake(pki, lax, "X1-interface-2.local")


def test_the_system_store_stays_strict() -> None:
    context = converter_context(None, None)
    assert context.verify_flags & ssl.VERIFY_X509_STRICT
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3


# -- the option and the config key -------------------------------------------------------------


def test_tls_name_config_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('tls_name = "meter-7.vendor.example."\n')
    config = load_run_config(path, {}, env={"X1P1_STATE_DIR": str(tmp_path)})
    assert config.tls_name == "meter-7.vendor.example"
    config = load_run_config(path, {"tls_name": "10.0.0.5"}, env={"X1P1_STATE_DIR": "s"})
    assert config.tls_name == "10.0.0.5"
    path.write_text('tls_name = "not a name"\n')
    with pytest.raises(ConfigError) as caught:
        load_run_config(path, {}, env={"X1P1_STATE_DIR": str(tmp_path)})
    assert str(caught.value) == (
        f"{path} line 1: tls_name = 'not a name' has no valid host name or address; give "
        "the host name (or address) the gateway's certificate carries"
    )


@pytest.mark.parametrize("command", ["pair", "run"])
def test_bad_tls_name_is_a_usage_error(command: str, tmp_path: Path) -> None:
    args = [command, "--tls-name", "-bad-", "--state-dir", str(tmp_path)]
    if command == "run":
        args += ["--serial", "loop://"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "has no valid host name or address" in result.output
    assert "Traceback" not in result.output


def test_a_pinned_intermediate_is_a_trust_anchor(tmp_path: Path) -> None:
    """As curl does (partial chain): the user may pin the issuing CA that the gateway sends."""
    from cryptography.hazmat.primitives import serialization

    pki = DialectPKI(tmp_path / "pki", CHAIN)
    intermediate = tmp_path / "issuing-ca.pem"
    intermediate.write_bytes(pki.chain[1].public_bytes(serialization.Encoding.PEM))
    assert handshake(pki, converter_context(intermediate), "X1-interface.local") == "TLSv1.3"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(pki, client_ssl_context(intermediate), "X1-interface.local")
