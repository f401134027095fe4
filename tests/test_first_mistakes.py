"""Every first mistake gets one sentence and its own exit code, never a traceback
(``x1p1 --help``, ``x1p1 run --help``, ``x1p1 status --help``; README, "When something
is wrong").

Each runs the real ``x1p1`` program in a child process, as a user would.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.ca_files import ca_pem, leaf_pem
from tests.converter_support import save_test_pairing
from tests.test_converter_core import status as sample_status
from x1p1.cli import main
from x1p1.converter.state import LOCK_FILE, prepare_state_dir
from x1p1.converter.status_socket import StatusServer, socket_path

X1P1 = str(Path(sys.executable).parent / "x1p1")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X1P1_", "RUNTIME_DIR"))}
    env.pop("STATE_DIRECTORY", None)
    config = tmp_path / "empty.toml"
    config.touch()
    env["X1P1_CONFIG"] = str(config)  # never the machine's /etc/x1p1/config.toml
    return env


def x1p1(
    tmp_path: Path, *args: str, user: int | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = [X1P1, *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=_env(tmp_path)
    )


def one_sentence(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """Exit ``code``, standard error exactly one line ``x1p1: text``, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr == f"x1p1: {text}\n"


def run_args(state_dir: Path, *more: str) -> list[str]:
    return ["run", "--state-dir", str(state_dir), *more]


# --- --tcp ---------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_busy_tcp_port(tmp_path: Path, busy_port: int) -> None:
    result = x1p1(
        tmp_path, *run_args(tmp_path / "s", "--serial", "none", "--tcp", f"127.0.0.1:{busy_port}")
    )
    sentence = (
        f"cannot listen on --tcp 127.0.0.1:{busy_port}: the port is in use by another "
        "program; stop it or pick another port"
    )
    one_sentence(result, 10, sentence)
    # x1p1 status shows the refusal, not an older run's state
    status = x1p1(tmp_path, "status", "--state-dir", str(tmp_path / "s"), "--json")
    assert status.returncode == 3, status.stderr
    report = json.loads(status.stdout)
    assert not report["running"]
    assert report["message"] == "the converter stopped (last state: refused)"
    assert report["last_error"]["message"] == sentence


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A directory that user nobody can reach (pytest's own is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="x1p1-test-"))
    os.chmod(path, 0o755)
    (path / "empty.toml").touch()
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_tcp_port_below_1024_not_permitted(public_tmp: Path) -> None:
    tmp_path = public_tmp
    state = tmp_path / "s"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    result = x1p1(
        tmp_path, *run_args(state, "--serial", "none", "--tcp", "127.0.0.1:1"), user=65534
    )
    one_sentence(
        result,
        10,
        "cannot listen on --tcp 127.0.0.1:1: not permitted (ports below 1024 need root); "
        "pick a port from 1024 up",
    )


def test_tcp_address_not_of_this_machine(tmp_path: Path) -> None:
    result = x1p1(
        tmp_path, *run_args(tmp_path / "s", "--serial", "none", "--tcp", "192.0.2.7:2001")
    )
    one_sentence(
        result,
        10,
        "cannot listen on --tcp 192.0.2.7:2001: no interface of this machine has that "
        "address; give one of its addresses",
    )


# --- --serial ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "what"),
    [
        ("file", "a regular file"),
        ("directory", "a directory"),
        ("/dev/null", "a device that is no tty"),
    ],
)
def test_serial_path_that_is_no_serial_device(tmp_path: Path, make: str, what: str) -> None:
    if make == "file":
        path = tmp_path / "ttyUSB0"
        path.write_text("")
    elif make == "directory":
        path = tmp_path / "serial"
        path.mkdir()
    else:
        path = Path(make)
    result = x1p1(tmp_path, *run_args(tmp_path / "s", "--serial", str(path)))
    one_sentence(
        result,
        11,
        f"--serial {path} is not a serial device ({what}); give the P1 adapter's device "
        "(x1p1 serial list shows them) or none for the TCP output only",
    )


