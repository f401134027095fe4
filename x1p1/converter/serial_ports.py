"""Serial ports as udev sees them: ``x1p1 serial list`` and ``x1p1 serial udev-rule PORT``.

The converter writes P1 telegrams to a serial adapter (P1 §5, §6: 115200 8N1). USB
adapters get a new ``/dev/ttyUSBn`` each time they are plugged in, so the service uses
the stable name ``/dev/x1p1-p1`` that a udev rule gives the chosen adapter
(``udev/99-x1p1.rules.template``). This module lists the ports with what identifies
them (vendor and product ids and names, serial number, ``/dev/serial/by-id`` link,
driver) and writes that rule for one of them.

:class:`PyudevSource` is the only code that talks to udev (through pyudev); it flattens
each tty into a :class:`TtyDevice` value, and everything else here works on those
values, so any :class:`DeviceSource` can stand in for udev.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from x1p1.exceptions import SerialPortError

__all__ = [
    "LINK_NAME",
    "DeviceSource",
    "PyudevSource",
    "SerialPortInfo",
    "TtyDevice",
    "UsbDevice",
    "list_ports",
    "udev_rule",
]

LINK_NAME = "x1p1-p1"  # udev makes /dev/x1p1-p1; config.DEFAULT_SERIAL names it
SECOND_LINK_NAME = "x1p1-p1-2"
"""The name the docs give a second P1 output's adapter (``[[output]]``)."""
_LINK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
BY_ID = "/dev/serial/by-id/"


@dataclass(frozen=True)
class UsbDevice:
    """The sysfs attributes of a tty's ``usb_device`` ancestor (what ``ATTRS{}`` matches)."""

    sys_name: str  # "1-1.2": the bus and port chain, i.e. the socket it is plugged into
    vendor_id: str | None = None  # idVendor, "0403"
    product_id: str | None = None  # idProduct, "6001"
    serial: str | None = None  # the adapter's own serial number, if it has one
    manufacturer: str | None = None  # "FTDI"
    product: str | None = None  # "FT232R USB UART"


@dataclass(frozen=True)
class TtyDevice:
    """What udev knows about one tty device node, flattened into plain values."""

    device_node: str  # "/dev/ttyUSB0"
    sys_path: str = ""
    devlinks: tuple[str, ...] = ()  # /dev/serial/by-id/…, /dev/serial/by-path/… (udev db)
    driver: str | None = None  # the parent's driver: ftdi_sio, cp210x, ch341, cdc_acm, …
    has_parent: bool = True  # False for virtual terminals, ptmx, console
    uart_type: str | None = None  # serial_core's "type"; "0" means no UART behind it
    usb: UsbDevice | None = None
    interface: str | None = None  # bInterfaceNumber of its usb_interface, "00"
    properties: Mapping[str, str] = field(default_factory=dict)  # the udev database


class DeviceSource(Protocol):
    """Where tty devices come from: udev (:class:`PyudevSource`), or a test's list."""

    def tty_devices(self) -> Iterable[TtyDevice]:
        """Every tty device that has a device node."""
        ...


