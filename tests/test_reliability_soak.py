"""Soak with faults: the whole chain under every fault at once, with figures.

A real gateway process (``x1p1 gateway serve``, stopped with SIGTERM and SIGKILL and
started again on the same port and state directory), the real converter (``x1p1 run``
as a process, at debug level with the libraries' debug too) writing into a pty, and
dsmr_parser reading the other end (DSMR 5, CRC validated). Between them a proxy with the
gateway's own certificate (:class:`~reliability_support.FaultProxy`) drops sockets and
sends what the real gateway never sends. During the run: gateway restarts, dropped
sockets, invalid telegrams, a good telegram split over messages, a P1 reader that stops
reading until the line's kernel buffer is full, the token revoked and paired again with
``x1p1 pair`` approved on the meter's button, and X1 switched off and on by the grid
operator (with a SIGKILL of the gateway while it is off).

Figures: telegrams relayed; invalid or partial telegrams on the line (must be 0);
duplicates (must be 0); time from the gateway's return (its ``listening`` line) to the
next telegram on the line, p50/p95 (goal: p95 within 2 s). The run lasts
``X1P1_SOAK_SECONDS`` (default 180; every fault happens at least once whatever the value);
``X1P1_FIGURES_DIR`` names a directory to write the figures into (``soak.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reliability_support import (
    CLI,
    FaultProxy,
    GatewayProcess,
    WireReader,
    append_to,
    child_env,
    find_secrets,
    pair_converter,
    percentile,
    wait_for,
    write_figures,
)

from x1p1.converter.state import status_report

SOAK_SECONDS = float(os.environ.get("X1P1_SOAK_SECONDS", "180"))
RETURN_GOAL = 2.0
"""Seconds from the gateway's return to the next telegram on the line (p95)."""
INVALID_KINDS = ("crc", "split", "no-crc", "cut", "noise", "split", "oversize", "crc")


