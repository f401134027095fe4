"""The history rate limit, sans-I/O: a token bucket per key (X1 §7.3).

§7.3 rate-limits history "om het gebruik van realtime data te stimuleren" and leaves the
numbers to a later version; x1-api.md fixes them: a bucket of 10 requests per token,
refilled at one per 10 seconds. A request that finds the bucket empty is refused with
:class:`~x1p1.exceptions.RateLimited` (429, ``Retry-After``: the whole seconds until the
next request would pass).

Time is an argument: ``now`` is a monotonic clock in seconds (``time.monotonic()`` in the
gateway), so a wall-clock jump neither empties nor fills a bucket. A clock that goes back
counts as no time passing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from x1p1.exceptions import RateLimited

CAPACITY = 10
"""Requests a full bucket allows at once (x1-api.md, REST)."""
REFILL_SECONDS = 10.0
"""One more request every 10 seconds (x1-api.md, REST)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key (a token's hash, for history: §7.3).

    A bucket that has filled up again is the same as no bucket, so buckets are dropped
    once full: memory stays proportional to the keys active in the last
    ``capacity * refill_seconds`` seconds.
    """

    def __init__(self, capacity: int = CAPACITY, refill_seconds: float = REFILL_SECONDS) -> None:
        if capacity < 1 or refill_seconds <= 0:
            raise ValueError("capacity must be >= 1 and refill_seconds > 0")
        self.capacity = capacity
        self.refill_seconds = refill_seconds
        self._buckets: dict[Hashable, _Bucket] = {}
        self._last_sweep = -math.inf

    def _level(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.updated)
        return min(float(self.capacity), bucket.tokens + elapsed / self.refill_seconds)

    def available(self, key: Hashable, now: float) -> float:
        """How many requests ``key`` could make at ``now`` (fractional while refilling)."""
        bucket = self._buckets.get(key)
        return float(self.capacity) if bucket is None else self._level(bucket, now)

    def take(self, key: Hashable, now: float) -> None:
        """Let one request of ``key`` pass at ``now``, or raise :class:`RateLimited` with
        ``retry_after`` = the seconds until the next one would pass, rounded up."""
        self._sweep(now)
        bucket = self._buckets.get(key)
        level = float(self.capacity) if bucket is None else self._level(bucket, now)
        if level < 1.0:
            wait = math.ceil((1.0 - level) * self.refill_seconds - 1e-9)
            raise RateLimited(
                f"history is limited to {self.capacity} requests and one more every "
                f"{self.refill_seconds:g} s; retry in {max(1, wait)} s",
                retry_after=wait,
            )
        if bucket is None:
            self._buckets[key] = _Bucket(level - 1.0, now)
        else:
            bucket.tokens = level - 1.0
            bucket.updated = max(now, bucket.updated)

    def forget(self, key: Hashable) -> None:
        """Drop ``key``'s bucket (its token was revoked)."""
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        full_after = self.capacity * self.refill_seconds
        if now - self._last_sweep < full_after:
            return
        self._last_sweep = now
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key]