def _decode(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.strip() or None


def _attribute(device: Any, name: str) -> str | None:
    try:
        return _decode(device.attributes.get(name))
    except (KeyError, OSError, UnicodeError):
        return None


def _driver(device: Any) -> str | None:
    """The driver of the hardware behind a tty: the first ancestor's that is not the
    kernel's generic serial-base port layer (Linux 6.5+ puts it between tty and UART)."""
    for ancestor in device.ancestors:
        driver = _decode(ancestor.driver)
        if driver and ancestor.subsystem != "serial-base":
            return driver
    return None


class PyudevSource:
    """The real :class:`DeviceSource`: udev's view through pyudev (Linux only)."""

    def tty_devices(self) -> list[TtyDevice]:
        try:
            import pyudev
        except ImportError as error:
            raise SerialPortError(f"listing serial ports needs pyudev: {error}") from None
        try:
            context = pyudev.Context()
        except ImportError as error:  # pyudev raises this when libudev cannot be loaded
            raise SerialPortError(f"listing serial ports needs libudev: {error}") from None
        devices: list[TtyDevice] = []
        for device in context.list_devices(subsystem="tty"):
            node = device.device_node
            if node is None:
                continue
            parent = device.parent
            usb = device.find_parent("usb", "usb_device")
            interface = device.find_parent("usb", "usb_interface")
            devices.append(
                TtyDevice(
                    device_node=str(node),
                    sys_path=str(device.sys_path),
                    devlinks=tuple(sorted(str(link) for link in device.device_links)),
                    driver=_driver(device),
                    has_parent=parent is not None,
                    uart_type=_attribute(device, "type"),
                    usb=None
                    if usb is None
                    else UsbDevice(
                        sys_name=str(usb.sys_name),
                        vendor_id=_attribute(usb, "idVendor"),
                        product_id=_attribute(usb, "idProduct"),
                        serial=_attribute(usb, "serial"),
                        manufacturer=_attribute(usb, "manufacturer"),
                        product=_attribute(usb, "product"),
                    ),
                    interface=None
                    if interface is None
                    else _attribute(interface, "bInterfaceNumber"),
                    properties={str(k): str(v) for k, v in device.properties.items()},
                )
            )
        return devices


@dataclass(frozen=True)
class SerialPortInfo:
    """One serial port for ``x1p1 serial list``; ``to_json`` gives its ``--json`` form."""

    device: str
    by_id: str | None = None
    vendor_id: str | None = None
    product_id: str | None = None
    vendor: str | None = None
    product: str | None = None
    serial_number: str | None = None
    interface: str | None = None
    driver: str | None = None
    usb_port: str | None = None  # "1-1.2", the socket (KERNELS==)

    @classmethod
    def from_tty(cls, tty: TtyDevice) -> SerialPortInfo:
        props = tty.properties
        usb = tty.usb
        by_id = next((link for link in tty.devlinks if link.startswith(BY_ID)), None)
        if usb is None:
            return cls(tty.device_node, by_id=by_id, driver=tty.driver)
        return cls(
            tty.device_node,
            by_id=by_id,
            vendor_id=usb.vendor_id or props.get("ID_VENDOR_ID"),
            product_id=usb.product_id or props.get("ID_MODEL_ID"),
            vendor=usb.manufacturer
            or props.get("ID_VENDOR_FROM_DATABASE")
            or props.get("ID_VENDOR"),
            product=usb.product or props.get("ID_MODEL_FROM_DATABASE") or props.get("ID_MODEL"),
            serial_number=usb.serial or props.get("ID_SERIAL_SHORT"),
            interface=tty.interface or props.get("ID_USB_INTERFACE_NUM"),
            driver=tty.driver,
            usb_port=usb.sys_name,
        )

    def to_json(self) -> dict[str, str | None]:
        return asdict(self)


def _is_port(tty: TtyDevice) -> bool:
    """A tty with hardware behind it: not a virtual terminal, not an empty 8250 slot."""
    return tty.has_parent and tty.uart_type != "0"


def _natural(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def list_ports(source: DeviceSource | None = None) -> list[SerialPortInfo]:
    """The serial ports udev knows, in natural order (/dev/ttyS2 before /dev/ttyS10)."""
    ttys = (source or PyudevSource()).tty_devices()
    ports = [SerialPortInfo.from_tty(tty) for tty in ttys if _is_port(tty)]
    return sorted(ports, key=lambda port: _natural(port.device))


def _find(port: str, ttys: list[TtyDevice]) -> TtyDevice:
    """The tty that ``port`` (a node, a by-id link, any symlink, or a bare name) is."""
    if "://" in port:
        raise SerialPortError(
            f"{port} is a pyserial URL, not a device; a udev rule names a USB adapter"
        )
    path = port if "/" in port else "/dev/" + port
    if not os.path.lexists(path):
        raise SerialPortError(f"{port}: no such port; `x1p1 serial list` shows the ports here")
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise SerialPortError(f"{port} is a link to {real}, which does not exist (unplugged?)")
    for tty in ttys:
        if os.path.realpath(tty.device_node) == real:
            return tty
    shown = port if real == path else f"{port} ({real})"
    raise SerialPortError(
        f"{shown} is not a serial port that udev knows; `x1p1 serial list` shows the ports"
    )


_UNSAFE = re.compile(r'[^\x20-\x7e]|[*?\[\]|"\\]')


def _value(text: str) -> str:
    """A value for a udev match: glob and quote characters match as any one character."""
    return _UNSAFE.sub("?", text)


def link_name(name: str) -> str:
    """The udev link for ``name`` (``x1p1-p1-2`` or ``/dev/x1p1-p1-2``); a
    :class:`~x1p1.exceptions.SerialPortError` says why a name cannot be one."""
    bare = name.strip().removeprefix("/dev/")
    if not _LINK.match(bare):
        raise SerialPortError(
            f"{name!r} cannot name a device: use letters, digits, '.', '_' and '-' "
            "(up to 64), such as x1p1-p1-2"
        )
    return bare


def udev_rule(port: str, source: DeviceSource | None = None, *, name: str = LINK_NAME) -> str:
    """A ready udev rule (text with comments) that names the adapter behind ``port``
    ``/dev/x1p1-p1`` (or ``/dev/NAME``, for a second P1 output, docs/config.example.toml),
    matching its USB vendor, product and serial number.

    ``port`` may be a device node (/dev/ttyUSB0), a /dev/serial/by-id link, any other
    symlink, or a bare name (ttyUSB0). Raises :class:`~x1p1.exceptions.SerialPortError`
    for a port that does not exist, that udev does not know, or that is no USB device.
    """
    link = link_name(name)
    rules = "99-x1p1.rules" if link == LINK_NAME else f"99-{link}.rules"
    ttys = list((source or PyudevSource()).tty_devices())
    tty = _find(port, ttys)
    usb = tty.usb
    if usb is None:
        driver = f" (driver {tty.driver})" if tty.driver else ""
        raise SerialPortError(
            f"{tty.device_node}{driver} has no USB parent: it is a built-in UART, whose name "
            f"never changes; set serial = {tty.device_node!r} instead of writing a udev rule"
        )
    if not usb.vendor_id or not usb.product_id:
        raise SerialPortError(
            f"{tty.device_node}: udev shows no idVendor/idProduct for USB device {usb.sys_name}"
        )
    info = SerialPortInfo.from_tty(tty)
    siblings = [other for other in ttys if other.usb and other.usb.sys_name == usb.sys_name]
    matches = [
        'SUBSYSTEM=="tty"',
        f'ATTRS{{idVendor}}=="{_value(usb.vendor_id)}"',
        f'ATTRS{{idProduct}}=="{_value(usb.product_id)}"',
    ]
    notes: list[str] = []
    if usb.serial:
        matches.append(f'ATTRS{{serial}}=="{_value(usb.serial)}"')
    else:
        matches.append(f'KERNELS=="{_value(usb.sys_name)}"')
        notes += [
            "# This adapter has no serial number, so the rule names the USB socket it is in",
            f"# ({usb.sys_name}): keep it in that socket, or run this command again.",
        ]
    if len(siblings) > 1 and info.interface:
        matches.append(f'ENV{{ID_USB_INTERFACE_NUM}}=="{_value(info.interface)}"')
        notes.append(
            f"# The adapter has {len(siblings)} ports; this rule names interface "
            f"{info.interface} ({tty.device_node})."
        )
    actions = [f'SYMLINK+="{link}"', 'MODE="0660"', 'GROUP="dialout"', 'TAG+="systemd"']
    described = ", ".join(
        part
        for part in (
            " ".join(p for p in (info.vendor, info.product) if p) or None,
            f"{usb.vendor_id}:{usb.product_id}",
            f"serial {usb.serial}" if usb.serial else "no serial number",
            f"now {tty.device_node}",
        )
        if part
    )
    named = "" if link == LINK_NAME else f" --name {link}"
    lines = [
        f"# /etc/udev/rules.d/{rules}: /dev/{link} for the P1 output adapter.",
        f"# Written by `x1p1 serial udev-rule {port}{named}`.",
        f"# Adapter: {described}",
    ]
    if info.by_id:
        lines.append(f"#          {info.by_id}")
    lines += notes
    lines += [
        "# Install:",
        f"#   x1p1 serial udev-rule {port}{named} | sudo tee /etc/udev/rules.d/{rules}",
        "#   sudo udevadm control --reload && sudo udevadm trigger --action=add "
        "--subsystem-match=tty",
        f"# Then /dev/{link} points at this adapter in whichever socket (see "
        "udev/99-x1p1.rules.template).",
        ", ".join(matches + actions),
    ]
    return "\n".join(lines) + "\n"
