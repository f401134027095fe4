"""Nothing a gateway sends ends ``x1p1 run`` (docs/x1-api.md, "What the converter
tolerates"): arbitrary exceptions injected where a gateway's data or answers are handled.

The points: the legacy-P1 stream's message handling, the realtime one (telegrams built
from realtime values, x1p1/x1/source.py), the token refresh (``GET /api/token`` after a
connection, X1 §5.2) and an output's publish. For each, the converter runs against the
embedded gateway (real TLS on loopback) and writes into a pty: it keeps going, logs the
cause once (its type and message, no traceback above debug), and reconnects or carries
on, so telegrams reach the P1 line again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from converter_support import fast_options, running
from gateway_fixture import RunningGateway, running_gateway
from p1_pty import PtyPeer, until

from x1p1.converter.config import ListenAddress, OutputConfig
from x1p1.converter.pairing import X1Client
from x1p1.converter.source_stream import SourceStream
from x1p1.converter.stream import LegacyP1Stream
from x1p1.converter.tcp_out import TcpOutput
from x1p1.x1.source import Source


class Surprise(Exception):
    """An exception no code in x1p1 knows."""


EXCEPTIONS: dict[str, Callable[[], Exception]] = {
    "Surprise": lambda: Surprise("injected fault"),
    "KeyError": lambda: KeyError("injected fault"),
    "ZeroDivisionError": lambda: ZeroDivisionError("injected fault"),
}
FAILURES = 3
"""How many times each point raises before it behaves again (stream points)."""


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path / "gw") as gateway:
        yield gateway


class Injector:
    """Wraps ``owner.name`` so that it raises ``make()`` ``times`` times (None: always)
    when ``when`` says so, and otherwise does what it did."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        owner: type,
        name: str,
        make: Callable[[], Exception],
        times: int | None,
        when: Callable[[Any], bool] = lambda _: True,
    ) -> None:
        self.raised = 0
        real = getattr(owner, name)

        def wrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if when(obj) and (times is None or self.raised < times):
                self.raised += 1
                raise make()
            return real(obj, *args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)


POINTS = ["legacy-p1 stream", "realtime stream", "token refresh", "output publish"]


@pytest.mark.parametrize("exception", list(EXCEPTIONS))
@pytest.mark.parametrize("point", POINTS)
async def test_an_injected_exception_never_ends_the_run(
    point: str,
    exception: str,
    gw: RunningGateway,
    pty: PtyPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    make = EXCEPTIONS[exception]
    state_dir = tmp_path / "state"
    profiles = ("E-REALTIME", "G-REALTIME") if point == "realtime stream" else ("P1",)
    gw.save_pairing(state_dir, profiles)
    options = fast_options(state_dir, pty.path)
    injector: Injector
    if point == "legacy-p1 stream":
        injector = Injector(monkeypatch, LegacyP1Stream, "received", make, FAILURES)
    elif point == "realtime stream":
        injector = Injector(
            monkeypatch,
            SourceStream,
            "received",
            make,
            FAILURES,
            when=lambda stream: stream.connected_source is Source.REALTIME,
        )
    elif point == "token refresh":
        injector = Injector(monkeypatch, X1Client, "token_info", make, None)
    else:
        tcp = OutputConfig(tcp=ListenAddress("127.0.0.1", 0))
        options.outputs = (OutputConfig(serial=pty.path), tcp)
        injector = Injector(monkeypatch, TcpOutput, "publish", make, None)
    caplog.set_level(logging.DEBUG, logger="x1p1")
    async with running(options) as converter:
        await until(lambda: injector.raised >= (FAILURES if "stream" in point else 1), 30)
        before = len(pty.raw_telegrams())
        await until(lambda: len(pty.raw_telegrams()) >= before + 3, 30, "telegrams after it")
        if "stream" in point:
            assert converter.stream.machine.reconnects >= FAILURES  # each was a reconnect
        else:
            assert converter.stream.machine.reconnects == 0  # carried on
    told = [r for r in caplog.records if r.levelno >= logging.INFO if "injected" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in told]  # once per cause
    assert exception in told[0].getMessage() and told[0].levelno >= logging.WARNING
    shown = [r for r in caplog.records if r.levelno >= logging.INFO and r.exc_info]
    assert shown == [], [r.getMessage() for r in shown]  # tracebacks only at debug level
