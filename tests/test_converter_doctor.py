"""``x1p1 doctor`` against the embedded gateway and against the tests' own dialect gateway.

What it reports for each item (ok, tolerated, blocks relaying, with the setting that
fixes it), its exit code, and that no secret ever appears: not the token, not the
request id, not a reading, not a serial number beyond its last 4 characters.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from converter_support import save_test_pairing
from gateway_fixture import RunningGateway, gateway
from test_converter_tls import DNS_ONLY, NO_AKI, TLS12, dialect_gateway
from tls_dialects import TLSDialect

from tests.netns import segment_factory
from x1p1.cli import main
from x1p1.converter.certinfo import CertificateInfo, pem_certificates
from x1p1.converter.config import GatewayAddress
from x1p1.converter.doctor import (
    DoctorOptions,
    DoctorReport,
    Finding,
    Redactor,
    Verdict,
    examine,
    json_shape,
)
from x1p1.converter.state import load_pairing
from x1p1.converter.tls import TLS_VERSION_SENTENCE
from x1p1.p1 import TelegramReader, ValidTelegram, dsmr5
from x1p1.x1.readers import printable

__all__ = ["gateway", "segment_factory"]

SERIAL = "E0044007312345617"


def doctor(*args: str) -> Result:
    return CliRunner().invoke(main, ["doctor", *args])


def findings(result: Result) -> dict[str, list[dict[str, Any]]]:
    """The --json report's findings by topic."""
    report = json.loads(result.stdout)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for item in report["findings"]:
        by_topic.setdefault(item["topic"], []).append(item)
    return by_topic


def verdict(result: Result, topic: str) -> str:
    (item,) = findings(result)[topic]
    return str(item["verdict"])


_LINE = re.compile(r"^(ok|tolerated|blocks relaying|info) +(\S.*?)  +(.*)$")


def lines_of(output: str, topic: str) -> list[str]:
    """The text lines (verdict first) whose topic column is ``topic``."""
    found = []
    for line in output.splitlines():
        match = _LINE.match(line)
        if match and match.group(2) == topic:
            found.append(line)
    return found


