"""No cause is logged more than once a minute (docs/x1-api.md, "What the converter tolerates").

A host on the network can make the converter fail the same way many times a second (a
TCP client that reconnects for every telegram, a gateway that sends garbage, a bug
that a gateway's answer triggers on every message). :class:`CauseLog` lets the first
occurrence of each cause through, then one line a minute that says how many were held
back, so the journal cannot grow faster than the causes' count. Time is passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["CauseLog"]

EVERY = 60.0
"""Seconds between two lines for one cause."""
MAX_CAUSES = 256
"""Causes remembered; past that the oldest are forgotten (memory stays bounded)."""


class CauseLog:
    """Logs ``message`` for a ``cause`` at most once every ``every`` seconds."""

    def __init__(
        self,
        logger: logging.Logger,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}
        """cause → (when last logged, how many held back since)."""

    def log(
        self,
        level: int,
        cause: str,
        message: str,
        *args: object,
        now: float | None = None,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Log it if ``cause`` was not logged within ``every`` s; True if it was."""
        moment = self.clock() if now is None else now
        last = self._seen.get(cause)
        if last is not None and moment - last[0] < self.every:
            self._seen[cause] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        if held:
            message += f" ({held} more like it in the last {self.every:.0f} s)"
        self._seen.pop(cause, None)
        self._seen[cause] = (moment, 0)
        if len(self._seen) > MAX_CAUSES:
            del self._seen[next(iter(self._seen))]
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True
