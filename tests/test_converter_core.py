"""The converter's pure parts: the connection table, backoff, state files, status file.

No network here: time is passed in, files go to ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from converter_support import fast_options, save_test_pairing
from hypothesis import given
from hypothesis import strategies as st

from x1p1.cli import main
from x1p1.converter.state import (
    DaemonStatus,
    SavedPairing,
    StatusPublisher,
    TokenFileWatch,
    ask_status,
    find_status,
    install_uuid,
    load_pairing,
    render_status,
    status_report,
    write_atomic,
)
from x1p1.converter.status_socket import StatusServer, socket_path
from x1p1.converter.supervisor import Converter
from x1p1.exceptions import NotPaired, StateError
from x1p1.x1.connection import (
    BACKOFF_MAX,
    DISCOVER_AFTER,
    FAST_TRIES,
    TRANSITIONS,
    Conn,
    ConnectionMachine,
    Ev,
    backoff_delay,
)

# --- the connection table --------------------------------------------------------------


def machine(**kwargs: object) -> ConnectionMachine:
    m = ConnectionMachine(rng=lambda: 1.0, **kwargs)  # type: ignore[arg-type]
    m.handle(Ev.CONNECT, 0.0)
    return m


def test_every_state_has_a_row_and_stop_ends_everything() -> None:
    assert set(TRANSITIONS) == set(Conn)
    for state, row in TRANSITIONS.items():
        if state is not Conn.STOPPED:
            assert row[Ev.STOP] is Conn.STOPPED


def test_failures_back_off_exponentially_up_to_30_s() -> None:
    m = machine(can_discover=False)
    delays = []
    for i in range(15):
        assert m.handle(Ev.FAILED, float(i * 100)) is Conn.BACKOFF
        assert m.wake_at is not None
        delays.append(m.wake_at - i * 100)
        assert not m.due(i * 100 + delays[-1] - 0.001) and m.due(i * 100 + delays[-1])
        m.handle(Ev.CONNECT, m.wake_at)
    assert delays == [1] * FAST_TRIES + [2, 4, 8, 16, 30]


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_backoff_is_jittered_and_never_over_30_s(failures: int, r: float) -> None:
    delay = backoff_delay(failures, lambda: r)
    assert 0.5 <= delay <= BACKOFF_MAX


def test_repeated_failures_rediscover_then_back_off() -> None:
    m = machine(can_discover=True)
    states = []
    for i in range(DISCOVER_AFTER * 2):
        states.append(m.handle(Ev.FAILED, float(i)))
        if states[-1] is Conn.BACKOFF:
            m.handle(Ev.CONNECT, float(i))
        else:
            m.handle(Ev.NOT_DISCOVERED, float(i))
            m.handle(Ev.CONNECT, float(i))
    assert states == [Conn.BACKOFF, Conn.BACKOFF, Conn.DISCOVERING] * 2


def test_a_healthy_link_resets_the_backoff() -> None:
    m = machine(can_discover=False)
    for _ in range(4):
        m.handle(Ev.FAILED, 0.0)
        m.handle(Ev.CONNECT, 0.0)
    m.handle(Ev.OPENED, 0.0)
    m.handle(Ev.RELAYING, 0.0)
    m.handle(Ev.FAILED, 100.0)
    assert m.wake_at == 101.0  # the first step again
    assert m.reconnects == 0 and m.opened == 1


def test_refused_token_and_bad_certificate_wait_for_a_new_token() -> None:
    for event, state in (
        (Ev.UNAUTHORIZED, Conn.NEEDS_PAIRING),
        (Ev.BAD_CERTIFICATE, Conn.CERTIFICATE_ERROR),
    ):
        m = machine()
        assert m.handle(event, 5.0) is state
        assert m.wake_at is None and not m.due(1e9)  # never retried by time
        for ignored in (Ev.CONNECT, Ev.FAILED, Ev.OPENED):
            assert m.handle(ignored, 6.0) is state
        assert m.handle(Ev.TOKEN_CHANGED, 7.0) is Conn.CONNECTING


def test_x1_disabled_retries_every_60_s_scaled() -> None:
    m = machine(scale=0.5)
    assert m.handle(Ev.DISABLED, 10.0) is Conn.X1_DISABLED
    assert m.wake_at == 40.0
    m.handle(Ev.CONNECT, 40.0)
    assert m.handle(Ev.DISABLED, 41.0) is Conn.X1_DISABLED and m.wake_at == 71.0


def test_rate_limited_waits_at_least_retry_after() -> None:
    m = machine()
    m.handle(Ev.RATE_LIMITED, 0.0, retry_after=120.0)
    assert m.state is Conn.BACKOFF and m.wake_at == 120.0


# --- state files ------------------------------------------------------------------------


def test_install_uuid_is_made_once_and_kept(tmp_path: Path) -> None:
    first = install_uuid(tmp_path / "s")
    assert install_uuid(tmp_path / "s") == first
    assert (tmp_path / "s" / "uuid").stat().st_mode & 0o777 == 0o600
    (tmp_path / "s" / "uuid").write_text("nonsense")
    with pytest.raises(StateError, match="holds no uuid"):
        install_uuid(tmp_path / "s")


def test_write_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "d" / "f.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["f.json"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_pairing_round_trip_and_no_token_in_repr(tmp_path: Path) -> None:
    saved = save_test_pairing(tmp_path, token="secret-token-value", port=8443, ca_pem="PEM")
    loaded = load_pairing(tmp_path)
    assert loaded == saved
    assert "secret-token-value" not in repr(loaded) and "PEM" not in repr(loaded)
    assert loaded.with_gateway(address="10.0.0.9").address == "10.0.0.9"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ("[]", "a JSON object expected"),
        ('{"token": "t"}', "gateway: missing"),
        ('{"token": "t", "gateway": {"host_name": "h", "port": 0}}', "gateway.port"),
    ],
)
def test_a_broken_token_file_says_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "token.json").write_text(content)
    with pytest.raises(StateError, match=message):
        load_pairing(tmp_path)


def test_not_paired(tmp_path: Path) -> None:
    with pytest.raises(NotPaired, match="x1p1 pair"):
        load_pairing(tmp_path)


def test_token_file_watch(tmp_path: Path) -> None:
    watch = TokenFileWatch(tmp_path)
    assert not watch.changed()
    save_test_pairing(tmp_path, token="a" * 43, port=1, ca_pem=None)
    assert watch.changed() and not watch.changed()
    save_test_pairing(tmp_path, token="b" * 43, port=1, ca_pem=None)
    watch.mark_seen()
    assert not watch.changed()
    (tmp_path / "token.json").unlink()
    assert watch.changed()


# --- the status file --------------------------------------------------------------------


def status(
    state_dir: Path, *, relayed: int = 0, connection: str = "connected", pid: int | None = None
) -> DaemonStatus:
    now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    return DaemonStatus(
        pid=os.getpid() if pid is None else pid,
        state_dir=str(state_dir.resolve()),
        started_at=now,
        updated_at=now + timedelta(seconds=relayed),
        connection=connection,
        connection_since=now,
        message="connected to X1-interface.local:443",
        gateway={"host_name": "X1-interface.local", "address": "10.0.0.2", "port": 443},
        token_expires_at=None,
        last_telegram_at=now,
        counts={"relayed": relayed, "dropped_invalid": 0},
        latency_ms={"p50": 0.1, "p99": 0.5},
        serial={"port": "/dev/x1p1-p1", "state": "open", "error": ""},
        data_request={"mode": "ignore", "state": "ignored"},
        tcp=None,
    )


def test_status_is_written_only_when_changed_and_at_most_every_interval(tmp_path: Path) -> None:
    publisher = StatusPublisher(tmp_path / "status.json", interval=5.0, urgent_interval=1.0)
    assert publisher.publish(status(tmp_path, relayed=1), 0.0)
    assert not publisher.publish(status(tmp_path, relayed=1), 100.0)  # same content
    assert not publisher.publish(status(tmp_path, relayed=2), 4.9)  # too soon
    assert not publisher.held_back  # only counters: nothing to chase
    assert publisher.publish(status(tmp_path, relayed=3), 5.0)
    assert not publisher.publish(status(tmp_path, relayed=3, connection="reconnecting"), 5.5)
    assert publisher.held_back  # a new state held back: the daemon calls again in a second
    assert publisher.publish(status(tmp_path, relayed=3, connection="reconnecting"), 6.0)
    assert not publisher.held_back
    assert publisher.writes == 3
    body = json.loads((tmp_path / "status.json").read_text())
    assert DaemonStatus.parse(body) == status(tmp_path, relayed=3, connection="reconnecting")


def test_status_is_found_in_the_runtime_dir(tmp_path: Path) -> None:
    state_dir, runtime = tmp_path / "state", tmp_path / "run"
    StatusPublisher(runtime / "status.json").publish(status(state_dir, relayed=7), 0.0)
    found = find_status(state_dir, {"RUNTIME_DIRECTORY": str(runtime)})
    assert found is not None and found.counts["relayed"] == 7
    assert find_status(tmp_path / "other", {"RUNTIME_DIRECTORY": str(runtime)}) is None


def test_status_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    save_test_pairing(tmp_path, token="t" * 43, port=8443, ca_pem=None, serial="E1")
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 3 and "not running" in result.output
    assert "X1-interface.local:8443 at 127.0.0.1 (serial E1)" in result.output
    # A stand-in daemon: a live process whose command line names x1p1.
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "x1p1"])
    try:
        # its command line as the kernel shows it, once it has one (a loaded machine)
        cmdline = Path(f"/proc/{daemon.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"x1p1" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"x1p1" in cmdline.read_bytes(), (cmdline.read_bytes(), daemon.poll())
        published = status(tmp_path, relayed=5, pid=daemon.pid)
        StatusPublisher(tmp_path / "status.json").publish(published, 0.0)
        result = runner.invoke(main, ["status", "--json", "--state-dir", str(tmp_path)])
    finally:
        daemon.kill()
        daemon.wait()
    report = json.loads(result.output)
    assert result.exit_code == 0, result.output  # this process's pid: "running"
    assert report["running"] and report["connection"] == "connected"
    assert report["counts"]["relayed"] == 5
    # the saved pairing, and apart from it the address the daemon uses (--gateway may differ)
    assert report["gateway"]["address"] == "127.0.0.1"
    assert report["address_in_use"].startswith("10.0.0.2:")
    assert "t" * 43 not in result.output
    text = render_status(report)
    for label in (
        "Paired with",
        "Token expires",
        "Connection",
        "Address in use",
        "Last telegram",
        "Telegrams",
        "Latency",
        "Serial port",
        "Data Request",
    ):
        assert f"{label}:" in text


@pytest.mark.parametrize("depth", [1, 12], ids=["short path", "path over 107 bytes"])
async def test_status_socket_answers_with_the_status_of_the_moment(
    tmp_path: Path, depth: int
) -> None:
    state_dir = tmp_path.joinpath(*["a-long-directory-name"] * depth)
    file = state_dir / "status.json"
    StatusPublisher(file).publish(status(state_dir, relayed=1, pid=os.getpid()), 0.0)
    relayed = [41]

    def now() -> DaemonStatus:
        relayed[0] += 1
        return status(state_dir, relayed=relayed[0], pid=os.getpid())

    server = StatusServer(socket_path(file), now)
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(socket_path(file)).st_mode) == 0o600
        first = await asyncio.to_thread(find_status, state_dir, {})
        second = await asyncio.to_thread(status_report, state_dir, {})
    finally:
        await server.close()
    # the daemon's answer, not the file's relayed=1, and a new one each time
    assert first is not None and first.counts["relayed"] == 42
    assert second["running"] and second["counts"]["relayed"] == 43
    assert not socket_path(file).exists()  # taken away on the way out
    found = find_status(state_dir, {})  # no socket: the file
    assert found is not None and found.counts["relayed"] == 1


def test_ask_status_without_a_daemon_or_with_garbage(tmp_path: Path) -> None:
    assert ask_status(tmp_path / "status.sock") is None  # nothing there
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "status.sock"))
        listener.listen(1)

        def garbage() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(b"{not json\n")

        thread = threading.Thread(target=garbage)
        thread.start()
        assert ask_status(tmp_path / "status.sock") is None
        thread.join()


def test_status_of_a_dead_daemon(tmp_path: Path) -> None:
    StatusPublisher(tmp_path / "status.json").publish(status(tmp_path, pid=2**22 + 7), 0.0)
    report = status_report(tmp_path, {})
    assert report["running"] is False and report["connection"] == "not running"
    assert "last state: connected" in report["message"]


def test_pairing_parse_rejects_garbage() -> None:
    with pytest.raises(StateError):
        SavedPairing.parse({"token": "t", "gateway": {"host_name": "h", "port": 1}, "paired_at": 5})


def test_status_finds_the_state_dir_in_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "var-lib-x1p1"
    save_test_pairing(state_dir, token="t" * 43, port=8443, ca_pem=None, serial="E7")
    config = tmp_path / "config.toml"
    config.write_text(f'state_dir = "{state_dir}"\n')
    monkeypatch.setenv("X1P1_CONFIG", str(config))
    result = CliRunner().invoke(main, ["status"])
    assert "(serial E7)" in result.output
    config.write_text("state_dir = 5\n")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 2 and "line 1" in result.output


def test_the_daemon_imports_no_gateway_aiohttp_or_cryptography() -> None:
    code = (
        "import sys\n"
        "import x1p1.cli, x1p1.converter.supervisor, x1p1.converter.pairing\n"
        "import x1p1.converter.stream, x1p1.converter.serial_out, x1p1.converter.tcp_out\n"
        "import x1p1.converter.state, x1p1.converter.discovery, x1p1.converter.install\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'cryptography')\n"
        "       or m.startswith('x1p1.gateway')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_a_telegram_round_makes_the_loop_plan_a_fresh_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/architecture.md, habit 12: when a telegram does the housekeeping round, the
    loop computes its deadline anew and waits with a fresh timeout; no timer is pushed
    back (``asyncio.Timeout.reschedule``)."""
    converter = Converter(fast_options(tmp_path / "state", None, tick=5.0))
    rescheduled: list[float | None] = []
    waits: list[float | None] = []
    real_timeout = asyncio.timeout

    def timeout(delay: float | None) -> asyncio.Timeout:
        waits.append(delay)
        return real_timeout(delay)

    real_reschedule = asyncio.Timeout.reschedule

    def reschedule(self: asyncio.Timeout, when: float | None) -> None:
        if when != self.when():  # entering a timeout arms it at its own deadline
            rescheduled.append(when)
        real_reschedule(self, when)

    monkeypatch.setattr(asyncio.Timeout, "reschedule", reschedule)
    monkeypatch.setattr(asyncio, "timeout", timeout)
    stream = asyncio.get_running_loop().create_future()
    loop_task = asyncio.ensure_future(converter._supervise(stream))

    async def settle(count: int) -> None:
        for _ in range(1000):
            if len(waits) >= count:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"the loop planned {len(waits)} waits, not {count}")

    try:
        await settle(1)
        assert waits[0] is not None and 5.0 <= waits[0] <= 5.0 + 1.5
        converter._housekeep(time.monotonic() + 100.0)  # a telegram found the round due
        await settle(2)
        assert waits[1] is not None and waits[1] > 100.0  # planned from the new due time
        assert converter.wake_at() == converter._housekeeping_due + converter._slack
        assert rescheduled == []
    finally:
        converter.stop()
        await asyncio.wait_for(loop_task, 5)
        stream.cancel()
