"""A real embedded gateway for tests: real TLS on loopback, port 0, its own state dir.

Other test modules (converter, portal, reliability) use it too. Two ways to run one:

``running_gateway(state_dir, **config)`` (a context manager) runs the gateway in a thread
of this process, on its own event loop. It yields a :class:`RunningGateway` with an
injectable clock (:class:`OffsetClock`: pairing and token times move when a test calls
``clock.advance(...)``; the meters keep the wall clock), so tests expire requests and
tokens and pass throttle windows without sleeping. ``**config`` are fields of
:class:`~x1p1.gateway.app.GatewayConfig` (``auto_approve=True``, ``meters=…``).

``gateway_process(state_dir, *args)`` runs ``x1p1 gateway serve --host 127.0.0.1 --port 0
--no-mdns --state-dir DIR *args`` as a subprocess, for tests that kill it (SIGKILL) or
measure it; its ``clock`` is None and ``process`` is the :class:`subprocess.Popen`.

Either way the handle has ``url`` (``https://127.0.0.1:PORT``), ``ws_url``, ``port``,
``ca_path``, ``state_dir``, ``control`` (a :class:`~x1p1.gateway.control_client.ControlClient`:
the meter's buttons and the grid operator), ``ssl_context()``, and these helpers:

- ``request(method, path, token=…, json=…, body=…, headers=…)`` → :class:`Reply`
  (``status``, ``headers``, ``body``, ``json``) over a fresh HTTPS connection;
- ``pair(profiles=("P1",), name=…, uuid=…)`` → a token, approved on the meter;
- ``ws(path, token=…)`` → a ``websockets`` connect object: ``async with gw.ws(…) as ws``;
- ``electricity_id``, ``gas_id``: the meters' equipment ids;
- ``call(fn)`` (thread mode): run ``fn(gateway)`` on the gateway's loop, e.g.
  ``gw.call(lambda g: g.state.grants.maintain())``.

The pytest fixture :func:`gateway` gives a thread-mode gateway in ``tmp_path / "gw"``
with mDNS off; import it into a test module with ``from gateway_fixture import gateway``.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import json as jsonlib
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import uuid as uuid_module
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import connect

from x1p1.converter.tls import client_ssl_context
from x1p1.gateway.app import Gateway, GatewayConfig
from x1p1.gateway.control_client import ControlClient
from x1p1.gateway.streams import MeterSource
from x1p1.p1 import dsmr5

T = TypeVar("T")

ALL_PROFILES = (
    "P1",
    "E-REALTIME",
    "E-HISTORIC",
    "E-BILLING",
    "PQ-REALTIME",
    "PQ-HISTORIC",
    "G-REALTIME",
    "G-HISTORIC",
    "G-BILLING",
)


class OffsetClock:
    """Wall-clock time plus an offset that tests move forward: the gateway's ``now``."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self._lock = threading.Lock()
        self.on_advance: Callable[[], None] | None = None
        """Called after the clock moved (the gateway's housekeeping looks again)."""

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta | float) -> None:
        """Move the clock ``delta`` (a timedelta or seconds) forward."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self.offset += step
        if self.on_advance is not None:
            self.on_advance()


class SampleMeters:
    """Meters from :func:`x1p1.p1.dsmr5.sample_readings`: a stand-in for the simulation
    (tests pass ``meters=SampleMeters()`` for fixed, simple values)."""

    electricity_id = "E0044007312345617"
    gas_id = "G0012345678901234"
    gas_channel = 1

    def readings(self, at: datetime) -> dsmr5.Readings:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        seq = int((at - start).total_seconds())
        return dsmr5.sample_readings(seq, start=start)

    def telegram(self, at: datetime) -> bytes:
        return dsmr5.build(self.readings(at)).serialize()

    def realtime_values(self, at: datetime) -> dict[str, object]:
        r = self.readings(at)
        values: dict[str, object] = {
            "0-0:96.1.1.255": r.equipment_id,
            "1-0:1.8.1.255": r.delivered[0],
            "1-0:1.8.2.255": r.delivered[1],
            "1-0:2.8.1.255": r.returned[0],
            "1-0:2.8.2.255": r.returned[1],
            "0-0:96.14.0.255": r.tariff,
            "1-0:1.7.0.255": r.power_delivered,
            "1-0:2.7.0.255": r.power_returned,
            "0-0:96.7.21.255": r.power_failures,
            "0-0:96.7.9.255": r.long_power_failures,
        }
        for i, group in enumerate(("32", "52", "72")):
            values[f"1-0:{group}.7.0.255"] = r.voltages[i]
            values[f"1-0:{group}.32.0.255"] = r.sags[i]
            values[f"1-0:{group}.36.0.255"] = r.swells[i]
        for i, group in enumerate(("31", "51", "71")):
            values[f"1-0:{group}.7.0.255"] = r.currents[i]
        for i, (plus, minus) in enumerate((("21", "22"), ("41", "42"), ("61", "62"))):
            values[f"1-0:{plus}.7.0.255"] = r.powers_delivered[i]
            values[f"1-0:{minus}.7.0.255"] = r.powers_returned[i]
        return values

    def gas_reading(self, at: datetime) -> tuple[datetime, float]:
        dev = self.readings(at).mbus[0]
        assert dev.captured is not None and dev.value is not None
        return dev.captured, dev.value


@functools.cache
def default_meters() -> MeterSource:
    """The real simulation (seed 1, gas on channel 1), as ``x1p1 gateway serve``; one
    instance for the whole test session (it is thread-safe and computes a day once)."""
    from x1p1.gateway.simulation import MeterSimulation

    return MeterSimulation(1, gas_channel=1)


@dataclass
class Reply:
    """An HTTP answer: status, headers (lower-case names), body, and its JSON (or None)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            return None


