"""The reliability suite's machinery: processes to kill, a proxy that breaks
things, the P1 dongle's end of a pty with a stopwatch, and probes of a process.

- :class:`GatewayProcess`: ``x1p1 -vv gateway serve`` as a child process that is stopped
  (SIGTERM or SIGKILL) and started again on the same port and state directory; its
  standard error goes to one log file across restarts, and each start notes the moment
  it printed ``listening`` (the gateway's return).
- :class:`FaultProxy`: a man in the middle with the gateway's own certificate (the
  converter cannot tell it from the gateway). It passes HTTP and the legacy-P1
  WebSocket through, with the gateway's status codes and close codes, and on demand
  drops the connection or sends what the real gateway never sends: a telegram with a bad
  CRC, one without CRC, half a telegram, noise, a message over the converter's limit; or
  a good telegram split over two messages. It counts handshakes by outcome, so a test
  sees whether a client hammers the gateway.
- :class:`WireReader`: the master end of a pty, read on the event loop as a P1 dongle
  reads the line; each complete telegram is timestamped, and :meth:`WireReader.audit`
  judges everything that arrived with dsmr_parser (DSMR 5, CRC validated) and by byte.
- :func:`open_fds`, :func:`rss_kib`, :func:`tcp_listeners`: /proc probes of a process.
- :func:`find_secrets`: which files under a directory hold any of some strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import ClientSession, TCPConnector, web
from dsmr_parser import telegram_specifications
from dsmr_parser.clients.telegram_buffer import TelegramBuffer
from dsmr_parser.exceptions import InvalidChecksumError, ParseError
from dsmr_parser.parsers import TelegramParser
from gateway_fixture import RunningGateway, stop_process
from p1_pty import PtyPeer
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from x1p1.converter.tls import client_ssl_context
from x1p1.gateway.control_client import ControlClient

CLI = [sys.executable, "-m", "x1p1.cli"]
_LISTENING = re.compile(rb"listening on https://[^\s:]+:(\d+)")
_TELEGRAM_END = re.compile(rb"![0-9A-Fa-f]{4}\r\n")
_WHOLE = re.compile(rb"/[^/!]*![0-9A-F]{4}\r\n")
_TIMESTAMP = re.compile(rb"\r\n0-0:1\.0\.0\((\d{12})[SW]\)")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without systemd's variables (a child must not notify pytest's
    service manager or write its status into a shared runtime directory)."""
    drop = {
        "NOTIFY_SOCKET",
        "RUNTIME_DIRECTORY",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "X1P1_CONFIG",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def append_to(path: Path) -> BinaryIO:
    """``path`` opened for appending bytes (a child's log)."""
    return open(path, "ab")  # noqa: SIM115 - the caller closes it


def write_figures(figures: Mapping[str, Any], name: str) -> None:
    """Print ``figures`` and, when ``X1P1_FIGURES_DIR`` names a directory, write them
    there as ``<name>.json`` (docs/reliability.md quotes them)."""
    text = json.dumps(figures, indent=2)
    print(f"\n{name} figures: {text}")
    directory = os.environ.get("X1P1_FIGURES_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / f"{name}.json").write_text(text + "\n")


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ``samples`` by nearest rank."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


# --- the gateway as a process ----------------------------------------------------------------


class GatewayProcess:
    """``x1p1 -vv gateway serve`` on 127.0.0.1 without mDNS, restartable on one port."""

    def __init__(self, state_dir: Path, log_path: Path, *args: str, verbosity: str = "-vv"):
        self.state_dir = Path(state_dir)
        self.log_path = Path(log_path)
        self.args = args
        self.verbosity = verbosity
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self.ready_at: float | None = None
        """Monotonic time of the last start's ``listening`` line."""
        self.starts = 0
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "pki" / "root-ca.pem"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def handle(self) -> RunningGateway:
        """The test fixture's helpers (``request``, ``pair``, ``ws``) for this gateway."""
        return RunningGateway(
            port=self.port,
            state_dir=self.state_dir,
            ca_path=self.ca_path,
            control=ControlClient(self.state_dir),
        )

    def control(self) -> ControlClient:
        """A fresh control connection (the meter's buttons); close it after use."""
        return ControlClient(self.state_dir)

    async def start(self, timeout: float = 60.0) -> float:  # noqa: ASYNC109
        """Start it (on the port of the first start); returns when it listens."""
        assert not self.running
        command = [
            *CLI,
            self.verbosity,
            "gateway",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-mdns",
            "--state-dir",
            str(self.state_dir),
            *self.args,
        ]
        with append_to(self.log_path) as log:
            log.write(f"=== start {self.starts + 1}: {' '.join(command[2:])}\n".encode())
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=log, env=child_env()
            )
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            line = await self.process.stdout.readline()
        self.ready_at = time.monotonic()
        match = _LISTENING.search(line)
        if match is None:
            await self.stop(signal.SIGKILL)
            raise RuntimeError(f"the gateway did not start: {line!r}; see {self.log_path}")
        self.port = int(match.group(1))
        self.starts += 1
        self._drain = asyncio.create_task(self._drain_stdout(self.process.stdout))
        return self.ready_at

    @staticmethod
    async def _drain_stdout(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:  # noqa: ASYNC109
        """Send ``sig`` and wait for the exit; returns the exit status."""
        process = self.process
        assert process is not None
        if process.returncode is None:
            process.send_signal(sig)
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain, 5)
            self._drain = None
        assert process.returncode is not None
        return process.returncode


@contextlib.contextmanager
def logged_gateway(
    state_dir: Path, log_path: Path, *args: str, verbosity: str = "-vv"
) -> Iterator[RunningGateway]:
    """``x1p1 -vv gateway serve`` on 127.0.0.1:0 without mDNS as a child process (for
    tests without an event loop), its standard error in ``log_path``; yields the test
    fixture's handle (``process`` is the Popen)."""
    command = [
        *CLI,
        verbosity,
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
    with append_to(log_path) as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=child_env())
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            raise RuntimeError(f"the gateway did not start: {line!r}; see {log_path}")
        handle = RunningGateway(
            port=int(match.group(1)),
            state_dir=Path(state_dir),
            ca_path=Path(state_dir) / "pki" / "root-ca.pem",
            control=ControlClient(Path(state_dir)),
            process=process,  # type: ignore[arg-type]
        )
        try:
            yield handle
        finally:
            handle.control.close()
    finally:
        stop_process(process, 20)


# --- the converter as a process ----------------------------------------------------------------


async def pair_converter(
    gateway: GatewayProcess, state_dir: Path, output: Path, *, name: str = "x1p1 soak"
) -> float:
    """``x1p1 -vv pair --gateway 127.0.0.1:PORT``, approved on the meter's button by the
    control socket; its output appended to ``output``. Returns when the token is saved
    (monotonic time)."""
    command = [
        *CLI,
        "-vv",
        "pair",
        "--gateway",
        f"127.0.0.1:{gateway.port}",
        "--ca",
        str(gateway.ca_path),
        "--name",
        name,
        "--state-dir",
        str(state_dir),
    ]
    with append_to(output) as out:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=out, env=child_env()
        )
        try:
            async with asyncio.timeout(60):
                while True:
                    requests = await asyncio.to_thread(_pending_tokens, gateway)
                    mine = [r for r in requests if r.get("name") == name]
                    if mine:
                        await asyncio.to_thread(_approve, gateway, mine[0]["request_id"])
                        break
                    await asyncio.sleep(0.05)
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0, f"x1p1 pair exited {code}; see {output}"
    return time.monotonic()


