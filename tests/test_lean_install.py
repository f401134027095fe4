"""The lean install (no extras) in a fresh virtual environment, as on a Raspberry Pi
without a compiler (README, "Raspberry Pi"): crcmod removed, zeroconf built from its
source without a C compiler, aiohttp and cryptography absent.

It installs from the package index, so it needs the network (or pip's cache) and takes a
minute or two; it is marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.p1_corpus import corpus

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.slow(seconds=120)


def _pip(venv: Path, *args: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("lean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    started = time.monotonic()
    _pip(venv, "install", "--quiet", str(ROOT))
    print(f"lean install: {time.monotonic() - started:.1f} s")
    _pip(venv, "uninstall", "--quiet", "--yes", "crcmod-plus")
    # zeroconf's pure-Python build, as pip makes it where no wheel fits (armv6l): from
    # the sdist, with no C compiler to be found.
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import zeroconf; print(zeroconf.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false"}
    started = time.monotonic()
    _pip(
        venv,
        "install",
        "--quiet",
        "--force-reinstall",
        "--no-deps",
        "--no-cache-dir",  # pip's wheel cache may hold a build made with a compiler
        "--no-binary",
        "zeroconf",
        f"zeroconf=={version}",
        env=env,
    )
    print(f"zeroconf {version} from source without a compiler: {time.monotonic() - started:.1f} s")
    return venv


def _x1p1(venv: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(venv / "bin" / "x1p1"), *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        cwd=venv,  # not the worktree: nothing may come from it but the installed package
    )


def _modules(venv: Path, *names: str) -> dict[str, bool]:
    code = (
        "import importlib.util, json, sys; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *names],
        capture_output=True,
        check=True,
        cwd=venv,
    ).stdout
    return dict(json.loads(out))


def test_lean_install_has_no_crcmod_and_no_gateway_libraries(lean: Path) -> None:
    assert _modules(lean, "crcmod", "aiohttp", "cryptography", "x1p1", "zeroconf") == {
        "crcmod": False,
        "aiohttp": False,
        "cryptography": False,
        "x1p1": True,
        "zeroconf": True,
    }


def test_zeroconf_is_pure_python(lean: Path) -> None:
    site = next((lean / "lib").glob("python3*/site-packages/zeroconf"))
    assert list(site.rglob("*.so")) == []
    result = _x1p1(lean, "discover", "--timeout", "0.5")
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().startswith("x1p1: no X1 gateway answered on mDNS")
    assert b"Traceback" not in result.stderr


def test_crcs_of_a_capture_without_crcmod(lean: Path) -> None:
    telegrams = list(corpus().values())
    bad = bytearray(telegrams[1])
    bad[10] ^= 0x20
    capture = b"".join(telegrams[:1] + [bytes(bad)] + telegrams[1:])
    result = _x1p1(lean, "monitor", "-", "--json", stdin=capture)
    assert result.returncode == 0, result.stderr
    valid = [json.loads(line)["valid"] for line in result.stdout.splitlines()]
    assert valid == [True, False] + [True] * (len(telegrams) - 1)
    errors = result.stderr.decode().splitlines()
    assert errors[0] == "x1p1 monitor: checking CRC-16 with pure Python (crcmod not installed)"


def test_the_unit_ships_in_the_package(lean: Path) -> None:
    code = "from x1p1.converter.install import packaged_unit; print(packaged_unit(), end='')"
    result = subprocess.run(
        [str(lean / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd=lean
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "systemd" / "x1p1.service").read_text()


def test_gateway_commands_say_they_need_the_extra(lean: Path) -> None:
    for command in (["gateway", "serve"], ["meter", "list"], ["demo"]):
        result = _x1p1(lean, *command)
        assert result.returncode == 2, result.stderr
        name = " ".join(command)
        assert result.stderr.decode() == (
            f"x1p1: `x1p1 {name}` needs the gateway extra: pip install 'x1p1[gateway]'\n"
        )


def test_the_first_editable_install_prints_no_setuptools_box(tmp_path: Path) -> None:
    """scripts/setup.sh's `pip install -e` (what the first scripts/demo.sh runs)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    _pip(venv, "install", "--quiet", "--upgrade", "pip")  # as scripts/setup.sh does first
    result = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-e",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).splitlines()
        if not line.startswith("WARNING: Location ")  # this machine's pip.conf, not ours
    )
    assert "Editable install" not in output and "!!" not in output, output
