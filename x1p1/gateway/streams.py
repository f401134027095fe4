"""Live streams: one tick a second, built once, fanned out to every WebSocket subscriber.

X1 §7.2 and §8.2: realtime data goes out over WebSockets, at most one message a second;
``/api/legacy-p1`` sends a whole DSMR 5.0.2 telegram (§6.2.7), ``/api/realtime`` the OBIS
objects a device asked for as JSON (x1-api.md, "WebSocket").

:class:`StreamHub` runs one loop for all subscribers. It wakes at each whole second of
the wall clock (the simulated clock is aligned to it: at speed 1 they are the same
seconds), asks the meters for that moment once (:class:`Tick` builds the telegram and
the realtime values lazily, the first time a subscriber needs them, and caches each JSON
message by selection), and puts each due subscriber's messages in its mailbox. A
subscriber's own task sends them: a slow client loses its older message (latest wins)
and never holds up the others. Closing a subscriber (revoked token: 4401; X1 switched
off: 4503) goes through the same mailbox, so one task owns each socket's writes.

The meters are asked in a worker thread just before each second (:meth:`Tick.prepare`),
so the event loop only fans out at the second itself.

This module knows nothing of aiohttp: the server gives each subscriber a render
function and drains its mailbox onto the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from x1p1.exceptions import RateLimited
from x1p1.x1.api import format_time
from x1p1.x1.obis import Meter, ObisRef
from x1p1.x1.profiles import Profile

log = logging.getLogger(__name__)


class MeterSource(Protocol):
    """What the gateway needs of its meters (``gateway/simulation.py``)."""

    @property
    def electricity_id(self) -> str: ...

    @property
    def gas_id(self) -> str: ...

    @property
    def gas_channel(self) -> int: ...

    def telegram(self, at: datetime) -> bytes:
        """The whole DSMR 5.0.2 telegram for ``at``, CRC included."""
        ...

    def realtime_values(self, at: datetime) -> Mapping[str, object]:
        """Every value at ``at``, by six-group OBIS code (gas codes with the channel)."""
        ...

    def gas_reading(self, at: datetime) -> tuple[datetime, float] | None:
        """The gas meter's last 5-minute reading at ``at``: (capture time, m3); None while
        it has none yet (the reading is then left out of every message, never 0)."""
        ...


SimTime = Callable[[float], datetime]
"""Maps a wall-clock time (``time.time()``) to the simulated meters' time."""


def real_time(wall: float) -> datetime:
    """The identity mapping: simulated time is wall-clock time."""
    return datetime.fromtimestamp(wall, UTC)


@dataclass(frozen=True, slots=True)
class MeterSelection:
    """What one realtime subscriber reads of one meter: objects resolved in the registry."""

    equipment_id: str
    meter: Meter
    refs: tuple[ObisRef, ...]

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        return self.equipment_id, tuple(ref.code for ref in self.refs)


class Tick:
    """One second of the stream: the meters at ``at``, computed at most once each."""

    def __init__(self, second: int, at: datetime, meters: MeterSource) -> None:
        self.second = second
        self.at = at
        self.meters = meters
        self._telegram: str | None = None
        self._values: Mapping[str, object] | None = None
        self._gas: tuple[datetime, float] | None = None
        self._gas_read = False
        self._json: dict[tuple[str, tuple[str, ...]], str] = {}

    def prepare(self, telegram: bool, realtime: bool) -> None:
        """Compute what the subscribers will need (run in a worker thread before the
        second starts, so that a slow computation, such as the simulation's first second
        of a new day, never delays the loop or the delivery)."""
        if telegram:
            _ = self.telegram
        if realtime:
            _ = self.values
            _ = self.gas

    @property
    def telegram(self) -> str:
        """The P1 telegram as text, exactly as it goes on the wire (CR LF, CRC)."""
        if self._telegram is None:
            self._telegram = self.meters.telegram(self.at).decode("ascii")
        return self._telegram

    @property
    def values(self) -> Mapping[str, object]:
        if self._values is None:
            self._values = self.meters.realtime_values(self.at)
        return self._values

    @property
    def gas(self) -> tuple[datetime, float] | None:
        """The gas meter's latest reading (capture time, m3), or None while it has none."""
        if not self._gas_read:
            self._gas = self.meters.gas_reading(self.at)
            self._gas_read = True
        return self._gas

    def realtime(self, selection: MeterSelection) -> str:
        """``{"equipment_id", "t", "values"}`` for one meter (x1-api.md), cached per
        selection so that subscribers asking the same share one string."""
        key = selection.key
        cached = self._json.get(key)
        if cached is not None:
            return cached
        values: dict[str, object] = {}
        stamp = self.at
        if selection.meter is Meter.GAS and self.gas is not None:
            stamp = self.gas[0]  # gas values carry their own 5-minute capture time
        for ref in selection.refs:
            value = self._value(ref)
            if value is not None:
                values[ref.code] = value
        text = json.dumps(
            {"equipment_id": selection.equipment_id, "t": format_time(stamp), "values": values},
            separators=(",", ":"),
        )
        self._json[key] = text
        return text

    def _value(self, ref: ObisRef) -> object:
        code = ref.code
        value = self.values.get(code)
        if value is None and ref.obj.meter is Meter.GAS:
            value = self._gas_fallback(code)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float) and ref.obj.numeric:
            decimals = ref.obj.decimals
            return int(round(value)) if decimals == 0 else round(float(value), decimals)
        if isinstance(value, int | float | str):
            return value
        if isinstance(value, list | tuple):  # the power-failure log: x1-api.md
            return [v if isinstance(v, int | float | str | dict) else str(v) for v in value]
        return str(value)

    def _gas_fallback(self, code: str) -> object:
        """Gas values the meters do not list among their realtime values (Table 6)."""
        suffix = code.split(":", 1)[1]
        if suffix == "24.2.1.255":
            return None if self.gas is None else self.gas[1]
        if suffix == "96.1.0.255":
            return self.meters.gas_id
        if suffix == "24.1.0.255":
            return 3  # M-Bus device type 3: gas
        return None