def assert_no_secret(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output
    for serial in (SERIAL, SERIAL.encode().hex(), SERIAL.encode().hex().upper()):
        assert serial not in output
    # no reading: P1 registers (000123.456*kWh) and realtime numbers never appear
    assert not re.search(r"(?<![\d.])\d+\.\d{3}\b|\*kWh|\*kW\b|\*m3", output)


@pytest.fixture
def paired_embedded(gateway: RunningGateway, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    token = gateway.pair()
    state_dir = tmp_path / "state"
    save_test_pairing(state_dir, token=token, port=gateway.port, ca_pem=gateway.ca_path.read_text())
    yield state_dir, token


# -- the embedded gateway ---------------------------------------------------------------------


def test_embedded_gateway_with_a_token(
    gateway: RunningGateway, paired_embedded: tuple[Path, str]
) -> None:
    state_dir, token = paired_embedded
    args = ("--gateway", f"127.0.0.1:{gateway.port}", "--state-dir", str(state_dir))
    result = doctor(*args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["relaying_works"] is True
    by_topic = findings(result)
    assert by_topic["tls"][0]["text"].startswith("TLSv1.3")
    assert verdict(result, "certificate") == "ok"
    assert "verifies for X1-interface.local" in by_topic["certificate"][0]["text"]
    assert verdict(result, "clock") == "ok"
    assert verdict(result, "legacy-P1") == "ok"
    assert verdict(result, "framing") == "ok"
    framing = by_topic["framing"][0]["text"]
    assert "line ends CR LF, CRC 4 upper-case hex digits" in framing
    assert re.search(r"one every (0\.[5-9]\d*|1\.\d+) s", framing)  # one a second
    assert DoctorReport.parse(json.loads(result.stdout)).to_json() == json.loads(result.stdout)
    shape = by_topic["GET /api/token"][0]["text"]
    assert (
        shape == "200; answer {expires_at: string, name: string, profiles: [string], uuid: string}"
    )
    assert "refused (403" in by_topic["realtime"][0]["text"]  # P1 only: no realtime profile
    assert by_topic["realtime"][0]["verdict"] == "info"
    electricity = gateway.electricity_id
    text = doctor(*args).stdout
    assert text.splitlines()[-1] == "Relaying would work."
    for output in (result.stdout, text):
        assert_no_secret(output, token, electricity, electricity.encode().hex())


def test_embedded_gateway_realtime_with_the_profile(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    token = gateway.pair(("P1", "E-REALTIME"))
    state_dir = tmp_path / "state"
    save_test_pairing(state_dir, token=token, port=gateway.port, ca_pem=gateway.ca_path.read_text())
    result = doctor(
        "--gateway", f"127.0.0.1:{gateway.port}", "--state-dir", str(state_dir), "--json"
    )
    assert result.exit_code == 0, result.output
    (realtime,) = [f for f in findings(result)["realtime"] if f["text"].startswith("a message")]
    assert realtime["verdict"] == "ok"
    assert realtime["text"] == (
        "a message {equipment_id: string, t: string, values: {1-0:1.7.0.255: number}}"
    )
    assert_no_secret(result.stdout, token, gateway.electricity_id)


def test_no_token_request_without_request(gateway: RunningGateway, tmp_path: Path) -> None:
    result = doctor(
        "--gateway",
        f"127.0.0.1:{gateway.port}",
        "--ca",
        str(gateway.ca_path),
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert result.exit_code == 0, result.output
    assert gateway.control.requests() == []
    assert (
        "GET /api/token (no token)  401; answer {error: string, message: string}" in result.stdout
    )
    assert "no saved token" in result.stdout
    assert "legacy-P1" not in result.stdout


def test_request_makes_one_token_request_and_hides_its_id(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    result = doctor(
        "--gateway",
        f"127.0.0.1:{gateway.port}",
        "--ca",
        str(gateway.ca_path),
        "--state-dir",
        str(tmp_path / "state"),
        "--request",
        "--json",
    )
    assert result.exit_code == 0, result.stdout
    (pending,) = gateway.control.requests()
    assert pending["name"] == "x1p1 doctor test: deny it"
    assert not (tmp_path / "state" / "uuid").exists()  # its own uuid: a denial costs us nothing
    by_topic = findings(result)
    assert by_topic["POST /api/tokens/requests"][0]["text"] == (
        "202; answer {code: string, expires_at: string, request_id: string, status: string}"
    )
    assert "GET /api/tokens/requests/<request id>" in by_topic
    assert_no_secret(result.stdout, pending["request_id"])


def test_revoked_token_blocks_relaying(
    gateway: RunningGateway, paired_embedded: tuple[Path, str]
) -> None:
    state_dir, token = paired_embedded
    (device,) = gateway.control.tokens()
    gateway.control.revoke(device["token_id"])
    result = doctor("--gateway", f"127.0.0.1:{gateway.port}", "--state-dir", str(state_dir))
    assert result.exit_code == 1
    (line,) = lines_of(result.stdout, "GET /api/token")
    assert line.startswith("blocks relaying")
    assert line.endswith("[fix: x1p1 pair]")
    assert result.stdout.splitlines()[-1].startswith("Relaying would not work")
    assert_no_secret(result.stdout, token)


# -- the tests' own gateway: TLS dialects -----------------------------------------------------


async def run_doctor(*args: str) -> Result:
    return await asyncio.to_thread(doctor, *args)


async def test_tls12_only_gateway(tmp_path: Path) -> None:
    async with dialect_gateway(tmp_path / "gw", TLS12) as gw:
        result = await run_doctor(
            "--gateway",
            f"127.0.0.1:{gw.port}",
            "--ca",
            str(gw.ca_file),
            "--state-dir",
            str(tmp_path),
        )
        assert gw.requests == {}
    assert result.exit_code == 1
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("blocks relaying")]
    assert line.split(None, 3)[-1] == f"TLSv1.2 only: {TLS_VERSION_SENTENCE}"
    assert "chain[0]" in result.stdout  # what it offers, for the bug report
    assert_no_secret(result.stdout)


async def test_pinned_ca_without_key_identifiers_is_tolerated(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    async with dialect_gateway(tmp_path / "gw", NO_AKI) as gw:
        token = gw.issue_token()
        save_test_pairing(
            state_dir,
            token=token,
            port=gw.port,
            ca_pem=gw.ca_file.read_text(),
            host_name="X1-interface.local",
        )
        result = await run_doctor(
            "--gateway", f"127.0.0.1:{gw.port}", "--state-dir", str(state_dir)
        )
    assert result.exit_code == 0, result.stdout
    (line,) = lines_of(result.stdout, "certificate")
    assert line.startswith("tolerated")
    assert "no authorityKeyIdentifier" in line and "CA without subjectKeyIdentifier" in line
    assert re.search(r"chain\[0\] .*CN=X1 gateway …5617;.*not X\.509-strict", result.stdout)
    assert "pinned CA" in result.stdout
    assert "framing" in result.stdout
    assert_no_secret(result.stdout, token)


async def test_dns_only_san_needs_tls_name(tmp_path: Path) -> None:
    async with dialect_gateway(tmp_path / "gw", DNS_ONLY) as gw:
        base = ("--gateway", f"127.0.0.1:{gw.port}", "--ca", str(gw.ca_file))
        base += ("--state-dir", str(tmp_path / "state"))
        refused = await run_doctor(*base)
        named = await run_doctor(*base, "--tls-name", "meter-7.vendor.example")
    assert refused.exit_code == 1
    (line,) = [x for x in refused.stdout.splitlines() if x.startswith("blocks relaying")]
    assert "not valid for 127.0.0.1" in line and "DNS:meter-7.vendor.example" in line
    assert line.endswith("[fix: tls_name]")
    assert named.exit_code == 0, named.output
    assert "verifies for meter-7.vendor.example" in named.stdout


async def test_another_root_blocks_with_the_ca_fix(tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    async with dialect_gateway(tmp_path / "other-gw", NO_AKI) as first:
        other.write_bytes(first.ca_file.read_bytes())
    async with dialect_gateway(tmp_path / "gw", NO_AKI) as gw:
        result = await run_doctor(
            "--gateway", f"127.0.0.1:{gw.port}", "--ca", str(other), "--state-dir", str(tmp_path)
        )
    assert result.exit_code == 1
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("blocks relaying")]
    assert "does not verify against the CA in" in line and line.endswith("[fix: ca]")


async def test_framing_verdicts(tmp_path: Path) -> None:
    """Several telegrams in one message are tolerated; a CRC mismatch would be dropped; a
    lower-case CRC is named, and blocks exactly when the P1 reader would drop it."""
    state_dir = tmp_path / "state"
    one, two = (dsmr5.build(dsmr5.sample_readings(n)).serialize() for n in (1, 2))
    bad = one[:-6] + b"0000\r\n" if not one.endswith(b"0000\r\n") else one[:-6] + b"FFFF\r\n"
    lower = one[:-6] + one[-6:-2].lower() + b"\r\n"
    assert lower != one  # the sample's CRC has a letter in it
    reader = TelegramReader()
    reader.receive_data(lower)
    relayed = any(isinstance(e, ValidTelegram) for e in reader.events_received())
    reports = []
    async with dialect_gateway(tmp_path / "gw", TLSDialect("plain")) as gw:
        token = gw.issue_token()
        save_test_pairing(state_dir, token=token, port=gw.port, ca_pem=gw.ca_file.read_text())
        options = DoctorOptions(state_dir, GatewayAddress("127.0.0.1", gw.port), telegrams=4)
        for messages in ([one + two] * 2, [lower] * 6, [bad] * 6):
            gw._pending.clear()
            gw.inject(*messages)
            reports.append(await examine(options))
    merged, lowered, dropped = (
        next(f for f in report.findings if f.topic == "framing") for report in reports
    )
    assert merged.verdict is Verdict.TOLERATED
    assert "several telegrams in one message" in merged.text
    assert "CRC lower-case hex digits" in lowered.text
    assert lowered.verdict is (Verdict.TOLERATED if relayed else Verdict.BLOCKS)
    assert dropped.verdict is Verdict.BLOCKS
    assert "would be dropped (crc-mismatch)" in dropped.text
    assert reports[2].exit_code == 1


async def test_a_one_megabyte_message(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    async with dialect_gateway(tmp_path / "gw", TLSDialect("plain")) as gw:
        token = gw.issue_token()
        save_test_pairing(state_dir, token=token, port=gw.port, ca_pem=gw.ca_file.read_text())
        gw.inject(b"/" + b"7" * 1_000_000)
        report = await examine(DoctorOptions(state_dir, GatewayAddress("127.0.0.1", gw.port)))
    (closed,) = [f for f in report.findings if f.topic == "legacy-P1" and "closed" in f.text]
    assert closed.verdict is Verdict.BLOCKS
    assert (
        closed.text
        == "the gateway closed the stream (a message over 64 KiB, the converter's limit)"
    )
    assert report.exit_code == 1


async def test_clock_skew_from_the_date_header(tmp_path: Path) -> None:
    async with dialect_gateway(tmp_path / "gw", TLSDialect("plain")) as gw:
        options = DoctorOptions(
            tmp_path / "state",
            GatewayAddress("127.0.0.1", gw.port),
            ca=gw.ca_file,
            now=lambda: datetime.now(UTC) + timedelta(hours=2),
        )
        report = await examine(options)
    (clock,) = [f for f in report.findings if f.topic == "clock"]
    assert clock.verdict is Verdict.TOLERATED
    assert clock.text.startswith("the gateway's clock is 2.0 hours behind this machine's")
    assert report.exit_code == 0


# -- the value objects -------------------------------------------------------------------------


def test_report_round_trips_and_renders() -> None:
    report = DoctorReport(
        "X1-interface.local:443",
        (
            Finding("tls", Verdict.OK, "TLSv1.3"),
            Finding("certificate", Verdict.BLOCKS, "not valid for 10.0.0.5", "tls_name"),
        ),
    )
    assert DoctorReport.parse(json.loads(json.dumps(report.to_json()))) == report
    assert report.exit_code == 1 and not report.relaying_works
    assert report.render().splitlines() == [
        "x1p1 doctor: X1-interface.local:443",
        "",
        "ok               tls          TLSv1.3",
        "blocks relaying  certificate  not valid for 10.0.0.5 [fix: tls_name]",
        "",
        "Relaying would not work: 1 item above blocks it.",
    ]
    assert DoctorReport("nowhere", ()).exit_code == 1


def test_json_shape_never_shows_values() -> None:
    body = {"status": "approved", "token": "secret", "profiles": ["P1"], "n": 1, "x": 1.5}
    body |= {"none": None, "ok": True, "nested": {"a": [{"b": 2}]}}
    assert json_shape(body) == (
        "{n: int, nested: {a: [{b: int}]}, none: null, ok: bool, profiles: [string], "
        "status: string, token: string, x: number}"
    )


def test_redactor() -> None:
    r = Redactor()
    r.secret("tok-abcdef", "<token>")
    r.serial("4530303434303037333132333435363137")  # the telegram's hex form
    text = r.apply("tok-abcdef E0044007312345617 4530303434303037333132333435363137 2026-12-06")
    assert text == "<token> …5617 …3137 2026-12-06"
    # the one sanitizer's escapes (x1p1.x1.readers.printable), capped at 300 characters
    assert r.clean("a\nb\x1b[31m\u202e") == "a\\nb\\x1b[31m\\u202e"
    assert r.clean("a\nb") == printable("a\nb")
    assert len(r.clean("x" * 1000)) == 300 and r.clean("x" * 1000).endswith("…")


def test_certificate_info_reads_a_dialect_chain(tmp_path: Path) -> None:
    from test_converter_tls import CHAIN, LAX_CONSTRAINTS
    from tls_dialects import DialectPKI

    pki = DialectPKI(tmp_path / "chain", CHAIN)
    leaf, mid = (CertificateInfo.parse(c.public_bytes(_der())) for c in pki.chain)
    assert leaf.key_type == "RSA 2048" and mid.key_type == "EC P-256"
    assert leaf.names() == "DNS:X1-interface.local IP:127.0.0.1"
    assert leaf.issuer == mid.subject and mid.is_ca and not leaf.is_ca
    assert leaf.strict_failures() == () and mid.strict_failures() == ()
    lax = DialectPKI(tmp_path / "lax", LAX_CONSTRAINTS)
    (root,) = (CertificateInfo.parse(d) for d in pem_certificates(lax.root_cert_path.read_bytes()))
    assert root.self_issued and root.strict_failures() == ("basicConstraints not critical",)
    with pytest.raises(Exception, match="cannot be read"):
        CertificateInfo.parse(b"\x30\x03\x02\x01")


def _der() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    for args in (["--gateway", "http://x"], ["--tls-name", "a b"]):
        result = doctor(*args, "--state-dir", str(tmp_path))
        assert result.exit_code == 2
        assert "Traceback" not in result.output


# -- on a (namespaced) network: the mDNS records and the saved pairing -------------------------


@pytest.mark.netns
def test_doctor_by_mdns_on_a_network(segment_factory: Any, tmp_path: Path) -> None:
    """``x1p1 gateway serve`` with mDNS in one namespace, ``x1p1 pair`` and ``x1p1 doctor``
    (no --gateway: the saved pairing, and the mDNS records it sees) in another."""
    from tests.netns import stop
    from tests.test_converter_netns import BOUND, X1P1, serve

    segment = segment_factory(["gw", "pi"])
    gw_dir, state_dir = tmp_path / "gw", tmp_path / "state"
    gateway_process, port = serve(segment, gw_dir)
    try:
        ca = gw_dir / "pki" / "root-ca.pem"
        pair_args = [*X1P1, "pair", "--ca", str(ca), "--state-dir", str(state_dir)]
        paired = segment["pi"].run(pair_args, timeout=BOUND)
        assert paired.returncode == 0, paired.stdout + paired.stderr
        pairing = load_pairing(state_dir)
        assert pairing.serial
        for _ in range(5):  # each browse listens 3 s; mDNS may need a second one
            result = segment["pi"].run(
                [*X1P1, "doctor", "--state-dir", str(state_dir), "--json"], timeout=BOUND
            )
            report = json.loads(result.stdout)
            mdns = [f for f in report["findings"] if f["topic"] == "mdns"]
            if any(f["verdict"] == "ok" for f in mdns):
                break
    finally:
        stop(gateway_process)
    assert result.returncode == 0, result.stdout + result.stderr
    (seen,) = mdns
    address = segment["gw"].address
    assert seen["text"] == (
        f"X1-interface.local:{port} at {address} (service); TXT api=/api version=6.0.0 "
        f"serial=…{pairing.serial[-4:]}"
    )
    by_topic = {f["topic"]: f for f in report["findings"]}
    assert by_topic["address"]["text"] == f"{address}:{port} accepts connections"
    assert by_topic["certificate"]["text"].startswith("verifies for X1-interface.local")
    assert by_topic["framing"]["verdict"] == "ok"
    assert_no_secret(result.stdout, pairing.token, pairing.serial)


# -- the endpoints pair and run use (x1p1/x1/endpoints.py) ------------------------------------

PREFIX = "/vendor/x1/api"


async def doctor_with(*args: str, config: Path | None = None) -> Result:
    env = {"X1P1_CONFIG": str(config) if config is not None else None}
    return await asyncio.to_thread(CliRunner().invoke, main, ["doctor", *args], env=env)


async def test_a_path_prefix_as_pair_and_run_find_it(tmp_path: Path) -> None:
    """The base from --api-base, a --gateway URL's path, or the saved pairing: the doctor
    calls what pair and run call; without any of them the wrong base blocks, fix api_base."""
    from x1_test_gateway import Dialect, running_gateway

    async with running_gateway(
        tmp_path / "gw", auto="approve", dialect=Dialect(api_base=PREFIX)
    ) as gw:
        at, ca = f"127.0.0.1:{gw.port}", str(gw.ca_file)
        empty = str(tmp_path / "empty")
        lost = await doctor_with("--gateway", at, "--ca", ca, "--state-dir", empty, "--json")
        given = await doctor_with(
            "--gateway", at, "--ca", ca, "--api-base", PREFIX, "--state-dir", empty, "--json"
        )
        url = f"https://{at}{PREFIX}"
        by_url = await doctor_with("--gateway", url, "--ca", ca, "--state-dir", empty, "--json")
        state_dir = tmp_path / "state"
        paired = await asyncio.to_thread(
            CliRunner().invoke,
            main,
            ["pair", "--gateway", url, "--ca", ca, "--state-dir", str(state_dir)],
        )
        assert paired.exit_code == 0, paired.output
        assert load_pairing(state_dir).api_base == PREFIX
        saved = await doctor_with("--gateway", at, "--state-dir", str(state_dir), "--json")
        assert len(gw.requests) == 1  # pairing's: the doctor made none
    assert lost.exit_code == 1, lost.stdout
    (probe,) = findings(lost)["GET /api/token (no token)"]
    assert probe["text"].startswith("404")
    blocked = [f for f in findings(lost)["endpoints"] if f["verdict"] == "blocks relaying"]
    assert blocked and blocked[0]["fix"] == "api_base"
    for result in (given, by_url):
        assert result.exit_code == 0, result.stdout
        topics = findings(result)
        assert topics["endpoints"][0]["text"] == f"API base {PREFIX}"
        assert topics[f"GET {PREFIX}/token (no token)"][0]["verdict"] == "ok"
    assert saved.exit_code == 0, saved.stdout
    topics = findings(saved)
    assert topics["endpoints"][0]["text"] == f"API base {PREFIX}"
    assert topics[f"GET {PREFIX}/token"][0]["verdict"] == "ok"
    assert verdict(saved, "legacy-P1") == "ok" and verdict(saved, "framing") == "ok"
    token = load_pairing(state_dir).token
    assert_no_secret(saved.stdout, token)


async def test_the_config_paths_are_the_ones_called(tmp_path: Path) -> None:
    """``api_base``, ``token_requests_path`` and ``legacy_p1_path`` from the config file."""
    from x1_test_gateway import Dialect, running_gateway

    state_dir = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f'api_base = "{PREFIX}"\n'
        f'token_requests_path = "{PREFIX}/tokens/requests"\n'
        'legacy_p1_path = "/elsewhere/legacy-p1"\n'
    )
    async with running_gateway(
        tmp_path / "gw", auto="approve", dialect=Dialect(api_base=PREFIX)
    ) as gw:
        at, ca = f"127.0.0.1:{gw.port}", str(gw.ca_file)
        save_test_pairing(
            state_dir, token=gw.issue_token(), port=gw.port, ca_pem=gw.ca_file.read_text()
        )
        result = await doctor_with(
            "--gateway", at, "--ca", ca, "--state-dir", str(state_dir), "--json", config=config
        )
    assert result.exit_code == 1, result.stdout
    topics = findings(result)
    assert topics["endpoints"][0]["text"] == (
        f"API base {PREFIX}; token requests at {PREFIX}/tokens/requests; "
        "legacy P1 at /elsewhere/legacy-p1"
    )
    assert topics[f"GET {PREFIX}/token"][0]["verdict"] == "ok"
    (legacy,) = topics["legacy-P1"]
    assert legacy["verdict"] == "blocks relaying"
    assert legacy["text"].startswith("GET /elsewhere/legacy-p1?interval=1: refused (404")


async def test_the_txt_api_record_is_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by mDNS (X1 §4.3.3), the TXT ``api=`` is the base, as ``x1p1 pair`` takes it."""
    from x1_test_gateway import Dialect, running_gateway

    from x1p1.converter import discovery

    async with running_gateway(
        tmp_path / "gw", auto="approve", dialect=Dialect(api_base=PREFIX)
    ) as gw:
        seen = discovery.DiscoveredGateway(
            "X1-interface.local",
            ("127.0.0.1",),
            gw.port,
            serial=SERIAL,
            api=PREFIX,
            service_name="X1 gateway._dsmr-x1-interface._tcp.local.",
        )

        async def browse(*_: Any, **__: Any) -> list[discovery.DiscoveredGateway]:
            return [seen]

        monkeypatch.setattr(discovery, "discover", browse)
        result = await doctor_with("--ca", str(gw.ca_file), "--state-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stdout
    topics = findings(result)
    assert f"TXT api={PREFIX}" in topics["mdns"][0]["text"]
    assert topics["endpoints"][0]["text"] == f"API base {PREFIX}"
    assert topics[f"GET {PREFIX}/token (no token)"][0]["verdict"] == "ok"
    assert_no_secret(result.stdout)


# -- a token without P1: the realtime source (docs/realtime.md) -------------------------------


def test_a_realtime_grant_is_not_blocked_in_auto(gateway: RunningGateway, tmp_path: Path) -> None:
    """Without P1 but with E-REALTIME, ``source = "auto"`` builds telegrams from realtime
    values: the doctor says so and does not call it blocking; ``legacy-p1`` does block."""
    from x1p1.x1.profiles import Profile

    token = gateway.pair(("E-REALTIME",))
    state_dir = tmp_path / "state"
    save_test_pairing(
        state_dir,
        token=token,
        port=gateway.port,
        ca_pem=gateway.ca_path.read_text(),
        profiles=frozenset({Profile.E_REALTIME}),
    )
    args = ["doctor", "--gateway", f"127.0.0.1:{gateway.port}", "--state-dir", str(state_dir)]
    auto = CliRunner().invoke(main, [*args, "--json"], env={"X1P1_CONFIG": None})
    assert auto.exit_code == 0, auto.stdout
    topics = findings(auto)
    assert topics["token"][0]["verdict"] == "info"
    assert "lacks the P1 profile but carries E-REALTIME" in topics["token"][0]["text"]
    (source,) = topics["source"]
    assert source["verdict"] == "info"
    assert source["text"].startswith('source = "auto" builds telegrams from realtime values')
    assert "docs/realtime.md" in source["text"]
    assert topics["legacy-P1"][0]["text"].startswith("not opened")
    (realtime,) = [f for f in topics["realtime"] if f["text"].startswith("a message")]
    assert realtime["verdict"] == "ok"
    assert "blocks relaying" not in auto.stdout
    assert_no_secret(auto.stdout, token, gateway.electricity_id)

    config = tmp_path / "config.toml"
    config.write_text('source = "legacy-p1"\n')
    legacy = CliRunner().invoke(main, [*args, "--json"], env={"X1P1_CONFIG": str(config)})
    assert legacy.exit_code == 1, legacy.stdout
    (source,) = findings(legacy)["source"]
    assert source["verdict"] == "blocks relaying" and source["fix"] == "source"


def test_no_legacy_p1_with_a_realtime_grant(gateway: RunningGateway, tmp_path: Path) -> None:
    """A gateway without legacy P1 (404 on its path, here moved with ``legacy_p1_path``) and
    a token with P1 and E-REALTIME: ``auto`` builds from realtime (docs/realtime.md), so the
    404 is not blocking, and realtime is what must work."""
    from x1p1.x1.profiles import Profile

    token = gateway.pair(("P1", "E-REALTIME"))
    state_dir = tmp_path / "state"
    save_test_pairing(
        state_dir,
        token=token,
        port=gateway.port,
        ca_pem=gateway.ca_path.read_text(),
        profiles=frozenset({Profile.P1, Profile.E_REALTIME}),
    )
    config = tmp_path / "config.toml"
    config.write_text('legacy_p1_path = "/api/no-legacy-p1"\n')
    args = ["doctor", "--gateway", f"127.0.0.1:{gateway.port}", "--state-dir", str(state_dir)]
    result = CliRunner().invoke(main, [*args, "--json"], env={"X1P1_CONFIG": str(config)})
    assert result.exit_code == 0, result.stdout
    topics = findings(result)
    (legacy,) = topics["legacy-P1"]
    assert legacy["verdict"] == "info"
    assert legacy["text"].startswith("GET /api/no-legacy-p1?interval=1: refused (404")
    assert 'source = "auto" builds telegrams from realtime values instead' in legacy["text"]
    (realtime,) = [f for f in topics["realtime"] if f["text"].startswith("a message")]
    assert realtime["verdict"] == "ok"
    assert "blocks relaying" not in result.stdout
    assert_no_secret(result.stdout, token, gateway.electricity_id)