def _pending_tokens(gateway: GatewayProcess) -> list[dict[str, Any]]:
    with gateway.control() as control:
        return [r for r in control.requests() if r.get("kind") == "device"]


def _approve(gateway: GatewayProcess, request_id: str) -> None:
    with gateway.control() as control:
        control.approve(request_id)


# --- the proxy that breaks things ----------------------------------------------------------


BAD_KINDS = ("crc", "no-crc", "cut", "noise", "oversize")
"""What :meth:`FaultProxy.inject` can send instead of a telegram (never valid)."""


def spoil(raw: str, kind: str) -> str:
    """``raw`` (a whole telegram) made into the bad message ``kind``."""
    if kind == "crc":  # one value digit changed, the CRC left as it was
        head, bang, tail = raw.rpartition("!")
        line = head.index("\r\n1-0:1.8.1(")
        digit = line + len("\r\n1-0:1.8.1(") + 1
        changed = "1" if head[digit] != "1" else "2"
        return head[:digit] + changed + head[digit + 1 :] + bang + tail
    if kind == "no-crc":
        return raw[: raw.rindex("!") + 1] + "\r\n"
    if kind == "cut":
        return raw[: len(raw) // 2]
    if kind == "noise":
        return "noise from a broken gateway, no telegram in it\r\n"
    if kind == "oversize":
        return "/" + "A" * (70 * 1024)  # over the converter's 64 KiB message limit
    raise ValueError(kind)


@dataclass
class ProxyCounts:
    """Handshakes the proxy saw, by outcome."""

    opened: int = 0
    refused: Counter[int] = field(default_factory=Counter)
    """Status codes the gateway (or the proxy, 502 while it is down) answered."""
    closed: Counter[int] = field(default_factory=Counter)
    """Close codes the gateway sent, passed on."""
    aborted: int = 0


class FaultProxy:
    """See the module docstring. ``start()``, then point the converter at :attr:`port`."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.port = 0
        self.forwarded: list[bytes] = []
        """Every good telegram passed on to a client, in order."""
        self.forwarded_at: list[float] = []
        self.injected: list[tuple[str, bytes]] = []
        """Every bad message sent instead of a telegram: (kind, bytes)."""
        self.split = 0
        """Good telegrams sent in two messages."""
        self.counts = ProxyCounts()
        self.attempts: list[float] = []
        """Monotonic time of every WebSocket handshake that reached the proxy."""
        self._plan: list[str] = []
        self._runner: web.AppRunner | None = None
        self._live: dict[int, web.Request] = {}
        self._client_ssl = client_ssl_context(gateway.ca_path)
        self._session: ClientSession | None = None

    async def start(self) -> None:
        pki = self.gateway.state_dir / "pki"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(pki / "tls.pem", pki / "tls.key")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = ClientSession(connector=TCPConnector(ssl=self._client_ssl))

    async def close(self) -> None:
        self.drop()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests do ----------------------------------------------------------------------

    def inject(self, *kinds: str) -> None:
        """Replace the next telegrams with these (``BAD_KINDS``, or ``split``: a good one
        in two messages), one per telegram."""
        self._plan.extend(kinds)

    @property
    def plan_left(self) -> int:
        return len(self._plan)

    def drop(self) -> int:
        """Cut every client's TCP connection at once, without a close frame."""
        dropped = 0
        for request in list(self._live.values()):
            if request.transport is not None:
                request.transport.abort()
                dropped += 1
        self.counts.aborted += dropped
        return dropped

    @property
    def clients(self) -> int:
        return len(self._live)

    # -- the pass-through ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return await self._http(request)

    def _upstream(self, path: str, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.gateway.port}{path}"

    async def _http(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "user-agent", "accept")
        }
        try:
            async with self._session.request(
                request.method,
                self._upstream(request.path_qs),
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
                keep = {
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "retry-after", "www-authenticate")
                }
                return web.Response(status=answer.status, body=body, headers=keep)
        except (OSError, TimeoutError):
            return web.json_response(
                {"error": "bad-gateway", "message": "the gateway is down"}, status=502
            )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(time.monotonic())
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in ("authorization", "user-agent")
        }
        try:
            upstream = await connect(
                self._upstream(request.path_qs, "wss"),
                ssl=self._client_ssl,
                additional_headers=headers,
                open_timeout=5,
                ping_interval=None,
                max_size=None,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            response = exc.response
            self.counts.refused[response.status_code] += 1
            keep = {
                k: v
                for k, v in response.headers.raw_items()
                if k.lower() in ("content-type", "retry-after", "www-authenticate")
            }
            return web.Response(status=response.status_code, body=response.body, headers=keep)
        except Exception:  # down, restarting, or a handshake cut short
            self.counts.refused[502] += 1
            return web.json_response(
                {"error": "bad-gateway", "message": "the gateway is down"}, status=502
            )
        ws = web.WebSocketResponse(heartbeat=None, compress=False, max_msg_size=4096)
        try:
            await ws.prepare(request)
        except Exception:
            await upstream.close()
            raise
        self.counts.opened += 1
        self._live[id(request)] = request
        try:
            await self._pump(request, ws, upstream)
        finally:
            self._live.pop(id(request), None)
            await upstream.close()
        return ws

    async def _pump(self, request: web.Request, ws: web.WebSocketResponse, upstream: Any) -> None:
        async def from_client() -> None:
            async for _ in ws:
                pass

        client = asyncio.create_task(from_client())
        try:
            async for message in upstream:
                if client.done():
                    return
                text = message if isinstance(message, str) else message.decode("latin-1")
                await self._send(ws, text)
        except Exception:
            pass
        finally:
            client.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client
        if ws.closed:
            return
        received = upstream.protocol.close_rcvd
        if received is None:  # the gateway vanished (SIGKILL): so does the connection
            if request.transport is not None:
                request.transport.abort()
            return
        self.counts.closed[received.code] += 1
        with contextlib.suppress(Exception):
            await ws.close(code=received.code, message=received.reason.encode()[:123])

    async def _send(self, ws: web.WebSocketResponse, text: str) -> None:
        kind = self._plan.pop(0) if self._plan else None
        raw = text.encode("latin-1")
        if kind is None:
            await ws.send_str(text)
        elif kind == "split":
            cut = len(text) // 3
            await ws.send_str(text[:cut])
            await asyncio.sleep(0.05)
            await ws.send_str(text[cut:])
            self.split += 1
        else:
            bad = spoil(text, kind)
            self.injected.append((kind, bad.encode("latin-1")))
            await ws.send_str(bad)
            return
        self.forwarded.append(raw)
        self.forwarded_at.append(time.monotonic())


# --- the P1 dongle's end of a pty ------------------------------------------------------------


@dataclass
class WireAudit:
    """What a P1 reader made of everything on the line."""

    bytes: int
    telegrams: int
    """Complete telegrams with a valid CRC (by byte, CRC-16 checked by dsmr_parser)."""
    dsmr_parsed: int
    """Telegrams dsmr_parser's own framing found and parsed (DSMR 5, CRC validated)."""
    dsmr_errors: int
    invalid_or_partial: int
    """Stretches of the line that are not a whole valid telegram."""
    stray_bytes: int
    duplicates: int
    out_of_order: int
    """Telegrams whose timestamp is not later than the one before."""
    not_from_gateway: int
    """Telegrams that are not byte for byte one the gateway sent (None: not checked)."""

    def figures(self) -> dict[str, int]:
        return dict(self.__dict__)


class WireReader(PtyPeer):
    """The master end of a pty pair (:class:`PtyPeer`) that also notes when each
    telegram's end arrived; the converter writes to :attr:`path` (the slave)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[tuple[float, int]] = []
        """(monotonic time, offset just past it) of each ``!CRC CR LF`` read."""
        self._scanned = 0

    def _received(self) -> None:
        now = time.monotonic()
        start = max(0, self._scanned - 6)
        for match in _TELEGRAM_END.finditer(self.data, start):
            if match.end() > self._scanned:
                self.ends.append((now, match.end()))
        self._scanned = len(self.data)

    def full(self) -> bool:
        """The line's kernel buffer is full: a writer would block (the slave is not
        writable)."""
        return not select.select([], [self.slave], [], 0)[1]

    @property
    def count(self) -> int:
        return len(self.ends)

    def first_after(self, moment: float) -> float | None:
        """When the first telegram completed after ``moment``, or None."""
        for at, _ in self.ends:
            if at > moment:
                return at
        return None

    def audit(self, sent: Iterable[bytes] | None = None) -> WireAudit:
        data = bytes(self.data)
        whole = list(_WHOLE.finditer(data))
        covered = sum(m.end() - m.start() for m in whole)
        # every stretch between whole telegrams that is not empty is invalid or partial
        gaps, last = 0, 0
        for m in whole:
            if m.start() > last:
                gaps += len([p for p in data[last : m.start()].split(b"/") if p]) or 1
            last = m.end()
        if last < len(data):
            gaps += len([p for p in data[last:].split(b"/") if p]) or 1
        raws = [m.group(0) for m in whole]
        buffer = TelegramBuffer()
        buffer.append(data.decode("ascii", "replace"))
        parser = TelegramParser(telegram_specifications.V5, apply_checksum_validation=True)
        parsed = errors = 0
        for text in buffer.get_all():
            try:
                parser.parse(text, throw_ex=True)
                parsed += 1
            except (InvalidChecksumError, ParseError):
                errors += 1
        # a whole frame whose CRC does not match is invalid too
        bad_crc = 0
        for raw in raws:
            try:
                parser.parse(raw.decode("ascii"), throw_ex=True)
            except (InvalidChecksumError, ParseError, UnicodeDecodeError):
                bad_crc += 1
        stamps = [_TIMESTAMP.search(raw) for raw in raws]
        order = [s.group(1) if s else b"" for s in stamps]
        out_of_order = sum(1 for a, b in zip(order, order[1:], strict=False) if b <= a)
        duplicates = sum(n - 1 for n in Counter(raws).values())
        foreign = -1
        if sent is not None:
            known = set(sent)
            foreign = sum(1 for raw in raws if raw not in known)
        return WireAudit(
            bytes=len(data),
            telegrams=len(raws) - bad_crc,
            dsmr_parsed=parsed,
            dsmr_errors=errors,
            invalid_or_partial=gaps + bad_crc,
            stray_bytes=len(data) - covered,
            duplicates=duplicates,
            out_of_order=out_of_order,
            not_from_gateway=foreign,
        )


async def wait_for(predicate: Any, limit: float, what: str, step: float = 0.02) -> float:
    """Wait until ``predicate()`` holds (checked every ``step`` s); returns the
    monotonic time it did. AssertionError after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {limit:g} s")
        await asyncio.sleep(step)
    return time.monotonic()


