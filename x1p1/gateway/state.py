"""The running gateway's state: the ledger, the operator's switch, and events.

:class:`GatewayState` is what the HTTP handlers, the WebSocket streams, the portal and
the local control channel all act on. It holds:

- :attr:`GatewayState.grants`, the ledger of the meter's button (device tokens, portal
  logins and admin access, :mod:`x1p1.gateway.grants`), persisted one transaction per
  change, with its side effects on streams and listeners;
- the grid operator's switch (§12.3), kept in the store's settings; switching X1 off
  closes every stream with 4503;
- the listeners of :class:`GatewayEvent` (the comlog, §2.2) and of use.

Everything here runs on the event loop's thread and never blocks for long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from x1p1.exceptions import X1Disabled
from x1p1.gateway.grants import GatewayGrants
from x1p1.gateway.store import Store
from x1p1.gateway.streams import MeterSource, StreamHub
from x1p1.x1.grants import Grant, Ledger

log = logging.getLogger("x1p1.gateway")

X1_ENABLED = "x1_enabled"
"""Settings key: False while the grid operator has X1 switched off (§12.3)."""

CLOSE_DISABLED = X1Disabled.close_code
"""The close code when the grid operator switches X1 off; the close codes' one home is
:mod:`x1p1.exceptions`, which the converter reads too."""


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    """Something the comlog records (§2.2): ``kind`` as :class:`~x1p1.x1.grants.Event`
    names it, or ``x1-disabled``, ``x1-enabled``, ``operator-read``, ``history-blocked``,
    ``admin-action``; never a secret."""

    kind: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)


EventListener = Callable[[GatewayEvent], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class GatewayState:
    """The ledger, the operator's switch and the listeners of one gateway."""

    def __init__(
        self,
        store: Store,
        hub: StreamHub,
        *,
        now: Callable[[], datetime] = utc_now,
        auto_approve: bool = False,
        ledger: Ledger | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.clock = now
        self.listeners: list[EventListener] = []
        """Called with every :class:`GatewayEvent` (the comlog subscribes here)."""
        self.use_listeners: list[Callable[[Grant, str], None]] = []
        """Called on every authenticated API call or stream opened, with the grant and
        the route's name (the comlog's hourly summary of use per device, §2.2)."""
        self.grants = GatewayGrants(
            store, hub, now, self.emit, auto_approve=auto_approve, ledger=ledger
        )
        self.x1_enabled = bool(store.get_setting(X1_ENABLED, True))

    @property
    def meters(self) -> MeterSource:
        return self.hub.meters

    def note_use(self, grant: Grant, what: str) -> None:
        """An authenticated call of ``what`` (a route name); tells the use listeners."""
        for listener in list(self.use_listeners):
            try:
                listener(grant, what)
            except Exception:
                log.exception("a use listener failed on %s", what)

    def now(self) -> datetime:
        return self.clock()

    def emit(self, kind: str, **details: Any) -> None:
        """Tell every listener; a failing listener is logged, never fatal."""
        event = GatewayEvent(kind, self.now(), details)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed on %s", kind)

    def authenticate(self, secret: str | None) -> Grant:
        """The grant of a bearer token or a session cookie (:mod:`x1p1.gateway.grants`)."""
        return self.grants.authenticate(secret)

    # --- the operator's switch (§12.3) ---------------------------------------------------

    def check_enabled(self) -> None:
        if not self.x1_enabled:
            raise X1Disabled("the grid operator has switched the X1 interface off")

    def set_x1_enabled(self, enabled: bool) -> bool:
        """Switch X1 on or off (persisted); off closes every stream with 4503. Returns
        whether anything changed."""
        if enabled == self.x1_enabled:
            return False
        self.store.set_setting(X1_ENABLED, enabled)
        self.x1_enabled = enabled
        if not enabled:
            self.hub.close_all(CLOSE_DISABLED, "x1-disabled: switched off by the grid operator")
        log.warning("the grid operator switched X1 %s", "on" if enabled else "off")
        self.emit("x1-enabled" if enabled else "x1-disabled")
        return True
