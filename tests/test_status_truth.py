"""``x1p1 status`` tells the truth: the saved pairing, apart from the address in use, and
the last error with its time (README, "Troubleshooting")."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

from tests.converter_support import fast_options, running, save_test_pairing
from x1p1.converter.config import GatewayAddress
from x1p1.converter.state import DaemonStatus, render_status, status_report
from x1p1.x1.api import parse_time


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


async def test_the_last_error_is_kept_with_its_time(tmp_path: Path) -> None:
    port, other = closed_port(), closed_port()
    save_test_pairing(tmp_path, token="t" * 43, port=port, ca_pem=None, serial="E1")
    before = datetime.now(UTC).replace(microsecond=0)
    # --gateway elsewhere: status must still show the saved pairing as the pairing
    options = fast_options(tmp_path, None, env={}, gateway=GatewayAddress("127.0.0.2", other))
    options.tcp = None
    async with running(options) as converter:
        deadline = asyncio.get_running_loop().time() + 20
        while converter.status().last_error is None:
            assert asyncio.get_running_loop().time() < deadline, "no error recorded"
            await asyncio.sleep(0.02)
        status = converter.status()
        report = await asyncio.to_thread(status_report, tmp_path, {})
    assert status.last_error is not None
    assert parse_time(status.last_error["at"], "at") >= before
    assert "cannot reach the gateway" in status.last_error["message"]
    assert report["last_error"] == dict(status.last_error)
    assert report["gateway"] == {
        "host_name": "X1-interface.local",
        "address": "127.0.0.1",
        "port": port,
        "serial": "E1",
    }
    assert report["address_in_use"] == f"127.0.0.2:{other}"
    lines = dict(line.split(":", 1) for line in render_status(report).splitlines())
    assert lines["Paired with"].strip() == f"X1-interface.local:{port} at 127.0.0.1 (serial E1)"
    assert lines["Address in use"].strip() == f"127.0.0.2:{other}"
    assert lines["Last error"].strip().endswith(status.last_error["message"])


def test_last_error_round_trips_and_is_optional() -> None:
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    status = DaemonStatus(
        pid=1,
        state_dir="/x",
        started_at=now,
        updated_at=now,
        connection="reconnecting",
        connection_since=now,
        message="m",
        gateway={},
        token_expires_at=None,
        last_telegram_at=None,
        counts={},
        latency_ms={},
        serial={},
        data_request={},
        tcp=None,
        last_error={"at": "2026-01-15T12:00:00Z", "message": "connection refused"},
    )
    assert DaemonStatus.parse(status.to_json()) == status
    body = status.to_json()
    del body["last_error"]  # a status file of an older converter
    assert DaemonStatus.parse(body).last_error is None


def test_a_stopped_converter_leaves_its_last_state_and_error(tmp_path: Path) -> None:
    """What ``RuntimeDirectoryPreserve=yes`` keeps (x1p1/data/x1p1.service): the real
    ``x1p1 run`` under a ``$RUNTIME_DIRECTORY`` writes its status on the way out, and
    ``x1p1 status`` shows that, with the last error, as not running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    program = str(Path(sys.executable).parent / "x1p1")
    state, runtime = tmp_path / "state", tmp_path / "run"
    runtime.mkdir()
    save_test_pairing(state, token="t" * 43, port=closed_port(), ca_pem=None)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X1P1_", "STATE_DIR"))}
    (tmp_path / "empty.toml").touch()
    env.update(X1P1_CONFIG=str(tmp_path / "empty.toml"), RUNTIME_DIRECTORY=str(runtime))
    run = [program, "run", "--state-dir", str(state), "--serial", "none"]
    daemon = subprocess.Popen(
        [*run, "--tcp", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while "cannot reach the gateway" not in _file(runtime / "status.json"):
            assert daemon.poll() is None and time.monotonic() < deadline, "no error published"
            time.sleep(0.05)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert not (runtime / "status.sock").exists()  # nobody answers any more
    status = [program, "status", "--state-dir", str(state)]
    result = subprocess.run(status, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert lines["Converter"].strip() == "not running"
    assert "the converter stopped" in lines["Connection"]
    assert "cannot reach the gateway" in lines["Last error"]


def _file(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_no_usable_source_still_shows_the_source_line_with_its_reason() -> None:
    reason = "the token has neither P1 nor E-REALTIME or PQ-REALTIME"
    source = {"mode": "auto", "active": None, "reason": reason, "granted": [], "switches": 0}
    report = {"running": True, "pid": 7, "connection": "waiting-for-grant", "source": source}
    lines = dict(line.split(":", 1) for line in render_status(report).splitlines())
    assert lines["Source"].strip() == f"none (source = auto): {reason}"
    source["active"] = "realtime"
    lines = dict(line.split(":", 1) for line in render_status(report).splitlines())
    assert lines["Source"].strip() == f"realtime (source = auto): {reason}"
