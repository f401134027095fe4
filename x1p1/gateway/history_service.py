"""History in the running gateway: recording, billing signatures, the rate limit, the block.

X1 §7.3 (history and its rate limit), §6.2.5–§6.2.6 (signed billing readings), §11 and
§12.1 (the customer's history block), §12.2 (no history while the gateway is down).
:class:`HistoryService` wires :class:`~x1p1.gateway.history.HistoryStore` and
:class:`~x1p1.gateway.billing_store.BillingStore` into the gateway:

- **Recording**, in one worker thread with its own connection to the database (WAL lets
  the event loop read meanwhile). At start, in this order: the moment of the start is
  taken on the meters' clock and marks this process as recording from then on (§12.2:
  what ended while the gateway was down stays absent); on the very first start the full
  Table 8 retention is backfilled from the simulation's seed (about a second; the
  server answers meanwhile, and history calls wait for it); every kept billing interval
  is signed. Then every :data:`RECORD_EVERY` seconds: ``record_due`` (which prunes what
  retention has passed) and the signing of the intervals just recorded, each reading
  once. The comlog's use counts are flushed every minute and old entries pruned hourly.
- **Reading**, on the event loop's connection: the measurements and billing responses,
  their JSON written by SQLite (:meth:`HistoryStore.response_text`,
  :meth:`BillingStore.response_text`); the HTTP side is
  :mod:`x1p1.gateway.history_routes`.
- **The rate limit** of history calls (measurements and billing), per token: a bucket of
  10, one more every 10 s (x1-api.md, REST); a monotonic clock, replaceable by tests.
- **The block** (§11, §12.1), one implementation for the meter's button combination
  (control command ``block-history``, ``x1p1 meter block-history``) and the portal's
  admin function (:attr:`Portal.block`): history and billing readings at or before the
  moment are deleted and can never be stored or returned again (the database refuses
  them, across restarts), and every token and portal session ends (open sockets close
  with 4401) in the same transaction (:meth:`GatewayGrants.block_history`), so that a
  kill at any instant leaves all of it done or none; ``history-blocked`` goes to the
  comlog. New history accrues from that moment on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from x1p1.gateway.billing_signature import BillingSigner
from x1p1.gateway.billing_store import BillingStore
from x1p1.gateway.history import HistoryStore, RegisterSource
from x1p1.gateway.state import GatewayEvent, GatewayState
from x1p1.gateway.store import Store
from x1p1.x1.api import format_time
from x1p1.x1.grants import Grant, GrantKind
from x1p1.x1.ratelimit import RateLimiter

if TYPE_CHECKING:
    from x1p1.gateway.comlog import Comlog
    from x1p1.gateway.control import ControlServer

log = logging.getLogger("x1p1.gateway.history")

RECORD_EVERY = 1.0
"""Seconds between recording rounds: an interval is recorded within a second of its end
(a round with nothing due costs a fraction of a millisecond)."""
READY_TIMEOUT = 60.0
"""How long a history call waits for the first start's backfill before answering with
what there is."""
COMLOG_PRUNE_EVERY = 3600.0


class HistoryService:
    """The history of one running gateway; :meth:`open`, :meth:`start`, :meth:`stop`."""

    def __init__(
        self,
        state: GatewayState,
        store: Store,
        signer: BillingSigner,
        comlog: Comlog | None = None,
        *,
        record_every: float = RECORD_EVERY,
    ) -> None:
        self.state = state
        self.db_path = Path(store.path)
        self.signer = signer
        self.certificate_pem = signer.certificate_pem
        self.comlog = comlog
        self.record_every = record_every
        gas_channel = state.meters.gas_channel
        self.history = HistoryStore(store.conn)
        """Reads and the block, on the event loop's connection."""
        self.billing = BillingStore(store.conn, gas_channel)
        self.limiter = RateLimiter()
        self.monotonic: Callable[[], float] = time.monotonic
        """The rate limiter's clock (tests replace it)."""
        self.started_at: datetime | None = None
        """The meters' time when this process started recording (§12.2)."""
        self.first_start: dict[str, float] = {}
        """Figures of the first round: ``backfill_readings``, ``backfill_s``, ``signed``,
        ``sign_s`` (also logged at INFO; ``bench/bench_measurements.py`` prints them)."""
        self._gas_channel = gas_channel
        self._executor: ThreadPoolExecutor | None = None
        self._writer: tuple[sqlite3.Connection, HistoryStore, BillingStore] | None = None
        self._unsigned = True
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    # --- wiring --------------------------------------------------------------------------

    def open(self) -> None:
        """Create the tables on the event loop's connection (before the server answers)."""
        self.history.init_schema()
        self.billing.init_schema()
        self.state.listeners.append(self._on_event)

    def mount(self, app: web.Application) -> None:
        """Let the history routes find this service."""
        app[HISTORY_KEY] = self

    def attach_portal(self, portal: Any) -> None:
        """The portal reads history through the same store and blocks through :meth:`block`."""
        portal.history = self.history
        portal.block = self.block

    def install(self, control: ControlServer) -> None:
        """The meter's button combination: control command ``block-history``."""
        control.register("block-history", self._block_command)

    def meter_now(self) -> datetime:
        """The meters' clock: history is in the meters' time."""
        return self.state.hub.sim_time(time.time())

    def _source(self) -> RegisterSource | None:
        meters = self.state.meters
        return meters if callable(getattr(meters, "registers", None)) else None  # type: ignore[return-value]

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Mark this process as recording from now on and start the worker."""
        self.started_at = self.meter_now()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="x1p1-history")
        self._task = asyncio.create_task(self._run(self.started_at), name="x1p1-history")

    async def ready(self) -> bool:
        """Wait (at most :data:`READY_TIMEOUT`) until the first start's backfill is done."""
        if self._ready.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_TIMEOUT):
                await self._ready.wait()
        return self._ready.is_set()

    async def _run(self, started: datetime) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._first, started)
        except Exception:
            log.exception("history: the first recording round failed")
        finally:
            self._ready.set()
        flushed = pruned = self.monotonic()
        pruned -= COMLOG_PRUNE_EVERY
        while True:
            await asyncio.sleep(self.record_every)
            try:
                await loop.run_in_executor(self._executor, self._record, self.meter_now())
            except Exception:
                log.exception("history: recording failed")
            comlog = self.comlog
            if comlog is None:
                continue
            tick = self.monotonic()
            try:
                if tick - flushed >= comlog.flush_seconds:
                    flushed = tick
                    comlog.flush(self.state.now())
                if tick - pruned >= COMLOG_PRUNE_EVERY:
                    pruned = tick
                    comlog.prune(self.state.now())
            except Exception:
                log.exception("comlog housekeeping failed")

    async def stop(self) -> None:
        """Stop recording (a running round finishes) and close the worker's connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._close_writer)
            await asyncio.to_thread(executor.shutdown, True)

    # --- the worker thread ---------------------------------------------------------------

    def _open_writer(self) -> tuple[sqlite3.Connection, HistoryStore, BillingStore]:
        if self._writer is None:
            conn = Store.connect(self.db_path)
            self._writer = (conn, HistoryStore(conn), BillingStore(conn, self._gas_channel))
        return self._writer

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer[0].close()

    def _first(self, started: datetime) -> None:
        _, history, billing = self._open_writer()
        history.start(started)
        source = self._source()
        if source is None:
            log.info("history: these meters give no registers; nothing is recorded")
            return
        begin = time.perf_counter()
        stored = history.backfill(source, started)
        middle = time.perf_counter()
        billing.adopt_signer(self.signer)
        signed = billing.sign_pending(self.signer)
        self._unsigned = False
        end = time.perf_counter()
        self.first_start = {
            "backfill_readings": stored,
            "backfill_s": middle - begin,
            "signed": signed,
            "sign_s": end - middle,
        }
        if stored:
            log.info(
                "history: backfilled %d readings in %.2f s, signed %d billing readings in %.2f s",
                stored,
                middle - begin,
                signed,
                end - middle,
            )

    def _record(self, now: datetime) -> int:
        _, history, billing = self._open_writer()
        source = self._source()
        if source is None:
            return 0
        stored = history.record_due(source, now)
        if stored or self._unsigned:
            self._unsigned = True
            billing.sign_pending(self.signer)
            self._unsigned = False
        return stored

    def record_now(self) -> int:
        """One recording round now, in the worker thread; returns the readings stored.
        For tests and tools: never call it from the event loop's thread."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("the history service is not running")
        return executor.submit(self._record, self.meter_now()).result()

    # --- the rate limit (§7.3) -----------------------------------------------------------

    def take(self, token: Grant) -> None:
        """One history call of ``token``; :class:`~x1p1.exceptions.RateLimited` (429 with
        ``Retry-After``) when its bucket is empty."""
        self.limiter.take(token.token_id, self.monotonic())

    def _on_event(self, event: GatewayEvent) -> None:
        if event.kind in ("token-revoked", "token-expired"):
            token_id = event.details.get("token_id")
            if isinstance(token_id, str):
                self.limiter.forget(token_id)

    # --- the block (§11, §12.1) ----------------------------------------------------------

    def block(self, by: str = "on the meter") -> dict[str, Any]:
        """Block history now, irreversibly (see the module docstring); ``by`` says where
        (the meter's buttons, the portal and its browser) for the comlog."""
        at, ended = self.state.grants.block_history(
            lambda: self.history.block(self.meter_now()), "history was blocked"
        )
        tokens = sum(1 for grant in ended if grant.kind is GrantKind.TOKEN)
        self.state.emit("history-blocked", at=format_time(at), by=by)
        log.warning("history blocked at %s %s; %d tokens revoked", format_time(at), by, tokens)
        return {
            "blocked_at": format_time(at),
            "tokens_revoked": tokens,
            "sessions_ended": len(ended) - tokens,
        }

    def _block_command(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return self.block("on the meter (button combination)")

    def blocked_at(self) -> datetime | None:
        return self.history.blocked_at()


HISTORY_KEY = web.AppKey("x1p1.history", HistoryService)
