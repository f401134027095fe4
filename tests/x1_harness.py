"""Two ends in memory, in the manner of h11's ``tests/helpers.py::ConnectionPair``
(architecture.md, habit 13): the converter's pairing client and its stream policy
against the tests' own gateway (``tests/x1_test_gateway.py``) and its dialects, with no
sockets and an injected clock, so each dialect row is a millisecond test.

- :class:`PairingPair`: :func:`x1p1.converter.pairing.pair` with a transport that hands
  each request to :meth:`TestGateway.answer`; the meter's button is pressed after a
  number of polls.
- :class:`StreamPair`: a :class:`~x1p1.converter.stream.LegacyP1Stream` fed the messages
  a dialect makes of each telegram, at the times given; refusals and closes go through
  the same calls the websockets adapter makes.
- :class:`SourcePair`: the same with the :class:`~x1p1.converter.source_stream.SourceStream`
  and its :class:`~x1p1.x1.source.SourceMachine`; the supervisor's part (reading
  ``GET /api/token`` when asked) is :meth:`SourcePair.read_grant`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from x1_test_gateway import Dialect, TestGateway

from x1p1.converter import pairing
from x1p1.converter.pairing import GatewayEndpoint, Progress
from x1p1.converter.source_stream import SourceStream
from x1p1.converter.state import SavedPairing
from x1p1.converter.stream import LegacyP1Stream, StreamSettings, StreamTarget
from x1p1.p1 import InvalidTelegram, dsmr5
from x1p1.x1.connection import Conn, ConnectionMachine, Ev
from x1p1.x1.endpoints import ApiPaths
from x1p1.x1.profiles import Profile
from x1p1.x1.readers import RequestAnswer
from x1p1.x1.realtime import MeterInfo
from x1p1.x1.source import Mode, SourceMachine

__all__ = ["FakeClock", "PairingPair", "SourcePair", "StreamPair"]


@dataclass
class FakeClock:
    """Monotonic seconds that move only when someone sleeps or :meth:`advance` is called."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class PairingPair:
    """The pairing client and the gateway, wired in memory."""

    state_dir: Path
    dialect: Dialect = field(default_factory=Dialect)
    button: str | None = "approve"
    """What the customer does: ``approve``, ``deny``, or None (nobody answers)."""
    after_polls: int = 2
    """The button is pressed as the client polls for the n-th time."""
    api_base: str | None = None
    """What the converter believes the API base is (default: the dialect's)."""
    clock_skew: timedelta = timedelta(0)
    """How far the gateway's clock is off."""
    gateway: TestGateway = field(init=False)
    clock: FakeClock = field(default_factory=FakeClock)
    polls: int = 0
    shown: list[RequestAnswer] = field(default_factory=list)
    ticks: list[Progress] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gateway = TestGateway(
            self.state_dir / "gateway", dialect=self.dialect, clock_skew=self.clock_skew
        )

    def transport(
        self, address: str, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "GET" and "/tokens/requests/" in path:
            self.polls += 1
            if self.polls == self.after_polls and self.button == "approve":
                self.gateway.approve()
            elif self.polls == self.after_polls and self.button == "deny":
                self.gateway.deny()
        return self.gateway.answer(method, path, headers, body or b"")

    @property
    def endpoint(self) -> GatewayEndpoint:
        base = self.dialect.api_base if self.api_base is None else self.api_base
        return GatewayEndpoint("X1-interface.local", 443, ("192.0.2.10",), paths=ApiPaths(base))

    def pair(self) -> SavedPairing:
        """``x1p1 pair`` as the CLI runs it, without sockets; raises what it would."""
        return pairing.pair(
            self.state_dir / "converter",
            self.endpoint,
            ca_file=None,
            name="x1p1 harness",
            on_request=self.shown.append,
            on_tick=self.ticks.append,
            clock=self.clock,
            sleep=self.clock.sleep,
            transport=self.transport,
        )


class StreamPair:
    """The legacy-P1 subscription's policy and framing against a dialect's messages."""

    def __init__(self, dialect: Dialect | None = None, *, stall_timeout: float = 15.0) -> None:
        self.dialect = dialect or Dialect()
        self.clock = FakeClock()
        self.relayed: list[bytes] = []
        self.invalid: list[InvalidTelegram] = []
        self.states: list[tuple[Conn, str]] = []
        self.stream = self._make_stream(
            StreamSettings(stall_timeout=stall_timeout, rng=lambda: 1.0)
        )
        self._telegrams: Iterator[bytes] = dsmr5.sample_stream()
        self.sent: list[bytes] = []
        self.open()

    def _make_stream(self, settings: StreamSettings) -> LegacyP1Stream:
        return LegacyP1Stream(
            lambda: None,
            lambda raw, at: self.relayed.append(raw),
            on_invalid=self.invalid.append,
            on_state=lambda state, message: self.states.append((state, message)),
            settings=settings,
            clock=self.clock,
        )

    @property
    def machine(self) -> ConnectionMachine:
        return self.stream.machine

    def open(self) -> None:
        """A connection opens (after a connect attempt)."""
        machine = self.stream.machine
        if machine.state is not Conn.CONNECTING:
            machine.handle(Ev.CONNECT, self.clock())
        machine.handle(Ev.OPENED, self.clock())
        self.stream.begin()

    def connecting(self) -> None:
        """A new connection is being tried (as after a new token)."""
        self.stream.machine.handle(Ev.TOKEN_CHANGED, self.clock())

    def messages(self, raw: bytes) -> list[bytes]:
        frame = self.dialect.frame
        return frame(raw) if frame is not None else [raw]

    def send(self, count: int = 1, *, every: float = 1.0) -> None:
        """``count`` telegrams, ``every`` seconds apart, each in the dialect's messages;
        the machine's deadline is checked as the adapter would before each."""
        for _ in range(count):
            self.clock.advance(every)
            if self.stream.machine.due(self.clock()):
                self.stream.machine.expire(self.clock())
                return
            raw = next(self._telegrams)
            self.sent.append(raw)
            for message in self.messages(raw):
                self.stream.feed(message, self.clock())

    def refuse(self, status: int, **headers: str) -> None:
        self.stream.refused(status, headers, "X1-interface.local:443")

    def close(self, code: int | None, reason: str = "") -> None:
        self.stream.closed(code, reason)


REVOKED = "revoked"
"""As :attr:`SourcePair.grant`: ``GET /api/token`` answers 401 (the token was revoked)."""


class SourcePair(StreamPair):
    """The subscription that follows the source (legacy P1 or realtime), with the token's
    grant as the gateway's ``GET /api/token`` would answer it (:attr:`grant`)."""

    def __init__(self, granted: frozenset[Profile], mode: Mode = Mode.AUTO) -> None:
        self.sources = SourceMachine(mode, granted)
        self.grant: frozenset[Profile] | str | None = granted
        """What ``GET /api/token`` answers now (None: the read fails; :data:`REVOKED`)."""
        self.reads_asked = 0
        super().__init__()

    def _make_stream(self, settings: StreamSettings) -> LegacyP1Stream:
        import ssl

        target = StreamTarget(
            "X1-interface.local", 443, "192.0.2.10", "t" * 43, ssl.create_default_context()
        )

        async def no_meters(target: StreamTarget) -> tuple[MeterInfo, ...]:
            return ()

        def asked() -> None:
            self.reads_asked += 1

        return SourceStream(
            lambda: target,
            lambda raw, at: self.relayed.append(raw),
            sources=self.sources,
            realtime_path=lambda: "/api/realtime",
            fetch_meters=no_meters,
            on_forbidden=asked,
            on_invalid=self.invalid.append,
            on_state=lambda state, message: self.states.append((state, message)),
            settings=settings,
            clock=self.clock,
        )

    @property
    def source_stream(self) -> SourceStream:
        assert isinstance(self.stream, SourceStream)
        return self.stream

    def read_grant(self) -> None:
        """The supervisor's part when the source machine's deadline has come: read the
        grant, tell both machines, and let the adapter act on what was posted."""
        if not self.sources.due(self.clock()):
            return
        self.sources.expire(self.clock())
        if self.grant is None:
            self.sources.token_unread(self.clock())
            self.source_stream.grant_unread("could not read the token's profiles")
        elif self.grant == REVOKED:
            self.sources.token_unread(self.clock())
            self.source_stream.token_refused()
        else:
            assert isinstance(self.grant, frozenset)
            moved = self.sources.token_read(self.grant, self.clock())
            self.source_stream.grant_read(moved, f"the token's profiles: {self.sources.reason}")
        self.stream._take_pending()

    def connect(self) -> None:
        """One connection attempt as the adapter makes it, up to the handshake (which
        :meth:`open` or :meth:`refuse` then answers)."""
        import asyncio

        if self.sources.active is None:
            asyncio.run(self.source_stream._connect_and_relay())
