"""Network namespaces for tests: hosts on one Ethernet segment, multicast (mDNS) included.

A :class:`Segment` is a set of hosts, each a network namespace with ``lo`` and ``eth0``
(IPv4 ``10.77.0.N/24``, multicast on). Two hosts are joined by a veth pair; three or more
by veth pairs to a bridge (multicast snooping off) in a hub namespace of their own. Code
runs on a host as a subprocess (``ip netns exec``, :meth:`Host.popen`, :meth:`Host.run`)
or in this process on a thread that entered the namespace (:meth:`Host.call`,
:meth:`Host.run_async`: sockets made there stay in that namespace). Everything is
deleted on :meth:`Segment.close`, on failure too; namespaces left by a killed run
(``x1p1m-<pid>-…`` of a dead pid) are deleted by the next one.

Needs root and iproute2; :func:`unavailable_reason` says why not, and the fixture
:func:`segment_factory` skips the test with that reason. Import the fixture into a test
module (``from tests.netns import segment_factory  # noqa: F401``); module-scoped
fixtures call :func:`require_netns` and build a :class:`Segment` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

PREFIX = "x1p1m-"
SUBNET = "10.77.0"
_CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)
_STALE = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add)"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2's `ip` command"
    probe = f"{PREFIX}{os.getpid()}-probe"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_stale() -> None:
    """Delete ``x1p1m-<pid>-…`` namespaces whose process is gone (a killed test run)."""
    for name in _namespaces():
        match = _STALE.match(name)
        if not match or int(match[1]) == os.getpid():
            continue
        try:
            os.kill(int(match[1]), 0)
        except ProcessLookupError:
            _kill_namespace_processes(name)
            _ip("netns", "del", name, check=False)
        except PermissionError:
            pass


def _kill_namespace_processes(name: str) -> None:
    """Kill what still runs in one of our namespaces (only processes the tests started)."""
    pids = _ip("netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _enter(namespace: str) -> None:
    """Move the calling thread into a network namespace (setns(2) on this thread only)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({namespace}): {os.strerror(errno)}")
    finally:
        os.close(fd)