Render = Callable[[Tick], list[str]]

PREPARE_AHEAD = 0.4
"""Seconds before a tick when its values are computed (in a worker thread)."""
WARM_EVERY = 30
WARM_AHEAD = 90
"""Every 30 s the meters are asked for the moment 90 s ahead (see StreamHub._warm)."""


MAX_STREAMS_PER_TOKEN = 8
"""Open WebSockets one token may hold; one more is closed with 4429 (x1-api.md). A device
needs one or two; a leaked or shared token must not hold the gateway's sockets."""


@dataclass(eq=False)
class Subscriber:
    """One open WebSocket: its token, its interval and what it wants each tick."""

    token_id: str
    interval: int
    render: Render
    kind: str = "realtime"
    permitted: Callable[[frozenset[Profile]], bool] | None = None
    """Whether a token with these profiles may still read this stream (a changed grant
    is checked again, §5.1.6)."""
    mailbox: list[str] = field(default_factory=list)
    closing: tuple[int, str] | None = None
    dropped: int = 0
    sent: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def deliver(self, messages: list[str]) -> None:
        if self.closing is not None:
            return
        if self.mailbox:
            self.dropped += len(self.mailbox)
        self.mailbox = messages
        self.wake.set()

    def close(self, code: int, reason: str) -> None:
        """Ask the subscriber's task to close its socket with ``code`` (first ask wins)."""
        if self.closing is None:
            self.closing = (code, reason)
        self.wake.set()

    async def next_messages(self) -> list[str] | None:
        """Wait for the next messages; None when the socket is to be closed."""
        while True:
            if self.closing is not None:
                return None
            if self.mailbox:
                messages, self.mailbox = self.mailbox, []
                return messages
            self.wake.clear()
            await self.wake.wait()


