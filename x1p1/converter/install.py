"""``x1p1 install`` and ``x1p1 uninstall``: the converter as a service, in one command.

What ``sudo x1p1 install`` writes, each relative to ``root`` (``/``, or ``--root DIR``,
a scratch tree for tests and image builders); the steps by hand are in
``docs/install-by-hand.md``:

``/etc/systemd/system/x1p1.service`` (0644)
    The unit shipped in the package (``x1p1/data/x1p1.service``), with ``ExecStart``
    naming the x1p1 program that runs this command.
``/etc/systemd/system/multi-user.target.wants/x1p1.service``
    The link ``systemctl enable`` makes: the service starts at boot.
``/etc/udev/rules.d/99-x1p1.rules`` (0644)
    The rule of ``x1p1 serial udev-rule`` for the USB adapter chosen (``--serial``, the
    only one plugged in, or the one the user picks): it becomes ``/dev/x1p1-p1``.
``/etc/x1p1/config.toml`` (0644)
    ``serial``, ``tcp`` and ``state_dir`` (docs/config.example.toml has every key).
``/var/lib/x1p1`` (0700)
    The state directory (token, uuid), where ``sudo x1p1 pair`` saves the token.
``/usr/local/bin/x1p1``
    A link to the program, so that ``sudo x1p1 pair`` finds it (sudo's PATH has no venv).
``/etc/x1p1/install.json`` (0644)
    What was written and its SHA-256, so that a second run changes only what it wrote
    and :func:`uninstall` removes only that.

It is idempotent: a file whose content is already right is left alone. A file the user
edited since (its SHA-256 is no longer the one recorded) is kept and said so, unless
``force``. On the live system (``root`` is ``/``) it then reloads udev, and when systemd
runs, reloads it and enables and starts the service (restarts it if a file changed).
The functions return :class:`Step` values; the CLI prints them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from x1p1.converter.config import DEFAULT_CONFIG_PATH, DEFAULT_SERIAL, ListenAddress
from x1p1.converter.serial_out import check_serial_path
from x1p1.converter.serial_ports import DeviceSource, SerialPortInfo, list_ports, udev_rule
from x1p1.exceptions import ConfigError, SerialPortError, StateError

__all__ = [
    "CONFIG",
    "MANIFEST",
    "RULE",
    "STATE_DIR",
    "UNIT",
    "InstallOptions",
    "Step",
    "install",
    "packaged_unit",
    "uninstall",
]

UNIT = PurePosixPath("/etc/systemd/system/x1p1.service")
WANTS = PurePosixPath("/etc/systemd/system/multi-user.target.wants/x1p1.service")
RULE = PurePosixPath("/etc/udev/rules.d/99-x1p1.rules")
CONFIG = PurePosixPath(str(DEFAULT_CONFIG_PATH))
MANIFEST = PurePosixPath("/etc/x1p1/install.json")
STATE_DIR = PurePosixPath("/var/lib/x1p1")
PRIVATE_STATE_DIR = PurePosixPath("/var/lib/private/x1p1")  # DynamicUser= moves it here
LINK = PurePosixPath("/usr/local/bin/x1p1")
SHIPPED_EXEC = "/opt/x1p1/.venv/bin/x1p1"  # the shipped unit's ExecStart program
HIDDEN = ("/home", "/root", "/run/user", "/tmp")  # ProtectHome=, PrivateTmp= hide these

Runner = Callable[[Sequence[str]], None]


@dataclass(frozen=True)
class Step:
    """One thing done (or not): ``action`` is a verb, ``path`` what it was done to."""

    action: str  # wrote, unchanged, kept, created, removed, ran, skipped, note
    path: str
    note: str = ""

    def line(self) -> str:
        return f"{self.action:<10} {self.path}" + (f"  ({self.note})" if self.note else "")


@dataclass(frozen=True)
class InstallOptions:
    """``x1p1 install``'s options; ``serial`` None: choose a USB adapter (or none)."""

    root: Path = Path("/")
    serial: str | None = None
    tcp: str | None = None
    force: bool = False
    program: Path | None = None  # default: the x1p1 program running now