@dataclass
class Soak:
    """The run's parts and what it measured."""

    tmp: Path
    gateway: GatewayProcess
    proxy: FaultProxy
    wire: WireReader
    state_dir: Path
    recoveries: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    def token(self) -> str:
        data = json.loads((self.state_dir / "token.json").read_text())
        token = data["token"]
        assert isinstance(token, str)
        if token not in self.tokens:
            self.tokens.append(token)
        return token

    async def telegrams(self, n: int, limit: float = 30.0) -> None:
        """Wait for ``n`` more telegrams on the line."""
        target = self.wire.count + n
        await wait_for(lambda: self.wire.count >= target, limit, f"{n} more telegrams")

    async def recovered(self, kind: str, since: float, limit: float = 30.0) -> float:
        """Seconds from ``since`` to the first telegram after it (recorded under ``kind``)."""
        await wait_for(
            lambda: self.wire.first_after(since) is not None, limit, f"a telegram after {kind}"
        )
        at = self.wire.first_after(since)
        assert at is not None
        seconds = at - since
        self.recoveries.setdefault(kind, []).append(seconds)
        return seconds

    # -- the faults ---------------------------------------------------------------------------

    async def restart(self, sig: int, downtime: float) -> None:
        name = "SIGKILL" if sig == signal.SIGKILL else "SIGTERM"
        self.note(f"gateway {name}, {downtime:g} s down")
        await self.gateway.stop(sig)
        await asyncio.sleep(downtime)
        ready = await self.gateway.start()
        await self.recovered("gateway-return", ready)
        await self.telegrams(2)

    async def drop(self) -> None:
        self.note("sockets dropped")
        await wait_for(lambda: self.proxy.clients > 0, 30, "a connected converter")
        since = time.monotonic()
        assert self.proxy.drop() >= 1
        await self.recovered("socket-dropped", since)
        await self.telegrams(2)

    async def invalid(self) -> None:
        self.note("invalid telegrams injected")
        self.proxy.inject(*INVALID_KINDS)
        await wait_for(lambda: self.proxy.plan_left == 0, 60, "the bad messages sent")
        await self.telegrams(2)

    async def stall(self) -> None:
        """The P1 reader stops reading until the pty's kernel buffer is full, then reads
        again at once (before the converter's 2 s write timeout: a port that is slow, not
        dead)."""
        self.note("serial port stalled")
        before = self.wire.count
        self.wire.detach()
        since = time.monotonic()
        try:
            full = await wait_for(self.wire.full, 90, "the pty's buffer full", step=0.01)
        finally:
            self.wire.attach()
        self.notes.setdefault("stalls", []).append(round(full - since, 1))
        await self.telegrams(2)
        self.notes.setdefault("telegrams_held_in_stall", []).append(self.wire.count - before)

    async def repair(self) -> None:
        """Token revoked on the gateway: the converter stops and waits (no retries) until
        ``x1p1 pair`` saves a new one, then picks it up by itself."""
        self.note("token revoked")
        old = self.token()
        closed = self.proxy.counts.closed[4401]
        with self.gateway.control() as control:
            for token in control.tokens():
                control.revoke(token["token_id"])
        await wait_for(lambda: self.proxy.counts.closed[4401] > closed, 30, "close 4401")
        attempts = len(self.proxy.attempts)
        count = self.wire.count
        await asyncio.sleep(3.0)
        self.notes.setdefault("handshakes_while_unpaired", []).append(
            len(self.proxy.attempts) - attempts
        )
        assert self.wire.count == count, "telegrams relayed with a revoked token"
        self.note("paired again")
        saved = await pair_converter(self.gateway, self.state_dir, self.tmp / "pair.log")
        assert self.token() != old
        await self.recovered("paired-again", saved)
        await self.telegrams(2)

    async def x1_off(self) -> None:
        """The grid operator switches X1 off (4503; 503 to handshakes) and, after a SIGKILL
        of the gateway while off (the switch is persisted), on again. The converter tries
        every 60 s meanwhile."""
        self.note("X1 switched off")
        closed = self.proxy.counts.closed[4503]
        with self.gateway.control() as control:
            control.operator("disable")
        off = await wait_for(lambda: self.proxy.counts.closed[4503] > closed, 30, "close 4503")
        await self.gateway.stop(signal.SIGKILL)
        await self.gateway.start()
        with self.gateway.control() as control:
            assert control.status().get("x1_enabled") is False, "X1 came back on by itself"
        await asyncio.sleep(2.0)
        self.note("X1 switched on")
        with self.gateway.control() as control:
            control.operator("enable")
        on = time.monotonic()
        await self.recovered("x1-switched-on", on, limit=75)
        tries = [t for t in self.proxy.attempts if off < t <= on + 75]
        self.notes.setdefault("handshakes_while_x1_off", []).append(len(tries))
        await self.telegrams(2)


