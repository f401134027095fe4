"""``x1p1 install --root`` and ``x1p1 uninstall --root``: the files written, their modes and
contents, ``systemd-analyze verify`` on the unit, idempotence, a user-edited config kept
(x1p1/converter/install.py; README, "Raspberry Pi").

The adapters are pseudo-terminals (real tty devices) described to the udev rule's code
by a list, as tests/test_serial_ports.py does; the udev rule itself is that module's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_serial_ports import ListSource, TtyDevice, UsbDevice
from x1p1.cli import main
from x1p1.converter import install as installer
from x1p1.converter.config import load_run_config
from x1p1.converter.serial_ports import SerialPortInfo, list_ports, udev_rule
from x1p1.exceptions import ConfigError

PROGRAM = Path(sys.executable).parent / "x1p1"
ANALYZE = shutil.which("systemd-analyze")


def at(root: Path, path: object) -> Path:
    return root / str(path).lstrip("/")


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


@pytest.fixture
def ptys() -> Iterator[list[str]]:
    """Two real tty devices standing in for two USB serial adapters."""
    pairs = [os.openpty() for _ in range(2)]
    yield [os.ttyname(follower) for _, follower in pairs]
    for pair in pairs:
        for fd in pair:
            os.close(fd)


def adapters(ptys: list[str]) -> ListSource:
    usb = [
        UsbDevice("1-1.2", "0403", "6001", "A50285BI", "FTDI", "FT232R USB UART"),
        UsbDevice("1-1.3", "10c4", "ea60", "0001", "Silicon Labs", "CP2102"),
    ]
    return ListSource(
        [
            TtyDevice(device_node=node, driver="ftdi_sio", usb=device, interface="00")
            for node, device in zip(ptys, usb, strict=True)
        ]
    )


def never(ports: list[SerialPortInfo]) -> SerialPortInfo:
    raise AssertionError(f"asked to choose among {ports}")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_install_writes_unit_config_state_and_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from x1p1.converter import serial_ports

    # a machine without USB serial adapters, whatever this one has plugged in
    monkeypatch.setattr(serial_ports, "PyudevSource", lambda: ListSource([]))
    code, output = cli("install", "--root", str(tmp_path), "--tcp", "127.0.0.1:2001")
    assert code == 0, output
    unit = at(tmp_path, installer.UNIT)
    config = at(tmp_path, installer.CONFIG)
    state = at(tmp_path, installer.STATE_DIR)
    assert mode(unit) == 0o644 and mode(config) == 0o644
    assert mode(state) == 0o700 and state.is_dir()
    text = unit.read_text()
    assert f"ExecStart={PROGRAM} run --config /etc/x1p1/config.toml" in text
    assert text == installer.packaged_unit().replace(installer.SHIPPED_EXEC, str(PROGRAM))
    read = load_run_config(config, env={})
    assert (read.serial, str(read.tcp), read.state_dir) == (
        "/dev/x1p1-p1",
        "127.0.0.1:2001",
        Path("/var/lib/x1p1"),
    )
    wants = at(tmp_path, "/etc/systemd/system/multi-user.target.wants/x1p1.service")
    assert os.readlink(wants) == "/etc/systemd/system/x1p1.service"
    assert os.readlink(at(tmp_path, "/usr/local/bin/x1p1")) == str(PROGRAM)
    assert not at(tmp_path, installer.RULE).exists()  # no USB adapter: no rule
    manifest = json.loads(at(tmp_path, installer.MANIFEST).read_text())
    assert set(manifest["files"]) == {str(installer.UNIT), str(installer.CONFIG)}
    assert "skipped    udevadm, systemctl" in output
    assert "Next: sudo x1p1 pair" in output


def test_the_packaged_unit_is_the_one_in_systemd() -> None:
    shipped = Path(__file__).parent.parent / "systemd" / "x1p1.service"
    assert installer.packaged_unit() == shipped.read_text()


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_is_clean_on_the_written_unit(tmp_path: Path) -> None:
    assert cli("install", "--root", str(tmp_path), "--serial", "none", "--tcp", ":2001")[0] == 0
    unit = at(tmp_path, installer.UNIT)
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    about_it = [line for line in (result.stdout + result.stderr).splitlines() if "x1p1" in line]
    assert result.returncode == 0 and about_it == [], result.stdout + result.stderr


def test_install_is_idempotent(tmp_path: Path) -> None:
    args = ("install", "--root", str(tmp_path), "--tcp", "127.0.0.1:2001")
    assert cli(*args)[0] == 0
    files = [at(tmp_path, installer.UNIT), at(tmp_path, installer.CONFIG)]
    before = [(f.read_bytes(), f.stat().st_mtime_ns, f.stat().st_ino) for f in files]
    code, output = cli(*args)
    assert code == 0
    assert [(f.read_bytes(), f.stat().st_mtime_ns, f.stat().st_ino) for f in files] == before
    lines = [line.split()[0] for line in output.splitlines() if line.startswith(("w", "u", "l"))]
    assert set(lines) == {"unchanged"}, output


def test_an_edited_config_is_kept_and_force_replaces_it(tmp_path: Path) -> None:
    assert cli("install", "--root", str(tmp_path), "--tcp", "127.0.0.1:2001")[0] == 0
    config = at(tmp_path, installer.CONFIG)
    edited = config.read_text() + 'log_level = "debug"\n'
    config.write_text(edited)
    code, output = cli("install", "--root", str(tmp_path), "--tcp", "127.0.0.1:2002")
    assert code == 0
    assert config.read_text() == edited
    assert (
        "kept       /etc/x1p1/config.toml  (edited since x1p1 install wrote it; --force "
        "replaces it)"
    ) in output
    code, output = cli("install", "--root", str(tmp_path), "--tcp", "127.0.0.1:2002", "--force")
    assert code == 0 and "wrote      /etc/x1p1/config.toml" in output
    assert 'tcp = "127.0.0.1:2002"' in config.read_text() and "debug" not in config.read_text()


def test_new_options_rewrite_a_config_nobody_edited(tmp_path: Path) -> None:
    assert cli("install", "--root", str(tmp_path), "--tcp", "127.0.0.1:2001")[0] == 0
    code, output = cli("install", "--root", str(tmp_path), "--tcp", "127.0.0.1:2002")
    assert code == 0 and "wrote      /etc/x1p1/config.toml" in output
    assert 'tcp = "127.0.0.1:2002"' in at(tmp_path, installer.CONFIG).read_text()


def test_an_existing_state_directory_is_brought_to_0700(tmp_path: Path) -> None:
    state = at(tmp_path, installer.STATE_DIR)
    state.mkdir(parents=True)
    os.chmod(state, 0o755)
    code, output = cli("install", "--root", str(tmp_path), "--tcp", ":2001")
    assert code == 0 and mode(state) == 0o700
    assert "unchanged  /var/lib/x1p1  (now 0700)" in output


def test_the_only_usb_adapter_gets_the_udev_rule(tmp_path: Path, ptys: list[str]) -> None:
    source = ListSource(adapters(ptys).devices[:1])
    options = installer.InstallOptions(root=tmp_path, program=PROGRAM)
    steps = installer.install(options, choose=never, source=source)
    rule = at(tmp_path, installer.RULE)
    assert rule.read_text() == udev_rule(ptys[0], source)
    assert mode(rule) == 0o644
    assert 'ATTRS{serial}=="A50285BI"' in rule.read_text()
    assert installer.Step("wrote", str(installer.RULE)) in steps
    assert 'serial = "/dev/x1p1-p1"' in at(tmp_path, installer.CONFIG).read_text()


def test_several_adapters_ask_or_take_serial(tmp_path: Path, ptys: list[str]) -> None:
    source = adapters(ptys)
    asked: list[list[str]] = []

    def second(ports: list[SerialPortInfo]) -> SerialPortInfo:
        asked.append([port.device for port in ports])
        return ports[1]

    options = installer.InstallOptions(root=tmp_path / "a", program=PROGRAM)
    installer.install(options, choose=second, source=source)
    assert asked == [[port.device for port in list_ports(source)]]
    chosen = asked[0][1]
    assert at(tmp_path / "a", installer.RULE).read_text() == udev_rule(chosen, source)
    options = replace(options, root=tmp_path / "b", serial=ptys[0])
    installer.install(options, choose=never, source=source)
    assert at(tmp_path / "b", installer.RULE).read_text() == udev_rule(ptys[0], source)


def test_cli_with_several_adapters_and_no_terminal_says_give_serial(
    tmp_path: Path, ptys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from x1p1.converter import serial_ports

    source = adapters(ptys)
    monkeypatch.setattr(serial_ports, "PyudevSource", lambda: source)
    code, output = cli("install", "--root", str(tmp_path))
    assert code == 2
    names = ", ".join(port.device for port in list_ports(source))
    assert output == f"x1p1: several USB serial adapters ({names}): give --serial PORT\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--serial", "none"],
            "--serial none leaves nothing to write to: give --tcp HOST:PORT too",
        ),
        (["--tcp", "nowhere"], "tcp 'nowhere' has no port; give HOST:PORT"),
        (["--serial", "/dev/null"], "--serial /dev/null is not a serial device"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = cli("install", "--root", str(tmp_path), *args)
    assert code == 2 and output.startswith(f"x1p1: {message}"), output
    assert len(output.splitlines()) == 1


def test_a_program_the_service_cannot_see_is_refused(tmp_path: Path) -> None:
    options = installer.InstallOptions(
        root=tmp_path, program=Path("/home/pi/.venv/bin/x1p1"), tcp=":2001"
    )
    with pytest.raises(ConfigError, match=r"^x1p1 is installed in /home/pi/.venv/bin/x1p1, "):
        installer.install(options, choose=never)
    assert not at(tmp_path, installer.UNIT).exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_not_root(command: str) -> None:
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(PROGRAM), command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert result.returncode == 14
    assert result.stderr == (
        f"x1p1: x1p1 {command} writes to /etc and /var/lib: run it as root (sudo x1p1 {command})\n"
    )


def test_uninstall_removes_what_install_wrote_and_keeps_the_state(tmp_path: Path) -> None:
    assert cli("install", "--root", str(tmp_path), "--tcp", ":2001")[0] == 0
    token = at(tmp_path, installer.STATE_DIR) / "token.json"
    token.write_text("{}")
    code, output = cli("uninstall", "--root", str(tmp_path))
    assert code == 0, output
    for path in (installer.UNIT, installer.CONFIG, installer.MANIFEST, "/usr/local/bin/x1p1"):
        assert not at(tmp_path, path).exists() and not at(tmp_path, path).is_symlink(), path
    assert not at(tmp_path, "/etc/systemd/system/multi-user.target.wants/x1p1.service").is_symlink()
    assert token.exists()
    assert "kept       /var/lib/x1p1  (the token and state; --purge removes them)" in output
    assert cli("uninstall", "--root", str(tmp_path))[0] == 0  # again: nothing left to do


def test_uninstall_keeps_an_edited_config_unless_purge(tmp_path: Path) -> None:
    assert cli("install", "--root", str(tmp_path), "--tcp", ":2001")[0] == 0
    config = at(tmp_path, installer.CONFIG)
    config.write_text(config.read_text() + "# mine\n")
    code, output = cli("uninstall", "--root", str(tmp_path))
    assert code == 0 and config.exists()
    assert "kept       /etc/x1p1/config.toml" in output
    assert cli("install", "--root", str(tmp_path), "--tcp", ":2001")[0] == 0
    code, output = cli("uninstall", "--root", str(tmp_path), "--purge")
    assert code == 0, output
    assert not config.exists()
    assert not at(tmp_path, installer.STATE_DIR).exists()


def test_uninstall_leaves_files_it_did_not_write(tmp_path: Path) -> None:
    mine = at(tmp_path, "/usr/local/bin/x1p1")
    mine.parent.mkdir(parents=True)
    mine.write_text("#!/bin/sh\n")
    code, output = cli("install", "--root", str(tmp_path), "--tcp", ":2001")
    assert code == 0 and "kept       /usr/local/bin/x1p1  (not made by x1p1 install)" in output
    assert cli("uninstall", "--root", str(tmp_path))[0] == 0
    assert mine.read_text() == "#!/bin/sh\n"


def test_on_the_live_system_udev_and_systemd_are_reloaded_and_the_service_started(
    tmp_path: Path, ptys: list[str]
) -> None:
    source = ListSource(adapters(ptys).devices[:1])
    ran: list[list[str]] = []
    options = installer.InstallOptions(root=tmp_path, program=PROGRAM)

    def run(**more: object) -> list[installer.Step]:
        return installer.install(
            options,
            choose=never,
            source=source,
            runner=lambda c: ran.append(list(c)),
            live=True,
            **more,  # type: ignore[arg-type]
        )

    run(systemd_running=True)
    assert ran == [
        ["udevadm", "control", "--reload"],
        ["udevadm", "trigger", "--action=add", "--subsystem-match=tty"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "x1p1.service"],
        ["systemctl", "try-restart", "x1p1.service"],
    ]
    ran.clear()
    run(systemd_running=True)  # nothing changed: no udev reload, no restart
    assert ran == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "x1p1.service"]]
    ran.clear()
    steps = run(systemd_running=False)
    assert ran == []
    assert steps[-1] == installer.Step(
        "skipped", "systemctl", "systemd is not running here; the service starts at boot"
    )
    installer.uninstall(
        tmp_path, runner=lambda c: ran.append(list(c)), systemd_running=True, live=True
    )
    assert ran == [
        ["systemctl", "disable", "--now", "x1p1.service"],
        ["udevadm", "control", "--reload"],
        ["systemctl", "daemon-reload"],
    ]
    assert not at(tmp_path, installer.RULE).exists()


def test_a_config_written_by_hand_is_kept(tmp_path: Path) -> None:
    config = at(tmp_path, installer.CONFIG)
    config.parent.mkdir(parents=True)
    config.write_text('serial = "/dev/ttyAMA0"\n')
    code, output = cli("install", "--root", str(tmp_path), "--tcp", ":2001")
    assert code == 0
    assert config.read_text() == 'serial = "/dev/ttyAMA0"\n'
    assert (
        "kept       /etc/x1p1/config.toml  (not written by x1p1 install; --force replaces it)"
    ) in output
