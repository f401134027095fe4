"""systemd/x1p1.service and systemd/x1p1-gateway.service: `systemd-analyze verify` is clean
and `systemd-analyze security --offline=true` rates them low.

`verify` checks that ExecStart's program exists, and /opt/x1p1/.venv/bin/x1p1 is where
the units expect an installation, not where the tests run. So each unit is verified as a
copy in a temporary directory, unchanged but for that one path, which points at the
x1p1 program of the environment running the tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parent.parent / "systemd"
INSTALLED = "/opt/x1p1/.venv/bin/x1p1"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def settings(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for each assignment, in order; keys may repeat."""
    section = ""
    result = []
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        result.append((section, key.strip(), value.strip()))
    return result


def values(unit: Path, key: str) -> list[str]:
    return [value for _, k, value in settings(unit) if k == key]


def program() -> str:
    """An existing x1p1 executable: the console script next to this Python, or Python."""
    script = Path(sys.executable).parent / "x1p1"
    return str(script) if script.exists() else (shutil.which("x1p1") or sys.executable)


def unit_copy(name: str, directory: Path) -> Path:
    text = (UNITS / name).read_text()
    assert text.count(INSTALLED) == 1, "ExecStart names the installed program once"
    copy = directory / name
    copy.write_text(text.replace(INSTALLED, program()))
    return copy


def verify(unit: Path) -> list[str]:
    """The lines `systemd-analyze verify` prints about ``unit``; [] when it is clean."""
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    lines = (result.stdout + result.stderr).splitlines()
    about_it = [line for line in lines if unit.name in line or str(unit.parent) in line]
    if result.returncode != 0:
        about_it.append(f"exit status {result.returncode}: {lines}")
    return about_it


def exposure(unit: Path) -> float:
    assert ANALYZE is not None
    help_text = subprocess.run(
        [ANALYZE, "security", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    if "--offline" not in help_text:
        pytest.skip("systemd-analyze security has no --offline (systemd < 250)")
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(
        rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d)", result.stdout
    )
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("name", ["x1p1.service", "x1p1-gateway.service"])
def test_verify_is_clean(name: str, tmp_path: Path) -> None:
    assert verify(unit_copy(name, tmp_path)) == []


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    unit = unit_copy("x1p1.service", tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=perhaps"))
    problems = verify(unit)
    assert problems and "perhaps" in " ".join(problems)


def test_verify_needs_the_program_to_exist(tmp_path: Path) -> None:
    unit = tmp_path / "x1p1.service"
    unit.write_text((UNITS / "x1p1.service").read_text().replace(INSTALLED, "/x1p1-nowhere/x1p1"))
    assert any("x1p1-nowhere" in line for line in verify(unit))


def test_converter_rated_2_5_or_lower(tmp_path: Path) -> None:
    score = exposure(unit_copy("x1p1.service", tmp_path))
    print(f"x1p1.service exposure {score}")
    assert score <= 2.5


def test_gateway_rated_lower_still(tmp_path: Path) -> None:
    score = exposure(unit_copy("x1p1-gateway.service", tmp_path))
    print(f"x1p1-gateway.service exposure {score}")
    assert score <= 1.5


def test_a_weaker_unit_rates_higher(tmp_path: Path) -> None:
    unit = unit_copy("x1p1.service", tmp_path)
    text = unit.read_text()
    weak = "\n".join(
        line
        for line in text.splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability"))
    )
    unit.write_text(weak + "\n")
    assert exposure(unit) > 2.5


def test_converter_unit_settings() -> None:
    unit = UNITS / "x1p1.service"
    assert values(unit, "ExecStart") == [f"{INSTALLED} run --config /etc/x1p1/config.toml"]
    assert values(unit, "Type") == ["notify"]
    assert values(unit, "Restart") == ["on-failure"]
    assert values(unit, "WatchdogSec")
    assert values(unit, "DynamicUser") == ["yes"]
    assert values(unit, "SupplementaryGroups") == ["dialout"]
    assert values(unit, "StateDirectory") == ["x1p1"]
    assert values(unit, "RuntimeDirectory") == ["x1p1"]
    # the last status.json outlives the service, for `x1p1 status` (README)
    assert values(unit, "RuntimeDirectoryPreserve") == ["yes"]
    assert values(unit, "ProtectSystem") == ["strict"]
    assert values(unit, "ProtectHome") == ["yes"]
    assert values(unit, "PrivateTmp") == ["yes"]
    assert values(unit, "NoNewPrivileges") == ["yes"]
    assert values(unit, "RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert values(unit, "PrivateDevices") == []  # it would hide the serial port
    assert "char-ttyUSB rw" in values(unit, "DeviceAllow")
    assert values(unit, "WantedBy") == ["multi-user.target"]


def test_gateway_unit_settings() -> None:
    unit = UNITS / "x1p1-gateway.service"
    (exec_start,) = values(unit, "ExecStart")
    assert exec_start.startswith(f"{INSTALLED} gateway serve --state-dir /var/lib/x1p1-gateway")
    assert values(unit, "Type") == ["notify"]
    assert values(unit, "StateDirectory") == ["x1p1-gateway"]
    assert values(unit, "PrivateDevices") == ["yes"]
    assert values(unit, "SupplementaryGroups") == []