class Host:
    """One network namespace with ``eth0`` at :attr:`address`."""

    def __init__(self, segment: Segment, label: str, namespace: str, address: str) -> None:
        self.segment = segment
        self.label = label
        self.namespace = namespace
        self.address = address

    def __repr__(self) -> str:
        return f"Host({self.label!r}, {self.namespace}, {self.address})"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(
        self, argv: Sequence[str], timeout: float = 60, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace and wait for it (text output captured)."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.command(argv), text=True, timeout=timeout, **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command in the namespace; the segment stops it on close."""
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc: subprocess.Popen[str] = subprocess.Popen(self.command(argv), text=True, **kwargs)
        self.segment.processes.append(proc)
        return proc

    def python(self, code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start this test run's Python on ``code`` in the namespace."""
        return self.popen([sys.executable, "-c", code, *args], **kwargs)

    def call(self, fn: Callable[[], T], timeout: float = 60) -> T:
        """Run ``fn()`` on a fresh thread inside this namespace and return its result."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                _enter(self.namespace)
                box["result"] = fn()
            except BaseException as error:  # handed to the caller's thread
                box["error"] = error

        thread = threading.Thread(target=body, name=f"netns-{self.label}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"{fn!r} in {self.namespace} did not finish in {timeout} s")
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    def run_async(self, factory: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        """Run a coroutine with its own event loop on a thread inside this namespace."""

        async def bounded() -> T:
            return await asyncio.wait_for(factory(), timeout)

        return self.call(lambda: asyncio.run(bounded()), timeout + 10)


class Segment:
    """Hosts in their own namespaces on one Ethernet segment (veth pair or bridge)."""

    def __init__(self, labels: Sequence[str], *, bridge: bool | None = None) -> None:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError("a segment needs at least two hosts with distinct labels")
        cleanup_stale()
        self.id = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        self.bridged = len(labels) > 2 if bridge is None else bridge
        self.hub: str | None = None
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen[str]] = []
        self._made: list[str] = []
        try:
            self._build(labels)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, label: str) -> Host:
        return self.hosts[label]

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _netns(self, name: str) -> str:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def _build(self, labels: Sequence[str]) -> None:
        for i, label in enumerate(labels, start=1):
            ns = self._netns(f"{self.id}-{label}")
            self.hosts[label] = Host(self, label, ns, f"{SUBNET}.{i}")
        hosts = list(self.hosts.values())
        if self.bridged:
            self.hub = self._netns(f"{self.id}-hub")
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for i, host in enumerate(hosts, start=1):
                port = f"p{i}"
                _ip(
                    "-n",
                    self.hub,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    host.namespace,
                )
                _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
        else:
            _ip(
                "-n",
                hosts[0].namespace,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                hosts[1].namespace,
            )
        for host in hosts:
            ns = host.namespace
            _ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "multicast", "on", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
        for host in hosts:
            self._wait_up(host)

    def _wait_up(self, host: Host, bound: float = 10.0) -> None:
        deadline = time.monotonic() + bound
        while True:
            out = _ip("-n", host.namespace, "-j", "link", "show", "eth0").stdout
            if json.loads(out)[0].get("operstate") == "UP":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"eth0 of {host.namespace} did not come up in {bound} s")
            time.sleep(0.05)

    def detach(self, label: str) -> None:
        """Take a host off the bridge (its link stays up but reaches nobody)."""
        self._port(label, "nomaster")

    def attach(self, label: str) -> None:
        """Put a detached host back on the bridge."""
        self._port(label, "master", "br0")

    def _port(self, label: str, *how: str) -> None:
        if self.hub is None:
            raise ValueError("only a bridged segment can detach and attach hosts")
        index = list(self.hosts).index(label) + 1
        _ip("-n", self.hub, "link", "set", f"p{index}", *how)

    def close(self) -> None:
        """Stop the processes started here and delete every namespace (idempotent)."""
        for proc in self.processes:
            stop(proc)
        self.processes.clear()
        for name in reversed(self._made):
            _kill_namespace_processes(name)
            _ip("netns", "del", name, check=False)
        self._made.clear()


def stop(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    """End a process started by a test: close its stdin, then SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            if proc.stdin:
                proc.stdin.close()
        try:
            proc.wait(grace / 2)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(grace / 2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            with contextlib.suppress(OSError):
                stream.close()


def read_line(proc: subprocess.Popen[str], bound: float = 30.0) -> str:
    """The next line on ``proc``'s stdout, waiting at most ``bound`` seconds.

    Raises AssertionError with the process's stderr when it ends or stays silent.
    """
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(bound):
            raise AssertionError(f"no output within {bound} s from {proc.args!r}")
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"{proc.args!r} ended (rc={proc.returncode}): {err}")
    return line.rstrip("\n")


def read_json(proc: subprocess.Popen[str], bound: float = 30.0) -> Any:
    """The next stdout line of ``proc`` parsed as JSON."""
    return json.loads(read_line(proc, bound))


def wait_until(check: Callable[[], T | None], bound: float, what: str) -> T:
    """Call ``check`` until it returns something truthy; fail after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {bound} s (last: {last!r})")


_availability: list[str | None] = []


def require_netns() -> None:
    """Skip the calling test or fixture, with the reason, when namespaces cannot be made."""
    if not _availability:
        _availability.append(unavailable_reason())
    if _availability[0] is not None:
        pytest.skip(_availability[0])


@pytest.fixture
def segment_factory() -> Iterator[Callable[..., Segment]]:
    """Make segments (``segment_factory(["a", "b"])``); all are deleted after the test."""
    require_netns()
    made: list[Segment] = []

    def make(labels: Sequence[str], *, bridge: bool | None = None) -> Segment:
        segment = Segment(labels, bridge=bridge)
        made.append(segment)
        return segment

    try:
        yield make
    finally:
        for segment in made:
            segment.close()