@dataclass
class RunningGateway:
    """A gateway under test; see the module docstring."""

    port: int
    state_dir: Path
    ca_path: Path
    control: ControlClient
    clock: OffsetClock | None = None
    gateway: Gateway | None = None
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    loop: asyncio.AbstractEventLoop | None = None
    """Thread mode: the gateway's event loop (see :meth:`call`)."""
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)
    _meters: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"wss://{self.host}:{self.port}"

    @property
    def electricity_id(self) -> str:
        """The electricity meter's equipment id (from the control socket)."""
        return str(self._meter("electricity")["equipment_id"])

    @property
    def gas_id(self) -> str:
        return str(self._meter("gas")["equipment_id"])

    def _meter(self, kind: str) -> dict[str, Any]:
        if self._meters is None:
            self._meters = list(self.control.status()["meters"])
        return next(m for m in self._meters if m["type"] == kind)

    def call(self, function: Callable[[Gateway], T]) -> T:
        """Thread mode: run ``function(gateway)`` on the gateway's own loop (its state is
        not thread-safe) and return what it returns."""
        assert self.loop is not None and self.gateway is not None, "thread mode only"
        gw = self.gateway

        async def run() -> T:
            return function(gw)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the gateway's root: TLS 1.3, strict X.509."""
        if self._ssl is None:
            self._ssl = client_ssl_context(self.ca_path)
        return self._ssl

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        source: str | None = None,
    ) -> Reply:
        """One HTTPS request on a fresh connection; from address ``source`` when given (a
        second host on the home network is a client bound to 127.0.0.2)."""
        conn = http.client.HTTPSConnection(
            self.host,
            self.port,
            context=self.ssl_context(),
            timeout=timeout,
            source_address=(source, 0) if source else None,
        )
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if json is not None:
            body = jsonlib.dumps(json).encode()
            all_headers.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
            return Reply(response.status, got, data)
        finally:
            conn.close()

    def token_request(
        self,
        profiles: Iterable[str] = ("P1",),
        *,
        name: str = "test device",
        uuid: str | None = None,
        source: str | None = None,
    ) -> Reply:
        """``POST /api/tokens/requests`` (from address ``source`` when given)."""
        body = {"name": name, "uuid": uuid or str(uuid_module.uuid4()), "profiles": list(profiles)}
        return self.request("POST", "/api/tokens/requests", json=body, source=source)

    def save_pairing(self, state_dir: Path, profiles: tuple[str, ...]) -> str:
        """A token with these profiles, saved in ``state_dir`` as `x1p1 pair` would;
        the token."""
        from converter_support import save_test_pairing

        from x1p1.x1.profiles import Profile

        token = self.pair(profiles)
        save_test_pairing(
            state_dir,
            token=token,
            port=self.port,
            ca_pem=self.ca_path.read_text(),
            profiles=frozenset(Profile(p) for p in profiles),
        )
        return token

    def pair(
        self,
        profiles: Iterable[str] = ("P1",),
        *,
        name: str = "test device",
        uuid: str | None = None,
        granted: Iterable[str] | None = None,
    ) -> str:
        """Ask for a token, approve it on the meter (as asked, §5.1.5), change it to
        ``granted`` if given (the portal's change, §5.1.6), and return the token."""
        reply = self.token_request(profiles, name=name, uuid=uuid)
        assert reply.status == 202, reply.body
        request_id = reply.json["request_id"]
        state = self.request("GET", f"/api/tokens/requests/{request_id}").json
        if state["status"] == "pending":
            result = self.control.approve(request_id)
            if granted is not None:
                self.control.set_profiles(result["token"]["token_id"], granted)
            state = self.request("GET", f"/api/tokens/requests/{request_id}").json
        assert state["status"] == "approved", state
        token = state["token"]
        assert isinstance(token, str)
        return token

    def ws(self, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        """A ``websockets`` client connection to ``path`` (``async with``)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return connect(
            self.ws_url + path,
            ssl=self.ssl_context(),
            additional_headers=headers,
            open_timeout=10,
            **kwargs,
        )


@contextmanager
def running_gateway(state_dir: Path, **config: Any) -> Iterator[RunningGateway]:
    """A gateway in a thread of this process (see the module docstring)."""
    clock = OffsetClock()
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "mdns": False,
        "now": clock.now,
    }
    settings.update(config)
    settings.setdefault("meters", default_meters())
    gw = Gateway(GatewayConfig(state_dir=Path(state_dir), **settings))
    started = threading.Event()
    box: dict[str, Any] = {}

    def main() -> None:
        async def serve() -> None:
            stop = asyncio.Event()
            box["loop"], box["stop"] = asyncio.get_running_loop(), stop
            try:
                await gw.start()
            except BaseException as exc:
                box["error"] = exc
                started.set()
                return
            started.set()
            await stop.wait()
            await gw.stop()

        asyncio.run(serve())

    thread = threading.Thread(target=main, name="x1p1-test-gateway")
    thread.start()
    started.wait(60)
    if "error" in box:
        thread.join(10)
        raise box["error"]
    loop = box["loop"]

    def wake() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(gw.wake)

    clock.on_advance = wake
    control = ControlClient(gw.state_dir)
    handle = RunningGateway(
        port=gw.port,
        state_dir=gw.state_dir,
        ca_path=gw.ca_path,
        control=control,
        clock=clock,
        gateway=gw,
        loop=box["loop"],
    )
    try:
        yield handle
    finally:
        control.close()
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        assert not thread.is_alive(), "the test gateway did not stop"


_LISTENING = re.compile(r"listening on https://([^\s:]+|\[[^\]]+\]):(\d+)")


@contextmanager
def gateway_process(
    state_dir: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    nofile: int | None = None,
) -> Iterator[RunningGateway]:
    """``x1p1 gateway serve`` as a subprocess on 127.0.0.1, port 0, mDNS off; ``nofile``
    sets its descriptor limit (soft and hard)."""
    command = [
        sys.executable,
        "-m",
        "x1p1.cli",
        "gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-mdns",
        "--state-dir",
        str(state_dir),
        *args,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=None,
        env={**os.environ, **(env or {})},
        preexec_fn=None if nofile is None else functools.partial(_limit_nofile, nofile),
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline().decode()
        match = _LISTENING.search(line)
        if not match:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"the gateway did not start: {line!r}")
        port = int(match.group(2))
        ca_path = Path(state_dir) / "pki" / "root-ca.pem"
        control = ControlClient(Path(state_dir))
        handle = RunningGateway(
            port=port,
            state_dir=Path(state_dir),
            ca_path=ca_path,
            control=control,
            process=process,
        )
        try:
            yield handle
        finally:
            control.close()
    finally:
        stop_process(process, 15)


def _limit_nofile(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, ``grace`` seconds to exit, then SIGKILL; its stdout pipe closed."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    """A thread-mode gateway on 127.0.0.1, port 0, mDNS off, in ``tmp_path / "gw"``."""
    with running_gateway(tmp_path / "gw") as gw:
        yield gw