class StreamHub:
    """All stream subscribers and the one loop that feeds them."""

    def __init__(
        self,
        meters: MeterSource,
        sim_time: SimTime = real_time,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.meters = meters
        self.sim_time = sim_time
        self._wall = wall
        self._subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._has_subscribers = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: set[asyncio.Task[None]] = set()
        self.ticks = 0
        self.last_tick: Tick | None = None
        self.on_subscribe: Callable[[], None] | None = None
        """Called for every new subscriber: an open stream renews its grant (§5.2), a
        deadline of the housekeeping loop (:mod:`x1p1.gateway.app`)."""

    # --- subscribers ---------------------------------------------------------------------

    def subscribe(
        self,
        token_id: str,
        interval: int,
        render: Render,
        kind: str,
        permitted: Callable[[frozenset[Profile]], bool] | None = None,
    ) -> Subscriber:
        """A new subscriber of ``token_id``'s; :class:`~x1p1.exceptions.RateLimited`
        (closed with 4429, x1-api.md) when the token holds :data:`MAX_STREAMS_PER_TOKEN`
        open ones already."""
        if self.open_streams(token_id) >= MAX_STREAMS_PER_TOKEN:
            raise RateLimited(
                f"at most {MAX_STREAMS_PER_TOKEN} streams per token are open at once; "
                "close one before opening another",
                retry_after=1,
            )
        subscriber = Subscriber(token_id, interval, render, kind, permitted)
        self._subscribers.add(subscriber)
        self._has_subscribers.set()
        self._idle.clear()
        if self.on_subscribe is not None:
            self.on_subscribe()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        if not self._subscribers:
            self._has_subscribers.clear()
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no subscriber is left (after :meth:`close_all`)."""
        await self._idle.wait()

    @property
    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers)

    def open_streams(self, token_id: str) -> int:
        """How many streams of ``token_id`` are open and not closing."""
        return sum(1 for s in self._subscribers if s.token_id == token_id and s.closing is None)

    def token_ids(self) -> set[str]:
        """Tokens with an open stream (their use renews them, §5.2)."""
        return {s.token_id for s in self._subscribers}

    def close_token(self, token_id: str, code: int, reason: str) -> int:
        """Close every stream of one token; how many there were."""
        hit = [s for s in self._subscribers if s.token_id == token_id]
        for subscriber in hit:
            subscriber.close(code, reason)
        return len(hit)

    def recheck(self, token_id: str, profiles: frozenset[Profile], code: int, reason: str) -> int:
        """A token's profiles changed: close its streams it may no longer read."""
        hit = [
            s
            for s in self._subscribers
            if s.token_id == token_id and s.permitted is not None and not s.permitted(profiles)
        ]
        for subscriber in hit:
            subscriber.close(code, reason)
        return len(hit)

    def close_all(self, code: int, reason: str) -> int:
        """Close every stream (X1 switched off: 4503; shutting down: 1001)."""
        for subscriber in self._subscribers:
            subscriber.close(code, reason)
        return len(self._subscribers)

    # --- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="x1p1-ticks")

    async def stop(self) -> None:
        for pending in list(self._background):
            pending.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def sim_second(self, second: int) -> datetime:
        """The meters' time at wall second ``second``, down to its whole second (messages
        are aligned to whole seconds of the simulated clock)."""
        return self.sim_time(float(second)).replace(microsecond=0)

    def tick(self, second: int, tick: Tick | None = None) -> Tick:
        """Feed every subscriber due at wall second ``second``; return the tick."""
        if tick is None:
            tick = Tick(second, self.sim_second(second), self.meters)
        for subscriber in list(self._subscribers):
            if second % subscriber.interval:
                continue
            try:
                messages = subscriber.render(tick)
            except Exception:  # a bug in one render must not stop every stream
                log.exception("cannot render a %s message", subscriber.kind)
                subscriber.close(1011, "internal error")
                continue
            subscriber.deliver(messages)
        self.ticks += 1
        self.last_tick = tick
        return tick

    def _warm(self, second: int) -> None:
        """Ask the meters, in a worker thread, for a second well ahead: a simulation that
        computes a new day on its first second does so now, not in a tick's time."""
        at = self.sim_time(float(second))
        task = asyncio.get_running_loop().create_task(self._compute_ahead(at))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _compute_ahead(self, at: datetime) -> None:
        try:
            await asyncio.to_thread(self.meters.realtime_values, at)
        except Exception as exc:
            log.warning("the meters failed ahead of time: %s", exc)

    async def _sleep_until(self, second: float) -> None:
        """Sleep until the wall clock reaches ``second`` (the loop's monotonic clock may
        wake us a hair early: then sleep the rest)."""
        for _ in range(3):
            delay = second - self._wall()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    async def _run(self) -> None:
        last: int | None = None
        while True:
            await self._has_subscribers.wait()
            second = math.floor(self._wall()) + 1
            if last is not None and second <= last:
                second = last + 1
            # prepare in the second half of the second before: the worker thread then
            # never contends (GIL) with the burst of sends that follows a tick
            await self._sleep_until(second - PREPARE_AHEAD)
            tick = Tick(second, self.sim_second(second), self.meters)
            if self.last_tick is not None and tick.at <= self.last_tick.at:
                last = second  # below speed 1: this wall second shows no new sim second
                continue
            kinds = {s.kind for s in self._subscribers}
            try:
                await asyncio.to_thread(tick.prepare, "legacy-p1" in kinds, "realtime" in kinds)
            except Exception:  # pragma: no cover - the meters failed; keep ticking
                log.exception("the meters failed to compute second %d", second)
                await asyncio.sleep(1)
                continue
            await self._sleep_until(second)
            last = second
            self.tick(second, tick)
            if second % WARM_EVERY == 0:
                self._warm(second + WARM_AHEAD)