# --- probes of a process --------------------------------------------------------------------


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """``pid``'s resident memory (VmRSS), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def tcp_listeners(pid: int) -> list[tuple[str, int]]:
    """Every TCP socket of ``pid`` in LISTEN state, as (address in /proc's hex, port),
    from its /proc/net/tcp and tcp6 and its descriptors (no psutil)."""
    mine = _socket_inodes(pid)
    found: list[tuple[str, int]] = []
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A" and inode in mine:  # 0A: TCP_LISTEN
                address, port = local.rsplit(":", 1)
                found.append((address, int(port, 16)))
    return found


def unix_sockets(pid: int) -> list[str]:
    """Paths of the Unix sockets ``pid`` listens on (from /proc/net/unix)."""
    mine = _socket_inodes(pid)
    paths = []
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and int(fields[6]) in mine and fields[5] == "01":
            paths.append(fields[7])
    return paths


def find_secrets(root: Path, secrets: Iterable[str]) -> dict[str, list[str]]:
    """Files under ``root`` (recursively) holding any of ``secrets``, as bytes; maps
    each file to the secrets found in it."""
    wanted = [s.encode() for s in secrets if s]
    hits: dict[str, list[str]] = {}
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or path.is_socket():
            continue
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            found = [s.decode() for s in wanted if s in data]
            if found:
                hits[str(path)] = found
    return hits