def _wait_for(predicate: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_missing_device_is_waited_for_and_status_says_so(tmp_path: Path) -> None:
    missing = f"/dev/x1p1-test-missing-{os.getpid()}"
    state = tmp_path / "s"
    daemon = subprocess.Popen(
        [X1P1, *run_args(state, "--serial", missing)],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        results: list[subprocess.CompletedProcess[str]] = []

        def reported() -> bool:
            assert daemon.poll() is None, daemon.communicate()[1]
            results.append(x1p1(tmp_path, "status", "--state-dir", str(state)))
            return "is absent" in results[-1].stderr

        _wait_for(reported, "x1p1 status never named the absent output")
        result = results[-1]
        assert result.returncode == 3  # not paired, not connected: that first
        assert result.stderr == (
            f"x1p1: the P1 output {missing} is absent (no such device); the converter "
            "waits for it\n"
        )
        assert daemon.poll() is None  # still waiting for it, as it should
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0


async def test_status_exits_4_while_connected_with_an_absent_output(tmp_path: Path) -> None:
    save_test_pairing(tmp_path, token="t" * 43, port=443, ca_pem=None)
    answer = replace(
        sample_status(tmp_path),
        serial={"port": "/dev/x1p1-p1", "state": "absent", "error": "no such device"},
    )
    server = StatusServer(socket_path(tmp_path / "status.json"), lambda: answer)
    await server.start()
    try:
        env = {"RUNTIME_DIRECTORY": ""}
        result = await asyncio.to_thread(
            CliRunner(env=env).invoke, main, ["status", "--state-dir", str(tmp_path)]
        )
        stuck = replace(answer, serial={"port": "/dev/x1p1-p1", "state": "stuck", "error": ""})
        server._status = lambda: stuck
        second = await asyncio.to_thread(
            CliRunner(env=env).invoke, main, ["status", "--state-dir", str(tmp_path)]
        )
        server._status = lambda: replace(answer, serial={"port": "/dev/x1p1-p1", "state": "open"})
        third = await asyncio.to_thread(
            CliRunner(env=env).invoke, main, ["status", "--state-dir", str(tmp_path)]
        )
    finally:
        await server.close()
    assert result.exit_code == 4, result.output
    assert result.stderr == (
        "x1p1: the P1 output /dev/x1p1-p1 is absent (no such device); the converter waits for it\n"
    )
    assert second.exit_code == 4
    assert second.stderr == (
        "x1p1: the P1 output /dev/x1p1-p1 is stuck; the converter keeps trying\n"
    )
    assert third.exit_code == 0 and third.stderr == ""


# --- the gateway extra ---------------------------------------------------------------

WITHOUT_GATEWAY = (
    "import sys; sys.modules['aiohttp'] = None; sys.modules['cryptography'] = None; "
    "from x1p1.cli import main; main(sys.argv[1:], prog_name='x1p1')"
)


@pytest.mark.parametrize(
    "command",
    [
        ["gateway", "serve"],
        ["gateway", "ca"],
        ["meter", "list"],
        ["meter", "approve"],
        ["meter", "comlog"],
        ["operator", "read"],
        ["demo"],
        ["verify-billing", "-", "--ca", "ca.pem"],
    ],
)
def test_gateway_commands_without_the_gateway_extra(tmp_path: Path, command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_GATEWAY, *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    name = " ".join(command[:2]) if command[0] in ("gateway", "meter", "operator") else command[0]
    one_sentence(result, 2, f"`x1p1 {name}` needs the gateway extra: pip install 'x1p1[gateway]'")


def test_help_marks_the_gateway_commands() -> None:
    text = CliRunner().invoke(main, ["--help"]).output
    marked = {line.split()[0] for line in text.splitlines() if "[gateway extra]" in line}
    assert {"demo", "gateway", "meter", "operator", "verify-billing"} <= marked
    assert "run" not in marked and "pair" not in marked


# --- the state directory -------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_read_only_state_directory(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    script = (
        f'mount -t tmpfs -o ro tmpfs "{mount}" && exec "{X1P1}" run --state-dir '
        f'"{mount}/x1p1" --serial none --tcp 127.0.0.1:0'
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(tmp_path),
    )
    one_sentence(
        result,
        12,
        f"cannot write in the state directory {mount}/x1p1: it is on a read-only file "
        "system; give a writable --state-dir (or state_dir in the config file)",
    )


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_unwritable_state_directory(public_tmp: Path) -> None:
    tmp_path = public_tmp
    state = tmp_path / "root-owned"
    state.mkdir(mode=0o755)
    result = x1p1(
        tmp_path, *run_args(state, "--serial", "none", "--tcp", "127.0.0.1:0"), user=65534
    )
    one_sentence(
        result,
        12,
        f"cannot write in the state directory {state}: permission denied (run as its "
        "owner, or with sudo); give a writable --state-dir (or state_dir in the config file)",
    )


def test_existing_state_directory_is_brought_to_0700(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    prepare_state_dir(state)
    assert state.stat().st_mode & 0o777 == 0o700


def test_run_brings_an_existing_state_directory_to_0700(tmp_path: Path, busy_port: int) -> None:
    state = tmp_path / "s"
    state.mkdir()
    os.chmod(state, 0o775)
    result = x1p1(tmp_path, *run_args(state, "--serial", "none", "--tcp", f"127.0.0.1:{busy_port}"))
    assert result.returncode == 10  # it stopped at the port, after the directory
    assert state.stat().st_mode & 0o777 == 0o700


def _daemon(tmp_path: Path, state: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [X1P1, *run_args(state, "--serial", "none", "--tcp", "127.0.0.1:0")],
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lock = state / LOCK_FILE

    def holds() -> bool:
        assert process.poll() is None
        return lock.exists() and lock.read_text().strip() == str(process.pid)

    _wait_for(holds, "the converter never took its lock")
    return process


def test_second_run_on_one_state_directory_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s"
    first = _daemon(tmp_path, state)
    try:
        second = x1p1(tmp_path, *run_args(state, "--serial", "none", "--tcp", "127.0.0.1:0"))
        one_sentence(
            second,
            13,
            f"another x1p1 run (pid {first.pid}) uses the state directory {state}; stop it "
            "first (sudo systemctl stop x1p1), or give another --state-dir",
        )
        # the refused second run wrote nothing over the running daemon's status
        status = x1p1(tmp_path, "status", "--state-dir", str(state), "--json")
        report = json.loads(status.stdout)
        assert report["running"] and report["pid"] == first.pid
        written = state / "status.json"
        assert not written.exists() or "another x1p1 run" not in written.read_text()
    finally:
        first.kill()  # SIGKILL: no clean-up of its own
        first.wait()
    third = _daemon(tmp_path, state)  # the kernel dropped the lock with the process
    third.send_signal(signal.SIGTERM)
    assert third.wait(30) == 0


# --- --ca ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "it does not exist"),
        (b"hello\n", "it is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)"),
        (
            b"\x30\x82\x01\x0a",
            "it is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line; it looks "
            "like DER: openssl x509 -inform DER converts it)",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "its PEM certificate is damaged (it does not decode)",
        ),
        (
            "leaf",
            "its certificate is not a CA (a server's own certificate?); give the gateway's "
            "root CA, which `x1p1 gateway ca` prints for the embedded gateway",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "pair"])
def test_ca_problems_name_the_file(
    tmp_path: Path, content: bytes | str | None, problem: str, command: str
) -> None:
    ca = tmp_path / "gateway-ca.pem"
    if content == "leaf":
        ca.write_bytes(leaf_pem())
    elif isinstance(content, bytes):
        ca.write_bytes(content)
    args = [command, "--ca", str(ca), "--state-dir", str(tmp_path / "s")]
    if command == "pair":
        args += ["--gateway", "127.0.0.1:9"]
    result = x1p1(tmp_path, *args)
    one_sentence(result, 2, f"--ca {str(ca)!r} is not a usable CA file: {problem}")


def test_a_root_ca_is_taken(tmp_path: Path) -> None:
    ca = tmp_path / "gateway-ca.pem"
    ca.write_bytes(ca_pem())
    result = x1p1(
        tmp_path,
        "pair",
        "--ca",
        str(ca),
        "--gateway",
        "127.0.0.1:9",
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert result.returncode == 6, result.stderr  # on to the gateway: unreachable


def test_every_exit_code_of_run_is_listed_in_its_help() -> None:
    from x1p1.cli import RUN_EXIT

    text = CliRunner().invoke(main, ["run", "--help"]).output
    words = [line.split() for line in text.splitlines()]
    listed = {int(w[0]) for w in words if len(w) > 1 and w[0].isdigit()}
    assert {0, 1, 2, *RUN_EXIT.values()} <= listed
    assert len(set(RUN_EXIT.values())) == len(RUN_EXIT)  # one code per mistake
    unit = (Path(__file__).parent.parent / "systemd" / "x1p1.service").read_text()
    prevent = next(line for line in unit.splitlines() if line.startswith("RestartPrevent"))
    assert set(prevent.split("=", 1)[1].split()) == {"2", *map(str, RUN_EXIT.values())}


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
async def test_status_as_another_user_says_so_rather_than_not_running(public_tmp: Path) -> None:
    state = public_tmp / "s"
    state.mkdir(mode=0o755)
    server = StatusServer(socket_path(state / "status.json"), lambda: sample_status(state))
    await server.start()  # the service's socket: mode 0600, root's
    try:
        result = await asyncio.to_thread(
            x1p1, public_tmp, "status", "--state-dir", str(state), user=65534
        )
    finally:
        await server.close()
    assert result.returncode == 3
    assert result.stderr == (
        f"x1p1: cannot read {state}/status.sock: permission denied; run it as root "
        "(sudo x1p1 status)\n"
    )
    assert "Converter:" in result.stdout and "unknown: cannot read" in result.stdout


def test_a_port_that_is_no_tty_is_said_in_words_not_as_a_tuple() -> None:
    import errno
    import termios

    from x1p1.converter.serial_out import _sentence

    error = termios.error(errno.ENOTTY, "Inappropriate ioctl for device")
    assert _sentence(error) == "not a serial device (no tty)"
    assert _sentence(termios.error(errno.EINVAL, "Invalid argument")) == "Invalid argument"
    assert _sentence(OSError(errno.ENOTTY, "Inappropriate ioctl")) == "not a serial device (no tty)"


# --- the state directory of another user: status, pair, unpair -------------------------

NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root (setpriv)"
)


def _root_owned_state(public_tmp: Path, layout: str) -> Path:
    """A paired state directory of root's that user nobody cannot use: ``0700`` itself,
    ``0755`` but not writable, or inside a ``0700`` directory (systemd's
    /var/lib/private under DynamicUser=, x1p1/data/x1p1.service)."""
    if layout == "inside-0700":
        private = public_tmp / "private"
        private.mkdir(mode=0o700)
        state = private / "x1p1"
    else:
        state = public_tmp / "x1p1"
    state.mkdir(mode=0o700)
    save_test_pairing(state, token="t" * 43, port=443, ca_pem=None)
    os.chmod(state, 0o755 if layout == "0755" else 0o700)
    return state


def _write_sentence(state: Path) -> str:
    return (
        f"cannot write in the state directory {state}: permission denied (run as its "
        "owner, or with sudo); give a writable --state-dir (or state_dir in the config file)"
    )


@needs_root
@pytest.mark.parametrize("layout", ["0700", "inside-0700"])
def test_status_on_a_state_directory_it_may_not_read(public_tmp: Path, layout: str) -> None:
    state = _root_owned_state(public_tmp, layout)
    result = x1p1(public_tmp, "status", "--state-dir", str(state), user=NOBODY)
    one_sentence(
        result,
        12,
        f"cannot read the state directory {state}: permission denied (run as its owner, "
        "or with sudo)",
    )
    assert result.stdout == ""


@needs_root
@pytest.mark.parametrize("layout", ["0700", "0755", "inside-0700"])
def test_pair_checks_the_state_directory_before_asking(public_tmp: Path, layout: str) -> None:
    state = _root_owned_state(public_tmp, layout)
    (state / "token.json").unlink()
    result = x1p1(
        public_tmp, "pair", "--gateway", "127.0.0.1:9", "--state-dir", str(state), user=NOBODY
    )
    one_sentence(result, 12, _write_sentence(state))
    assert result.stdout == ""  # neither "Looking for" nor "Asking … for a token"
    assert state.stat().st_mode & 0o777 == (0o755 if layout == "0755" else 0o700)


@needs_root
@pytest.mark.parametrize("layout", ["0700", "0755", "inside-0700"])
def test_unpair_on_a_state_directory_it_may_not_write(public_tmp: Path, layout: str) -> None:
    state = _root_owned_state(public_tmp, layout)
    result = x1p1(public_tmp, "unpair", "--state-dir", str(state), user=NOBODY)
    one_sentence(result, 12, _write_sentence(state))
    assert (state / "token.json").exists()


@needs_root
def test_a_state_file_that_cannot_be_written_is_one_sentence(public_tmp: Path) -> None:
    """write_atomic, reached through the uuid a token request carries: no traceback from
    the temporary file, no errno."""
    state = public_tmp / "x1p1"
    state.mkdir(mode=0o755)
    script = (
        "import sys; from pathlib import Path; from x1p1.converter.state import install_uuid; "
        "from x1p1.exceptions import StateDirError\n"
        "try:\n install_uuid(Path(sys.argv[1]))\n"
        "except StateDirError as e:\n print(e)"
    )
    command = [sys.executable, "-c", script, str(state)]
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(public_tmp),
    )
    assert (result.stdout, result.stderr) == (_write_sentence(state) + "\n", "")


@needs_root
def test_unreadable_token_file_is_one_sentence(public_tmp: Path) -> None:
    state = public_tmp / "x1p1"
    state.mkdir(mode=0o755)
    save_test_pairing(state, token="t" * 43, port=443, ca_pem=None)
    result = x1p1(public_tmp, "status", "--state-dir", str(state), "--json", user=NOBODY)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["pairing_error"] == (
        f"cannot read {state}/token.json: permission denied (run as its owner, or with sudo)"
    )


def test_pair_and_unpair_list_the_state_directory_exit_code() -> None:
    for command in ("pair", "unpair", "status"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert any(line.split()[:1] == ["12"] for line in text.splitlines()), command


# --- a --serial that is missing ------------------------------------------------------


@pytest.mark.parametrize("where", ["elsewhere", "/dve/ttyUSB0", "/dev/../x1p1-nope/ttyUSB0"])
def test_missing_serial_path_outside_dev_is_refused(tmp_path: Path, where: str) -> None:
    """Nothing is ever plugged in there: refused, not waited for. (A relative path is
    refused by the config already, x1p1/converter/config.py.)"""
    path = str(tmp_path / "nope" / "ttyUSB0") if where == "elsewhere" else where
    result = x1p1(tmp_path, *run_args(tmp_path / "s", "--serial", path))
    one_sentence(
        result,
        11,
        f"--serial {path} does not exist, and only a device under /dev is waited for; give "
        "the P1 adapter's device (x1p1 serial list shows them) or none for the TCP output "
        "only",
    )


@pytest.mark.parametrize(
    "path",
    [
        "/dev/x1p1-test-not-plugged-in",
        "/dev/serial/by-id/usb-FTDI-not-plugged-in",
        "socket://127.0.0.1:9",
        "loop://",
        "rfc2217://127.0.0.1:9",
    ],
)
def test_missing_device_under_dev_and_urls_are_taken(path: str) -> None:
    from x1p1.converter.serial_out import check_serial_path

    check_serial_path(path)  # waited for (or opened as a URL): no NotASerialDevice


def test_a_serial_path_from_an_output_table_names_its_table(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[output]]\ntcp = "127.0.0.1:0"\n\n[[output]]\nserial = "/dev/null"\n')
    result = x1p1(tmp_path, *run_args(tmp_path / "s", "--config", str(config)))
    one_sentence(
        result,
        11,
        '[[output]] number 2: serial = "/dev/null" is not a serial device (a device that is '
        "no tty); give the P1 adapter's device (x1p1 serial list shows them) or none for "
        "the TCP output only",
    )


def test_a_serial_path_from_the_config_file_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('log_level = "info"\nserial = "/dev/null"\n')
    result = x1p1(tmp_path, *run_args(tmp_path / "s", "--config", str(config)))
    one_sentence(
        result,
        11,
        f'{config} line 2: serial = "/dev/null" is not a serial device (a device that is '
        "no tty); give the P1 adapter's device (x1p1 serial list shows them) or none for "
        "the TCP output only",
    )