@pytest.mark.slow(seconds=180)  # about, in CI: the longest start first
@pytest.mark.timeout(max(600, int(SOAK_SECONDS * 3)))
async def test_soak_with_faults(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path / "gw", tmp_path / "gateway.log")
    await gateway.start()
    proxy = FaultProxy(gateway)
    await proxy.start()
    wire = WireReader().attach()
    state_dir = tmp_path / "converter"
    soak = Soak(tmp_path, gateway, proxy, wire, state_dir)
    converter_log = tmp_path / "converter.log"
    converter = None
    try:
        await pair_converter(gateway, state_dir, tmp_path / "pair.log")
        soak.token()
        with append_to(converter_log) as log:
            converter = await asyncio.create_subprocess_exec(
                *CLI,
                "-vv",
                "run",
                "--gateway",
                f"127.0.0.1:{proxy.port}",
                "--serial",
                wire.path,
                "--state-dir",
                str(state_dir),
                stdout=log,
                stderr=log,
                env=child_env(),
            )
        started = time.monotonic()
        await soak.telegrams(3, limit=60)

        term, kill = signal.SIGTERM, signal.SIGKILL
        # Every fault once (about 150 s), then the quick ones again until the time is up.
        cycle: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (6, lambda: soak.restart(term, 0.0)),
            (3, soak.drop),
            (6, lambda: soak.restart(kill, 0.0)),
            (11, soak.invalid),
            (7, lambda: soak.restart(term, 1.0)),
            (22, soak.stall),
            (9, lambda: soak.restart(kill, 3.0)),
            (12, soak.repair),
            (3, soak.drop),
            (6, lambda: soak.restart(term, 0.0)),
            (70, soak.x1_off),
            (7, lambda: soak.restart(kill, 1.0)),
        ]
        again: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (6, lambda: soak.restart(term, 0.5)),
            (3, soak.drop),
            (7, lambda: soak.restart(kill, 2.0)),
            (11, soak.invalid),
            (6, lambda: soak.restart(kill, 0.0)),
            (8, lambda: soak.restart(term, 2.5)),
        ]
        deadline = started + SOAK_SECONDS
        done = 0
        for _, fault in cycle:
            await fault()
            done += 1
            assert converter.returncode is None, "the converter died"
        while True:
            cost, fault = again[(done - len(cycle)) % len(again)]
            if time.monotonic() + cost > deadline:
                break
            await fault()
            done += 1
            assert converter.returncode is None, "the converter died"
        elapsed = time.monotonic() - started

        # what `x1p1 status --json` shows: asked of the running daemon, as of now
        status = await asyncio.to_thread(status_report, state_dir)
        assert status["running"], status
        converter.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(converter.wait(), 30) == 0
        converter = None
    finally:
        if converter is not None and converter.returncode is None:
            converter.kill()
            await converter.wait()
        wire.close()
        await proxy.close()
        if gateway.running:
            await gateway.stop()

    audit = wire.audit(proxy.forwarded)
    returns = soak.recoveries["gateway-return"]
    kinds = [kind for kind, _ in proxy.injected]
    figures: dict[str, Any] = {
        "seconds": round(elapsed, 1),
        "faults": done,
        "gateway_restarts": gateway.starts - 1,
        "wire": audit.figures(),
        "gateway_return_to_telegram_s": {
            "n": len(returns),
            "p50": round(percentile(returns, 0.5), 3),
            "p95": round(percentile(returns, 0.95), 3),
            "max": round(max(returns), 3),
        },
        "recoveries_s": {k: [round(v, 2) for v in vs] for k, vs in soak.recoveries.items()},
        "injected": {k: kinds.count(k) for k in sorted(set(kinds))},
        "split_telegrams_forwarded": proxy.split,
        "handshakes": {
            "opened": proxy.counts.opened,
            "refused": dict(proxy.counts.refused),
            "closed_by_gateway": dict(proxy.counts.closed),
        },
        "converter_counts": status["counts"],
        **soak.notes,
    }
    write_figures(figures, "soak")

    # The line: whole, valid, each telegram once, in order, and byte for byte the gateway's.
    assert audit.telegrams > 0 and audit.dsmr_parsed == audit.telegrams
    assert audit.invalid_or_partial == 0 and audit.stray_bytes == 0
    assert audit.dsmr_errors == 0
    assert audit.duplicates == 0 and audit.out_of_order == 0
    assert audit.not_from_gateway == 0
    data = bytes(wire.data)
    for kind, bad in proxy.injected:
        if kind in ("crc", "no-crc", "noise"):
            assert bad not in data, f"an injected {kind} message reached the line"
    # The converter saw the bad ones and dropped them (a cut one ends as "truncated").
    detectable = sum(kinds.count(k) for k in ("crc", "no-crc", "cut"))
    assert status["counts"]["dropped_invalid"] >= detectable
    assert status["counts"]["serial_resets"] == 0  # the stalls never outlasted the timeout
    # The gateway's return: the next telegram within the goal.
    assert percentile(returns, 0.95) <= RETURN_GOAL, returns
    # No hammering: nothing while unpaired, at most one try a minute while X1 was off.
    assert all(n == 0 for n in soak.notes["handshakes_while_unpaired"])
    assert all(n <= 3 for n in soak.notes["handshakes_while_x1_off"])
    # No token in any log, at debug level and with the libraries' debug on.
    logs = [converter_log, gateway.log_path, tmp_path / "pair.log"]
    for path in logs:
        text = path.read_bytes()
        assert text, f"{path} is empty: the scan would prove nothing"
        for token in soak.tokens:
            assert token.encode() not in text, f"a token in {path.name}"
    assert not find_secrets(gateway.state_dir, soak.tokens), "a token stored in the clear"
    assert not find_secrets(state_dir, soak.tokens).keys() - {str(state_dir / "token.json")}
    assert (state_dir / "token.json").stat().st_mode & 0o777 == 0o600
