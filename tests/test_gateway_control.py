"""The local control channel (the meter's buttons, the grid operator) and the CLI commands
on it: ``x1p1 meter …``, ``x1p1 operator …``, ``x1p1 gateway serve|ca``."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from gateway_fixture import RunningGateway, gateway, gateway_process, running_gateway

from x1p1.cli import main
from x1p1.exceptions import ControlError, NotFound, StateError
from x1p1.gateway.control_client import ControlClient

__all__ = ["gateway"]  # the fixture


def raw_exchange(path: Path, data: bytes) -> list[dict[str, object]]:
    """Send raw bytes to the control socket; the JSON answers until it closes or idles."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return [json.loads(line) for line in received.splitlines() if line.strip()]


def test_socket_and_directory_are_private(gateway: RunningGateway) -> None:
    mode = os.stat(gateway.state_dir / "control.sock").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(gateway.state_dir).st_mode) == 0o700


def test_protocol_errors_are_answers_not_crashes(gateway: RunningGateway) -> None:
    path = gateway.state_dir / "control.sock"
    answers = raw_exchange(
        path,
        b"not json\n[1, 2]\n\n"
        + b'{"command": "nope"}\n'
        + b'{"command": "list"}\n'
        + b'{"command": "approve", "id": 5}\n'
        + b'{"command": "approve", "profiles": ["X"]}\n'
        + b'{"command": "operator", "action": "explode"}\n'
        + b'{"command": "revoke"}\n'
        + b"\xff\xfe\n",
    )
    codes = [a.get("error", "ok") for a in answers]
    assert codes == [
        "bad-request",
        "bad-request",
        "unknown-command",
        "ok",
        "bad-request",
        "bad-request",
        "bad-request",
        "bad-request",
        "bad-request",
    ]
    assert answers[3] == {"ok": True, "result": {"display": None, "requests": []}}
    # an endless line is refused and the connection closed; the server lives on
    answers = raw_exchange(path, b"x" * 100_000)
    assert answers and answers[0]["error"] == "bad-request"
    assert gateway.control.requests() == []


def test_client_raises_the_x1_errors(gateway: RunningGateway) -> None:
    with pytest.raises(NotFound):
        gateway.control.approve("no-such-request")
    with pytest.raises(ControlError, match="unknown-command"):
        gateway.control.call("self-destruct")
    status = gateway.control.status()
    assert status["url"] == gateway.url and status["x1_enabled"] is True
    assert {m["type"] for m in status["meters"]} == {"electricity", "gas"}