def packaged_unit() -> str:
    """The systemd unit shipped in the package."""
    return (resources.files("x1p1") / "data" / "x1p1.service").read_text("utf-8")


def _program() -> Path:
    """The x1p1 program running now: the console script next to this Python."""
    script = Path(sys.executable).parent / "x1p1"
    if script.exists():
        return script
    found = shutil.which("x1p1")
    if found is None:
        raise ConfigError("cannot find the x1p1 program (a console script) to run as a service")
    return Path(found)


def _at(root: Path, path: PurePosixPath) -> Path:
    return root / str(path).lstrip("/")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _live(root: Path) -> bool:
    return root.resolve() == Path("/")


def _run_command(command: Sequence[str]) -> None:
    if shutil.which(command[0]) is None:
        raise StateError(f"{command[0]} is not installed, so `{' '.join(command)}` cannot run")
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()
        raise StateError(f"{' '.join(command)} failed: {why[-1] if why else result.returncode}")


class _Manifest:
    """``install.json``: path → SHA-256 of what install wrote there."""

    def __init__(self, root: Path) -> None:
        self.path = _at(root, MANIFEST)
        self.files: dict[str, str] = {}
        self.links: dict[str, str] = {}
        try:
            body = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(body, dict):
            files, links = body.get("files"), body.get("links")
            if isinstance(files, dict):
                self.files = {str(k): str(v) for k, v in files.items()}
            if isinstance(links, dict):
                self.links = {str(k): str(v) for k, v in links.items()}

    def save(self) -> None:
        body = {"format": 1, "files": self.files, "links": self.links}
        _write(self.path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode(), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all: a temporary file beside it, then rename."""
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.x1p1-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from None


def _put(
    root: Path, target: PurePosixPath, data: bytes, mode: int, manifest: _Manifest, force: bool
) -> Step:
    """Write ``data`` unless it is there already or the user edited the file."""
    path = _at(root, target)
    key = str(target)
    try:
        old: bytes | None = path.read_bytes()
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if old == data:
        manifest.files[key] = _sha(data)
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
        return Step("unchanged", key)
    recorded = manifest.files.get(key)
    if old is not None and not force and recorded != _sha(old):
        if recorded is None:
            return Step("kept", key, "not written by x1p1 install; --force replaces it")
        return Step("kept", key, "edited since x1p1 install wrote it; --force replaces it")
    _write(path, data, mode)
    manifest.files[key] = _sha(data)
    return Step("wrote", key)


def _link(root: Path, target: PurePosixPath, to: str, manifest: _Manifest) -> Step:
    path = _at(root, target)
    key = str(target)
    if path.is_symlink() and os.readlink(path) == to:
        manifest.links[key] = to
        return Step("unchanged", key, f"-> {to}")
    if path.exists() or path.is_symlink():
        if manifest.links.get(key) is None:
            return Step("kept", key, "not made by x1p1 install")
        path.unlink()
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.symlink(to, path)
    manifest.links[key] = to
    return Step("linked", key, f"-> {to}")


def unit_text(program: Path) -> str:
    """The shipped unit with ``ExecStart`` naming ``program``."""
    text = packaged_unit()
    if text.count(SHIPPED_EXEC) != 1:
        raise StateError("the packaged x1p1.service names its program other than once")
    return text.replace(SHIPPED_EXEC, str(program))


def config_text(serial: str, tcp: ListenAddress | None) -> str:
    """The config file ``x1p1 install`` writes (TOML, as :mod:`x1p1.converter.config`)."""
    lines = [
        "# x1p1's settings, written by `sudo x1p1 install`. Edit freely: install keeps an",
        "# edited file (--force replaces it). Every key: docs/config.example.toml.",
        f"serial = {json.dumps(serial or 'none')}",
    ]
    if tcp is not None:
        lines.append(f"tcp = {json.dumps(str(tcp))}")
    lines.append(f'state_dir = "{STATE_DIR}"')
    return "\n".join(lines) + "\n"


def _choose_serial(
    options: InstallOptions,
    choose: Callable[[list[SerialPortInfo]], SerialPortInfo],
    source: DeviceSource | None,
    steps: list[Step],
) -> tuple[str, str | None]:
    """The ``serial`` value for the config and the udev rule for it (None: no rule)."""
    wanted = options.serial
    if wanted is not None and (wanted == "none" or "://" in wanted):
        return wanted, None
    if wanted is not None:
        check_serial_path(wanted)
    if wanted is None:
        try:
            usb = [port for port in list_ports(source) if port.vendor_id]
        except SerialPortError as exc:
            steps.append(Step("note", "serial", f"cannot list the serial ports: {exc}"))
            usb = []
        if not usb:
            steps.append(
                Step(
                    "note",
                    DEFAULT_SERIAL,
                    "no USB serial adapter found; plug it in and run sudo x1p1 install again, "
                    "or give --serial",
                )
            )
            return DEFAULT_SERIAL, None
        wanted = (usb[0] if len(usb) == 1 else choose(usb)).device
    try:
        return DEFAULT_SERIAL, udev_rule(wanted, source)
    except SerialPortError as exc:
        if not Path(wanted).exists():
            raise ConfigError(f"--serial {wanted}: {exc}") from None
        # a built-in UART (/dev/ttyAMA0): its name never changes, the config uses it
        steps.append(Step("note", wanted, f"no udev rule: {exc}"))
        return wanted, None


def _check_program(program: Path) -> None:
    text = str(program)
    for hidden in HIDDEN:
        if text == hidden or text.startswith(hidden + "/"):
            raise ConfigError(
                f"x1p1 is installed in {program}, which the service cannot see "
                f"({hidden} is hidden from it: ProtectHome=, PrivateTmp=); install it in "
                "/opt: sudo python3 -m venv /opt/x1p1/.venv && "
                "sudo /opt/x1p1/.venv/bin/pip install x1p1"
            )


def install(
    options: InstallOptions,
    *,
    choose: Callable[[list[SerialPortInfo]], SerialPortInfo],
    source: DeviceSource | None = None,
    runner: Runner = _run_command,
    systemd_running: bool | None = None,
    live: bool | None = None,
) -> list[Step]:
    """Install the service under ``options.root``; the steps taken, in order.

    ``choose`` picks one of several USB adapters (the CLI asks). ``runner`` runs udevadm
    and systemctl on the live system (``live``: None means "``root`` is /");
    ``systemd_running`` None asks ``/run/systemd/system``. Raises
    :class:`~x1p1.exceptions.ConfigError` for a bad option and
    :class:`~x1p1.exceptions.StateError` for a file it cannot write.
    """
    root = options.root
    tcp = ListenAddress.parse(options.tcp) if options.tcp is not None else None
    if options.serial == "none" and tcp is None:
        raise ConfigError("--serial none leaves nothing to write to: give --tcp HOST:PORT too")
    program = options.program or _program()
    _check_program(program)
    steps: list[Step] = []
    manifest = _Manifest(root)
    serial, rule = _choose_serial(options, choose, source, steps)
    force = options.force
    changed = False
    for target, data in (
        (UNIT, unit_text(program).encode()),
        (CONFIG, config_text(serial, tcp).encode()),
    ):
        step = _put(root, target, data, 0o644, manifest, force)
        steps.append(step)
        changed |= step.action == "wrote"
    if rule is not None:
        step = _put(root, RULE, rule.encode(), 0o644, manifest, force)
        steps.append(step)
        rule_changed = step.action == "wrote"
    else:
        rule_changed = False
    steps.append(_link(root, WANTS, str(UNIT), manifest))
    steps.append(_state_dir(root))
    if str(program) != str(LINK):
        steps.append(_link(root, LINK, str(program), manifest))
    manifest.save()
    if not (_live(root) if live is None else live):
        steps.append(Step("skipped", "udevadm, systemctl", f"--root {root}: not the live system"))
        return steps
    if rule_changed:
        for command in (
            ["udevadm", "control", "--reload"],
            ["udevadm", "trigger", "--action=add", "--subsystem-match=tty"],
        ):
            runner(command)
            steps.append(Step("ran", " ".join(command)))
    running = Path("/run/systemd/system").is_dir() if systemd_running is None else systemd_running
    if not running:
        steps.append(
            Step("skipped", "systemctl", "systemd is not running here; the service starts at boot")
        )
        return steps
    commands = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "x1p1.service"]]
    if changed:
        commands.append(["systemctl", "try-restart", "x1p1.service"])
    for command in commands:
        runner(command)
        steps.append(Step("ran", " ".join(command)))
    return steps


def _state_dir(root: Path) -> Step:
    private = _at(root, PRIVATE_STATE_DIR)
    path = _at(root, STATE_DIR)
    if private.is_dir():  # the service ran: systemd moved it (DynamicUser=)
        return Step("unchanged", str(STATE_DIR), f"the service's own, in {PRIVATE_STATE_DIR}")
    try:
        existed = path.is_dir()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode != 0o700:
            os.chmod(path, 0o700)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror or exc}") from None
    if existed:
        return Step("unchanged", str(STATE_DIR), "mode 0700" if mode == 0o700 else "now 0700")
    return Step("created", str(STATE_DIR), "mode 0700")


def uninstall(
    root: Path = Path("/"),
    *,
    purge: bool = False,
    runner: Runner = _run_command,
    systemd_running: bool | None = None,
    live: bool | None = None,
) -> list[Step]:
    """Remove what :func:`install` wrote; the state (token, uuid) and an edited config
    only with ``purge``. The steps taken, in order."""
    steps: list[Step] = []
    live = _live(root) if live is None else live
    running = Path("/run/systemd/system").is_dir() if systemd_running is None else systemd_running
    if live and running and _at(root, UNIT).exists():
        command = ["systemctl", "disable", "--now", "x1p1.service"]
        runner(command)
        steps.append(Step("ran", " ".join(command)))
    manifest = _Manifest(root)
    for key, to in sorted(manifest.links.items()):
        path = _at(root, PurePosixPath(key))
        if path.is_symlink() and os.readlink(path) == to:
            path.unlink()
            steps.append(Step("removed", key))
    rule_removed = False
    for key, sha in sorted(manifest.files.items()):
        path = _at(root, PurePosixPath(key))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
        if _sha(data) != sha and not purge:
            steps.append(
                Step("kept", key, "edited since x1p1 install wrote it; --purge removes it")
            )
            continue
        path.unlink()
        steps.append(Step("removed", key))
        rule_removed |= key == str(RULE)
    config = _at(root, CONFIG)
    if purge and str(CONFIG) not in manifest.files and config.exists():
        config.unlink()  # kept by an earlier uninstall, or written by hand
        steps.append(Step("removed", str(CONFIG)))
    with contextlib.suppress(FileNotFoundError):
        _at(root, MANIFEST).unlink()
    for directory in (CONFIG.parent,):
        with contextlib.suppress(OSError):
            _at(root, directory).rmdir()  # only when empty
    if purge:
        for target in (PRIVATE_STATE_DIR, STATE_DIR):
            path = _at(root, target)
            if path.is_symlink():
                path.unlink()
                steps.append(Step("removed", str(target)))
            elif path.is_dir():
                shutil.rmtree(path)
                steps.append(Step("removed", str(target), "the token and state"))
    elif _at(root, STATE_DIR).exists() or _at(root, PRIVATE_STATE_DIR).exists():
        steps.append(Step("kept", str(STATE_DIR), "the token and state; --purge removes them"))
    if not live:
        steps.append(Step("skipped", "udevadm, systemctl", f"--root {root}: not the live system"))
        return steps
    if rule_removed:
        runner(["udevadm", "control", "--reload"])
        steps.append(Step("ran", "udevadm control --reload"))
    if running:
        runner(["systemctl", "daemon-reload"])
        steps.append(Step("ran", "systemctl daemon-reload"))
    return steps
