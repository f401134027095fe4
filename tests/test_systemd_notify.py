"""x1p1.converter.systemd: sd_notify datagrams on a real AF_UNIX socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from x1p1.converter import systemd


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in the file system, as systemd's /run/systemd/notify is."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_each_helper_sends_its_datagram(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    env = {"NOTIFY_SOCKET": path}
    assert systemd.ready(env=env)
    assert sock.recv(4096) == b"READY=1"
    assert systemd.watchdog(env=env)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert systemd.stopping(env=env)
    assert sock.recv(4096) == b"STOPPING=1"
    assert systemd.notify("READY=1\nSTATUS=two lines", env=env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=two lines"


def test_status_is_one_line(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    assert systemd.status("relaying\n 12 telegrams\tok", env={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"STATUS=relaying 12 telegrams ok"


def test_process_environment_is_used_by_default(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert systemd.ready()
    assert sock.recv(4096) == b"READY=1"


def test_abstract_namespace_socket() -> None:
    name = f"x1p1-systemd-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert systemd.watchdog(env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"


@pytest.mark.parametrize("value", [None, "", "@", "vsock:2:1234", "relative/path"])
def test_no_usable_socket_is_a_quiet_no_op(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert systemd.ready(env=env) is False


def test_a_socket_that_is_gone_returns_false(tmp_path: Path) -> None:
    assert systemd.ready(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval(env=env) == expected


def test_watchdog_interval_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 20.0
