"""x1p1.converter.serial_ports and `x1p1 serial`: listing ports, writing udev rules.

Two layers:

- the pure part (list and rule from :class:`TtyDevice` values) with a list of devices as
  the :class:`DeviceSource`, and real symlinks for the paths a user types;
- the whole chain on a fake device tree: a sysfs of USB serial adapters built in a
  temporary directory and bind-mounted over /sys, /run and /dev in a private mount
  namespace, where the real libudev (through pyudev) reads it and the real `udevadm
  test` runs the system's own rules (60-serial.rules makes the /dev/serial/by-id links)
  and then the rule that `x1p1 serial udev-rule` wrote, to show which device it names.
  libudev refuses a /sys that is not sysfs unless SYSTEMD_DEVICE_VERIFY_SYSFS=0, the
  switch systemd's own tests use. Needs root, unshare and udevadm; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from x1p1.cli import main
from x1p1.converter.serial_ports import (
    SerialPortInfo,
    TtyDevice,
    UsbDevice,
    list_ports,
    udev_rule,
)
from x1p1.exceptions import SerialPortError

TEMPLATE = Path(__file__).parent.parent / "udev" / "99-x1p1.rules.template"
FTDI_BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"


def rule_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, text
    return lines[0]


# --- the pure part, with a list as the device source ---------------------------------


@dataclass
class ListSource:
    devices: list[TtyDevice] = field(default_factory=list)

    def tty_devices(self) -> Iterable[TtyDevice]:
        return list(self.devices)


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    """A directory standing in for /dev, with files for the device nodes."""
    root = tmp_path / "dev"
    (root / "serial" / "by-id").mkdir(parents=True)
    for name in ("ttyUSB0", "ttyUSB1", "ttyUSB2", "ttyUSB3", "ttyS0", "ttyAMA0", "tty0"):
        (root / name).touch()
    return root


def ftdi(dev: Path, **changes: object) -> TtyDevice:
    device = TtyDevice(
        device_node=str(dev / "ttyUSB0"),
        devlinks=(str(dev / "serial/by-path/x"), FTDI_BY_ID),
        driver="ftdi_sio",
        usb=UsbDevice("1-1.2", "0403", "6001", "A50285BI", "FTDI", "FT232R USB UART"),
        interface="00",
        properties={"ID_VENDOR_FROM_DATABASE": "Future Technology Devices International, Ltd"},
    )
    return replace(device, **changes)  # type: ignore[arg-type]


def test_list_ports_keeps_hardware_and_sorts_naturally(dev: Path) -> None:
    source = ListSource(
        [
            TtyDevice(str(dev / "ttyS10"), driver="serial", uart_type="4"),
            ftdi(dev),
            TtyDevice(str(dev / "tty0"), has_parent=False),  # a virtual terminal
            TtyDevice(str(dev / "ttyS1"), driver="serial8250", uart_type="0"),  # empty slot
            TtyDevice(str(dev / "ttyS2"), driver="serial", uart_type="4"),
            TtyDevice(str(dev / "ttyAMA0"), driver="uart-pl011", uart_type="?"),
        ]
    )
    ports = list_ports(source)
    assert [Path(p.device).name for p in ports] == ["ttyAMA0", "ttyS2", "ttyS10", "ttyUSB0"]
    assert ports[-1] == SerialPortInfo(
        device=str(dev / "ttyUSB0"),
        by_id=FTDI_BY_ID,
        vendor_id="0403",
        product_id="6001",
        vendor="FTDI",
        product="FT232R USB UART",
        serial_number="A50285BI",
        interface="00",
        driver="ftdi_sio",
        usb_port="1-1.2",
    )
    assert ports[0] == SerialPortInfo(str(dev / "ttyAMA0"), driver="uart-pl011")


def test_names_fall_back_to_the_udev_database(dev: Path) -> None:
    bare = ftdi(
        dev,
        usb=UsbDevice("1-3", "1a86", "7523"),
        interface=None,
        devlinks=(),
        properties={
            "ID_VENDOR_FROM_DATABASE": "QinHeng Electronics",
            "ID_MODEL_FROM_DATABASE": "CH340 serial converter",
            "ID_USB_INTERFACE_NUM": "00",
        },
    )
    (port,) = list_ports(ListSource([bare]))
    assert (port.vendor, port.product, port.serial_number) == (
        "QinHeng Electronics",
        "CH340 serial converter",
        None,
    )
    assert port.interface == "00" and port.by_id is None


def test_to_json_has_every_field(dev: Path) -> None:
    (port,) = list_ports(ListSource([ftdi(dev)]))
    assert json.loads(json.dumps(port.to_json())) == {
        "device": str(dev / "ttyUSB0"),
        "by_id": FTDI_BY_ID,
        "vendor_id": "0403",
        "product_id": "6001",
        "vendor": "FTDI",
        "product": "FT232R USB UART",
        "serial_number": "A50285BI",
        "interface": "00",
        "driver": "ftdi_sio",
        "usb_port": "1-1.2",
    }


def test_rule_matches_vendor_product_and_serial(dev: Path) -> None:
    text = udev_rule(str(dev / "ttyUSB0"), ListSource([ftdi(dev)]))
    assert rule_line(text) == (
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", '
        'ATTRS{serial}=="A50285BI", SYMLINK+="x1p1-p1", MODE="0660", GROUP="dialout", '
        'TAG+="systemd"'
    )
    assert "# Adapter: FTDI FT232R USB UART, 0403:6001, serial A50285BI, now " in text
    assert f"#          {FTDI_BY_ID}" in text
    assert "sudo udevadm control --reload" in text


def test_rule_equals_the_template_filled_in(dev: Path) -> None:
    filled = (
        TEMPLATE.read_text()
        .replace("@VENDOR_ID@", "0403")
        .replace("@PRODUCT_ID@", "6001")
        .replace("@SERIAL@", "A50285BI")
    )
    assert "@" not in rule_line(filled)
    assert rule_line(filled) == rule_line(udev_rule(str(dev / "ttyUSB0"), ListSource([ftdi(dev)])))


def test_port_given_by_symlinks_and_relative_links(dev: Path) -> None:
    by_id = dev / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    by_id.symlink_to("../../ttyUSB0")
    (dev / "p1").symlink_to(by_id)
    source = ListSource([ftdi(dev, device_node=str(dev / "ttyUSB0"))])
    expected = rule_line(udev_rule(str(dev / "ttyUSB0"), source))
    assert rule_line(udev_rule(str(by_id), source)) == expected
    assert rule_line(udev_rule(str(dev / "p1"), source)) == expected
    assert f"`x1p1 serial udev-rule {by_id}`" in udev_rule(str(by_id), source)


def test_adapter_without_serial_is_named_by_its_usb_socket(dev: Path) -> None:
    ch340 = ftdi(dev, usb=UsbDevice("1-1.4", "1a86", "7523"), driver="ch341")
    text = udev_rule(str(dev / "ttyUSB0"), ListSource([ch340]))
    assert rule_line(text).startswith(
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523", '
        'KERNELS=="1-1.4", SYMLINK+="x1p1-p1"'
    )
    assert "no serial number" in text and "(1-1.4): keep it in that socket" in text


def test_multi_port_adapter_names_the_interface(dev: Path) -> None:
    usb = UsbDevice("1-2", "0403", "6010", "FT9ABC", "FTDI", "Dual RS232-HS")
    port_a = ftdi(dev, device_node=str(dev / "ttyUSB2"), usb=usb, interface="00")
    port_b = ftdi(dev, device_node=str(dev / "ttyUSB3"), usb=usb, interface="01")
    text = udev_rule(str(dev / "ttyUSB3"), ListSource([port_a, port_b]))
    assert rule_line(text).startswith(
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6010", '
        'ATTRS{serial}=="FT9ABC", ENV{ID_USB_INTERFACE_NUM}=="01", SYMLINK+="x1p1-p1"'
    )
    assert "has 2 ports; this rule names interface 01" in text
    single = udev_rule(str(dev / "ttyUSB0"), ListSource([ftdi(dev)]))
    assert "ID_USB_INTERFACE_NUM" not in single


def test_glob_and_quote_characters_in_a_serial_match_as_any_character(dev: Path) -> None:
    odd = ftdi(dev, usb=UsbDevice("1-1", "0403", "6001", 'A*1?[2]"\\|\x01'))
    assert 'ATTRS{serial}=="A?1??2?????"' in udev_rule(str(dev / "ttyUSB0"), ListSource([odd]))


def test_no_such_port(dev: Path) -> None:
    with pytest.raises(SerialPortError, match=r"ttyUSB9: no such port; `x1p1 serial list`"):
        udev_rule(str(dev / "ttyUSB9"), ListSource([ftdi(dev)]))


def test_dangling_link(dev: Path) -> None:
    (dev / "gone").symlink_to(dev / "ttyUSB7")
    with pytest.raises(SerialPortError, match=r"is a link to .*ttyUSB7, which does not exist"):
        udev_rule(str(dev / "gone"), ListSource([ftdi(dev)]))


def test_a_file_udev_does_not_know(dev: Path) -> None:
    (dev / "alias").symlink_to(dev / "ttyUSB1")
    with pytest.raises(SerialPortError, match=r"alias \(.*ttyUSB1\) is not a serial port that"):
        udev_rule(str(dev / "alias"), ListSource([ftdi(dev)]))
    with pytest.raises(SerialPortError, match=r"ttyUSB1 is not a serial port that udev knows"):
        udev_rule(str(dev / "ttyUSB1"), ListSource([ftdi(dev)]))


def test_a_url_is_not_a_device(dev: Path) -> None:
    with pytest.raises(SerialPortError, match="is a pyserial URL, not a device"):
        udev_rule("socket://127.0.0.1:2001", ListSource([]))


def test_a_built_in_uart_has_no_usb_parent(dev: Path) -> None:
    uart = TtyDevice(str(dev / "ttyAMA0"), driver="uart-pl011")
    with pytest.raises(SerialPortError) as info:
        udev_rule(str(dev / "ttyAMA0"), ListSource([uart]))
    assert str(info.value) == (
        f"{dev}/ttyAMA0 (driver uart-pl011) has no USB parent: it is a built-in UART, whose "
        f"name never changes; set serial = '{dev}/ttyAMA0' instead of writing a udev rule"
    )


def test_usb_device_without_ids(dev: Path) -> None:
    broken = ftdi(dev, usb=UsbDevice("1-1", None, None))
    with pytest.raises(SerialPortError, match="no idVendor/idProduct for USB device 1-1"):
        udev_rule(str(dev / "ttyUSB0"), ListSource([broken]))


def test_bare_name_means_dev() -> None:
    with pytest.raises(SerialPortError, match=r"^x1p1-no-such-tty: no such port"):
        udev_rule("x1p1-no-such-tty", ListSource([]))


# --- the real adapter on this machine's own /sys ------------------------------------


def test_cli_lists_this_machines_ports_as_json() -> None:
    result = CliRunner().invoke(main, ["serial", "list", "--json"])
    assert result.exit_code == 0, result.output
    ports = json.loads(result.output)
    assert isinstance(ports, list)
    for port in ports:
        assert set(port) == set(SerialPortInfo.__dataclass_fields__)
        assert os.path.exists(port["device"])


def test_cli_udev_rule_errors_exit_1() -> None:
    result = CliRunner().invoke(main, ["serial", "udev-rule", "/dev/x1p1-no-such-port"])
    assert result.exit_code == 1
    assert "x1p1: /dev/x1p1-no-such-port: no such port" in result.output


@pytest.mark.skipif(not os.path.exists("/dev/ttyS0"), reason="this machine has no /dev/ttyS0")
def test_cli_udev_rule_for_a_built_in_uart() -> None:
    result = CliRunner().invoke(main, ["serial", "udev-rule", "/dev/ttyS0"])
    assert result.exit_code == 1
    assert "has no USB parent" in result.output


# --- the whole chain on a fake device tree --------------------------------------------


class FakeTree:
    """A sysfs, /dev and /run/udev with USB serial adapters, to mount in a namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sys = root / "sys"
        self.dev = root / "dev"
        self.run = root / "run"
        for path in (self.sys / "class" / "tty", self.dev, self.run / "udev" / "rules.d"):
            path.mkdir(parents=True)
        self.ttys: list[str] = []
        self._minor = 0
        self.device("devices/pci0000:00/0000:00:14.0", "bus/pci", {}, {}, "bus/pci/drivers/xhci")
        self.usb_device("usb1", "1d6b", "0002", None, "Linux", "xHCI Host Controller")

    def _link(self, path: Path, target: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(os.path.relpath(target, path.parent))

    def device(
        self,
        rel: str,
        subsystem: str,
        uevent: dict[str, str],
        attrs: dict[str, str],
        driver: str | None = None,
    ) -> str:
        path = self.sys / rel
        path.mkdir(parents=True, exist_ok=True)
        (path / "uevent").write_text("".join(f"{k}={v}\n" for k, v in uevent.items()))
        for name, value in attrs.items():
            (path / name).write_text(value + "\n")
        (self.sys / subsystem).mkdir(parents=True, exist_ok=True)
        self._link(path / "subsystem", self.sys / subsystem)
        if driver:
            (self.sys / driver).mkdir(parents=True, exist_ok=True)
            self._link(path / "driver", self.sys / driver)
        return rel

    def usb_device(
        self,
        port: str,
        vendor: str,
        product: str,
        serial: str | None,
        manufacturer: str,
        product_name: str,
    ) -> str:
        attrs = {
            "idVendor": vendor,
            "idProduct": product,
            "manufacturer": manufacturer,
            "product": product_name,
            "bcdDevice": "0600",
            "bDeviceClass": "00",
        }
        if serial:
            attrs["serial"] = serial
        parent = "devices/pci0000:00/0000:00:14.0"
        if port != "usb1":
            parent += "/usb1"
        uevent = {"DEVTYPE": "usb_device", "DRIVER": "usb", "PRODUCT": f"{vendor}/{product}/600"}
        return self.device(f"{parent}/{port}", "bus/usb", uevent, attrs, "bus/usb/drivers/usb")

    def tty(self, parent_rel: str, name: str, major: int, extra: dict[str, str]) -> None:
        rel = self.device(
            f"{parent_rel}/tty/{name}",
            "class/tty",
            {"MAJOR": str(major), "MINOR": str(self._minor), "DEVNAME": name},
            {"dev": f"{major}:{self._minor}", **extra},
        )
        self._link(self.sys / "class" / "tty" / name, self.sys / rel)
        node = self.dev / name
        os.mknod(node, 0o660 | stat.S_IFCHR, os.makedev(major, self._minor))
        self._minor += 1
        self.ttys.append(name)

    def usb_serial(self, usb_rel: str, interface: int, name: str, driver: str) -> None:
        iface = self.device(
            f"{usb_rel}/{Path(usb_rel).name}:1.{interface}",
            "bus/usb",
            {"DEVTYPE": "usb_interface", "DRIVER": driver},
            {
                "bInterfaceNumber": f"{interface:02x}",
                "bInterfaceClass": "ff",
                "bInterfaceSubClass": "ff",
                "bInterfaceProtocol": "ff",
            },
            f"bus/usb/drivers/{driver}",
        )
        port = self.device(
            f"{iface}/{name}",
            "bus/usb-serial",
            {"DRIVER": driver},
            {"port_number": "0"},
            f"bus/usb-serial/drivers/{driver}",
        )
        self.tty(port, name, 188, {})


def namespace_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a fake /sys in a mount namespace"
    for tool in ("unshare", "udevadm"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:
        return f"cannot make a mount namespace: {probe.stderr.decode(errors='replace')}"
    return None


def in_tree(tree: FakeTree, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with the fake tree mounted over /sys, /run and /dev (private mounts)."""
    script = (
        'mount --bind "$0/sys" /sys && mount --bind "$0/run" /run && '
        'mount --bind "$0/dev" /dev && exec "$@"'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(tree.root)]
        + list(argv),
        env={**os.environ, "SYSTEMD_DEVICE_VERIFY_SYSFS": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def udev_links(tree: FakeTree) -> dict[str, list[str]]:
    """Run `udevadm test` (the system's rules and the fake /run's) on every fake tty."""
    loop = (
        'for tty in "$@"; do echo "== $tty"; '
        'udevadm test --action=add "/class/tty/$tty" 2>/dev/null | grep "^DEVLINKS=" || true; '
        "done"
    )
    result = in_tree(tree, "sh", "-c", loop, "sh", *tree.ttys)
    assert result.returncode == 0, result.stderr
    links: dict[str, list[str]] = {}
    current = ""
    for line in result.stdout.splitlines():
        if line.startswith("== "):
            current = line[3:]
            links[current] = []
        elif line.startswith("DEVLINKS="):
            links[current] = sorted(line.removeprefix("DEVLINKS=").split())
    return links


def x1p1(tree: FakeTree, *args: str) -> subprocess.CompletedProcess[str]:
    return in_tree(tree, sys.executable, "-m", "x1p1.cli", *args)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> FakeTree:
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    tree = FakeTree(tmp_path_factory.mktemp("x1p1-serial-sysfs"))
    ftdi = tree.usb_device("1-1", "0403", "6001", "A50285BI", "FTDI", "FT232R USB UART")
    tree.usb_serial(ftdi, 0, "ttyUSB0", "ftdi_sio")
    ch340 = tree.usb_device("1-2", "1a86", "7523", None, "QinHeng", "USB Serial")
    tree.usb_serial(ch340, 0, "ttyUSB1", "ch341")
    dual = tree.usb_device("1-3", "0403", "6010", "FT9ABC", "FTDI", "Dual RS232-HS")
    tree.usb_serial(dual, 0, "ttyUSB2", "ftdi_sio")
    tree.usb_serial(dual, 1, "ttyUSB3", "ftdi_sio")
    twin = tree.usb_device("1-4", "0403", "6001", "B7777777", "FTDI", "FT232R USB UART")
    tree.usb_serial(twin, 0, "ttyUSB4", "ftdi_sio")
    ch340_twin = tree.usb_device("1-5", "1a86", "7523", None, "QinHeng", "USB Serial")
    tree.usb_serial(ch340_twin, 0, "ttyUSB5", "ch341")
    pnp = tree.device("devices/pnp0/00:01", "bus/pnp", {}, {}, "bus/pnp/drivers/serial")
    tree.tty(pnp, "ttyS0", 4, {"type": "4"})
    slot = tree.device(
        "devices/platform/serial8250", "bus/platform", {}, {}, "bus/platform/drivers/serial8250"
    )
    tree.tty(slot, "ttyS1", 4, {"type": "0"})  # an 8250 slot with no UART behind it
    tree.tty("devices/virtual", "tty0", 4, {})  # a virtual terminal: no parent device
    # The system's own rules fill the udev database and make the /dev/serial/by-id links.
    links = udev_links(tree)
    assert FTDI_BY_ID in links["ttyUSB0"], links
    return tree


def install(tree: FakeTree, rule: str) -> None:
    (tree.run / "udev" / "rules.d" / "99-x1p1.rules").write_text(rule)
    (tree.dev / "x1p1-p1").unlink(missing_ok=True)


def named(tree: FakeTree) -> list[str]:
    """The ttys that get /dev/x1p1-p1 under the installed rules."""
    return [tty for tty, links in udev_links(tree).items() if "/dev/x1p1-p1" in links]


def test_serial_list_through_libudev(tree: FakeTree) -> None:
    result = x1p1(tree, "serial", "list", "--json")
    assert result.returncode == 0, result.stderr
    ports = {port["device"]: port for port in json.loads(result.stdout)}
    assert list(ports) == [
        "/dev/ttyS0",
        "/dev/ttyUSB0",
        "/dev/ttyUSB1",
        "/dev/ttyUSB2",
        "/dev/ttyUSB3",
        "/dev/ttyUSB4",
        "/dev/ttyUSB5",
    ]
    assert ports["/dev/ttyUSB0"] == {
        "device": "/dev/ttyUSB0",
        "by_id": FTDI_BY_ID,
        "vendor_id": "0403",
        "product_id": "6001",
        "vendor": "FTDI",
        "product": "FT232R USB UART",
        "serial_number": "A50285BI",
        "interface": "00",
        "driver": "ftdi_sio",
        "usb_port": "1-1",
    }
    assert ports["/dev/ttyUSB1"]["serial_number"] is None
    assert ports["/dev/ttyUSB1"]["driver"] == "ch341"
    assert ports["/dev/ttyUSB3"]["interface"] == "01"
    assert ports["/dev/ttyS0"] == {
        **{key: None for key in ports["/dev/ttyS0"]},
        "device": "/dev/ttyS0",
        "driver": "serial",
    }


def test_serial_list_human(tree: FakeTree) -> None:
    result = x1p1(tree, "serial", "list")
    assert result.returncode == 0, result.stderr
    assert "/dev/ttyUSB0     0403:6001 FTDI FT232R USB UART" in result.stdout
    assert "serial A50285BI, interface 00, driver ftdi_sio" in result.stdout
    assert FTDI_BY_ID in result.stdout


def test_rule_from_a_by_id_link_names_only_that_adapter(tree: FakeTree) -> None:
    result = x1p1(tree, "serial", "udev-rule", FTDI_BY_ID)
    assert result.returncode == 0, result.stderr
    assert 'ATTRS{serial}=="A50285BI"' in result.stdout
    install(tree, result.stdout)
    assert named(tree) == ["ttyUSB0"]  # not its twin ttyUSB4 with the same ids
    assert os.readlink(tree.dev / "x1p1-p1") == "ttyUSB0"


def test_rule_for_an_adapter_without_serial_names_its_socket(tree: FakeTree) -> None:
    result = x1p1(tree, "serial", "udev-rule", "ttyUSB1")
    assert result.returncode == 0, result.stderr
    assert 'KERNELS=="1-2"' in result.stdout
    install(tree, result.stdout)
    assert named(tree) == ["ttyUSB1"]  # not the identical CH340 in socket 1-5


def test_rule_for_the_second_port_of_a_dual_adapter(tree: FakeTree) -> None:
    result = x1p1(tree, "serial", "udev-rule", "/dev/ttyUSB3")
    assert result.returncode == 0, result.stderr
    assert 'ENV{ID_USB_INTERFACE_NUM}=="01"' in result.stdout
    install(tree, result.stdout)
    assert named(tree) == ["ttyUSB3"]


def test_template_filled_by_hand_works(tree: FakeTree) -> None:
    filled = (
        TEMPLATE.read_text()
        .replace("@VENDOR_ID@", "0403")
        .replace("@PRODUCT_ID@", "6001")
        .replace("@SERIAL@", "B7777777")
    )
    install(tree, filled)
    assert named(tree) == ["ttyUSB4"]


def test_rule_for_a_non_usb_port_is_refused(tree: FakeTree) -> None:
    result = x1p1(tree, "serial", "udev-rule", "/dev/ttyS0")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "x1p1: /dev/ttyS0 (driver serial) has no USB parent" in result.stderr


def test_rule_for_a_missing_port_is_refused(tree: FakeTree) -> None:
    result = x1p1(tree, "serial", "udev-rule", "/dev/ttyUSB9")
    assert result.returncode == 1
    assert "x1p1: /dev/ttyUSB9: no such port" in result.stderr


def test_rule_for_a_second_adapter(dev: Path) -> None:
    for name in ("x1p1-p1-2", "/dev/x1p1-p1-2"):
        text = udev_rule(str(dev / "ttyUSB0"), ListSource([ftdi(dev)]), name=name)
        assert 'SYMLINK+="x1p1-p1-2"' in rule_line(text)
        assert "# /etc/udev/rules.d/99-x1p1-p1-2.rules: /dev/x1p1-p1-2 for" in text
        assert "--name x1p1-p1-2 | sudo tee /etc/udev/rules.d/99-x1p1-p1-2.rules" in text
    for bad in ("../etc", "a b", "", "x" * 65, 'p1"', "-p1"):
        with pytest.raises(SerialPortError, match="cannot name a device"):
            udev_rule(str(dev / "ttyUSB0"), ListSource([ftdi(dev)]), name=bad)