def test_client_without_a_gateway(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no gateway is running"):
        ControlClient(tmp_path).requests()


def test_long_state_dir_paths_work(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with running_gateway(deep) as gw:
        assert len(str(gw.state_dir / "control.sock")) > 108
        assert gw.control.requests() == []


def test_a_second_gateway_on_the_same_state_dir_is_refused(gateway: RunningGateway) -> None:
    with pytest.raises(StateError, match="another gateway"):
        with running_gateway(gateway.state_dir):
            pass
    assert gateway.control.requests() == []


# --- the CLI -------------------------------------------------------------------------------


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_meter_list_approve_deny(gateway: RunningGateway) -> None:
    where = ["--state-dir", str(gateway.state_dir)]
    code, out, _ = cli("meter", "list", *where)
    assert code == 0 and "Nothing is waiting" in out
    first_reply = gateway.token_request(["P1"], name="first").json
    first, first_code = first_reply["request_id"], first_reply["code"]
    second = gateway.token_request(["P1", "E-REALTIME"], name="second").json["request_id"]
    code, out, _ = cli("meter", "list", *where, "--json")
    assert code == 0 and [r["request_id"] for r in json.loads(out)] == [first, second]
    code, out, _ = cli("meter", "list", *where)
    assert out.index(first) < out.index(second) and "'second'" in out
    assert f"code {first_code}" in out
    # two wait: the button without a code refuses, lists both and asks for --code
    code, _, err = cli("meter", "approve", *where)
    assert code == 2 and "--code" in err and first in err and second in err
    code, out, _ = cli("meter", "approve", *where, "--code", first_code)
    assert code == 0 and "Approved 'first'" in out and "P1" in out
    code, out, _ = cli("meter", "deny", second, *where, "--json")
    assert code == 0 and json.loads(out)["request"]["status"] == "denied"
    code, _, err = cli("meter", "approve", second, *where)
    assert code == 1 and "denied" in err
    code, _, err = cli("meter", "deny", *where)
    assert code == 1 and "no request is waiting" in err
    # the meter approves profiles only as asked (§5.1.5): the option is gone
    code, _, err = cli("meter", "approve", *where, "--profiles", "P1")
    assert code == 2 and "--profiles" in err
    code, _, err = cli("meter", "approve", *where, "--code", "12a4")
    assert code == 1 and "four digits" in err


def test_cli_operator(gateway: RunningGateway) -> None:
    where = ["--state-dir", str(gateway.state_dir)]
    code, out, _ = cli("operator", "disable", *where)
    assert code == 0 and "X1 is off" in out
    assert gateway.request("GET", "/api/openapi.json").status == 503
    code, out, _ = cli("operator", "disable", *where)
    assert "already" in out
    code, out, _ = cli("operator", "enable", *where)
    assert code == 0 and "X1 is on" in out
    code, out, _ = cli("operator", "read", *where)
    assert code == 0 and gateway.electricity_id in out and "1-0:1.8.1.255" in out
    code, out, _ = cli("operator", "read", *where, "--json")
    assert json.loads(out)["meters"][1]["equipment_id"] == gateway.gas_id


def test_cli_without_a_gateway_says_so(tmp_path: Path) -> None:
    code, _, err = cli("meter", "list", "--state-dir", str(tmp_path))
    assert code == 1 and "no gateway is running" in err and "x1p1 gateway serve" in err


def test_cli_gateway_ca_prints_the_root(gateway: RunningGateway) -> None:
    code, out, _ = cli("gateway", "ca", "--state-dir", str(gateway.state_dir))
    assert code == 0 and out.encode() == gateway.ca_path.read_bytes()
    assert out.startswith("-----BEGIN CERTIFICATE-----")


def test_gateway_serve_process_starts_serves_and_stops(tmp_path: Path) -> None:
    state = tmp_path / "gw"
    with gateway_process(state, "--auto-approve", "--seed", "3") as gw:
        assert gw.process is not None
        token = gw.pair(["P1"])
        assert gw.request("GET", "/api/token", token=token).status == 200
        assert (state / "control.sock").exists()
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(15) == 0
    assert not (state / "control.sock").exists()


def test_gateway_serve_after_sigkill_restarts_with_its_tokens(tmp_path: Path) -> None:
    state = tmp_path / "gw"
    with gateway_process(state) as gw:
        token = gw.pair(["P1"])
        assert gw.process is not None
        gw.process.kill()
        gw.process.wait(10)
    assert (state / "control.sock").exists()  # left behind
    with gateway_process(state) as gw:
        assert gw.request("GET", "/api/token", token=token).status == 200


def test_gateway_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "x1p1.cli",
                "gateway",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-mdns",
                "--state-dir",
                str(tmp_path / "gw"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_comlog_records_pairing_operator_and_use(gateway: RunningGateway) -> None:
    token = gateway.pair(["P1"], name="logged device")
    denied = gateway.token_request(name="unwanted").json["request_id"]
    gateway.control.deny(denied)
    gateway.request("GET", "/api/token", token=token)
    gateway.request("GET", "/api/meters", token=token)
    gateway.control.operator("read")
    gateway.control.operator("disable")
    gateway.control.operator("enable")
    gateway.request("DELETE", "/api/token", token=token)
    entries = gateway.control.comlog()
    events = [e["event"] for e in entries if e["event"] != "api-use"]
    assert events == [
        "token-requested",
        "token-approved",
        "token-requested",
        "token-denied",
        "operator-read",
        "x1-disabled",
        "x1-enabled",
        "token-revoked",
    ]
    approved = next(e for e in entries if e["event"] == "token-approved")
    assert approved["device"].startswith("logged device (") and approved["detail"]["profiles"]
    assert token not in json.dumps(entries)
    use = [e for e in entries if e["event"] == "api-use"]
    assert len(use) == 1 and use[0]["count"] == 3  # GET token, GET meters, DELETE token
    code, out, _ = cli("meter", "comlog", "--state-dir", str(gateway.state_dir))
    assert code == 0 and "token-denied" in out and "unwanted" in out
    code, out, _ = cli(
        "meter", "comlog", "--state-dir", str(gateway.state_dir), "--json", "--limit", "2"
    )
    assert [e["event"] for e in json.loads(out)] == ["x1-enabled", "token-revoked"]
    code, _, err = cli("meter", "comlog", "--state-dir", str(gateway.state_dir), "--since", "x")
    assert code == 1 and "since" in err


def test_the_control_client_imports_neither_aiohttp_nor_asyncio() -> None:
    code = (
        "import sys, x1p1.gateway.control_client; "
        "print(sorted(m for m in ('aiohttp', 'asyncio', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
